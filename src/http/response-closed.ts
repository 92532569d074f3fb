import type { ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'

/**
 * One `close` listener per connection, fanning out to everyone waiting on
 * it: with pipelining, each request on a connection has several parties
 * waiting for its end (the slot, the listener's count, the relay), and one
 * listener each on the shared socket passed Node's limit of 10
 * (MaxListenersExceededWarning) at a few pipelined requests.
 */
const waiting = new WeakMap<Duplex, Set<() => void>>()

/** Call `fn` when `connection` closes; returns a function that cancels the call. */
export function onConnectionClose (connection: Duplex, fn: () => void): () => void {
  let set = waiting.get(connection)
  if (set === undefined) {
    const created = new Set<() => void>()
    set = created
    waiting.set(connection, created)
    connection.once('close', () => {
      waiting.delete(connection)
      for (const f of created) f()
    })
  }
  const mine = set
  mine.add(fn)
  return () => { mine.delete(fn) }
}

/**
 * Call `fn` once, on the first of the response's `close` and its
 * connection's `close`; returns a function that cancels the call.
 *
 * Bookkeeping (a request slot, the in-flight gauge, aborting the upstream
 * request) must not hang on one event that can fail to fire: Node 20 never
 * emits `close` on a ServerResponse that was still queued behind a pipelined
 * predecessor when the connection ended (nodejs/node#62534), and a slot tied
 * to that event leaked for the life of the process. The connection's own
 * `close` always fires.
 */
export function onceClosed (res: ServerResponse, fn: () => void): () => void {
  const connection = res.socket ?? res.req.socket
  let done = false
  let stopConnection = (): void => {}
  const cancel = (): void => {
    done = true
    res.off('close', fire)
    stopConnection()
  }
  const fire = (): void => {
    if (done) return
    cancel()
    fn()
  }
  res.once('close', fire)
  if (connection === null) return cancel
  if (connection.destroyed) queueMicrotask(fire)
  else stopConnection = onConnectionClose(connection, fire)
  return cancel
}
