import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Client } from '../helpers/client.js'
import { startOrigin } from '../helpers/origin.js'
import { freePort, squidSkip, PROXY_PASSWORD, proxyUrl, startProxyChain, startSquid } from '../helpers/proxies.js'
import { startSidecar } from '../helpers/sidecar.js'

const secrets = [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)]
const BACKOFF_MS = 2000

describe('proxy failover (FALLBACK_PROXIES)', () => {
  it('two squids, the first stopped: requests go through the second, a POST is sent once', { skip: squidSkip }, async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const first = await startSquid()
    t.after(async () => { await first.close() })
    const second = await startSquid()
    t.after(async () => { await second.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: first.url,
      FALLBACK_PROXIES: second.url
    }, { secrets })
    t.after(async () => { await sidecar.close() })
    // Stopped only now, just before the first request: the longer its port
    // is free, the likelier a listener bound to port 0 anywhere on the
    // machine (a sidecar's, answering CONNECT with 405) takes it.
    await first.close()
    const client = new Client()
    t.after(async () => { await client.close() })
    assert.match(sidecar.logs().find((l) => l.listener === 'backend')?.msg ?? '', new RegExp(`then http://127\\.0\\.0\\.1:${second.port}`))
    const post = await client.send(`${sidecar.backendUrl}/transactions.xml`, { method: 'POST', body: 'service_token=st&transactions[0][usage][hits]=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
    assert.equal(post.status, 202)
    for (let i = 0; i < 5; i++) {
      const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
      assert.equal(res.status, 200)
    }
    assert.equal(origin.requests.filter((r) => r.method === 'POST').length, 1)
    const warning = await sidecar.waitForLog((l) => l.level === 'warn' && /failing over/.test(l.msg))
    assert.match(warning.msg, new RegExp(`proxy 127\\.0\\.0\\.1:${first.port} failed \\(cannot reach the proxy`))
    assert.match(warning.msg, new RegExp(`failing over to 127\\.0\\.0\\.1:${second.port}`))
    // Request lines are written in batches (at least every second): wait for one.
    const line = await sidecar.waitForLog((l) => l.msg === 'request' && l.listener === 'backend')
    assert.equal(line.proxy, `127.0.0.1:${second.port}`)
    assert.equal(sidecar.logs().filter((l) => /failing over/.test(l.msg) && l.listener === 'backend').length, 1, 'the failover is logged once, not per request')
    await sidecar.stop()
  })

  it('a proxy that refuses the tunnel (407) fails over too', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const refusing = await startProxyChain({ user: 'someone', password: 'else' })
    t.after(async () => { await refusing.close() })
    const good = await startProxyChain()
    t.after(async () => { await good.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(refusing.port),
      FALLBACK_PROXIES: `http://127.0.0.1:1, ${good.url}`
    }, { secrets })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 200)
    assert.equal(good.tunnels(), 1)
    await sidecar.stop()
  })

  it('returns to the first proxy after the back-off', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const firstPort = await freePort()
    const second = await startProxyChain()
    t.after(async () => { await second.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(firstPort),
      FALLBACK_PROXIES: second.url,
      // Long enough that the request "within the back-off" is within it on a
      // loaded machine too (400 ms was not, at times).
      PROXY_FAILOVER_BACKOFF_MS: String(BACKOFF_MS)
    }, { secrets })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    // Nothing listens on the first proxy's port yet: the second serves.
    assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
    // The first proxy failed, and was backed off, before this answer came.
    const failedBy = Date.now()
    assert.equal(second.tunnels(), 1)
    const revived = await startProxyChain({ port: firstPort })
    t.after(async () => { await revived.close() })
    // Within the back-off, the second proxy keeps serving (its pooled tunnel).
    assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
    assert.equal(revived.tunnels(), 0)
    // What is tested is the back-off, a time with no event to wait for: let
    // PROXY_FAILOVER_BACKOFF_MS pass.
    await sleep(Math.max(0, failedBy + BACKOFF_MS + 100 - Date.now()))
    assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
    assert.equal(revived.tunnels(), 1, 'after the back-off the first proxy is used again')
    await sidecar.waitForLog((l) => new RegExp(`using the proxy 127\\.0\\.0\\.1:${firstPort} again`).test(l.msg))
    await sidecar.stop()
  })

  it('every proxy failing: 502 for the last failure, each tried once', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(await freePort()),
      FALLBACK_PROXIES: proxyUrl(await freePort())
    })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'proxy_unreachable')
    await sidecar.waitForLog((l) => /no other proxy left to try/.test(l.msg))
    await sidecar.stop()
  })
})
