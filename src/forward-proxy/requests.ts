import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Timeouts } from '../config/config.js'
import type { ForwardAllow } from '../egress/forward-destination.js'
import type { ForwardTransport } from '../egress/forward-transport.js'
import { createForwarder, type PrepareRequest } from '../forwarding/forward.js'
import type { Logger } from '../observe/logger.js'
import type { RouteMetrics } from '../observe/metrics.js'
import { rewriteAbsoluteForm } from './absolute-form.js'

export interface AbsoluteFormContext {
  /** The transport in use, read once per request (a reload swaps it). */
  readonly transport: () => ForwardTransport
  readonly allow: ForwardAllow
  readonly log: Logger
  readonly timeouts: Timeouts
  /** The request metrics, labelled listener="forward" (a refusal is a 4xx there). */
  readonly metrics: RouteMetrics
  readonly draining: () => boolean
  readonly maxConcurrent: number
  readonly sendTimeoutMs: number
}

/**
 * The forward proxy's requests other than CONNECT: absolute-form http://
 * requests (APIcast's HTTP_PROXY calls, OCSP among them) to an allowed
 * destination go through the routes' own forwarder, with the routes' hops
 * sent to the proxy in absolute-form: the same relay, failover before any
 * byte left, retry rules (a POST that may have arrived is never sent
 * again), failure answers and log lines. Anything else gets its 4xx.
 */
export function createAbsoluteFormHandler (ctx: AbsoluteFormContext): (req: IncomingMessage, res: ServerResponse) => void {
  // Each request is rewritten once, by the handler below, before the PAC is asked.
  const rewrites = new WeakMap<IncomingMessage, ReturnType<typeof rewriteAbsoluteForm>>()
  const prepare: PrepareRequest = (req) => {
    const rewritten = rewrites.get(req) ?? rewriteAbsoluteForm(req, ctx.allow)
    if (!rewritten.ok) return rewritten
    const { destination, outgoing } = rewritten
    return {
      ok: true,
      outgoing,
      upstream: destination.url,
      transport: ctx.transport().requestsTo(destination),
      named: 'the URL APIcast asked for'
    }
  }
  const forward = createForwarder({
    prepare,
    timeouts: ctx.timeouts,
    metrics: ctx.metrics,
    log: ctx.log,
    draining: ctx.draining,
    maxConcurrent: ctx.maxConcurrent,
    sendTimeoutMs: ctx.sendTimeoutMs
  })
  // With PROXY_PAC_URL, the PAC is asked first (once per destination: the
  // transport keeps its answer), so that requestsTo knows the way out.
  return (req, res) => {
    const rewritten = rewriteAbsoluteForm(req as IncomingMessage & { url: string, method: string }, ctx.allow)
    rewrites.set(req, rewritten)
    if (!rewritten.ok) {
      forward(req, res)
      return
    }
    const transport = ctx.transport()
    if (transport.egressOf(rewritten.destination).kind !== 'pending') {
      forward(req, res)
      return
    }
    transport.decide(rewritten.destination).then(() => { forward(req, res) }, () => { forward(req, res) })
  }
}
