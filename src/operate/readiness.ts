import type { Config } from '../config/config.js'
import { probeForwardDestination, probeHop, type RouteReport } from '../diagnostics/probe.js'
import type { Destination } from '../egress/forward-destination.js'
import type { ForwardTransport } from '../egress/forward-transport.js'
import type { LiveRoute } from '../forwarding/forward.js'

export interface Readiness {
  readonly ready: boolean
  readonly checkedAt: string
  readonly routes: Readonly<Record<string, RouteReport>>
  /** The forward proxy's path to each allowed destination that is a plain host (FORWARD_PROXY_PORT set). */
  readonly forward?: Readonly<Record<string, RouteReport>>
}

/** What /readyz checks of the forward proxy: its transport in use, and the destinations to open a tunnel to. */
export interface ForwardReadiness {
  readonly transport: () => ForwardTransport
  readonly destinations: readonly Destination[]
}

/**
 * Readiness of the whole chain, per route: proxy reachable, CONNECT
 * accepted, TLS verified, the upstream answering HTTP. The result is cached
 * for READINESS_CACHE_MS and concurrent probes share one check, so probes
 * stay cheap for the proxy and for 3scale.
 *
 * Each check is one GET through the route's own transport, the pooled
 * dispatcher that forwards its requests: the same tunnels, proxy
 * authentication, trust store and client certificate, and the same failure
 * catalogue to explain what broke. A check therefore never opens a
 * connection the forwarding path would not (a bare TCP probe of the proxy
 * showed in squid's log as an error on every /readyz), and it cannot pass
 * or fail for a reason forwarding does not share (with mutual TLS, a probe
 * built without the client certificate kept /readyz at 503 for good).
 */
export function createReadiness (live: ReadonlyMap<string, LiveRoute>, config: Config, forward?: ForwardReadiness): () => Promise<Readiness> {
  let cached: { at: number, result: Promise<Readiness> } | undefined
  const check = async (): Promise<Readiness> => {
    const [entries, tunnels] = await Promise.all([
      Promise.all([...live.values()].map(async ({ route, transport }) => {
        return [route.name, await probeHop(route, transport.active(), { timeouts: config.timeouts, userAgent: 'apicast-sidecar-proxy readiness' })] as const
      })),
      // A CONNECT (or, to port 80, a request) per destination, as APIcast's would be: no second client.
      forward === undefined
        ? undefined
        : Promise.all(forward.destinations.map(async (d) => [d.authority, await probeForwardDestination(forward.transport(), d, { timeouts: config.timeouts, userAgent: 'apicast-sidecar-proxy readiness' })] as const))
    ])
    return {
      ready: entries.every(([, r]) => r.ok) && (tunnels ?? []).every(([, r]) => r.ok),
      checkedAt: new Date().toISOString(),
      routes: Object.fromEntries(entries),
      ...(tunnels !== undefined ? { forward: Object.fromEntries(tunnels) } : {})
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
