import type { Failure } from '../failures/catalogue.js'

/** What is known of one failed attempt when deciding whether to send the request again. */
export interface FailedAttempt {
  readonly method: string
  /** The request has a body (a stream that can be sent only once it has been read). */
  readonly hasBody: boolean
  readonly failure: Failure
  /**
   * The failure came while connecting (TCP, CONNECT, TLS): no byte of the
   * request was written upstream.
   */
  readonly beforeWrite: boolean
  /** The upstream's response had begun (its status line reached APIcast). */
  readonly responseStarted: boolean
  /** This request was already sent again once on the same hop. */
  readonly retried: boolean
}

/** Methods whose request can be sent twice without a second effect (no usage report among them). */
const REPEATABLE: ReadonlySet<string> = new Set(['GET', 'HEAD'])

/**
 * Whether to send a failed request again, once, on a fresh connection of the
 * same hop (failing over to another proxy is decided before, in attempts.ts).
 * Never a second time, never once the response has begun, and only for a
 * reset or closed connection: a refusal, a timeout or an untrusted
 * certificate would fail the same way again, and a second wait for a
 * timeout would only make APIcast wait twice.
 *
 * - Nothing written yet (the connection broke while being set up): any
 *   method, since 3scale saw nothing. A body has not been read either.
 * - Written, no response yet: only GET and HEAD without a body. A POST is a
 *   usage report that 3scale may already have counted; it gets a 502 and
 *   APIcast decides.
 */
export function shouldRetry (attempt: FailedAttempt): boolean {
  if (attempt.retried || attempt.responseStarted || !attempt.failure.transient) return false
  if (attempt.beforeWrite) return true
  return REPEATABLE.has(attempt.method) && !attempt.hasBody
}
