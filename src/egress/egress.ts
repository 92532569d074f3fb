import { getProxyForUrl } from 'proxy-from-env'
import { isLoopback, matchesNoProxy, parseNoProxy } from './no-proxy.js'
import { percentDecode } from '../http/percent-decode.js'
import { basicAuthorization } from './proxy-auth.js'

/** The proxy variables, in the spellings proxy-from-env reads. */
export const PROXY_VARIABLES = [
  'https_proxy', 'HTTPS_PROXY',
  'http_proxy', 'HTTP_PROXY',
  'all_proxy', 'ALL_PROXY',
  'no_proxy', 'NO_PROXY'
] as const

export type ProxyEnv = Readonly<Partial<Record<(typeof PROXY_VARIABLES)[number], string>>>

/** A proxy to tunnel through. `url` never holds the credentials. */
export interface ProxyEndpoint {
  readonly url: URL
  readonly username: string
  readonly password: string
}

export type Egress =
  | { readonly kind: 'proxy', readonly proxy: ProxyEndpoint, readonly fallbacks: readonly ProxyEndpoint[] }
  | { readonly kind: 'direct', readonly reason: 'no_proxy_configured' | 'no_proxy_match' | 'loopback' }

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
 * proxy-from-env picks the proxy variable (precedence of https_proxy,
 * all_proxy and their spellings); NO_PROXY is matched by no-proxy.ts, which
 * knows the curl and Go forms proxy-from-env does not. Loopback is always
 * direct. A proxied route gets `fallbacks` (FALLBACK_PROXIES) after its
 * proxy. Depends only on its arguments.
 */
export function resolveEgress (upstream: URL, env: ProxyEnv, fallbacks: readonly ProxyEndpoint[] = []): Egress {
  if (isLoopback(upstream)) return { kind: 'direct', reason: 'loopback' }
  const proxy = proxyForUrl(upstream, env)
  if (proxy === '') return { kind: 'direct', reason: 'no_proxy_configured' }
  // The lower-case spelling wins, as for the proxy variables.
  const noProxy = env.no_proxy !== undefined && env.no_proxy !== '' ? env.no_proxy : env.NO_PROXY
  if (noProxy !== undefined && matchesNoProxy(upstream, parseNoProxy(noProxy))) {
    return { kind: 'direct', reason: 'no_proxy_match' }
  }
  return { kind: 'proxy', proxy: parseProxyUrl(proxy), fallbacks }
}

/**
 * proxy-from-env reads process.env itself and takes no environment argument.
 * To keep resolveEgress a function of its inputs (so config stays the only
 * reader of the real environment, and tests pass plain objects), the lookup
 * runs against `env` swapped in for the duration of this synchronous call.
 * Nothing else can observe the swap: no await happens inside it.
 */
function proxyForUrl (upstream: URL, env: ProxyEnv): string {
  const saved = process.env
  const scoped: NodeJS.ProcessEnv = {}
  for (const name of PROXY_VARIABLES) {
    const value = env[name]
    if (value === undefined || value === '' || name.toLowerCase() === 'no_proxy') continue
    scoped[name] = withDefaultScheme(value)
  }
  process.env = scoped
  try {
    return getProxyForUrl(upstream.href)
  } finally {
    process.env = saved
  }
}
