import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { Client } from '../helpers/client.js'
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
  after(async () => {
    await client.close()
    assert.equal(await sidecar.stop(), 0)
    await front.close()
    await proxy.close()
    await origin.close()
  })

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
    const line = await sidecar.waitForLog((l) => l.level === 'error' && l.method === 'POST' && l.error === 'reset')
    assert.match(line.msg, /was closed or reset/)
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
})
