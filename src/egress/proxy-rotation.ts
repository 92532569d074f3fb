/**
 * Which of a route's proxies to use: the first (https_proxy) unless it is
 * backed off after a failure, then FALLBACK_PROXIES in order. Pure: the
 * clock is injected, so the back-off is tested without waiting.
 */
export class ProxyRotation {
  /** Per proxy, until when it is skipped (0: in use). */
  readonly #downUntil: number[]
  #current = 0

  constructor (readonly size: number, private readonly backoffMs: number, private readonly now: () => number = Date.now) {
    this.#downUntil = Array.from({ length: size }, () => 0)
  }

  /** The proxy to use now, without side effects: the first not backed off, else the one whose back-off ends first. */
  active (): number {
    const now = this.now()
    const pick = this.#downUntil.findIndex((until) => until <= now)
    return pick !== -1 ? pick : this.#downUntil.indexOf(Math.min(...this.#downUntil))
  }

  /** active(), remembered: `previous` differs when the choice changed since the last select(). */
  select (): { readonly index: number, readonly previous: number } {
    const previous = this.#current
    this.#current = this.active()
    return { index: this.#current, previous }
  }

  /**
   * Proxy `index` failed before any request byte left: back it off, and
   * return the next proxy for this request among those not `tried` (one
   * not backed off first), or undefined when all were tried. `wasUp` is
   * true for the failure that took it out of use, the one worth a log line.
   */
  fail (index: number, tried: ReadonlySet<number>): { readonly next: number | undefined, readonly wasUp: boolean } {
    const now = this.now()
    const wasUp = (this.#downUntil[index] ?? 0) <= now
    this.#downUntil[index] = now + this.backoffMs
    const candidates = [...this.#downUntil.keys()].filter((i) => !tried.has(i))
    const next = candidates.find((i) => (this.#downUntil[i] ?? 0) <= now) ?? candidates[0]
    return { next, wasUp }
  }
}
