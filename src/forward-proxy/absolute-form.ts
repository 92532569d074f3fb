import { isAllowed, parseAbsoluteTarget, type Destination, type ForwardAllow } from '../egress/forward-destination.js'
import { describeRefusal } from '../failures/catalogue.js'
import { withoutHopByHop } from '../http/hop-by-hop.js'
import { RequestError, type IncomingRequest, type OutgoingRequest } from '../forwarding/rewrite.js'

export type AbsoluteFormResult =
  | { readonly ok: true, readonly destination: Destination, readonly outgoing: OutgoingRequest }
  | { readonly ok: false, readonly error: RequestError }

/** Methods the forward proxy serves: CONNECT, and the rest in absolute-form (TRACE and TRACK echo what they got). */
export const FORWARD_PROXY_ALLOWS = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT'

/**
 * Headers dropped besides the hop-by-hop ones (which include every
 * `Proxy-*`, so a Proxy-Authorization of APIcast's never travels on):
 * `host`, set from the request-target as RFC 9112 §3.2.2 requires of a
 * proxy, and `expect`, which node:http has answered already.
 */
const ALSO_DROPPED: ReadonlySet<string> = new Set(['host', 'expect'])

/** `scheme://` at the start of a request-target. */
const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//

/**
 * Turn a request on the forward proxy's listener into the request for its
 * destination. Pure. Only absolute-form `http://` targets (RFC 9112 §3.2.2)
 * to a destination FORWARD_PROXY_ALLOW lists are forwarded: an origin-form
 * target is most often APIcast pointed at the wrong port, and an `https://`
 * one would ask the sidecar to make TLS for the client, which it never
 * does (TLS stays end to end, through CONNECT). The path and query go on
 * byte for byte as they came; the fragment, never part of a request, is
 * dropped.
 */
export function rewriteAbsoluteForm (incoming: IncomingRequest, allow: ForwardAllow): AbsoluteFormResult {
  const hash = incoming.url.indexOf('#')
  const target = hash === -1 ? incoming.url : incoming.url.slice(0, hash)
  if (incoming.method === 'TRACE' || incoming.method === 'TRACK') {
    return refuse(405, `${incoming.method} is not supported: the destination would echo the request back`, 'method_not_allowed', { allow: FORWARD_PROXY_ALLOWS })
  }
  const expect = incoming.headers.expect
  if (expect !== undefined && expect.trim().toLowerCase() !== '100-continue') {
    return refuse(417, 'the Expect header holds an expectation this sidecar cannot meet; only 100-continue is supported', 'expectation_failed')
  }
  const scheme = SCHEME.exec(target)?.[1]?.toLowerCase()
  if (scheme === undefined) {
    return refuse(400, 'this is the sidecar\'s forward proxy: it serves CONNECT host:port and absolute-form http:// requests (HTTPS_PROXY and HTTP_PROXY pointing here); for 3scale\'s portal and backend use their own listeners', 'not_a_proxy_request')
  }
  let url: URL
  try {
    url = new URL(target)
  } catch {
    return refuse(400, 'the request-target is not a valid URL', 'bad_request')
  }
  const parsed = parseAbsoluteTarget(url)
  if (!parsed.ok) return refuse(400, parsed.reason, scheme === 'https' ? 'not_a_proxy_request' : 'bad_request')
  const { destination } = parsed
  if (!isAllowed(destination, allow)) {
    const failure = describeRefusal('destination_not_allowed', { upstream: destination.url, proxy: undefined, timeouts: { connectMs: 0, responseHeadersMs: 0, idleMs: 0 } })
    return refuse(failure.status, `${failure.message}; ${failure.hint}`, failure.code)
  }

  // The path and query as written: after the authority, which ends at the first / or ?.
  const rest = target.slice((SCHEME.exec(target)?.[0].length ?? 0))
  const end = rest.search(/[/?]/)
  const pathAndQuery = end === -1 ? '/' : rest[end] === '?' ? '/' + rest.slice(end) : rest.slice(end)
  const headers = withoutHopByHop(incoming.headers, ALSO_DROPPED)
  headers.host = destination.port === 80 ? destination.authority.slice(0, -':80'.length) : destination.authority
  return { ok: true, destination, outgoing: { method: incoming.method, path: pathAndQuery, headers } }
}

function refuse (statusCode: number, message: string, code: string, headers: Record<string, string> = {}): AbsoluteFormResult {
  return { ok: false, error: new RequestError(statusCode, message, { ...headers, 'x-sidecar-error': code }) }
}
