/**
 * A stand-in for 3scale's admin portal and backend, for the demo: one TLS
 * server that answers the paths APIcast calls with bodies shaped like
 * 3scale's, and 3scale's own errors when credentials are missing.
 */
import { createServer, type Server } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

/** Not loopback names: the sidecar never proxies loopback, and the demo is about the proxy. */
export const PORTAL_HOST = 'acme-admin.3scale.demo'
export const BACKEND_HOST = 'su1.3scale.demo'
export const SERVICE_ID = 2555417777820
const ACCOUNT_ID = 2445582535751

const JSON_TYPE = 'application/json; charset=utf-8'
const XML_TYPE = 'application/vnd.3scale-v2.0+xml'
const XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>'
const ACCESS_DENIED = '{"error":"Access denied"}'
const CREDENTIALS_REQUIRED = `${XML_DECL}<error code="provider_key_or_service_token_required">Provider key or service token are required</error>`
const HITS_PER_MINUTE = 100

export interface ThreescaleStandIn {
  readonly port: number
  close (): Promise<void>
}

export interface StandInOptions {
  readonly cert: string
  readonly key: string
  /** Put into the proxy config, where 3scale tells APIcast how to call the backend. */
  readonly serviceToken: string
  /** The one application key 3scale knows; any other is invalid, as in 3scale. */
  readonly userKey: string
}

export async function startThreescale (options: StandInOptions): Promise<ThreescaleStandIn> {
  let hits = 0
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', `https://${PORTAL_HOST}`)
    const q = url.searchParams
    const send = (status: number, type: string | undefined, body = ''): void => {
      res.writeHead(status, { ...(type !== undefined ? { 'content-type': type } : {}), 'content-length': String(Buffer.byteLength(body)) })
      res.end(body)
    }
    const portalAuthorized = q.get('access_token') !== null || /^basic /i.test(req.headers.authorization ?? '')
    const route = `${req.method ?? ''} ${url.pathname}`
    switch (route) {
      case 'GET /admin/api/services.json':
        if (!portalAuthorized) return send(403, JSON_TYPE, ACCESS_DENIED)
        return send(200, JSON_TYPE, JSON.stringify({ services: [{ service: SERVICE } ] }))
      case 'GET /admin/api/account/proxy_configs/production.json':
        if (!portalAuthorized) return send(403, JSON_TYPE, ACCESS_DENIED)
        return send(200, JSON_TYPE, JSON.stringify(proxyConfigs(q.get('host') ?? '', options.serviceToken)))
      case 'GET /transactions/authrep.xml': {
        if (q.get('service_token') === null && q.get('provider_key') === null) return send(403, XML_TYPE, CREDENTIALS_REQUIRED)
        const userKey = q.get('user_key')
        if (userKey !== options.userKey) {
          return send(409, XML_TYPE, `${XML_DECL}<error code="user_key_invalid">user key "${xmlEscape(userKey ?? '')}" is invalid</error>`)
        }
        hits++
        return send(200, XML_TYPE, authorized(hits))
      }
      case 'POST /transactions.xml':
        req.resume()
        return send(202, undefined)
      default:
        return send(404, 'text/plain; charset=utf-8', 'Not Found\n')
    }
  }

  const server: Server = createServer({ cert: options.cert, key: options.key }, handle)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve() })
  })
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeAllConnections()
      await closed
    }
  }
}

const SERVICE = {
  id: SERVICE_ID,
  account_id: ACCOUNT_ID,
  name: 'Echo API',
  state: 'incomplete',
  system_name: 'echo-api',
  backend_version: '1',
  deployment_option: 'self_managed',
  support_email: 'admin@acme.demo',
  description: 'The demo\'s only service',
  intentions_required: false,
  buyers_manage_apps: true,
  buyers_manage_keys: true,
  referrer_filters_required: false,
  custom_keys_enabled: true,
  buyer_key_regenerate_enabled: true,
  mandatory_app_key: true,
  buyer_can_select_plan: false,
  buyer_plan_change_permission: 'request',
  created_at: '2024-05-02T09:14:43Z',
  updated_at: '2024-05-02T09:14:47Z'
}

function proxyConfigs (host: string, serviceToken: string): unknown {
  const content = {
    id: SERVICE_ID,
    account_id: ACCOUNT_ID,
    name: SERVICE.name,
    system_name: SERVICE.system_name,
    backend_version: '1',
    backend_authentication_type: 'service_token',
    backend_authentication_value: serviceToken,
    proxy: {
      id: 2555417777821,
      service_id: SERVICE_ID,
      endpoint: `https://${host || 'api.demo'}:443`,
      sandbox_endpoint: `https://${host || 'api.demo'}:443`,
      api_backend: 'https://echo-api.3scale.net:443',
      hosts: [host || 'api.demo'],
      backend: { endpoint: `https://${BACKEND_HOST}`, host: BACKEND_HOST },
      auth_user_key: 'user_key',
      credentials_location: 'query',
      error_status_auth_failed: 403,
      error_auth_failed: 'Authentication failed',
      proxy_rules: [{ id: 1, http_method: 'GET', pattern: '/', metric_id: 2555418191876, metric_system_name: 'hits', delta: 1, last: false }],
      policy_chain: [{ name: 'apicast', version: 'builtin', configuration: {} }]
    }
  }
  return { proxy_configs: [{ proxy_config: { id: 1, version: 3, environment: 'production', content, created_at: SERVICE.updated_at } }] }
}

function authorized (currentValue: number): string {
  const minute = new Date(Math.floor(Date.now() / 60_000) * 60_000)
  const stamp = (d: Date): string => d.toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, ' +0000')
  return `${XML_DECL}<status><authorized>true</authorized><plan>Basic</plan><usage_reports>` +
    `<usage_report metric="hits" period="minute"><period_start>${stamp(minute)}</period_start>` +
    `<period_end>${stamp(new Date(minute.getTime() + 60_000))}</period_end>` +
    `<max_value>${HITS_PER_MINUTE}</max_value><current_value>${currentValue}</current_value></usage_report>` +
    '</usage_reports></status>'
}

function xmlEscape (s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}
