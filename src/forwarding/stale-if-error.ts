import type { Failure } from '../failures/catalogue.js'
import type { RouteMetrics } from '../observe/metrics.js'
import type { StaleCollector, StaleConfigCache, StaleHit } from '../stale-config/stale-config.js'
import type { PolicyAnswer, RequestPolicy, ResponsePolicy } from './response-policy.js'
import type { OutgoingRequest } from './rewrite.js'

/** Upstream statuses that count as the portal failing (RFC 5861's stale-if-error). */
const PORTAL_ERROR_STATUS: ReadonlySet<number> = new Set([500, 502, 503, 504])

/**
 * The portal's response policy: stale-if-error (RFC 5861) over `cache`.
 * A 200 configuration read is collected into the cache as it is relayed;
 * when the portal answers 500/502/503/504, or cannot be reached at all, the
 * last good copy is answered instead, marked stale, so APIcast can boot or
 * reload through an outage. Any other request is left alone.
 */
export function createStaleIfError (cache: StaleConfigCache, metrics: Pick<RouteMetrics, 'staleServed'>): ResponsePolicy {
  return {
    forRequest (incomingTarget: string, outgoing: OutgoingRequest): RequestPolicy | undefined {
      const key = cache.key(outgoing.method, pathOf(incomingTarget), outgoing.path, outgoing.headers.authorization)
      return key !== undefined ? new StaleIfError(cache, key, metrics) : undefined
    }
  }
}

/** Stale-if-error for one configuration read: its key in the cache, and the body being collected. */
class StaleIfError implements RequestPolicy {
  /**
   * The body of a 200 response, collected for the cache: committed at its
   * end, abandoned on every failure (a client abort included), since until
   * then it holds its key and its budget.
   */
  #collector: StaleCollector | undefined

  constructor (
    private readonly cache: StaleConfigCache,
    private readonly key: string,
    private readonly metrics: Pick<RouteMetrics, 'staleServed'>
  ) {}

  modifyResponse (statusCode: number, headers: Record<string, string | string[]>): PolicyAnswer | undefined {
    if (PORTAL_ERROR_STATUS.has(statusCode)) {
      const hit = this.cache.lookup(this.key)
      return hit !== undefined ? this.#answer(hit, `upstream_${statusCode}`, `the portal answered ${statusCode}`) : undefined
    }
    // A body under a transfer coding is relayed as it came, never stored.
    if (statusCode === 200 && headers['transfer-encoding'] === undefined) {
      this.#collector = this.cache.collect(this.key, headers)
    }
    return undefined
  }

  onBody (chunk: Buffer): void { this.#collector?.add(chunk) }

  onEnd (): void { this.#collector?.commit() }

  onAbort (): void {
    this.#collector?.abandon()
    this.#collector = undefined
  }

  handleError (failure: Failure): PolicyAnswer | undefined {
    const hit = this.cache.lookup(this.key)
    return hit !== undefined ? this.#answer(hit, failure.code, `${failure.message}; ${failure.hint}`) : undefined
  }

  /** The last good configuration, marked stale: Warning 110, Age, and X-Sidecar-Stale naming why. */
  #answer (hit: StaleHit, reason: string, why: string): PolicyAnswer {
    const { response, ageSeconds } = hit
    this.metrics.staleServed()
    return {
      status: 200,
      headers: {
        ...response.headers,
        'content-length': response.body.length,
        age: String(ageSeconds),
        warning: '110 - "Response is Stale"',
        'x-sidecar-stale': reason
      },
      body: response.body,
      error: reason,
      fields: { stale: true, ageSeconds },
      message: `served the configuration stored ${ageSeconds} s ago instead of failing: ${why} (STALE_CONFIG_MAX_AGE bounds this)`
    }
  }
}

/** The path of an origin-form target, without its query. */
function pathOf (target: string): string {
  const q = target.indexOf('?')
  return q === -1 ? target : target.slice(0, q)
}
