import { createHash, type X509Certificate } from 'node:crypto'
import type { Socket } from 'node:net'
import { createSecureContext, TLSSocket, type SecureContext } from 'node:tls'
import type { Dispatcher, ProxyAgent as ProxyAgentType, buildConnector as BuildConnector } from 'undici'
import type { Config, Timeouts } from '../config/config.js'
import { proxyAuthorization, type Egress, type ProxyEndpoint } from './egress.js'
import { AbsoluteFormOverTls, ConnectFailure, UpstreamCertificateError, describeTrustedChain, isFailoverFailure, tunnelRefusalOf, type Failure, type TunnelRefusal } from '../failures/catalogue.js'
import type { Logger } from '../observe/logger.js'
import type { RouteMetrics } from '../observe/metrics.js'
import { hostPort } from '../observe/redact.js'
import type { ProxyAuthScheme } from './auth-negotiation.js'
import { ProxyRotation } from './proxy-rotation.js'
import { createKerberosTokens, type KerberosTokens } from './kerberos.js'
import { addonDir } from './package-roots.js'
import { bareHostname } from '../http/url.js'
import { credentialKey, type Admission, type CredentialGate } from './credential-gate.js'
import { TunnelClient } from './tunnel-client.js'
import { PacUnavailable } from './pac-answer.js'
import type { Route } from '../config/routes.js'
import type { TlsMaterial } from '../tls/tls-material.js'
import type { TrustStore } from '../tls/trust-store.js'
import { caBundleState, readChain } from '../tls/tls-chain.js'
import { judgeChain } from '../tls/tls-verdict.js'
import { Agent, Pool, ProxyAgent, buildConnector } from './undici-parts.js'

/**
 * One way out to a route's upstream, named for the peer of the sidecar's
 * first connection: the upstream itself (direct) or one proxy.
 */
export interface NextHop {
  /** 0 is the preferred hop (https_proxy); then FALLBACK_PROXIES in order. */
  readonly index: number
  readonly dispatcher: Dispatcher
  /** The proxy of this hop; undefined when direct. */
  readonly proxy: ProxyEndpoint | undefined
  /** `direct` or the proxy's host:port, for log lines. */
  readonly label: string
  /** The proxy's most recent refused CONNECT, for the 407 log line. */
  lastRefusal (): TunnelRefusal | undefined
  /**
   * Requests through this hop carry the proxy's credentials themselves (an
   * http: upstream, sent to the proxy in absolute-form with Basic): each is
   * admitted by the credential gate, and its outcome judges them. undefined
   * for tunnels, whose CONNECT is judged in TunnelClient, and direct hops.
   */
  readonly credentials?: GatedCredentials | undefined
}

/** The credential gate, bound to one hop's proxy and credentials. */
export interface GatedCredentials {
  admit (signal?: AbortSignal): Promise<Admission>
}

/** The transport of one route, its next hops: built once at start, closed at shutdown. */
export interface RouteTransport {
  readonly hops: readonly NextHop[]
  /** The hop to use now: the first one that is not backed off. */
  select (): NextHop
  /** The hop select() would return, without side effects (for readiness). */
  active (): NextHop
  /**
   * `hop` failed before any request byte reached the upstream. Back it off
   * and return the next hop to try for this request, or undefined when
   * every hop has been tried. The caller fails over only connect-phase
   * failures (see forwarding/attempts.ts), so no request is ever sent twice.
   */
  failover (hop: NextHop, failure: Failure, tried: ReadonlySet<number>): NextHop | undefined
  /** Connections (tunnels, when proxied) opened so far. */
  connectionsOpened (): number
  close (): Promise<void>
  destroy (): Promise<void>
}

export interface UpstreamTls {
  readonly trust: TrustStore
  /** false only by the explicit UPSTREAM_TLS_VERIFY=false. */
  readonly verify: boolean
  /** PEM client certificate and key, for an upstream that requires mutual TLS. */
  readonly clientCert: { readonly cert: string, readonly key: string } | undefined
  /** PEM client certificate and key for an https:// proxy that requires one (PROXY_TLS_CERT/KEY). */
  readonly proxyClientCert: { readonly cert: string, readonly key: string } | undefined
}

export interface TransportOptions {
  readonly timeouts: Timeouts
  readonly maxConnections: number
  readonly tls: UpstreamTls
  /** How long a failed proxy is skipped before it is tried again. */
  readonly failoverBackoffMs: number
  /** PROXY_AUTH_SCHEME: which challenge to answer, or the proxy's choice. */
  readonly proxyAuthScheme: ProxyAuthScheme
  readonly log: Logger
  readonly metrics?: RouteMetrics
  /**
   * Each connection a hop opens, once verified (doctor reads the chain the
   * handshake showed; forwarding and /readyz pass nothing).
   */
  readonly onConnected?: (hop: number, socket: Socket, leaf: X509Certificate | undefined) => void
  /**
   * Lockout protection, shared by every transport of the process: the
   * credentials a proxy refused are not sent again for PROXY_AUTH_BACKOFF_MS.
   */
  readonly credentialGate?: CredentialGate
  /**
   * The same protection for the TLS client certificate to an https://
   * proxy (PROXY_TLS_CERT, or none): a proxy that refused it in the
   * handshake gets no new handshake with it for PROXY_AUTH_BACKOFF_MS.
   */
  readonly certificateGate?: CredentialGate
  /** Negotiate: GSSAPI's tokens, and PROXY_KRB5_SPN when set; undefined: Kerberos is off. */
  readonly kerberos?: { readonly tokens: KerberosTokens, readonly spn: string | undefined } | undefined
  /** Why a `pending` egress has no decision yet (the PAC file's state), read at each request. */
  readonly pacUnavailable?: () => PacUnavailable
}

/** The service principal of `proxy`: PROXY_KRB5_SPN, else HTTP@ its host as written in its URL. */
export function proxySpn (proxy: URL, spn: string | undefined): string {
  return spn ?? `HTTP@${bareHostname(proxy)}`
}

/** The upstream TLS of every route from the settings: one object, so one TLS context is shared. */
export function upstreamTlsOf (config: Config, material: Pick<TlsMaterial, 'trust' | 'upstreamClient' | 'proxyClient'>): UpstreamTls {
  return { trust: material.trust, verify: config.tls.verifyUpstream, clientCert: material.upstreamClient, proxyClientCert: material.proxyClient }
}

/**
 * The one builder of a route transport's options, for forwarding, /readyz
 * and doctor alike: a probe built any other way could pass or fail for a
 * reason forwarding does not share (the client certificate, once).
 */
export function transportOptionsOf (config: Config, tls: UpstreamTls, log: Logger, extra: Pick<TransportOptions, 'metrics' | 'onConnected' | 'credentialGate' | 'certificateGate' | 'pacUnavailable'> = {}): TransportOptions {
  return {
    timeouts: config.timeouts,
    maxConnections: config.maxConnectionsPerUpstream,
    tls,
    failoverBackoffMs: config.failoverBackoffMs,
    proxyAuthScheme: config.proxyAuthScheme,
    log,
    kerberos: config.kerberos !== undefined ? { tokens: createKerberosTokens({ principal: config.kerberos.principal, addonDir: addonDir() }), spn: config.kerberos.spn } : undefined,
    ...extra
  }
}

/**
 * Build the transport of `route`: one pooled dispatcher per hop (an undici
 * Agent when direct, a ProxyAgent per proxy), all built at start and reused.
 * ProxyAgent sends CONNECT only when it opens a socket, so a shared pool is
 * what keeps tunnels (and their TLS sessions) alive.
 *
 * TLS to the upstream is verified by `verifyingConnector` against the trust
 * store, so a failure can name the issuer.
 */
export function buildTransport (route: Route, options: TransportOptions): RouteTransport {
  const { tls, log } = options
  return buildHops(route.egress, route.upstream.protocol === 'https:', options, (leaf, socket) => { reportChain(route, socket, leaf, tls.trust, log) })
}

/**
 * The transport of the forward proxy's absolute-form requests
 * (`GET http://host/path`), for destinations that leave by `egress`: the
 * routes' hops, sent to the proxy in absolute-form (never tunnelled), or
 * direct. Built once at start, as a route's is; the destination is each
 * request's origin.
 */
export function buildAbsoluteFormTransport (egress: Egress, options: TransportOptions): RouteTransport {
  return buildHops(egress, false, options, () => {})
}

/**
 * The hops of `egress`: `tunnel` for an https: upstream (CONNECT), else
 * absolute-form to the proxy. `onFirstTls` sees the first TLS connection.
 */
function buildHops (egress: Egress, tunnel: boolean, options: TransportOptions, onFirstTls: (leaf: X509Certificate | undefined, socket: TLSSocket) => void): RouteTransport {
  const { log } = options
  let opened = 0
  // A PAC answer ending in DIRECT puts a direct hop after the proxies.
  const proxies = egress.kind === 'proxy' ? [egress.proxy, ...egress.fallbacks, ...(egress.thenDirect === true ? [undefined] : [])] : [undefined]
  const labels = proxies.map((proxy) => proxy !== undefined ? hostPort(proxy.url) : egress.kind === 'pending' ? 'pac' : 'direct')
  let inspected = false
  const onOpened = (index: number, socket: Socket): void => {
    opened++
    options.metrics?.tunnelOpened(labels[index] as string)
    if (socket instanceof TLSSocket && (!inspected || options.onConnected !== undefined)) {
      // Read once, for every reader: Node 20 hands a socket's peer
      // certificate out only once (the second call returns undefined).
      const leaf = socket.getPeerX509Certificate()
      if (!inspected) {
        inspected = true
        onFirstTls(leaf, socket)
      }
      options.onConnected?.(index, socket, leaf)
    } else {
      options.onConnected?.(index, socket, undefined)
    }
  }
  const hops = egress.kind === 'pending'
    ? [pendingHop(options)]
    : proxies.map((proxy, index) => buildHop(tunnel, proxy, index, options, (socket) => { onOpened(index, socket) }))
  const rotation = new ProxyRotation(hops.length, options.failoverBackoffMs)
  if (egress.kind !== 'pending') options.metrics?.proxyInUse(labels[0] as string, labels)

  const select = (): NextHop => {
    const { index, previous } = rotation.select()
    if (index !== previous) {
      if (index < previous) log.info({ proxy: hops[index]?.label }, `back-off over: using the proxy ${hops[index]?.label ?? ''} again`)
      options.metrics?.proxyInUse(labels[index] as string, labels)
    }
    return hops[index] as NextHop
  }

  const failover = (hop: NextHop, failure: Failure, tried: ReadonlySet<number>): NextHop | undefined => {
    if (hops.length < 2 || hop.proxy === undefined || !isFailoverFailure(failure)) return undefined
    const { next: nextIndex, wasUp } = rotation.fail(hop.index, tried)
    const next = nextIndex !== undefined ? hops[nextIndex] : undefined
    if (wasUp) {
      log.warn({ proxy: hop.label, error: failure.code, next: next?.label },
        `proxy ${hop.label} failed (${failure.message}); ` +
        (next !== undefined ? `failing over to ${next.label}` : 'no other proxy left to try') +
        `; ${hop.label} is tried again in ${Math.round(options.failoverBackoffMs / 1000)} s`)
    }
    return next
  }

  return {
    hops,
    select,
    active: () => hops[rotation.active()] as NextHop,
    failover,
    connectionsOpened: () => opened,
    close: async () => { await Promise.all(hops.map(async (h) => { await h.dispatcher.close() })) },
    destroy: async () => { await Promise.all(hops.map(async (h) => { await h.dispatcher.destroy() })) }
  }
}

/**
 * The one hop of a route whose PAC file has not answered yet: its
 * connections fail at once with why (pac_unavailable, 502), so a request
 * goes nowhere, and readiness and doctor say the same through the same
 * probe. Replaced by the PAC's decision once it loads.
 */
function pendingHop (options: TransportOptions): NextHop {
  const why = options.pacUnavailable ?? (() => new PacUnavailable('the PAC file PROXY_PAC_URL is being loaded'))
  const connect: BuildConnector.connector = (_opts, callback) => { callback(new ConnectFailure(why()), null) }
  return { index: 0, proxy: undefined, label: 'pac', dispatcher: new Agent({ connections: 1, connect }), lastRefusal: () => undefined }
}

/**
 * An http:// request through an https:// proxy: undici's ProxyAgent sends
 * absolute-form requests only to an http:// proxy, and otherwise tunnels
 * them with a CONNECT whose credentials wait on the request's own admission
 * to the credential gate, so the request hung for good. The hop now fails
 * each request at once, before any byte leaves, saying so: the next hop
 * (FALLBACK_PROXIES, the PAC's next entry) is tried, or the request gets
 * 502 proxy_unreachable with the fix.
 */
function unsupportedHop (proxy: ProxyEndpoint, index: number): NextHop {
  const connect: BuildConnector.connector = (_opts, callback) => { callback(new ConnectFailure(new AbsoluteFormOverTls()), null) }
  return { index, proxy, label: hostPort(proxy.url), dispatcher: new Agent({ connections: 1, connect }), lastRefusal: () => undefined }
}

/** The pooled dispatcher for one hop: direct (Agent) or through `proxy` (ProxyAgent). */
function buildHop (tunnel: boolean, proxy: ProxyEndpoint | undefined, index: number, options: TransportOptions, onOpened: (socket: Socket) => void): NextHop {
  const { timeouts, tls } = options
  let refusal: TunnelRefusal | undefined
  const contexts = secureContexts(tls)

  // Shared by Agent and ProxyAgent: pool sizing, keep-alive and timeouts.
  const poolOptions = {
    connections: options.maxConnections,
    pipelining: 1,
    keepAliveTimeout: timeouts.keepAliveMs,
    keepAliveMaxTimeout: timeouts.keepAliveMs,
    headersTimeout: timeouts.responseHeadersMs,
    bodyTimeout: timeouts.idleMs
  }
  // rejectUnauthorized is checked by verifyingConnector after the handshake,
  // where the peer certificate can still be read; no byte is sent before.
  const upstreamTls = { timeout: timeouts.connectMs, rejectUnauthorized: false, secureContext: contexts.upstream }

  if (proxy === undefined) {
    const connect = verifyingConnector(buildConnector(upstreamTls), tls, onOpened)
    return { index, proxy, label: 'direct', dispatcher: new Agent({ ...poolOptions, connect }), lastRefusal: () => undefined }
  }

  if (!tunnel && proxy.url.protocol === 'https:') return unsupportedHop(proxy, index)

  // Only an http upstream is sent to the proxy in absolute-form, with
  // ProxyAgent's own (Basic) header; tunnels authenticate in TunnelClient.
  const token = tunnel ? undefined : proxyAuthorization(proxy)
  const dispatcher = new ProxyAgent({
    ...poolOptions,
    uri: proxy.url.href,
    ...(token !== undefined ? { token } : {}),
    // An https upstream is tunnelled with CONNECT; an http one is sent in
    // absolute-form, the way proxies expect plain HTTP (RFC 9112 §3.2.2).
    proxyTunnel: tunnel,
    // TLS to an https:// proxy, verified (always) against the same store.
    // PROXY_TLS_CERT/KEY, when set, are in that context (secureContexts).
    proxyTls: { timeout: timeouts.connectMs, secureContext: contexts.proxy },
    requestTls: upstreamTls,
    // The client to the proxy: it sends CONNECT, answers the proxy's
    // authentication challenge (Basic, Digest), bounds the wait for each
    // reply, and records a refused CONNECT's status and Proxy-Authenticate,
    // which ProxyAgent otherwise drops.
    clientFactory: (_origin: URL, opts: object) => new TunnelClient((opts as { connect: BuildConnector.connector }).connect, proxy.url, {
      username: proxy.username,
      password: proxy.password,
      scheme: options.proxyAuthScheme,
      replyTimeoutMs: timeouts.connectMs,
      onRefused: (statusCode, headers) => { refusal = tunnelRefusalOf(statusCode, headers, options.proxyAuthScheme) },
      gate: options.credentialGate,
      kerberos: options.kerberos !== undefined ? { tokens: options.kerberos.tokens, spn: proxySpn(proxy.url, options.kerberos.spn) } : undefined,
      clientCertificate: { fingerprint: proxyCertificateFingerprint(tls), gate: options.certificateGate }
    }),
    // The pool per upstream origin: its connect is ProxyAgent's tunnel
    // function, wrapped so the upstream's certificate is verified.
    // In absolute-form, undici's proxy client builds its pool to the proxy
    // with this factory too, passing only `connect`: the pool's sizing and
    // timeouts are given here, or undici's defaults (300 s) would apply.
    factory: (origin: string | URL, opts: object) => {
      const { connect } = opts as { connect: BuildConnector.connector }
      return new Pool(origin, { ...poolOptions, ...opts, connect: verifyingConnector(connect, tls, onOpened) })
    }
  } as unknown as ProxyAgentType.Options)
  const gate = options.credentialGate
  const credentials = !tunnel && token !== undefined && gate !== undefined
    ? { admit: async (signal?: AbortSignal) => await gate.admit(credentialKey(hostPort(proxy.url), proxy.username, proxy.password), hostPort(proxy.url), signal) }
    : undefined
  return { index, proxy, label: hostPort(proxy.url), dispatcher, lastRefusal: () => refusal, credentials }
}

const contextCache = new WeakMap<UpstreamTls, { upstream: SecureContext, proxy: SecureContext, trustOnly: SecureContext }>()

/**
 * The TLS contexts (trust store, client certificates), built once and
 * shared by every connection. Passing `ca` to each tls.connect instead would
 * make Node parse every CA of the store again for each new connection.
 * UPSTREAM_TLS_CERT goes to 3scale only, PROXY_TLS_CERT to an https://
 * proxy only: neither is shown to the other peer. A new PROXY_TLS_CERT
 * (sidecar.ts reads it again when its file changes) comes in a new
 * UpstreamTls, so in new contexts: connections already open keep theirs.
 */
export function secureContexts (tls: UpstreamTls): { upstream: SecureContext, proxy: SecureContext, trustOnly: SecureContext } {
  let contexts = contextCache.get(tls)
  if (contexts === undefined) {
    const ca = [...tls.trust.ca]
    const proxy = createSecureContext({ ca, ...(tls.proxyClientCert !== undefined ? { cert: tls.proxyClientCert.cert, key: tls.proxyClientCert.key } : {}) })
    contexts = {
      upstream: createSecureContext({ ca, ...(tls.clientCert !== undefined ? { cert: tls.clientCert.cert, key: tls.clientCert.key } : {}) }),
      proxy,
      // The trust store alone, for the PAC server: neither client certificate is its business.
      trustOnly: tls.proxyClientCert === undefined ? proxy : createSecureContext({ ca })
    }
    contextCache.set(tls, contexts)
  }
  return contexts
}

/**
 * The SHA-256 of PROXY_TLS_CERT, for the client-certificate gate's key (a
 * new certificate is a new chance); undefined when none is presented.
 */
export function proxyCertificateFingerprint (tls: Pick<UpstreamTls, 'proxyClientCert'>): string | undefined {
  return tls.proxyClientCert !== undefined ? createHash('sha256').update(tls.proxyClientCert.cert).digest('hex') : undefined
}

/**
 * Wrap a connector so that:
 * - a TLS socket is handed to undici only if `authorized` (chain and host
 *   name both verified, as rejectUnauthorized would); otherwise it is
 *   destroyed and the error carries what the server sent (its chain, read
 *   against the trust store) so the failure can name the real issuer.
 *   `verify` false (UPSTREAM_TLS_VERIFY=false, logged loudly at start)
 *   skips only this;
 * - every connect-phase error becomes a ConnectFailure (see failures/catalogue.ts).
 */
export function verifyingConnector (inner: BuildConnector.connector, tls: Pick<UpstreamTls, 'trust' | 'verify'>, onOpened: (socket: Socket) => void): BuildConnector.connector {
  return function connect (opts, callback) {
    inner(opts, (err, socket) => {
      if (err !== null) {
        callback(new ConnectFailure(err), null)
        return
      }
      if (tls.verify && socket instanceof TLSSocket && !socket.authorized) {
        const leaf = socket.getPeerX509Certificate()
        const reason = String(socket.authorizationError ?? 'unknown')
        socket.destroy()
        const chain = leaf !== undefined ? readChain(leaf, tls.trust) : undefined
        callback(new ConnectFailure(new UpstreamCertificateError(reason, chain, caBundleState(tls.trust))), null)
        return
      }
      onOpened(socket)
      callback(null, socket)
    })
  }
}

/**
 * Say once per route, at first contact, who vouches for the upstream's
 * verified chain (failures/catalogue.ts words it): nothing for a public root, `info` for
 * a private CA the operator put in the trust store, `warn` only on evidence
 * of interception. No extra connection is opened to find out: a direct
 * probe, as doctor makes, would bypass the proxy the network requires and
 * can set off the firewall's alarms on every start.
 */
function reportChain (route: Route, socket: TLSSocket, leaf: X509Certificate | undefined, trust: TrustStore, log: Logger): void {
  if (!socket.authorized || leaf === undefined) return
  const chain = readChain(leaf, trust)
  const verdict = judgeChain(chain, { host: route.upstream.hostname })
  const proxy = route.egress.kind === 'proxy' ? route.egress.proxy : undefined
  const said = describeTrustedChain(chain, verdict, {
    upstream: route.upstream,
    proxy,
    tokenInQuery: route.tokenPolicy.kind === 'access_token' && route.tokenPolicy.location === 'query'
  })
  if (said === undefined) return
  const fields = {
    tlsVerdict: verdict.code,
    ...(verdict.code === 'interception' ? { interception: true } : {}),
    issuer: chain.anchor?.subject ?? chain.top.issuer,
    trustSource: chain.anchor?.source,
    ...(proxy !== undefined ? { proxy: hostPort(proxy.url) } : {})
  }
  if (said.level === 'warn') log.warn(fields, said.message)
  else log.info(fields, said.message)
}
