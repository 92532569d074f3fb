import type { Dispatcher } from 'undici'
import type { Timeouts } from '../config/config.js'
import type { Route } from '../config/routes.js'
import type { NextHop } from '../egress/dispatcher.js'
import type { Egress } from '../egress/egress.js'
import { parseAbsoluteTarget, type Destination } from '../egress/forward-destination.js'
import type { ForwardTransport } from '../egress/forward-transport.js'
import { classifyRefusedTunnel, classifyUpstreamError, ConnectFailure, tunnelRefusalOf, describeTrustedChain, endpointNotFoundHint, explainUntrustedCertificate, UpstreamCertificateError, type Failure, type FailureContext } from '../failures/catalogue.js'
import { basicTokenHeader } from '../http/access-token.js'
import { buildUpstreamRequest, joinPath } from '../forwarding/rewrite.js'
import { endpointLabel, hostPort, redactPath } from '../observe/redact.js'
import { isSaasHost, judgeChain, type CaBundleState, type ChainFacts, type DirectComparison, type TlsVerdictCode } from '../tls/tls-verdict.js'

/**
 * The one probe stack of /readyz and `doctor`: a GET through a route's own
 * pooled transport (egress/dispatcher.ts), the dispatcher that forwards its
 * requests. The same tunnels, proxy authentication (Basic, Digest, NTLM),
 * trust store, client certificate and failover, and the same failure
 * catalogue (failures/catalogue.ts) to say what broke and what to change.
 * A probe therefore never opens a connection forwarding would not, and it
 * cannot pass or fail for a reason forwarding does not share.
 *
 * Doctor adds what only a one-off check can afford: the chain's issuer and
 * verdict from the handshake it observed, a direct connection to compare a
 * private chain with, and an authenticated portal call whose token is
 * placed by the forwarding rewrite itself.
 */
export type StepName = 'pac' | 'proxy' | 'tcp' | 'connect' | 'tls' | 'http' | 'auth'

export interface Step {
  readonly name: StepName
  /** undefined: not run, because an earlier step failed. */
  readonly ok: boolean | undefined
  readonly detail: string
  /** What to change, for a failed step. */
  readonly fix?: string
  readonly ms?: number
  /** The TLS step's verdict on who signed the chain (tls-verdict.ts). */
  readonly verdict?: TlsVerdictCode
}

export interface RouteReport {
  readonly route: string
  readonly upstream: string
  readonly via: string
  readonly ok: boolean
  /** The first failed step, if any. */
  readonly failed: StepName | undefined
  readonly steps: readonly Step[]
}

/** Paths that answer without credentials with 3scale's own 403. */
export const PROBE_PATH: Readonly<Record<Route['name'], string>> = {
  portal: '/admin/api/services.json',
  backend: '/transactions/authrep.xml'
}

/** What the upstream's TLS handshake through a hop showed, read while the socket was open. */
export interface TlsSeen {
  readonly authorized: boolean
  readonly reason: string
  /** undefined only if the server sent no certificate (or a resumed session showed none). */
  readonly chain: ChainFacts | undefined
}

export interface ProbeOptions {
  readonly timeouts: Timeouts
  readonly userAgent: string
  /** CA_BUNDLE's state, for the hint on an untrusted chain. */
  readonly caBundle?: CaBundleState | undefined
  /** The first upstream handshake through this hop (doctor observes it; /readyz does not). */
  readonly tlsSeen?: () => TlsSeen | undefined
  /**
   * What a direct TLS connection to the upstream shows (no request is sent),
   * to tell a private chain's owner: the server or an intercepting proxy
   * (doctor only; /readyz never opens a connection forwarding would not).
   */
  readonly compareDirect?: (upstream: URL, fingerprint: string) => Promise<DirectComparison>
  /** Also call the portal with the route's own token (doctor). */
  readonly authenticated?: boolean
}

/** The steps of a request to `route` through `hop`, in order. */
export function stepsOf (route: Route, hop: Pick<NextHop, 'proxy'>, authenticated = false): StepName[] {
  const https = route.upstream.protocol === 'https:'
  const steps: StepName[] = hop.proxy === undefined
    ? ['tcp', ...(https ? ['tls' as const] : []), 'http']
    : ['proxy', ...(https ? ['connect' as const, 'tls' as const] : []), 'http']
  // With PROXY_PAC_URL, the PAC's answer is the first step: the decision the others follow.
  const pac: StepName[] = route.egress.kind === 'pending' || route.egress.pac !== undefined ? ['pac'] : []
  return [...pac, ...steps, ...(authenticated && ownToken(route) !== undefined ? ['auth' as const] : [])]
}

/** Probe `route` through `hop`, step by step, stopping at the first failure. */
export async function probeHop (route: Route, hop: NextHop, options: ProbeOptions): Promise<RouteReport> {
  const upstream = route.upstream
  const names = stepsOf(route, hop, options.authenticated === true)
  const proxied = hop.proxy !== undefined
  const via = hop.proxy !== undefined ? `via proxy ${hop.proxy.url.protocol}//${hostPort(hop.proxy.url)}` : route.egress.kind === 'pending' ? 'no decision yet (PROXY_PAC_URL)' : 'direct'
  const ctx = (): FailureContext => ({ upstream, proxy: hop.proxy, refusal: hop.lastRefusal(), timeouts: options.timeouts })
  const steps: Step[] = []
  const report = (): RouteReport => {
    const failed = steps.find((s) => s.ok === false)?.name
    for (const name of names.slice(steps.length)) steps.push({ name, ok: undefined, detail: 'not run: an earlier step failed' })
    return { route: route.name, upstream: endpointLabel(upstream), via, ok: failed === undefined, failed, steps }
  }
  /** Every step before `failed` passed; `failed` did not. */
  const failAt = (failed: Step): RouteReport => {
    for (const name of names) {
      if (name === failed.name) break
      steps.push({ name, ok: true, detail: passed(name, route, hop) })
    }
    steps.push(failed)
    return report()
  }

  const target = joinPath(upstream.pathname, PROBE_PATH[route.name])
  const started = performance.now()
  let res: Dispatcher.ResponseData
  try {
    res = await send(hop, upstream, { method: 'GET', path: target, headers: { host: upstream.host } }, options)
  } catch (err) {
    return failAt(await failedStep(classifyUpstreamError(err, ctx()), err, route, hop, names, options))
  }
  const ms = Math.round(performance.now() - started)
  if (res.statusCode === 407 && proxied) {
    // An absolute-form (http://) upstream: the proxy's 407 is the answer itself.
    const failure = classifyUpstreamError(new Error('Proxy Authentication Required (407)'), ctx())
    return failAt({ name: names[0] as StepName, ok: false, detail: failure.message, fix: failure.hint })
  }

  for (const name of names) {
    if (name === 'http' || name === 'auth') break
    if (name === 'tls') {
      const tls = await tlsStep(route, hop, options)
      steps.push(tls)
      if (tls.ok !== true) return report()
    } else {
      steps.push({ name, ok: true, detail: passed(name, route, hop) })
    }
  }
  const http = httpStep(route, res, target, ms)
  steps.push(http)
  if (http.ok !== true || !names.includes('auth')) return report()
  steps.push(await authStep(route, hop, options, ctx))
  return report()
}

/**
 * The forward proxy's path to one allowed destination: a CONNECT through
 * its transport (egress/forward-transport.ts), the tunnel APIcast's CONNECT
 * would get, failover included, closed at once with no byte sent. What
 * goes inside is APIcast's own TLS, so there is no TLS or HTTP step; a
 * failure is worded by the same failure table as the routes'.
 *
 * Port 80 is plain HTTP, which APIcast sends as absolute-form requests
 * (HTTP_PROXY), not CONNECT, and which proxies commonly refuse to tunnel
 * (squid's default allows CONNECT to 443 only): it is checked with the
 * request APIcast's would be (probeForwardRequest).
 */
export async function probeForwardDestination (transport: ForwardTransport, destination: Destination, options: Pick<ProbeOptions, 'timeouts' | 'userAgent'>): Promise<RouteReport> {
  if (destination.port === 80) {
    const plain = parseAbsoluteTarget(new URL(`http://${destination.authority}/`))
    if (plain.ok) return await probeForwardRequest(transport, plain.destination, options)
  }
  const egress = await transport.decide(destination)
  const proxied = egress.kind === 'proxy'
  const pac = egress.kind === 'pending' || egress.pac !== undefined
  const names: StepName[] = [...(pac ? ['pac' as const] : []), ...(proxied ? ['proxy' as const, 'connect' as const] : ['tcp' as const])]
  const started = performance.now()
  const opened = await transport.open(destination, AbortSignal.timeout(3 * options.timeouts.connectMs))
  const ms = Math.round(performance.now() - started)
  const label = opened.ok ? opened.tunnel.via : opened.via
  const detail = (name: StepName): string => name === 'pac'
    ? pacPassed(egress)
    : name === 'proxy'
      ? `the proxy ${label} accepted the connection`
      : name === 'connect' ? `${label} opened the tunnel to ${destination.authority}` : `${destination.authority} accepted the connection`
  const steps: Step[] = []
  if (opened.ok) {
    opened.tunnel.socket.destroy()
    for (const name of names) steps.push({ name, ok: true, detail: detail(name), ...(name === names.at(-1) ? { ms } : {}) })
  } else {
    // Everything open() does is connecting: the step is read as for a failed connection.
    const { cause } = opened.failure
    const failedAt = stepOf(opened.failure, cause instanceof ConnectFailure ? cause : new ConnectFailure(cause), names, proxied)
    for (const name of names) {
      if (name === failedAt) steps.push({ name, ok: false, detail: opened.failure.message, fix: opened.failure.hint, ms })
      else steps.push(steps.some((st) => st.ok === false) ? { name, ok: undefined, detail: 'not run: an earlier step failed' } : { name, ok: true, detail: detail(name) })
    }
  }
  const failed = steps.find((st) => st.ok === false)?.name
  return { route: 'forward', upstream: destination.authority, via: label === 'direct' ? 'direct' : `via proxy ${label}`, ok: failed === undefined, failed, steps }
}

/**
 * The forward proxy's path to a plain-HTTP destination: `GET /` through the
 * transport its absolute-form requests use (requestsTo), on the hop in
 * use. Any answer of the destination passes, whatever its status: the
 * check is of the way there. squid's own error page (X-Squid-Error: it
 * could not resolve or reach the destination, or its policy refused it)
 * and a 407 fail, worded by the failure table.
 */
async function probeForwardRequest (transport: ForwardTransport, destination: Destination, options: Pick<ProbeOptions, 'timeouts' | 'userAgent'>): Promise<RouteReport> {
  const egress = await transport.decide(destination)
  const hop = transport.requestsTo(destination).active()
  const proxied = hop.proxy !== undefined
  const pac = egress.kind === 'pending' || egress.pac !== undefined
  const names: StepName[] = [...(pac ? ['pac' as const] : []), ...(proxied ? ['proxy' as const] : ['tcp' as const]), 'http']
  const ctx: FailureContext = { upstream: destination.url, proxy: hop.proxy, timeouts: options.timeouts, named: 'the URL APIcast asked for' }
  const host = destination.port === 80 ? destination.authority.slice(0, -':80'.length) : destination.authority
  const started = performance.now()
  let failed: { step: StepName, failure: Failure } | undefined
  let status = 0
  try {
    const res = await send(hop, destination.url, { method: 'GET', path: '/', headers: { host } }, options)
    status = res.statusCode
    if (proxied && res.headers['x-squid-error'] !== undefined) {
      failed = { step: 'http', failure: classifyRefusedTunnel(status, { ...ctx, refusal: tunnelRefusalOf(status, res.headers, 'auto') }) }
    }
  } catch (err) {
    const failure = classifyUpstreamError(err, ctx)
    failed = { step: stepOf(failure, err, names, proxied), failure }
  }
  const ms = Math.round(performance.now() - started)
  const detail = (name: StepName): string => name === 'pac'
    ? pacPassed(egress)
    : name === 'proxy'
      ? `the proxy ${hop.label} accepted the connection`
      : name === 'tcp' ? `${destination.authority} accepted the connection` : `${destination.authority} answered GET / with ${status} (${proxied ? 'in absolute-form, through the proxy' : 'direct'})`
  const steps: Step[] = []
  for (const name of names) {
    if (failed === undefined) steps.push({ name, ok: true, detail: detail(name), ...(name === 'http' ? { ms } : {}) })
    else if (steps.some((st) => st.ok === false)) steps.push({ name, ok: undefined, detail: 'not run: an earlier step failed' })
    else if (name === failed.step) steps.push({ name, ok: false, detail: failed.failure.message, fix: failed.failure.hint, ms })
    else steps.push({ name, ok: true, detail: detail(name) })
  }
  return { route: 'forward', upstream: `http://${destination.authority}`, via: proxied ? `via proxy ${hop.label}` : 'direct', ok: failed === undefined, failed: failed?.step, steps }
}

async function send (hop: NextHop, upstream: URL, request: { method: string, path: string, headers: Record<string, string | string[]> }, options: Pick<ProbeOptions, 'timeouts' | 'userAgent'>): Promise<Dispatcher.ResponseData> {
  const { connectMs } = options.timeouts
  // An absolute-form hop's request carries the credentials: the gate judges it as it does forwarded ones.
  const admission = await hop.credentials?.admit()
  try {
    const res = await hop.dispatcher.request({
      origin: upstream.origin,
      path: request.path,
      method: request.method,
      headers: { ...request.headers, 'user-agent': options.userAgent, accept: '*/*' },
      headersTimeout: connectMs,
      bodyTimeout: connectMs,
      signal: AbortSignal.timeout(3 * connectMs)
    })
    admission?.settle('accepted')
    await res.body.dump()
    return res
  } catch (err) {
    admission?.settle(classifyUpstreamError(err, { upstream, proxy: hop.proxy, timeouts: options.timeouts }).code === 'proxy_auth_required' ? 'refused' : 'unknown')
    throw err
  }
}

/** The failed step for a failure of the probe request, worded by the failure catalogue. */
async function failedStep (failure: Failure, err: unknown, route: Route, hop: NextHop, names: readonly StepName[], options: ProbeOptions): Promise<Step> {
  const name = stepOf(failure, err, names, hop.proxy !== undefined)
  const certificate = innermostCertificateError(err)
  if (certificate?.chain === undefined) return { name, ok: false, detail: failure.message, fix: failure.hint }
  // An untrusted upstream chain: doctor may compare with a direct connection to say whose CA it is.
  const chain = certificate.chain
  const direct = await directComparison(route, hop, chain, options)
  const verdict = judgeChain(chain, { host: route.upstream.hostname, direct })
  const explained = direct !== undefined
    ? explainUntrustedCertificate({ upstream: route.upstream, proxy: hop.proxy, timeouts: options.timeouts }, certificate.reason, chain, certificate.caBundle ?? options.caBundle, direct)
    : { message: failure.message, hint: failure.hint }
  return { name, ok: false, detail: explained.message, fix: explained.hint, verdict: verdict.code }
}

/** Which step a forwarding failure belongs to. */
function stepOf (failure: Failure, err: unknown, steps: readonly StepName[], proxied: boolean): StepName {
  const connecting = err instanceof ConnectFailure
  let step: StepName
  switch (failure.code) {
    case 'proxy_unreachable': step = 'proxy'; break
    // The https:// proxy's TLS handshake, over the client certificate: before any CONNECT.
    case 'proxy_client_certificate': step = 'proxy'; break
    case 'proxy_auth_required':
    case 'tunnel_refused': step = 'connect'; break
    case 'tls_untrusted':
      // Not the upstream's certificate while connecting through a proxy: the https:// proxy's own.
      step = connecting && proxied && !(err.cause instanceof UpstreamCertificateError) ? 'proxy' : 'tls'
      break
    case 'dns':
    case 'upstream_unreachable': step = 'tcp'; break
    case 'pac_unavailable': step = 'pac'; break
    case 'timeout':
    case 'reset': step = connecting ? (proxied ? 'connect' : 'tcp') : 'http'; break
    default: step = 'http'
  }
  // An absolute-form (http://) upstream has no CONNECT: the proxy step answers for it.
  return steps.includes(step) ? step : steps[0] as StepName
}

function innermostCertificateError (err: unknown): UpstreamCertificateError | undefined {
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof UpstreamCertificateError) return e
  }
  return undefined
}

/**
 * Only a private chain through a proxy, for a host that is not 3scale SaaS
 * (whose private chain is evidence enough), leaves a question a direct
 * connection can answer.
 */
async function directComparison (route: Route, hop: NextHop, chain: ChainFacts, options: ProbeOptions): Promise<DirectComparison | undefined> {
  if (options.compareDirect === undefined || hop.proxy === undefined || chain.publicRoot || isSaasHost(route.upstream.hostname)) return undefined
  return await options.compareDirect(route.upstream, chain.leaf.fingerprint)
}

/** The TLS step of a request that got an answer: the chain verified (or, with UPSTREAM_TLS_VERIFY=false, maybe not). */
async function tlsStep (route: Route, hop: NextHop, options: ProbeOptions): Promise<Step> {
  const seen = options.tlsSeen?.()
  if (seen === undefined) return { name: 'tls', ok: true, detail: passed('tls', route, hop) }
  const ctx = { upstream: route.upstream, proxy: hop.proxy, timeouts: options.timeouts }
  const chain = seen.chain
  if (chain === undefined) {
    return seen.authorized
      ? { name: 'tls', ok: true, detail: 'verified (a resumed TLS session: the certificate was checked when it began)' }
      : { name: 'tls', ok: false, detail: `the certificate of ${hostPort(route.upstream)} did not verify (${seen.reason}), and the server sent none to name`, fix: 'check the endpoint URL and that it serves TLS with a certificate' }
  }
  const direct = await directComparison(route, hop, chain, options)
  const verdict = judgeChain(chain, { host: route.upstream.hostname, direct })
  if (!seen.authorized) {
    // Only with UPSTREAM_TLS_VERIFY=false does an unverified chain carry requests: say so.
    const explained = explainUntrustedCertificate(ctx, seen.reason, chain, options.caBundle, direct)
    return { name: 'tls', ok: false, detail: `${explained.message} (forwarded anyway: UPSTREAM_TLS_VERIFY=false)`, fix: explained.hint, verdict: verdict.code }
  }
  const said = describeTrustedChain(chain, verdict, { ...ctx, tokenInQuery: route.tokenPolicy.kind === 'access_token' && route.tokenPolicy.location === 'query' })
  return { name: 'tls', ok: true, detail: `verified; ${said !== undefined ? said.message : `issued by ${chain.leaf.issuer}`}`, verdict: verdict.code }
}

function httpStep (route: Route, res: Dispatcher.ResponseData, target: string, ms: number): Step {
  const type = String(res.headers['content-type'] ?? 'no content type')
  if (res.statusCode >= 500) {
    return { name: 'http', ok: false, detail: `GET ${target} answered ${res.statusCode} (${type})`, fix: 'the upstream (or a proxy in front of it) is failing; check 3scale\'s status and the endpoint URL', ms }
  }
  if (res.statusCode === 404) {
    // 3scale answers its API paths with 403 without credentials: a 404 means
    // the endpoint's path (or host) is not where 3scale's API is.
    return {
      name: 'http',
      ok: false,
      detail: `GET ${target} answered 404 (${type}): ${route.upstream.host} has no such path`,
      fix: endpointNotFoundHint(route.name === 'portal' ? 'THREESCALE_PORTAL_ENDPOINT' : 'BACKEND_ENDPOINT_OVERRIDE', route.upstream),
      ms
    }
  }
  const threescale = res.statusCode === 403 || res.statusCode === 401 ? `: 3scale's ${res.statusCode} without credentials, so it is reachable` : ''
  return { name: 'http', ok: true, detail: `GET ${target} → ${res.statusCode} ${type}${threescale}`, ms }
}

/**
 * The portal call APIcast makes, with the route's own token placed by the
 * forwarding rewrite exactly as for APIcast's userinfo. The token is sent
 * only over a connection whose certificate verified.
 */
async function authStep (route: Route, hop: NextHop, options: ProbeOptions, ctx: () => FailureContext): Promise<Step> {
  const token = ownToken(route) as string
  const seen = options.tlsSeen?.()
  if (route.upstream.protocol === 'https:' && seen?.authorized !== true) {
    return { name: 'auth', ok: false, detail: 'not run: the token is never sent over a connection whose certificate did not verify', fix: 'fix the TLS step first' }
  }
  const rewritten = buildUpstreamRequest({ method: 'GET', url: PROBE_PATH.portal, headers: { authorization: basicTokenHeader(token) } }, route)
  if (!rewritten.ok) return { name: 'auth', ok: false, detail: rewritten.error.message, fix: 'check the token (ACCESS_TOKEN_FILE or THREESCALE_PORTAL_ENDPOINT userinfo)' }
  const shown = redactPath(rewritten.outgoing.path)
  const started = performance.now()
  let status: number
  try {
    status = (await send(hop, route.upstream, rewritten.outgoing, options)).statusCode
  } catch (err) {
    const failure = classifyUpstreamError(err, ctx())
    return { name: 'auth', ok: false, detail: `the authenticated call failed: ${failure.message}`, fix: failure.hint }
  }
  const ms = Math.round(performance.now() - started)
  if (status === 200) return { name: 'auth', ok: true, detail: `3scale accepted the access token (GET ${shown} → 200)`, ms }
  return {
    name: 'auth',
    ok: false,
    detail: `3scale refused the access token (GET ${shown} → ${status})`,
    fix: 'check the token (ACCESS_TOKEN_FILE or THREESCALE_PORTAL_ENDPOINT userinfo): it must be an Account Management API token with read access, for this portal',
    ms
  }
}

/** The sidecar's own token on a route that places one, if configured. */
function ownToken (route: Route): string | undefined {
  return route.tokenPolicy.kind === 'access_token' ? route.tokenPolicy.fallbackToken : undefined
}

/** What a step that the request got past has shown. */
function passed (name: StepName, route: Route, hop: NextHop): string {
  switch (name) {
    case 'pac': return pacPassed(route.egress)
    case 'proxy': return `the proxy ${hop.label} accepted the connection`
    case 'connect': return `${hop.label} opened the tunnel to ${hostPort(route.upstream)}`
    case 'tls': return `the certificate of ${hostPort(route.upstream)} verified against the trust store`
    default: return `${hostPort(route.upstream)} accepted the connection`
  }
}

/** The pac step, passed: the PAC's answer the way out follows. */
function pacPassed (egress: Egress): string {
  return `the PAC file answers "${egress.kind !== 'pending' ? egress.pac ?? '' : ''}"`
}
