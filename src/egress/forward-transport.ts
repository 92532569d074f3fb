import type { Socket } from 'node:net'
import type { buildConnector as BuildConnector } from 'undici'
import type { Config, Timeouts } from '../config/config.js'
import { egressKey, resolveEgress, type Egress, type ProxyEndpoint, type ProxySettings } from './egress.js'
import type { Destination } from './forward-destination.js'
import { buildAbsoluteFormTransport, proxyCertificateFingerprint, proxySpn, secureContexts, transportOptionsOf, type RouteTransport, type TransportOptions, type UpstreamTls } from './dispatcher.js'
import type { ProxyAuthScheme } from './auth-negotiation.js'
import { ProxyRotation } from './proxy-rotation.js'
import type { CredentialGate } from './credential-gate.js'
import { TunnelClient } from './tunnel-client.js'
import { isLoopback } from './no-proxy.js'
import { PacUnavailable, pacEgress, type PacAnswer, type PacCredentials } from './pac-answer.js'
import { buildConnector } from './undici-parts.js'
import { classifyRefusedTunnel, classifyUpstreamError, ConnectFailure, isFailoverFailure, tunnelRefusalOf, type Failure, type FailureContext } from '../failures/catalogue.js'
import type { Logger } from '../observe/logger.js'
import type { RouteMetrics } from '../observe/metrics.js'
import { hostPort } from '../observe/redact.js'

export interface ForwardTransportOptions {
  /** The parsed proxy variables and FALLBACK_PROXIES: each destination leaves the way a route to it would. */
  readonly proxies: ProxySettings
  readonly fallbacks: readonly ProxyEndpoint[]
  readonly tls: UpstreamTls
  readonly timeouts: Pick<Timeouts, 'connectMs'>
  readonly proxyAuthScheme: ProxyAuthScheme
  readonly failoverBackoffMs: number
  readonly log: Logger
  /** The transport options of the absolute-form requests: the routes' own (pool, timeouts, TLS). */
  readonly requests: TransportOptions
  /** Lockout protection, the routes' own gate. */
  readonly credentialGate?: CredentialGate | undefined
  /** The routes' client-certificate gate (an https:// proxy that refused PROXY_TLS_CERT). */
  readonly certificateGate?: CredentialGate | undefined
  /**
   * PROXY_PAC_URL: the PAC decides each destination's way out, in place of
   * the proxy variables; asked once per destination (it caches its answers).
   */
  readonly pac?: ForwardPac | undefined
}

/** The PAC as the forward proxy asks it: an answer per destination, and the credentials of the proxies it names. */
export interface ForwardPac {
  answer (url: URL): Promise<PacAnswer>
  readonly credentials: PacCredentials
}

/**
 * The forward proxy's transport options from one configuration: the
 * routes' proxies, trust store and timeouts. The one builder, for the
 * listener, its reload and the probe of doctor and /readyz alike, so they
 * cannot drift apart.
 */
export function forwardTransportOptionsOf (config: Config, tls: UpstreamTls, log: Logger, extra: { readonly metrics?: RouteMetrics, readonly credentialGate?: CredentialGate, readonly certificateGate?: CredentialGate, readonly pac?: ForwardPac } = {}): ForwardTransportOptions {
  return {
    proxies: config.proxies,
    fallbacks: config.fallbackProxies,
    tls,
    timeouts: config.timeouts,
    proxyAuthScheme: config.proxyAuthScheme,
    failoverBackoffMs: config.failoverBackoffMs,
    log,
    requests: transportOptionsOf(config, tls, log, { metrics: extra.metrics, credentialGate: extra.credentialGate, certificateGate: extra.certificateGate }),
    credentialGate: extra.credentialGate,
    certificateGate: extra.certificateGate,
    pac: extra.pac
  }
}

/** An open byte stream to a destination: a CONNECT tunnel through a proxy, or TCP. */
export interface OpenTunnel {
  readonly socket: Socket
  /** `direct` or the proxy's host:port, for log lines. */
  readonly via: string
}

export type TunnelOpening =
  | { readonly ok: true, readonly tunnel: OpenTunnel }
  /** `via` is the last path tried; `aborted` when the client went away first (nothing to answer). */
  | { readonly ok: false, readonly failure: Failure, readonly via: string, readonly aborted: boolean }

/** The forward proxy's transport: built once at start, closed at shutdown. */
export interface ForwardTransport {
  /**
   * Open a tunnel to `destination` (already allowed): direct when NO_PROXY
   * or loopback says so, else CONNECT through the proxy in use, failing
   * over to FALLBACK_PROXIES before any byte of the client's was relayed.
   * Never throws; a failure is worded by the failure table.
   */
  open (destination: Destination, signal: AbortSignal): Promise<TunnelOpening>
  /**
   * How `destination` leaves, for the start-up line, doctor and requestsTo:
   * with PROXY_PAC_URL, the PAC's decision once decide() made it (pending
   * until then).
   */
  egressOf (destination: Destination): Egress
  /** Ask the PAC (once per destination) how `destination` leaves; without a PAC, egressOf. Never throws. */
  decide (destination: Destination): Promise<Egress>
  /**
   * The transport of an absolute-form request to `destination` (an http:
   * one): through http_proxy (then FALLBACK_PROXIES) in absolute-form, or
   * direct when NO_PROXY or loopback says so. Both were built with this
   * transport; each request's origin is its destination.
   */
  requestsTo (destination: Destination): RouteTransport
  /** Cut the tunnels still being opened and refuse new ones (shutdown). */
  close (): void
  /**
   * Stop being used (the proxy settings changed): the tunnels being opened
   * finish opening, then the proxies' clients close. Tunnels already open
   * are the relay's and run on.
   */
  retire (): void
}

/** A way out's proxies in failover order (undefined: direct, after them), and which is in use. */
interface Chain {
  readonly members: ReadonlyArray<ProxyPath | undefined>
  readonly rotation: ProxyRotation
}

/** One proxy's tunnel client: its authentication memory (Digest nonce, NTLM) is shared by every tunnel through it. */
interface ProxyPath {
  readonly proxy: ProxyEndpoint
  readonly label: string
  readonly client: TunnelClient
}

/**
 * Build the forward proxy's transport. The tunnels are opened by
 * TunnelClient, the code that opens the routes' tunnels: the same CONNECT,
 * the same 407 rounds (Basic, Digest, NTLM), the same TLS to an https://
 * proxy, verified against the same trust store, so the forward proxy
 * authenticates exactly as the routes do and cannot drift from them. The
 * tunnel is handed to the client as it is: TLS inside it stays end to end
 * between APIcast and the destination.
 */
export function buildForwardTransport (options: ForwardTransportOptions): ForwardTransport {
  const { timeouts, log } = options
  // TCP or TLS to the proxy, as ProxyAgent builds it for the routes (proxyTls),
  // PROXY_TLS_CERT included.
  const proxyConnector = buildConnector({ timeout: timeouts.connectMs, secureContext: secureContexts(options.tls).proxy })
  // Plain TCP to a destination reached directly: the client's TLS goes inside.
  const directConnector = buildConnector({ timeout: timeouts.connectMs })
  // Without a PAC, a tunnel leaves through the https proxy (https_proxy,
  // all_proxy) and then FALLBACK_PROXIES, whatever the destination; NO_PROXY
  // only decides whether it goes direct instead.
  const buildPath = (proxy: ProxyEndpoint): ProxyPath => ({
    proxy,
    label: hostPort(proxy.url),
    client: new TunnelClient(proxyConnector, proxy.url, {
      username: proxy.username,
      password: proxy.password,
      scheme: options.proxyAuthScheme,
      replyTimeoutMs: timeouts.connectMs,
      // The refusal is read from each reply itself (tunnelRefusalOf).
      onRefused: () => {},
      gate: options.credentialGate,
      kerberos: options.requests.kerberos !== undefined ? { tokens: options.requests.kerberos.tokens, spn: proxySpn(proxy.url, options.requests.kerberos.spn) } : undefined,
      clientCertificate: { fingerprint: proxyCertificateFingerprint(options.tls), gate: options.certificateGate }
    })
  })
  // One client per proxy, kept for the process, whichever destinations
  // leave through it; and one failover chain per way out (a PAC may give
  // each destination its own), built when first used.
  const paths = new Map<string, ProxyPath>()
  const pathOf = (proxy: ProxyEndpoint): ProxyPath => {
    const key = JSON.stringify([proxy.url.href, proxy.username, proxy.password])
    let path = paths.get(key)
    if (path === undefined) {
      path = buildPath(proxy)
      paths.set(key, path)
    }
    return path
  }
  const chains = new Map<string, Chain>()
  const chainOf = (egress: Egress & { kind: 'proxy' }): Chain => {
    const hops = [egress.proxy, ...egress.fallbacks]
    const key = egressKey(egress)
    let chain = chains.get(key)
    if (chain === undefined) {
      const members: Array<ProxyPath | undefined> = [...hops.map(pathOf), ...(egress.thenDirect === true ? [undefined] : [])]
      chain = { members, rotation: new ProxyRotation(members.length, options.failoverBackoffMs) }
      chains.set(key, chain)
    }
    return chain
  }

  // PROXY_PAC_URL: each destination's decision, kept for this transport (a
  // new PAC script gets a new transport); the reason when there is none.
  const decided = new Map<string, Egress>()
  const undecided = new Map<string, unknown>()
  const egressOf = (destination: Destination): Egress => {
    if (options.pac === undefined) return resolveEgress(destination.url, options.proxies, options.fallbacks)
    if (isLoopback(destination.url)) return { kind: 'direct', reason: 'loopback' }
    return decided.get(destination.url.origin) ?? { kind: 'pending', reason: 'pac' }
  }
  const decide = async (destination: Destination): Promise<Egress> => {
    const pac = options.pac
    const known = egressOf(destination)
    if (pac === undefined || known.kind !== 'pending') return known
    try {
      const egress = pacEgress(destination.url, await pac.answer(destination.url), pac.credentials)
      decided.set(destination.url.origin, egress)
      undecided.delete(destination.url.origin)
      return egress
    } catch (err) {
      undecided.set(destination.url.origin, err)
      return known
    }
  }

  // The absolute-form requests' ways out, one transport per egress, built
  // when first used and kept: the http proxy chain, or direct.
  const requestTransports = new Map<string, RouteTransport>()
  const requestsTo = (destination: Destination): RouteTransport => {
    const egress = egressOf(destination)
    const key = egressKey(egress)
    let transport = requestTransports.get(key)
    if (transport === undefined) {
      const unavailable = (): PacUnavailable => {
        const why = undecided.get(destination.url.origin)
        return why instanceof PacUnavailable ? why : new PacUnavailable('the PAC file PROXY_PAC_URL has not answered yet')
      }
      transport = buildAbsoluteFormTransport(egress.kind === 'direct' ? { kind: 'direct', reason: 'no_proxy_match' } : egress, { ...options.requests, pacUnavailable: unavailable })
      requestTransports.set(key, transport)
    }
    return transport
  }

  const context = (destination: Destination, proxy: ProxyEndpoint | undefined, refusal?: FailureContext['refusal']): FailureContext => ({
    upstream: destination.url,
    proxy,
    refusal,
    timeouts: { connectMs: timeouts.connectMs, responseHeadersMs: 0, idleMs: 0 },
    named: 'the destination APIcast asked for (its CONNECT host:port)'
  })

  const direct = async (destination: Destination, signal: AbortSignal): Promise<TunnelOpening> => {
    try {
      const socket = await connectWith(directConnector, { hostname: destination.host, host: destination.authority, protocol: 'http:', port: String(destination.port) }, signal)
      return { ok: true, tunnel: { socket, via: 'direct' } }
    } catch (err) {
      return { ok: false, failure: classifyUpstreamError(new ConnectFailure(err), context(destination, undefined)), via: 'direct', aborted: signal.aborted }
    }
  }

  const through = async (destination: Destination, path: ProxyPath, signal: AbortSignal): Promise<TunnelOpening> => {
    try {
      const reply = await path.client.connect({ path: destination.authority, signal, headers: {} } as unknown as Parameters<TunnelClient['connect']>[0])
      if (reply.statusCode === 200) return { ok: true, tunnel: { socket: reply.socket, via: path.label } }
      reply.socket.destroy()
      const refusal = tunnelRefusalOf(reply.statusCode, reply.headers, options.proxyAuthScheme)
      return { ok: false, failure: classifyRefusedTunnel(reply.statusCode, context(destination, path.proxy, refusal)), via: path.label, aborted: false }
    } catch (err) {
      return { ok: false, failure: classifyUpstreamError(new ConnectFailure(err), context(destination, path.proxy)), via: path.label, aborted: signal.aborted }
    }
  }

  const openOnce = async (destination: Destination, signal: AbortSignal): Promise<TunnelOpening> => {
    const egress = await decide(destination)
    if (egress.kind === 'pending') {
      const why = undecided.get(destination.url.origin) ?? new PacUnavailable('the PAC file PROXY_PAC_URL has not answered yet')
      return { ok: false, failure: classifyUpstreamError(new ConnectFailure(why), context(destination, undefined)), via: 'pac', aborted: false }
    }
    if (egress.kind === 'direct') return await direct(destination, signal)
    const { members, rotation } = chainOf(egress)
    const tried = new Set<number>()
    let index: number | undefined = rotation.select().index
    for (;;) {
      tried.add(index)
      const path = members[index]
      // A PAC answer ending in DIRECT: after its proxies, direct.
      if (path === undefined) return await direct(destination, signal)
      const attempt = await through(destination, path, signal)
      if (attempt.ok || attempt.aborted || members.length < 2 || !isFailoverFailure(attempt.failure)) return attempt
      // Nothing of the client's was relayed yet: another proxy may do better.
      const { next, wasUp } = rotation.fail(index, tried)
      if (wasUp) {
        const nextLabel = next !== undefined ? members[next]?.label ?? 'direct' : undefined
        log.warn({ proxy: path.label, error: attempt.failure.code, next: nextLabel },
          `proxy ${path.label} failed (${attempt.failure.message}); ` +
          (nextLabel !== undefined ? `failing over to ${nextLabel}` : 'no other proxy left to try') +
          `; ${path.label} is tried again in ${Math.round(options.failoverBackoffMs / 1000)} s`)
      }
      if (next === undefined) return attempt
      index = next
    }
  }

  let inFlight = 0
  let retired = false
  const closeTunnels = (): void => {
    for (const path of paths.values()) path.client.close().catch(() => {})
  }
  // In-flight absolute-form requests finish; new ones are not taken.
  const closeRequests = (): void => {
    for (const t of requestTransports.values()) t.close().catch(() => {})
  }
  const open = async (destination: Destination, signal: AbortSignal): Promise<TunnelOpening> => {
    inFlight++
    try {
      return await openOnce(destination, signal)
    } finally {
      if (--inFlight === 0 && retired) closeTunnels()
    }
  }

  return {
    egressOf,
    decide,
    requestsTo,
    open,
    close: () => {
      closeTunnels()
      closeRequests()
    },
    retire: () => {
      retired = true
      closeRequests()
      if (inFlight === 0) closeTunnels()
    }
  }
}

/** One connection from an undici connector; a client gone meanwhile destroys it. */
async function connectWith (connector: BuildConnector.connector, target: { hostname: string, host: string, protocol: string, port: string }, signal: AbortSignal): Promise<Socket> {
  const socket = await new Promise<Socket>((resolve, reject) => {
    connector({ ...target, localAddress: null }, (err, s) => {
      if (err !== null) reject(err)
      else resolve(s)
    })
  })
  if (signal.aborted) {
    socket.destroy()
    throw new Error('the client went away while the connection was being opened')
  }
  return socket
}
