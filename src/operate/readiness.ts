import type { Dispatcher } from 'undici'
import type { Config } from '../config/config.js'
import type { EgressPath } from '../egress/dispatcher.js'
import { PROBE_PATH, type RouteReport, type Step, type StepName } from '../diagnostics/diagnose.js'
import { classifyUpstreamError, ConnectFailure, endpointNotFoundHint, UpstreamCertificateError, type Failure } from '../failures/catalogue.js'
import type { LiveRoute } from '../forwarding/forward.js'
import { endpointLabel, hostPort } from '../observe/redact.js'
import { joinPath } from '../forwarding/rewrite.js'
import type { Route } from '../config/routes.js'

export interface Readiness {
  readonly ready: boolean
  readonly checkedAt: string
  readonly routes: Readonly<Record<string, RouteReport>>
}

/**
 * Readiness of the whole chain, per route: proxy reachable, CONNECT
 * accepted, TLS verified, the upstream answering HTTP. The result is cached
 * for READINESS_CACHE_MS and concurrent probes share one check, so probes
 * stay cheap for the proxy and for 3scale.
 *
 * Each check is one GET through the route's own transport, the pooled
 * dispatcher that forwards its requests: the same tunnels, proxy
 * authentication, trust store and client certificate, and the same failure
 * catalogue to explain what broke. A check therefore never opens a
 * connection the forwarding path would not (a bare TCP probe of the proxy
 * showed in squid's log as an error on every /readyz), and it cannot pass
 * or fail for a reason forwarding does not share (with mutual TLS, a probe
 * built without the client certificate kept /readyz at 503 for good).
 */
export function createReadiness (live: ReadonlyMap<string, LiveRoute>, config: Config): () => Promise<Readiness> {
  let cached: { at: number, result: Promise<Readiness> } | undefined
  const check = async (): Promise<Readiness> => {
    const entries = await Promise.all([...live.values()].map(async ({ route, upstream }) => {
      return [route.name, await probeRoute(route, upstream.active(), config.timeouts)] as const
    }))
    return {
      ready: entries.every(([, r]) => r.ok),
      checkedAt: new Date().toISOString(),
      routes: Object.fromEntries(entries)
    }
  }
  return async () => {
    const now = Date.now()
    if (cached === undefined || now - cached.at >= config.admin.readinessCacheMs) {
      cached = { at: now, result: check() }
    }
    return await cached.result
  }
}

/** The steps a request to `route` goes through on `path`, in order. */
function stepsOf (route: Route, path: EgressPath): StepName[] {
  const https = route.upstream.protocol === 'https:'
  if (path.proxy === undefined) return ['tcp', ...(https ? ['tls' as const] : []), 'http']
  return ['proxy', ...(https ? ['connect' as const, 'tls' as const] : []), 'http']
}

/** Which step a forwarding failure belongs to. */
function failedStep (failure: Failure, err: unknown, steps: readonly StepName[], proxied: boolean): StepName {
  const connecting = err instanceof ConnectFailure
  let step: StepName
  switch (failure.code) {
    case 'proxy_unreachable': step = 'proxy'; break
    case 'proxy_auth_required':
    case 'tunnel_refused': step = 'connect'; break
    case 'tls_untrusted':
      // Not the upstream's certificate while connecting through a proxy: the https:// proxy's own.
      step = connecting && proxied && !(err.cause instanceof UpstreamCertificateError) ? 'proxy' : 'tls'
      break
    case 'dns':
    case 'upstream_unreachable': step = 'tcp'; break
    case 'timeout':
    case 'reset': step = connecting ? (proxied ? 'connect' : 'tcp') : 'http'; break
    default: step = 'http'
  }
  // An absolute-form (http://) upstream has no CONNECT: the proxy step answers for it.
  return steps.includes(step) ? step : steps[0] as StepName
}

async function probeRoute (route: Route, path: EgressPath, timeouts: Config['timeouts']): Promise<RouteReport> {
  const upstream = route.upstream
  const names = stepsOf(route, path)
  const proxied = path.proxy !== undefined
  const via = path.proxy !== undefined ? `via proxy ${path.proxy.url.protocol}//${hostPort(path.proxy.url)}` : 'direct'
  const target = joinPath(upstream.pathname, PROBE_PATH[route.name])
  const report = (failed: StepName | undefined, last: Step): RouteReport => {
    const steps: Step[] = []
    for (const name of names) {
      if (name === last.name) steps.push(last)
      else if (failed !== undefined && names.indexOf(name) > names.indexOf(failed)) steps.push({ name, ok: undefined, detail: 'not run: an earlier step failed' })
      else steps.push({ name, ok: true, detail: passed(name, route, path) })
    }
    return { route: route.name, upstream: endpointLabel(upstream), via, ok: failed === undefined, failed, steps }
  }

  const started = performance.now()
  let res: Dispatcher.ResponseData
  try {
    res = await path.dispatcher.request({
      origin: upstream.origin,
      path: target,
      method: 'GET',
      headers: { host: upstream.host, 'user-agent': 'apicast-sidecar-proxy readiness', accept: '*/*' },
      headersTimeout: timeouts.connectMs,
      bodyTimeout: timeouts.connectMs,
      signal: AbortSignal.timeout(3 * timeouts.connectMs)
    })
    await res.body.dump()
  } catch (err) {
    const failure = classifyUpstreamError(err, { upstream, proxy: path.proxy, refusal: path.lastRefusal(), timeouts })
    const step = failedStep(failure, err, names, proxied)
    return report(step, { name: step, ok: false, detail: failure.message, fix: failure.hint })
  }
  const ms = Math.round(performance.now() - started)
  const type = String(res.headers['content-type'] ?? 'no content type')
  if (res.statusCode === 407 && proxied) {
    const failure = classifyUpstreamError(new Error('Proxy Authentication Required (407)'), { upstream, proxy: path.proxy, refusal: path.lastRefusal(), timeouts })
    return report(names[0] as StepName, { name: names[0] as StepName, ok: false, detail: failure.message, fix: failure.hint })
  }
  if (res.statusCode >= 500) {
    return report('http', { name: 'http', ok: false, detail: `GET ${target} answered ${res.statusCode} (${type})`, fix: 'the upstream (or a proxy in front of it) is failing; check 3scale\'s status and the endpoint URL', ms })
  }
  if (res.statusCode === 404) {
    // 3scale answers its API paths with 403 without credentials: a 404 means
    // the endpoint's path (or host) is not where 3scale's API is.
    return report('http', {
      name: 'http',
      ok: false,
      detail: `GET ${target} answered 404 (${type}): ${upstream.host} has no such path`,
      fix: endpointNotFoundHint(route.name === 'portal' ? 'THREESCALE_PORTAL_ENDPOINT' : 'BACKEND_ENDPOINT_OVERRIDE', upstream),
      ms
    })
  }
  const threescale = res.statusCode === 403 || res.statusCode === 401 ? `: 3scale's ${res.statusCode} without credentials, so it is reachable` : ''
  return report(undefined, { name: 'http', ok: true, detail: `GET ${target} → ${res.statusCode} ${type}${threescale}`, ms })
}

/** What a step that the request got past has shown. */
function passed (name: StepName, route: Route, path: EgressPath): string {
  switch (name) {
    case 'proxy': return `the proxy ${path.label} accepted the connection`
    case 'connect': return `${path.label} opened the tunnel to ${hostPort(route.upstream)}`
    case 'tls': return `the certificate of ${hostPort(route.upstream)} verified against the trust store`
    default: return `${hostPort(route.upstream)} accepted the connection`
  }
}
