import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import type { Timeouts } from '../config/config.js'
import type { EgressPath, Upstream } from '../egress/dispatcher.js'
import { causeChain, classifyUpstreamError, ConnectFailure, type Failure, type FailureCode } from '../failures/catalogue.js'
import type { Logger } from '../observe/logger.js'
import type { RouteMetrics } from '../observe/metrics.js'
import { redactPath } from '../observe/redact.js'
import { buildClientResponseHeaders, isBodiless } from '../http/response-headers.js'
import { createLogSampler } from '../observe/log-sampler.js'
import { onceClosed } from '../http/response-closed.js'
import { decideNextAttempt } from './attempts.js'
import { buildUpstreamRequest, type RequestError } from './rewrite.js'
import type { Route } from '../config/routes.js'
import type { PolicyAnswer, RequestPolicy, ResponsePolicy } from './response-policy.js'

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
  /** What the listener does to responses beyond relaying them (the portal's stale-if-error); undefined: nothing. */
  readonly policy?: ResponsePolicy | undefined
  /** Requests forwarded at once; past it, 503 at once. */
  readonly maxConcurrent: number
  /** CLIENT_SEND_TIMEOUT_MS: how long a response may stay blocked on a client that does not read. */
  readonly sendTimeoutMs: number
}

/**
 * The request handler of one listener. It only wires the parts together:
 * the pure rewrite (buildUpstreamRequest), the transport (the route's undici
 * dispatchers), the response policy (ModifyResponse and ErrorHandler) and
 * the failure handling (classifyUpstreamError).
 * Bodies stream both ways with backpressure and are never held whole.
 *
 * A failure before any byte reached the upstream (the proxy unreachable or
 * refusing the tunnel) moves the request to the next proxy, if there is one.
 * A connection reset or closed under the request is sent again once on a
 * fresh connection when that cannot count twice (see decideNextAttempt): before
 * any byte was written, or a GET/HEAD whose response had not begun. A usage
 * report that may have reached 3scale is never sent again.
 */
export function createForwarder (ctx: ForwardContext): (req: IncomingMessage, res: ServerResponse) => void {
  let inFlight = 0
  let requests = 0
  const overloaded = overloadRefuser(ctx)
  const sampleFailure = failureSampler()
  return function forward (req, res) {
    const started = performance.now()
    const reqId = ++requests
    if (ctx.draining()) res.shouldKeepAlive = false
    const { route, upstream } = ctx.live
    if (inFlight >= ctx.maxConcurrent) {
      overloaded(req, res, started, reqId)
      return
    }
    inFlight++
    ctx.metrics.started()
    onceClosed(res, () => {
      inFlight--
      ctx.metrics.finished(req.method, res.headersSent ? res.statusCode : CLIENT_CLOSED, (performance.now() - started) / 1000)
    })

    const rewritten = buildUpstreamRequest(req as IncomingMessage & { url: string, method: string }, route)
    if (!rewritten.ok) {
      refuse(ctx, req, res, rewritten.error, started, reqId)
      return
    }
    const { outgoing } = rewritten
    const policy = ctx.policy?.forRequest(req.url ?? '', outgoing)
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
      const relay = new ResponseRelay(ctx, route, req, res, started, path, upstream.paths.length > 1, policy, { reqId, sampleFailure }, (failure, beforeWrite, responseStarted) => {
        const next = decideNextAttempt({
          method: outgoing.method, hasBody, failure, beforeWrite, responseStarted, retried,
          proxied: path.proxy !== undefined, paths: upstream.paths.length, tried: tried.size
        })
        if (next.backOff) {
          const to = upstream.failover(path, failure, tried)
          if (next.action === 'failover' && to !== undefined) {
            attempt(to)
            return true
          }
        }
        if (next.action !== 'retry') return false
        retried = true
        ctx.metrics.retried(beforeWrite ? 'connect' : 'sent')
        ctx.log.info({ reqId, method: req.method, path: redactPath(req.url ?? ''), error: failure.code, proxy: path.label },
          `retrying once on a fresh connection: ${failure.message}` + (beforeWrite ? ' (before any byte was sent)' : ' (no response had begun)'))
        attempt(path)
        return true
      })
      path.dispatcher.dispatch(options, relay)
    }
    attempt(upstream.select())
  }
}

/**
 * Past MAX_CONCURRENT_REQUESTS: answer 503 at once. Queuing without bound
 * would only hold APIcast's connections and memory while 3scale or the proxy
 * is slow; APIcast handles a 503 as it handles 3scale's own. Under overload
 * every request would log a warning, adding I/O where it hurts most, so the
 * first refusal is logged and then one line per 10 s with the count.
 */
function overloadRefuser (ctx: ForwardContext): (req: IncomingMessage, res: ServerResponse, started: number, reqId: number) => void {
  const message = `${ctx.maxConcurrent} requests in flight (MAX_CONCURRENT_REQUESTS); the upstream or the proxy is slower than the load, or the limit is too low`
  const sample = createLogSampler()
  return (req, res, started, reqId) => {
    answerLocally(res, 503, `the sidecar is forwarding ${ctx.maxConcurrent} requests already (MAX_CONCURRENT_REQUESTS); try again shortly`, { 'retry-after': '1', 'x-sidecar-error': 'overloaded' })
    req.resume()
    ctx.metrics.overloaded()
    const unlogged = sample()
    if (unlogged === undefined) return
    ctx.log.warn({ reqId, method: req.method, path: redactPath(req.url ?? ''), status: 503, error: 'overloaded', ms: elapsed(started), refusedSinceLastLine: unlogged },
      `request refused: ${message}` + (unlogged > 0 ? `; ${unlogged} more refused since the last such line` : ''))
  }
}

/**
 * During an outage every request fails the same way: one error line each
 * made thousands of identical lines (23,515 in a soak). So the explaining
 * line (cause and fix) is logged for the first failure of each kind on a
 * listener at once, then at most once per 10 s with the count since; every
 * other failed request still gets its completion line, at info, with its
 * `error` code and `reqId`, which leads to the explaining line.
 */
function failureSampler (): (code: FailureCode) => number | undefined {
  const samplers = new Map<FailureCode, () => number | undefined>()
  return (code) => {
    let sample = samplers.get(code)
    if (sample === undefined) {
      sample = createLogSampler()
      samplers.set(code, sample)
    }
    return sample()
  }
}

/** What one request's relays share: its id in the log, and the listener's failure-line sampler. */
interface RequestShared {
  readonly reqId: number
  readonly sampleFailure: (code: FailureCode) => number | undefined
}

/** Answer a request the rewrite refused; nothing was sent upstream. */
function refuse (ctx: ForwardContext, req: IncomingMessage, res: ServerResponse, error: RequestError, started: number, reqId: number): void {
  answerLocally(res, error.statusCode, error.message, { ...error.headers, connection: 'close' })
  req.resume()
  ctx.log.warn({
    reqId,
    method: req.method,
    path: redactPath(req.url ?? ''),
    status: error.statusCode,
    ms: elapsed(started)
  }, `request refused: ${error.message}`)
}

/** A plain-text answer of the sidecar's own (never one of 3scale's). */
function answerLocally (res: ServerResponse, status: number, text: string, headers: Record<string, string>): void {
  const body = text + '\n'
  res.writeHead(status, {
    ...headers,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body)
  })
  res.end(body)
}

/**
 * undici handler (new API) for one attempt: copies the upstream response to
 * APIcast as it arrives (status, headers minus hop-by-hop, body chunk by
 * chunk, pausing undici while the client socket is full) and writes the one
 * completion log line per request. `retry` is offered every failure before
 * APIcast got a status line; it returns true when another attempt took the
 * request over. What the response becomes beyond a copy is the request's
 * policy's.
 */
class ResponseRelay implements Dispatcher.DispatchHandler {
  #controller: Dispatcher.DispatchController | undefined
  #bytesOut = 0
  #done = false
  #responseStarted = false
  /** The policy answered instead of the upstream: the rest of this attempt is read and dropped. */
  #replaced = false
  readonly #stopWatchingClose: () => void
  readonly #onClose = (): void => {
    // APIcast went away: abort the upstream request, so neither the tunnel
    // nor 3scale keeps working for nobody.
    if (!this.#done) this.#controller?.abort(new ClientClosedError())
  }

  readonly #onDrain = (): void => {
    this.#clearSendTimer()
    this.#controller?.resume()
  }

  /**
   * Armed while the response is blocked on APIcast's socket (undici paused,
   * or the tail of the body still queued after the end): a client that
   * stops reading would otherwise hold a tunnel, and its buffers, with no
   * limit, because undici's body timeout does not run while paused. Past
   * CLIENT_SEND_TIMEOUT_MS (nginx's send_timeout) the upstream request is
   * aborted, freeing the tunnel, and APIcast's connection is closed.
   */
  #sendTimer: NodeJS.Timeout | undefined
  readonly #onSendTimeout = (): void => {
    this.#sendTimer = undefined
    if (!this.#done) {
      // onResponseError closes APIcast's connection and logs.
      this.#controller?.abort(new SendTimeoutError(this.ctx.sendTimeoutMs))
      return
    }
    this.res.destroy()
    this.#logSendTimeout(false)
  }

  constructor (
    private readonly ctx: ForwardContext,
    private readonly route: Route,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly started: number,
    private readonly path: EgressPath,
    private readonly logProxy: boolean,
    private readonly policy: RequestPolicy | undefined,
    private readonly shared: RequestShared,
    private readonly retry: (failure: Failure, beforeWrite: boolean, responseStarted: boolean) => boolean
  ) {
    this.#stopWatchingClose = onceClosed(res, this.#onClose)
    res.on('drain', this.#onDrain)
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    if (this.res.destroyed) controller.abort(new ClientClosedError())
  }

  onResponseStart (_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[]>, statusMessage?: string): void {
    this.#responseStarted = true
    if (statusCode < 200) {
      this.#relayInterim(statusCode, headers)
      return
    }
    const out = buildClientResponseHeaders(statusCode, this.req.method, headers)
    const answer = this.policy?.modifyResponse(statusCode, out)
    if (answer !== undefined) {
      this.#respond(answer)
      return
    }
    if (this.ctx.draining()) out.connection = 'close'
    if (statusMessage !== undefined && statusMessage !== '') {
      this.res.writeHead(statusCode, statusMessage, out)
    } else {
      this.res.writeHead(statusCode, out)
    }
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#replaced) return
    this.policy?.onBody(chunk)
    this.#bytesOut += chunk.length
    if (!this.res.write(chunk)) {
      controller.pause()
      this.#armSendTimer()
    }
  }

  onResponseEnd (): void {
    if (this.#replaced) return
    this.#finish()
    this.policy?.onEnd()
    this.#endWithin()
    this.ctx.log.info(this.#line(this.res.statusCode), 'request')
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    this.policy?.onAbort()
    if (this.#replaced) return
    this.#finish()
    if (this.res.headersSent && this.#bytesOut === 0 && isBodiless(this.res.statusCode, this.req.method) &&
        (err as { code?: string }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
      // A 304 with the Content-Length of the representation (legal, RFC 9110
      // §8.6), or a 204 that came with content: undici counts the missing or
      // stray body as a broken message and drops the upstream connection;
      // the response itself is complete. nginx relays it the same way.
      this.#endWithin()
      this.ctx.log.info(this.#line(this.res.statusCode), 'request')
      return
    }
    if (err instanceof SendTimeoutError) {
      this.res.destroy()
      this.#logSendTimeout(true)
      return
    }
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
    if (this.ctx.log.isLevelEnabled('debug')) {
      this.ctx.log.debug({ reqId: this.shared.reqId, failure: failure.code, cause: causeChain(err) }, `the cause of ${failure.code}, as undici and Node reported it`)
    }
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
    const answer = this.policy?.handleError(failure)
    if (answer !== undefined) {
      this.#respond(answer)
      return
    }
    this.#sendFailure(failure)
    const unlogged = this.shared.sampleFailure(failure.code)
    if (unlogged === undefined) {
      this.ctx.log.info({ ...this.#line(failure.status), error: failure.code }, 'request failed (the cause is on the last error line with this error code)')
      return
    }
    this.ctx.log.error({ ...this.#line(failure.status), error: failure.code, failedSinceLastLine: unlogged },
      `${failure.message}; ${failure.hint}` + (unlogged > 0 ? ` (${unlogged} more requests failed this way since the last such line)` : ''))
  }

  /**
   * An interim (1xx) response before the final one (RFC 9110 §15.2: an
   * intermediary must cope with those it did not ask for). 103 Early Hints
   * and 102 Processing are passed on to an HTTP/1.1 client; any other is
   * dropped, as is every 1xx to an HTTP/1.0 client, which cannot parse them.
   * Either way the final response follows on the same relay.
   */
  #relayInterim (statusCode: number, headers: Record<string, string | string[]>): void {
    const http11 = this.req.httpVersionMajor === 1 && this.req.httpVersionMinor >= 1
    if (!http11 || this.res.headersSent) return
    try {
      if (statusCode === 103 && headers.link !== undefined) {
        this.res.writeEarlyHints(buildClientResponseHeaders(statusCode, this.req.method, headers) as Record<string, string | string[]> & { link: string | string[] })
      } else if (statusCode === 102) {
        this.res.writeProcessing()
      }
    } catch (err) {
      // A Link value node:http refuses: the hint is only an optimisation.
      this.ctx.log.debug({ status: statusCode, err }, 'dropped an interim response node:http would not write')
    }
  }

  #armSendTimer (): void {
    this.#sendTimer ??= setTimeout(this.#onSendTimeout, this.ctx.sendTimeoutMs)
  }

  #clearSendTimer (): void {
    if (this.#sendTimer === undefined) return
    clearTimeout(this.#sendTimer)
    this.#sendTimer = undefined
  }

  /**
   * End the response (with `body`, if given). When the socket could not take
   * it all, the rest waits in memory for APIcast to read: bound that wait too.
   */
  #endWithin (body?: Buffer): void {
    this.#clearSendTimer()
    this.res.end(body)
    if ((this.res.socket?.writableLength ?? 0) === 0) return
    this.#armSendTimer()
    this.res.once('close', () => { this.#clearSendTimer() })
  }

  #logSendTimeout (upstreamAborted: boolean): void {
    this.ctx.metrics.clientError('send_timeout')
    this.ctx.log.warn({ ...this.#line(this.res.statusCode), error: 'send_timeout' },
      `the client did not read its response for ${this.ctx.sendTimeoutMs} ms (CLIENT_SEND_TIMEOUT_MS): its connection was closed` +
      (upstreamAborted ? ' and the upstream request aborted, freeing the tunnel' : ''))
  }

  #finish (): void {
    this.#done = true
    this.#stopWatchingClose()
    this.res.off('drain', this.#onDrain)
  }

  /**
   * Answer with the policy's answer instead of the upstream's response or
   * the failure's: the whole body, bounded like any other. One warning line
   * per request says why.
   */
  #respond (answer: PolicyAnswer): void {
    this.#replaced = true
    this.#finish()
    this.res.writeHead(answer.status, this.ctx.draining() ? { ...answer.headers, connection: 'close' } : answer.headers)
    this.#endWithin(answer.body)
    this.req.resume()
    this.ctx.log.warn({ ...this.#line(answer.status), ...answer.fields, error: answer.error }, answer.message)
  }

  #sendFailure (failure: Failure): void {
    answerLocally(this.res, failure.status, `${failure.message}\n${failure.hint}`, {
      'x-sidecar-error': failure.code,
      ...(this.ctx.draining() ? { connection: 'close' } : {})
    })
    this.req.resume()
  }

  #line (status: number): Record<string, unknown> {
    const line: Record<string, unknown> = {
      reqId: this.shared.reqId,
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

/** APIcast left the response unread past CLIENT_SEND_TIMEOUT_MS. */
class SendTimeoutError extends Error {
  override name = 'SendTimeoutError'
  readonly code = 'SIDECAR_CLIENT_SEND_TIMEOUT'
  constructor (ms: number) { super(`the client did not read its response for ${ms} ms`) }
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
