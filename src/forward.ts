import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import type { Timeouts } from './config.js'
import type { Upstream } from './dispatcher.js'
import { classifyUpstreamError, type Failure } from './errors.js'
import { withoutHopByHop } from './hop-by-hop.js'
import type { Logger } from './logger.js'
import { redactPath } from './redact.js'
import { buildUpstreamRequest, type RequestError } from './rewrite.js'
import type { Route } from './routes.js'

/** Status logged when APIcast went away before the response was complete (nginx's convention). */
const CLIENT_CLOSED = 499

export interface ForwardContext {
  readonly route: Route
  readonly upstream: Upstream
  readonly timeouts: Timeouts
  readonly log: Logger
  /** True once shutdown has begun: responses then close their connection. */
  readonly draining: () => boolean
}

/**
 * The request handler of one listener. It only wires the three parts
 * together: the pure rewrite (buildUpstreamRequest), the transport (the
 * route's undici dispatcher) and the failure handling (classifyUpstreamError).
 * Bodies stream both ways with backpressure and are never held whole.
 */
export function createForwarder (ctx: ForwardContext): (req: IncomingMessage, res: ServerResponse) => void {
  const origin = ctx.route.upstream.origin
  return function forward (req, res) {
    const started = performance.now()
    if (ctx.draining()) res.shouldKeepAlive = false

    const rewritten = buildUpstreamRequest(req as IncomingMessage & { url: string, method: string }, ctx.route)
    if (!rewritten.ok) {
      refuse(ctx, req, res, rewritten.error, started)
      return
    }
    const { outgoing } = rewritten
    const hasBody = req.headers['transfer-encoding'] !== undefined ||
      (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0')

    const relay = new ResponseRelay(ctx, req, res, started)
    ctx.upstream.dispatcher.dispatch({
      origin,
      method: outgoing.method as Dispatcher.HttpMethod,
      path: outgoing.path,
      headers: outgoing.headers,
      body: hasBody ? req : null
    }, relay)
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
 * undici handler (new API) that copies the upstream response to APIcast as
 * it arrives: status, headers minus hop-by-hop, body chunk by chunk, pausing
 * undici while the client socket is full. It writes the one completion log
 * line per request.
 */
class ResponseRelay implements Dispatcher.DispatchHandler {
  #controller: Dispatcher.DispatchController | undefined
  #bytesOut = 0
  #done = false

  constructor (
    private readonly ctx: ForwardContext,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly started: number
  ) {
    // APIcast went away: abort the upstream request, so neither the tunnel
    // nor 3scale keeps working for nobody.
    res.once('close', () => {
      if (!this.#done) this.#controller?.abort(new ClientClosedError())
    })
    res.on('drain', () => this.#controller?.resume())
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    if (this.res.destroyed) controller.abort(new ClientClosedError())
  }

  onResponseStart (_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[]>, statusMessage?: string): void {
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
    this.#done = true
    this.res.end()
    this.ctx.log.info(this.#line(this.res.statusCode), 'request')
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    this.#done = true
    if (err instanceof ClientClosedError || (this.res.destroyed && !this.res.headersSent)) {
      this.ctx.log.info({ ...this.#line(CLIENT_CLOSED) }, 'request aborted: the client closed the connection')
      return
    }
    const route = this.ctx.route
    const failure = classifyUpstreamError(err, {
      upstream: route.upstream,
      egress: route.egress,
      refusal: this.ctx.upstream.lastRefusal(),
      timeouts: this.ctx.timeouts
    })
    if (this.res.headersSent) {
      // The status line is gone; the only honest signal left is a broken
      // connection, never a second response.
      this.res.destroy()
      this.ctx.log.error({ ...this.#line(this.res.statusCode), error: failure.code }, `response interrupted: ${failure.message}; ${failure.hint}`)
      return
    }
    this.#sendFailure(failure)
    this.ctx.log.error({ ...this.#line(failure.status), error: failure.code }, `${failure.message}; ${failure.hint}`)
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
    return {
      method: this.req.method,
      path: redactPath(this.req.url ?? ''),
      status,
      ms: elapsed(this.started),
      bytesIn: requestBodyBytes(this.req),
      bytesOut: this.#bytesOut
    }
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
