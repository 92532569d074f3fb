import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import type { Timeouts } from '../config/config.js'
import type { Route } from '../config/routes.js'
import type { Admission, Verdict } from '../egress/credential-gate.js'
import type { NextHop, RouteTransport } from '../egress/dispatcher.js'
import { causeChain, classifyUpstreamError, ConnectFailure, type FailureCode } from '../failures/catalogue.js'
import { onceClosed } from '../http/response-closed.js'
import { createLogSampler } from '../observe/log-sampler.js'
import { requestLineWriter, type RequestLine } from '../observe/logger.js'
import type { RouteMetrics } from '../observe/metrics.js'
import { decideNextAttempt } from './attempts.js'
import { answerFailure, answerOverloaded, answerRefused } from './local-answers.js'
import { ResponseRelay, type RelayOwner, type RelaySettings } from './relay.js'
import { CLIENT_CLOSED, failureSampler, refusalLine, requestLine, retryLine, type RequestFacts } from './request-log.js'
import type { PolicyAnswer, RequestPolicy, ResponsePolicy } from './response-policy.js'
import { buildUpstreamRequest, type OutgoingRequest, type RequestError } from './rewrite.js'

/**
 * A listener's current route and transport. Both are replaced together when
 * a secret file changes; a request keeps the pair it started with.
 */
export interface LiveRoute {
  route: Route
  transport: RouteTransport
}

/**
 * A request made ready to send, or refused: what the rewrite made of it,
 * the URL it goes to (the failure table names it) and the transport that
 * carries it, read together so a reload cannot split them.
 */
export type PreparedRequest = ReadyRequest | { readonly ok: false, readonly error: RequestError }

/** A request ready to send. `named`: where the failure table says the URL came from, when not the endpoint settings. */
export interface ReadyRequest {
  readonly ok: true
  readonly outgoing: OutgoingRequest
  readonly upstream: URL
  readonly transport: RouteTransport
  readonly named?: string
}

/** Prepare each request of a listener: a route's rewrite (routeRequests), or the forward proxy's absolute-form. */
export type PrepareRequest = (req: IncomingMessage & { url: string, method: string }) => PreparedRequest

/** A route's requests: the forwarding rewrite against the route and the transport in use. */
export function routeRequests (live: LiveRoute): PrepareRequest {
  return (req) => {
    const { route, transport } = live
    const rewritten = buildUpstreamRequest(req, route)
    return rewritten.ok ? { ok: true, outgoing: rewritten.outgoing, upstream: route.upstream, transport } : rewritten
  }
}

export interface ForwardContext extends RelaySettings {
  readonly prepare: PrepareRequest
  readonly timeouts: Timeouts
  readonly metrics: RouteMetrics
  /** What the listener does to responses beyond relaying them (the portal's stale-if-error); undefined: nothing. */
  readonly policy?: ResponsePolicy | undefined
  /** Requests forwarded at once; past it, 503 at once. */
  readonly maxConcurrent: number
}

/**
 * The request handler of one listener. It only wires the parts together,
 * in Go's ReverseProxy order: the pure rewrite (buildUpstreamRequest), the
 * transport (the route's undici dispatchers), the relay (ResponseRelay),
 * the response policy (ModifyResponse and ErrorHandler), and the failure
 * handling (classifyUpstreamError, then decideNextAttempt). Bodies stream
 * both ways with backpressure and are never held whole.
 *
 * A failure before any byte reached the upstream (the proxy unreachable or
 * refusing the tunnel) moves the request to the next proxy, if there is one.
 * A connection reset or closed under the request is sent again once on a
 * fresh connection when that cannot count twice (see attempts.ts). A usage
 * report that may have reached 3scale is never sent again.
 */
export function createForwarder (ctx: ForwardContext): (req: IncomingMessage, res: ServerResponse) => void {
  const listener = new ListenerState(ctx)
  return function forward (req, res) {
    const started = performance.now()
    const reqId = ++listener.requests
    if (ctx.draining()) res.shouldKeepAlive = false
    if (listener.inFlight >= ctx.maxConcurrent) {
      listener.refuseOverloaded(req, res, started, reqId)
      return
    }
    const exchange = new Exchange(listener, req, res, started, reqId)
    listener.inFlight++
    ctx.metrics.started()
    onceClosed(res, exchange.closed)

    const prepared = ctx.prepare(req as IncomingMessage & { url: string, method: string })
    if (!prepared.ok) {
      answerRefused(req, res, prepared.error)
      ctx.log.warn(refusalLine(reqId, req, started, prepared.error.statusCode, prepared.error.headers['x-sidecar-error']), `request refused: ${prepared.error.message}`)
      return
    }
    const { outgoing } = prepared
    const hasBody = req.headers['transfer-encoding'] !== undefined ||
      (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0')
    exchange.send(prepared, {
      origin: prepared.upstream.origin,
      method: outgoing.method,
      path: outgoing.path,
      headers: outgoing.headers,
      body: hasBody ? req : null
    }, ctx.policy?.forRequest(req.url ?? '', outgoing))
  }
}

/** What the requests of one listener share: the in-flight count, request ids, and the log samplers. */
class ListenerState {
  inFlight = 0
  requests = 0
  readonly sampleFailure = failureSampler()
  readonly #sampleOverload = createLogSampler()
  /** The completion line of each request, on the logger's fast path. */
  readonly logCompleted: (line: RequestLine, msg: string) => void

  constructor (readonly ctx: ForwardContext) {
    this.logCompleted = requestLineWriter(ctx.log)
  }

  /**
   * Past MAX_CONCURRENT_REQUESTS: answer 503 at once. Queuing without bound
   * would only hold APIcast's connections and memory while 3scale or the proxy
   * is slow. Under overload every request would log a warning, adding I/O
   * where it hurts most, so the first refusal is logged and then one line per
   * 10 s with the count.
   */
  refuseOverloaded (req: IncomingMessage, res: ServerResponse, started: number, reqId: number): void {
    const { ctx } = this
    answerOverloaded(req, res, ctx.maxConcurrent)
    ctx.metrics.overloaded()
    const unlogged = this.#sampleOverload()
    if (unlogged === undefined) return
    ctx.log.warn({ ...refusalLine(reqId, req, started, 503, 'overloaded'), refusedSinceLastLine: unlogged },
      `request refused: ${ctx.maxConcurrent} requests in flight (MAX_CONCURRENT_REQUESTS); the upstream or the proxy is slower than the load, or the limit is too low` +
      (unlogged > 0 ? `; ${unlogged} more refused since the last such line` : ''))
  }
}

/**
 * One request, across its attempts: it sends each attempt through a relay,
 * decides what follows a failed one (decideNextAttempt), and writes the
 * request's lines. It is the relay's owner and the request's log facts.
 */
class Exchange implements RelayOwner, RequestFacts {
  #options: Dispatcher.DispatchOptions | undefined
  #policy: RequestPolicy | undefined
  #hop: NextHop | undefined
  #relay: ResponseRelay | undefined
  #retried = false
  /** Hops this request has failed on; made at the first failure. */
  #tried: Set<number> | undefined
  #clientGone = false
  /** The credential gate's admission of the attempt in flight, when it carries the proxy's credentials. */
  #admission: Admission | undefined
  /** Where it goes and through what: set by send(). */
  #to: ReadyRequest | undefined

  constructor (
    private readonly listener: ListenerState,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly started: number,
    readonly reqId: number
  ) {}

  /** APIcast's response or connection closed: free the request's slot, count it, and stop the upstream request. */
  readonly closed = (): void => {
    const { ctx } = this.listener
    this.listener.inFlight--
    ctx.metrics.finished(this.req.method, this.res.headersSent ? this.res.statusCode : CLIENT_CLOSED, (performance.now() - this.started) / 1000)
    this.#clientGone = true
    this.#relay?.clientClosed()
  }

  get bytesOut (): number { return this.#relay?.bytesOut ?? 0 }

  get proxy (): string | undefined {
    return (this.#to?.transport.hops.length ?? 0) > 1 ? this.#hop?.label : undefined
  }

  /** Send the request through its transport's hop in use: what to send, and the request's policy. */
  send (to: ReadyRequest, options: Dispatcher.DispatchOptions, policy: RequestPolicy | undefined): void {
    this.#to = to
    this.#options = options
    this.#policy = policy
    this.#attempt(to.transport.select())
  }

  #attempt (hop: NextHop): void {
    this.#hop = hop
    if (hop.credentials !== undefined) {
      // The request itself carries the proxy's credentials (absolute-form):
      // the gate lets it go, makes it wait for a trial's verdict, or refuses
      // it while they are backed off (lockout protection).
      hop.credentials.admit().then((admission) => {
        this.#admission = admission
        this.#dispatch(hop)
      }, (err: unknown) => {
        this.failed(new ConnectFailure(err), false)
      })
      return
    }
    this.#dispatch(hop)
  }

  #dispatch (hop: NextHop): void {
    const relay = new ResponseRelay(this.listener.ctx, this, this.#policy)
    this.#relay = relay
    if (this.#clientGone) relay.clientClosed()
    hop.dispatcher.dispatch(this.#options as Dispatcher.DispatchOptions, relay)
  }

  /** The gate's verdict on the credentials this attempt carried, if it carried any. */
  #judge (verdict: Verdict): void {
    this.#admission?.settle(verdict)
    this.#admission = undefined
  }

  completed (): void {
    this.#judge('accepted')
    this.listener.logCompleted(requestLine(this, this.res.statusCode), 'request')
  }

  aborted (): void {
    this.#judge('unknown')
    this.listener.ctx.log.info(requestLine(this, CLIENT_CLOSED), 'request aborted: the client closed the connection')
  }

  sendTimedOut (upstreamAborted: boolean): void {
    this.#judge('accepted')
    const { ctx } = this.listener
    ctx.metrics.clientError('send_timeout')
    ctx.log.warn({ ...requestLine(this, this.res.statusCode), error: 'send_timeout' },
      `the client did not read its response for ${ctx.sendTimeoutMs} ms (CLIENT_SEND_TIMEOUT_MS): its connection was closed` +
      (upstreamAborted ? ' and the upstream request aborted, freeing the tunnel' : ''))
  }

  answered (answer: PolicyAnswer): void {
    this.#judge('accepted')
    this.listener.ctx.log.warn({ ...requestLine(this, answer.status), ...answer.fields, error: answer.error }, answer.message)
  }

  failed (err: Error, responseStarted: boolean): void {
    const { ctx } = this.listener
    const hop = this.#hop as NextHop
    const to = this.#to as ReadyRequest
    const failure = classifyUpstreamError(err, {
      upstream: to.upstream,
      proxy: hop.proxy,
      refusal: hop.lastRefusal(),
      timeouts: ctx.timeouts,
      named: to.named
    })
    if (ctx.log.isLevelEnabled('debug')) {
      ctx.log.debug({ reqId: this.reqId, failure: failure.code, cause: causeChain(err) }, `the cause of ${failure.code}, as undici and Node reported it`)
    }
    this.#judge(failure.code === 'proxy_auth_required' ? 'refused' : 'unknown')
    if (this.res.headersSent) {
      // The status line is gone; the only honest signal left is a broken
      // connection, never a second response.
      ctx.metrics.failed(failure.code)
      this.res.destroy()
      ctx.log.error({ ...requestLine(this, this.res.statusCode), error: failure.code }, `response interrupted: ${failure.message}; ${failure.hint}`)
      return
    }

    const beforeWrite = err instanceof ConnectFailure
    const tried = this.#tried ??= new Set()
    tried.add(hop.index)
    const next = decideNextAttempt({
      method: (this.#options as Dispatcher.DispatchOptions).method,
      hasBody: (this.#options as Dispatcher.DispatchOptions).body !== null,
      failure,
      beforeWrite,
      responseStarted,
      retried: this.#retried,
      proxied: hop.proxy !== undefined,
      hops: to.transport.hops.length,
      tried: tried.size
    })
    if (next.backOff) {
      const nextHop = to.transport.failover(hop, failure, tried)
      if (next.action === 'failover' && nextHop !== undefined) {
        this.#attempt(nextHop)
        return
      }
    }
    if (next.action === 'retry') {
      this.#retried = true
      ctx.metrics.retried(beforeWrite ? 'connect' : 'sent')
      ctx.log.info(retryLine(this, failure.code, hop.label),
        `retrying once on a fresh connection: ${failure.message}` + (beforeWrite ? ' (before any byte was sent)' : ' (no response had begun)'))
      this.#attempt(hop)
      return
    }

    ctx.metrics.failed(failure.code)
    const answer = this.#policy?.handleError(failure)
    if (answer !== undefined) {
      (this.#relay as ResponseRelay).respond(answer)
      this.answered(answer)
      return
    }
    answerFailure(this.req, this.res, failure, ctx.draining())
    this.#logFailure(failure.code, `${failure.message}; ${failure.hint}`, failure.status)
  }

  /** The failed request's line: the explaining one (cause and fix) when the sampler allows, else a short one pointing at it. */
  #logFailure (code: FailureCode, explained: string, status: number): void {
    const { ctx } = this.listener
    const unlogged = this.listener.sampleFailure(code)
    if (unlogged === undefined) {
      ctx.log.info({ ...requestLine(this, status), error: code }, 'request failed (the cause is on the last error line with this error code)')
      return
    }
    ctx.log.error({ ...requestLine(this, status), error: code, failedSinceLastLine: unlogged },
      explained + (unlogged > 0 ? ` (${unlogged} more requests failed this way since the last such line)` : ''))
  }
}
