import type { IncomingMessage } from 'node:http'
import type { FailureCode } from '../failures/catalogue.js'
import { createLogSampler } from '../observe/log-sampler.js'
import type { RequestLine } from '../observe/logger.js'
import { redactPath } from '../observe/redact.js'

/**
 * The fields of a request's log lines, built here and nowhere else, so that
 * every line of one request carries the same `reqId`, the same redacted
 * path and the same units. The listener comes from the child logger.
 */

/** Status logged when APIcast went away before the response was complete (nginx's convention). */
export const CLIENT_CLOSED = 499

/** What a forwarded request's lines say of it. */
export interface RequestFacts {
  readonly reqId: number
  readonly req: IncomingMessage
  /** performance.now() when the request arrived. */
  readonly started: number
  /** Body bytes relayed to APIcast so far. */
  readonly bytesOut: number
  /** The next hop (`direct` or the proxy's host:port) that carried it, when the route has several; else undefined. */
  readonly proxy: string | undefined
}

/** The completion line of a forwarded request: method, redacted path, status, duration, bytes both ways, and the proxy when there is a choice. */
export function requestLine (x: RequestFacts, status: number): RequestLine {
  return {
    reqId: x.reqId,
    method: x.req.method,
    path: redactPath(x.req.url ?? ''),
    status,
    ms: elapsed(x.started),
    bytesIn: requestBodyBytes(x.req),
    bytesOut: x.bytesOut,
    proxy: x.proxy
  }
}

/** The line of a request answered before it was forwarded (refused, overloaded): nothing went upstream, so no bytes. */
export function refusalLine (reqId: number, req: IncomingMessage, started: number, status: number, error?: string): Record<string, unknown> {
  return error === undefined
    ? { reqId, method: req.method, path: redactPath(req.url ?? ''), status, ms: elapsed(started) }
    : { reqId, method: req.method, path: redactPath(req.url ?? ''), status, error, ms: elapsed(started) }
}

/** The line of a request about to be sent again: which failure, and through which hop. */
export function retryLine (x: RequestFacts, error: FailureCode, hop: string): Record<string, unknown> {
  return { reqId: x.reqId, method: x.req.method, path: redactPath(x.req.url ?? ''), error, proxy: hop }
}

/**
 * During an outage every request fails the same way: one error line each
 * made thousands of identical lines (23,515 in a soak). So the explaining
 * line (cause and fix) is logged for the first failure of each kind on a
 * listener at once, then at most once per 10 s with the count since; every
 * other failed request still gets its completion line, at info, with its
 * `error` code and `reqId`, which leads to the explaining line.
 */
export function failureSampler (): (code: FailureCode) => number | undefined {
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

function requestBodyBytes (req: IncomingMessage): number | undefined {
  const length = Number(req.headers['content-length'])
  return Number.isFinite(length) ? length : undefined
}

/** Milliseconds since `started`, to the microsecond. */
export function elapsed (started: number): number {
  return Math.round((performance.now() - started) * 1000) / 1000
}
