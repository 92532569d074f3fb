import { isLoopback } from './no-proxy.js'
import type { Egress, ProxyEndpoint } from './egress.js'

/**
 * One way out a PAC file named, in its order: a proxy (`PROXY host:port`,
 * or `HTTPS host:port` for a TLS proxy), or `DIRECT`.
 */
export type PacHop =
  | { readonly kind: 'proxy', readonly url: URL }
  | { readonly kind: 'direct' }

/** What FindProxyForURL answered, parsed. */
export interface PacAnswer {
  /** The hops the sidecar uses, in order, up to and including the first DIRECT. */
  readonly hops: readonly PacHop[]
  /** Entries it cannot use (SOCKS), as written, for the warning that names them. */
  readonly skipped: readonly string[]
  /** The usable answer, normalised (`PROXY a:8080; DIRECT`), for log lines and doctor. */
  readonly text: string
}

/** FindProxyForURL returned something that is not a PAC answer. The message quotes it, at most 100 characters. */
export class PacAnswerError extends Error {
  override name = 'PacAnswerError'
}

/**
 * The keywords of a PAC answer: the Netscape spec's PROXY, SOCKS and DIRECT,
 * with the HTTP, HTTPS, SOCKS4 and SOCKS5 that Chrome and Firefox added. A
 * PROXY without a port is port 80 and an HTTPS one 443, as in Chrome.
 */
const PROXY_KEYWORDS: Readonly<Record<string, { scheme: 'http:' | 'https:' }>> = {
  PROXY: { scheme: 'http:' },
  HTTP: { scheme: 'http:' },
  HTTPS: { scheme: 'https:' }
}
const SOCKS_KEYWORDS = new Set(['SOCKS', 'SOCKS4', 'SOCKS5'])

/**
 * Parse FindProxyForURL's answer: entries separated by `;`, each a keyword
 * and, but for DIRECT, a host:port. SOCKS entries are skipped (the sidecar
 * speaks HTTP to proxies) and listed in `skipped`; entries after the first
 * DIRECT are never reached, and are dropped. An answer that is not a string,
 * is empty, has an unknown keyword or a host:port that does not parse, or
 * names only SOCKS proxies, is a PacAnswerError. Pure.
 */
export function parsePacAnswer (answer: unknown): PacAnswer {
  if (typeof answer !== 'string') {
    throw new PacAnswerError(`FindProxyForURL returned ${answer === null ? 'null' : typeof answer}${typeof answer === 'number' || typeof answer === 'boolean' ? ` (${String(answer)})` : ''}, not a string such as "PROXY proxy.corp:8080; DIRECT"`)
  }
  const entries = answer.split(';').map((e) => e.trim()).filter((e) => e !== '')
  if (entries.length === 0) throw new PacAnswerError('FindProxyForURL returned an empty string; it must return "DIRECT" or "PROXY host:port" entries')
  const hops: PacHop[] = []
  const skipped: string[] = []
  for (const entry of entries) {
    const [word = '', ...rest] = entry.split(/\s+/)
    const keyword = word.toUpperCase()
    if (keyword === 'DIRECT' && rest.length === 0) {
      hops.push({ kind: 'direct' })
      break
    }
    if (SOCKS_KEYWORDS.has(keyword)) {
      skipped.push(entry)
      continue
    }
    const proxy = PROXY_KEYWORDS[keyword]
    if (proxy === undefined || rest.length !== 1) throw new PacAnswerError(`FindProxyForURL returned "${quote(answer)}": "${quote(entry)}" is not DIRECT, PROXY host:port, HTTPS host:port or SOCKS host:port`)
    hops.push({ kind: 'proxy', url: hostPortUrl(rest[0] as string, proxy.scheme, entry, answer) })
  }
  if (hops.length === 0) throw new PacAnswerError(`FindProxyForURL returned "${quote(answer)}", which names only SOCKS proxies: the sidecar speaks HTTP (PROXY, HTTPS) to proxies, or goes DIRECT`)
  return {
    hops,
    skipped,
    text: hops.map((h) => h.kind === 'direct' ? 'DIRECT' : `${h.url.protocol === 'https:' ? 'HTTPS' : 'PROXY'} ${h.url.host}`).join('; ')
  }
}

/** host:port as a proxy URL; without a port, the scheme's default (80, 443) is the PAC's too. */
function hostPortUrl (hostPort: string, scheme: 'http:' | 'https:', entry: string, answer: string): URL {
  let url: URL
  try {
    url = new URL(`${scheme}//${hostPort}`)
  } catch {
    throw new PacAnswerError(`FindProxyForURL returned "${quote(answer)}": "${quote(entry)}" has no valid host:port`)
  }
  if (url.username !== '' || url.password !== '' || url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.hostname === '') {
    throw new PacAnswerError(`FindProxyForURL returned "${quote(answer)}": "${quote(entry)}" must be a bare host:port`)
  }
  return new URL(url.origin)
}

/** At most 100 printable characters of what the script returned. */
function quote (text: string): string {
  const printable = text.replace(/[^\x20-\x7e]/g, '?')
  return printable.length > 100 ? `${printable.slice(0, 100)}…` : printable
}

/** The credentials of the proxies a PAC names: PROXY_USER and the proxy password, as for every proxy URL. */
export interface PacCredentials {
  readonly user: string | undefined
  readonly password: string | undefined
}

/**
 * How `upstream` leaves, by the PAC's answer: its proxies in order (each
 * with PROXY_USER and the password), going direct after them when the
 * answer ends in DIRECT; direct when DIRECT comes first. Loopback is
 * always direct, whatever the PAC says. Pure.
 */
export function pacEgress (upstream: URL, answer: PacAnswer, credentials: PacCredentials): Egress {
  if (isLoopback(upstream)) return { kind: 'direct', reason: 'loopback' }
  const proxies: ProxyEndpoint[] = []
  let thenDirect = false
  for (const hop of answer.hops) {
    if (hop.kind === 'direct') {
      thenDirect = true
      break
    }
    proxies.push({ url: hop.url, username: credentials.user ?? '', password: credentials.user !== undefined ? credentials.password ?? '' : '' })
  }
  const [first, ...fallbacks] = proxies
  if (first === undefined) return { kind: 'direct', reason: 'pac', pac: answer.text }
  return { kind: 'proxy', proxy: first, fallbacks, thenDirect, pac: answer.text }
}

/**
 * No PAC answer for a destination: the PAC file has not been loaded yet,
 * or its script fails for it. Requests get 502 pac_unavailable with this
 * message, and nothing is sent anywhere.
 */
export class PacUnavailable extends Error {
  override name = 'PacUnavailable'
  readonly code = 'SIDECAR_PAC_UNAVAILABLE'
}
