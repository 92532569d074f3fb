import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'

/** How a tunnel ended, for its log line and metrics. */
export type TunnelEnd = 'closed' | 'idle_timeout' | 'client_error' | 'upstream_error' | 'shutdown'

export interface RelayStats {
  /** Bytes from the client to the destination, and back. */
  readonly bytesUp: number
  readonly bytesDown: number
  readonly end: TunnelEnd
}

export interface Relay {
  /** Cut the tunnel now (shutdown). */
  destroy (end: TunnelEnd): void
}

/**
 * Copy bytes both ways between the client and the destination, and nothing
 * else: the sidecar never reads what is inside (TLS stays end to end).
 *
 * - Backpressure both ways (pipe): a client that stops reading pauses the
 *   destination, and the other way round; nothing piles up in memory.
 * - Half-close both ways: a FIN from either side is passed on (end()), and
 *   the other direction keeps flowing until it ends too (allowHalfOpen on
 *   both sockets; RFC 9110 §9.3.6 lets either side close its half).
 * - `idleMs` with no byte moved either way closes both. A byte in either
 *   direction is a read or a write on the client's socket, so its timer
 *   alone sees all traffic; a client that stopped reading writes nothing
 *   more once the kernel's buffers fill, so it is cut off too, and its
 *   tunnel released.
 * - Either socket failing, or closing before its peer was told end(),
 *   closes the other: no half-dead pair is left holding two descriptors.
 * `done` is called once, when both sockets are closed.
 */
export function relayTunnel (client: Duplex & Partial<Pick<Socket, 'setTimeout' | 'allowHalfOpen'>>, upstream: Socket, idleMs: number, done: (stats: RelayStats) => void): Relay {
  let bytesUp = 0
  let bytesDown = 0
  let end: TunnelEnd | undefined
  const finish = (why: TunnelEnd): void => { end ??= why }
  const destroyBoth = (why: TunnelEnd): void => {
    finish(why)
    client.destroy()
    upstream.destroy()
  }

  client.allowHalfOpen = true
  upstream.allowHalfOpen = true
  client.on('data', (chunk: Buffer) => { bytesUp += chunk.length })
  upstream.on('data', (chunk: Buffer) => { bytesDown += chunk.length })
  client.on('error', () => { destroyBoth('client_error') })
  upstream.on('error', () => { destroyBoth('upstream_error') })
  client.setTimeout?.(idleMs, () => { destroyBoth('idle_timeout') })
  // The same limit on the destination's side, for the tail it still flushes after the client has gone.
  upstream.setTimeout(idleMs, () => { destroyBoth('idle_timeout') })

  let open = 2
  const closed = (): void => {
    if (--open > 0) return
    done({ bytesUp, bytesDown, end: end ?? 'closed' })
  }
  // A side that closed after its peer was told end() leaves that peer to
  // flush what it still holds (the tail of a response) and close on its
  // own, within the idle timer; any other close cuts the peer at once.
  client.once('close', () => {
    if (!upstream.writableEnded) upstream.destroy()
    closed()
  })
  upstream.once('close', () => {
    if (!client.writableEnded) client.destroy()
    closed()
  })
  client.pipe(upstream)
  upstream.pipe(client)
  return { destroy: destroyBoth }
}
