import type { ServerResponse } from 'node:http'

/**
 * Call `fn` once, on the first of the response's `close` and its
 * connection's `close`; returns a function that cancels the call.
 *
 * Bookkeeping (a request slot, the in-flight gauge, aborting the upstream
 * request) must not hang on one event that can fail to fire: Node 20 never
 * emits `close` on a ServerResponse that was still queued behind a pipelined
 * predecessor when the connection ended (nodejs/node#62534), and a slot tied
 * to that event leaked for the life of the process. The connection's own
 * `close` always fires. Both listeners are removed when either fires or the
 * call is cancelled, so a keep-alive connection does not collect one per
 * request.
 */
export function onceClosed (res: ServerResponse, fn: () => void): () => void {
  const connection = res.socket ?? res.req.socket
  let done = false
  const cancel = (): void => {
    done = true
    res.off('close', fire)
    connection?.off('close', fire)
  }
  const fire = (): void => {
    if (done) return
    cancel()
    fn()
  }
  res.once('close', fire)
  if (connection?.destroyed === true) queueMicrotask(fire)
  else connection?.once('close', fire)
  return cancel
}
