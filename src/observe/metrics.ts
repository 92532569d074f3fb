import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { Socket } from 'node:net'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { FailureCode } from '../failures/catalogue.js'

/**
 * Prometheus metrics (prom-client). Label values are bounded and never hold
 * a token, a path or a query: the listener name, a method class, a status
 * code, a failure kind, and a proxy's host:port.
 */
export interface Metrics {
  readonly registry: Registry
  /** The metrics of one listener, bound once at start. */
  forRoute (route: string): RouteMetrics
  /** A client cut off or refused below HTTP, on any listener (the admin one included). */
  clientError (listener: string, kind: ClientErrorKind): void
  /** The forward proxy's tunnels (FORWARD_PROXY_PORT): its CONNECT handler's observer. */
  readonly forwardProxy: ForwardProxyMetrics
  /** A proxy refused the credentials, which are now backed off (PROXY_AUTH_BACKOFF_MS). */
  proxyAuthBackoff (proxy: string): void
  /** Stop observing undici; for shutdown and tests. */
  close (): void
}

export interface RouteMetrics {
  started (): void
  finished (method: string | undefined, status: number, seconds: number): void
  failed (code: FailureCode): void
  /** A configuration response served from the stale cache instead of a failure. */
  staleServed (): void
  /** A request refused with 503: MAX_CONCURRENT_REQUESTS in flight. */
  overloaded (): void
  /** A request sent again after a reset: `connect` when nothing had been written, `sent` for a GET/HEAD with no response yet. */
  retried (phase: 'connect' | 'sent'): void
  /** A client the listener cut off or refused below HTTP: see ClientErrorKind. */
  clientError (kind: ClientErrorKind): void
  tunnelOpened (proxy: string): void
  proxyInUse (proxy: string, all: readonly string[]): void
}

/**
 * What the forward proxy counts. No label names a destination: the client
 * chooses those (FORWARD_PROXY_ALLOW may hold a wildcard), so they stay in
 * the per-tunnel log line.
 */
export interface ForwardProxyMetrics {
  /** A tunnel answered 200 and now relays. */
  opened (): void
  /** A relaying tunnel ended: how, and the bytes it carried each way. */
  ended (stats: { readonly bytesUp: number, readonly bytesDown: number, readonly end: string }): void
  /** A CONNECT answered with a failure instead of a tunnel. */
  refused (code: FailureCode): void
}

/**
 * Why a client was cut off or refused before (or instead of) a response:
 * - `bad_request`: node:http could not parse the request (400), smuggling
 *   attempts included; `headers_too_large` (431); `request_timeout`: headers
 *   or body too slow (408);
 * - `send_timeout`: the response went unread past CLIENT_SEND_TIMEOUT_MS;
 * - `connect`: a CONNECT, refused with 405 (the listeners are not a forward proxy).
 */
export type ClientErrorKind = 'bad_request' | 'headers_too_large' | 'request_timeout' | 'send_timeout' | 'connect'

/** `read` for GET/HEAD/OPTIONS (config fetches, authorizations), `write` for the rest (reports). */
export function methodClass (method: string | undefined): 'read' | 'write' {
  return method === 'GET' || method === 'HEAD' || method === 'OPTIONS' ? 'read' : 'write'
}

/** FailureCode → the `kind` label, as operators name them. */
const FAILURE_KIND: Readonly<Record<FailureCode, string>> = {
  proxy_unreachable: 'proxy_unreachable',
  proxy_auth_required: 'proxy_auth',
  tunnel_refused: 'tunnel_refused',
  tls_untrusted: 'tls',
  dns: 'dns',
  upstream_unreachable: 'connect',
  timeout: 'timeout',
  reset: 'reset',
  upstream_error: 'other',
  destination_not_allowed: 'not_allowed',
  too_many_tunnels: 'overloaded',
  proxy_kerberos: 'proxy_auth',
  pac_unavailable: 'pac',
  // A TLS client certificate authenticates to the proxy, as a password or a ticket does.
  proxy_client_certificate: 'proxy_auth'
}

/**
 * Build the registry. `originToRoute` maps each upstream origin to its
 * listener, so a request seen on undici's diagnostics channel can be
 * counted as a reused tunnel (a socket already used) for its listener.
 */
export function createMetrics (originToRoute: ReadonlyMap<string, string>): Metrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'sidecar_' })

  // What every request counts is kept as plain numbers and handed to
  // prom-client when it collects (a scrape): its inc(), set() and dec()
  // build and hash a label set on every call, which was 1.5% of the
  // sidecar's CPU under load (profiled). Per listener: requests in flight,
  // and requests answered by status and method class not yet collected.
  const hot = new Map<string, { inFlight: number, answered: Map<number, { read: number, write: number }> }>()
  // Registered, and read by the registry through collect() alone.
  new Counter({
    name: 'sidecar_requests_total',
    help: 'Requests answered, by listener, method class and status.',
    labelNames: ['listener', 'method_class', 'status'],
    registers: [registry],
    collect () {
      for (const [listener, counts] of hot) {
        for (const [status, byClass] of counts.answered) {
          if (byClass.read > 0) this.inc({ listener, method_class: 'read', status: String(status) }, byClass.read)
          if (byClass.write > 0) this.inc({ listener, method_class: 'write', status: String(status) }, byClass.write)
          byClass.read = 0
          byClass.write = 0
        }
      }
    }
  })
  const duration = new Histogram({
    name: 'sidecar_request_duration_seconds',
    help: 'Time from receiving a request to the end of its response, by listener.',
    labelNames: ['listener'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry]
  })
  const failures = new Counter({ name: 'sidecar_upstream_failures_total', help: 'Requests the sidecar answered 502/504 for, by listener and kind.', labelNames: ['listener', 'kind'], registers: [registry] })
  const retries = new Counter({ name: 'sidecar_upstream_retries_total', help: 'Requests sent again once on a fresh connection after a reset, by listener and phase (connect: nothing had been written; sent: a GET/HEAD with no response yet).', labelNames: ['listener', 'phase'], registers: [registry] })
  const stale = new Counter({ name: 'sidecar_stale_config_served_total', help: 'Configuration responses served from the last good copy because the portal could not answer, by listener.', labelNames: ['listener'], registers: [registry] })
  const rejected = new Counter({ name: 'sidecar_requests_rejected_total', help: 'Requests answered 503 at once because MAX_CONCURRENT_REQUESTS were in flight, by listener.', labelNames: ['listener'], registers: [registry] })
  new Gauge({
    name: 'sidecar_requests_in_flight',
    help: 'Requests being forwarded now, by listener.',
    labelNames: ['listener'],
    registers: [registry],
    collect () {
      for (const [listener, counts] of hot) this.set({ listener }, counts.inFlight)
    }
  })
  const clientErrors = new Counter({ name: 'sidecar_client_errors_total', help: 'Clients cut off or refused by the listener itself, by listener and kind (bad_request, headers_too_large, request_timeout, send_timeout, connect).', labelNames: ['listener', 'kind'], registers: [registry] })
  const opened = new Counter({ name: 'sidecar_tunnels_opened_total', help: 'Upstream connections (CONNECT tunnels when proxied) opened, by listener and proxy.', labelNames: ['listener', 'proxy'], registers: [registry] })
  const reused = new Counter({ name: 'sidecar_tunnels_reused_total', help: 'Requests sent on an already open upstream connection, by listener.', labelNames: ['listener'], registers: [registry] })
  const forwardOpened = new Counter({ name: 'sidecar_forward_tunnels_opened_total', help: 'Forward proxy tunnels opened (CONNECT answered 200).', registers: [registry] })
  const forwardOpen = new Gauge({ name: 'sidecar_forward_tunnels_open', help: 'Forward proxy tunnels relaying now.', registers: [registry] })
  const forwardClosed = new Counter({ name: 'sidecar_forward_tunnels_closed_total', help: 'Forward proxy tunnels ended, by how (closed, idle_timeout, client_error, upstream_error, shutdown).', labelNames: ['end'], registers: [registry] })
  const forwardBytes = new Counter({ name: 'sidecar_forward_tunnel_bytes_total', help: 'Bytes relayed by forward proxy tunnels, counted as each tunnel ends, by direction (up: client to destination; down: back).', labelNames: ['direction'], registers: [registry] })
  const forwardRefused = new Counter({ name: 'sidecar_forward_connects_refused_total', help: 'CONNECTs the forward proxy refused itself, by kind (not_allowed: FORWARD_PROXY_ALLOW; overloaded: FORWARD_PROXY_MAX_TUNNELS).', labelNames: ['kind'], registers: [registry] })
  const forwardFailed = new Counter({ name: 'sidecar_forward_connects_failed_total', help: 'CONNECTs whose tunnel could not be opened, by kind (the failure table\'s, as sidecar_upstream_failures_total).', labelNames: ['kind'], registers: [registry] })
  const authBackoffs = new Counter({ name: 'sidecar_proxy_auth_backoffs_total', help: 'Times a proxy refused the proxy credentials, which were then not sent again for PROXY_AUTH_BACKOFF_MS (lockout protection), by proxy.', labelNames: ['proxy'], registers: [registry] })
  const proxyInUse = new Gauge({ name: 'sidecar_proxy_in_use', help: '1 for the proxy each listener uses now (host:port, or direct).', labelNames: ['listener', 'proxy'], registers: [registry] })

  const seen = new WeakSet<Socket>()
  const reusedByRoute = new Map([...new Set(originToRoute.values())].map((r) => [r, reused.labels(r)]))
  const onSendHeaders = (message: unknown): void => {
    const { request, socket } = message as { request: { origin?: string | URL }, socket: Socket }
    const route = originToRoute.get(String(request.origin))
    if (route === undefined) return
    if (seen.has(socket)) reusedByRoute.get(route)?.inc()
    else seen.add(socket)
  }
  subscribe('undici:client:sendHeaders', onSendHeaders)

  return {
    registry,
    forRoute: (route) => {
      const durationChild = duration.labels(route)
      let counts = hot.get(route)
      if (counts === undefined) {
        counts = { inFlight: 0, answered: new Map() }
        hot.set(route, counts)
      }
      const mine = counts
      return {
        started: () => { mine.inFlight++ },
        finished: (method, status, seconds) => {
          mine.inFlight--
          let byClass = mine.answered.get(status)
          if (byClass === undefined) {
            byClass = { read: 0, write: 0 }
            mine.answered.set(status, byClass)
          }
          byClass[methodClass(method)]++
          durationChild.observe(seconds)
        },
        failed: (code) => { failures.labels(route, FAILURE_KIND[code]).inc() },
        retried: (phase) => { retries.labels(route, phase).inc() },
        staleServed: () => { stale.labels(route).inc() },
        overloaded: () => { rejected.labels(route).inc() },
        clientError: (kind) => { clientErrors.labels(route, kind).inc() },
        tunnelOpened: (proxy) => { opened.labels(route, proxy).inc() },
        proxyInUse: (proxy, all) => {
          for (const p of all) proxyInUse.labels(route, p).set(p === proxy ? 1 : 0)
        }
      }
    },
    clientError: (listener, kind) => { clientErrors.labels(listener, kind).inc() },
    proxyAuthBackoff: (proxy) => { authBackoffs.labels(proxy).inc() },
    forwardProxy: {
      opened: () => {
        forwardOpened.inc()
        forwardOpen.inc()
      },
      ended: (stats) => {
        forwardOpen.dec()
        forwardClosed.labels(stats.end).inc()
        forwardBytes.labels('up').inc(stats.bytesUp)
        forwardBytes.labels('down').inc(stats.bytesDown)
      },
      refused: (code) => {
        const own = code === 'destination_not_allowed' || code === 'too_many_tunnels'
        ;(own ? forwardRefused : forwardFailed).labels(FAILURE_KIND[code]).inc()
      }
    },
    close: () => { unsubscribe('undici:client:sendHeaders', onSendHeaders) }
  }
}
