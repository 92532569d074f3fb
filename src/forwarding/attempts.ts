import { isFailoverFailure } from '../failures/catalogue.js'
import { shouldRetry, type FailedAttempt } from './retry.js'

/** What is known of a failed attempt, and of the request's attempts so far, when deciding what comes next. */
export interface AttemptFacts extends FailedAttempt {
  /** The attempt went through a proxy (a direct hop has no proxy to blame). */
  readonly proxied: boolean
  /** The next hops of the route (1 when direct or with one proxy). */
  readonly hops: number
  /** The hops this request has tried, the failed one included. */
  readonly tried: number
}

/**
 * What to do with a request whose attempt failed before APIcast got a
 * status line:
 * - `failover`: send it through the next hop this request has not tried
 *   (which one is the transport's choice: the first that is not backed off);
 * - `retry`: send it again, once, on a fresh connection of the same hop;
 * - `answer`: answer the failure.
 *
 * `backOff`: the failed hop's proxy is to blame, so it is backed off for
 * the route's next requests too. It comes with `failover`, and also with
 * `retry` or `answer` once every hop has been tried.
 */
export interface NextAttempt {
  readonly action: 'failover' | 'retry' | 'answer'
  readonly backOff: boolean
}

// Constants: the decision allocates nothing.
const FAILOVER: NextAttempt = Object.freeze({ action: 'failover', backOff: true })
const RETRY: NextAttempt = Object.freeze({ action: 'retry', backOff: false })
const ANSWER: NextAttempt = Object.freeze({ action: 'answer', backOff: false })
const BACK_OFF_AND_RETRY: NextAttempt = Object.freeze({ action: 'retry', backOff: true })
const BACK_OFF_AND_ANSWER: NextAttempt = Object.freeze({ action: 'answer', backOff: true })

/**
 * Decide the next step of a request after a failed attempt. Pure.
 *
 * A request fails over only when no byte of it left (the proxy could not be
 * reached, refused the tunnel or the credentials, or was too slow to open
 * it), so nothing is ever sent twice by a failover. Otherwise it is sent
 * again only under shouldRetry's rules: a usage report (POST) that may
 * have reached 3scale is never sent a second time.
 */
export function decideNextAttempt (facts: AttemptFacts): NextAttempt {
  const backOff = facts.beforeWrite && facts.proxied && facts.hops > 1 && isFailoverFailure(facts.failure)
  if (backOff && facts.tried < facts.hops) return FAILOVER
  if (shouldRetry(facts)) return backOff ? BACK_OFF_AND_RETRY : RETRY
  return backOff ? BACK_OFF_AND_ANSWER : ANSWER
}
