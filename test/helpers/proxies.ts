import { createHash } from 'node:crypto'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, connect as netConnect, type AddressInfo } from 'node:net'
import type { lookup } from 'node:dns'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { RequestError, Server as ProxyChainServer } from 'proxy-chain'
import { eventually, poll } from './eventually.js'
import type { CertificateAuthority } from './pki.js'

/** A user and password with every character that must be percent-encoded in a URL. */
export const PROXY_USER = 'sidecar'
export const PROXY_PASSWORD = 'p@ss:w%rd/#?'

/** `http://user:password@127.0.0.1:port` with the credentials percent-encoded. */
export function proxyUrl (port: number, user = PROXY_USER, password = PROXY_PASSWORD): string {
  return `http://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}`
}

/** Resolves every *.test name to 127.0.0.1, so no test touches real DNS. */
export const testLookup = ((hostname: string, options: unknown, callback: (err: NodeJS.ErrnoException | null, address: unknown, family?: number) => void) => {
  const cb = typeof options === 'function' ? options as typeof callback : callback
  const all = typeof options === 'object' && options !== null && (options as { all?: boolean }).all === true
  if (hostname.endsWith('.test') || hostname === '127.0.0.1' || hostname === 'localhost') {
    if (all) cb(null, [{ address: '127.0.0.1', family: 4 }])
    else cb(null, '127.0.0.1', 4)
  } else {
    const err: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname}`)
    err.code = 'ENOTFOUND'
    cb(err, all ? [] : '', 4)
  }
}) as unknown as typeof lookup

export interface TestProxy {
  readonly port: number
  readonly url: string
  /** CONNECT tunnels the proxy accepted (authenticated). */
  tunnels (): number
  /** Proxy-Authorization values it received. */
  readonly authorizations: string[]
  close (): Promise<void>
}

export interface ProxyChainOptions {
  readonly user?: string
  readonly password?: string
  /** Listen on this port (default: any free one). */
  readonly port?: number
  /** Decide which credentials pass (default: exactly user and password). */
  readonly accept?: (user: string, password: string) => boolean
}

/**
 * An in-process CONNECT proxy (proxy-chain) that enforces Basic auth.
 * `forbidden.test` is refused with 403, as a proxy's policy would.
 */
export async function startProxyChain (options: ProxyChainOptions = {}): Promise<TestProxy> {
  const { user = PROXY_USER, password = PROXY_PASSWORD, port = 0 } = options
  const accept = options.accept ?? ((u: string, p: string) => u === user && p === password)
  let tunnels = 0
  const authorizations: string[] = []
  const server = new ProxyChainServer({
    port,
    host: '127.0.0.1',
    authRealm: 'sidecar-test',
    prepareRequestFunction: ({ request, username, password: pw, hostname, isHttp }) => {
      const header = request.headers['proxy-authorization']
      if (header !== undefined) authorizations.push(header)
      if (!accept(username, pw)) return { requestAuthentication: true, failMsg: 'bad proxy credentials' }
      if (hostname === 'forbidden.test') throw new RequestError('forbidden by proxy policy', 403)
      if (!isHttp) tunnels++
      return { dnsLookup: testLookup }
    }
  })
  await server.listen()
  return {
    port: server.port,
    url: proxyUrl(server.port, user, password),
    tunnels: () => tunnels,
    authorizations,
    close: async () => { await server.close(true) }
  }
}

/** A port nobody listens on (bound, then released). */
export async function freePort (): Promise<number> {
  const srv = createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const { port } = srv.address() as AddressInfo
  await new Promise<void>((resolve) => srv.close(() => resolve()))
  return port
}

/**
 * A plain TCP server that accepts connections and never answers: a proxy
 * that hangs on CONNECT.
 */
export async function startSilentServer (): Promise<{ port: number, close: () => Promise<void> }> {
  const sockets = new Set<import('node:net').Socket>()
  const srv = createServer((s) => { sockets.add(s); s.on('error', () => {}); s.resume() })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  return {
    port: (srv.address() as AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => srv.close(() => resolve()))
    }
  }
}

export const SQUID = '/usr/sbin/squid'
/** Where squid.conf names the port, until the port is known. */
const PORT = '%PORT%'
const NCSA = '/usr/lib/squid/basic_ncsa_auth'
const DIGEST = '/usr/lib/squid/digest_file_auth'
const NTLM_FAKE = '/usr/lib/squid/ntlm_fake_auth'
const NEGOTIATE_KERBEROS = '/usr/lib/squid/negotiate_kerberos_auth'
const CERTGEN = '/usr/lib/squid/security_file_certgen'
/** squid tests run when Debian's squid (and htpasswd) are installed, as .ci/run does. */
export const haveSquid = existsSync(SQUID) && existsSync(NCSA) && commandExists('htpasswd')
/** The skip reason of a squid test, or false when squid is there. */
export const squidSkip: string | false = haveSquid ? false : 'squid-openssl and apache2-utils are not installed (.ci/run installs them)'

function commandExists (cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

export interface Squid extends TestProxy {
  /** Lines of squid's access log. */
  accessLog (): string[]
  /**
   * Wait until squid has closed every client connection. squid writes a
   * tunnel's access log line as it closes it: after the sidecar stopped,
   * this is when every tunnel it had is in the log.
   */
  idle (timeoutMs?: number): Promise<void>
  /** squid's main process, for CPU accounting. */
  readonly pid: number
  /**
   * `url` with `host` in place of 127.0.0.1 (squid listens on 127.0.0.1
   * only: `host` must resolve there). A Negotiate client asks a ticket for
   * HTTP@<the proxy URL's host>, so it must address squid as `localhost`.
   */
  urlAt (host: string): string
}

/** The Kerberos side of squid's Negotiate auth: see startKdc() in kerberos.ts, whose `squid` property is this. */
export interface SquidKerberos {
  /** The service's keys, readable by squid's user (`proxy`). */
  readonly keytab: string
  /** The service principal squid accepts tickets for, e.g. `HTTP/localhost@SIDECAR.TEST`. */
  readonly principal: string
  /** The realm's krb5.conf (KRB5_CONFIG of squid and its helpers). */
  readonly krb5Conf: string
}

export interface SquidOptions {
  readonly user?: string
  readonly password?: string
  /**
   * TLS interception (ssl-bump): squid re-signs every upstream certificate
   * with `ca`, and trusts the origin through `originCaFile`.
   */
  readonly sslBump?: { readonly ca: CertificateAuthority, readonly originCaFile: string }
  /** Serve the proxy itself over TLS (https_port) with this certificate. */
  readonly tls?: { readonly cert: string, readonly key: string }
  /**
   * With `tls`: require a client certificate issued by this CA (PEM), as
   * squid 5's `https_port ... clientca=` does: a handshake without one, or
   * with another CA's, is refused with a TLS alert.
   */
  readonly clientCa?: string
  /** With `tls`: TLS 1.2 at most (`tls-options=NO_TLSv1_3`), where a refused client certificate ends the handshake itself. */
  readonly tls12?: boolean
  /** Listen on this port (default: a free one): to restart a proxy where the sidecar expects it. */
  readonly port?: number
  /**
   * The authentication squid asks for: basic (basic_ncsa_auth, the default),
   * digest (digest_file_auth), ntlm (ntlm_fake_auth), negotiate (Kerberos
   * through negotiate_kerberos_auth; needs `kerberos`) or negotiate-ntlm
   * (both offered, Negotiate first, as an Active Directory proxy does).
   */
  readonly auth?: 'basic' | 'digest' | 'ntlm' | 'negotiate' | 'negotiate-ntlm'
  /** The keytab, principal and krb5.conf for `auth: 'negotiate'` or `'negotiate-ntlm'`. */
  readonly kerberos?: SquidKerberos
  /** More names squid resolves to 127.0.0.1 (its hosts file), such as a 3scale SaaS name served by a test origin. */
  readonly hosts?: readonly string[]
}

/**
 * Debian's squid in the foreground with Basic auth (basic_ncsa_auth), names
 * resolved from its own hosts file, no cache. `forbidden.test` is denied by
 * ACL (403). Tunnels are counted from the access log, which squid writes when
 * a tunnel closes: count after the sidecar has stopped.
 */
export async function startSquid (options: SquidOptions = {}): Promise<Squid> {
  const { user = PROXY_USER, password = PROXY_PASSWORD } = options
  const dir = mkdtempSync(join(tmpdir(), 'sidecar-squid-'))
  chmodSync(dir, 0o777) // squid drops privileges to the proxy user
  // Written into squid.conf when it is written: a new one if the first is taken.
  let port = options.port ?? await freePort()
  const listen: string[] = []
  if (options.sslBump !== undefined) {
    writeFileSync(join(dir, 'bump.pem'), options.sslBump.ca.certPem + options.sslBump.ca.keyPem, { mode: 0o644 })
    execFileSync(CERTGEN, ['-c', '-s', join(dir, 'ssl_db'), '-M', '4MB'], { stdio: 'ignore' })
    execFileSync('chmod', ['-R', 'a+rwX', join(dir, 'ssl_db')])
    listen.push(
      `http_port 127.0.0.1:${PORT} ssl-bump tls-cert=${dir}/bump.pem generate-host-certificates=on dynamic_cert_mem_cache_size=4MB`,
      `sslcrtd_program ${CERTGEN} -s ${dir}/ssl_db -M 4MB`,
      'sslcrtd_children 2 startup=1 idle=1',
      'acl step1 at_step SslBump1',
      'ssl_bump peek step1',
      'ssl_bump bump all',
      `tls_outgoing_options cafile=${options.sslBump.originCaFile}`)
  } else if (options.tls !== undefined) {
    writeFileSync(join(dir, 'proxy.pem'), options.tls.cert + options.tls.key, { mode: 0o644 })
    if (options.clientCa !== undefined) writeFileSync(join(dir, 'client-ca.pem'), options.clientCa, { mode: 0o644 })
    listen.push(`https_port 127.0.0.1:${PORT} tls-cert=${dir}/proxy.pem` + (options.clientCa !== undefined ? ` clientca=${dir}/client-ca.pem` : '') + (options.tls12 === true ? ' tls-options=NO_TLSv1_3' : ''))
  } else {
    listen.push(`http_port 127.0.0.1:${PORT}`)
  }
  execFileSync('htpasswd', ['-bc', join(dir, 'passwd'), user, password], { stdio: 'ignore' })
  chmodSync(join(dir, 'passwd'), 0o644)
  // user:realm:HA1 (digest_file_auth -c): a plain user:password line cannot hold a ':' in the password.
  const ha1 = createHash('md5').update(`${user}:sidecar-test:${password}`).digest('hex')
  writeFileSync(join(dir, 'digest-passwd'), `${user}:sidecar-test:${ha1}\n`, { mode: 0o644 })
  const negotiate = options.auth === 'negotiate' || options.auth === 'negotiate-ntlm'
  if (negotiate && options.kerberos === undefined) throw new Error(`startSquid({ auth: '${options.auth}' }) needs the kerberos option (startKdc().squid)`)
  // ntlm_fake_auth runs the whole NTLM handshake and accepts any password.
  const ntlm = [
    `auth_param ntlm program ${NTLM_FAKE}`,
    'auth_param ntlm children 2 startup=1 idle=1',
    'auth_param ntlm keep_alive on'
  ]
  const auth = negotiate
    ? [
        // squid offers the schemes in this order (Proxy-Authenticate: Negotiate first).
        `auth_param negotiate program ${NEGOTIATE_KERBEROS} -k ${options.kerberos?.keytab ?? ''} -s ${options.kerberos?.principal ?? ''}`,
        'auth_param negotiate children 2 startup=1 idle=1',
        'auth_param negotiate keep_alive on',
        ...(options.auth === 'negotiate-ntlm' ? ntlm : [])
      ]
    : options.auth === 'ntlm'
    ? ntlm
    : options.auth === 'digest'
    ? [
        `auth_param digest program ${DIGEST} -c ${dir}/digest-passwd`,
        'auth_param digest children 2 startup=1 idle=1',
        'auth_param digest realm sidecar-test',
        'auth_param digest nonce_max_count 1000'
      ]
    : [
        `auth_param basic program ${NCSA} ${dir}/passwd`,
        'auth_param basic children 2 startup=1 idle=1',
        'auth_param basic realm sidecar-test'
      ]
  writeFileSync(join(dir, 'hosts'), `127.0.0.1 ${['portal.test', 'backend.test', 'forbidden.test', 'localhost', ...(options.hosts ?? [])].join(' ')}\n`)
  const conf = join(dir, 'squid.conf')
  const text = [
    ...listen,
    `pid_filename ${dir}/squid.pid`,
    `cache_log ${dir}/cache.log`,
    `access_log stdio:${dir}/access.log squid`,
    'cache deny all',
    'cache_mem 8 MB',
    `coredump_dir ${dir}`,
    `hosts_file ${dir}/hosts`,
    'dns_nameservers 127.0.0.1',
    // Names outside hosts_file fail at once as they would with a real DNS
    // answering NXDOMAIN, rather than after squid's 30 s of retries.
    'dns_timeout 1 seconds',
    'pinger_enable off',
    'shutdown_lifetime 0 seconds',
    'logfile_rotate 0',
    ...auth,
    'acl authed proxy_auth REQUIRED',
    'acl forbidden dstdomain forbidden.test',
    'http_access deny forbidden',
    'http_access allow authed',
    'http_access deny all',
    ''
  ].join('\n')
  const writeConf = (): void => { writeFileSync(conf, text.replaceAll(PORT, String(port))) }
  writeConf()

  // squid's helpers inherit its environment: the Negotiate helper finds the realm and its keys there.
  const squidEnv: NodeJS.ProcessEnv = options.kerberos === undefined
    ? process.env
    : { ...process.env, KRB5_CONFIG: options.kerberos.krb5Conf, KRB5_KTNAME: options.kerberos.keytab, KRB5RCACHEDIR: dir }
  let child: ChildProcess | undefined
  let lastError = ''
  for (let attempt = 0; attempt < 5 && child === undefined; attempt++) {
    const c = spawn(SQUID, ['-f', conf, '-N', '-d', '1'], { stdio: ['ignore', 'ignore', 'pipe'], env: squidEnv })
    let stderr = ''
    c.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
    const up = await waitForPort(port, 15_000, () => c.exitCode === null)
    if (up) {
      child = c
    } else {
      c.kill('SIGKILL')
      lastError = stderr
      if (options.port === undefined) {
        // Another listener may have taken the free port meanwhile: take another.
        port = await freePort()
        writeConf()
      } else {
        // A back-off before the next attempt, not a wait for an event: an
        // old squid's helpers may still hold the port for a moment.
        await sleep(500)
      }
    }
  }
  if (child === undefined) throw new Error(`squid did not start:\n${lastError}\n${safeRead(join(dir, 'cache.log'))}`)
  const proc = child
  const exited = new Promise<void>((resolve) => { proc.once('exit', () => { resolve() }) })

  const accessLog = (): string[] => safeRead(join(dir, 'access.log')).split('\n').filter((l) => l !== '')
  const scheme = options.tls !== undefined ? 'https:' : 'http:'
  // Negotiate takes no password: its URL has none, and names localhost, the
  // host of the service principal. Negotiate-or-NTLM keeps the NTLM credentials.
  const userinfo = options.auth === 'negotiate' ? '' : `${encodeURIComponent(user)}:${encodeURIComponent(password)}@`
  const urlAt = (host: string): string => `${scheme}//${userinfo}${host}:${port}`
  return {
    port,
    pid: proc.pid as number,
    url: urlAt(negotiate ? 'localhost' : '127.0.0.1'),
    urlAt,
    tunnels: () => accessLog().filter((l) => / CONNECT /.test(l) && /\/200 /.test(l)).length,
    authorizations: [],
    accessLog,
    idle: async (timeoutMs = 5000) => { await eventually(() => connectionsTo(port), (n) => n === 0, timeoutMs, `squid on port ${port} to close its client connections`) },
    // Idempotent: a test may stop squid itself, and its t.after closes it again.
    close: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return
      proc.kill('SIGTERM')
      // A bound on the wait for the exit, then SIGKILL: not a fixed sleep.
      await Promise.race([exited, sleep(5000, undefined, { ref: false })])
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
    }
  }
}

/**
 * TCP connections accepted on 127.0.0.1:`port` that the listening side has
 * not closed yet (Linux /proc/net/tcp: ESTABLISHED, SYN_RECV, CLOSE_WAIT).
 */
function connectionsTo (port: number): number {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`
  return safeRead('/proc/net/tcp').split('\n').slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f[1] === local && ['01', '03', '08'].includes(f[3] ?? '')).length
}

function safeRead (path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}

/**
 * Wait until something accepts TCP connections on 127.0.0.1:`port`.
 * Resolves false on timeout, or as soon as `alive()` says the process that
 * should listen has gone.
 */
export async function waitForPort (port: number, timeoutMs = 15_000, alive: () => boolean = () => true): Promise<boolean> {
  const { value } = await poll(async () => alive() ? (await accepts(port) ? 'up' : 'down') : 'gone', (state) => state !== 'down', timeoutMs)
  return value === 'up'
}

/** Whether something accepts a TCP connection on 127.0.0.1:`port` now. */
async function accepts (port: number): Promise<boolean> {
  return await new Promise<boolean>((resolve) => {
    const s = netConnect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => { resolve(false) })
  })
}
