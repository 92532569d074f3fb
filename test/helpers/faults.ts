import { createServer, connect, type AddressInfo, type Socket } from 'node:net'

/** What a FaultyFront does to the next connection it accepts. */
export type Fault =
  /** Relay both ways to the target. */
  | 'pass'
  /** Send a TCP RST at once, before any byte. */
  | 'reset'
  /** Accept, read, never answer (a proxy that hangs). */
  | 'stall'

export interface FaultyFront {
  readonly port: number
  /** Connections accepted so far. */
  accepted (): number
  /** Faults for the next connections, in order; after them, 'pass'. */
  next (...faults: Fault[]): void
  /** Connections open now (relayed or stalled). */
  openSockets (): number
  /** Reset every open connection (a proxy that crashed). */
  resetAll (): void
  close (): Promise<void>
}

/**
 * A TCP front on 127.0.0.1:0 for a real proxy at `targetPort`: it relays
 * bytes unchanged, and injects a fault into chosen connections (a reset on
 * connect, a stall), or resets all open ones at once. The fault is real TCP
 * behaviour on a real socket; nothing in the sidecar is mocked.
 */
export async function startFaultyFront (targetPort: number): Promise<FaultyFront> {
  const queue: Fault[] = []
  const open = new Set<Socket>()
  let accepted = 0
  const server = createServer((client) => {
    accepted++
    open.add(client)
    client.once('close', () => open.delete(client))
    client.on('error', () => {})
    const fault = queue.shift() ?? 'pass'
    if (fault === 'reset') {
      client.resetAndDestroy()
      return
    }
    if (fault === 'stall') {
      client.resume()
      return
    }
    const upstream = connect(targetPort, '127.0.0.1')
    open.add(upstream)
    upstream.once('close', () => { open.delete(upstream); client.destroy() })
    upstream.on('error', () => {})
    client.once('close', () => upstream.destroy())
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    accepted: () => accepted,
    next: (...faults) => { queue.push(...faults) },
    openSockets: () => open.size,
    resetAll: () => { for (const s of open) s.resetAndDestroy() },
    close: async () => {
      for (const s of open) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
