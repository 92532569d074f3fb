import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs'
import { resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'
import { bool, customCleanEnv, makeValidator, str, EnvError, EnvMissingError } from 'envalid'
import { hasControlCharacter } from '../http/access-token.js'
import { SetupError } from './setup-error.js'
import { endpointOriginFix } from '../failures/catalogue.js'
import type { TrustSettings } from '../tls/trust-store.js'
import type { ProxyAuthScheme } from '../egress/auth-negotiation.js'
import { resolveEgress, type ProxyEndpoint, type ProxySettings } from '../egress/egress.js'
import { readProxySettings } from './proxy-settings.js'
import type { PacSource } from '../egress/pac-source.js'
import type { PacCredentials } from '../egress/pac-answer.js'
import { defaultForwardAllow, ForwardAllowError, parseForwardAllow, type ForwardAllow } from '../egress/forward-destination.js'

export type AccessTokenLocation = 'query' | 'header'
/**
 * PORTAL_TOKEN_SOURCE, whose token a portal request carries:
 * - `either`: APIcast's, else the sidecar's own (a sidecar in APIcast's pod);
 * - `client`: only APIcast's; the sidecar never lends its own (a sidecar
 *   shared by several gateways behind a Service);
 * - `sidecar`: always the sidecar's; any credentials APIcast sent are dropped.
 */
export type PortalTokenSource = 'either' | 'client' | 'sidecar'
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

export interface Timeouts {
  /** TCP connect to the proxy or upstream, the CONNECT reply, and the TLS handshake, each. */
  readonly connectMs: number
  /** From the request being sent to the upstream's response headers. */
  readonly responseHeadersMs: number
  /** Longest silence while a response body streams. */
  readonly idleMs: number
  /** How long a pooled tunnel may sit unused before it is closed. */
  readonly keepAliveMs: number
  /** How long in-flight requests may run on after SIGTERM. */
  readonly shutdownGraceMs: number
}

export interface KerberosSettings {
  /** PROXY_KRB5_SPN: the proxy's service principal, for a proxy behind an alias; undefined: HTTP@ the host in the proxy URL. */
  readonly spn: string | undefined
  /** PROXY_KRB5_PRINCIPAL: the client principal, when the keytab or cache holds several. */
  readonly principal: string | undefined
  /** KRB5_CLIENT_KTNAME: a client keytab (GSSAPI gets and renews tickets from it). */
  readonly keytab: string | undefined
  /** KRB5CCNAME: a ticket cache, from kinit. */
  readonly ccache: string | undefined
  /** KRB5_CONFIG: krb5.conf. */
  readonly krb5Config: string | undefined
}

export interface Config {
  readonly portal: {
    /** Without userinfo: the token, if any, is in `token`. */
    readonly endpoint: URL
    readonly token: string | undefined
    /** Where `token` came from, for the start-up line. */
    readonly tokenSource: 'ACCESS_TOKEN_FILE' | 'THREESCALE_PORTAL_ENDPOINT' | undefined
    /** PORTAL_TOKEN_SOURCE: whose token travels. */
    readonly tokenFrom: PortalTokenSource
    readonly listenPort: number
  }
  readonly backend: {
    readonly endpoint: URL
    readonly listenPort: number
  }
  readonly listenAddress: string
  /** Admin listener (/healthz, /readyz, /metrics); never forwarded. */
  readonly admin: { readonly address: string, readonly port: number, readonly readinessCacheMs: number }
  readonly accessTokenLocation: AccessTokenLocation
  readonly logLevel: LogLevel
  readonly timeouts: Timeouts
  /** Upper bound of pooled connections (tunnels) per upstream. */
  readonly maxConnectionsPerUpstream: number
  /** Further proxies, in order, used when the proxy in use fails (FALLBACK_PROXIES). */
  readonly fallbackProxies: readonly ProxyEndpoint[]
  /** How long a failed proxy is skipped before it is tried again. */
  readonly failoverBackoffMs: number
  /** PROXY_AUTH_SCHEME: `auto` answers the proxy's challenge; `basic`, `digest` or `ntlm` forces one. */
  readonly proxyAuthScheme: ProxyAuthScheme
  /** PROXY_AUTH_BACKOFF_MS: how long credentials a proxy refused are not sent again (lockout protection). */
  readonly proxyAuthBackoffMs: number
  /**
   * Negotiate (Kerberos): on when MIT's KRB5_CLIENT_KTNAME or KRB5CCNAME
   * names credentials, or PROXY_AUTH_SCHEME=negotiate; undefined: off.
   * GSSAPI reads those variables (and KRB5_CONFIG) itself.
   */
  readonly kerberos: KerberosSettings | undefined
  /**
   * Last good portal configuration responses, served when the portal cannot
   * be reached. undefined when STALE_CONFIG_MAX_AGE=0.
   */
  readonly staleConfig: { readonly maxAgeMs: number, readonly maxBytes: number, readonly dir: string | undefined } | undefined
  /** Requests one listener forwards at once; past it, 503 at once. */
  readonly maxConcurrentRequests: number
  /** Limits on APIcast's side of a listener: slow or stuck clients. */
  readonly client: {
    readonly headersTimeoutMs: number
    readonly requestTimeoutMs: number
    /** Longest a client may leave a response unread before it is cut off (nginx's send_timeout). */
    readonly sendTimeoutMs: number
  }
  /**
   * The proxy variables (https_proxy, HTTPS_PROXY_FILE, http_proxy,
   * all_proxy, NO_PROXY), parsed: the proxy of each upstream scheme, with
   * PROXY_USER and the password applied, and the NO_PROXY rules.
   */
  readonly proxies: ProxySettings
  /**
   * PROXY_PAC_URL: when set, the PAC file decides every destination's
   * proxies (in place of the proxy variables, NO_PROXY and
   * FALLBACK_PROXIES); loopback stays direct. undefined: off.
   */
  readonly pac: PacSettings | undefined
  /**
   * The forward proxy for APIcast's other outbound calls (OIDC, JWKS,
   * introspection): a listener on listenAddress that opens CONNECT tunnels
   * to allowed destinations. undefined unless FORWARD_PROXY_PORT is set.
   */
  readonly forwardProxy: ForwardProxySettings | undefined
  /**
   * Files secrets were read from (HTTPS_PROXY_FILE, PROXY_PASSWORD_FILE,
   * ACCESS_TOKEN_FILE): watched, and read again when they change.
   */
  readonly secretFiles: ReadonlyArray<{ readonly setting: string, readonly path: string }>
  readonly tls: {
    readonly trust: TrustSettings
    /** false only by the explicit UPSTREAM_TLS_VERIFY=false. */
    readonly verifyUpstream: boolean
    /** Client certificate for mutual TLS with an on-premise 3scale. */
    readonly upstreamClient: { readonly certFile: string, readonly keyFile: string } | undefined
    /**
     * PROXY_TLS_CERT/KEY: the client certificate presented to an https://
     * proxy that requires one (mutual TLS to the proxy; never to 3scale).
     */
    readonly proxyClient: { readonly certFile: string, readonly keyFile: string } | undefined
    /** Serve the listeners over HTTPS. */
    readonly listen: { readonly certFile: string, readonly keyFile: string } | undefined
  }
}

/** PROXY_PAC_URL: the PAC file that decides each destination's proxies. */
export interface PacSettings {
  readonly source: PacSource
  /** PROXY_PAC_REFRESH_S, in ms. */
  readonly refreshMs: number
  /** PROXY_USER and the proxy password, for every proxy the PAC names. */
  readonly credentials: PacCredentials
}

export interface ForwardProxySettings {
  readonly port: number
  /** FORWARD_PROXY_ALLOW, or the two endpoints' host:port. */
  readonly allow: ForwardAllow
  /** Tunnels open or opening at once; past it, 503. */
  readonly maxTunnels: number
  /** A tunnel with no byte either way for this long is closed. */
  readonly idleMs: number
}

/** Every problem found in the environment, one line each, none echoing a secret. */
export class ConfigError extends SetupError {
  override name = 'ConfigError'
  constructor (problems: readonly string[]) {
    super('invalid configuration', problems)
  }
}

/**
 * An http(s) URL. The message never contains the input: an endpoint may carry
 * an access token as userinfo.
 */
const endpointUrl = makeValidator<URL>((input) => {
  let url: URL
  try {
    url = new URL(input.trim())
  } catch {
    throw new EnvError('is not a valid URL; expected https://host[:port][/path] (value not shown: it may hold a token)')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new EnvError(`must be an http:// or https:// URL, not ${url.protocol.replace(':', '')}://`)
  }
  if (url.search !== '' || url.hash !== '') {
    throw new EnvError('must not have a query or fragment')
  }
  return url
})

/** A TCP port; 0 asks the OS for a free one (used by tests). */
const listenPort = makeValidator<number>((input) => {
  const n = Number(input)
  if (!/^\d+$/.test(input.trim()) || !Number.isInteger(n) || n < 0 || n > 65535) {
    throw new EnvError(`"${input}" is not a port number (0-65535)`)
  }
  return n
})

const wholeNumber = makeValidator<number>((input) => {
  const n = Number(input)
  if (!/^\d+$/.test(input.trim()) || !Number.isSafeInteger(n)) {
    throw new EnvError(`"${input}" is not a whole number (0 or more)`)
  }
  return n
})

const positiveInt = makeValidator<number>((input) => {
  const n = Number(input)
  if (!/^\d+$/.test(input.trim()) || !Number.isSafeInteger(n) || n < 1) {
    throw new EnvError(`"${input}" is not a positive whole number`)
  }
  return n
})

/** One of a fixed set of words, compared case-insensitively. */
function oneOf<T extends string> (choices: readonly T[]) {
  return makeValidator<T>((input) => {
    const value = input.trim().toLowerCase()
    const found = choices.find((c) => c === value)
    if (found === undefined) throw new EnvError(`"${input}" is not one of: ${choices.join(', ')}`)
    return found
  })
}

const SPEC = {
  THREESCALE_PORTAL_ENDPOINT: endpointUrl({
    desc: 'the 3scale admin portal URL, optionally with the access token as userinfo',
    example: 'https://TOKEN@acme-admin.3scale.net'
  }),
  BACKEND_ENDPOINT_OVERRIDE: endpointUrl({ default: new URL('https://su1.3scale.net') }),
  PORTAL_LISTEN_PORT: listenPort({ default: 9090 }),
  BACKEND_LISTEN_PORT: listenPort({ default: 9091 }),
  LISTEN_ADDRESS: str({ default: '127.0.0.1' }),
  ADMIN_LISTEN_PORT: listenPort({ default: 9092 }),
  ADMIN_LISTEN_ADDRESS: str({ default: undefined }),
  READINESS_CACHE_MS: positiveInt({ default: 5_000 }),
  ACCESS_TOKEN_LOCATION: oneOf<AccessTokenLocation>(['query', 'header'])({ default: 'query' }),
  PORTAL_TOKEN_SOURCE: oneOf<PortalTokenSource>(['either', 'client', 'sidecar'])({ default: undefined }),
  LOG_LEVEL: oneOf<LogLevel>(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])({ default: 'info' }),
  CONNECT_TIMEOUT_MS: positiveInt({ default: 10_000 }),
  RESPONSE_HEADERS_TIMEOUT_MS: positiveInt({ default: 60_000 }),
  IDLE_TIMEOUT_MS: positiveInt({ default: 60_000 }),
  UPSTREAM_KEEPALIVE_MS: positiveInt({ default: 30_000 }),
  UPSTREAM_MAX_CONNECTIONS: positiveInt({ default: 64 }),
  FALLBACK_PROXIES: str({ default: undefined }),
  PROXY_PAC_URL: str({ default: undefined }),
  PROXY_PAC_REFRESH_S: positiveInt({ default: 300 }),
  PROXY_FAILOVER_BACKOFF_MS: positiveInt({ default: 30_000 }),
  PROXY_AUTH_SCHEME: oneOf<ProxyAuthScheme>(['auto', 'basic', 'digest', 'ntlm', 'negotiate'])({ default: 'auto' }),
  PROXY_KRB5_SPN: str({ default: undefined }),
  PROXY_KRB5_PRINCIPAL: str({ default: undefined }),
  KRB5_CLIENT_KTNAME: str({ default: undefined }),
  KRB5CCNAME: str({ default: undefined }),
  KRB5_CONFIG: str({ default: undefined }),
  PROXY_AUTH_BACKOFF_MS: positiveInt({ default: 60_000 }),
  PROXY_USER: str({ default: undefined }),
  PROXY_PASSWORD: str({ default: undefined }),
  SHUTDOWN_GRACE_MS: positiveInt({ default: 10_000 }),
  STALE_CONFIG_MAX_AGE: wholeNumber({ default: 86_400 }),
  STALE_CONFIG_MAX_BYTES: positiveInt({ default: 32 * 1024 * 1024 }),
  STALE_CONFIG_DIR: str({ default: undefined }),
  MAX_CONCURRENT_REQUESTS: positiveInt({ default: 1024 }),
  CLIENT_HEADERS_TIMEOUT_MS: positiveInt({ default: 10_000 }),
  CLIENT_REQUEST_TIMEOUT_MS: positiveInt({ default: 30_000 }),
  CLIENT_SEND_TIMEOUT_MS: positiveInt({ default: 60_000 }),
  CA_BUNDLE: str({ default: undefined }),
  SSL_CERT_FILE: str({ default: undefined }),
  SSL_CERT_DIR: str({ default: undefined }),
  NODE_EXTRA_CA_CERTS: str({ default: undefined }),
  UPSTREAM_TLS_VERIFY: bool({ default: true }),
  UPSTREAM_TLS_CERT: str({ default: undefined }),
  UPSTREAM_TLS_KEY: str({ default: undefined }),
  PROXY_TLS_CERT: str({ default: undefined }),
  PROXY_TLS_KEY: str({ default: undefined }),
  LISTEN_TLS_CERT: str({ default: undefined }),
  LISTEN_TLS_KEY: str({ default: undefined }),
  HTTPS_PROXY_FILE: str({ default: undefined }),
  PROXY_PASSWORD_FILE: str({ default: undefined }),
  ACCESS_TOKEN_FILE: str({ default: undefined }),
  FORWARD_PROXY_PORT: listenPort({ default: undefined }),
  FORWARD_PROXY_ALLOW: str({ default: undefined }),
  FORWARD_PROXY_MAX_TUNNELS: positiveInt({ default: 256 }),
  FORWARD_PROXY_IDLE_TIMEOUT_MS: positiveInt({ default: 300_000 })
}

/** Reads a secret file; injected so reloads and tests read the same way. */
export type ReadSecret = (path: string) => string

const readSecretFile: ReadSecret = (path) => readFileSync(path, 'utf8')

/** The settings table the README documents; kept next to the spec it describes. */
export const SETTING_NAMES = Object.keys(SPEC)

/**
 * Validate `env` and return the frozen typed config, or throw ConfigError
 * listing every problem at once. Takes the environment as a parameter (tests
 * pass plain objects) and never exits the process: only main does that.
 * An empty variable counts as unset, as `docker run -e NAME=` users expect.
 * At start, settings.ts also reads the TLS files in the same round.
 */
export function loadConfig (env: Readonly<Record<string, string | undefined>>, readSecret: ReadSecret = readSecretFile): Config {
  const reading = readConfig(env, readSecret)
  if (!reading.ok) throw new ConfigError(reading.problems)
  return reading.config
}

/**
 * The config, or every problem found, with the TLS settings as far as they
 * could be read either way: so the TLS files they name are checked in the
 * same round as the environment, not only once it is fixed.
 */
export type ConfigReading =
  | { readonly ok: true, readonly config: Config }
  | { readonly ok: false, readonly problems: readonly string[], readonly tls: Config['tls'] }

/** loadConfig without the throw; see ConfigReading. */
export function readConfig (env: Readonly<Record<string, string | undefined>>, readSecret: ReadSecret = readSecretFile): ConfigReading {
  const present: Record<string, string> = {}
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && value !== '') present[name] = value
  }

  const problems: string[] = []
  // customCleanEnv with an identity middleware: the default strict proxy
  // would throw on reading a variable that failed validation, and every
  // remaining check below must still run so all problems are reported at once.
  const cleaned = customCleanEnv(present, SPEC, (env) => env, {
    reporter: ({ errors }) => {
      for (const [name, error] of Object.entries(errors)) {
        if (error === undefined) continue
        problems.push(error instanceof EnvMissingError
          ? `${name} is required: ${error.message}`
          : `${name} ${error.message}`)
      }
    }
  })

  const secretFiles: Array<{ setting: string, path: string }> = []
  const secret = (setting: string, path: string | undefined): string | undefined => {
    if (path === undefined) return undefined
    secretFiles.push({ setting, path })
    return readSecretValue(setting, path, readSecret, problems)
  }
  const proxyFromFile = secret('HTTPS_PROXY_FILE', cleaned.HTTPS_PROXY_FILE)
  const proxyPassword = secret('PROXY_PASSWORD_FILE', cleaned.PROXY_PASSWORD_FILE)
  const tokenFromFile = secret('ACCESS_TOKEN_FILE', cleaned.ACCESS_TOKEN_FILE)
  if (tokenFromFile !== undefined && hasControlCharacter(tokenFromFile)) {
    problems.push(`ACCESS_TOKEN_FILE: the token in ${cleaned.ACCESS_TOKEN_FILE ?? ''} contains control characters`)
  }

  const portal = cleaned.THREESCALE_PORTAL_ENDPOINT as URL | undefined
  const backend = cleaned.BACKEND_ENDPOINT_OVERRIDE as URL | undefined
  const userinfoToken = portal !== undefined ? takeUserinfoToken(portal, problems) : undefined
  if (portal !== undefined) checkPortalPath(portal, problems)
  const token = tokenFromFile ?? userinfoToken
  if (backend !== undefined && (backend.username !== '' || backend.password !== '')) {
    problems.push('BACKEND_ENDPOINT_OVERRIDE must not contain credentials: 3scale backend calls carry theirs in the query')
  }
  const ports: Array<[string, number | undefined]> = [['PORTAL_LISTEN_PORT', cleaned.PORTAL_LISTEN_PORT], ['BACKEND_LISTEN_PORT', cleaned.BACKEND_LISTEN_PORT], ['ADMIN_LISTEN_PORT', cleaned.ADMIN_LISTEN_PORT], ['FORWARD_PROXY_PORT', cleaned.FORWARD_PROXY_PORT]]
  for (let i = 0; i < ports.length; i++) {
    for (let j = i + 1; j < ports.length; j++) {
      const [a, pa] = ports[i] as [string, number | undefined]
      const [b, pb] = ports[j] as [string, number | undefined]
      if (pa !== undefined && pa !== 0 && pa === pb) problems.push(`${a} and ${b} are both ${pa}; each listener needs its own port`)
    }
  }
  if (cleaned.PROXY_PASSWORD_FILE !== undefined && cleaned.PROXY_PASSWORD !== undefined) {
    problems.push('PROXY_PASSWORD and PROXY_PASSWORD_FILE are both set; keep one (the file keeps the password out of the environment)')
  }
  const { proxies, fallbackProxies } = readProxySettings({
    variables: proxyFromFile !== undefined ? { ...present, https_proxy: proxyFromFile } : present,
    sources: proxyFromFile !== undefined ? { https_proxy: 'HTTPS_PROXY_FILE' } : {},
    fallbacks: cleaned.FALLBACK_PROXIES,
    credentials: {
      user: cleaned.PROXY_USER,
      password: proxyPassword ?? cleaned.PROXY_PASSWORD,
      passwordSetting: proxyPassword !== undefined ? 'PROXY_PASSWORD_FILE' : 'PROXY_PASSWORD'
    },
    pac: cleaned.PROXY_PAC_URL !== undefined
  }, problems)
  const pacSource = cleaned.PROXY_PAC_URL !== undefined ? readPacSource(cleaned.PROXY_PAC_URL, problems) : undefined
  const upstreamClient = pairOfFiles('UPSTREAM_TLS_CERT', cleaned.UPSTREAM_TLS_CERT, 'UPSTREAM_TLS_KEY', cleaned.UPSTREAM_TLS_KEY, problems)
  const proxyClient = pairOfFiles('PROXY_TLS_CERT', cleaned.PROXY_TLS_CERT, 'PROXY_TLS_KEY', cleaned.PROXY_TLS_KEY, problems)
  if (proxyClient !== undefined) {
    // With a PAC, its HTTPS entries are the TLS proxies: known only once it is fetched.
    if (cleaned.PROXY_PAC_URL === undefined) checkTlsProxy([proxies.https, proxies.http, ...fallbackProxies], problems)
    // Watched like the secret files: a rotated Secret is used for the next
    // connection to the proxy, and ends a back-off (sidecar.ts reads the pair).
    secretFiles.push({ setting: 'PROXY_TLS_CERT', path: proxyClient.certFile }, { setting: 'PROXY_TLS_KEY', path: proxyClient.keyFile })
  }
  const listenTls = pairOfFiles('LISTEN_TLS_CERT', cleaned.LISTEN_TLS_CERT, 'LISTEN_TLS_KEY', cleaned.LISTEN_TLS_KEY, problems)
  if (cleaned.STALE_CONFIG_DIR !== undefined) checkWritableDir('STALE_CONFIG_DIR', cleaned.STALE_CONFIG_DIR, problems)
  if (cleaned.CLIENT_HEADERS_TIMEOUT_MS !== undefined && cleaned.CLIENT_REQUEST_TIMEOUT_MS !== undefined &&
      cleaned.CLIENT_HEADERS_TIMEOUT_MS > cleaned.CLIENT_REQUEST_TIMEOUT_MS) {
    problems.push(`CLIENT_HEADERS_TIMEOUT_MS (${cleaned.CLIENT_HEADERS_TIMEOUT_MS}) must not exceed CLIENT_REQUEST_TIMEOUT_MS (${cleaned.CLIENT_REQUEST_TIMEOUT_MS}): the headers are part of the request`)
  }

  if (cleaned.PROXY_PAC_URL === undefined) checkAbsoluteFormProxies([['THREESCALE_PORTAL_ENDPOINT', portal], ['BACKEND_ENDPOINT_OVERRIDE', backend]], proxies, fallbackProxies, problems)
  const forwardAllow = readForwardAllow(cleaned.FORWARD_PROXY_ALLOW, cleaned.FORWARD_PROXY_PORT, problems)
  const kerberos = readKerberos(cleaned, problems)

  checkTokenExposure(cleaned.LISTEN_ADDRESS, cleaned.PORTAL_TOKEN_SOURCE, token !== undefined ? (tokenFromFile !== undefined ? 'ACCESS_TOKEN_FILE' : 'THREESCALE_PORTAL_ENDPOINT') : undefined, problems)

  const tls = Object.freeze({
    trust: Object.freeze({
      sslCertFile: cleaned.SSL_CERT_FILE,
      sslCertDir: cleaned.SSL_CERT_DIR,
      nodeExtraCaCerts: cleaned.NODE_EXTRA_CA_CERTS,
      caBundle: cleaned.CA_BUNDLE
    }),
    verifyUpstream: cleaned.UPSTREAM_TLS_VERIFY,
    upstreamClient,
    proxyClient,
    listen: listenTls
  })

  if (problems.length > 0 || portal === undefined || backend === undefined) {
    return { ok: false, problems, tls }
  }

  const config: Config = Object.freeze({
    portal: Object.freeze({
      endpoint: withoutUserinfo(portal),
      token,
      tokenSource: tokenFromFile !== undefined ? 'ACCESS_TOKEN_FILE' as const : userinfoToken !== undefined ? 'THREESCALE_PORTAL_ENDPOINT' as const : undefined,
      tokenFrom: cleaned.PORTAL_TOKEN_SOURCE ?? 'either',
      listenPort: cleaned.PORTAL_LISTEN_PORT
    }),
    backend: Object.freeze({ endpoint: backend, listenPort: cleaned.BACKEND_LISTEN_PORT }),
    listenAddress: cleaned.LISTEN_ADDRESS,
    admin: Object.freeze({
      address: cleaned.ADMIN_LISTEN_ADDRESS ?? cleaned.LISTEN_ADDRESS,
      port: cleaned.ADMIN_LISTEN_PORT,
      readinessCacheMs: cleaned.READINESS_CACHE_MS
    }),
    accessTokenLocation: cleaned.ACCESS_TOKEN_LOCATION,
    logLevel: cleaned.LOG_LEVEL,
    timeouts: Object.freeze({
      connectMs: cleaned.CONNECT_TIMEOUT_MS,
      responseHeadersMs: cleaned.RESPONSE_HEADERS_TIMEOUT_MS,
      idleMs: cleaned.IDLE_TIMEOUT_MS,
      keepAliveMs: cleaned.UPSTREAM_KEEPALIVE_MS,
      shutdownGraceMs: cleaned.SHUTDOWN_GRACE_MS
    }),
    maxConnectionsPerUpstream: cleaned.UPSTREAM_MAX_CONNECTIONS,
    fallbackProxies,
    failoverBackoffMs: cleaned.PROXY_FAILOVER_BACKOFF_MS,
    proxyAuthScheme: cleaned.PROXY_AUTH_SCHEME,
    proxyAuthBackoffMs: cleaned.PROXY_AUTH_BACKOFF_MS,
    kerberos,
    staleConfig: cleaned.STALE_CONFIG_MAX_AGE > 0
      ? Object.freeze({ maxAgeMs: cleaned.STALE_CONFIG_MAX_AGE * 1000, maxBytes: cleaned.STALE_CONFIG_MAX_BYTES, dir: cleaned.STALE_CONFIG_DIR })
      : undefined,
    maxConcurrentRequests: cleaned.MAX_CONCURRENT_REQUESTS,
    client: Object.freeze({
      headersTimeoutMs: cleaned.CLIENT_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: cleaned.CLIENT_REQUEST_TIMEOUT_MS,
      sendTimeoutMs: cleaned.CLIENT_SEND_TIMEOUT_MS
    }),
    proxies,
    pac: pacSource !== undefined
      ? Object.freeze({
        source: pacSource,
        refreshMs: cleaned.PROXY_PAC_REFRESH_S * 1000,
        credentials: Object.freeze({ user: cleaned.PROXY_USER, password: proxyPassword ?? cleaned.PROXY_PASSWORD })
      })
      : undefined,
    forwardProxy: cleaned.FORWARD_PROXY_PORT !== undefined
      ? Object.freeze({
        port: cleaned.FORWARD_PROXY_PORT,
        allow: forwardAllow ?? defaultForwardAllow([withoutUserinfo(portal), backend]),
        maxTunnels: cleaned.FORWARD_PROXY_MAX_TUNNELS,
        idleMs: cleaned.FORWARD_PROXY_IDLE_TIMEOUT_MS
      })
      : undefined,
    // A keytab or ticket cache replaced (a rotated Secret, a new kinit) is
    // watched like the secret files: its change ends a back-off at once.
    secretFiles: Object.freeze([...secretFiles, ...kerberosFiles(kerberos)]),
    tls
  })
  return { ok: true, config }
}

/**
 * Admin portal pages, as a browser's address bar shows them: the dashboard
 * (`/p/admin/dashboard`), the admin area (`/admin`, and the API's own
 * `/admin/api/…` URLs), the integration pages (`/apiconfig/…`) and the
 * accounts (`/buyers/…`). Pasted as the endpoint, each becomes a prefix of
 * every API path (`/p/admin/dashboard/admin/api/services.json`), which 3scale
 * answers with 404; doctor then blamed the token (issue 16).
 */
const PORTAL_PAGE = /^\/(p|admin|apiconfig|buyers)(\/|$)/i

function checkPortalPath (portal: URL, problems: string[]): void {
  if (!PORTAL_PAGE.test(portal.pathname)) return
  problems.push(`THREESCALE_PORTAL_ENDPOINT has the path ${portal.pathname}, a page of the admin portal as a browser shows it, not where its API is: ${endpointOriginFix(portal)}`)
}

/** The token in `https://TOKEN@host` (or `https://:TOKEN@host`), percent-decoded. */
function takeUserinfoToken (portal: URL, problems: string[]): string | undefined {
  const raw = portal.username !== '' ? portal.username : portal.password
  if (raw === '') return undefined
  let token: string
  try {
    token = decodeURIComponent(raw)
  } catch {
    token = raw
  }
  if (hasControlCharacter(token)) {
    problems.push('THREESCALE_PORTAL_ENDPOINT holds an access token with control characters')
    return undefined
  }
  return token
}

/**
 * PROXY_PAC_URL: an http(s) URL (fetched directly, without credentials),
 * a file:// URL, or a path. A file that is not there is a problem at start
 * (a ConfigMap not mounted); an http(s) one that cannot be fetched is tried
 * again with back-off while the sidecar runs.
 */
function readPacSource (value: string, problems: string[]): PacSource | undefined {
  const raw = value.trim()
  let source: PacSource
  if (/^https?:\/\//i.test(raw)) {
    let url: URL
    try {
      url = new URL(raw)
    } catch {
      problems.push('PROXY_PAC_URL is not a valid URL; expected http://host/proxy.pac, https://host/proxy.pac, file:///path/proxy.pac or a path')
      return undefined
    }
    if (url.username !== '' || url.password !== '') {
      problems.push('PROXY_PAC_URL must not hold credentials: the PAC file is fetched without any (value not shown)')
      return undefined
    }
    source = { kind: 'url', url }
  } else if (/^file:\/\//i.test(raw)) {
    try {
      source = { kind: 'file', path: fileURLToPath(raw) }
    } catch {
      problems.push('PROXY_PAC_URL is not a valid file:// URL; expected file:///path/proxy.pac')
      return undefined
    }
  } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(raw)) {
    problems.push(`PROXY_PAC_URL uses the scheme ${raw.slice(0, raw.indexOf(':'))}; expected http://, https://, file:// or a path`)
    return undefined
  } else {
    source = { kind: 'file', path: resolvePath(raw) }
  }
  if (source.kind === 'file' && !existsSync(source.path)) {
    problems.push(`PROXY_PAC_URL: the PAC file ${source.path} does not exist (is its ConfigMap mounted?)`)
    return undefined
  }
  return source
}

/** FORWARD_PROXY_ALLOW, parsed; undefined when unset (the endpoints' host:port apply). */
function readForwardAllow (value: string | undefined, port: number | undefined, problems: string[]): ForwardAllow | undefined {
  if (value === undefined) return undefined
  if (port === undefined) {
    problems.push('FORWARD_PROXY_ALLOW is set, but FORWARD_PROXY_PORT is not: set FORWARD_PROXY_PORT to turn the forward proxy on')
    return undefined
  }
  try {
    return parseForwardAllow(value)
  } catch (err) {
    if (!(err instanceof ForwardAllowError)) throw err
    problems.push(`FORWARD_PROXY_ALLOW ${err.message}`)
    return undefined
  }
}

/** A directory the sidecar can write to, or a problem naming why not. */
function checkWritableDir (setting: string, path: string, problems: string[]): void {
  try {
    if (!statSync(path).isDirectory()) {
      problems.push(`${setting} ${path} is not a directory`)
      return
    }
    accessSync(path, constants.W_OK | constants.X_OK)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    problems.push(code === 'ENOENT'
      ? `${setting} ${path} does not exist; create it (an emptyDir volume in a pod) or unset ${setting} to keep the configuration in memory only`
      : `${setting} ${path} is not writable by this user (${code ?? String(err)})`)
  }
}

/**
 * PROXY_TLS_CERT/KEY with no https:// proxy to present them to is a
 * problem, not a warning: the certificate would never be sent, while
 * whoever set it believes the sidecar authenticates to the proxy with it.
 * Most often the proxy URL says http:// where the proxy speaks TLS; a
 * start-up that fails names that at once, where a warning scrolls away
 * and the first sign would be every request refused by the proxy.
 */
function checkTlsProxy (proxies: ReadonlyArray<ProxyEndpoint | undefined>, problems: string[]): void {
  if (proxies.some((p) => p?.url.protocol === 'https:')) return
  problems.push(proxies.some((p) => p !== undefined)
    ? 'PROXY_TLS_CERT and PROXY_TLS_KEY are set, but no proxy is an https:// one: the client certificate is presented only in a TLS handshake with the proxy. If the proxy speaks TLS, write its URL as https://host:port (https_proxy, HTTPS_PROXY_FILE or FALLBACK_PROXIES); else unset them'
    : 'PROXY_TLS_CERT and PROXY_TLS_KEY are set, but no proxy is: set https_proxy=https://host:port for a proxy that asks for a client certificate, or unset them (for mutual TLS with 3scale itself, use UPSTREAM_TLS_CERT and UPSTREAM_TLS_KEY)')
}

/**
 * An http:// endpoint whose every proxy is https://: the sidecar's HTTP
 * client (undici) sends plain http:// requests in absolute-form only to an
 * http:// proxy, so every request would fail. Said at start, where it is
 * fixed, rather than as a 502 on each request.
 */
function checkAbsoluteFormProxies (endpoints: ReadonlyArray<[string, URL | undefined]>, proxies: ProxySettings, fallbacks: readonly ProxyEndpoint[], problems: string[]): void {
  for (const [setting, url] of endpoints) {
    if (url?.protocol !== 'http:') continue
    const egress = resolveEgress(url, proxies, fallbacks)
    if (egress.kind !== 'proxy' || ![egress.proxy, ...egress.fallbacks].every((p) => p.url.protocol === 'https:')) continue
    problems.push(`${setting} is an http:// URL, and every proxy it would go through (http_proxy, FALLBACK_PROXIES) is an https:// one: the sidecar sends plain http:// requests only to an http:// proxy. Name an http:// proxy in http_proxy, or use the https:// endpoint`)
  }
}

/** Two settings that only make sense together (a certificate and its key). */
function pairOfFiles (certName: string, cert: string | undefined, keyName: string, key: string | undefined, problems: string[]): { certFile: string, keyFile: string } | undefined {
  if (cert === undefined && key === undefined) return undefined
  if (cert === undefined || key === undefined) {
    problems.push(`${cert === undefined ? certName : keyName} is required when ${cert === undefined ? keyName : certName} is set`)
    return undefined
  }
  return { certFile: cert, keyFile: key }
}

function withoutUserinfo (url: URL): URL {
  const copy = new URL(url.href)
  copy.username = ''
  copy.password = ''
  return copy
}

/**
 * A secret file's value: its content without the trailing newline that
 * editors and `kubectl create secret --from-file` leave. Never echoed.
 */
function readSecretValue (setting: string, path: string, readSecret: ReadSecret, problems: string[]): string | undefined {
  let text: string
  try {
    text = readSecret(path)
  } catch (err) {
    problems.push(`${setting}: cannot read ${path} (${describeReadError(err)})`)
    return undefined
  }
  const value = text.replace(/\r?\n$/, '').trim()
  if (value === '') {
    problems.push(`${setting}: ${path} is empty`)
    return undefined
  }
  return value
}

/** True for an address only this host can reach. */
export function isLoopbackAddress (address: string): boolean {
  const a = address.trim().toLowerCase().replace(/^\[|\]$/g, '')
  return a === 'localhost' || a === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a) || /^::ffff:127\./.test(a)
}

/**
 * A sidecar that holds a token and listens beyond loopback lends that token
 * to anyone who can reach it: with `either`, a request without credentials
 * gets the sidecar's, and with it the tenant's configuration. That is right
 * for a sidecar in APIcast's own pod and wrong for one shared behind a
 * Service, and the sidecar cannot tell which it is: so it is a start-up
 * error until PORTAL_TOKEN_SOURCE says which, explicitly. The token itself is
 * never named, only where it came from.
 */
function checkTokenExposure (listenAddress: string | undefined, explicit: PortalTokenSource | undefined, tokenFrom: string | undefined, problems: string[]): void {
  if (explicit === 'sidecar' && tokenFrom === undefined) {
    problems.push('PORTAL_TOKEN_SOURCE=sidecar needs the sidecar\'s own token: set ACCESS_TOKEN_FILE, or put the token in THREESCALE_PORTAL_ENDPOINT (https://TOKEN@host)')
  }
  if (explicit !== undefined || tokenFrom === undefined || listenAddress === undefined || isLoopbackAddress(listenAddress)) return
  problems.push(`LISTEN_ADDRESS=${listenAddress} makes the portal listener reachable from other hosts while the sidecar holds a token (from ${tokenFrom}): ` +
    'whoever reaches it could read the tenant\'s configuration with that token. Set PORTAL_TOKEN_SOURCE explicitly: ' +
    '`client` for a sidecar shared by several gateways (each APIcast sends its own token, as THREESCALE_PORTAL_ENDPOINT=http://TOKEN@sidecar:9090), ' +
    '`either` to lend the sidecar\'s token to requests without one (only where nothing but APIcast can reach the port), ' +
    'or `sidecar` to always send the sidecar\'s token')
}

/**
 * Why a file could not be read, in the terms of the fix: for EACCES, the
 * user and group the process runs as (in a container, an arbitrary UID in
 * group 0), since that is what the file's mode must let in.
 */
export function describeReadError (err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code ?? String(err)
  if (code !== 'EACCES' && code !== 'EPERM') return code
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined
  const gid = typeof process.getgid === 'function' ? process.getgid() : undefined
  return `${code}: the sidecar runs as UID ${String(uid)}, GID ${String(gid)}, which may not read it; make the file readable by that user or group (mode 0440 with group ${String(gid)}, or fsGroup/defaultMode in Kubernetes)`
}

/**
 * The Kerberos settings, when Negotiate can be answered: a keytab or a
 * ticket cache named, or Negotiate forced. A keytab or krb5.conf that is
 * not there is a problem at start (a Secret not mounted); a ticket cache
 * may appear later (kinit), and GSSAPI says so per tunnel if it does not.
 */
function readKerberos (cleaned: { PROXY_AUTH_SCHEME: ProxyAuthScheme, PROXY_KRB5_SPN?: string | undefined, PROXY_KRB5_PRINCIPAL?: string | undefined, KRB5_CLIENT_KTNAME?: string | undefined, KRB5CCNAME?: string | undefined, KRB5_CONFIG?: string | undefined }, problems: string[]): KerberosSettings | undefined {
  const keytab = cleaned.KRB5_CLIENT_KTNAME?.replace(/^FILE:/, '')
  const krb5Config = cleaned.KRB5_CONFIG
  if (keytab === undefined && cleaned.KRB5CCNAME === undefined && cleaned.PROXY_AUTH_SCHEME !== 'negotiate') {
    for (const name of ['PROXY_KRB5_SPN', 'PROXY_KRB5_PRINCIPAL'] as const) {
      if (cleaned[name] !== undefined) problems.push(`${name} is set, but no Kerberos credentials are: set KRB5_CLIENT_KTNAME (a client keytab) or KRB5CCNAME (a ticket cache)`)
    }
    return undefined
  }
  if (keytab !== undefined && !existsSync(keytab)) problems.push(`KRB5_CLIENT_KTNAME: the keytab ${keytab} does not exist (is its Secret mounted?)`)
  if (krb5Config !== undefined) {
    for (const file of krb5Config.split(':')) {
      if (file !== '' && !existsSync(file)) problems.push(`KRB5_CONFIG: ${file} does not exist (is its ConfigMap mounted?)`)
    }
  }
  const spn = cleaned.PROXY_KRB5_SPN
  if (spn !== undefined && !/^[^@\s/]+[@/][^@\s/]+$/.test(spn)) problems.push('PROXY_KRB5_SPN must be a service principal such as HTTP@proxy.corp.example (or HTTP/proxy.corp.example)')
  return Object.freeze({ spn, principal: cleaned.PROXY_KRB5_PRINCIPAL, keytab, ccache: cleaned.KRB5CCNAME, krb5Config })
}

/** The Kerberos files to watch: the keytab, and a FILE: ticket cache. GSSAPI reads both itself. */
function kerberosFiles (kerberos: KerberosSettings | undefined): Array<{ setting: string, path: string }> {
  if (kerberos === undefined) return []
  const files: Array<{ setting: string, path: string }> = []
  if (kerberos.keytab !== undefined) files.push({ setting: 'KRB5_CLIENT_KTNAME', path: kerberos.keytab })
  const cache = kerberos.ccache
  if (cache !== undefined && (cache.startsWith('FILE:') || cache.startsWith('/'))) files.push({ setting: 'KRB5CCNAME', path: cache.replace(/^FILE:/, '') })
  return files
}
