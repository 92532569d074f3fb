import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createTlsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { onceClosed } from './response-closed.js'

export interface Listener {
  readonly server: Server
  readonly address: AddressInfo
  /** True when the listener serves HTTPS (LISTEN_TLS_CERT/KEY). */
  readonly tls: boolean
  inFlight (): number
  /**
   * Stop accepting, let in-flight requests finish for up to `graceMs`, then
   * cut whatever is left. Resolves once every connection is closed.
   */
  close (graceMs: number): Promise<void>
}

const NOT_A_PROXY = 'CONNECT is not supported: this listener forwards only to its configured 3scale endpoint\n'

/**
 * Start the listener for one route: plain HTTP, or HTTPS with `tls`. Resolves once it accepts
 * connections; rejects if it cannot bind (the caller then exits: the sidecar
 * never runs half alive).
 */
/** Limits on the client's side: how long it may take to send a request. */
export interface ClientLimits {
  readonly headersTimeoutMs: number
  /** The whole request, body included. */
  readonly requestTimeoutMs: number
}

/**
 * HTTP/1.1 pipelining: node:http hands over a request while its
 * predecessor's response is still being written. Its response gets the
 * connection (the `socket` event) only when its turn comes, and never if the
 * connection ends first: after a `Connection: close` answer (every refusal
 * of the sidecar's), or when the client hangs up. So a pipelined request is
 * held until its turn and dropped if the connection ends before it: nothing
 * is sent upstream (a usage report least of all) whose response can never be
 * delivered. nginx likewise reads a pipelined request only once the one
 * before it is done.
 */
function awaitTurn (req: IncomingMessage, res: ServerResponse, serve: (req: IncomingMessage, res: ServerResponse) => void): void {
  const connection = req.socket
  const turn = (): void => {
    connection.off('close', gone)
    serve(req, res)
  }
  const gone = (): void => { res.off('socket', turn) }
  res.once('socket', turn)
  connection.once('close', gone)
}

export async function startListener (
  host: string,
  port: number,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  tls: { readonly cert: string, readonly key: string } | undefined,
  limits: ClientLimits
): Promise<Listener> {
  let inFlight = 0
  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    inFlight++
    onceClosed(res, () => { inFlight-- })
    handler(req, res)
  }
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    if (res.socket === null) awaitTurn(req, res, serve)
    else serve(req, res)
  }
  // A client that is slow to send its headers or body gets 408 and is
  // disconnected (node:http does both), so it cannot hold a connection and
  // a request slot. node:http checks these limits only every
  // connectionsCheckingInterval (30 s by default): check often enough for
  // the limit to mean what it says.
  const serverOptions = {
    requireHostHeader: false,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4)))
  }
  // HTTPS when LISTEN_TLS_CERT/KEY are set, for APIcast across a network.
  const server: Server = tls !== undefined
    ? createTlsServer({ cert: tls.cert, key: tls.key, ...serverOptions }, onRequest)
    : createServer(serverOptions, onRequest)
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
    tls: tls !== undefined,
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
