import type { LookupFunction } from 'node:net'
import { ConfigError, type Config } from '../config/config.js'
import { diagnoseRoute, type RouteReport, type Step, type StepName } from './diagnose.js'
import type { ProxyEndpoint } from '../egress/egress.js'
import { endpointLabel } from '../observe/redact.js'
import { buildRoutes } from '../config/routes.js'
import { loadSettings } from '../config/settings.js'
import type { TlsMaterial } from '../tls/tls-material.js'
import { version } from '../version.js'

/**
 * `apicast-sidecar-proxy doctor [--json]`: with the service's own
 * environment, check every step of every route and say what to fix.
 *   1. config (and the trust store);
 *   2. proxy DNS and TCP (or the upstream's, when direct);
 *   3. CONNECT to each upstream, with the 407 schemes offered if any;
 *   4. the TLS chain: who issued it, and, for a private CA through a proxy,
 *      the certificate over a direct connection to compare (tls-verdict.ts);
 *   5. an unauthenticated request: 3scale's 403 means reachable;
 *   6. with a token configured, an authenticated portal call.
 * Every proxy of a route is checked, fallbacks included. Exit code 0 when
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
    if (!(err instanceof ConfigError)) throw err
    return {
      ok: false,
      version: version(),
      config: { ok: false, detail: 'the configuration is invalid', problems: err.problems },
      routes: []
    }
  }
  const routes = buildRoutes(config)
  const reports: RouteReport[] = []
  for (const route of routes) {
    const proxies: Array<ProxyEndpoint | undefined> = route.egress.kind === 'proxy' ? [route.egress.proxy, ...route.egress.fallbacks] : [undefined]
    for (const proxy of proxies) {
      reports.push(await diagnoseRoute(route, proxy, {
        trust: tls.trust,
        timeoutMs: config.timeouts.connectMs,
        proxyAuthScheme: config.proxyAuthScheme,
        authenticated: true,
        clientCert: tls.upstreamClient,
        compareDirect: true,
        ...(options.lookup !== undefined ? { lookup: options.lookup } : {})
      }))
    }
  }
  return {
    ok: reports.every((r) => r.ok),
    version: version(),
    // The endpoints with their paths (a pasted page path is the first thing to see), never a token.
    config: { ok: true, detail: `${routes.map((r) => `${r.name} → ${endpointLabel(r.upstream)}`).join(', ')}; ${tls.trust.summary.split(' — ')[0] ?? ''}` },
    routes: reports
  }
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
    lines.push('', `${route.route}  ${route.upstream}  ${route.via}`)
    for (const step of route.steps) {
      lines.push('  ' + line(step, LABEL[step.name]))
      if (step.ok === false && step.fix !== undefined) lines.push(`      fix: ${step.fix}`)
    }
  }
  const failed = (report.config.ok ? 0 : 1) + report.routes.filter((r) => !r.ok).length
  lines.push('', failed === 0
    ? 'Every step passed: the sidecar can reach 3scale through this path.'
    : `${failed} ${failed === 1 ? 'path has' : 'paths have'} a problem: fix the first ✗ of each and run doctor again.`, '')
  return lines.join('\n')
}

function line (step: Pick<Step, 'ok' | 'detail' | 'ms'> & { name: string }, label: string): string {
  const mark = step.ok === true ? '✓' : step.ok === false ? '✗' : '·'
  return `${mark} ${label.padEnd(8)} ${step.detail}${step.ms !== undefined ? ` (${step.ms} ms)` : ''}`
}
