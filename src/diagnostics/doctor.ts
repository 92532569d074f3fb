import type { X509Certificate } from 'node:crypto'
import { isIP, type LookupFunction } from 'node:net'
import { TLSSocket } from 'node:tls'
import type { buildConnector as BuildConnectorType } from 'undici'
import type { Config } from '../config/config.js'
import { SetupError } from '../config/setup-error.js'
import { probeForwardDestination, probeHop, type RouteReport, type Step, type StepName, type TlsSeen } from './probe.js'
import { plainDestinations } from '../egress/forward-destination.js'
import { buildForwardTransport, forwardTransportOptionsOf } from '../egress/forward-transport.js'
import { buildTransport, transportOptionsOf, upstreamTlsOf, type UpstreamTls } from '../egress/dispatcher.js'
import { buildConnector } from '../egress/undici-parts.js'
import { createLogger } from '../observe/logger.js'
import { caBundleState, readChain } from '../tls/tls-chain.js'
import type { DirectComparison } from '../tls/tls-verdict.js'
import type { TrustStore } from '../tls/trust-store.js'
import { endpointLabel } from '../observe/redact.js'
import { buildRoutes } from '../config/routes.js'
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
  const forward = config.forwardProxy !== undefined ? await diagnoseForward(config, config.forwardProxy, upstreamTlsOf(config, tls)) : undefined
  const routes = buildRoutes(config)
  const upstreamTls = upstreamTlsOf(config, tls)
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
      }
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
  return {
    ok: reports.every((r) => r.ok) && (forward ?? []).every((r) => r.ok),
    version: version(),
    // The endpoints with their paths (a pasted page path is the first thing to see), never a token.
    config: { ok: true, detail: `${routes.map((r) => `${r.name} → ${endpointLabel(r.upstream)}`).join(', ')}; ${tls.trust.summary.split(' — ')[0] ?? ''}` },
    routes: reports,
    ...(forward !== undefined ? { forward } : {})
  }
}

/** The forward proxy's transport, built as the listener builds it, and a CONNECT (a request, to port 80) through it per plain destination. */
async function diagnoseForward (config: Config, settings: NonNullable<Config['forwardProxy']>, upstreamTls: UpstreamTls): Promise<RouteReport[]> {
  const transport = buildForwardTransport(forwardTransportOptionsOf(config, upstreamTls, createLogger('silent')))
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
  for (const route of report.routes) {
    lines.push('', `${route.route}  ${route.upstream}  ${route.via}`, ...stepLines(route.steps))
  }
  for (const tunnel of report.forward ?? []) {
    lines.push('', `forward proxy  ${tunnel.upstream.startsWith('http://') ? `GET ${tunnel.upstream}/` : `CONNECT ${tunnel.upstream}`}  ${tunnel.via}`, ...stepLines(tunnel.steps))
  }
  const failed = (report.config.ok ? 0 : 1) + [...report.routes, ...report.forward ?? []].filter((r) => !r.ok).length
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
