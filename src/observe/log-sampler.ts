/**
 * For events that can come by the thousand (overload refusals, malformed
 * requests, a flood of bad clients): say the first at once, then at most one
 * line per `intervalMs` with the number that went unsaid since, so a flood
 * costs no I/O where it hurts most and still shows in the log. Pure: the
 * clock is injected.
 *
 * `sample()` returns undefined when this event is not to be logged, else how
 * many were left unlogged since the last line.
 */
export function createLogSampler (intervalMs = 10_000, now: () => number = () => performance.now()): () => number | undefined {
  let lastLogged = -Infinity
  let unlogged = 0
  return () => {
    const at = now()
    if (at - lastLogged < intervalMs) {
      unlogged++
      return undefined
    }
    const skipped = unlogged
    lastLogged = at
    unlogged = 0
    return skipped
  }
}
