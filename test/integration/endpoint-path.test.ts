import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { Client } from '../helpers/client.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { PROXY_PASSWORD, startProxyChain, type TestProxy } from '../helpers/proxies.js'
import { runCli } from '../helpers/sidecar-process.js'
import { startSidecar } from '../helpers/sidecar.js'
import { testCa } from '../helpers/pki.js'

const TOKEN = 'endpoint-path-token-2a9c'
const SECRETS = [TOKEN, PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)]

interface ReadyBody { ready: boolean, routes: Record<string, { failed?: string, steps: Array<{ name: string, ok?: boolean, detail: string, fix?: string }> }> }

describe('the endpoint\'s path: a 404 points at it, not at the token', () => {
  let origin: Origin
  let proxy: TestProxy
  const client = new Client()
  before(async () => {
    origin = await startOrigin()
    proxy = await startProxyChain()
  })
  after(async () => { await client.close() })
  after(async () => { await proxy?.close() })
  after(async () => { await origin?.close() })

  const env = (): Record<string, string> => ({
    THREESCALE_PORTAL_ENDPOINT: `https://${TOKEN}@portal.test:${origin.port}/3scale`,
    BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
    HTTPS_PROXY: proxy.url
  })

  it('doctor: shows the endpoint with its path, fails the HTTP step on the 404 with the path to fix, and never blames the token', async () => {
    const { code, stdout } = await runCli({ ...env(), NODE_EXTRA_CA_CERTS: (await testCa()).certFile }, ['doctor'])
    assert.equal(code, 1)
    assert.match(stdout, new RegExp(`✓ config {3}portal → https://portal\\.test:${origin.port}/3scale, backend → https://backend\\.test:${origin.port};`))
    assert.match(stdout, new RegExp(`✗ HTTP {5}GET /3scale/admin/api/services\\.json answered 404 \\(text/plain\\): portal\\.test:${origin.port} has no such path`))
    assert.match(stdout, new RegExp(`fix: check the path in THREESCALE_PORTAL_ENDPOINT \\(/3scale\\): use the origin only, https://portal\\.test:${origin.port} \\(3scale's API is at the root of its host`))
    assert.match(stdout, /· token {4}not run: an earlier step failed/)
    assert.doesNotMatch(stdout, /refused the access token|check the token/)
    for (const secret of SECRETS) assert.ok(!stdout.includes(secret), 'doctor printed a secret')
  })

  it('/readyz: not ready, the portal\'s HTTP step failed, with the same fix', async (t) => {
    const sidecar = await startSidecar(env(), { secrets: SECRETS })
    t.after(async () => { await sidecar.close() })
    const res = await client.send(`${sidecar.adminUrl}/readyz`)
    assert.equal(res.status, 503)
    const body = JSON.parse(res.text()) as ReadyBody
    assert.equal(body.routes.portal?.failed, 'http')
    assert.equal(body.routes.backend?.failed, undefined)
    const http = body.routes.portal?.steps.find((s) => s.name === 'http')
    assert.match(http?.detail ?? '', /GET \/3scale\/admin\/api\/services\.json answered 404/)
    assert.match(http?.fix ?? '', /^check the path in THREESCALE_PORTAL_ENDPOINT \(\/3scale\): use the origin only/)
    assert.equal(await sidecar.stop(), 0)
  })

  it('a dashboard page pasted as the endpoint: a config error listing, with the origin to use, before anything is sent', async () => {
    const pasted = { ...env(), THREESCALE_PORTAL_ENDPOINT: `https://${TOKEN}@acme-admin.3scale.net/p/admin/dashboard` }
    const started = await runCli(pasted)
    assert.equal(started.code, 1)
    assert.equal(started.stdout, '')
    assert.match(started.stderr, /invalid configuration:\n {2}- THREESCALE_PORTAL_ENDPOINT has the path \/p\/admin\/dashboard, a page of the admin portal as a browser shows it, not where its API is: use the origin only, https:\/\/acme-admin\.3scale\.net/)
    const doctor = await runCli(pasted, ['doctor'])
    assert.equal(doctor.code, 1)
    assert.match(doctor.stdout, /✗ config {3}the configuration is invalid\n {6}THREESCALE_PORTAL_ENDPOINT has the path \/p\/admin\/dashboard/)
    for (const out of [started.stderr, doctor.stdout]) assert.ok(!out.includes(TOKEN), 'the token is not echoed')
  })
})
