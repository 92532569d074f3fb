import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Failure } from '../failures/catalogue.js'
import type { RequestError } from './rewrite.js'

/**
 * The sidecar's own answers, never one of 3scale's: plain text, a status of
 * its own, and (for a failure) `X-Sidecar-Error` naming it, so APIcast's
 * logs and anyone alerting on them can tell the two apart. Each answer
 * discards the request's body, so the connection can carry the next one.
 */

/** A request the rewrite refused (an open-proxy target, a bad token...): nothing was sent upstream, and the connection is closed. */
export function answerRefused (req: IncomingMessage, res: ServerResponse, error: RequestError): void {
  answerLocally(res, error.statusCode, error.message, { ...error.headers, connection: 'close' })
  req.resume()
}

/**
 * Past MAX_CONCURRENT_REQUESTS: 503 at once, with Retry-After. APIcast
 * handles it as it handles 3scale's own 503.
 */
export function answerOverloaded (req: IncomingMessage, res: ServerResponse, maxConcurrent: number): void {
  answerLocally(res, 503, `the sidecar is forwarding ${maxConcurrent} requests already (MAX_CONCURRENT_REQUESTS); try again shortly`, { 'retry-after': '1', 'x-sidecar-error': 'overloaded' })
  req.resume()
}

/** A request that failed before any status line reached APIcast: the failure's status, message and hint. */
export function answerFailure (req: IncomingMessage, res: ServerResponse, failure: Failure, draining: boolean): void {
  answerLocally(res, failure.status, `${failure.message}\n${failure.hint}`, {
    'x-sidecar-error': failure.code,
    ...(draining ? { connection: 'close' } : {})
  })
  req.resume()
}

function answerLocally (res: ServerResponse, status: number, text: string, headers: Record<string, string>): void {
  const body = text + '\n'
  res.writeHead(status, {
    ...headers,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body)
  })
  res.end(body)
}
