import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createTlsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { answerClientError, refusalEvent, type ClientErrorReport } from './client-errors.js'
import { redactPath } from '../observe/redact.js'
import { onConnectionClose, onceClosed } from '../http/response-closed.js'
import { answerAndClose, ignoreErrors, rawAnswer } from '../http/raw-answer.js'

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
  const turn = (): void => {
    stop()
    serve(req, res)
  }
  const stop = onConnectionClose(req.socket, () => { res.off('socket', turn) })
  res.once('socket', turn)
}

/**
 * The responses a connection still owes, in order (HTTP/1.1 answers in
 * request order, RFC 9112 §9.3.2). A last answer of the listener's own (a
 * 400 for a request the parser refused behind others, a 405 to a pipelined
 * CONNECT) must wait for them: written at once it would take the place of
 * the answer to an earlier, well-formed request, which would then be lost,
 * and a usage report could reach 3scale while its client was told 400.
 */
class OwedResponses {
  readonly #owed = new WeakMap<Duplex, { count: number, closing: boolean, then?: () => void, last?: { req: IncomingMessage, res: ServerResponse } }>()

  constructor (private readonly maxWaitMs: number) {}

  /** A request was received on `socket`: its response is owed until it finishes or fails. */
  owe (socket: Duplex, req: IncomingMessage, res: ServerResponse): void {
    let entry = this.#owed.get(socket)
    if (entry === undefined) {
      entry = { count: 0, closing: false }
      this.#owed.set(socket, entry)
    }
    const owed = entry
    owed.count++
    owed.last = { req, res }
    let settled = false
    const settle = (): void => {
      if (settled) return
      settled = true
      // node:http's own mark of a response after which it closes the connection.
      if ((res as ServerResponse & { _last?: boolean })._last === true || !res.writableFinished) owed.closing = true
      owed.count--
      if (owed.count === 0 && owed.then !== undefined) {
        const then = owed.then
        owed.then = undefined
        then()
      }
    }
    res.once('finish', settle)
    onceClosed(res, settle)
  }

  /**
   * Run `last` once every owed response on `socket` is written, or destroy
   * the connection when one of them ended it (a response that said
   * `Connection: close`, or one cut short): nothing may follow those.
   */
  afterOwed (socket: Duplex, last: () => void): void {
    const entry = this.#owed.get(socket)
    const run = (): void => {
      if (entry?.closing === true || !socket.writable) socket.destroy()
      else last()
    }
    if (entry === undefined || entry.count === 0) {
      run()
      return
    }
    // The owed answers are bounded by the upstream timeouts; this only
    // makes sure the connection cannot outlive them for good.
    const cap = setTimeout(() => { socket.destroy() }, this.maxWaitMs)
    cap.unref()
    entry.then = () => {
      clearTimeout(cap)
      run()
    }
  }

  /**
   * The response of the request whose body was still being received, if
   * the parser failed inside it: that request is the one refused, so its
   * answer is due now, not after it.
   */
  incomplete (socket: Duplex): ServerResponse | undefined {
    const last = this.#owed.get(socket)?.last
    return last !== undefined && !last.req.complete ? last.res : undefined
  }
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
  const owed = new OwedResponses(limits.requestTimeoutMs + 60_000)
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
  // A queued request whose body the parser then failed on: when its turn
  // comes, the listener's refusal takes the place of its response.
  const refuseInTurn = new WeakMap<ServerResponse, () => void>()
  const serveOrRefuse = (req: IncomingMessage, res: ServerResponse): void => {
    const refusal = refuseInTurn.get(res)
    if (refusal !== undefined) refusal()
    else serve(req, res)
  }
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    owed.owe(req.socket, req, res)
    if (res.socket === null) awaitTurn(req, res, serveOrRefuse)
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
  // An Expect other than 100-continue: node:http would answer 417 itself,
  // unlogged; the rewrite refuses it with the same status, logged.
  server.on('checkExpectation', onRequest)
  // A CONNECT never reaches the request handler; without this listener
  // node:http would drop the socket without an answer.
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    ignoreErrors(socket)
    owed.afterOwed(socket, () => { answerAndClose(socket, rawAnswer(405, NOT_A_PROXY, 'Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n')) })
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
    ignoreErrors(socket)
    // No body: the request could not be read, so it may have been a HEAD,
    // whose answer must carry none; the kind is in X-Sidecar-Error.
    const refused = (): void => { answerAndClose(socket, rawAnswer(answer.status, '', `X-Sidecar-Error: ${answer.kind}\r\n`)) }
    const broken = owed.incomplete(socket)
    if (broken === undefined) {
      // A new request's head: answered after those still owed to the requests before it.
      owed.afterOwed(socket, refused)
    } else if (broken.socket === socket && !broken.headersSent) {
      // Inside the body of the request being forwarded (a bad chunk, a
      // body too slow): the answer takes the place of its response, and
      // closing the connection aborts what was forwarded of it.
      refused()
    } else if (broken.socket === null) {
      // Inside the body of a request still queued: the answers before it
      // go out first, then the refusal in its place; it is never forwarded.
      refuseInTurn.set(broken, refused)
    } else {
      socket.destroy()
    }
    report(refusalEvent(err, answer, (socket as Partial<Socket>).remoteAddress))
  })

  await listen(server, host, port)

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

/** Listen on host:port; resolves once listening, rejects with the listen error (EADDRINUSE, EACCES). */
export async function listen (server: Server, host: string, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host, port }, () => {
      server.off('error', reject)
      resolve()
    })
  })
}
