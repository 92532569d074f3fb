import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Client, runConcurrently } from '../helpers/client.js'
import { eventually } from '../helpers/eventually.js'
import { startOrigin } from '../helpers/origin.js'
import { freePort, proxyUrl } from '../helpers/proxies.js'
import { startSidecar } from '../helpers/sidecar.js'

describe('an outage is summarised in the log, not repeated per request', () => {
  it('3,000 requests through a proxy that is down: one explaining error line per route and cause, a completion line each', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(await freePort())
    })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })

    const started = Date.now()
    await runConcurrently(3000, 16, async () => {
      const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
      assert.equal(res.status, 502)
      assert.equal(res.headers['x-sidecar-error'], 'proxy_unreachable')
    })
    const seconds = (Date.now() - started) / 1000
    const lines = await eventually(() => sidecar.logs().filter((l) => l.listener === 'backend' && l.error === 'proxy_unreachable' && l.status === 502),
      (done) => done.length >= 3000, 10_000, 'a completion line for each of the 3,000 requests')
    const errors = lines.filter((l) => l.level === 'error')
    // The first at once, then at most one per 10 s.
    assert.ok(errors.length >= 1 && errors.length <= 1 + Math.ceil(seconds / 10), `${errors.length} error lines in ${seconds} s`)
    assert.match(errors[0]?.msg ?? '', /cannot reach the proxy 127\.0\.0\.1:\d+ \(ECONNREFUSED\); check the host and port in https_proxy/)
    assert.equal(lines.length, 3000, 'every request has its completion line')
    assert.ok(lines.every((l) => typeof l.reqId === 'number'))
    const counted = errors.slice(1).reduce((n, l) => n + Number(l.failedSinceLastLine), 0)
    assert.ok(counted <= 3000 - errors.length)
    assert.equal(await sidecar.stop(), 0)
  })
})
