import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import type { Timeouts } from './config.js'
import type { EgressPath, Upstream } from './dispatcher.js'
import { classifyUpstreamError, ConnectFailure, type Failure } from './errors.js'
import { withoutHopByHop } from './hop-by-hop.js'
import type { Logger } from './logger.js'
import type { RouteMetrics } from './metrics.js'
import { redactPath } from './redact.js'
import { shouldRetry } from './retry.js'
import { buildUpstreamRequest, type RequestError } from './rewrite.js'
import type { Route } from './routes.js'

/** Status logged when APIcast went away before the response was complete (nginx's convention). */
const CLIENT_CLOSED = 499

/**
 * A listener's current route and transport. Both are replaced together when
 * a secret file changes; a request keeps the pair it started with.
 */
export interface LiveRoute {
  route: Route
  upstream: Upstream
}

export interface ForwardContext {
  readonly live: LiveRoute
  readonly timeouts: Timeouts
  readonly metrics: RouteMetrics
  readonly log: Logger
  /** True once shutdown has begun: responses then close their connection. */
  readonly draining: () => boolean
}

/**
 * The request handler of one listener. It only wires the three parts
 * together: the pure rewrite (buildUpstreamRequest), the transport (the
 * route's undici dispatchers) and the failure handling (classifyUpstreamError).
 * Bodies stream both ways with backpressure and are never held whole.
 *
 * A failure before any byte reached the upstream (the proxy unreachable or
 * refusing the tunnel) moves the request to the next proxy, if there is one.
 * A connection reset or closed under the request is sent again once on a
 * fresh connection when that cannot count twice (see shouldRetry): before
 * any byte was written, or a GET/HEAD whose response had not begun. A usage
 * report that may have reached 3scale is never sent again.
 */
export function createForwarder (ctx: ForwardContext): (req: IncomingMessage, res: ServerResponse) => void {
  return function forward (req, res) {
    const started = performance.now()
    if (ctx.draining()) res.shouldKeepAlive = false
    const { route, upstream } = ctx.live
    ctx.metrics.started()
    res.once('close', () => {
      ctx.metrics.finished(req.method, res.headersSent ? res.statusCode : CLIENT_CLOSED, (performance.now() - started) / 1000)
    })

    const rewritten = buildUpstreamRequest(req as IncomingMessage & { url: string, method: string }, route)
    if (!rewritten.ok) {
      refuse(ctx, req, res, rewritten.error, started)
      return
    }
    const { outgoing } = rewritten
    const hasBody = req.headers['transfer-encoding'] !== undefined ||
      (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0')
    const options: Dispatcher.DispatchOptions = {
      origin: route.upstream.origin,
      method: outgoing.method as Dispatcher.HttpMethod,
      path: outgoing.path,
      headers: outgoing.headers,
      body: hasBody ? req : null
    }

    const tried = new Set<number>()
    let retried = false
    const attempt = (path: EgressPath): void => {
      tried.add(path.index)
      const relay = new ResponseRelay(ctx, route, req, res, started, path, upstream.paths.length > 1, (failure, beforeWrite, responseStarted) => {
        const next = beforeWrite ? upstream.failover(path, failure, tried) : undefined
        if (next !== undefined) {
          attempt(next)
          return true
        }
        if (!shouldRetry({ method: outgoing.method, hasBody, failure, beforeWrite, responseStarted, retried })) return false
        retried = true
        ctx.metrics.retried(beforeWrite ? 'connect' : 'sent')
        ctx.log.info({ method: req.method, path: redactPath(req.url ?? ''), error: failure.code, proxy: path.label },
          `retrying once on a fresh connection: ${failure.message}` + (beforeWrite ? ' (before any byte was sent)' : ' (no response had begun)'))
        attempt(path)
        return true
      })
      path.dispatcher.dispatch(options, relay)
    }
    attempt(upstream.select())
  }
}

/** Answer a request the rewrite refused; nothing was sent upstream. */
function refuse (ctx: ForwardContext, req: IncomingMessage, res: ServerResponse, error: RequestError, started: number): void {
  const body = error.message + '\n'
  res.writeHead(error.statusCode, {
    ...error.headers,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    connection: 'close'
  })
  res.end(body)
  req.resume()
  ctx.log.warn({
    method: req.method,
    path: redactPath(req.url ?? ''),
    status: error.statusCode,
    ms: elapsed(started)
  }, `request refused: ${error.message}`)
}

/**
 * undici handler (new API) for one attempt: copies the upstream response to
 * APIcast as it arrives (status, headers minus hop-by-hop, body chunk by
 * chunk, pausing undici while the client socket is full) and writes the one
 * completion log line per request. `retry` is offered every failure before
 * APIcast got a status line; it returns true when another attempt took the
 * request over.
 */
class ResponseRelay implements Dispatcher.DispatchHandler {
  #controller: Dispatcher.DispatchController | undefined
  #bytesOut = 0
  #done = false
  #responseStarted = false
  readonly #onClose = (): void => {
    // APIcast went away: abort the upstream request, so neither the tunnel
    // nor 3scale keeps working for nobody.
    if (!this.#done) this.#controller?.abort(new ClientClosedError())
  }

  readonly #onDrain = (): void => { this.#controller?.resume() }

  constructor (
    private readonly ctx: ForwardContext,
    private readonly route: Route,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly started: number,
    private readonly path: EgressPath,
    private readonly logProxy: boolean,
    private readonly retry: (failure: Failure, beforeWrite: boolean, responseStarted: boolean) => boolean
  ) {
    res.once('close', this.#onClose)
    res.on('drain', this.#onDrain)
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    if (this.res.destroyed) controller.abort(new ClientClosedError())
  }

  onResponseStart (_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[]>, statusMessage?: string): void {
    this.#responseStarted = true
    const out = withoutHopByHop(headers)
    if (this.ctx.draining()) out.connection = 'close'
    if (statusMessage !== undefined && statusMessage !== '') {
      this.res.writeHead(statusCode, statusMessage, out)
    } else {
      this.res.writeHead(statusCode, out)
    }
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#bytesOut += chunk.length
    if (!this.res.write(chunk)) controller.pause()
  }

  onResponseEnd (): void {
    this.#finish()
    this.res.end()
    this.ctx.log.info(this.#line(this.res.statusCode), 'request')
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    this.#finish()
    if (err instanceof ClientClosedError || (this.res.destroyed && !this.res.headersSent)) {
      this.ctx.log.info({ ...this.#line(CLIENT_CLOSED) }, 'request aborted: the client closed the connection')
      return
    }
    const failure = classifyUpstreamError(err, {
      upstream: this.route.upstream,
      proxy: this.path.proxy,
      refusal: this.path.lastRefusal(),
      timeouts: this.ctx.timeouts
    })
    if (this.res.headersSent) {
      // The status line is gone; the only honest signal left is a broken
      // connection, never a second response.
      this.ctx.metrics.failed(failure.code)
      this.res.destroy()
      this.ctx.log.error({ ...this.#line(this.res.statusCode), error: failure.code }, `response interrupted: ${failure.message}; ${failure.hint}`)
      return
    }
    if (this.retry(failure, err instanceof ConnectFailure, this.#responseStarted)) return
    this.ctx.metrics.failed(failure.code)
    this.#sendFailure(failure)
    this.ctx.log.error({ ...this.#line(failure.status), error: failure.code }, `${failure.message}; ${failure.hint}`)
  }

  #finish (): void {
    this.#done = true
    this.res.off('close', this.#onClose)
    this.res.off('drain', this.#onDrain)
  }

  #sendFailure (failure: Failure): void {
    const body = `${failure.message}\n${failure.hint}\n`
    this.res.writeHead(failure.status, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'x-sidecar-error': failure.code,
      ...(this.ctx.draining() ? { connection: 'close' } : {})
    })
    this.res.end(body)
    this.req.resume()
  }

  #line (status: number): Record<string, unknown> {
    const line: Record<string, unknown> = {
      method: this.req.method,
      path: redactPath(this.req.url ?? ''),
      status,
      ms: elapsed(this.started),
      bytesIn: requestBodyBytes(this.req),
      bytesOut: this.#bytesOut
    }
    if (this.logProxy) line.proxy = this.path.label
    return line
  }
}

class ClientClosedError extends Error {
  override name = 'ClientClosedError'
  readonly code = 'SIDECAR_CLIENT_CLOSED'
  constructor () { super('the client closed the connection') }
}

function requestBodyBytes (req: IncomingMessage): number | undefined {
  const length = Number(req.headers['content-length'])
  return Number.isFinite(length) ? length : undefined
}

function elapsed (started: number): number {
  return Math.round((performance.now() - started) * 1000) / 1000
}
