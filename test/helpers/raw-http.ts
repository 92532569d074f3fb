/**
 * Reading HTTP/1.1 responses back out of the raw bytes a listener wrote to
 * one connection, strictly (RFC 9112), for tests that speak raw bytes and
 * must tell a well-formed answer from a broken one. Pure: no sockets.
 */

export interface RawResponse {
  readonly status: number
  /** Header fields in order, names lower-cased. */
  readonly headers: ReadonlyArray<readonly [string, string]>
  /** Body bytes read (0 for HEAD, 1xx, 204, 304). */
  readonly bodyBytes: number
  /** False when the bytes ended inside this response. */
  readonly complete: boolean
  header (name: string): string | undefined
}

/** Something in the bytes that breaks RFC 9112: what kind, and this instance, with an excerpt. */
export interface Violation {
  readonly kind: string
  readonly detail: string
}

export interface ParsedExchange {
  readonly responses: readonly RawResponse[]
  /** Final responses (status 200 and up), the ones that answer a request. */
  readonly finals: number
  readonly violations: readonly Violation[]
}

/** RFC 9110 §5.6.2 token characters. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const STATUS_LINE = /^HTTP\/1\.[01] ([1-9]\d\d) [\t -~\x80-\xff]*$/
const CHUNK_SIZE = /^([0-9a-fA-F]{1,16})(?:[ \t]*;[^\r\n]*)?$/
const CRLF = Buffer.from('\r\n')
const HEAD_END = Buffer.from('\r\n\r\n')

/** A short, printable excerpt of raw bytes, for a message. */
export function excerpt (bytes: Buffer | string, max = 160): string {
  const s = typeof bytes === 'string' ? bytes : bytes.toString('latin1')
  const cut = s.length > max ? s.slice(0, max) + `…(+${s.length - max} bytes)` : s
  return JSON.stringify(cut)
}

/**
 * Split what a server wrote on one connection into responses and check each
 * one's framing. `methods` are the request methods in the order they were
 * sent (a response to HEAD has no body); `serverClosed` tells whether the
 * bytes end because the server closed (a body delimited by the close is then
 * complete). Bytes that end mid-response are not a violation: the client may
 * have gone first, or the server may have cut a response it could not finish,
 * which is the one honest signal left once a status line is out.
 */
export function parseResponses (data: Buffer, methods: readonly string[], serverClosed: boolean): ParsedExchange {
  const responses: RawResponse[] = []
  const violations: Violation[] = []
  const violate = (kind: string, detail: string): void => { violations.push({ kind, detail }) }
  let pos = 0
  let finals = 0
  while (pos < data.length) {
    const headEnd = data.indexOf(HEAD_END, pos)
    if (headEnd === -1) {
      const rest = data.subarray(pos)
      if (!'HTTP/1.1 '.startsWith(rest.subarray(0, 9).toString('latin1')) && !rest.toString('latin1').startsWith('HTTP/1.')) {
        violate('bytes that are not a status line where a response should begin', excerpt(rest))
      }
      break
    }
    const lines = data.subarray(pos, headEnd).toString('latin1').split('\r\n')
    const statusLine = lines[0] ?? ''
    const m = STATUS_LINE.exec(statusLine)
    if (m === null) {
      violate('a malformed status line', excerpt(statusLine))
      break
    }
    const status = Number(m[1])
    const headers: Array<[string, string]> = []
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':')
      const name = colon === -1 ? '' : line.slice(0, colon)
      const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '')
      // eslint-disable-next-line no-control-regex -- a control byte in a field value is the violation
      if (!TOKEN.test(name) || /[\x00-\x08\x0a-\x1f\x7f]/.test(value)) {
        violate('a malformed header line', `in a ${status} response: ${excerpt(line)}`)
        continue
      }
      headers.push([name.toLowerCase(), value])
    }
    const header = (n: string): string | undefined => {
      const all = headers.filter(([k]) => k === n).map(([, v]) => v)
      return all.length === 0 ? undefined : all.join(', ')
    }
    pos = headEnd + HEAD_END.length
    if (status < 200) {
      if (status === 101) violate('a 101 Switching Protocols: the listener must never upgrade a connection', '')
      responses.push({ status, headers, bodyBytes: 0, complete: true, header })
      continue
    }
    // The k-th final response answers the k-th request (RFC 9112 §9.3.2).
    const method = methods[finals] ?? ''
    finals++
    const te = header('transfer-encoding')
    const lengths = headers.filter(([k]) => k === 'content-length').map(([, v]) => v)
    if (te !== undefined && lengths.length > 0) violate('a response with both Transfer-Encoding and Content-Length', `a ${status}`)
    if (new Set(lengths).size > 1) violate('a response with conflicting Content-Length values', `a ${status}: ${lengths.join(', ')}`)
    let bodyBytes = 0
    let complete = true
    if (method === 'HEAD' || status === 204 || status === 304) {
      bodyBytes = 0
    } else if (te !== undefined) {
      if (!/(?:^|,)[ \t]*chunked[ \t]*$/i.test(te)) violate('a response whose Transfer-Encoding does not end in chunked', `a ${status}: ${excerpt(te)}`)
      const chunked = readChunked(data, pos)
      if (chunked.violation !== undefined) violate('a response with broken chunked framing', `a ${status}: ${chunked.violation}`)
      bodyBytes = chunked.bodyBytes
      complete = chunked.end !== undefined
      pos = chunked.end ?? data.length
    } else if (lengths.length > 0) {
      const n = Number(lengths[0])
      if (!/^\d+$/.test(lengths[0] ?? '')) violate('a response with an invalid Content-Length', `a ${status}: ${excerpt(lengths[0] ?? '')}`)
      bodyBytes = Math.min(n, data.length - pos)
      complete = bodyBytes === n
      pos += bodyBytes
    } else {
      // Delimited by the close (RFC 9112 §6.3 rule 8).
      bodyBytes = data.length - pos
      complete = serverClosed
      pos = data.length
    }
    responses.push({ status, headers, bodyBytes, complete, header })
    if (!complete) break
    if (/(?:^|,)[ \t]*close[ \t]*(?:,|$)/i.test(header('connection') ?? '') && pos < data.length) {
      violate('bytes after a response that said Connection: close', `after ${responses.map((x) => x.status).join(', ')}: ${excerpt(data.subarray(pos))}`)
      break
    }
  }
  const last = responses[responses.length - 1]
  if (serverClosed && last !== undefined && last.status > 101 && last.status < 200 && pos >= data.length) {
    // RFC 9110 §15.2: a 1xx is interim; the final response must follow it.
    // (100 Continue is left out: a client that stops sending the body it
    // announced has abandoned the request itself.)
    violate('the connection was closed after an interim 1xx response, with no final response', `a ${last.status}`)
  }
  return { responses, finals, violations }
}

/** A chunked body from `start`: where it ends (undefined when cut short), or what is wrong with it. */
function readChunked (data: Buffer, start: number): { bodyBytes: number, end: number | undefined, violation?: string } {
  let pos = start
  let bodyBytes = 0
  for (;;) {
    const eol = data.indexOf(CRLF, pos)
    if (eol === -1) return { bodyBytes, end: undefined }
    const line = data.subarray(pos, eol).toString('latin1')
    const m = CHUNK_SIZE.exec(line)
    if (m === null) return { bodyBytes, end: undefined, violation: `chunk size line ${excerpt(line)}` }
    const size = parseInt(m[1] ?? '0', 16)
    pos = eol + 2
    if (size === 0) {
      // Trailer section, then the empty line.
      for (;;) {
        const t = data.indexOf(CRLF, pos)
        if (t === -1) return { bodyBytes, end: undefined }
        const trailer = data.subarray(pos, t).toString('latin1')
        pos = t + 2
        if (trailer === '') return { bodyBytes, end: pos }
      }
    }
    if (data.length < pos + size + 2) return { bodyBytes: bodyBytes + Math.max(0, Math.min(size, data.length - pos)), end: undefined }
    bodyBytes += size
    pos += size
    if (data[pos] !== 13 || data[pos + 1] !== 10) return { bodyBytes, end: undefined, violation: 'a chunk not followed by CRLF' }
    pos += 2
  }
}
