import type { IncomingHttpHeaders } from 'node:http'
import {
  appendAccessToken,
  basicTokenHeader,
  queryHasAccessToken,
  readBasicToken,
  withoutAccessToken
} from '../http/access-token.js'
import { withoutHopByHop } from '../http/hop-by-hop.js'
import { percentDecode } from '../http/percent-decode.js'
import type { Route, TokenPolicy } from '../config/routes.js'

/** What the rewrite reads of a request: Go's `In`. */
export interface IncomingRequest {
  readonly method: string
  /** The raw request-target, byte for byte as received. */
  readonly url: string
  /** Lower-case names, as node:http parses them. */
  readonly headers: IncomingHttpHeaders
}

/** What is sent upstream: Go's `Out`, in undici's terms. */
export interface OutgoingRequest {
  readonly method: string
  /** Origin-form target: the endpoint's prefix joined to the incoming path, plus the query. */
  readonly path: string
  readonly headers: Record<string, string | string[]>
}

/** A request this sidecar refuses, with the status APIcast should see. */
export class RequestError extends Error {
  override name = 'RequestError'
  constructor (readonly statusCode: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message)
  }
}

export type RewriteResult =
  | { readonly ok: true, readonly outgoing: OutgoingRequest }
  | { readonly ok: false, readonly error: RequestError }

/**
 * Headers dropped besides the hop-by-hop ones:
 * - `host`: the upstream's is set below;
 * - `expect`: node:http has already answered `100-continue` to APIcast, and
 *   undici refuses to send it.
 */
const ALSO_DROPPED: ReadonlySet<string> = new Set(['host', 'expect'])

/**
 * The `Allow` of a 405 (RFC 9110 §15.5.6). CONNECT (an open proxy) and
 * TRACE (RFC 9110 §9.3.8: the upstream echoes the request it received, so
 * an Authorization or access_token the rewrite added would come back, the
 * cross-site tracing risk) are refused, as production proxies do; TRACK is
 * IIS's TRACE.
 */
const ALLOWED_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS'

/**
 * Turn a request received on `route`'s listener into the request for its
 * upstream. Pure: it never mutates `incoming`, never does I/O, and refuses
 * (rather than forwards) anything that would make the listener an open proxy
 * or let a token inject a header.
 *
 * Hop-by-hop headers are stripped before the token is placed, so a client's
 * `Connection: authorization` cannot remove the Authorization the rewrite adds.
 */
export function buildUpstreamRequest (incoming: IncomingRequest, route: Route): RewriteResult {
  // A fragment is never part of a request-target (RFC 9112 §3.2): dropped
  // first, as nginx does, or a token appended to the query would follow the
  // `#` and 3scale would never see it.
  const hash = incoming.url.indexOf('#')
  const target = hash === -1 ? incoming.url : incoming.url.slice(0, hash)
  if (incoming.method === 'CONNECT') {
    return refuse(405, 'CONNECT is not supported: this listener is not an open proxy', { allow: ALLOWED_METHODS })
  }
  const expect = incoming.headers.expect
  if (expect !== undefined && expect.trim().toLowerCase() !== '100-continue') {
    // RFC 9110 §10.1.1: an expectation the sidecar cannot meet (node:http
    // has already answered 100-continue itself).
    return refuse(417, 'the Expect header holds an expectation this sidecar cannot meet; only 100-continue is supported')
  }
  if (incoming.method === 'TRACE' || incoming.method === 'TRACK') {
    return refuse(405, `${incoming.method} is not supported: the upstream would echo the request, credentials included, back to the client`, { allow: ALLOWED_METHODS })
  }
  if (target.charCodeAt(0) !== 47 /* '/' */) {
    return refuse(400, `this listener forwards only to ${route.upstream.origin} and accepts origin-form targets (/path?query); it is not an open proxy`)
  }

  const q = target.indexOf('?')
  const rawPath = removeDotSegments(q === -1 ? target : target.slice(0, q))
  if (rawPath instanceof RequestError) return { ok: false, error: rawPath }
  let rawQuery = q === -1 ? '' : target.slice(q + 1)
  const headers = withoutHopByHop(incoming.headers, ALSO_DROPPED)
  headers.host = route.upstream.host

  const placed = placeAccessToken(route.tokenPolicy, incoming.headers.authorization, headers, rawQuery)
  if (!placed.ok) return placed
  rawQuery = placed.rawQuery

  const path = joinPath(route.upstream.pathname, rawPath) + (rawQuery === '' && q === -1 ? '' : '?' + rawQuery)
  return { ok: true, outgoing: { method: incoming.method, path, headers } }
}

function refuse (statusCode: number, message: string, headers?: Record<string, string>): RewriteResult {
  return { ok: false, error: new RequestError(statusCode, message, headers) }
}

/**
 * Join the endpoint's path prefix and the request path without decoding
 * either, so `/a%2Fb` reaches 3scale as `/a%2Fb` (Go's joinURLPath).
 */
export function joinPath (prefix: string, path: string): string {
  if (prefix === '' || prefix === '/') return path
  const base = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
  return path.startsWith('/') ? base + path : base + '/' + path
}

/**
 * Remove the dot-segments of an origin-form path (RFC 3986 §5.2.4) before it
 * is joined to the endpoint's prefix, so `/../../echo` cannot leave
 * `/restricted/area`. `%2e` counts as a dot (RFC 3986 §6.2.2.2: `%2E%2E` is
 * `..` to a normalizing server). Refused with 400, never forwarded:
 * - a path that climbs above its root: there is no way to keep it inside
 *   the prefix that the client meant;
 * - a segment that percent-decodes to `..` beside a `/` or `\` (`..%2f`,
 *   `%2e%2e%5c`): servers that decode or treat `\` as a separator would
 *   climb where this one does not.
 * Every other byte, `%2F` included, stays as received (Go's joinURLPath).
 */
export function removeDotSegments (path: string): string | RequestError {
  if (!path.includes('.') && !path.includes('%') && !path.includes('\\')) return path
  const input = path.split('/') // input[0] is the '' before the leading '/'
  const output: string[] = []
  let changed = false
  for (let i = 1; i < input.length; i++) {
    const segment = input[i] as string
    const dots = dotCount(segment)
    if (dots === 0) {
      if (hidesDotDot(segment)) {
        return new RequestError(400, 'the request path has ".." next to an encoded "/" (%2F) or a "\\" (%5C) inside one segment, which servers resolve differently; the request was not forwarded')
      }
      output.push(segment)
      continue
    }
    changed = true
    if (dots === 2 && output.pop() === undefined) {
      return new RequestError(400, 'the request path climbs above its root with ".." segments; the request was not forwarded')
    }
    // A trailing dot-segment leaves the path ending in '/': /a/b/.. is /a/.
    if (i === input.length - 1) output.push('')
  }
  return changed ? '/' + output.join('/') : path
}

/** 1 for `.`, 2 for `..` (a dot may be written `%2e` or `%2E`), else 0. */
function dotCount (segment: string): 0 | 1 | 2 {
  if (segment.length === 0 || segment.length > 6) return 0
  const dots = segment.includes('%') ? segment.replace(/%2e/gi, '.') : segment
  return dots === '.' ? 1 : dots === '..' ? 2 : 0
}

/** True when the segment, decoded, holds `..` between `/` or `\` and an end. */
function hidesDotDot (segment: string): boolean {
  if (!segment.includes('%') && !segment.includes('\\')) return false
  const decoded = percentDecode(segment)
  return SEPARATOR.test(decoded) && decoded.split(SEPARATOR).includes('..')
}

const SEPARATOR = /[/\\]/

type Placement = { ok: true, rawQuery: string } | { ok: false, error: RequestError }

/**
 * Apply the route's token policy to `headers` (the outgoing copy) and the raw
 * query. The token is read from the incoming Authorization, before any
 * stripping, as Go's Rewrite reads `In` and writes `Out`. An `access_token`
 * already in the query wins; a token from APIcast's Basic userinfo comes
 * next; the sidecar's own token last. A non-Basic Authorization (Bearer…) is
 * not ours and passes unchanged.
 */
function placeAccessToken (
  policy: TokenPolicy,
  authorization: string | undefined,
  headers: Record<string, string | string[]>,
  rawQuery: string
): Placement {
  if (policy.kind === 'passthrough') return { ok: true, rawQuery }
  if (policy.source === 'sidecar') {
    // Only the sidecar's token travels: whatever APIcast sent, Basic or
    // another scheme or a query parameter, is dropped unread.
    delete headers.authorization
    return placeToken(policy, policy.fallbackToken, headers, withoutAccessToken(rawQuery))
  }

  const basic = readBasicToken(authorization)
  if (basic.kind === 'invalid') {
    return { ok: false, error: new RequestError(400, `${basic.reason}; the request was not forwarded`) }
  }
  if (basic.kind === 'other') return { ok: true, rawQuery }

  // APIcast's Basic credentials are consumed here, whatever they held.
  delete headers.authorization
  if (queryHasAccessToken(rawQuery)) return { ok: true, rawQuery }

  // `client`: never lend the sidecar's own token (a shared sidecar).
  const token = basic.kind === 'token' ? basic.token : policy.source === 'either' ? policy.fallbackToken : undefined
  return placeToken(policy, token, headers, rawQuery)
}

function placeToken (policy: { readonly location: 'query' | 'header' }, token: string | undefined, headers: Record<string, string | string[]>, rawQuery: string): Placement {
  if (token === undefined) return { ok: true, rawQuery }
  if (policy.location === 'header') {
    headers.authorization = basicTokenHeader(token)
    return { ok: true, rawQuery }
  }
  return { ok: true, rawQuery: appendAccessToken(rawQuery, token) }
}
