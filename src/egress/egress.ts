import { isLoopback, matchesNoProxy, type NoProxyRule } from './no-proxy.js'
import { percentDecode } from '../http/percent-decode.js'
import { basicAuthorization } from './proxy-auth.js'

/** The proxy variables, in the spellings proxy-from-env reads. */
export const PROXY_VARIABLES = [
  'https_proxy', 'HTTPS_PROXY',
  'http_proxy', 'HTTP_PROXY',
  'all_proxy', 'ALL_PROXY',
  'no_proxy', 'NO_PROXY'
] as const

export type ProxyVariable = (typeof PROXY_VARIABLES)[number]

/** The proxy variables as they are set: raw strings, the input of config's readProxySettings only. */
export type ProxyEnv = Readonly<Partial<Record<ProxyVariable, string>>>

/** A proxy to tunnel through. `url` never holds the credentials. */
export interface ProxyEndpoint {
  readonly url: URL
  readonly username: string
  readonly password: string
}

/**
 * The proxy variables, parsed once by config (config/proxy-settings.ts):
 * what resolveEgress decides from, so no raw proxy string leaves config.
 */
export interface ProxySettings {
  /**
   * The proxy of an https: upstream (https_proxy, HTTPS_PROXY, all_proxy or
   * ALL_PROXY, as proxy-from-env picks), and of an http: one (http_proxy
   * first); undefined: none is set.
   */
  readonly https: ProxyEndpoint | undefined
  readonly http: ProxyEndpoint | undefined
  /** NO_PROXY, parsed (the lower-case spelling wins, as for the proxy variables). */
  readonly noProxy: readonly NoProxyRule[]
}

/**
 * How an upstream is reached: through a proxy and its fallbacks, or
 * direct; or, while PROXY_PAC_URL has not yet given an answer, `pending`
 * (requests get 502 pac_unavailable, and nothing is sent). `pac` is the PAC
 * file's answer the decision came from, for the start-up line and doctor.
 */
export type Egress =
  | {
    readonly kind: 'proxy'
    readonly proxy: ProxyEndpoint
    readonly fallbacks: readonly ProxyEndpoint[]
    /** The PAC's answer ended in DIRECT: after every proxy failed, go direct. */
    readonly thenDirect?: boolean
    readonly pac?: string
  }
  | { readonly kind: 'direct', readonly reason: 'no_proxy_configured' | 'no_proxy_match' | 'loopback' | 'pac', readonly pac?: string }
  | { readonly kind: 'pending', readonly reason: 'pac' }

/**
 * What to do when a proxy URL does not parse: most often a password holding
 * a character that ends the userinfo or the authority (`@ : % # / ?`).
 */
export const PROXY_URL_ENCODING_HINT = 'if the user or password holds @ : % # / ? or a space, percent-encode them (%40 %3A %25 %23 %2F %3F %20), ' +
  'or leave them out of the URL and set PROXY_USER and PROXY_PASSWORD_FILE (a file holding the password as it is)'

/** A malformed proxy URL. The message never contains the URL (it may hold a password). */
export class ProxyUrlError extends Error {
  override name = 'ProxyUrlError'
}

/**
 * Parse a proxy URL as curl and Go do: a value without a scheme means
 * `http://` (proxy-from-env would otherwise take the upstream's scheme and
 * try TLS to a plain proxy), and the user name and password are
 * percent-decoded, so `p%40ss%3Aw%25rd` is the password `p@ss:w%rd`.
 * Each valid escape is decoded even when another `%` starts none: that `%`
 * alone is kept as written, so a raw `p@ss:w0rd%` stays `p@ss:w0rd%`.
 */
export function parseProxyUrl (raw: string): ProxyEndpoint {
  let url: URL
  try {
    url = new URL(withDefaultScheme(raw))
  } catch {
    throw new ProxyUrlError(`is not a valid URL; expected http://[user:password@]host:port; ${PROXY_URL_ENCODING_HINT}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ProxyUrlError(`uses the unsupported scheme ${url.protocol.replace(':', '')}; expected http:// or https://`)
  }
  if (url.hostname === '') {
    throw new ProxyUrlError(`has no host; expected http://[user:password@]host:port; ${PROXY_URL_ENCODING_HINT}`)
  }
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
    // A `#`, `/` or `?` in a raw password ends the authority there.
    throw new ProxyUrlError(`must not have a path, query or fragment; expected http://[user:password@]host:port; ${PROXY_URL_ENCODING_HINT}`)
  }
  const username = percentDecode(url.username)
  const password = percentDecode(url.password)
  const bare = new URL(url.origin)
  return { url: bare, username, password }
}

/** The `Proxy-Authorization: Basic` value for `proxy`, or undefined without credentials. */
export function proxyAuthorization (proxy: ProxyEndpoint): string | undefined {
  if (proxy.username === '' && proxy.password === '') return undefined
  return basicAuthorization(proxy.username, proxy.password)
}

/** A proxy value without a scheme means http://, as in curl and Go. */
export function withDefaultScheme (raw: string): string {
  const value = raw.trim()
  return value.includes('://') ? value : 'http://' + value
}

/**
 * Decide how to reach `upstream`: through which proxy, or directly.
 * `proxies` holds the proxy of each scheme (proxy-from-env's precedence,
 * applied by config) and the NO_PROXY rules, which no-proxy.ts matches in
 * the curl and Go forms proxy-from-env does not know. Loopback is always
 * direct. A proxied route gets `fallbacks` (FALLBACK_PROXIES) after its
 * proxy. Pure: depends only on its arguments, parses nothing, and never
 * reads process.env.
 */
export function resolveEgress (upstream: URL, proxies: ProxySettings, fallbacks: readonly ProxyEndpoint[] = []): Egress {
  if (isLoopback(upstream)) return { kind: 'direct', reason: 'loopback' }
  const proxy = upstream.protocol === 'https:' ? proxies.https : upstream.protocol === 'http:' ? proxies.http : undefined
  if (proxy === undefined) return { kind: 'direct', reason: 'no_proxy_configured' }
  if (matchesNoProxy(upstream, proxies.noProxy)) return { kind: 'direct', reason: 'no_proxy_match' }
  return { kind: 'proxy', proxy, fallbacks }
}

/**
 * What identifies a way out: its proxies in order, their credentials
 * included, and a direct hop after them; compared (a reload, a new PAC
 * decision), used as a cache key, never logged.
 */
export function egressKey (egress: Egress): string {
  if (egress.kind !== 'proxy') return egress.kind
  return JSON.stringify([[egress.proxy, ...egress.fallbacks].map((p) => [p.url.href, p.username, p.password]), egress.thenDirect === true])
}
