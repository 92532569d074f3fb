import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { Client } from '../helpers/client.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { createCa } from '../helpers/pki.js'
import { squidSkip, PROXY_PASSWORD, startSquid, type Squid } from '../helpers/proxies.js'
import { startSidecar } from '../helpers/sidecar.js'


interface ReadyBody { ready: boolean, routes: Record<string, { ok: boolean, failed?: string, steps: Array<{ name: string, ok?: boolean }> }> }

describeOrSkip('/readyz checks the chain through the forwarding transport', squidSkip, () => {
  let origin: Origin
  let squid: Squid
  before(async () => {
    origin = await startOrigin()
    squid = await startSquid()
  })
  after(async () => { await squid?.close() })
  after(async () => { await origin?.close() })

  it('repeated checks reuse the pooled tunnels and leave no broken transaction in the proxy\'s log', async (t) => {
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: squid.url,
      READINESS_CACHE_MS: '1'
    }, { secrets: [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)] })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const tunnelsBefore = squid.tunnels()
    // The lines so far include the test's own wait for squid's port.
    const linesBefore = squid.accessLog().length
    for (let i = 0; i < 10; i++) {
      const res = await client.send(`${sidecar.adminUrl}/readyz`)
      assert.equal(res.status, 200, res.text())
      const body = JSON.parse(res.text()) as ReadyBody
      assert.deepEqual(body.routes.backend?.steps.map((s) => [s.name, s.ok]), [['proxy', true], ['connect', true], ['tls', true], ['http', true]])
    }
    // One tunnel per route, opened by the first check and pooled for the rest.
    assert.ok(squid.tunnels() - tunnelsBefore <= 2, `${squid.tunnels() - tunnelsBefore} tunnels for 10 checks of 2 routes`)
    const broken = squid.accessLog().slice(linesBefore).filter((l) => /transaction-end-before-headers|NONE_NONE\/000/.test(l))
    assert.deepEqual(broken, [], 'no connection opened and dropped without a request')
    // The checks and forwarding share the pool: a request now needs no new tunnel.
    const forwarded = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(forwarded.status, 200)
    assert.ok(squid.tunnels() - tunnelsBefore <= 2)
    assert.equal(await sidecar.stop(), 0)
  })
})

describe('/readyz with mutual TLS to the upstream', () => {
  it('is ready when forwarding works with UPSTREAM_TLS_CERT/KEY (it used to probe without the certificate and stay 503)', async (t) => {
    const clientCa = await createCa('On-premise 3scale Client CA')
    const pair = await clientCa.issue(['apicast-sidecar'])
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-mtls-ready-'))
    writeFileSync(join(dir, 'client.pem'), pair.cert)
    writeFileSync(join(dir, 'client-key.pem'), pair.key)
    const origin = await startOrigin({ clientCa })
    t.after(async () => { await origin.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url(),
      BACKEND_ENDPOINT_OVERRIDE: origin.url(),
      UPSTREAM_TLS_CERT: join(dir, 'client.pem'),
      UPSTREAM_TLS_KEY: join(dir, 'client-key.pem')
    })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const ready = await client.send(`${sidecar.adminUrl}/readyz`)
    assert.equal(ready.status, 200, ready.text())
    assert.ok(origin.requests.every((r) => r.clientCn === 'apicast-sidecar'), 'every probe presented the client certificate')
    assert.equal((await client.send(`${sidecar.adminUrl}/readyz?once`)).status, 200)
    await sidecar.stop()
  })
})
