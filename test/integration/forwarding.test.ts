import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { Readable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { basicUserinfo, Client, rawExchange } from '../helpers/client.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startProxyChain, type TestProxy } from '../helpers/proxies.js'
import { spawnSidecar } from '../helpers/sidecar-process.js'
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js'

const TOKEN = 'portal-token-5d21'
const OWN_TOKEN = 'sidecar-own-token-88aa'

interface Echo { method: string, url: string, headers: Record<string, string>, body: string }

describe('forwarding, direct (loopback is never proxied)', () => {
  let origin: Origin
  let proxy: TestProxy
  let sidecar: RunningSidecar
  const client = new Client()

  before(async () => {
    origin = await startOrigin()
    proxy = await startProxyChain()
    sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: `https://${OWN_TOKEN}@127.0.0.1:${origin.port}/prefix`,
      BACKEND_ENDPOINT_OVERRIDE: origin.url(),
      HTTPS_PROXY: proxy.url
    }, { secrets: [TOKEN, OWN_TOKEN] })
  })
  after(async () => { await client.close() })
  after(async () => { await sidecar?.close() })
  after(async () => { await proxy?.close() })
  after(async () => { await origin?.close() })

  it('logs that loopback routes are direct, and never uses the proxy', async () => {
    const routes = sidecar.logs().filter((l) => typeof l.port === 'number' && l.listener !== 'admin')
    for (const l of routes) {
      assert.equal(l.egress, 'direct')
      assert.match(l.msg, /direct \(loopback is never proxied\)/)
    }
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 200)
    assert.equal(proxy.tunnels(), 0)
    assert.equal(proxy.authorizations.length, 0)
  })

  for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const) {
    it(`${method}: method, path, query and body reach the upstream as sent`, async () => {
      const body = method === 'GET' || method === 'OPTIONS' ? undefined : 'a=1&b=%2F'
      const res = await client.send(`${sidecar.backendUrl}/echo/a%2Fb/%7E?q=%2F%20+&x`, { method, body, headers: body !== undefined ? { 'content-type': 'application/x-www-form-urlencoded' } : {} })
      assert.equal(res.status, 200)
      const echo = JSON.parse(res.text()) as Echo
      assert.equal(echo.method, method)
      assert.equal(echo.url, '/echo/a%2Fb/%7E?q=%2F%20+&x')
      assert.equal(echo.body, body ?? '')
      assert.equal(echo.headers.host, `127.0.0.1:${origin.port}`)
    })
  }

  it('HEAD returns the headers without a body', async () => {
    const res = await client.send(`${sidecar.backendUrl}/bytes?n=1234`, { method: 'HEAD' })
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-length'], '1234')
    assert.equal(res.body.length, 0)
  })

  it('strips hop-by-hop headers both ways and keeps end-to-end ones', async () => {
    // Raw bytes: HTTP clients (undici included) consume Connection themselves.
    const port = Number(new URL(sidecar.backendUrl).port)
    const raw = await rawExchange(port, 'GET /echo HTTP/1.1\r\nHost: sidecar\r\nX-Keep: yes\r\nX-Hop: no\r\n' +
      'Connection: close, X-Hop\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Foo: bar\r\nKeep-Alive: timeout=9\r\n\r\n')
    const [head = '', body = ''] = raw.split('\r\n\r\n')
    const echo = JSON.parse(body) as Echo
    assert.equal(echo.headers['x-keep'], 'yes')
    for (const h of ['x-hop', 'te', 'proxy-authorization', 'proxy-foo', 'keep-alive']) assert.equal(echo.headers[h], undefined, h)
    // Response: the origin sent Connection: x-hop, X-Hop and Keep-Alive.
    assert.doesNotMatch(head, /^x-hop:/im)
    assert.doesNotMatch(head, /^keep-alive:/im)
    assert.match(head, /^x-origin: yes$/im)
    assert.match(head, /^set-cookie: a=1$/im)
    assert.match(head, /^set-cookie: b=2$/im)
  })

  it('portal: joins the endpoint prefix and moves the Basic token into the query', async () => {
    const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: basicUserinfo(TOKEN) } })
    assert.equal(res.status, 404) // the origin serves /admin/... at the root, so /prefix/... is a 404
    const seen = origin.requests.at(-1)
    assert.equal(seen?.url, `/prefix/admin/api/services.json?access_token=${TOKEN}`)
    assert.equal(seen?.headers.authorization, undefined)
  })

  it('portal: uses the sidecar\'s own token when APIcast sends none', async () => {
    await client.send(`${sidecar.portalUrl}/admin/api/account/proxy_configs/production.json?host=api.example`)
    assert.equal(origin.requests.at(-1)?.url, `/prefix/admin/api/account/proxy_configs/production.json?host=api.example&access_token=${OWN_TOKEN}`)
  })

  it('portal: a token with CR/LF gets 400 and is never forwarded', async () => {
    const count = origin.requests.length
    const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json`, {
      headers: { authorization: 'Basic ' + Buffer.from('tok\r\nX-Injected: 1:').toString('base64') }
    })
    assert.equal(res.status, 400)
    assert.equal(origin.requests.length, count)
  })

  it('is not an open proxy: absolute-form for another host gets 400, CONNECT gets 405', async () => {
    const count = origin.requests.length
    const port = Number(new URL(sidecar.backendUrl).port)
    const absolute = await rawExchange(port, 'GET http://other.example/ HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n')
    assert.match(absolute, /^HTTP\/1\.1 400 /)
    const connect = await rawExchange(port, 'CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n')
    assert.match(connect, /^HTTP\/1\.1 405 /)
    assert.equal(origin.requests.length, count)
  })

  it('stops cleanly, and no secret reached its output', async () => {
    assert.equal(await sidecar.stop(), 0)
  })
})

describe('streaming', () => {
  // A process: its resident memory is what is measured.
  it('streams 100 MB each way without holding it in memory', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const sidecar = await spawnSidecar({ THREESCALE_PORTAL_ENDPOINT: origin.url(), BACKEND_ENDPOINT_OVERRIDE: origin.url() })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    // Warm first, as it was when it ran after the other forwarding tests:
    // code loaded, the pool and its TLS sessions up, both directions used.
    for (let i = 0; i < 20; i++) assert.equal((await client.send(`${sidecar.backendUrl}/echo`, { method: 'POST', body: 'x'.repeat(64 * 1024) })).status, 200)
    assert.equal((await client.send(`${sidecar.backendUrl}/bytes?n=${4 << 20}`)).body.length, 4 << 20)
    const size = 100 * 1024 * 1024
    const rssBefore = rssKb(sidecar.pid)

    const down = await client.send(`${sidecar.backendUrl}/bytes?n=${size}`)
    assert.equal(down.body.length, size)

    let sent = 0
    const chunk = Buffer.alloc(256 * 1024, 121)
    const body = Readable.from((function * () {
      while (sent < size) { sent += chunk.length; yield chunk }
    })())
    const up = await client.send(`${sidecar.backendUrl}/upload`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } })
    assert.equal(up.text(), String(size))

    const peakGrowthMb = (peakRssKb(sidecar.pid) - rssBefore) / 1024
    assert.ok(peakGrowthMb < STREAM_GROWTH_BOUND_MB, `the sidecar's peak RSS grew by ${peakGrowthMb.toFixed(1)} MB while streaming 200 MB (bound ${STREAM_GROWTH_BOUND_MB} MB on V8 ${process.versions.v8})`)
    assert.equal(await sidecar.stop(), 0)
  })
})

describe('NO_PROXY at start', () => {
  it('logs, per route, whether NO_PROXY made it direct', async (t) => {
    // Only the decision is observed: a direct request to a non-loopback name
    // would need real DNS, which no test touches. The unit table is the spec.
    const proxy = await startProxyChain()
    t.after(async () => { await proxy.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: 'https://portal.test:8443',
      BACKEND_ENDPOINT_OVERRIDE: 'https://su1.backend.test',
      HTTPS_PROXY: proxy.url,
      NO_PROXY: '.corp.example, backend.test:443, 10.0.0.0/8'
    })
    t.after(async () => { await sidecar.close() })
    const portal = sidecar.logs().find((l) => l.listener === 'portal' && typeof l.port === 'number')
    const backend = sidecar.logs().find((l) => l.listener === 'backend' && typeof l.port === 'number')
    assert.equal(portal?.egress, 'proxy')
    assert.match(portal?.msg ?? '', /via proxy/)
    assert.equal(backend?.egress, 'direct')
    assert.equal(backend?.directReason, 'no_proxy_match')
    assert.match(backend?.msg ?? '', /direct \(NO_PROXY matches\)/)
    await sidecar.stop()
  })
})

describe('ACCESS_TOKEN_LOCATION=header', () => {
  it('sends the token upstream as Authorization: Basic, and an access_token in the query still wins', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const sidecar = await startSidecar({ THREESCALE_PORTAL_ENDPOINT: origin.url(), ACCESS_TOKEN_LOCATION: 'header', BACKEND_ENDPOINT_OVERRIDE: origin.url() }, { secrets: [TOKEN] })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: 'Basic ' + Buffer.from(':' + TOKEN).toString('base64') } })
    assert.equal(origin.requests.at(-1)?.url, '/admin/api/services.json')
    assert.equal(origin.requests.at(-1)?.headers.authorization, basicUserinfo(TOKEN))
    await client.send(`${sidecar.portalUrl}/admin/api/services.json?access_token=q`, { headers: { authorization: basicUserinfo(TOKEN) } })
    assert.equal(origin.requests.at(-1)?.url, '/admin/api/services.json?access_token=q')
    assert.equal(origin.requests.at(-1)?.headers.authorization, undefined)
    await sidecar.stop()
  })
})

describe('http upstream behind the proxy', () => {
  it('is sent in absolute-form with Proxy-Authorization (no CONNECT)', async (t) => {
    const origin = await startOrigin({ tls: false })
    t.after(async () => { await origin.close() })
    const proxy = await startProxyChain()
    t.after(async () => { await proxy.close() })
    const sidecar = await startSidecar({ THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'), BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'), HTTP_PROXY: proxy.url })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    assert.match(sidecar.logs().find((l) => l.listener === 'backend')?.msg ?? '', /absolute-form/)
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 200)
    assert.equal(proxy.tunnels(), 0)
    assert.equal(proxy.authorizations.length, 1)
    assert.equal(origin.requests.at(-1)?.url, '/transactions/authrep.xml?service_token=st')
    assert.equal(origin.requests.at(-1)?.headers['proxy-authorization'], undefined)
    await sidecar.stop()
  })
})

function statusKb (pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m?.[1] ?? 0)
}
/**
 * What streaming may add to the sidecar's peak RSS, run with the node flags
 * it ships with (a 2 MB young generation: scripts/node-flags.json).
 */
const STREAM_GROWTH_BOUND_MB = 45

function rssKb (pid: number): number { return statusKb(pid, 'VmRSS') }
function peakRssKb (pid: number): number { return statusKb(pid, 'VmHWM') }
