import assert from 'node:assert/strict'
import { after, before, describe, it, type TestContext } from 'node:test'
import { request } from 'undici'
import { basicUserinfo, Client } from '../helpers/client.js'
import { eventually, poll } from '../helpers/eventually.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { createCa } from '../helpers/pki.js'
import { freePort, PROXY_PASSWORD, proxyUrl, startProxyChain, type TestProxy } from '../helpers/proxies.js'
import { runCli, spawnSidecar } from '../helpers/sidecar-process.js'
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js'

const TOKEN = 'operate-token-77e2'

interface ReadyBody { status: string, ready: boolean, routes: Record<string, { ok: boolean, failed?: string, steps: Array<{ name: string, ok?: boolean, detail: string }> }> }

async function get (url: string): Promise<{ status: number, body: string }> {
  const res = await request(url)
  return { status: res.statusCode, body: await res.body.text() }
}

describe('operate: /readyz and doctor name the failing step', () => {
  let origin: Origin
  let proxy: TestProxy
  before(async () => {
    origin = await startOrigin()
    proxy = await startProxyChain()
  })
  after(async () => { await proxy?.close() })
  after(async () => { await origin?.close() })

  const cases: Array<{ name: string, env: (t: TestContext) => Promise<Record<string, string>>, step: string | undefined, doctor: RegExp }> = [
    {
      name: 'a healthy path: ready, doctor passes every step including the token',
      env: () => Promise.resolve({ HTTPS_PROXY: proxy.url }),
      step: undefined,
      doctor: /✓ token {4}3scale accepted the access token/
    },
    {
      name: 'a wrong proxy password: the CONNECT step, with the schemes offered',
      env: () => Promise.resolve({ HTTPS_PROXY: proxyUrl(proxy.port, 'sidecar', 'wrong-password') }),
      step: 'connect',
      doctor: /✗ CONNECT +proxy authentication failed: 127\.0\.0\.1:\d+ answered CONNECT with 407 Proxy Authentication Required; it offers Basic\n +fix: check the user and password/
    },
    {
      name: 'the proxy down: the proxy step',
      env: async () => ({ HTTPS_PROXY: proxyUrl(await freePort()) }),
      step: 'proxy',
      doctor: /✗ proxy +cannot reach the proxy 127\.0\.0\.1:\d+ \(ECONNREFUSED\)\n +fix: check the host and port in https_proxy/
    },
    {
      name: 'a private CA the trust store lacks, through a plain proxy: the TLS step, naming the issuer as a private CA, not interception',
      env: async (t) => {
        const rogue = await startOrigin({ ca: await createCa('Corp Interception CA') })
        t.after(async () => { await rogue.close() })
        return { HTTPS_PROXY: proxy.url, BACKEND_ENDPOINT_OVERRIDE: rogue.url('backend.test'), THREESCALE_PORTAL_ENDPOINT: `https://${TOKEN}@portal.test:${rogue.port}` }
      },
      step: 'tls',
      doctor: /✗ TLS +the TLS certificate of backend\.test:\d+ is not trusted: issued by CN=Corp Interception CA, O=apicast-sidecar-proxy tests, which the trust store does not know \(SELF_SIGNED_CERT_IN_CHAIN\); the top certificate the server sent is CN=Corp Interception CA.*is a private CA: your 3scale's own internal CA.*\n +fix: add the certificate of CN=Corp Interception CA/
    },
    {
      name: 'the upstream down: the proxy cannot open the tunnel',
      env: async () => {
        const port = await freePort()
        return { HTTPS_PROXY: proxy.url, BACKEND_ENDPOINT_OVERRIDE: `https://backend.test:${port}`, THREESCALE_PORTAL_ENDPOINT: `https://${TOKEN}@portal.test:${port}` }
      },
      step: 'connect',
      doctor: /✗ CONNECT +the proxy 127\.0\.0\.1:\d+ refused the tunnel to backend\.test:\d+/
    }
  ]

  for (const c of cases) {
    it(c.name, async (t) => {
      const env = {
        THREESCALE_PORTAL_ENDPOINT: `https://${TOKEN}@portal.test:${origin.port}`,
        BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
        ...(await c.env(t))
      }
      const sidecar = await startSidecar(env, { secrets: [TOKEN, PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)] })
      t.after(async () => { await sidecar.close() })
      const ready = await get(`${sidecar.adminUrl}/readyz`)
      const body = JSON.parse(ready.body) as ReadyBody
      assert.equal(ready.status, c.step === undefined ? 200 : 503)
      assert.equal(body.ready, c.step === undefined)
      assert.equal(body.routes.backend?.failed, c.step)
      const health = await get(`${sidecar.adminUrl}/healthz`)
      assert.equal(health.status, 200, 'liveness never depends on the proxy')
      assert.equal(await sidecar.stop(), 0)
      const doctor = await runCli({ ...env, NODE_EXTRA_CA_CERTS: (await import('../helpers/pki.js').then(async (m) => await m.testCa())).certFile }, ['doctor'])
      assert.equal(doctor.code, c.step === undefined ? 0 : 1, doctor.stdout)
      assert.match(doctor.stdout, c.doctor)
      for (const secret of [TOKEN, PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)]) assert.ok(!doctor.stdout.includes(secret), 'doctor printed a secret')
    })
  }

  it('/readyz?once: not ready until the chain has worked; then ready through a proxy outage, while /readyz shows the outage', async (t) => {
    const own = await startProxyChain()
    t.after(async () => { await own.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: `https://${TOKEN}@portal.test:${origin.port}`,
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: own.url,
      READINESS_CACHE_MS: '100'
    }, { secrets: [TOKEN, PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)] })
    t.after(async () => { await sidecar.close() })
    const wrong = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: `https://${TOKEN}@portal.test:${origin.port}`,
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(proxy.port, 'sidecar', 'wrong-password'),
      READINESS_CACHE_MS: '100'
    }, { secrets: [TOKEN, 'wrong-password'] })
    t.after(async () => { await wrong.close() })
    assert.equal((await get(`${wrong.adminUrl}/readyz?once`)).status, 503, 'a wrong password never becomes ready')
    assert.equal((await get(`${sidecar.adminUrl}/readyz?once`)).status, 200)
    await own.close() // the proxy every replica shares goes down
    // Once READINESS_CACHE_MS=100 has passed since the last check.
    const { value: outage } = await poll(async () => (await get(`${sidecar.adminUrl}/readyz`)).status, (status) => status === 503, 5000)
    assert.equal(outage, 503, '/readyz shows the outage')
    const once = await get(`${sidecar.adminUrl}/readyz?once`)
    assert.equal(once.status, 200, 'the pod stays in the Service')
    assert.equal((JSON.parse(once.body) as { once?: boolean }).once, true)
    assert.equal(await sidecar.stop(), 0)
    assert.equal(await wrong.stop(), 0)
  })

  it('doctor --json gives the same report as JSON', async () => {
    const { code, stdout } = await runCli({
      THREESCALE_PORTAL_ENDPOINT: `https://${TOKEN}@portal.test:${origin.port}`,
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(proxy.port, 'sidecar', 'wrong-password'),
      NODE_EXTRA_CA_CERTS: (await import('../helpers/pki.js').then(async (m) => await m.testCa())).certFile
    }, ['doctor', '--json'])
    assert.equal(code, 1)
    const report = JSON.parse(stdout) as { ok: boolean, config: { ok: boolean }, routes: Array<{ route: string, failed: string, steps: Array<{ name: string, ok?: boolean }> }> }
    assert.equal(report.ok, false)
    assert.equal(report.config.ok, true)
    assert.deepEqual(report.routes.map((r) => [r.route, r.failed]), [['portal', 'connect'], ['backend', 'connect']])
    assert.deepEqual(report.routes[1]?.steps.map((s) => [s.name, s.ok]), [['proxy', true], ['connect', false], ['tls', undefined], ['http', undefined]])
  })

  it('doctor reports a broken config as the first step and exits 1', async () => {
    const { code, stdout } = await runCli({ BACKEND_ENDPOINT_OVERRIDE: 'ftp://x' }, ['doctor'])
    assert.equal(code, 1)
    assert.match(stdout, /✗ config {3}the configuration is invalid\n {6}THREESCALE_PORTAL_ENDPOINT is required/)
  })
})

describe('operate: metrics', () => {
  let origin: Origin
  let proxy: TestProxy
  let sidecar: RunningSidecar
  const client = new Client()
  before(async () => {
    origin = await startOrigin()
    proxy = await startProxyChain()
    sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxy.url,
      RESPONSE_HEADERS_TIMEOUT_MS: '300'
    }, { secrets: [TOKEN, PROXY_PASSWORD] })
  })
  after(async () => { await client.close() })
  after(async () => { await sidecar?.close() })
  after(async () => { await proxy?.close() })
  after(async () => { await origin?.close() })

  it('move as requests flow, and carry no token, path or query', async () => {
    for (let i = 0; i < 5; i++) assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st-secret&user_key=uk-secret`)).status, 200)
    assert.equal((await client.send(`${sidecar.backendUrl}/transactions.xml`, { method: 'POST', body: 'service_token=st-secret' })).status, 202)
    assert.equal((await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: basicUserinfo(TOKEN) } })).status, 200)
    assert.equal((await client.send(`${sidecar.backendUrl}/hang`)).status, 504)

    const { status, body } = await get(`${sidecar.adminUrl}/metrics`)
    assert.equal(status, 200)
    const p = String(proxy.port)
    const expected = [
      'sidecar_requests_total{listener="backend",method_class="read",status="200"} 5',
      'sidecar_requests_total{listener="backend",method_class="write",status="202"} 1',
      'sidecar_requests_total{listener="portal",method_class="read",status="200"} 1',
      'sidecar_requests_total{listener="backend",method_class="read",status="504"} 1',
      'sidecar_upstream_failures_total{listener="backend",kind="timeout"} 1',
      'sidecar_request_duration_seconds_count{listener="backend"} 7',
      'sidecar_requests_in_flight{listener="backend"} 0',
      `sidecar_proxy_in_use{listener="backend",proxy="127.0.0.1:${p}"} 1`
    ]
    for (const line of expected) assert.ok(body.includes(line), `missing: ${line}`)
    const opened = Number(new RegExp(`sidecar_tunnels_opened_total\\{listener="backend",proxy="127\\.0\\.0\\.1:${p}"\\} (\\d+)`).exec(body)?.[1])
    const reused = Number(/sidecar_tunnels_reused_total\{listener="backend"\} (\d+)/.exec(body)?.[1])
    assert.ok(opened >= 1 && opened <= 2, `opened ${opened}`)
    assert.ok(reused >= 5, `reused ${reused}`)
    for (const forbidden of [TOKEN, 'st-secret', 'uk-secret', PROXY_PASSWORD, 'transactions', '/admin/', '?']) {
      assert.ok(!body.includes(forbidden), `metrics contain ${forbidden}`)
    }
  })

  it('stops, and no secret reached its output', async () => {
    await sidecar.stop()
  })
})

describe('operate: shutdown', () => {
  it('reports not ready while draining, before the listeners close', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    // A process: the drain that SIGTERM starts is what is tested.
    const sidecar = await spawnSidecar({ THREESCALE_PORTAL_ENDPOINT: origin.url(), BACKEND_ENDPOINT_OVERRIDE: origin.url() })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    assert.equal((await get(`${sidecar.adminUrl}/readyz`)).status, 200)
    const slow = client.send(`${sidecar.backendUrl}/slow?ms=800`)
    // The readiness check above made requests of its own: wait for this one.
    await eventually(() => origin.requests.some((r) => r.url.startsWith('/slow')), (seen) => seen, 5000, 'the slow request at the origin')
    const exited = sidecar.stop()
    await sidecar.waitForLog((l) => /draining/.test(l.msg))
    const ready = await get(`${sidecar.adminUrl}/readyz`)
    assert.equal(ready.status, 503)
    assert.match(ready.body, /shutting_down/)
    assert.equal((await slow).status, 200)
    assert.equal(await exited, 0)
  })
})
