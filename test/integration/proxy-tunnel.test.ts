import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { basicUserinfo, Client, runConcurrently } from '../helpers/client.js'
import { BACKEND_403_XML, startOrigin, type Origin } from '../helpers/origin.js'
import { PROXY_PASSWORD, startProxyChain, type TestProxy } from '../helpers/proxies.js'
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js'

const TOKEN = 'tok-7f3a9c1e'

describe('through an authenticating CONNECT proxy (proxy-chain)', () => {
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
      UPSTREAM_MAX_CONNECTIONS: '16'
    }, { secrets: [TOKEN, PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)] })
  })

  after(async () => { await client.close() })
  after(async () => { await sidecar?.close() })
  after(async () => { await proxy?.close() })
  after(async () => { await origin?.close() })

  it('logs each route with the proxy host:port and masked credentials', () => {
    const lines = sidecar.logs().filter((l) => typeof l.port === 'number' && l.listener !== 'admin')
    assert.equal(lines.length, 2)
    for (const l of lines) {
      assert.equal(l.egress, 'proxy')
      assert.equal(l.proxy, `127.0.0.1:${proxy.port}`)
      assert.match(l.msg, new RegExp(`via proxy http://127\\.0\\.0\\.1:${proxy.port}`))
      assert.match(l.msg, /sidecar:\*\*\*/)
    }
  })

  it('forwards a backend authrep call and returns 3scale\'s answer unchanged', async () => {
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st&service_id=1&user_key=uk`)
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-type'], 'application/vnd.3scale-v2.0+xml')
    assert.match(res.text(), /<authorized>true<\/authorized>/)
    const seen = origin.requests.at(-1)
    assert.equal(seen?.url, '/transactions/authrep.xml?service_token=st&service_id=1&user_key=uk')
    assert.equal(seen?.headers.host, `backend.test:${origin.port}`)
  })

  it('returns 3scale\'s 403 XML unchanged, content type included', async () => {
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml`)
    assert.equal(res.status, 403)
    assert.equal(res.headers['content-type'], 'application/vnd.3scale-v2.0+xml')
    assert.equal(res.text(), BACKEND_403_XML)
    assert.equal(res.headers['x-sidecar-error'], undefined)
  })

  it('sent the percent-decoded credentials as Proxy-Authorization: Basic, and never upstream', () => {
    const want = 'Basic ' + Buffer.from(`sidecar:${PROXY_PASSWORD}`).toString('base64')
    assert.ok(proxy.authorizations.length > 0)
    for (const a of proxy.authorizations) assert.equal(a, want)
    for (const r of origin.requests) assert.equal(r.headers['proxy-authorization'], undefined)
  })

  it('moves the portal token from Basic userinfo to the access_token query parameter', async () => {
    const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: basicUserinfo(TOKEN) } })
    assert.equal(res.status, 200)
    const seen = origin.requests.at(-1)
    assert.equal(seen?.url, `/admin/api/services.json?access_token=${TOKEN}`)
    assert.equal(seen?.headers.authorization, undefined)
    assert.equal(seen?.headers.host, `portal.test:${origin.port}`)
  })

  it('reuses tunnels: 3,000 requests at concurrency 16 open at most 16 CONNECTs', async () => {
    const before = proxy.tunnels()
    let ok = 0
    await runConcurrently(3000, 16, async () => {
      const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st&user_key=uk`)
      if (res.status === 200) ok++
    })
    assert.equal(ok, 3000)
    const opened = proxy.tunnels() - before
    assert.ok(opened <= 16, `opened ${opened} tunnels for 3000 requests`)
  })

  it('writes one log line per request with listener, method, redacted path, status, duration and bytes', async () => {
    await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st&user_key=uk&usage%5Bhits%5D=1`)
    const line = await sidecar.waitForLog((l) => l.msg === 'request' && typeof l.path === 'string' && l.path.includes('usage%5Bhits%5D'))
    assert.equal(line.listener, 'backend')
    assert.equal(line.method, 'GET')
    assert.equal(line.path, '/transactions/authrep.xml?service_token=[REDACTED]&user_key=[REDACTED]&usage%5Bhits%5D=1')
    assert.equal(line.status, 200)
    assert.equal(typeof line.ms, 'number')
    assert.equal(typeof line.bytesOut, 'number')
  })

  it('stops cleanly, and no secret reached its output', async () => {
    assert.equal(await sidecar.stop(), 0)
  })
})
