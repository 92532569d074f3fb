import type { Config, PortalTokenSource } from './config.js'
import { resolveEgress, type Egress } from '../egress/egress.js'

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

/** The two routes of the sidecar, built once at start from the config. */
export function buildRoutes (config: Config): readonly Route[] {
  return [
    {
      name: 'portal',
      listenAddress: config.listenAddress,
      listenPort: config.portal.listenPort,
      upstream: config.portal.endpoint,
      tokenPolicy: { kind: 'access_token', location: config.accessTokenLocation, fallbackToken: config.portal.token, source: config.portal.tokenFrom },
      egress: resolveEgress(config.portal.endpoint, config.proxies, config.fallbackProxies)
    },
    {
      name: 'backend',
      listenAddress: config.listenAddress,
      listenPort: config.backend.listenPort,
      upstream: config.backend.endpoint,
      tokenPolicy: { kind: 'passthrough' },
      egress: resolveEgress(config.backend.endpoint, config.proxies, config.fallbackProxies)
    }
  ]
}
