import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it, type TestContext } from 'node:test'
import { basicUserinfo, Client, rawExchange } from '../helpers/client.js'
import { eventually } from '../helpers/eventually.js'
import { startFaultyFront, type FaultyFront } from '../helpers/faults.js'
import { startOrigin, threescaleHandler, type Handler, type Origin } from '../helpers/origin.js'
import { PROXY_PASSWORD, proxyUrl, startProxyChain, type TestProxy } from '../helpers/proxies.js'
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js'

const secrets = [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)]
const REPORT = 'service_token=st&service_id=1&transactions[0][user_key]=uk&transactions[0][usage][hits]=1'
const FORM = { 'content-type': 'application/x-www-form-urlencoded' }

/**
 * The origin's faults, chosen by the query: `close=N` closes the connection
 * after reading the request, without an answer, for the first N requests to
 * that URL; `midbody=1` sends the headers and half the body, then closes.
 */
function faultyHandler (): Handler {
  const seen = new Map<string, number>()
  return (req, res, request) => {
    const url = new URL(req.url ?? '/', 'http://origin')
    const count = (seen.get(req.url ?? '') ?? 0) + 1
    seen.set(req.url ?? '', count)
    const close = Number(url.searchParams.get('close') ?? 0)
    if (count <= close) {
      req.resume()
      req.on('end', () => { req.socket.destroy() })
      return
    }
    if (url.searchParams.has('midbody')) {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100' })
      res.write('x'.repeat(50), () => { req.socket.destroy() })
      return
    }
    threescaleHandler(req, res, request)
  }
}

describe('safe retries: a reset connection is retried only where it cannot count twice', () => {
  let origin: Origin
  let proxy: TestProxy
  let front: FaultyFront
  let sidecar: RunningSidecar
  const client = new Client()

  before(async () => {
    origin = await startOrigin({ handler: faultyHandler() })
    proxy = await startProxyChain()
    front = await startFaultyFront(proxy.port)
    sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(front.port)
    }, { secrets })
  })
  // One hook per resource, none asserting: a hook that throws skips the rest.
  after(async () => { await client.close() })
  after(async () => { await sidecar?.close() })
  after(async () => { await front?.close() })
  after(async () => { await proxy?.close() })
  after(async () => { await origin?.close() })

  const seen = (method: string, path: string): number =>
    origin.requests.filter((r) => r.method === method && r.url.startsWith(path)).length

  it('a GET whose connection closes before any response is sent again once, and succeeds', async () => {
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st&close=1&case=get-once`)
    assert.equal(res.status, 200, res.text())
    assert.equal(seen('GET', '/transactions/authrep.xml?service_token=st&close=1&case=get-once'), 2)
    const line = await sidecar.waitForLog((l) => /retrying once on a fresh connection/.test(l.msg) && l.method === 'GET')
    assert.match(line.msg, /no response had begun/)
    assert.equal(line.error, 'reset')
  })

  it('a GET that fails twice gets a 502 after exactly two attempts', async () => {
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st&close=5&case=get-twice`)
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'reset')
    assert.equal(seen('GET', '/transactions/authrep.xml?service_token=st&close=5&case=get-twice'), 2)
  })

  it('a POST (usage report) whose connection closes after it was sent is not sent again: 502', async () => {
    const res = await client.send(`${sidecar.backendUrl}/transactions.xml?close=1&case=post`, { method: 'POST', body: REPORT, headers: FORM })
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'reset')
    assert.equal(seen('POST', '/transactions.xml?close=1&case=post'), 1, 'the report reached 3scale once and was not repeated')
    // Its own completion line names the cause; the explaining line for
    // `reset` (logged once per 10 s per listener) gives the detail.
    const line = await sidecar.waitForLog((l) => l.method === 'POST' && l.error === 'reset' && l.status === 502)
    assert.equal(typeof line.reqId, 'number')
    const cause = await sidecar.waitForLog((l) => l.level === 'error' && l.error === 'reset' && l.listener === 'backend')
    assert.match(cause.msg, /was closed or reset/)
  })

  it('a GET whose response broke mid-body is not sent again (the status line was already relayed)', async () => {
    await assert.rejects(client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st&midbody=1`))
    assert.equal(seen('GET', '/transactions/authrep.xml?service_token=st&midbody=1'), 1)
  })

  it('a POST whose tunnel is reset while connecting is sent once on a fresh tunnel, and delivered once', async () => {
    const before = front.accepted()
    front.next('reset')
    // Tunnels already pooled would carry the request without a new connection: close them.
    front.resetAll()
    const res = await client.send(`${sidecar.backendUrl}/transactions.xml?case=connect-reset`, { method: 'POST', body: REPORT, headers: FORM })
    assert.equal(res.status, 202, res.text())
    assert.equal(seen('POST', '/transactions.xml?case=connect-reset'), 1)
    assert.ok(front.accepted() - before >= 2, 'the reset connection, then a fresh one')
    const line = await sidecar.waitForLog((l) => /retrying once/.test(l.msg) && l.method === 'POST')
    assert.match(line.msg, /before any byte was sent/)
  })

  it('a proxy that resets every connection: one retry, then 502 naming the proxy', async () => {
    front.resetAll()
    front.next('reset', 'reset', 'reset')
    const res = await client.send(`${sidecar.backendUrl}/transactions.xml?case=connect-reset-twice`, { method: 'POST', body: REPORT, headers: FORM })
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'tunnel_refused')
    assert.equal(seen('POST', '/transactions.xml?case=connect-reset-twice'), 0)
    // The third reset meets the next request, whose one retry then gets through.
    const ok = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st&case=after`)
    assert.equal(ok.status, 200, 'one more reset is retried, then the sidecar serves again')
  })

  it('counts the retries in sidecar_upstream_retries_total', async () => {
    const metrics = (await client.send(`${sidecar.adminUrl}/metrics`)).text()
    assert.match(metrics, /sidecar_upstream_retries_total\{listener="backend",phase="sent"\} [1-9]/)
    assert.match(metrics, /sidecar_upstream_retries_total\{listener="backend",phase="connect"\} [1-9]/)
  })

  it('stops cleanly, and no secret reached its output', async () => {
    assert.equal(await sidecar.stop(), 0)
  })
})

describe('stale-if-error: the last good configuration keeps APIcast booting through an outage', () => {
  const TOKEN = 'portal-token-STALE-1'
  const client = new Client()
  after(async () => { await client.close() })

  /**
   * Origin whose portal answers `portalStatus` (200 = normally) for
   * configuration paths, behind a proxy behind a FaultyFront, and a sidecar;
   * each closed after the test.
   */
  async function setUp (t: TestContext, env: Record<string, string> = {}): Promise<{ origin: Origin, proxy: TestProxy, front: FaultyFront, sidecar: RunningSidecar, portal: { status: number } }> {
    const portal = { status: 200 }
    const origin = await startOrigin({
      handler: (req, res, seen) => {
        if (portal.status !== 200 && (req.url ?? '').startsWith('/admin/api/')) {
          res.writeHead(portal.status, { 'content-type': 'text/html' })
          res.end('<h1>Service Unavailable</h1>')
          return
        }
        threescaleHandler(req, res, seen)
      }
    })
    t.after(async () => { await origin.close() })
    const proxy = await startProxyChain()
    t.after(async () => { await proxy.close() })
    const front = await startFaultyFront(proxy.port)
    t.after(async () => { await front.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: `https://${TOKEN}@portal.test:${origin.port}`,
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(front.port),
      ...env
    }, { secrets: [...secrets, TOKEN] })
    t.after(async () => { await sidecar.close() })
    return { origin, proxy, front, sidecar, portal }
  }
  const CONFIG = '/admin/api/services.json'
  const BODY = '{"services":[{"service":{"id":2555417777820,"name":"API"}}]}'

  it('the proxy goes down: the stored configuration is served, marked stale, with one warning naming why', async (t) => {
    const rig = await setUp(t)
    const fresh = await client.send(rig.sidecar.portalUrl + CONFIG, { headers: { authorization: basicUserinfo(TOKEN) } })
    assert.equal(fresh.status, 200)
    assert.equal(fresh.headers['x-sidecar-stale'], undefined)
    await rig.front.close() // the proxy is unreachable from here on
    const stale = await client.send(rig.sidecar.portalUrl + CONFIG, { headers: { authorization: basicUserinfo(TOKEN) } })
    assert.equal(stale.status, 200)
    assert.equal(stale.text(), BODY)
    assert.equal(stale.headers['x-sidecar-stale'], 'proxy_unreachable')
    assert.equal(stale.headers.warning, '110 - "Response is Stale"')
    assert.match(String(stale.headers.age), /^\d+$/)
    assert.equal(stale.headers['content-type'], 'application/json; charset=utf-8')
    const line = await rig.sidecar.waitForLog((l) => l.stale === true)
    assert.equal(line.level, 'warn')
    assert.match(line.msg, /served the configuration stored \d+ s ago instead of failing: cannot reach the proxy/)
    assert.equal(line.error, 'proxy_unreachable')
    // Another token's configuration was never stored: no stale answer for it.
    const other = await client.send(rig.sidecar.portalUrl + CONFIG, { headers: { authorization: basicUserinfo('another-token') } })
    assert.equal(other.status, 502)
    // Backend calls are never served from the store.
    const auth = await client.send(rig.sidecar.backendUrl + '/transactions/authrep.xml?service_token=st')
    assert.equal(auth.status, 502)
    const metrics = (await client.send(`${rig.sidecar.adminUrl}/metrics`)).text()
    assert.match(metrics, /sidecar_stale_config_served_total\{listener="portal"\} 1/)
    assert.equal(await rig.sidecar.stop(), 0)
  })

  it('the portal answers 503: the stored configuration is served instead', async (t) => {
    const rig = await setUp(t)
    assert.equal((await client.send(rig.sidecar.portalUrl + CONFIG, { headers: { authorization: basicUserinfo(TOKEN) } })).status, 200)
    rig.portal.status = 503
    const stale = await client.send(rig.sidecar.portalUrl + CONFIG, { headers: { authorization: basicUserinfo(TOKEN) } })
    assert.equal(stale.status, 200)
    assert.equal(stale.text(), BODY)
    assert.equal(stale.headers['x-sidecar-stale'], 'upstream_503')
    // A path never fetched has nothing stored: 3scale's 503 passes through.
    const never = await client.send(rig.sidecar.portalUrl + '/admin/api/account/proxy_configs/production.json', { headers: { authorization: basicUserinfo(TOKEN) } })
    assert.equal(never.status, 503)
    // The portal is back: fresh answers again, and the tunnel was kept.
    rig.portal.status = 200
    const fresh = await client.send(rig.sidecar.portalUrl + CONFIG, { headers: { authorization: basicUserinfo(TOKEN) } })
    assert.equal(fresh.headers['x-sidecar-stale'], undefined)
    assert.equal(await rig.sidecar.stop(), 0)
  })

  it('with STALE_CONFIG_DIR, a sidecar restarted during the outage still serves the last good configuration', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-stale-dir-'))
    const rig = await setUp(t, { STALE_CONFIG_DIR: dir })
    assert.equal((await client.send(rig.sidecar.portalUrl + CONFIG, { headers: { authorization: basicUserinfo(TOKEN) } })).status, 200)
    assert.equal(await rig.sidecar.stop(), 0)
    const files = readdirSync(dir)
    assert.equal(files.length, 1)
    assert.match(files[0] ?? '', /^[0-9a-f]{64}\.json$/)
    assert.equal(statSync(join(dir, files[0] ?? '')).mode & 0o777, 0o600)
    await rig.front.close() // the outage begins; then the sidecar restarts
    const second = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: `https://${TOKEN}@portal.test:${rig.origin.port}`,
      BACKEND_ENDPOINT_OVERRIDE: rig.origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(rig.front.port),
      STALE_CONFIG_DIR: dir
    }, { secrets: [...secrets, TOKEN] })
    t.after(async () => { await second.close() })
    const restored = await second.waitForLog((l) => /restored from STALE_CONFIG_DIR/.test(l.msg))
    assert.equal(restored.loaded, 1)
    const stale = await client.send(second.portalUrl + CONFIG, { headers: { authorization: basicUserinfo(TOKEN) } })
    assert.equal(stale.status, 200)
    assert.equal(stale.text(), BODY)
    assert.equal(stale.headers['x-sidecar-stale'], 'proxy_unreachable')
    assert.equal(await second.stop(), 0)
  })

  it('STALE_CONFIG_MAX_AGE bounds the age; 0 turns it off', async (t) => {
    for (const [maxAge, waitMs] of [['1', 1500], ['0', 0]] as const) {
      const rig = await setUp(t, { STALE_CONFIG_MAX_AGE: maxAge })
      assert.equal((await client.send(rig.sidecar.portalUrl + CONFIG, { headers: { authorization: basicUserinfo(TOKEN) } })).status, 200)
      // The stored copy's age is what is tested: let it grow past STALE_CONFIG_MAX_AGE=1 (s).
      await new Promise((resolve) => setTimeout(resolve, waitMs))
      await rig.front.close()
      const res = await client.send(rig.sidecar.portalUrl + CONFIG, { headers: { authorization: basicUserinfo(TOKEN) } })
      assert.equal(res.status, 502, `STALE_CONFIG_MAX_AGE=${maxAge}`)
      assert.equal(res.headers['x-sidecar-error'], 'proxy_unreachable')
      assert.equal(await rig.sidecar.stop(), 0)
    }
  })
})

describe('bounded resources', () => {
  const client = new Client()
  let origin: Origin
  let proxy: TestProxy
  before(async () => {
    origin = await startOrigin()
    proxy = await startProxyChain()
  })
  after(async () => { await client.close() })
  after(async () => { await proxy?.close() })
  after(async () => { await origin?.close() })

  it('past MAX_CONCURRENT_REQUESTS a request gets 503 at once, and the listener serves again after', async (t) => {
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(proxy.port),
      MAX_CONCURRENT_REQUESTS: '2'
    }, { secrets })
    t.after(async () => { await sidecar.close() })
    const slow = [1, 2].map(async () => await client.send(`${sidecar.backendUrl}/slow?ms=1500`))
    await eventually(() => origin.requests.filter((r) => r.url.startsWith('/slow')).length, (n) => n === 2, 5000, 'both slow requests in flight')
    const t0 = performance.now()
    const refused = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.ok(performance.now() - t0 < 1000, 'refused at once, not queued')
    assert.equal(refused.status, 503)
    assert.equal(refused.headers['x-sidecar-error'], 'overloaded')
    assert.equal(refused.headers['retry-after'], '1')
    for (let i = 0; i < 3; i++) assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 503)
    for (const r of await Promise.all(slow)) assert.equal(r.status, 200)
    assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
    const line = await sidecar.waitForLog((l) => l.error === 'overloaded')
    assert.match(line.msg, /MAX_CONCURRENT_REQUESTS/)
    assert.equal(sidecar.logs().filter((l) => l.error === 'overloaded').length, 1, 'one warning, not one per refused request')
    const metrics = (await client.send(`${sidecar.adminUrl}/metrics`)).text()
    assert.match(metrics, /sidecar_requests_rejected_total\{listener="backend"\} 4/)
    assert.equal(await sidecar.stop(), 0)
  })

  it('a client slow to send headers or body gets 408 and is disconnected; a half-sent report is not completed upstream', async (t) => {
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(proxy.port),
      CLIENT_HEADERS_TIMEOUT_MS: '400',
      CLIENT_REQUEST_TIMEOUT_MS: '800'
    }, { secrets })
    t.after(async () => { await sidecar.close() })
    const port = Number(new URL(sidecar.backendUrl).port)
    let t0 = performance.now()
    const headersOnly = await rawExchange(port, 'GET /transactions/authrep.xml HTTP/1.1\r\nHost: x\r\n', 5000)
    assert.match(headersOnly, /^HTTP\/1\.1 408 /)
    assert.ok(performance.now() - t0 < 3000, 'disconnected near the limit, not after node\'s 30 s check interval')
    const before = origin.requests.length
    t0 = performance.now()
    const halfBody = await rawExchange(port, 'POST /transactions.xml?case=slow-body HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nservice_token=st', 5000)
    assert.ok(performance.now() - t0 < 3000)
    assert.match(halfBody, /^HTTP\/1\.1 408 /)
    // Whatever of the report reached the origin has ended there, whole or not.
    await eventually(() => origin.requests.slice(before).filter((r) => r.url.includes('case=slow-body')), (seen) => seen.every((r) => r.closed), 5000, 'the report to end at the origin')
    const seen = origin.requests.slice(before).filter((r) => r.url.includes('case=slow-body'))
    assert.ok(seen.every((r) => !r.complete), 'the report never arrived whole, so 3scale cannot count it')
    assert.equal(await sidecar.stop(), 0)
  })
})
