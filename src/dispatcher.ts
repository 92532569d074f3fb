import type { Socket } from 'node:net'
import { TLSSocket, type PeerCertificate } from 'node:tls'
import { Agent, Pool, ProxyAgent, buildConnector, type Dispatcher } from 'undici'
import type { Timeouts } from './config.js'
import { ConnectFailure, UpstreamCertificateError, parseAuthSchemes, type TunnelRefusal } from './errors.js'
import type { Route } from './routes.js'

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

export interface UpstreamOptions {
  readonly timeouts: Timeouts
  readonly maxConnections: number
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
  const { timeouts } = options
  let opened = 0
  let refusal: TunnelRefusal | undefined
  const countOpened = (): void => { opened++ }

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
  const upstreamTls = { timeout: timeouts.connectMs, rejectUnauthorized: false }

  let dispatcher: Dispatcher
  if (route.egress.kind === 'direct') {
    const connect = verifyingConnector(buildConnector(upstreamTls), countOpened)
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
      proxyTls: { timeout: timeouts.connectMs },
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
        return new Pool(origin, { ...opts, connect: verifyingConnector(connect, countOpened) })
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
 *   destroyed and the error names the certificate's issuer;
 * - every connect-phase error becomes a ConnectFailure (see errors.ts).
 */
export function verifyingConnector (inner: buildConnector.connector, onOpened: () => void): buildConnector.connector {
  return function connect (opts, callback) {
    inner(opts, (err, socket) => {
      if (err !== null) {
        callback(new ConnectFailure(err), null)
        return
      }
      if (socket instanceof TLSSocket && !socket.authorized) {
        const cert = socket.getPeerCertificate(false) as PeerCertificate | Record<string, never>
        const reason = String(socket.authorizationError ?? 'unknown')
        socket.destroy()
        callback(new ConnectFailure(new UpstreamCertificateError(reason, describeName(cert.issuer), describeName(cert.subject))), null)
        return
      }
      onOpened()
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
