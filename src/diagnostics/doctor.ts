import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { X509Certificate } from 'node:crypto'
import { isIP, type LookupFunction } from 'node:net'
import { TLSSocket } from 'node:tls'
import type { buildConnector as BuildConnectorType } from 'undici'
import type { Config, KerberosSettings } from '../config/config.js'
import { SetupError } from '../config/setup-error.js'
import { probeForwardDestination, probeHop, type RouteReport, type Step, type StepName, type TlsSeen } from './probe.js'
import { plainDestinations } from '../egress/forward-destination.js'
import { buildForwardTransport, forwardTransportOptionsOf, type ForwardPac } from '../egress/forward-transport.js'
import { buildTransport, proxySpn, secureContexts, transportOptionsOf, upstreamTlsOf, type UpstreamTls } from '../egress/dispatcher.js'
import type { Egress, ProxyEndpoint } from '../egress/egress.js'
import { isLoopback } from '../egress/no-proxy.js'
import { describePacFailure, ProxyAutoConfig } from '../egress/pac.js'
import { PacUnavailable, pacEgress } from '../egress/pac-answer.js'
import { createPacReader } from '../egress/pac-source.js'
import { createKerberosTokens } from '../egress/kerberos.js'
import { addonDir } from '../egress/package-roots.js'
import { classifyUpstreamError, FAILURES } from '../failures/catalogue.js'
import { buildConnector } from '../egress/undici-parts.js'
import { createLogger } from '../observe/logger.js'
import { caBundleState, readChain } from '../tls/tls-chain.js'
import type { DirectComparison } from '../tls/tls-verdict.js'
import type { TrustStore } from '../tls/trust-store.js'
import { endpointLabel, hostPort } from '../observe/redact.js'
import { buildRoutes, type Route, type RouteName } from '../config/routes.js'
import { loadSettings } from '../config/settings.js'
import type { TlsMaterial } from '../tls/tls-material.js'
import { version } from '../version.js'
import { bareHostname, effectivePort } from '../http/url.js'

/**
 * `apicast-sidecar-proxy doctor [--json]`: with the service's own
 * environment, check every step of every route and say what to fix.
 *   1. config (and the trust store);
 *   2. the connection to the proxy (or the upstream, when direct);
 *   3. CONNECT to each upstream, with the 407 schemes offered if any;
 *   4. the TLS chain: who issued it, and, for a private CA through a proxy,
 *      the certificate over a direct connection to compare (tls-verdict.ts);
 *   5. an unauthenticated request: 3scale's 403 means reachable;
 *   6. with a token configured, an authenticated portal call.
 *   0. with Kerberos credentials, a token for each proxy's service principal,
 *      and the client principal it is for;
 *   7. with FORWARD_PROXY_PORT, a CONNECT through the forward proxy's
 *      transport to each plain destination of FORWARD_PROXY_ALLOW
 *      (probeForwardDestination, as /readyz opens it).
 * Steps 2 to 5 are probeHop (probe.ts), the probe /readyz makes, through
 * the route's transport built as forwarding builds it. Every proxy of a
 * route is checked, fallbacks included. Exit code 0 when
 * every step passes, 1 otherwise.
 */
export async function runDoctor (argv: readonly string[], env: NodeJS.ProcessEnv, out: NodeJS.WritableStream = process.stdout, options: DoctorOptions = {}): Promise<number> {
  const json = argv.includes('--json')
  const report = await diagnose(env, options)
  out.write(json ? JSON.stringify(report, null, 2) + '\n' : render(report))
  return report.ok ? 0 : 1
}

export interface DoctorReport {
  readonly ok: boolean
  readonly version: string
  readonly config: { readonly ok: boolean, readonly detail: string, readonly problems?: readonly string[] }
  readonly routes: readonly RouteReport[]
  /** With FORWARD_PROXY_PORT: a CONNECT to each allowed destination that is a plain host, as /readyz opens it. */
  readonly forward?: readonly RouteReport[]
  /** With Kerberos credentials: a token for each proxy's service principal, and whose. */
  readonly kerberos?: readonly KerberosCheck[]
  /** With PROXY_PAC_URL: whether it loaded, and its answer for each route. */
  readonly pac?: PacCheck
}

export interface PacCheck {
  readonly ok: boolean
  readonly detail: string
  readonly fix?: string
}

export interface KerberosCheck {
  readonly spn: string
  readonly ok: boolean
  /** The client principal, where and how its ticket comes; or what failed. Never a token. */
  readonly detail: string
  readonly fix?: string
}

export interface DoctorOptions {
  /** How names are resolved for direct connections (node:dns by default); tests resolve *.test without DNS. */
  readonly lookup?: LookupFunction
}

async function diagnose (env: NodeJS.ProcessEnv, options: DoctorOptions): Promise<DoctorReport> {
  let config: Config
  let tls: TlsMaterial
  try {
    ({ config, tls } = loadSettings(env))
  } catch (err) {
    if (!(err instanceof SetupError)) throw err
    return {
      ok: false,
      version: version(),
      config: { ok: false, detail: 'the configuration is invalid', problems: err.problems },
      routes: []
    }
  }
  const upstreamTls = upstreamTlsOf(config, tls)
  // PROXY_PAC_URL: loaded once, and asked for each route, before anything is probed.
  const pac = config.pac !== undefined ? await diagnosePac(config, config.pac, upstreamTls) : undefined
  const routes = buildRoutes(config, pac?.decided)
  const kerberos = config.kerberos !== undefined ? await diagnoseKerberos(config, config.kerberos, routes) : undefined
  const forward = config.forwardProxy !== undefined ? await diagnoseForward(config, config.forwardProxy, upstreamTls, pac?.forward) : undefined
  // Doctor prints a report, not log lines.
  const quiet = createLogger('silent')
  const compareDirect = directTls(tls.trust, Math.min(config.timeouts.connectMs, 5000), options.lookup)
  const reports: RouteReport[] = []
  for (const route of routes) {
    // The route's transport, built as forwarding builds it; the first
    // handshake of each hop is read for the TLS step's words.
    const seen = new Map<number, TlsSeen>()
    const transport = buildTransport(route, transportOptionsOf(config, upstreamTls, quiet, {
      onConnected: (index, socket, leaf) => {
        if (!seen.has(index) && socket instanceof TLSSocket) seen.set(index, readTls(socket, leaf, tls.trust))
      },
      ...(pac !== undefined ? { pacUnavailable: pac.unavailable } : {})
    }))
    try {
      // Every hop: the proxy and each of FALLBACK_PROXIES, or direct.
      for (const hop of transport.hops) {
        reports.push(await probeHop(route, hop, {
          timeouts: config.timeouts,
          userAgent: 'apicast-sidecar-proxy doctor',
          caBundle: caBundleState(tls.trust),
          tlsSeen: () => seen.get(hop.index),
          compareDirect,
          authenticated: true
        }))
      }
    } finally {
      await transport.destroy()
    }
  }
  pac?.close()
  return {
    ok: reports.every((r) => r.ok) && (forward ?? []).every((r) => r.ok) && (kerberos ?? []).every((k) => k.ok) && pac?.check.ok !== false,
    version: version(),
    // The endpoints with their paths (a pasted page path is the first thing to see), never a token.
    config: { ok: true, detail: `${routes.map((r) => `${r.name} → ${endpointLabel(r.upstream)}`).join(', ')}; ${tls.trust.summary.split(' — ')[0] ?? ''}` },
    routes: reports,
    ...(forward !== undefined ? { forward } : {}),
    ...(kerberos !== undefined ? { kerberos } : {}),
    ...(pac !== undefined ? { pac: pac.check } : {})
  }
}

/** The PAC as doctor uses it: loaded once, its answer for each route, and for the forward proxy's destinations. */
interface DoctorPac {
  readonly check: PacCheck
  readonly decided: ReadonlyMap<RouteName, Egress>
  readonly unavailable: () => PacUnavailable
  readonly forward: ForwardPac | undefined
  close (): void
}

/**
 * The PAC step: fetch PROXY_PAC_URL once (directly, as the sidecar does),
 * compile it in the sandbox and ask it for each route. Its answer is each
 * route's first step (`pac`), and every proxy it lists is then probed as
 * the route's hops are; a PAC that cannot be loaded fails every route at
 * that step, with why.
 */
async function diagnosePac (config: Config, settings: NonNullable<Config['pac']>, upstreamTls: UpstreamTls): Promise<DoctorPac> {
  const reader = createPacReader(settings.source, { secureContext: secureContexts(upstreamTls).trustOnly, timeoutMs: config.timeouts.connectMs })
  const upstreams = buildRoutes(config).filter((r) => !isLoopback(r.upstream))
  const pac = new ProxyAutoConfig({ source: settings.source, refreshMs: settings.refreshMs, read: reader.read, log: createLogger('silent'), destinations: () => upstreams.map((r) => r.upstream) })
  let failure: unknown
  try {
    await pac.load()
  } catch (err) {
    failure = err
  } finally {
    await reader.close()
  }
  const decided = new Map<RouteName, Egress>()
  const answers: string[] = []
  if (failure === undefined) {
    for (const route of upstreams) {
      const answer = await pac.answer(route.upstream)
      decided.set(route.name, pacEgress(route.upstream, answer, settings.credentials))
      answers.push(`${route.name} (${hostPort(route.upstream)}) "${answer.text}"${answer.skipped.length > 0 ? `, skipping ${answer.skipped.join('; ')} (SOCKS)` : ''}`)
    }
  }
  const why = failure !== undefined ? `the PAC file PROXY_PAC_URL ${pac.label} ${describePacFailure(failure)}` : undefined
  return {
    check: why === undefined
      ? { ok: true, detail: `PROXY_PAC_URL ${pac.label} loaded; it answers ${answers.length > 0 ? answers.join(', ') : 'for no route (both are loopback)'}` }
      : { ok: false, detail: why, fix: FAILURES.pac_unavailable.describe({ upstream: new URL('https://pac.invalid'), proxy: undefined, timeouts: config.timeouts }, '').hint },
    decided,
    unavailable: () => new PacUnavailable(why ?? `the PAC file PROXY_PAC_URL ${pac.label} gives no answer`),
    forward: failure === undefined ? { answer: async (url) => await pac.answer(url), credentials: settings.credentials } : undefined,
    close: () => { pac.close() }
  }
}

/**
 * The Kerberos step: a token for the service principal of each proxy a
 * tunnel goes through (the routes' https:// ones, and the forward proxy's),
 * made as a tunnel's would be, and the client principal GSSAPI used. The
 * token itself is never shown.
 */
async function diagnoseKerberos (config: Config, settings: KerberosSettings, routes: readonly Route[]): Promise<KerberosCheck[]> {
  const proxies = new Map<string, ProxyEndpoint>()
  const tunnelled = routes.filter((r) => r.upstream.protocol === 'https:' && r.egress.kind === 'proxy')
  for (const route of tunnelled) {
    if (route.egress.kind !== 'proxy') continue
    for (const p of [route.egress.proxy, ...route.egress.fallbacks]) proxies.set(proxySpn(p.url, settings.spn), p)
  }
  if (config.forwardProxy !== undefined && config.proxies.https !== undefined) {
    for (const p of [config.proxies.https, ...config.fallbackProxies]) proxies.set(proxySpn(p.url, settings.spn), p)
  }
  const tokens = createKerberosTokens({ principal: settings.principal, addonDir: addonDir() })
  const source = settings.keytab !== undefined
    ? `from the keytab ${settings.keytab} (KRB5_CLIENT_KTNAME; GSSAPI renews the ticket itself)`
    : settings.ccache !== undefined ? `from the ticket cache ${settings.ccache} (KRB5CCNAME; renewed by kinit, not by the sidecar)` : 'from the default ticket cache'
  // From a keytab into a memory cache, the ticket GSSAPI gets is visible to
  // nobody: doctor (its own process) has it put in a file cache of its own
  // instead, for klist to read its principal and lifetime, then removes it.
  const own = settings.keytab !== undefined && !(settings.ccache ?? '').match(/^(FILE:)?\//) ? mkdtempSync(join(tmpdir(), 'sidecar-doctor-cc-')) : undefined
  const saved = process.env.KRB5CCNAME
  if (own !== undefined) process.env.KRB5CCNAME = `FILE:${join(own, 'cc')}`
  const checks: KerberosCheck[] = []
  try {
    const results: Array<{ spn: string, proxy: ProxyEndpoint, error?: unknown }> = []
    for (const [spn, proxy] of proxies) {
      try {
        await tokens.token(spn)
        results.push({ spn, proxy })
      } catch (error) {
        results.push({ spn, proxy, error })
      }
    }
    const held = await klistCredentials(own !== undefined ? { ...settings, keytab: undefined, ccache: join(own, 'cc') } : settings)
    const principal = settings.principal ?? held.principal
    for (const { spn, proxy, error } of results) {
      if (error === undefined) {
        checks.push({ spn, ok: true, detail: `${principal ?? 'the default principal'} has a ticket for ${spn}, ${source}${held.expires !== undefined ? `; the ticket-granting ticket expires ${held.expires}` : ''}` })
      } else {
        const failure = classifyUpstreamError(error, { upstream: routes[0]?.upstream ?? new URL('https://3scale.invalid'), proxy, timeouts: config.timeouts })
        checks.push({ spn, ok: false, detail: failure.message, fix: failure.hint })
      }
    }
  } finally {
    if (own !== undefined) {
      if (saved === undefined) Reflect.deleteProperty(process.env, 'KRB5CCNAME')
      else process.env.KRB5CCNAME = saved
      rmSync(own, { recursive: true, force: true })
    }
  }
  return checks
}

/**
 * Whose credentials the keytab or ticket cache holds, and (a cache) when
 * its ticket-granting ticket expires, read with MIT's klist where it is
 * installed (krb5-user, krb5-workstation). GSSAPI offers neither before a
 * context completes; without klist, doctor says less, never wrong.
 */
async function klistCredentials (settings: KerberosSettings): Promise<{ principal?: string, expires?: string }> {
  const klist = async (args: string[]): Promise<string> => await new Promise((resolve) => {
    execFile('klist', args, { timeout: 3000 }, (err, stdout) => { resolve(err !== null ? '' : stdout) })
  })
  if (settings.keytab !== undefined) {
    // `KVNO Timestamp Principal` rows: the first principal is the one GSSAPI uses.
    const row = /^\s*\d+\s+\S+\s+\S+\s+(\S+@\S+)\s*$/m.exec(await klist(['-k', '-t', settings.keytab]))
    return row?.[1] !== undefined ? { principal: row[1] } : {}
  }
  if (settings.ccache === undefined) return {}
  const out = await klist(['-c', settings.ccache])
  const principal = /^Default principal: (\S+)/m.exec(out)?.[1]
  const tgt = /^\S+ \S+\s+(\S+ \S+)\s+krbtgt\//m.exec(out)?.[1]
  return { ...(principal !== undefined ? { principal } : {}), ...(tgt !== undefined ? { expires: tgt } : {}) }
}

/** The forward proxy's transport, built as the listener builds it, and a CONNECT (a request, to port 80) through it per plain destination. */
async function diagnoseForward (config: Config, settings: NonNullable<Config['forwardProxy']>, upstreamTls: UpstreamTls, pac: ForwardPac | undefined): Promise<RouteReport[]> {
  // Without a loaded PAC, every destination is undecided, and says why.
  const unloaded: ForwardPac = { answer: async () => await Promise.reject(new PacUnavailable(`the PAC file PROXY_PAC_URL could not be loaded (see the PAC step above)`)), credentials: { user: undefined, password: undefined } }
  const transport = buildForwardTransport(forwardTransportOptionsOf(config, upstreamTls, createLogger('silent'), config.pac !== undefined ? { pac: pac ?? unloaded } : {}))
  try {
    const reports: RouteReport[] = []
    for (const destination of plainDestinations(settings.allow)) reports.push(await probeForwardDestination(transport, destination, { timeouts: config.timeouts, userAgent: 'apicast-sidecar-proxy doctor' }))
    return reports
  } finally {
    transport.close()
  }
}

function readTls (socket: TLSSocket, leaf: X509Certificate | undefined, trust: TrustStore): TlsSeen {
  return {
    authorized: socket.authorized,
    reason: String(socket.authorizationError ?? ''),
    chain: leaf !== undefined ? readChain(leaf, trust) : undefined
  }
}

/**
 * Read the upstream's certificate over a direct TLS connection (bypassing
 * the proxy; no request is sent), with undici's connector as the direct
 * path uses, and compare it with the one seen through the proxy: the same
 * certificate clears the proxy, a different one is interception. Where the
 * network allows no direct connection, the answer is "unavailable" with the
 * reason, and the verdict stays "a private CA".
 */
function directTls (trust: TrustStore, timeoutMs: number, lookup: LookupFunction | undefined): (upstream: URL, fingerprint: string) => Promise<DirectComparison> {
  const connector = buildConnector({ timeout: timeoutMs, rejectUnauthorized: false, maxCachedSessions: 0, ...(lookup !== undefined ? { lookup } : {}) })
  return async (upstream, fingerprint) => await new Promise<DirectComparison>((resolve) => {
    connector({
      protocol: upstream.protocol,
      hostname: bareHostname(upstream),
      host: upstream.host,
      port: effectivePort(upstream),
      servername: serverName(upstream) ?? null
    } as unknown as BuildConnectorType.Options, (err, socket) => {
      if (err !== null) {
        resolve({ kind: 'unavailable', reason: codeOf(err) })
        return
      }
      const leaf = socket instanceof TLSSocket ? socket.getPeerX509Certificate() : undefined
      socket.destroy()
      if (leaf === undefined) resolve({ kind: 'unavailable', reason: 'no certificate' })
      else if (leaf.fingerprint256 === fingerprint) resolve({ kind: 'same' })
      else resolve({ kind: 'different', issuer: readChain(leaf, trust).leaf.issuer })
    })
  })
}

/**
 * The TLS server name (SNI) for `url`, or undefined for an IP literal: RFC
 * 6066 forbids IP addresses there, and Node prints a DEP0123 warning, a
 * non-JSON line on stdout, for each one.
 */
function serverName (url: URL): string | undefined {
  const host = bareHostname(url)
  return isIP(host) === 0 ? host : undefined
}

function codeOf (err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : err instanceof Error ? err.message : String(err)
}

const LABEL: Readonly<Record<StepName, string>> = {
  pac: 'PAC',
  proxy: 'proxy',
  tcp: 'TCP',
  connect: 'CONNECT',
  tls: 'TLS',
  http: 'HTTP',
  auth: 'token'
}

function render (report: DoctorReport): string {
  const lines: string[] = [`apicast-sidecar-proxy doctor ${report.version}`, '']
  lines.push(line({ name: 'config', ok: report.config.ok, detail: report.config.detail }, 'config'))
  for (const problem of report.config.problems ?? []) lines.push(`      ${problem}`)
  if (!report.config.ok) lines.push('      fix: correct the settings above (see the README\'s settings table)')
  if (report.pac !== undefined) lines.push(line({ name: 'pac', ok: report.pac.ok, detail: report.pac.detail }, 'PAC'), ...(report.pac.fix !== undefined ? [`      fix: ${report.pac.fix}`] : []))
  for (const k of report.kerberos ?? []) {
    lines.push(line({ name: 'kerberos', ok: k.ok, detail: k.detail }, 'Kerberos'), ...(k.fix !== undefined ? [`      fix: ${k.fix}`] : []))
  }
  for (const route of report.routes) {
    lines.push('', `${route.route}  ${route.upstream}  ${route.via}`, ...stepLines(route.steps))
  }
  for (const tunnel of report.forward ?? []) {
    lines.push('', `forward proxy  ${tunnel.upstream.startsWith('http://') ? `GET ${tunnel.upstream}/` : `CONNECT ${tunnel.upstream}`}  ${tunnel.via}`, ...stepLines(tunnel.steps))
  }
  const failed = (report.config.ok ? 0 : 1) + (report.pac?.ok === false ? 1 : 0) + [...report.routes, ...report.forward ?? []].filter((r) => !r.ok).length + (report.kerberos ?? []).filter((k) => !k.ok).length
  lines.push('', failed === 0
    ? `Every step passed: the sidecar can reach 3scale${(report.forward ?? []).length > 0 ? ' and each forward-proxy destination' : ''} the way it forwards.`
    : `${failed} of the sections above ${failed === 1 ? 'has' : 'have'} a problem: fix the first ✗ of each and run doctor again.`, '')
  return lines.join('\n')
}

function stepLines (steps: readonly Step[]): string[] {
  return steps.flatMap((step) => ['  ' + line(step, LABEL[step.name]), ...(step.ok === false && step.fix !== undefined ? [`      fix: ${step.fix}`] : [])])
}

function line (step: Pick<Step, 'ok' | 'detail' | 'ms'> & { name: string }, label: string): string {
  const mark = step.ok === true ? '✓' : step.ok === false ? '✗' : '·'
  return `${mark} ${label.padEnd(8)} ${step.detail}${step.ms !== undefined ? ` (${step.ms} ms)` : ''}`
}
