import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

export interface Listener {
  readonly server: Server
  readonly address: AddressInfo
  inFlight (): number
  /**
   * Stop accepting, let in-flight requests finish for up to `graceMs`, then
   * cut whatever is left. Resolves once every connection is closed.
   */
  close (graceMs: number): Promise<void>
}

const NOT_A_PROXY = 'CONNECT is not supported: this listener forwards only to its configured 3scale endpoint\n'

/**
 * Start a plain-HTTP listener for one route. Resolves once it accepts
 * connections; rejects if it cannot bind (the caller then exits: the sidecar
 * never runs half alive).
 */
export async function startListener (
  host: string,
  port: number,
  handler: (req: IncomingMessage, res: ServerResponse) => void
): Promise<Listener> {
  let inFlight = 0
  const server = createServer({ requireHostHeader: false }, (req, res) => {
    inFlight++
    res.once('close', () => { inFlight-- })
    handler(req, res)
  })
  // A CONNECT never reaches the request handler; without this listener
  // node:http would drop the socket without an answer.
  server.on('connect', (_req: IncomingMessage, socket: Socket) => {
    socket.on('error', () => {})
    socket.end('HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n' +
      `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(NOT_A_PROXY)}\r\nConnection: close\r\n\r\n${NOT_A_PROXY}`)
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host, port }, () => {
      server.off('error', reject)
      resolve()
    })
  })

  const closed = new Promise<void>((resolve) => server.once('close', resolve))
  return {
    server,
    address: server.address() as AddressInfo,
    inFlight: () => inFlight,
    close: async (graceMs) => {
      server.close()
      server.closeIdleConnections()
      const deadline = Date.now() + graceMs
      while (inFlight > 0 && Date.now() < deadline) {
        await sleep(25)
        server.closeIdleConnections()
      }
      server.closeAllConnections()
      await closed
    }
  }
}
