import type { Config, PortalTokenSource } from './config.js'
import { resolveEgress, type Egress } from '../egress/egress.js'
import { isLoopback } from '../egress/no-proxy.js'

export type RouteName = 'portal' | 'backend'

/**
 * What a listener does with 3scale credentials:
 * - `access_token` (portal): move APIcast's Basic userinfo token into the
 *   query or an Authorization header, falling back to the sidecar's own token;
 * - `passthrough` (backend): credentials are in the query already
 *   (service_token, provider_key, user_key) and are left alone.
 */
export type TokenPolicy =
  | {
    readonly kind: 'access_token'
    readonly location: 'query' | 'header'
    /** The sidecar's own token (endpoint userinfo or ACCESS_TOKEN_FILE). */
    readonly fallbackToken: string | undefined
    /** PORTAL_TOKEN_SOURCE: whose token travels (see placeAccessToken). */
    readonly source: PortalTokenSource
  }
  | { readonly kind: 'passthrough' }

export interface Route {
  readonly name: RouteName
  readonly listenAddress: string
  readonly listenPort: number
  /** Origin plus optional path prefix; never holds credentials. */
  readonly upstream: URL
  readonly tokenPolicy: TokenPolicy
  readonly egress: Egress
}

/**
 * The two routes of the sidecar, built once at start from the config.
 * With PROXY_PAC_URL, each route's egress is the PAC's decision, given in
 * `decided` once the PAC file has answered; until then it is `pending`.
 */
export function buildRoutes (config: Config, decided?: ReadonlyMap<RouteName, Egress>): readonly Route[] {
  const egressOf = (name: RouteName, upstream: URL): Egress => {
    if (config.pac === undefined) return resolveEgress(upstream, config.proxies, config.fallbackProxies)
    if (isLoopback(upstream)) return { kind: 'direct', reason: 'loopback' }
    return decided?.get(name) ?? { kind: 'pending', reason: 'pac' }
  }
  return [
    {
      name: 'portal',
      listenAddress: config.listenAddress,
      listenPort: config.portal.listenPort,
      upstream: config.portal.endpoint,
      tokenPolicy: { kind: 'access_token', location: config.accessTokenLocation, fallbackToken: config.portal.token, source: config.portal.tokenFrom },
      egress: egressOf('portal', config.portal.endpoint)
    },
    {
      name: 'backend',
      listenAddress: config.listenAddress,
      listenPort: config.backend.listenPort,
      upstream: config.backend.endpoint,
      tokenPolicy: { kind: 'passthrough' },
      egress: egressOf('backend', config.backend.endpoint)
    }
  ]
}
