import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Metrics } from '../observe/metrics.js'
import type { Readiness } from './readiness.js'

export interface AdminContext {
  readonly metrics: Metrics
  readonly readiness: () => Promise<Readiness>
  readonly draining: () => boolean
}

/**
 * The admin listener's handler: /healthz, /readyz and /metrics. It never
 * forwards anything and shares no route with the 9090/9091 listeners.
 */
export function createAdminHandler (ctx: AdminContext): (req: IncomingMessage, res: ServerResponse) => void {
  // Set once a readiness check has passed since start (see /readyz?once).
  let passedOnce = false
  return (req, res) => {
    const [path, query = ''] = (req.url ?? '/').split('?')
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, { error: 'only GET and HEAD' }, { allow: 'GET, HEAD' })
      return
    }
    switch (path) {
      case '/healthz':
        // Liveness: the process is serving. Never depends on the proxy, so a
        // proxy outage does not make Kubernetes restart the sidecar.
        send(res, 200, { status: 'ok' })
        return
      case '/readyz':
        if (ctx.draining()) {
          send(res, 503, { status: 'shutting_down', ready: false })
          return
        }
        // `?once`: ready for good once the whole chain has worked since start.
        // The pod's readiness probe uses it: a new pod with a wrong password
        // or CA never becomes ready (the rollout stops), but an outage of the
        // proxy, shared by every replica, does not take them all out of the
        // Service at once. Plain /readyz always checks the chain now.
        if (passedOnce && new URLSearchParams(query).has('once')) {
          send(res, 200, { status: 'ready', ready: true, once: true, detail: 'the chain has worked since start; GET /readyz for its state now' })
          return
        }
        ctx.readiness().then((r) => {
          if (r.ready) passedOnce = true
          send(res, r.ready ? 200 : 503, { status: r.ready ? 'ready' : 'not_ready', ...r })
        }, (err: unknown) => {
          send(res, 503, { status: 'not_ready', ready: false, error: String(err) })
        })
        return
      case '/metrics':
        ctx.metrics.registry.metrics().then((text) => {
          res.writeHead(200, { 'content-type': ctx.metrics.registry.contentType, 'content-length': Buffer.byteLength(text) })
          res.end(req.method === 'HEAD' ? undefined : text)
        }, (err: unknown) => {
          send(res, 500, { error: String(err) })
        })
        return
      default:
        send(res, 404, { error: 'not found; the admin listener serves /healthz, /readyz and /metrics' })
    }
  }
}

function send (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body) + '\n'
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers })
  res.end(res.req.method === 'HEAD' ? undefined : text)
}
