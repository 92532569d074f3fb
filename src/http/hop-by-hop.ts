import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'

/**
 * Headers that describe one connection rather than the message, so they must
 * not be forwarded in either direction (RFC 9110 §7.6.1, RFC 9112 §9.6).
 * Transfer-Encoding is framing of this hop (RFC 9112 §6.1): the next hop frames
 * the body itself. `Proxy-*` names are handled by prefix below.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade'
])

type Headers = IncomingHttpHeaders | OutgoingHttpHeaders | Record<string, string | string[] | undefined>

/** Names listed in `Connection` (lower-case); RFC 9110 §7.6.1 makes them hop-by-hop too. */
function connectionListed (connection: string | string[] | number | undefined): Set<string> | undefined {
  if (connection == null) return undefined
  const values = Array.isArray(connection) ? connection : [String(connection)]
  const listed = new Set<string>()
  for (const value of values) {
    for (const token of String(value).split(',')) {
      const name = token.trim().toLowerCase()
      if (name !== '') listed.add(name)
    }
  }
  return listed
}

/** True when a lower-case header name must not cross this hop. */
export function isHopByHop (name: string): boolean {
  return HOP_BY_HOP.has(name) || name.startsWith('proxy-')
}

/**
 * Copy `headers` without hop-by-hop headers and without the headers the
 * message's own `Connection` names. Keys of the input must be lower-case, as
 * Node and undici give them. The input is never mutated: the caller may still
 * need the original (Go's ReverseProxy clones before it strips).
 *
 * `extra` names further headers to drop (lower-case), for the rewrite's needs.
 */
export function withoutHopByHop (headers: Headers, extra?: ReadonlySet<string>): Record<string, string | string[]> {
  const listed = connectionListed(headers.connection)
  const out: Record<string, string | string[]> = {}
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined) continue
    if (isHopByHop(name)) continue
    if (listed?.has(name) === true) continue
    if (extra?.has(name) === true) continue
    out[name] = typeof value === 'number' ? String(value) : value
  }
  return out
}
