import { unwatchFile, watchFile, type Stats } from 'node:fs'
import { ConfigError, type Config } from './config/config.js'
import { buildTransport, proxySpn, secureContexts, transportOptionsOf, upstreamTlsOf, type RouteTransport, type UpstreamTls } from './egress/dispatcher.js'
import { createForwarder, routeRequests, type LiveRoute } from './forwarding/forward.js'
import { createStaleIfError } from './forwarding/stale-if-error.js'
import { StaleConfigCache } from './stale-config/stale-config.js'
import { StaleConfigDir } from './stale-config/stale-config-dir.js'
import type { Logger } from './observe/logger.js'
import { endpointLabel, hostPort } from './observe/redact.js'
import { createAdminHandler } from './operate/admin.js'
import { createClientErrorReporter } from './operate/client-errors.js'
import { createLogSampler } from './observe/log-sampler.js'
import { createMetrics, type Metrics, type RouteMetrics } from './observe/metrics.js'
import { createReadiness } from './operate/readiness.js'
import { buildRoutes, type Route, type RouteName } from './config/routes.js'
import { startListener, type Listener } from './operate/server.js'
import { readProxyClient, TlsSetupError, type KeyPair, type TlsMaterial } from './tls/tls-material.js'
import { version } from './version.js'
import { buildForwardTransport, forwardTransportOptionsOf, type ForwardPac, type ForwardTransport } from './egress/forward-transport.js'
import { CertificateBackedOff, CredentialGate } from './egress/credential-gate.js'
import { plainDestinations } from './egress/forward-destination.js'
import type { ProxyEndpoint } from './egress/egress.js'
import { createConnectHandler } from './forward-proxy/connect.js'
import { createAbsoluteFormHandler } from './forward-proxy/requests.js'
import { ProxyAutoConfig } from './egress/pac.js'
import { pacEgress, type PacAnswer } from './egress/pac-answer.js'
import { createPacReader, pacLabel } from './egress/pac-source.js'
import { isLoopback } from './egress/no-proxy.js'
import { egressKey, type Egress } from './egress/egress.js'
import { startForwardListener, type ForwardListener } from './operate/forward-listener.js'

export interface Sidecar {
  readonly config: Config
  readonly listeners: ReadonlyMap<RouteName, Listener>
  readonly admin: Listener
  /** The forward proxy's listener (FORWARD_PROXY_PORT); undefined when off. */
  readonly forward: ForwardListener | undefined
  readonly live: ReadonlyMap<RouteName, LiveRoute>
  /** Stop accepting, drain within the grace period, close the dispatchers. */
  shutdown (): Promise<void>
}

export interface StartOptions {
  /**
   * Read the configuration again (secret files included). Given, the secret
   * files are watched and a change is applied without a restart.
   */
  readonly reloadConfig?: () => Config
  /** How often secret files are checked for changes. */
  readonly secretPollMs?: number
}

/**
 * Build routes and dispatchers, then start both listeners. If either cannot
 * bind, everything already started is closed again and the error is thrown:
 * the sidecar never runs half alive.
 */
export async function startSidecar (config: Config, tls: TlsMaterial, log: Logger, options: StartOptions = {}): Promise<Sidecar> {
  log.info({ version: version(), node: process.version, pid: process.pid }, `apicast-sidecar-proxy ${version()} on node ${process.version}`)
  log.info({ trustStore: tls.trust.sources }, tls.trust.summary)
  if (!config.tls.verifyUpstream) {
    log.warn('UPSTREAM_TLS_VERIFY=false: the TLS certificates of 3scale are NOT verified. Anyone on the path, the proxy included, can read and change this traffic, tokens included. Trust the proxy\'s CA with CA_BUNDLE instead.')
  }
  const routes = buildRoutes(config)
  const metrics = createMetrics(new Map(routes.map((r) => [r.upstream.origin, r.name])))
  // One object, so every route and every reload shares one TLS context;
  // a new one only when PROXY_TLS_CERT/KEY change (rereadProxyCertificate).
  let upstreamTls = upstreamTlsOf(config, tls)
  // Lockout protection, one gate for every transport: a proxy's refusal of
  // the credentials stops them going to that proxy for PROXY_AUTH_BACKOFF_MS,
  // from the routes, the forward proxy and /readyz alike.
  const credentialGate = new CredentialGate(config.proxyAuthBackoffMs, ({ proxy, backoffMs }) => {
    metrics.proxyAuthBackoff(proxy)
    log.error({ proxy, event: 'proxy_auth_backoff', backoffMs },
      `the proxy ${proxy} refused the proxy credentials: they are not sent to it again for ${Math.round(backoffMs / 1000)} s (PROXY_AUTH_BACKOFF_MS), ` +
      'so that a wrong password cannot lock the account; requests meanwhile fail over to FALLBACK_PROXIES, if any, or get 502 proxy_auth_required at once. ' +
      'Correct the password (a changed PROXY_PASSWORD_FILE or HTTPS_PROXY_FILE ends the back-off at once)')
  })
  // The same protection for the TLS client certificate to an https:// proxy:
  // a handshake the proxy refused over it (none sent, or one it does not
  // accept) is not tried again with it for PROXY_AUTH_BACKOFF_MS. Key
  // material is never logged, only the setting's name.
  const certificateGate = new CredentialGate(config.proxyAuthBackoffMs, ({ proxy, backoffMs }) => {
    const sent = upstreamTls.proxyClientCert !== undefined
    log.error({ proxy, event: 'proxy_client_certificate_backoff', backoffMs },
      `the proxy ${proxy} ${sent ? 'rejected the TLS client certificate of PROXY_TLS_CERT' : 'requires a TLS client certificate and none is set'}: ` +
      `no new connection is tried with it for ${Math.round(backoffMs / 1000)} s (PROXY_AUTH_BACKOFF_MS); requests meanwhile fail over to FALLBACK_PROXIES, if any, or get 502 proxy_client_certificate at once. ` +
      (sent
        ? 'Use a certificate issued by a CA the proxy trusts for clients, not expired, allowing client authentication'
        : 'Set PROXY_TLS_CERT and PROXY_TLS_KEY to the certificate and key issued to this sidecar') +
      ' (a changed PROXY_TLS_CERT or PROXY_TLS_KEY ends the back-off at once)')
  }, Date.now, (ago, remaining) => new CertificateBackedOff(ago, remaining))
  // PROXY_PAC_URL: the PAC file decides each route's proxies once it has
  // answered; until then the routes are `pending` (502 pac_unavailable).
  const pac = config.pac !== undefined ? createPac(config, config.pac, upstreamTls, routes, log.child({ component: 'pac' })) : undefined
  /** The PAC's last answer for each route, kept so a reload of the credentials can apply them again. */
  const pacAnswers = new Map<RouteName, PacAnswer>()
  const pacDecisions = (c: Config): ReadonlyMap<RouteName, Egress> => {
    const decided = new Map<RouteName, Egress>()
    for (const route of buildRoutes(c)) {
      const answer = pacAnswers.get(route.name)
      if (answer !== undefined && c.pac !== undefined) decided.set(route.name, pacEgress(route.upstream, answer, c.pac.credentials))
    }
    return decided
  }
  let latest = config
  /** What the forward proxy's transport takes beside the config: the routes' metrics and gate, and the PAC. */
  const forwardExtra = (c: Config): ForwardExtra => ({
    metrics: metrics.forRoute('forward'),
    credentialGate,
    certificateGate,
    ...(pac !== undefined && c.pac !== undefined ? { pac: { answer: async (url: URL) => await pac.instance.answer(url), credentials: c.pac.credentials } } : {})
  })
  const transportFor = (route: Route): RouteTransport => buildTransport(route,
    transportOptionsOf(config, upstreamTls, log.child({ listener: route.name }), {
      metrics: metrics.forRoute(route.name),
      credentialGate,
      certificateGate,
      ...(pac !== undefined ? { pacUnavailable: () => pac.instance.unavailable() } : {})
    }))

  const staleStores: StaleConfigCache[] = []
  const live = new Map<RouteName, LiveRoute>()
  for (const route of routes) live.set(route.name, { route, transport: transportFor(route) })
  const listeners = new Map<RouteName, Listener>()
  let admin: Listener | undefined
  let forward: LiveForward | undefined
  let draining = false
  let stopWatching = (): void => {}

  // Not ready first (/readyz answers 503 from here on), then the listeners
  // drain and close, the admin listener last so probes keep an answer.
  const shutdown = async (): Promise<void> => {
    draining = true
    stopWatching()
    pac?.close()
    await Promise.all([
      ...[...listeners.values()].map(async (l) => { await l.close(config.timeouts.shutdownGraceMs) }),
      forward?.listener?.close(config.timeouts.shutdownGraceMs)
    ])
    forward?.transport.close()
    await admin?.close(0)
    await Promise.all([...live.values()].map(async (l) => { await l.transport.destroy() }))
    // The last configuration responses reach STALE_CONFIG_DIR before exit.
    await Promise.all(staleStores.map(async (s) => { await s.idle() }))
    metrics.close()
  }

  try {
    for (const current of live.values()) {
      const { route } = current
      const routeLog = log.child({ listener: route.name })
      const routeMetrics = metrics.forRoute(route.name)
      // Configuration is read from the portal only; backend calls are never kept.
      const stale = route.name === 'portal' ? staleConfigCache(config, routeLog, staleStores) : undefined
      const handler = createForwarder({
        prepare: routeRequests(current),
        timeouts: config.timeouts,
        metrics: routeMetrics,
        log: routeLog,
        draining: () => draining,
        policy: stale !== undefined ? createStaleIfError(stale, routeMetrics) : undefined,
        maxConcurrent: config.maxConcurrentRequests,
        sendTimeoutMs: config.client.sendTimeoutMs
      })
      const listener = await startListener(route.listenAddress, route.listenPort, handler, {
        tls: tls.listen,
        limits: config.client,
        onClientError: createClientErrorReporter(routeLog, (kind) => { metrics.clientError(route.name, kind) }, createLogSampler)
      }).catch((err: unknown) => {
        throw new ListenError({ name: route.name, address: route.listenAddress, port: route.listenPort }, err)
      })
      listeners.set(route.name, listener)
      logRoute(routeLog, route, listener, config)
    }
    if (config.forwardProxy !== undefined) {
      const forwardLog = log.child({ listener: 'forward' })
      forward = { transport: buildForwardTransport(forwardTransportOptionsOf(config, upstreamTls, forwardLog, forwardExtra(config))), key: forwardKey(config) }
      forward.listener = await startForwardProxy(config, config.forwardProxy, forward, metrics, forwardLog, () => draining)
    }
    const liveForward = forward
    const readiness = createReadiness(live, config, liveForward !== undefined && config.forwardProxy !== undefined
      ? { transport: () => liveForward.transport, destinations: plainDestinations(config.forwardProxy.allow) }
      : undefined)
    const adminLog = log.child({ listener: 'admin' })
    admin = await startListener(config.admin.address, config.admin.port, createAdminHandler({ metrics, readiness, draining: () => draining }), {
      limits: config.client,
      onClientError: createClientErrorReporter(adminLog, (kind) => { metrics.clientError('admin', kind) }, createLogSampler)
    })
      .catch((err: unknown) => { throw new ListenError({ name: 'admin', address: config.admin.address, port: config.admin.port }, err) })
    log.info({ listener: 'admin', listen: `${admin.address.address}:${admin.address.port}`, port: admin.address.port },
      `admin http://${admin.address.address}:${admin.address.port} serves /healthz, /readyz and /metrics`)
    log.flush() // the start-up lines, at once
  } catch (err) {
    await shutdown()
    throw err
  }

  if (pac !== undefined) {
    // After the start-up lines: each decision is its own line.
    pac.instance.start(() => {
      applyPacAnswers(pac.instance, live, pacAnswers, log).then(() => {
        for (const route of buildRoutes(latest, pacDecisions(latest))) {
          const current = live.get(route.name)
          if (current !== undefined) replaceRoute(current, route, transportFor, log, 'PROXY_PAC_URL', latest)
        }
        // The forward proxy asks the new script afresh, per destination.
        if (forward !== undefined) {
          const old = forward.transport
          forward.transport = buildForwardTransport(forwardTransportOptionsOf(latest, upstreamTls, log.child({ listener: 'forward' }), forwardExtra(latest)))
          old.retire()
        }
      }, (err: unknown) => { log.error({ err }, 'the PAC\'s answers could not be applied') })
    })
  }

  if (options.reloadConfig !== undefined && config.secretFiles.length > 0) {
    const reload = options.reloadConfig
    stopWatching = watchSecretFiles(config, options.secretPollMs ?? 1000, log, (changed) => {
      const next = rereadConfig(reload, changed, log)
      if (next === undefined) return
      // A changed secret is a new chance for the credentials: no back-off survives it.
      credentialGate.reset()
      certificateGate.reset()
      latest = next
      const pair = rereadProxyCertificate(next, changed, upstreamTls.proxyClientCert, log)
      if (pair !== undefined) {
        upstreamTls = { ...upstreamTls, proxyClientCert: pair.value }
        renewTransports(live, transportFor)
        if (forward !== undefined) renewForward(next, forward, upstreamTls, log.child({ listener: 'forward' }), forwardExtra(next))
        log.info({ trigger: changed }, 'the proxy client certificate (PROXY_TLS_CERT, PROXY_TLS_KEY) changed: new connections to the proxy present the new one; open tunnels finish their requests and close')
      }
      applySecrets(next, changed, live, transportFor, log, next.pac !== undefined ? pacDecisions(next) : undefined)
      if (forward !== undefined) applyForwardSecrets(next, changed, forward, upstreamTls, log.child({ listener: 'forward' }), forwardExtra(next))
    })
  }

  return { config, listeners, admin, forward: forward?.listener, live, shutdown }
}

/** What the forward proxy's transport takes beside the config: the routes' metrics and gates, and the PAC. */
interface ForwardExtra {
  readonly metrics: RouteMetrics
  readonly credentialGate: CredentialGate
  readonly certificateGate: CredentialGate
  readonly pac?: ForwardPac
}

/** The forward proxy's transport in use, swapped when the proxy settings change, and its listener once started. */
interface LiveForward {
  transport: ForwardTransport
  /** What the transport was built from (forwardKey): compared on reload, never logged. */
  key: string
  listener?: ForwardListener
}

/**
 * The forward proxy (FORWARD_PROXY_PORT): the CONNECT handler, reading the
 * transport in use from `live` per CONNECT, and the listener on
 * LISTEN_ADDRESS. A failed start leaves the transport to the caller's
 * shutdown.
 */
async function startForwardProxy (config: Config, settings: NonNullable<Config['forwardProxy']>, live: LiveForward, metrics: Metrics, log: Logger, draining: () => boolean): Promise<ForwardListener> {
  const connect = createConnectHandler({
    transport: () => live.transport,
    allow: settings.allow,
    log,
    maxTunnels: settings.maxTunnels,
    idleMs: settings.idleMs,
    observe: metrics.forwardProxy
  })
  const request = createAbsoluteFormHandler({
    transport: () => live.transport,
    allow: settings.allow,
    log,
    timeouts: config.timeouts,
    metrics: metrics.forRoute('forward'),
    draining,
    maxConcurrent: config.maxConcurrentRequests,
    sendTimeoutMs: config.client.sendTimeoutMs
  })
  const listener = await startForwardListener(config.listenAddress, settings.port, { connect, request }, config.client,
    createClientErrorReporter(log, (kind) => { metrics.clientError('forward', kind) }, createLogSampler))
    .catch((err: unknown) => {
      throw new ListenError({ name: 'forward', address: config.listenAddress, port: settings.port }, err, 'FORWARD_PROXY_PORT')
    })
  const listen = `${listener.address.address}:${listener.address.port}`
  log.info({ listen, port: listener.address.port, allow: settings.allow.entries, maxTunnels: settings.maxTunnels, idleTimeoutMs: settings.idleMs },
    `forward proxy http://${listen} → CONNECT and http:// requests to ${settings.allow.entries.join(', ')}, each leaving as a route to it would (${config.pac !== undefined ? 'as the PAC file PROXY_PAC_URL decides, asked once per destination' : 'https_proxy or http_proxy, NO_PROXY, FALLBACK_PROXIES'})`)
  return listener
}

/** The portal's stale-config store, restored from STALE_CONFIG_DIR when set; undefined when off. */
function staleConfigCache (config: Config, log: Logger, all: StaleConfigCache[]): StaleConfigCache | undefined {
  const settings = config.staleConfig
  if (settings === undefined) return undefined
  let failing = false
  const dir = settings.dir !== undefined
    ? new StaleConfigDir(settings.dir, (err) => {
      // Said once: the store in memory still works.
      if (!failing) log.warn(`cannot write to STALE_CONFIG_DIR ${settings.dir ?? ''}: ${err instanceof Error ? err.message : String(err)}; the last good configuration is kept in memory only`)
      failing = true
    })
    : undefined
  const cache = new StaleConfigCache({ maxAgeMs: settings.maxAgeMs, maxBytes: settings.maxBytes, dir })
  all.push(cache)
  if (dir !== undefined) {
    const { loaded, skipped } = cache.restore()
    log.info({ staleConfigDir: dir.path, loaded }, `stale configuration: ${loaded} stored response(s) restored from STALE_CONFIG_DIR ${dir.path}` +
      (skipped.length > 0 ? `; unreadable, ignored: ${skipped.join(', ')}` : ''))
  }
  return cache
}

/**
 * Poll each secret file (fs.watchFile: it follows the symlink swaps with
 * which Kubernetes updates a mounted Secret) and report the ones that changed.
 */
function watchSecretFiles (config: Config, intervalMs: number, log: Logger, onChange: (setting: string) => void): () => void {
  const watched: Array<{ path: string, listener: (curr: Stats, prev: Stats) => void }> = []
  for (const { setting, path } of config.secretFiles) {
    const listener = (curr: Stats, prev: Stats): void => {
      if (curr.mtimeMs !== prev.mtimeMs || curr.ino !== prev.ino || curr.size !== prev.size) onChange(setting)
    }
    watchFile(path, { interval: intervalMs, persistent: false }, listener)
    watched.push({ path, listener })
  }
  log.info({ secretFiles: config.secretFiles.map((f) => f.setting) }, `watching ${config.secretFiles.map((f) => `${f.setting} ${f.path}`).join(', ')} for changes`)
  return () => { for (const w of watched) unwatchFile(w.path, w.listener) }
}

/**
 * Read the configuration again, once per change, for every listener to
 * swap what changed. A bad new value is logged and undefined returned: the
 * previous values are kept.
 */
function rereadConfig (reloadConfig: () => Config, changed: string, log: Logger): Config | undefined {
  try {
    return reloadConfig()
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    log.error({ secretFile: changed }, `${changed} changed but cannot be used (${err.problems.join('; ')}); keeping the previous values`)
    return undefined
  }
}

/**
 * Swap what changed for the routes. A new proxy URL or credential gets a
 * new transport; the old one finishes its in-flight requests and then
 * closes, so no request is dropped.
 */
function applySecrets (
  next: Config,
  changed: string,
  live: Map<RouteName, LiveRoute>,
  transportFor: (route: Route) => RouteTransport,
  log: Logger,
  pacDecided: ReadonlyMap<RouteName, Egress> | undefined
): void {
  // Report what changed, whichever file's change woke the reload: files
  // rotated together are usually picked up by one read.
  for (const route of buildRoutes(next, pacDecided)) {
    const current = live.get(route.name)
    if (current !== undefined) replaceRoute(current, route, transportFor, log, changed, next)
  }
}

/**
 * Put `route` in place of the live one, when its egress (proxies,
 * credentials, the PAC's decision) or its token changed. A new egress gets
 * a new transport; the old one finishes its in-flight requests and then
 * closes, so no request is dropped.
 */
function replaceRoute (current: LiveRoute, route: Route, transportFor: (route: Route) => RouteTransport, log: Logger, trigger: string, config: Config): void {
  const egressChanged = egressKey(current.route.egress) !== egressKey(route.egress)
  const tokenChanged = tokenKey(current.route) !== tokenKey(route)
  if (!egressChanged && !tokenChanged) return
  const old = current.transport
  if (egressChanged) current.transport = transportFor(route)
  current.route = route
  if (egressChanged) {
    old.close().catch(() => {})
    if (trigger === 'PROXY_PAC_URL') {
      const { fields, via } = describeEgress(route, config)
      log.info({ listener: route.name, event: 'pac_decision', ...fields }, `${route.name} → ${endpointLabel(route.upstream)} ${via}`)
    } else {
      log.info({ listener: route.name, trigger }, 'the proxy settings changed: new requests use them; open tunnels finish their requests and close')
    }
  }
  if (tokenChanged) log.info({ listener: route.name, trigger }, 'the access token changed: the new one is in use')
}

/**
 * PROXY_PAC_URL's reader and its sandbox, for the routes' upstreams (not
 * loopback, which stays direct). The PAC file is fetched directly, with
 * TLS verified against the trust store (no client certificate, of the
 * upstream's or the proxy's, goes to the PAC server).
 */
function createPac (config: Config, settings: NonNullable<Config['pac']>, upstreamTls: UpstreamTls, routes: readonly Route[], log: Logger): { instance: ProxyAutoConfig, close: () => void } {
  const reader = createPacReader(settings.source, { secureContext: secureContexts(upstreamTls).trustOnly, timeoutMs: config.timeouts.connectMs })
  const instance = new ProxyAutoConfig({
    source: settings.source,
    refreshMs: settings.refreshMs,
    read: reader.read,
    log,
    destinations: () => routes.filter((r) => !isLoopback(r.upstream)).map((r) => r.upstream)
  })
  const ignored = [
    config.proxies.https !== undefined ? 'https_proxy' : undefined,
    config.proxies.http !== undefined ? 'http_proxy' : undefined,
    config.fallbackProxies.length > 0 ? 'FALLBACK_PROXIES' : undefined,
    config.proxies.noProxy.length > 0 ? 'NO_PROXY' : undefined
  ].filter((x) => x !== undefined)
  log.info({ pac: instance.label, refreshS: settings.refreshMs / 1000 }, `PROXY_PAC_URL ${instance.label}: the PAC file decides each destination's proxies, evaluated once per destination in a sandbox, and is fetched again every ${settings.refreshMs / 1000} s (PROXY_PAC_REFRESH_S)` +
    (ignored.length > 0 ? `; ${ignored.join(', ')} ${ignored.length === 1 ? 'is' : 'are'} set but not used: the PAC's answer replaces them` : ''))
  return { instance, close: () => { instance.close(); reader.close().catch(() => {}) } }
}

/**
 * Ask the PAC in use for each route's answer and keep it, warning once per
 * new script about the SOCKS entries it skips.
 */
async function applyPacAnswers (pac: ProxyAutoConfig, live: ReadonlyMap<RouteName, LiveRoute>, answers: Map<RouteName, PacAnswer>, log: Logger): Promise<void> {
  for (const { route } of live.values()) {
    if (isLoopback(route.upstream)) continue
    const answer = await pac.answer(route.upstream)
    answers.set(route.name, answer)
    if (answer.skipped.length > 0) {
      log.warn({ listener: route.name, pac: pac.label, skipped: answer.skipped },
        `the PAC file names SOCKS proxies for ${endpointLabel(route.upstream)}, which the sidecar does not speak: ${answer.skipped.join('; ')} skipped`)
    }
  }
}

/**
 * PROXY_TLS_CERT/KEY read again after a secret file changed: `{ value }`
 * when the pair differs from `current` (the next connection to the proxy
 * presents it), undefined when it is the same or cannot be used. A bad
 * pair (unreadable, not PEM, a key of another certificate: a Secret
 * rotated half-way) is logged, by its files' names only, and the pair in
 * use kept.
 */
function rereadProxyCertificate (next: Config, changed: string, current: KeyPair | undefined, log: Logger): { value: KeyPair | undefined } | undefined {
  let pair: KeyPair | undefined
  try {
    pair = readProxyClient(next.tls)
  } catch (err) {
    if (!(err instanceof TlsSetupError)) throw err
    log.error({ secretFile: changed }, `${changed} changed but cannot be used (${err.problems.join('; ')}); the proxy client certificate in use is kept`)
    return undefined
  }
  if (pair?.cert === current?.cert && pair?.key === current?.key) return undefined
  return { value: pair }
}

/** Every route gets a new transport (new TLS contexts); the old ones finish their requests, then close. */
function renewTransports (live: Map<RouteName, LiveRoute>, transportFor: (route: Route) => RouteTransport): void {
  for (const current of live.values()) {
    const old = current.transport
    current.transport = transportFor(current.route)
    old.close().catch(() => {})
  }
}

/** The forward proxy's transport built again (new TLS contexts); the old one retires. */
function renewForward (next: Config, forward: LiveForward, upstreamTls: UpstreamTls, log: Logger, extra: ForwardExtra): void {
  const old = forward.transport
  forward.transport = buildForwardTransport(forwardTransportOptionsOf(next, upstreamTls, log, extra))
  forward.key = forwardKey(next)
  old.retire()
}

/**
 * The forward proxy's half of a reload: new proxy settings (a rotated
 * HTTPS_PROXY_FILE or PROXY_PASSWORD_FILE) get a new transport, so new
 * tunnels authenticate with the new credentials; tunnels being opened
 * finish on the old one, and open tunnels run on untouched.
 */
function applyForwardSecrets (next: Config, changed: string, forward: LiveForward, upstreamTls: UpstreamTls, log: Logger, extra: ForwardExtra): void {
  const key = forwardKey(next)
  if (key === forward.key) return
  const old = forward.transport
  forward.transport = buildForwardTransport(forwardTransportOptionsOf(next, upstreamTls, log, extra))
  forward.key = key
  old.retire()
  log.info({ trigger: changed }, 'the proxy settings changed: new tunnels and requests use them; open tunnels run on, and requests in flight finish')
}

/** What identifies the forward proxy's proxies, NO_PROXY and credentials included; compared, never logged. */
function forwardKey (config: Config): string {
  const endpoint = (p: ProxyEndpoint | undefined): unknown => p === undefined ? null : [p.url.href, p.username, p.password]
  return JSON.stringify([endpoint(config.proxies.https), endpoint(config.proxies.http), config.fallbackProxies.map(endpoint), config.proxies.noProxy,
    config.pac !== undefined ? [config.pac.credentials.user, config.pac.credentials.password] : null])
}

function tokenKey (route: Route): string {
  return route.tokenPolicy.kind === 'access_token' ? `${route.tokenPolicy.location}:${route.tokenPolicy.source}:${route.tokenPolicy.fallbackToken ?? ''}` : ''
}

/** A listener could not bind; says which setting to change. */
export class ListenError extends Error {
  override name = 'ListenError'
  constructor (listener: { readonly name: string, readonly address: string, readonly port: number }, override readonly cause: unknown, setting = `${listener.name.toUpperCase()}_LISTEN_PORT`) {
    const code = (cause as { code?: string }).code ?? String(cause)
    super(`cannot listen on ${listener.address}:${listener.port} for the ${listener.name} listener (${code}); ` +
      (code === 'EADDRINUSE'
        ? `another process uses the port: stop it or set ${setting}`
        : `check ${listener.name === 'admin' ? 'ADMIN_LISTEN_ADDRESS' : 'LISTEN_ADDRESS'} and ${setting}`))
  }
}

/** One line per listener: listener → upstream, via proxy host:port or direct. Credentials masked. */
function logRoute (log: Logger, route: Route, listener: Listener, config: Config): void {
  const listen = `${listener.address.address}:${listener.address.port}`
  const upstream = endpointLabel(route.upstream)
  const { fields, via } = describeEgress(route, config)
  Object.assign(fields, { listen, upstream, port: listener.address.port, tls: listener.tls })
  if (route.tokenPolicy.kind === 'access_token') {
    const whose = { either: 'APIcast\'s, else the sidecar\'s', client: 'APIcast\'s only', sidecar: 'the sidecar\'s only' }[route.tokenPolicy.source]
    fields.accessToken = `${route.tokenPolicy.location}, PORTAL_TOKEN_SOURCE=${route.tokenPolicy.source} (${whose})` +
      (config.portal.tokenSource !== undefined ? `, the sidecar's token from ${config.portal.tokenSource}` : '')
  }
  fields.timeouts = config.timeouts
  log.info(fields, `${route.name} ${listener.tls ? 'https' : 'http'}://${listen} → ${upstream} ${via}`)
}

/**
 * How a route leaves, for its start-up line and for the line of each new
 * PAC decision: the log fields and the words. Credentials masked.
 */
function describeEgress (route: Route, config: Config): { fields: Record<string, unknown>, via: string } {
  const egress = route.egress
  const fields: Record<string, unknown> = {}
  let via: string
  if (egress.kind === 'proxy') {
    fields.egress = 'proxy'
    fields.proxy = hostPort(egress.proxy.url)
    // The scheme as it will be used: `auto` answers the proxy's challenge on tunnels; absolute-form is Basic only.
    const tunnel = route.upstream.protocol === 'https:'
    const scheme = tunnel ? config.proxyAuthScheme : 'basic'
    const password = egress.proxy.username !== '' || egress.proxy.password !== ''
    // Kerberos answers Negotiate on tunnels only; the SPN is said, never a token.
    const kerberos = tunnel && config.kerberos !== undefined ? `Kerberos for ${proxySpn(egress.proxy.url, config.kerberos.spn)}` : undefined
    fields.proxyAuth = password || kerberos !== undefined
      ? `${scheme === 'auto' ? `auto: ${kerberos !== undefined ? 'Negotiate, ' : ''}Basic, Digest or NTLM as the proxy asks` : scheme}` +
        [password ? `${egress.proxy.username}:***` : undefined, kerberos].filter((x) => x !== undefined).map((x) => ` (${x})`).join('')
      : 'none'
    // A client certificate goes to https:// proxies only; its setting is said, never its content.
    const certificate = config.tls.proxyClient !== undefined && [egress.proxy, ...egress.fallbacks].some((p) => p.url.protocol === 'https:')
    if (certificate) fields.proxyClientCertificate = 'PROXY_TLS_CERT'
    via = `via proxy ${egress.proxy.url.protocol}//${hostPort(egress.proxy.url)} (${route.upstream.protocol === 'https:' ? 'CONNECT tunnel' : 'absolute-form'}, proxy auth ${String(fields.proxyAuth)}${certificate ? ', TLS client certificate PROXY_TLS_CERT to https:// proxies' : ''})`
    if (egress.fallbacks.length > 0) {
      fields.fallbacks = egress.fallbacks.map((p) => hostPort(p.url))
      via += `, then ${egress.fallbacks.map((p) => `${p.url.protocol}//${hostPort(p.url)}`).join(', ')}`
    }
    if (egress.thenDirect === true) {
      fields.thenDirect = true
      via += ', then direct'
    }
  } else if (egress.kind === 'direct') {
    fields.egress = 'direct'
    fields.directReason = egress.reason
    via = {
      no_proxy_match: 'direct (NO_PROXY matches)',
      loopback: 'direct (loopback is never proxied)',
      no_proxy_configured: 'direct (no proxy configured)',
      pac: 'direct (the PAC file says DIRECT)'
    }[egress.reason]
  } else {
    fields.egress = 'pending'
    via = `waiting for the PAC file PROXY_PAC_URL ${config.pac !== undefined ? pacLabel(config.pac.source) : ''} to decide (requests get 502 pac_unavailable until it does)`
  }
  if (egress.kind !== 'pending' && egress.pac !== undefined) {
    fields.pac = egress.pac
    via += ` (PAC: "${egress.pac}")`
  }
  return { fields, via }
}
