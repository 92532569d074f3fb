import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Client } from '../helpers/client.js'
import { startOrigin } from '../helpers/origin.js'
import { freePort, squidSkip, PROXY_PASSWORD, proxyUrl, startProxyChain, startSquid } from '../helpers/proxies.js'
import { startSidecar } from '../helpers/sidecar.js'

const secrets = [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)]

describe('proxy failover (FALLBACK_PROXIES)', () => {
  it('two squids, the first stopped: requests go through the second, a POST is sent once', { skip: squidSkip }, async () => {
    const origin = await startOrigin()
    const first = await startSquid()
    const second = await startSquid()
    await first.close()
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: first.url,
      FALLBACK_PROXIES: second.url
    }, { secrets })
    const client = new Client()
    try {
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
    } finally {
      await client.close()
      await sidecar.stop()
      await second.close()
      await origin.close()
    }
  })

  it('a proxy that refuses the tunnel (407) fails over too', async () => {
    const origin = await startOrigin()
    const refusing = await startProxyChain({ user: 'someone', password: 'else' })
    const good = await startProxyChain()
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(refusing.port),
      FALLBACK_PROXIES: `http://127.0.0.1:1, ${good.url}`
    }, { secrets })
    const client = new Client()
    try {
      const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
      assert.equal(res.status, 200)
      assert.equal(good.tunnels(), 1)
    } finally {
      await client.close()
      await sidecar.stop()
      await good.close()
      await refusing.close()
      await origin.close()
    }
  })

  it('returns to the first proxy after the back-off', async () => {
    const origin = await startOrigin()
    const firstPort = await freePort()
    const second = await startProxyChain()
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(firstPort),
      FALLBACK_PROXIES: second.url,
      PROXY_FAILOVER_BACKOFF_MS: '400'
    }, { secrets })
    const client = new Client()
    try {
      // Nothing listens on the first proxy's port yet: the second serves.
      assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
      assert.equal(second.tunnels(), 1)
      const revived = await startProxyChain({ port: firstPort })
      try {
        // Within the back-off, the second proxy keeps serving (its pooled tunnel).
        assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
        assert.equal(revived.tunnels(), 0)
        await sleep(500)
        assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
        assert.equal(revived.tunnels(), 1, 'after the back-off the first proxy is used again')
        await sidecar.waitForLog((l) => new RegExp(`using the proxy 127\\.0\\.0\\.1:${firstPort} again`).test(l.msg))
      } finally {
        await revived.close()
      }
    } finally {
      await client.close()
      await sidecar.stop()
      await second.close()
      await origin.close()
    }
  })

  it('every proxy failing: 502 for the last failure, each tried once', async () => {
    const origin = await startOrigin()
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(await freePort()),
      FALLBACK_PROXIES: proxyUrl(await freePort())
    })
    const client = new Client()
    try {
      const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
      assert.equal(res.status, 502)
      assert.equal(res.headers['x-sidecar-error'], 'proxy_unreachable')
      await sidecar.waitForLog((l) => /no other proxy left to try/.test(l.msg))
    } finally {
      await client.close()
      await sidecar.stop()
      await origin.close()
    }
  })
})
