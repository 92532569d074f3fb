import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import { buildClientResponseHeaders, isBodiless } from '../http/response-headers.js'
import type { Logger } from '../observe/logger.js'
import type { PolicyAnswer, RequestPolicy } from './response-policy.js'

/** What a relay takes from its listener. */
export interface RelaySettings {
  readonly log: Logger
  /** True once shutdown has begun: responses then close their connection. */
  readonly draining: () => boolean
  /** CLIENT_SEND_TIMEOUT_MS: how long a response may stay blocked on a client that does not read. */
  readonly sendTimeoutMs: number
}

/**
 * The request a relay serves (forward.ts's exchange): the relay tells it how
 * each attempt ended, and it decides and logs what follows.
 */
export interface RelayOwner {
  readonly reqId: number
  readonly req: IncomingMessage
  readonly res: ServerResponse
  /** The response ended whole: the completion line. */
  completed (): void
  /** APIcast went away before the response had begun. */
  aborted (): void
  /** APIcast left the response unread past CLIENT_SEND_TIMEOUT_MS; its connection is closed. */
  sendTimedOut (upstreamAborted: boolean): void
  /** The policy answered instead of the upstream (the answer is written). */
  answered (answer: PolicyAnswer): void
  /**
   * The attempt failed with an error of undici's or the connector's.
   * `responseStarted`: the upstream's status line (an interim one included)
   * had arrived. The status line may already have reached APIcast.
   */
  failed (err: Error, responseStarted: boolean): void
}

/**
 * undici handler for one attempt: copies the upstream response to APIcast
 * as it arrives (status, headers minus hop-by-hop, body chunk by chunk,
 * pausing undici while APIcast's socket is full), aborts the upstream
 * request when APIcast goes away, and bounds how long a response may wait
 * on a client that does not read. How the attempt ended goes to its owner;
 * what the response becomes beyond a copy is the request's policy's.
 */
export class ResponseRelay implements Dispatcher.DispatchHandler {
  #controller: Dispatcher.DispatchController | undefined
  #bytesOut = 0
  #done = false
  #responseStarted = false
  #clientGone = false
  /** The policy answered instead: the rest of this attempt is read and dropped. */
  #replaced = false
  /** Set at the first pause: most responses never fill APIcast's socket, and pay for no listener. */
  #onDrain: (() => void) | undefined

  /**
   * Armed while the response is blocked on APIcast's socket (undici paused,
   * or the tail of the body still queued after the end): a client that
   * stops reading would otherwise hold a tunnel, and its buffers, with no
   * limit, because undici's body timeout does not run while paused. Past
   * CLIENT_SEND_TIMEOUT_MS (nginx's send_timeout) the upstream request is
   * aborted, freeing the tunnel, and APIcast's connection is closed.
   */
  #sendTimer: NodeJS.Timeout | undefined

  constructor (
    private readonly settings: RelaySettings,
    private readonly owner: RelayOwner,
    private readonly policy: RequestPolicy | undefined
  ) {}

  /** Body bytes written to APIcast. */
  get bytesOut (): number { return this.#bytesOut }

  /** APIcast's connection closed: abort the upstream request, so neither the tunnel nor 3scale keeps working for nobody. */
  clientClosed (): void {
    this.#clientGone = true
    if (!this.#done) this.#controller?.abort(new ClientClosedError())
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    if (this.#clientGone || this.owner.res.destroyed) controller.abort(new ClientClosedError())
  }

  onResponseStart (_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[]>, statusMessage?: string): void {
    this.#responseStarted = true
    if (statusCode < 200) {
      this.#relayInterim(statusCode, headers)
      return
    }
    const out = buildClientResponseHeaders(statusCode, this.owner.req.method, headers)
    const answer = this.policy?.modifyResponse(statusCode, out)
    if (answer !== undefined) {
      this.respond(answer)
      this.owner.answered(answer)
      return
    }
    if (this.settings.draining()) out.connection = 'close'
    if (statusMessage !== undefined && statusMessage !== '') {
      this.owner.res.writeHead(statusCode, statusMessage, out)
    } else {
      this.owner.res.writeHead(statusCode, out)
    }
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    // #done: the attempt has failed, yet undici may go on with the body.
    // Its absolute-form proxy client turns a proxy's 407 into an error at
    // the head and still delivers the 407's body; written, that body would
    // follow the failure's answer (write after end).
    if (this.#replaced || this.#done) return
    this.policy?.onBody(chunk)
    this.#bytesOut += chunk.length
    if (!this.owner.res.write(chunk)) {
      controller.pause()
      this.#waitForDrain()
    }
  }

  onResponseEnd (): void {
    if (this.#replaced) return
    this.#finish()
    this.policy?.onEnd()
    this.#endWithin()
    this.owner.completed()
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    this.policy?.onAbort()
    if (this.#replaced) return
    this.#finish()
    const { req, res } = this.owner
    if (res.headersSent && this.#bytesOut === 0 && isBodiless(res.statusCode, req.method) &&
        (err as { code?: string }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
      // A 304 with the Content-Length of the representation (legal, RFC 9110
      // §8.6), or a 204 that came with content: undici counts the missing or
      // stray body as a broken message and drops the upstream connection;
      // the response itself is complete. nginx relays it the same way.
      this.#endWithin()
      this.owner.completed()
      return
    }
    if (err instanceof SendTimeoutError) {
      res.destroy()
      this.owner.sendTimedOut(true)
      return
    }
    if (err instanceof ClientClosedError || (res.destroyed && !res.headersSent)) {
      this.owner.aborted()
      return
    }
    this.owner.failed(err, this.#responseStarted)
  }

  /**
   * Answer with `answer` instead of the upstream: the status line, then the
   * whole body, bounded like any other (see #sendTimer). The rest of this
   * attempt, if any, is dropped.
   */
  respond (answer: PolicyAnswer): void {
    this.#replaced = true
    this.#finish()
    this.owner.res.writeHead(answer.status, this.settings.draining() ? { ...answer.headers, connection: 'close' } : answer.headers)
    this.#endWithin(answer.body)
    this.owner.req.resume()
  }

  /**
   * An interim (1xx) response before the final one (RFC 9110 §15.2: an
   * intermediary must cope with those it did not ask for). 103 Early Hints
   * and 102 Processing are passed on to an HTTP/1.1 client; any other is
   * dropped, as is every 1xx to an HTTP/1.0 client, which cannot parse them.
   * Either way the final response follows on the same relay.
   */
  #relayInterim (statusCode: number, headers: Record<string, string | string[]>): void {
    const { req, res } = this.owner
    const http11 = req.httpVersionMajor === 1 && req.httpVersionMinor >= 1
    if (!http11 || res.headersSent) return
    try {
      if (statusCode === 103 && headers.link !== undefined) {
        res.writeEarlyHints(buildClientResponseHeaders(statusCode, req.method, headers))
      } else if (statusCode === 102) {
        res.writeProcessing()
      }
    } catch (err) {
      // A Link value node:http refuses: the hint is only an optimisation.
      this.settings.log.debug({ reqId: this.owner.reqId, status: statusCode, err }, 'dropped an interim response node:http would not write')
    }
  }

  /** undici is paused: resume it when APIcast's socket drains, and bound the wait. */
  #waitForDrain (): void {
    if (this.#onDrain === undefined) {
      this.#onDrain = () => {
        this.#clearSendTimer()
        this.#controller?.resume()
      }
      this.owner.res.on('drain', this.#onDrain)
    }
    this.#armSendTimer()
  }

  #armSendTimer (): void {
    this.#sendTimer ??= setTimeout(ResponseRelay.#sendTimedOut, this.settings.sendTimeoutMs, this)
  }

  #clearSendTimer (): void {
    if (this.#sendTimer === undefined) return
    clearTimeout(this.#sendTimer)
    this.#sendTimer = undefined
  }

  /** The send timer's callback: static, with the relay as its argument, so arming it allocates no closure. */
  static #sendTimedOut (relay: ResponseRelay): void {
    relay.#sendTimer = undefined
    if (!relay.#done) {
      // onResponseError closes APIcast's connection and reports.
      relay.#controller?.abort(new SendTimeoutError(relay.settings.sendTimeoutMs))
      return
    }
    relay.owner.res.destroy()
    relay.owner.sendTimedOut(false)
  }

  /**
   * End the response (with `body`, if given). When the socket could not take
   * it all, the rest waits in memory for APIcast to read: bound that wait too.
   */
  #endWithin (body?: Buffer): void {
    this.#clearSendTimer()
    const res = this.owner.res
    res.end(body)
    if ((res.socket?.writableLength ?? 0) === 0) return
    this.#armSendTimer()
    res.once('close', () => { this.#clearSendTimer() })
  }

  #finish (): void {
    this.#done = true
    // The response is over: a timer left armed from a pause would fire for a
    // client already gone, logging and counting a send_timeout for it, and
    // hold the relay for CLIENT_SEND_TIMEOUT_MS. #endWithin arms it again
    // when the tail of the body still waits on APIcast's socket.
    this.#clearSendTimer()
    if (this.#onDrain !== undefined) this.owner.res.off('drain', this.#onDrain)
  }
}

/** APIcast left the response unread past CLIENT_SEND_TIMEOUT_MS. */
class SendTimeoutError extends Error {
  override name = 'SendTimeoutError'
  readonly code = 'SIDECAR_CLIENT_SEND_TIMEOUT'
  constructor (ms: number) { super(`the client did not read its response for ${ms} ms`) }
}

class ClientClosedError extends Error {
  override name = 'ClientClosedError'
  readonly code = 'SIDECAR_CLIENT_CLOSED'
  constructor () { super('the client closed the connection') }
}
