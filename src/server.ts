import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createTlsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { answerClientError, type ClientErrorReport } from './client-errors.js'
import { redactPath } from './redact.js'
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

/** Longest a refused connection may take to accept its answer before it is cut. */
const LINGER_MS = 2000

/**
 * Write a last answer and close the connection once it is written, or after
 * LINGER_MS at the latest. A bare end() only half-closes, and a client that
 * never closes its side held the descriptor for good: 400 such CONNECTs
 * exhausted a 300-descriptor limit.
 */
function answerAndClose (socket: Duplex, answer: string): void {
  socket.on('error', () => {})
  const cut = setTimeout(() => { socket.destroy() }, LINGER_MS)
  cut.unref()
  socket.once('close', () => { clearTimeout(cut) })
  socket.end(answer, () => { socket.destroy() })
}

/** A raw HTTP/1.1 answer with a text body, for sockets no ServerResponse owns. */
function rawAnswer (status: number, text: string, headers = ''): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${headers}Content-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`
}

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

export interface ListenerOptions {
  readonly tls?: { readonly cert: string, readonly key: string } | undefined
  readonly limits: ClientLimits
  /** Told of every client refused below HTTP: malformed requests, CONNECT. */
  readonly onClientError?: ClientErrorReport
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

/** A CONNECT target for a log line: printable ASCII only, bounded, credentials redacted. */
function sanitize (target: string): string {
  return redactPath(target.replace(/[^\x21-\x7e]/g, '?').slice(0, 200))
}

export async function startListener (
  host: string,
  port: number,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  options: ListenerOptions
): Promise<Listener> {
  const { tls, limits } = options
  const report = options.onClientError ?? ((): void => {})
  let inFlight = 0
  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    // After a request with Upgrade, node:http (with no 'upgrade' listener)
    // serves it as a plain request but parses nothing more on the
    // connection: requests pipelined behind it would be lost in silence.
    // Closing after the answer tells the client to send them again.
    if (req.headers.upgrade !== undefined) res.shouldKeepAlive = false
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
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    answerAndClose(socket, rawAnswer(405, NOT_A_PROXY, 'Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n'))
    report({
      kind: 'connect',
      status: 405,
      peer: socket.remoteAddress,
      message: `refused CONNECT ${sanitize(req.url ?? '')}: this listener forwards only to its 3scale endpoint and is not a forward proxy`
    })
  })
  // Requests node:http refuses before the handler (malformed, smuggling
  // forms, oversized headers, too slow): answered as Node would, but each
  // one counted and logged (sampled), so an attack or a broken client shows.
  server.on('clientError', (err: NodeJS.ErrnoException & { reason?: string }, socket: Duplex) => {
    const answer = answerClientError(err.code)
    if (answer === undefined) {
      socket.destroy()
      return
    }
    // Never write into a response already on its way (RFC 9112 §9.3 framing).
    const current = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage
    if (socket.writable && current?.headersSent !== true) {
      answerAndClose(socket, rawAnswer(answer.status, `${answer.meaning}\n`))
    } else {
      socket.destroy()
    }
    report({
      kind: answer.kind,
      code: err.code,
      reason: typeof err.reason === 'string' ? err.reason : undefined,
      status: answer.status,
      peer: (socket as Partial<Socket>).remoteAddress,
      message: `refused a request before forwarding it: ${answer.status} (${err.code ?? 'error'}${typeof err.reason === 'string' ? `: ${err.reason}` : ''}): ${answer.meaning}; nothing was sent upstream`
    })
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
