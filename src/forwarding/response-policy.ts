import type { OutgoingHttpHeaders } from 'node:http'
import type { Failure } from '../failures/catalogue.js'
import type { OutgoingRequest } from './rewrite.js'

/**
 * What a listener does to responses beyond relaying them: the role of Go's
 * ReverseProxy ModifyResponse and ErrorHandler. The relay and the handler
 * call it at fixed points and know nothing of what it does; stale-if-error
 * (stale-if-error.ts) is the portal's. A listener without one relays every
 * response as it came and answers every failure itself.
 */
export interface ResponsePolicy {
  /**
   * Once per request, after the rewrite: the policy's part in this request,
   * or undefined when it leaves the request alone (then nothing more is
   * asked, and nothing is allocated for it). `incomingTarget` is the
   * request-target as received; `outgoing` what is sent upstream.
   */
  forRequest (incomingTarget: string, outgoing: OutgoingRequest): RequestPolicy | undefined
}

/** The policy of one request, across all its attempts. */
export interface RequestPolicy {
  /**
   * ModifyResponse: the upstream's final response head (status 200 or
   * more), with the headers APIcast would get. Returns an answer to give
   * instead (the upstream's body is then read and dropped, so its
   * connection stays usable), or undefined to relay the response. The
   * headers are the relay's: copy what is kept past the call.
   */
  modifyResponse (statusCode: number, headers: Record<string, string | string[]>): PolicyAnswer | undefined
  /** A chunk of the relayed body, as it is written to APIcast. */
  onBody (chunk: Buffer): void
  /** The relayed body ended whole. */
  onEnd (): void
  /**
   * The attempt failed, or APIcast went away: drop whatever is held for its
   * response. Called on every failed attempt, another one may follow.
   */
  onAbort (): void
  /**
   * ErrorHandler: the request failed for good with `failure`, before any
   * status line reached APIcast. Returns an answer to give instead of the
   * sidecar's failure answer, or undefined.
   */
  handleError (failure: Failure): PolicyAnswer | undefined
}

/**
 * A whole response the policy gives instead of the upstream's, or of the
 * failure's, held in memory. The relay writes it (adding `Connection:
 * close` while draining) and the request's warning line says why.
 */
export interface PolicyAnswer {
  readonly status: number
  readonly headers: OutgoingHttpHeaders
  readonly body: Buffer
  /** The `error` field of the line: why the upstream's answer was not given. */
  readonly error: string
  /** Further fields of the line. */
  readonly fields: Readonly<Record<string, unknown>>
  readonly message: string
}
