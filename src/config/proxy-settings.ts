import { getProxyForUrl } from 'proxy-from-env'
import { NoProxyError, parseNoProxy, type NoProxyRule } from '../egress/no-proxy.js'
import {
  PROXY_VARIABLES, parseProxyUrl, ProxyUrlError, withDefaultScheme,
  type ProxyEndpoint, type ProxyEnv, type ProxySettings, type ProxyVariable
} from '../egress/egress.js'

/** PROXY_USER and the proxy password, with the setting the password came from (for the problem line). */
export interface ProxyCredentials {
  readonly user: string | undefined
  readonly password: string | undefined
  readonly passwordSetting: string
}

export interface ProxyInput {
  /** The proxy variables as set; an empty value counts as unset. */
  readonly variables: ProxyEnv
  /** FALLBACK_PROXIES, as set. */
  readonly fallbacks?: string | undefined
  /** The setting a variable's value came from, where not the variable itself: https_proxy from HTTPS_PROXY_FILE. */
  readonly sources?: Readonly<Partial<Record<ProxyVariable, string>>>
  /** Given: applied to every proxy URL (see applyProxyCredentials). */
  readonly credentials?: ProxyCredentials
  /** PROXY_PAC_URL is set: the proxies it names take PROXY_USER and the password too. */
  readonly pac?: boolean
}

export interface ProxyReading {
  readonly proxies: ProxySettings
  /** FALLBACK_PROXIES, parsed, in order. */
  readonly fallbackProxies: readonly ProxyEndpoint[]
}

/**
 * Parse the proxy variables, FALLBACK_PROXIES and the proxy credentials
 * once, into what resolveEgress takes: every proxy URL becomes a
 * ProxyEndpoint and NO_PROXY becomes rules, so nothing downstream parses a
 * proxy string again. Every variable that is set is checked, the ones a
 * route does not use included, and each bad one is a line in `problems`
 * named by its setting, never echoing the value (it may hold a password).
 * Which variable each scheme uses is proxy-from-env's decision (see
 * pickProxyVariables). Takes the variables as a parameter: tests pass
 * plain objects.
 */
export function readProxySettings (input: ProxyInput, problems: string[]): ProxyReading {
  const endpoints: Partial<Record<ProxyVariable, ProxyEndpoint>> = {}
  const noProxy: Partial<Record<ProxyVariable, readonly NoProxyRule[]>> = {}
  for (const name of PROXY_VARIABLES) {
    const value = input.variables[name]
    if (value === undefined || value === '') continue
    try {
      if (isNoProxy(name)) noProxy[name] = parseNoProxy(value)
      else endpoints[name] = parseProxyUrl(value)
    } catch (err) {
      if (err instanceof NoProxyError) problems.push(`${name} ${err.message}`)
      else if (err instanceof ProxyUrlError) problems.push(`${input.sources?.[name] ?? name} ${err.message} (value not shown: it may hold a password)`)
      else throw err
    }
  }
  const fallbackProxies = readFallbackProxies(input.fallbacks, problems)
  const { credentials } = input
  if (credentials !== undefined && (credentials.password !== undefined || credentials.user !== undefined)) {
    applyProxyCredentials(endpoints, fallbackProxies, credentials, input.pac === true, problems)
  }
  const picked = pickProxyVariables(input.variables, Object.keys(endpoints) as ProxyVariable[])
  return {
    proxies: Object.freeze({
      https: picked.https !== undefined ? endpoints[picked.https] : undefined,
      http: picked.http !== undefined ? endpoints[picked.http] : undefined,
      // The lower-case spelling wins, as for the proxy variables.
      noProxy: Object.freeze([...(noProxy.no_proxy ?? noProxy.NO_PROXY ?? [])])
    }),
    fallbackProxies: Object.freeze(fallbackProxies)
  }
}

function isNoProxy (name: ProxyVariable): boolean {
  return name === 'no_proxy' || name === 'NO_PROXY'
}

/**
 * Which of `valid` (proxy variables that parsed) an https: and an http:
 * upstream use, as proxy-from-env decides: the scheme's variable, lower case
 * before upper case, then all_proxy/ALL_PROXY. The project uses
 * proxy-from-env for this rather than a copy of its rules.
 *
 * proxy-from-env reads process.env only: getProxyForUrl takes no
 * environment (its getEnv() reads process.env; 2.1.0 is the latest, and no
 * version takes one). So this function, and nothing else, puts the
 * variables in place of process.env for two synchronous calls and puts the
 * real one back before any other code can run. It runs once per config load
 * (at start and at each secret-file reload), never per request or per
 * resolveEgress call. Two calls decide every route because, with NO_PROXY
 * left out (no-proxy.ts matches it, in more forms), proxy-from-env's answer
 * depends only on the upstream's scheme. Rejected: a copy of its rules (the
 * project's brief says to use it), loading its source into a node:vm
 * context with a fake process (relies on its internals, and the bundled
 * binary has no node_modules to read it from), and a Proxy over
 * process.env (global state for the whole process life).
 *
 * Values are given http:// first, as parseProxyUrl reads them, so
 * proxy-from-env returns them as they are (it would put the upstream's
 * scheme in front) and its answer maps back to its variable.
 */
function pickProxyVariables (variables: ProxyEnv, valid: readonly ProxyVariable[]): { https: ProxyVariable | undefined, http: ProxyVariable | undefined } {
  const scoped: NodeJS.ProcessEnv = {}
  for (const name of valid) scoped[name] = withDefaultScheme(variables[name] ?? '')
  const variableOf = (picked: string): ProxyVariable | undefined => picked === '' ? undefined : valid.find((name) => scoped[name] === picked)
  const saved = process.env
  process.env = scoped
  try {
    // Any host will do (the answer does not depend on it); .invalid is reserved (RFC 2606).
    return { https: variableOf(getProxyForUrl('https://upstream.invalid/')), http: variableOf(getProxyForUrl('http://upstream.invalid/')) }
  } finally {
    process.env = saved
  }
}

/**
 * FALLBACK_PROXIES: comma-separated proxy URLs, tried in order after the
 * proxy from https_proxy (which stays one URL, as other programs parse it).
 */
function readFallbackProxies (value: string | undefined, problems: string[]): ProxyEndpoint[] {
  if (value === undefined) return []
  const out: ProxyEndpoint[] = []
  const entries = value.split(',').map((e) => e.trim()).filter((e) => e !== '')
  entries.forEach((entry, i) => {
    try {
      out.push(parseProxyUrl(entry))
    } catch (err) {
      if (!(err instanceof ProxyUrlError)) throw err
      problems.push(`FALLBACK_PROXIES entry ${i + 1} ${err.message} (value not shown: it may hold a password)`)
    }
  })
  return out
}

/**
 * PROXY_USER and PROXY_PASSWORD / PROXY_PASSWORD_FILE: the credentials of
 * every proxy URL (the proxy variables, FALLBACK_PROXIES), so the URL itself
 * needs no secret. PROXY_USER names the user where a URL names none
 * (`DOMAIN\\user` for NTLM needs no percent-encoding here); the password
 * goes to every URL that then names a user. Both are taken as they are:
 * the endpoints hold decoded credentials.
 */
function applyProxyCredentials (
  endpoints: Partial<Record<ProxyVariable, ProxyEndpoint>>,
  fallbacks: ProxyEndpoint[],
  credentials: ProxyCredentials,
  pac: boolean,
  problems: string[]
): void {
  const { user, password } = credentials
  let applied = 0
  const apply = (proxy: ProxyEndpoint): ProxyEndpoint | undefined => {
    const named = proxy.username === '' && user !== undefined ? { ...proxy, username: user } : proxy
    if (named.username === '') return undefined
    applied++
    return password !== undefined ? { ...named, password } : named
  }
  for (const name of PROXY_VARIABLES) {
    const proxy = endpoints[name]
    if (proxy === undefined) continue
    endpoints[name] = apply(proxy) ?? proxy
  }
  for (let i = 0; i < fallbacks.length; i++) {
    const proxy = fallbacks[i] as ProxyEndpoint
    fallbacks[i] = apply(proxy) ?? proxy
  }
  if (pac) {
    // The proxies of a PAC file are host:port only: PROXY_USER names the user.
    if (user === undefined && password !== undefined) problems.push(`${credentials.passwordSetting} is set, but PROXY_USER is not: the proxies a PAC file (PROXY_PAC_URL) names carry no user, so set PROXY_USER`)
    return
  }
  if (applied === 0 && password !== undefined) {
    problems.push(`${credentials.passwordSetting} is set, but no proxy URL names a user (write it as http://user@proxy:port, or set PROXY_USER)`)
  }
}
