import type { Socket } from 'node:net'
import type { buildConnector as BuildConnector } from 'undici'
import type { Config, Timeouts } from '../config/config.js'
import { resolveEgress, type Egress, type ProxyEndpoint, type ProxySettings } from './egress.js'
import type { Destination } from './forward-destination.js'
import { buildAbsoluteFormTransport, proxyCertificateFingerprint, proxySpn, secureContexts, transportOptionsOf, type RouteTransport, type TransportOptions, type UpstreamTls } from './dispatcher.js'
import type { ProxyAuthScheme } from './auth-negotiation.js'
import { ProxyRotation } from './proxy-rotation.js'
import type { CredentialGate } from './credential-gate.js'
import { TunnelClient } from './tunnel-client.js'
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
}

/**
 * The forward proxy's transport options from one configuration: the
 * routes' proxies, trust store and timeouts. The one builder, for the
 * listener, its reload and the probe of doctor and /readyz alike, so they
 * cannot drift apart.
 */
export function forwardTransportOptionsOf (config: Config, tls: UpstreamTls, log: Logger, extra: { readonly metrics?: RouteMetrics, readonly credentialGate?: CredentialGate, readonly certificateGate?: CredentialGate } = {}): ForwardTransportOptions {
  return {
    proxies: config.proxies,
    fallbacks: config.fallbackProxies,
    tls,
    timeouts: config.timeouts,
    proxyAuthScheme: config.proxyAuthScheme,
    failoverBackoffMs: config.failoverBackoffMs,
    log,
    requests: transportOptionsOf(config, tls, log, extra),
    credentialGate: extra.credentialGate,
    certificateGate: extra.certificateGate
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
  /** How `destination` leaves, for the start-up line and doctor. */
  egressOf (destination: Destination): Egress
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
  // One client per proxy, built here and kept for the process: a tunnel
  // leaves through the https proxy (https_proxy, all_proxy) and then
  // FALLBACK_PROXIES, whatever the destination; NO_PROXY only decides
  // whether it goes direct instead.
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
  const chain = options.proxies.https !== undefined ? [options.proxies.https, ...options.fallbacks].map(buildPath) : []
  const rotation = new ProxyRotation(Math.max(1, chain.length), options.failoverBackoffMs)
  const egressOf = (destination: Destination): Egress => resolveEgress(destination.url, options.proxies, options.fallbacks)
  // The absolute-form requests' two ways out, built once: the http proxy
  // chain (when http_proxy is set) and direct.
  const directRequests = buildAbsoluteFormTransport({ kind: 'direct', reason: 'no_proxy_match' }, options.requests)
  const proxiedRequests = options.proxies.http !== undefined
    ? buildAbsoluteFormTransport({ kind: 'proxy', proxy: options.proxies.http, fallbacks: options.fallbacks }, options.requests)
    : undefined
  const requestsTo = (destination: Destination): RouteTransport =>
    proxiedRequests !== undefined && egressOf(destination).kind === 'proxy' ? proxiedRequests : directRequests

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
    if (egressOf(destination).kind === 'direct' || chain.length === 0) return await direct(destination, signal)
    const tried = new Set<number>()
    let index: number | undefined = rotation.select().index
    for (;;) {
      tried.add(index)
      const path = chain[index] as ProxyPath
      const attempt = await through(destination, path, signal)
      if (attempt.ok || attempt.aborted || chain.length < 2 || !isFailoverFailure(attempt.failure)) return attempt
      // Nothing of the client's was relayed yet: another proxy may do better.
      const { next, wasUp } = rotation.fail(index, tried)
      if (wasUp) {
        const nextLabel = next !== undefined ? chain[next]?.label : undefined
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
    for (const path of chain) path.client.close().catch(() => {})
  }
  // In-flight absolute-form requests finish; new ones are not taken.
  const closeRequests = (): void => {
    for (const t of [directRequests, proxiedRequests]) t?.close().catch(() => {})
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
