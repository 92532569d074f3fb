import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'

/** Longest a refused connection may take to accept its answer before it is cut. */
const LINGER_MS = 2000

/** Connections given their last answer: one each, however many errors follow. */
const closing = new WeakSet<Duplex>()
const quiet = new WeakSet<Duplex>()

/**
 * Write a last answer and close the connection once it is written, or after
 * LINGER_MS at the latest. A bare end() only half-closes, and a client that
 * never closes its side held the descriptor for good: 400 such CONNECTs
 * exhausted a 300-descriptor limit.
 */
export function answerAndClose (socket: Duplex, answer: string): void {
  if (closing.has(socket)) return
  closing.add(socket)
  ignoreErrors(socket)
  const cut = setTimeout(() => { socket.destroy() }, LINGER_MS)
  cut.unref()
  socket.once('close', () => { clearTimeout(cut) })
  socket.end(answer, () => { socket.destroy() })
}

/** A connection being given up on: its errors (a reset, EPIPE) are expected, and need one listener, not one per event. */
export function ignoreErrors (socket: Duplex): void {
  if (quiet.has(socket)) return
  quiet.add(socket)
  socket.on('error', () => {})
}

/** A raw HTTP/1.1 answer with a text body, for sockets no ServerResponse owns. */
export function rawAnswer (status: number, text: string, headers = ''): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${headers}Content-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`
}
