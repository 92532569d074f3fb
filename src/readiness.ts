import type { Config } from './config.js'
import { diagnoseRoute, type RouteReport } from './diagnose.js'
import type { LiveRoute } from './forward.js'
import type { TrustStore } from './trust-store.js'

export interface Readiness {
  readonly ready: boolean
  readonly checkedAt: string
  readonly routes: Readonly<Record<string, RouteReport>>
}

/**
 * Readiness of the whole chain, per route: proxy reachable, CONNECT
 * accepted, TLS verified, the upstream answering HTTP. The result is cached
 * for READINESS_CACHE_MS and concurrent probes share one check, so probes
 * stay cheap for the proxy and for 3scale.
 */
export function createReadiness (live: ReadonlyMap<string, LiveRoute>, trust: TrustStore, config: Config): () => Promise<Readiness> {
  let cached: { at: number, result: Promise<Readiness> } | undefined
  const check = async (): Promise<Readiness> => {
    const entries = await Promise.all([...live.entries()].map(async ([name, { route, upstream }]) => {
      const report = await diagnoseRoute(route, upstream.active().proxy, {
        trust,
        timeoutMs: config.timeouts.connectMs,
        proxyAuthScheme: config.proxyAuthScheme,
        authenticated: false
      })
      return [name, report] as const
    }))
    return {
      ready: entries.every(([, r]) => r.ok),
      checkedAt: new Date().toISOString(),
      routes: Object.fromEntries(entries)
    }
  }
  return async () => {
    const now = Date.now()
    if (cached === undefined || now - cached.at >= config.admin.readinessCacheMs) {
      cached = { at: now, result: check() }
    }
    return await cached.result
  }
}
