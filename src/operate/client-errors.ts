import type { Logger } from '../observe/logger.js'
import type { ClientErrorKind } from '../observe/metrics.js'

/** The answer to a request node:http refused before the handler saw it. */
export interface ClientErrorAnswer {
  readonly status: 400 | 408 | 431
  readonly kind: ClientErrorKind
  /** What it means, for the log line (never the request's bytes: they may hold a token). */
  readonly meaning: string
}

/**
 * Map a node:http `clientError` code to the answer the client gets, or
 * undefined when the client is already gone (a reset, a closed pipe) and
 * nothing can be said to it. Node's own defaults, made explicit so each one
 * is logged and counted: 431 for oversized headers, 408 for a request that
 * arrived too slowly, 400 for anything the parser refused, request smuggling
 * forms (Content-Length with Transfer-Encoding, bad chunk framing) included.
 */
export function answerClientError (code: string | undefined): ClientErrorAnswer | undefined {
  switch (code) {
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ECONNABORTED':
    case 'ERR_STREAM_DESTROYED':
    case 'ERR_STREAM_WRITE_AFTER_END':
      return undefined
    case 'HPE_HEADER_OVERFLOW':
      return { status: 431, kind: 'headers_too_large', meaning: 'the request headers exceed node:http\'s 16 KiB limit' }
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return { status: 408, kind: 'request_timeout', meaning: 'the request arrived too slowly (CLIENT_HEADERS_TIMEOUT_MS, CLIENT_REQUEST_TIMEOUT_MS)' }
    default:
      return { status: 400, kind: 'bad_request', meaning: 'the request is malformed (a broken client, or a request smuggling attempt)' }
  }
}

/** What a listener reports about a client it refused below HTTP. */
export interface ClientErrorEvent {
  readonly kind: ClientErrorKind
  /** The parser's or Node's code, e.g. HPE_UNEXPECTED_CONTENT_LENGTH. */
  readonly code?: string | undefined
  /** llhttp's reason, e.g. "Content-Length can't be present with Transfer-Encoding". */
  readonly reason?: string | undefined
  readonly status: number
  readonly peer?: string | undefined
  /** The sentence for the log line. */
  readonly message: string
}

export type ClientErrorReport = (event: ClientErrorEvent) => void

/** The event for a request node:http refused with `err`, answered with `answer`. */
export function refusalEvent (err: NodeJS.ErrnoException & { reason?: unknown }, answer: ClientErrorAnswer, peer: string | undefined): ClientErrorEvent {
  const reason = typeof err.reason === 'string' ? err.reason : undefined
  return {
    kind: answer.kind,
    code: err.code,
    reason,
    status: answer.status,
    peer,
    message: `refused a request before forwarding it: ${answer.status} (${err.code ?? 'error'}${reason !== undefined ? `: ${reason}` : ''}): ${answer.meaning}; nothing was sent upstream`
  }
}

/**
 * Count every refusal (`count`, the metric) and log it sampled per kind:
 * the first at once, then one line per 10 s with how many went unlogged, so
 * a flood of bad requests neither floods the log nor hides among them a
 * refusal of another kind.
 */
export function createClientErrorReporter (log: Logger, count: (kind: ClientErrorKind) => void, newSampler: () => () => number | undefined): ClientErrorReport {
  const samplers = new Map<ClientErrorKind, () => number | undefined>()
  return (event) => {
    count(event.kind)
    let sample = samplers.get(event.kind)
    if (sample === undefined) {
      sample = newSampler()
      samplers.set(event.kind, sample)
    }
    const unlogged = sample()
    if (unlogged === undefined) return
    log.warn({ error: event.kind, code: event.code, reason: event.reason, status: event.status, peer: event.peer, refusedSinceLastLine: unlogged },
      event.message + (unlogged > 0 ? `; ${unlogged} more like it since the last such line` : ''))
  }
}
