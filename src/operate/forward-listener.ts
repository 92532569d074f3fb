import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { answerAndClose, ignoreErrors, rawAnswer } from '../http/raw-answer.js'
import { answerClientError, refusalEvent, type ClientErrorReport } from './client-errors.js'
import { listen, type ClientLimits } from './server.js'

export interface ForwardListener {
  readonly server: Server
  readonly address: AddressInfo
  /**
   * Stop accepting; let open tunnels run for up to `graceMs` (each still
   * ends on its own idle timeout), then cut whatever is left.
   */
  close (graceMs: number): Promise<void>
}

export interface ForwardHandlers {
  /** A CONNECT request: the socket is the handler's from here on. */
  readonly connect: ((req: IncomingMessage, socket: Duplex, head: Buffer) => void) & { open: () => number, destroyAll: () => void }
  /** Any other request (absolute-form http://, or a stray origin-form one). */
  readonly request: (req: IncomingMessage, res: ServerResponse) => void
}

/**
 * The forward proxy's listener (FORWARD_PROXY_PORT, on LISTEN_ADDRESS): a
 * node:http server whose CONNECTs go to the tunnel handler, with the same
 * limits on slow clients as the route listeners, and the same answers to
 * requests node:http refuses.
 */
export async function startForwardListener (host: string, port: number, handlers: ForwardHandlers, limits: ClientLimits, onClientError?: ClientErrorReport): Promise<ForwardListener> {
  const server = createServer({
    requireHostHeader: false,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4)))
  }, handlers.request)
  server.on('connect', handlers.connect)
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    const answer = answerClientError(err.code)
    if (answer === undefined) {
      socket.destroy()
      return
    }
    ignoreErrors(socket)
    answerAndClose(socket, rawAnswer(answer.status, '', `X-Sidecar-Error: ${answer.kind}\r\n`))
    onClientError?.(refusalEvent(err, answer, (socket as { remoteAddress?: string }).remoteAddress))
  })
  await listen(server, host, port)
  const closed = new Promise<void>((resolve) => server.once('close', resolve))
  return {
    server,
    address: server.address() as AddressInfo,
    close: async (graceMs) => {
      server.close()
      server.closeIdleConnections()
      const deadline = Date.now() + graceMs
      while (handlers.connect.open() > 0 && Date.now() < deadline) await sleep(25)
      handlers.connect.destroyAll()
      server.closeAllConnections()
      await closed
    }
  }
}
