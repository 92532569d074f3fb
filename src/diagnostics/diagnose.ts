import { lookup as dnsLookup } from 'node:dns'
import { request as httpRequest, type ClientRequestArgs, type IncomingMessage } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { connect as netConnect, isIP, type LookupFunction } from 'node:net'
import type { Duplex } from 'node:stream'
import { connect as tlsConnect, TLSSocket } from 'node:tls'
import { HttpProxyAgent } from 'http-proxy-agent'
import type { buildConnector as BuildConnectorType } from 'undici'
import { basicTokenHeader } from '../http/access-token.js'
import { proxyAuthorization, type ProxyEndpoint } from '../egress/egress.js'
import { describeTrustedChain, endpointNotFoundHint, explainUntrustedCertificate, isTlsCode, parseAuthSchemes, proxyAuthHint } from '../failures/catalogue.js'
import { joinPath } from '../forwarding/rewrite.js'
import { endpointLabel, hostPort } from '../observe/redact.js'
import type { Route } from '../config/routes.js'
import { caBundleState, readChain } from '../tls/tls-chain.js'
import { isSaasHost, judgeChain, type ChainFacts, type DirectComparison, type TlsVerdictCode } from '../tls/tls-verdict.js'
import type { TrustStore } from '../tls/trust-store.js'
import type { ProxyAuthScheme } from '../egress/auth-negotiation.js'
import { TunnelClient } from '../egress/tunnel-client.js'
import { buildConnector } from '../egress/undici-parts.js'

/**
 * Step-by-step checks of one route's whole path, shared by /readyz and
 * `doctor`. They run on node:http with http(s)-proxy-agent rather than the
 * forwarding stack: undici hides a refused CONNECT's reply, while
 * https-proxy-agent replays it (status and Proxy-Authenticate) without
 * sending the request on, which is what the CONNECT step must show.
 */
export type StepName = 'proxy' | 'tcp' | 'connect' | 'tls' | 'http' | 'auth'

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

export interface DiagnoseOptions {
  readonly trust: TrustStore
  readonly timeoutMs: number
  /** Also make an authenticated portal call with the configured token (doctor). */
  readonly authenticated: boolean
  readonly clientCert?: { readonly cert: string, readonly key: string } | undefined
  /** PROXY_AUTH_SCHEME, answered the way the forwarding path answers it. */
  readonly proxyAuthScheme?: ProxyAuthScheme
  /**
   * For a proxied chain that ends at a private CA, also read the
   * certificate over a direct connection (no request is sent) to tell the
   * server's own CA from the proxy's (doctor; /readyz never opens a
   * connection forwarding would not).
   */
  readonly compareDirect?: boolean
  /** How this host resolves names (node:dns lookup by default); tests resolve *.test without DNS. */
  readonly lookup?: LookupFunction
}

/** Paths that answer without credentials with 3scale's own 403. */
export const PROBE_PATH: Readonly<Record<Route['name'], string>> = {
  portal: '/admin/api/services.json',
  backend: '/transactions/authrep.xml'
}

/** Check `route` through `proxy` (or directly), step by step, stopping at the first failure. */
export async function diagnoseRoute (route: Route, proxy: ProxyEndpoint | undefined, options: DiagnoseOptions): Promise<RouteReport> {
  const steps: Step[] = []
  const upstream = route.upstream
  const via = proxy !== undefined ? `via proxy ${proxy.url.protocol}//${hostPort(proxy.url)}` : 'direct'
  const done = (): RouteReport => {
    const failed = steps.find((s) => s.ok === false)?.name
    return { route: route.name, upstream: endpointLabel(upstream), via, ok: failed === undefined, failed, steps }
  }
  const skip = (...names: StepName[]): void => {
    for (const name of names) steps.push({ name, ok: undefined, detail: 'not run: an earlier step failed' })
  }
  const later: StepName[] = [
    ...(proxy !== undefined && upstream.protocol === 'https:' ? ['connect' as const] : []),
    ...(upstream.protocol === 'https:' ? ['tls' as const] : []),
    'http',
    ...(options.authenticated && route.tokenPolicy.kind === 'access_token' && route.tokenPolicy.fallbackToken !== undefined ? ['auth' as const] : [])
  ]

  // 1. DNS and TCP to the proxy, or to the upstream when direct.
  const target = proxy !== undefined ? proxy.url : upstream
  const tcp = await checkTcp(proxy !== undefined ? 'proxy' : 'tcp', target, options.timeoutMs, options.lookup ?? dnsLookup)
  steps.push(tcp)
  if (tcp.ok !== true) {
    skip(...later)
    return done()
  }

  // 2–4. CONNECT, TLS and one unauthenticated HTTP request, in one exchange.
  const exchange = await probe(route, proxy, PROBE_PATH[route.name], undefined, options)
  steps.push(...exchange.steps)
  if (exchange.steps.some((s) => s.ok === false)) {
    skip(...later.filter((name) => !exchange.steps.some((s) => s.name === name)))
    return done()
  }

  // 5. With a token configured, an authenticated portal call (doctor only).
  if (later.includes('auth') && route.tokenPolicy.kind === 'access_token' && route.tokenPolicy.fallbackToken !== undefined) {
    // The TLS verdict is the first exchange's: no second direct comparison.
    const authed = await probe(route, proxy, PROBE_PATH.portal, route.tokenPolicy.fallbackToken, { ...options, compareDirect: false })
    const http = authed.steps.find((s) => s.name === 'http')
    if (http?.ok !== true || authed.status === undefined) {
      steps.push({ name: 'auth', ok: false, detail: `the authenticated call failed: ${http?.detail ?? 'no answer'}`, fix: http?.fix ?? 'run doctor again' })
    } else if (authed.status === 200) {
      steps.push({ name: 'auth', ok: true, detail: `3scale accepted the access token (GET ${PROBE_PATH.portal} → 200)`, ms: http.ms })
    } else {
      steps.push({
        name: 'auth',
        ok: false,
        detail: `3scale refused the access token (GET ${PROBE_PATH.portal} → ${authed.status})`,
        fix: 'check the token (ACCESS_TOKEN_FILE or THREESCALE_PORTAL_ENDPOINT userinfo): it must be an Account Management API token with read access, for this portal'
      })
    }
  }
  return done()
}

async function checkTcp (name: 'proxy' | 'tcp', url: URL, timeoutMs: number, lookup: LookupFunction): Promise<Step> {
  const what = name === 'proxy' ? `the proxy ${hostPort(url)}` : hostPort(url)
  const started = performance.now()
  const host = url.hostname.replace(/^\[|\]$/g, '')
  let address: string
  try {
    address = await withTimeout(new Promise<string>((resolve, reject) => {
      lookup(host, {}, (err, found) => { if (err !== null) reject(err); else resolve(typeof found === 'string' ? found : found[0]?.address ?? '') })
    }), timeoutMs, 'DNS lookup')
  } catch (err) {
    return {
      name,
      ok: false,
      detail: `${what}: the host name does not resolve (${codeOf(err)})`,
      fix: name === 'proxy' ? 'check the host in https_proxy (or HTTPS_PROXY_FILE) and this host\'s DNS' : 'check the endpoint host name and DNS; if only the proxy can resolve it, set https_proxy and keep it out of NO_PROXY'
    }
  }
  const port = Number(url.port !== '' ? url.port : (url.protocol === 'https:' ? 443 : 80))
  try {
    await withTimeout(new Promise<void>((resolve, reject) => {
      const socket = netConnect(port, address)
      socket.once('connect', () => { socket.destroy(); resolve() })
      socket.once('error', reject)
    }), timeoutMs, 'TCP connect')
  } catch (err) {
    return {
      name,
      ok: false,
      detail: `${what} (${address}) does not accept TCP connections (${codeOf(err)})`,
      fix: name === 'proxy' ? 'check the port in https_proxy and that the proxy runs and is reachable from here (firewall, network policy)' : 'check the endpoint URL; if outbound traffic must use a proxy, set https_proxy'
    }
  }
  return { name, ok: true, detail: `${what} resolves to ${address} and accepts TCP connections`, ms: elapsed(started) }
}

interface Probe {
  readonly steps: Step[]
  readonly status: number | undefined
}

/**
 * One GET through the path: CONNECT (if proxied https), TLS (if https) and
 * the HTTP answer, reported as steps. The upstream certificate is checked
 * here rather than by the TLS stack so the report can name its issuer; a
 * token is only ever sent once that check has passed.
 */
async function probe (route: Route, proxy: ProxyEndpoint | undefined, path: string, token: string | undefined, options: DiagnoseOptions): Promise<Probe> {
  const upstream = route.upstream
  const https = upstream.protocol === 'https:'
  const authorization = proxy !== undefined ? proxyAuthorization(proxy) : undefined
  const proxyAuth = authorization !== undefined ? { 'Proxy-Authorization': authorization } : undefined
  // An http upstream goes to the proxy in absolute-form (http-proxy-agent);
  // an https one through a tunnel opened by the same TunnelClient as the
  // forwarding path, so Digest proxies are checked as they are used.
  // A direct https upstream gets an agent without a TLS session cache: a
  // resumed session presents no certificate, and this step must name it
  // (two routes to one host:port resumed the first one's session).
  const agent = proxy !== undefined && !https
    ? new HttpProxyAgent(proxy.url, { ca: [...options.trust.ca], headers: proxyAuth, keepAlive: false })
    : proxy === undefined && https ? new HttpsAgent({ keepAlive: false, maxCachedSessions: 0 }) : undefined
  const tunnel = proxy !== undefined && https
    ? new TunnelClient(buildConnector({ timeout: options.timeoutMs, ca: [...options.trust.ca] } as BuildConnectorType.BuildOptions), proxy.url, {
      username: proxy.username,
      password: proxy.password,
      scheme: options.proxyAuthScheme ?? 'auto',
      replyTimeoutMs: options.timeoutMs,
      onRefused: () => {}
    })
    : undefined

  let fullPath = joinPath(upstream.pathname, path)
  const headers: Record<string, string> = { 'user-agent': 'apicast-sidecar-proxy doctor', accept: '*/*', connection: 'close' }
  if (token !== undefined && route.tokenPolicy.kind === 'access_token') {
    if (route.tokenPolicy.location === 'header') headers.authorization = basicTokenHeader(token)
    else fullPath += `?access_token=${encodeURIComponent(token)}`
  }

  const steps: Step[] = []
  let connect: { statusCode: number, headers: Record<string, string | string[] | undefined> } | undefined
  let tlsFacts: TlsFacts | undefined
  const started = performance.now()
  try {
    const res = await withTimeout(new Promise<IncomingMessage>((resolve, reject) => {
      const req = (https ? httpsRequest : httpRequest)({
        host: upstream.hostname.replace(/^\[|\]$/g, ''),
        port: upstream.port !== '' ? Number(upstream.port) : (https ? 443 : 80),
        path: fullPath,
        method: 'GET',
        headers,
        agent,
        ...(tunnel !== undefined ? { createConnection: tunnelConnection(tunnel, upstream, options, (reply) => { connect = reply }) } : {}),
        ca: [...options.trust.ca],
        servername: serverName(upstream),
        ...(options.lookup !== undefined ? { lookup: options.lookup } : {}),
        // Verified below, where the certificate can be named; a token is
        // never sent on an unverified connection (see tokenAllowed).
        rejectUnauthorized: false,
        ...(options.clientCert ?? {})
      })
      req.once('proxyConnect', (reply: { statusCode: number, headers: Record<string, string | string[] | undefined> }) => { connect = reply })
      req.once('socket', (socket) => {
        if (!(socket instanceof TLSSocket)) return
        // Read the chain at the handshake: it is gone once the connection closes.
        socket.once('secureConnect', () => {
          tlsFacts = readTls(socket, options.trust)
          if (token !== undefined && !socket.authorized) req.destroy(new Error('refusing to send the token: the TLS certificate did not verify'))
        })
      })
      req.once('response', resolve)
      req.once('error', reject)
      req.end()
    }), options.timeoutMs, 'the request')

    res.resume()
    if (connect !== undefined && proxy !== undefined) {
      if (connect.statusCode !== 200) {
        steps.push(refusedConnect(proxy, upstream, connect.statusCode, connect.headers['proxy-authenticate'], options.proxyAuthScheme ?? 'auto'))
        return { steps, status: undefined }
      }
      steps.push({ name: 'connect', ok: true, detail: `${hostPort(proxy.url)} accepted CONNECT ${hostPort(upstream)} (200)` })
    }
    if (https) {
      const tls = await tlsStep(tlsFacts, route, proxy, options)
      steps.push(tls)
      if (tls.ok !== true) return { steps, status: undefined }
    }
    if (proxy !== undefined && !https && res.statusCode === 407) {
      steps.push(refusedConnect(proxy, upstream, 407, res.headers['proxy-authenticate'], options.proxyAuthScheme ?? 'auto'))
      return { steps, status: undefined }
    }
    steps.push(httpStep(route, res, fullPath, elapsed(started)))
    return { steps, status: res.statusCode }
  } catch (err) {
    if (err instanceof TunnelRefused && proxy !== undefined && connect !== undefined) {
      steps.push(refusedConnect(proxy, upstream, connect.statusCode, connect.headers['proxy-authenticate'], options.proxyAuthScheme ?? 'auto'))
      return { steps, status: undefined }
    }
    steps.push(failedExchange(err, route, proxy, connect !== undefined))
    return { steps, status: undefined }
  } finally {
    agent?.destroy()
    await tunnel?.close()
  }
}

/**
 * node:http's createConnection for a request through `tunnel`: CONNECT
 * (answering the proxy's challenge), then TLS to the upstream over it,
 * unverified here; probe() checks the chain so it can name the issuer.
 */
function tunnelConnection (tunnel: TunnelClient, upstream: URL, options: DiagnoseOptions, onReply: (reply: { statusCode: number, headers: Record<string, string | string[] | undefined> }) => void): NonNullable<ClientRequestArgs['createConnection']> {
  return (opts, oncreate) => {
    tunnel.connect({ path: hostPort(upstream), headers: {} } as unknown as Parameters<TunnelClient['connect']>[0]).then(({ statusCode, headers, socket }) => {
      onReply({ statusCode, headers })
      if (statusCode !== 200) {
        socket.destroy()
        oncreate(new TunnelRefused(statusCode), socket)
        return
      }
      oncreate(null, tlsConnect({ socket, servername: (opts as { servername?: string }).servername ?? serverName(upstream), ca: [...options.trust.ca], rejectUnauthorized: false, ...(options.clientCert ?? {}) }))
    }, (err: Error) => { oncreate(err, undefined as unknown as Duplex) })
    return undefined
  }
}

/** The proxy answered CONNECT with something other than 200 (the reply is in `connect`). */
class TunnelRefused extends Error {
  override name = 'TunnelRefused'
  constructor (readonly statusCode: number) { super(`CONNECT answered ${statusCode}`) }
}

function refusedConnect (proxy: ProxyEndpoint, upstream: URL, status: number, authenticate: string | string[] | undefined, scheme: ProxyAuthScheme): Step {
  const schemes = parseAuthSchemes(authenticate)
  if (status === 407) {
    return {
      name: 'connect',
      ok: false,
      detail: `${hostPort(proxy.url)} answered 407 Proxy Authentication Required; it offers ${schemes.length > 0 ? schemes.join(', ') : 'no scheme'}`,
      fix: proxyAuthHint(proxy, { statusCode: 407, schemes, forced: scheme !== 'auto' ? scheme : undefined })
    }
  }
  return {
    name: 'connect',
    ok: false,
    detail: `${hostPort(proxy.url)} refused CONNECT ${hostPort(upstream)} with ${status}`,
    fix: `ask for CONNECT to ${hostPort(upstream)} to be allowed; if this host must be reached directly, add it to NO_PROXY`
  }
}

interface TlsFacts {
  readonly authorized: boolean
  readonly reason: string
  /** undefined only if the server sent no certificate. */
  readonly chain: ChainFacts | undefined
}

function readTls (socket: TLSSocket, trust: TrustStore): TlsFacts {
  const leaf = socket.getPeerX509Certificate()
  return {
    authorized: socket.authorized,
    reason: String(socket.authorizationError ?? ''),
    chain: leaf !== undefined ? readChain(leaf, trust) : undefined
  }
}

/**
 * The TLS step, worded by the failure catalogue (failures/catalogue.ts) as requests and
 * /readyz see it, plus what a direct connection showed when one was made.
 */
async function tlsStep (facts: TlsFacts | undefined, route: Route, proxy: ProxyEndpoint | undefined, options: DiagnoseOptions): Promise<Step> {
  if (facts === undefined) return { name: 'tls', ok: false, detail: 'no TLS handshake took place', fix: 'check that the endpoint is https' }
  if (facts.chain === undefined) {
    return facts.authorized
      ? { name: 'tls', ok: true, detail: 'verified (a resumed TLS session: the certificate was checked when it began)' }
      : { name: 'tls', ok: false, detail: `the certificate of ${hostPort(route.upstream)} did not verify (${facts.reason}), and the server sent none to name`, fix: 'check the endpoint URL and that it serves TLS with a certificate' }
  }
  const chain = facts.chain
  // Only a private chain through a proxy, for a host that is not 3scale SaaS
  // (whose private chain is evidence enough), leaves a question a direct
  // connection can answer.
  const direct = options.compareDirect === true && proxy !== undefined && !chain.publicRoot && !isSaasHost(route.upstream.hostname)
    ? await compareDirect(route.upstream, chain.leaf.fingerprint, options)
    : undefined
  const verdict = judgeChain(chain, { host: route.upstream.hostname, direct })
  if (!facts.authorized) {
    const explained = explainUntrustedCertificate({ upstream: route.upstream, proxy, timeouts: { connectMs: options.timeoutMs, responseHeadersMs: options.timeoutMs, idleMs: options.timeoutMs } },
      facts.reason, chain, caBundleState(options.trust), direct)
    return { name: 'tls', ok: false, detail: explained.message, fix: explained.hint, verdict: verdict.code }
  }
  const said = describeTrustedChain(chain, verdict, {
    upstream: route.upstream,
    proxy,
    tokenInQuery: route.tokenPolicy.kind === 'access_token' && route.tokenPolicy.location === 'query'
  })
  return { name: 'tls', ok: true, detail: `verified; ${said !== undefined ? said.message : `issued by ${chain.leaf.issuer}`}`, verdict: verdict.code }
}

/**
 * Read the upstream's certificate over a direct TLS connection (bypassing
 * the proxy; no request is sent) and compare it with the one seen through
 * the proxy: the same certificate clears the proxy, a different one is
 * interception. Where the network allows no direct connection, the answer
 * is "unavailable" with the reason, and the verdict stays "a private CA".
 */
async function compareDirect (upstream: URL, fingerprint: string, options: DiagnoseOptions): Promise<DirectComparison> {
  const timeoutMs = Math.min(options.timeoutMs, 5000)
  return await new Promise<DirectComparison>((resolve) => {
    const socket = tlsConnect({
      host: upstream.hostname.replace(/^\[|\]$/g, ''),
      port: upstream.port !== '' ? Number(upstream.port) : 443,
      servername: serverName(upstream),
      rejectUnauthorized: false,
      ...(options.lookup !== undefined ? { lookup: options.lookup } : {})
    })
    const done = (result: DirectComparison): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(result)
    }
    const timer = setTimeout(() => { done({ kind: 'unavailable', reason: `no TLS handshake within ${timeoutMs} ms` }) }, timeoutMs)
    socket.once('secureConnect', () => {
      const leaf = socket.getPeerX509Certificate()
      if (leaf === undefined) done({ kind: 'unavailable', reason: 'no certificate' })
      else if (leaf.fingerprint256 === fingerprint) done({ kind: 'same' })
      else done({ kind: 'different', issuer: readChain(leaf, options.trust).leaf.issuer })
    })
    socket.once('error', (err) => { done({ kind: 'unavailable', reason: codeOf(err) }) })
  })
}

function httpStep (route: Route, res: IncomingMessage, path: string, ms: number): Step {
  const status = res.statusCode ?? 0
  const type = String(res.headers['content-type'] ?? 'no content type')
  const shown = path.replace(/access_token=[^&]*/, 'access_token=***')
  if (status >= 500) {
    return { name: 'http', ok: false, detail: `GET ${shown} answered ${status} (${type})`, fix: 'the upstream (or a proxy in front of it) is failing; check 3scale\'s status and the endpoint URL', ms }
  }
  if (status === 404) {
    return { name: 'http', ok: false, detail: `GET ${shown} answered 404 (${type}): ${route.upstream.host} has no such path`, fix: endpointNotFoundHint(route.name === 'portal' ? 'THREESCALE_PORTAL_ENDPOINT' : 'BACKEND_ENDPOINT_OVERRIDE', route.upstream), ms }
  }
  const threescale = status === 403 || status === 401
    ? `: 3scale's ${status} without credentials, so it is reachable`
    : ''
  return { name: 'http', ok: true, detail: `GET ${shown} → ${status} ${type}${threescale}`, ms }
}

function failedExchange (err: unknown, route: Route, proxy: ProxyEndpoint | undefined, tunnelled: boolean): Step {
  const code = codeOf(err)
  const tlsError = isTlsCode(code)
  if (proxy !== undefined && !tunnelled && route.upstream.protocol === 'https:') {
    return {
      name: tlsError ? 'proxy' : 'connect',
      ok: false,
      detail: `the CONNECT exchange with ${hostPort(proxy.url)} failed (${code})`,
      fix: tlsError ? 'an https:// proxy must present a certificate the trust store verifies: set CA_BUNDLE' : 'the proxy closed the connection or timed out before answering CONNECT; check its log'
    }
  }
  return {
    name: tlsError ? 'tls' : 'http',
    ok: false,
    detail: `the request to ${hostPort(route.upstream)} failed (${code})`,
    fix: tlsError ? 'check the upstream certificate and CA_BUNDLE' : 'the upstream closed the connection or did not answer in time; check the endpoint and, for mutual TLS, UPSTREAM_TLS_CERT/KEY'
  }
}

/**
 * The TLS server name (SNI) for `url`, or undefined for an IP literal: RFC
 * 6066 forbids IP addresses there, and Node prints a DEP0123 warning, a
 * non-JSON line on stdout, for each one.
 */
export function serverName (url: URL): string | undefined {
  const host = url.hostname.replace(/^\[|\]$/g, '')
  return isIP(host) === 0 ? host : undefined
}

function codeOf (err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : err instanceof Error ? err.message : String(err)
}

async function withTimeout<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      const err: NodeJS.ErrnoException = new Error(`${what} timed out after ${ms} ms`)
      err.code = 'ETIMEDOUT'
      reject(err)
    }, ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

function elapsed (started: number): number {
  return Math.round(performance.now() - started)
}
