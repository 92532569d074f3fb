import { isIP } from 'node:net'
import { matchesNoProxy, parseNoProxy, type NoProxyRule } from './no-proxy.js'

/**
 * A destination of the forward proxy (FORWARD_PROXY_PORT), normalised once,
 * so that the allowlist, the egress decision, the CONNECT sent upstream and
 * the log line all see the same name: none of them can be told a different
 * spelling of a host than the one that was checked.
 */
export interface Destination {
  /** Lower case, no trailing dot, IPv4 in dotted decimal, IPv6 compressed, without brackets. */
  readonly host: string
  readonly port: number
  /** `host:port`, IPv6 in brackets: the CONNECT request-target (RFC 9110 §9.3.6) and the log's name. */
  readonly authority: string
  /**
   * `https://authority` (http: for an absolute-form request): the URL the
   * egress rules (NO_PROXY, the proxy variables) and the failure table read.
   */
  readonly url: URL
}

export type DestinationParse =
  | { readonly ok: true, readonly destination: Destination }
  | { readonly ok: false, readonly reason: string }

/**
 * Parse a CONNECT request-target, `host:port` (RFC 9110 §9.3.6: the
 * authority-form, port required), and normalise the host the way the WHATWG
 * URL parser does, as undici and the proxy will: case folded, IDNA to
 * punycode, `%41`-escapes decoded, IPv4 written any way (`0x7f.1`,
 * `2130706433`) as dotted decimal, IPv6 compressed; then a trailing dot
 * dropped (`example.com.` is `example.com` to DNS). Userinfo, a path, a
 * missing or zero port are refused: none belongs in an authority-form target.
 */
export function parseConnectTarget (target: string): DestinationParse {
  const m = /^(\[[^\]/?#@]*\]|[^:/?#@[\]\s]+):(\d{1,5})$/.exec(target)
  if (m === null) return { ok: false, reason: 'the CONNECT target must be host:port (an IPv6 address in brackets), with nothing else' }
  return normalise(m[1] as string, Number(m[2]), 'https:')
}

/**
 * The destination of an absolute-form request (`GET http://host[:port]/path`,
 * RFC 9112 §3.2.2), normalised as parseConnectTarget does. Only http:
 * (an https: URL would ask the sidecar to make TLS for the client, which it
 * does not: TLS stays end to end, through CONNECT).
 */
export function parseAbsoluteTarget (url: URL): DestinationParse {
  if (url.protocol !== 'http:') return { ok: false, reason: `only http:// URLs are forwarded in absolute-form; for ${url.protocol}// use CONNECT (HTTPS_PROXY)` }
  if (url.username !== '' || url.password !== '') return { ok: false, reason: 'the URL must not carry credentials' }
  return normalise(url.hostname, url.port !== '' ? Number(url.port) : 80, 'http:')
}

function normalise (rawHost: string, port: number, scheme: 'https:' | 'http:'): DestinationParse {
  if (!Number.isInteger(port) || port < 1 || port > 65535) return { ok: false, reason: `port ${port} is not 1-65535` }
  let parsed: URL
  try {
    parsed = new URL(`${scheme}//${rawHost}/`)
  } catch {
    return { ok: false, reason: 'the host is not a valid host name or IP address' }
  }
  const host = parsed.hostname.replace(/^\[|\]$/g, '').replace(/\.+$/, '')
  if (host === '' || (parsed.hostname.startsWith('[') && isIP(host) !== 6)) return { ok: false, reason: 'the host is not a valid host name or IP address' }
  const bracketed = isIP(host) === 6 ? `[${host}]` : host
  const authority = `${bracketed}:${port}`
  return { ok: true, destination: { host, port, authority, url: new URL(`${scheme}//${authority}`) } }
}

/** The destinations FORWARD_PROXY_ALLOW lets through: NO_PROXY's rules, read by no-proxy.ts. */
export interface ForwardAllow {
  readonly rules: readonly NoProxyRule[]
  /** The entries as given (or defaulted), for the start-up line. */
  readonly entries: readonly string[]
}

/** A FORWARD_PROXY_ALLOW that cannot be used; the message names the entry. */
export class ForwardAllowError extends Error {
  override name = 'ForwardAllowError'
}

/**
 * Parse FORWARD_PROXY_ALLOW: host patterns with optional ports in the
 * NO_PROXY syntax (`*.3scale.net:443`, `sso.corp.example:443`,
 * `10.0.0.0/8`), matched exactly as NO_PROXY is (a domain covers its
 * subdomains; no port means any port). `*` alone is refused: it would make
 * an open proxy of the sidecar, one that lends the corporate proxy's
 * credentials to whoever reaches its port.
 */
export function parseForwardAllow (value: string): ForwardAllow {
  const entries = value.split(/[\s,]+/).map((e) => e.trim()).filter((e) => e !== '')
  if (entries.length === 0) throw new ForwardAllowError('lists no destination')
  if (entries.some((e) => e === '*')) {
    throw new ForwardAllowError('must not be `*`: that makes an open proxy that lends the corporate proxy\'s credentials to anyone who reaches the port; list the destinations (e.g. *.3scale.net:443,sso.corp.example:443)')
  }
  try {
    return { rules: parseNoProxy(entries.join(',')), entries }
  } catch (err) {
    throw new ForwardAllowError(err instanceof Error ? err.message : String(err))
  }
}

/**
 * The default allowlist: the two endpoints' host:port, so a forward proxy
 * turned on without FORWARD_PROXY_ALLOW reaches only what the routes reach.
 */
export function defaultForwardAllow (endpoints: readonly URL[]): ForwardAllow {
  const entries = [...new Set(endpoints.map((url) => {
    const port = url.port !== '' ? url.port : (url.protocol === 'https:' ? '443' : '80')
    return `${url.hostname.replace(/\.+$/, '').toLowerCase()}:${port}`
  }))]
  return { rules: parseNoProxy(entries.join(',')), entries }
}

/** True when `destination` (already normalised) is allowed. */
export function isAllowed (destination: Destination, allow: ForwardAllow): boolean {
  return matchesNoProxy(destination.url, allow.rules)
}

/**
 * The allowed destinations that name one host and port exactly (no
 * wildcard, domain suffix or range): the ones doctor and /readyz can check.
 * A domain entry also covers its subdomains, but the domain itself is a
 * host APIcast may call, so it is checked as written.
 */
export function plainDestinations (allow: ForwardAllow): Destination[] {
  const out: Destination[] = []
  for (const entry of allow.entries) {
    if (entry.startsWith('*') || entry.startsWith('.') || entry.includes('/')) continue
    const parsed = parseConnectTarget(entry)
    if (parsed.ok) out.push(parsed.destination)
  }
  return out
}
