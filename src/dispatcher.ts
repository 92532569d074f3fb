import type { X509Certificate } from 'node:crypto'
import type { Socket } from 'node:net'
import { TLSSocket, type PeerCertificate } from 'node:tls'
import { Agent, Pool, ProxyAgent, buildConnector, type Dispatcher } from 'undici'
import type { Timeouts } from './config.js'
import { ConnectFailure, UpstreamCertificateError, parseAuthSchemes, type TunnelRefusal } from './errors.js'
import type { Logger } from './logger.js'
import { hostPort } from './redact.js'
import type { Route } from './routes.js'
import type { TrustStore } from './trust-store.js'

/** The transport of one route: built once at start, closed at shutdown. */
export interface Upstream {
  readonly dispatcher: Dispatcher
  /** The proxy's most recent refused CONNECT, for the 407 log line. */
  lastRefusal (): TunnelRefusal | undefined
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
}

export interface UpstreamOptions {
  readonly timeouts: Timeouts
  readonly maxConnections: number
  readonly tls: UpstreamTls
  readonly log: Logger
}

/**
 * Build the pooled dispatcher for `route`: an undici Agent when the route is
 * direct, a ProxyAgent when it goes through a proxy. Build one per route at
 * start and reuse it: ProxyAgent sends CONNECT only when it opens a socket,
 * so a shared pool is what keeps tunnels (and their TLS sessions) alive.
 *
 * TLS to the upstream is verified by `verifyingConnector`, against Node's
 * trust store plus NODE_EXTRA_CA_CERTS, so a failure can name the issuer.
 */
export function buildUpstream (route: Route, options: UpstreamOptions): Upstream {
  const { timeouts, tls } = options
  let opened = 0
  let refusal: TunnelRefusal | undefined
  let inspected = false
  const onOpened = (socket: Socket): void => {
    opened++
    // First contact: look once at who signed the upstream's chain.
    if (!inspected && socket instanceof TLSSocket) {
      inspected = true
      warnOnInterception(route, socket, tls.trust, options.log)
    }
  }

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
  const upstreamTls = {
    timeout: timeouts.connectMs,
    rejectUnauthorized: false,
    ca: [...tls.trust.ca],
    ...(tls.clientCert !== undefined ? { cert: tls.clientCert.cert, key: tls.clientCert.key } : {})
  }

  let dispatcher: Dispatcher
  if (route.egress.kind === 'direct') {
    const connect = verifyingConnector(buildConnector(upstreamTls), tls.verify, onOpened)
    dispatcher = new Agent({ ...poolOptions, connect })
  } else {
    const { proxy } = route.egress
    const token = proxy.username !== '' || proxy.password !== ''
      ? 'Basic ' + Buffer.from(`${proxy.username}:${proxy.password}`, 'utf8').toString('base64')
      : undefined
    dispatcher = new ProxyAgent({
      ...poolOptions,
      uri: proxy.url.href,
      ...(token !== undefined ? { token } : {}),
      // An https upstream is tunnelled with CONNECT; an http one is sent in
      // absolute-form, the way proxies expect plain HTTP (RFC 9112 §3.2.2).
      proxyTunnel: route.upstream.protocol === 'https:',
      // TLS to an https:// proxy, verified (always) against the same store.
      proxyTls: { timeout: timeouts.connectMs, ca: [...tls.trust.ca] },
      requestTls: upstreamTls,
      // The client to the proxy: it records a refused CONNECT's status and
      // Proxy-Authenticate, which ProxyAgent otherwise drops, and bounds the
      // wait for the CONNECT reply.
      clientFactory: (origin: URL, opts: object) => {
        const pool = new Pool(origin, { ...opts, headersTimeout: timeouts.connectMs, bodyTimeout: timeouts.connectMs })
        const connect = pool.connect.bind(pool) as (o: Dispatcher.ConnectOptions) => Promise<Dispatcher.ConnectData>
        Object.assign(pool, {
          connect: async (params: Dispatcher.ConnectOptions) => {
            const data = await connect(params)
            if (data.statusCode !== 200) {
              refusal = { statusCode: data.statusCode, schemes: parseAuthSchemes(data.headers['proxy-authenticate']) }
            }
            return data
          }
        })
        return pool
      },
      // The pool per upstream origin: its connect is ProxyAgent's tunnel
      // function, wrapped so the upstream's certificate is verified.
      factory: (origin: string | URL, opts: object) => {
        const { connect } = opts as { connect: buildConnector.connector }
        return new Pool(origin, { ...opts, connect: verifyingConnector(connect, tls.verify, onOpened) })
      }
    } as ProxyAgent.Options)
  }

  return {
    dispatcher,
    lastRefusal: () => refusal,
    connectionsOpened: () => opened,
    close: async () => { await dispatcher.close() },
    destroy: async () => { await dispatcher.destroy() }
  }
}

/**
 * Wrap a connector so that:
 * - a TLS socket is handed to undici only if `authorized` (chain and host
 *   name both verified, as rejectUnauthorized would); otherwise it is
 *   destroyed and the error names the certificate's issuer. `verify` false
 *   (UPSTREAM_TLS_VERIFY=false, logged loudly at start) skips only this;
 * - every connect-phase error becomes a ConnectFailure (see errors.ts).
 */
export function verifyingConnector (inner: buildConnector.connector, verify: boolean, onOpened: (socket: Socket) => void): buildConnector.connector {
  return function connect (opts, callback) {
    inner(opts, (err, socket) => {
      if (err !== null) {
        callback(new ConnectFailure(err), null)
        return
      }
      if (verify && socket instanceof TLSSocket && !socket.authorized) {
        const cert = socket.getPeerCertificate(false) as PeerCertificate | Record<string, never>
        const reason = String(socket.authorizationError ?? 'unknown')
        socket.destroy()
        callback(new ConnectFailure(new UpstreamCertificateError(reason, describeName(cert.issuer), describeName(cert.subject))), null)
        return
      }
      onOpened(socket as Socket)
      callback(null, socket as Socket)
    })
  }
}

/** `CN=…, O=…` from a certificate name, for log lines. */
function describeName (name: PeerCertificate['issuer'] | undefined): string {
  if (name === undefined) return '(unknown)'
  const parts: string[] = []
  for (const key of ['CN', 'O', 'OU'] as const) {
    const value = name[key]
    if (value !== undefined) parts.push(`${key}=${Array.isArray(value) ? value.join('+') : value}`)
  }
  return parts.length > 0 ? parts.join(', ') : '(no name)'
}

/**
 * The top of the verified chain: Node completes the peer's chain from the
 * trust store, so this is normally the root that vouched for the upstream.
 */
export function chainTop (socket: TLSSocket): X509Certificate | undefined {
  let cert = socket.getPeerX509Certificate()
  for (let depth = 0; cert !== undefined && depth < 10; depth++) {
    const issuer = cert.issuerCertificate
    if (issuer === undefined || issuer.fingerprint256 === cert.fingerprint256) break
    cert = issuer
  }
  return cert
}

/** True when a chain ends in one of Node's bundled public roots. */
export function isPublicChain (top: X509Certificate, trust: TrustStore): boolean {
  return trust.publicRoots.fingerprints.has(top.fingerprint256) || trust.publicRoots.subjects.has(top.issuer)
}

/**
 * A proxied upstream whose certificate chains to a private CA is almost
 * certainly being re-signed by the proxy (TLS interception): the proxy then
 * sees every URL, the access_token query parameter included. Said once per
 * route, at first contact.
 */
function warnOnInterception (route: Route, socket: TLSSocket, trust: TrustStore, log: Logger): void {
  if (route.egress.kind !== 'proxy' || !socket.authorized) return
  const top = chainTop(socket)
  if (top === undefined || isPublicChain(top, trust)) return
  const ca = top.subject.split('\n').find((p) => p.startsWith('CN=')) ?? top.subject.replace(/\n/g, ', ')
  const exposed = route.tokenPolicy.kind === 'access_token' && route.tokenPolicy.location === 'query'
    ? ' It can read the access_token query parameter: set ACCESS_TOKEN_LOCATION=header to move the token into a header.'
    : ' It can read everything sent to 3scale, credentials in the query included.'
  log.warn({ interception: true, issuer: ca, proxy: hostPort(route.egress.proxy.url) },
    `TLS interception detected: ${hostPort(route.upstream)} presents a certificate chained to the private CA ${ca}, not a public root, through the proxy ${hostPort(route.egress.proxy.url)}.${exposed}`)
}
