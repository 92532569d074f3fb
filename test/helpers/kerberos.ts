import { createHash } from 'node:crypto'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { poll } from './eventually.js'
import { freePort, squidSkip, waitForPort } from './proxies.js'

const run = promisify(execFile)

export const KRB5KDC = '/usr/sbin/krb5kdc'
export const KADMIN_LOCAL = '/usr/sbin/kadmin.local'
export const KDB5_UTIL = '/usr/sbin/kdb5_util'
export const KINIT = '/usr/bin/kinit'
export const NEGOTIATE_KERBEROS_AUTH = '/usr/lib/squid/negotiate_kerberos_auth'

/** The test realm: a name no real KDC serves, so nothing can leave the machine. */
export const REALM = 'SIDECAR.TEST'
/** The service principal of the proxy: what a client asks a ticket for when the proxy URL names `localhost`. */
export const PROXY_SERVICE = 'HTTP/localhost'
/** The GSSAPI (host-based) name of that service, as clients name it. */
export const PROXY_SPN = 'HTTP@localhost'

/**
 * The skip reason of a Kerberos test, or false when the whole world is there:
 * MIT's KDC and admin tools, kinit, squid with its Negotiate helper, and the
 * optional `kerberos` npm package built for this node.
 */
export const kerberosSkip: string | false = await findKerberosSkip()

async function findKerberosSkip (): Promise<string | false> {
  if (squidSkip !== false) return squidSkip
  const packages: Record<string, string> = {
    [KRB5KDC]: 'krb5-kdc',
    [KDB5_UTIL]: 'krb5-kdc',
    [KADMIN_LOCAL]: 'krb5-admin-server',
    [KINIT]: 'krb5-user',
    [NEGOTIATE_KERBEROS_AUTH]: 'squid-openssl'
  }
  const missing = Object.keys(packages).filter((path) => !existsSync(path))
  if (missing.length > 0) {
    const names = [...new Set(missing.map((path) => packages[path]))].join(', ')
    return `${missing.join(', ')} missing: Debian's ${names} not installed (.ci/run installs them)`
  }
  try {
    await loadKerberos()
  } catch (err) {
    return `the optional npm dependency kerberos does not load (${(err as Error).message.split('\n')[0]}); .ci/run builds it from source (libkrb5-dev, npm_config_nodedir=/usr)`
  }
  return false
}

/** What the tests use of the `kerberos` package. */
interface KerberosModule {
  readonly GSS_MECH_OID_SPNEGO: number
  readonly initializeClient: (service: string, options: { readonly mechOID?: number }) => Promise<{ step (challenge: string): Promise<string> }>
}

/**
 * The optional `kerberos` package. npm drops an optional dependency whose
 * build failed, types included: a specifier the compiler does not resolve
 * keeps the tests compiling there, and kerberosSkip says why they skip.
 */
async function loadKerberos (): Promise<KerberosModule> {
  const name: string = 'kerberos'
  return await import(name) as KerberosModule
}

/** A principal added by addPrincipal(), and a keytab holding its key. */
export interface Principal {
  /** With the realm, e.g. `HTTP/other@SIDECAR.TEST`. */
  readonly name: string
  readonly keytab: string
}

export interface Kdc {
  readonly realm: string
  /** The KDC's port on 127.0.0.1, TCP and UDP. */
  readonly port: number
  /** The folder that holds everything below; close() removes it. */
  readonly dir: string
  /** The krb5.conf of this world: point KRB5_CONFIG at it. */
  readonly krb5Conf: string
  /** The keytab of `HTTP/localhost@REALM`, readable by squid's user. */
  readonly proxyKeytab: string
  /** `HTTP/localhost@REALM`. */
  readonly proxyPrincipal: string
  /** The client's principal, e.g. `sidecar@SIDECAR.TEST`. */
  readonly clientPrincipal: string
  readonly clientPassword: string
  /** The client's keys (ktadd -norandkey: the password still works). */
  readonly clientKeytab: string
  /** `{ KRB5_CONFIG }`, to spread into a child's environment. */
  readonly env: Readonly<Record<string, string>>
  /** The `kerberos` option of startSquid(): the proxy's keytab and principal in this realm. */
  readonly squid: { readonly keytab: string, readonly principal: string, readonly krb5Conf: string }
  /**
   * `kinit -kt KEYTAB -c FILE:cacheFile PRINCIPAL` (the client's by default)
   * and the cache's name (`FILE:…`), for KRB5CCNAME. Rejects when the KDC
   * does not answer.
   */
  kinit (cacheFile: string, who?: Principal): Promise<string>
  /**
   * Add `name` (the realm is appended unless it has one) with `password`, or
   * a random key without one, and write its keys to a keytab of its own: a
   * wrong service principal for squid, a second client.
   */
  addPrincipal (name: string, password?: string): Promise<Principal>
  /** Kill the KDC: the world with its KDC unreachable. Idempotent. */
  stop (): Promise<void>
  /** Start the KDC again on the same port. */
  start (): Promise<void>
  /** Kill the KDC and remove the folder. Idempotent. */
  close (): Promise<void>
}

export interface KdcOptions {
  /** Default: SIDECAR.TEST. */
  readonly realm?: string
  /** The client's name without the realm; default `sidecar`. */
  readonly client?: string
  readonly clientPassword?: string
}

/**
 * An MIT Kerberos realm of the test's own, in a fresh folder: a KDC on
 * 127.0.0.1 (krb5kdc in the foreground), the proxy's service principal
 * `HTTP/localhost@REALM` with its keytab, and a client principal with a
 * password and a keytab. Nothing touches /etc: every tool gets the folder's
 * krb5.conf and kdc.conf through KRB5_CONFIG and KRB5_KDC_PROFILE.
 */
export async function startKdc (options: KdcOptions = {}): Promise<Kdc> {
  const realm = options.realm ?? REALM
  const client = options.client ?? 'sidecar'
  const clientPassword = options.clientPassword ?? 'krb-Pw-5t0ne'
  const dir = mkdtempSync(join(tmpdir(), 'sidecar-krb-'))
  // squid's helper runs as the proxy user and reads the keytab and krb5.conf here.
  chmodSync(dir, 0o755)
  const krb5Conf = join(dir, 'krb5.conf')
  const kdcConf = join(dir, 'kdc.conf')
  const env = (): NodeJS.ProcessEnv => ({ ...process.env, KRB5_CONFIG: krb5Conf, KRB5_KDC_PROFILE: kdcConf })
  let port = await freePort()
  writeConfs(dir, realm, port)

  const kadmin = async (query: string): Promise<void> => {
    await run(KADMIN_LOCAL, ['-r', realm, '-q', query], { env: env() })
  }
  const addPrincipal = async (name: string, password?: string): Promise<Principal> => {
    const full = name.includes('@') ? name : `${name}@${realm}`
    // A file name from the principal, cut short (a long principal, for a large token, would exceed NAME_MAX).
    const safe = full.replace(/[^A-Za-z0-9.-]/g, '_')
    const keytab = join(dir, `${safe.length > 80 ? `${safe.slice(0, 60)}-${createHash('sha256').update(full).digest('hex').slice(0, 12)}` : safe}.keytab`)
    await kadmin(password === undefined ? `addprinc -randkey ${full}` : `addprinc -pw ${password} ${full}`)
    // -norandkey: the keytab holds the keys as they are, so a password still works.
    await kadmin(`ktadd -k ${keytab} -norandkey ${full}`)
    chmodSync(keytab, 0o644)
    return { name: full, keytab }
  }

  let proxy: Principal
  let user: Principal
  try {
    await run(KDB5_UTIL, ['create', '-s', '-r', realm, '-P', `master-${randomBytes(8).toString('hex')}`], { env: env() })
    proxy = await addPrincipal(PROXY_SERVICE)
    user = await addPrincipal(client, clientPassword)
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
  const proxyKeytab = proxy.keytab
  const clientKeytab = user.keytab

  let kdc: ChildProcess | undefined
  // The first start may move to another port; a restart must keep it, as the clients' krb5.conf names it.
  let first = true
  const start = async (): Promise<void> => {
    if (kdc !== undefined && kdc.exitCode === null && kdc.signalCode === null) return
    kdc = undefined
    let lastError = ''
    for (let attempt = 0; attempt < 5 && kdc === undefined; attempt++) {
      const c = spawn(KRB5KDC, ['-n'], { env: env(), stdio: ['ignore', 'ignore', 'pipe'] })
      let stderr = ''
      c.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
      const alive = (): boolean => c.exitCode === null && c.signalCode === null
      // This KDC's own word that it bound its sockets, then its port: a port
      // that answers could be another listener's that took it meanwhile.
      const commencing = `krb5kdc[${c.pid ?? ''}](info): commencing operation`
      const logged = await poll(() => alive() ? readOr(join(dir, 'kdc.log')).includes(commencing) : 'gone', (v) => v !== false, 10_000)
      if (logged.value === true && await waitForPort(port, 10_000, alive)) {
        kdc = c
      } else {
        c.kill('SIGKILL')
        lastError = stderr + readOr(join(dir, 'kdc.log'))
        if (first) {
          // Another listener took the free port meanwhile: take another.
          port = await freePort()
          writeConfs(dir, realm, port)
        } else {
          // A back-off before the next attempt on the same port, not a wait for an event.
          await sleep(300)
        }
      }
    }
    if (kdc === undefined) throw new Error(`krb5kdc did not start:\n${lastError}`)
  }
  const stop = async (): Promise<void> => {
    const c = kdc
    kdc = undefined
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return
    const exited = new Promise<void>((resolve) => { c.once('exit', () => { resolve() }) })
    c.kill('SIGTERM')
    // A bound on the wait for the exit, then SIGKILL: not a fixed sleep.
    await Promise.race([exited, sleep(5000, undefined, { ref: false })])
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGKILL')
      await exited
    }
  }
  try {
    await start()
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
  first = false

  return {
    realm,
    get port () { return port },
    dir,
    krb5Conf,
    proxyKeytab,
    proxyPrincipal: proxy.name,
    clientPrincipal: user.name,
    clientPassword,
    clientKeytab,
    env: { KRB5_CONFIG: krb5Conf },
    squid: { keytab: proxyKeytab, principal: proxy.name, krb5Conf },
    kinit: async (cacheFile, who) => {
      const ccache = `FILE:${cacheFile}`
      await run(KINIT, ['-kt', who?.keytab ?? clientKeytab, '-c', ccache, who?.name ?? user.name], { env: { ...process.env, KRB5_CONFIG: krb5Conf }, timeout: 15_000 })
      return ccache
    },
    addPrincipal,
    stop,
    start,
    close: async () => {
      await stop()
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

/**
 * A first SPNEGO token for `spn` (default `HTTP@localhost`) from the
 * `kerberos` package, as the sidecar would make it: the client's keys from
 * its keytab (KRB5_CLIENT_KTNAME) and a memory cache of its own, no kinit.
 * GSSAPI reads these variables when it is called, so they are set in
 * process.env only for the calls and restored after: a test process holds
 * one GSSAPI, and the variables must not leak into the next test.
 */
export async function negotiateToken (kdc: Kdc, spn = PROXY_SPN, who?: Principal): Promise<string> {
  const { initializeClient, GSS_MECH_OID_SPNEGO } = await loadKerberos()
  return await withEnv({
    KRB5_CONFIG: kdc.krb5Conf,
    KRB5_CLIENT_KTNAME: who?.keytab ?? kdc.clientKeytab,
    // A cache per call: a ticket cached for another KDC's key must not be reused.
    KRB5CCNAME: `MEMORY:sidecar-${randomBytes(6).toString('hex')}`
  }, async () => {
    const client = await initializeClient(spn, { mechOID: GSS_MECH_OID_SPNEGO })
    return await client.step('')
  })
}

/** Run `fn` with `vars` set in process.env, and put back what was there, whatever `fn` does. */
export async function withEnv<T> (vars: Readonly<Record<string, string>>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]))
  Object.assign(process.env, vars)
  try {
    return await fn()
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) Reflect.deleteProperty(process.env, k)
      else process.env[k] = v
    }
  }
}

/** krb5.conf (the clients', squid's helper's) and kdc.conf (the KDC's and kadmin.local's), for a KDC on 127.0.0.1:`port`. */
function writeConfs (dir: string, realm: string, port: number): void {
  const kdc = `127.0.0.1:${port}`
  writeFileSync(join(dir, 'krb5.conf'), [
    '[libdefaults]',
    `  default_realm = ${realm}`,
    // No DNS at all: the realm and its KDC are named here, host names are taken as written.
    '  dns_lookup_realm = false',
    '  dns_lookup_kdc = false',
    '  rdns = false',
    '  dns_canonicalize_hostname = false',
    // TCP first, so the KDC's TCP port is the one that must answer.
    '  udp_preference_limit = 1',
    '  ticket_lifetime = 1h',
    '  forwardable = false',
    '',
    '[realms]',
    `  ${realm} = {`,
    `    kdc = ${kdc}`,
    '  }',
    '',
    '[domain_realm]',
    `  localhost = ${realm}`,
    ''
  ].join('\n'), { mode: 0o644 })
  writeFileSync(join(dir, 'kdc.conf'), [
    '[kdcdefaults]',
    `  kdc_listen = ${kdc}`,
    `  kdc_tcp_listen = ${kdc}`,
    '',
    '[realms]',
    `  ${realm} = {`,
    `    kdc_listen = ${kdc}`,
    `    kdc_tcp_listen = ${kdc}`,
    `    database_name = ${join(dir, 'principal')}`,
    `    key_stash_file = ${join(dir, 'stash')}`,
    `    acl_file = ${join(dir, 'kadm5.acl')}`,
    '    max_life = 1h',
    '  }',
    '',
    '[logging]',
    `  kdc = FILE:${join(dir, 'kdc.log')}`,
    `  admin_server = FILE:${join(dir, 'kadmin.log')}`,
    `  default = FILE:${join(dir, 'krb5.log')}`,
    ''
  ].join('\n'), { mode: 0o644 })
}

function readOr (path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}
