import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { basicUserinfo, Client, runConcurrently } from '../helpers/client.js'
import { BACKEND_403_XML, startOrigin, type Origin } from '../helpers/origin.js'
import { createCa, testCa } from '../helpers/pki.js'
import { squidSkip, PROXY_PASSWORD, proxyUrl, startSquid, type Squid } from '../helpers/proxies.js'
import { startSidecar } from '../helpers/sidecar.js'

const TOKEN = 'squid-token-31c4'

describeOrSkip('through squid with basic_ncsa_auth', squidSkip, () => {
  let origin: Origin
  let squid: Squid

  before(async () => {
    origin = await startOrigin()
    squid = await startSquid()
  })
  after(async () => { await squid?.close() })
  after(async () => { await origin?.close() })

  it('forwards portal and backend calls; 3,000 requests at concurrency 16 open at most 16 tunnels', async (t) => {
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: squid.url,
      UPSTREAM_MAX_CONNECTIONS: '16'
    }, { secrets: [TOKEN, PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)] })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const portal = await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: basicUserinfo(TOKEN) } })
    assert.equal(portal.status, 200)
    assert.equal(origin.requests.at(-1)?.url, `/admin/api/services.json?access_token=${TOKEN}`)

    const denied = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml`)
    assert.equal(denied.status, 403)
    assert.equal(denied.text(), BACKEND_403_XML)

    let ok = 0
    await runConcurrently(3000, 16, async () => {
      const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st&user_key=uk`)
      if (res.status === 200) ok++
    })
    assert.equal(ok, 3000)
    await client.close()
    assert.equal(await sidecar.stop(), 0)
    // squid logs a tunnel when it closes: count after the sidecar stopped.
    await squid.idle()
    const tunnels = squid.accessLog().filter((l) => / CONNECT backend\.test:/.test(l) && /\/200 /.test(l)).length
    assert.ok(tunnels >= 1 && tunnels <= 16, `squid saw ${tunnels} backend tunnels for 3,001 requests`)
  })

  it('a wrong password: 502 proxy_auth_required, the log names Basic, one attempt per request', async (t) => {
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(squid.port, 'sidecar', 'not-the-password')
    }, { secrets: ['not-the-password'] })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const before = squid.accessLog().length
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'proxy_auth_required')
    const line = await sidecar.waitForLog((l) => l.error === 'proxy_auth_required')
    assert.match(line.msg, /407 Proxy Authentication Required; it offers Basic/)
    await client.close()
    await sidecar.stop()
    await squid.idle()
    const denied = squid.accessLog().slice(before).filter((l) => /TCP_DENIED\/407/.test(l))
    assert.equal(denied.length, 1, 'the sidecar must not loop on 407')
  })

  it('a CONNECT denied by squid\'s ACL: 502 tunnel_refused with the proxy\'s 403', async (t) => {
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('forbidden.test'),
      HTTPS_PROXY: squid.url
    })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'tunnel_refused')
    const line = await sidecar.waitForLog((l) => l.error === 'tunnel_refused')
    assert.match(line.msg, /CONNECT answered 403/)
    await sidecar.stop()
  })
})

describeOrSkip('through a TLS proxy (squid https_port)', squidSkip, () => {
  it('opens TLS to the proxy, verified with the trust store, then CONNECTs inside it', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const squid = await startSquid({ tls: await (await testCa()).issue(['127.0.0.1']) })
    t.after(async () => { await squid.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: squid.url
    }, { secrets: [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)] })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    assert.match(squid.url, /^https:/)
    assert.match(sidecar.logs().find((l) => l.listener === 'backend')?.msg ?? '', /via proxy https:\/\/127\.0\.0\.1/)
    for (let i = 0; i < 20; i++) {
      const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
      assert.equal(res.status, 200)
    }
    await client.close()
    await sidecar.stop()
    await squid.idle()
    assert.equal(squid.tunnels(), 1, 'one TLS connection to the proxy and one tunnel serve all requests')
  })

  it('a proxy certificate the store does not trust: 502 tls_untrusted naming the proxy', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const squid = await startSquid({ tls: await (await createCa('Unknown Proxy CA')).issue(['127.0.0.1']) })
    t.after(async () => { await squid.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: squid.url
    })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'tls_untrusted')
    const line = await sidecar.waitForLog((l) => l.error === 'tls_untrusted')
    assert.match(line.msg, new RegExp(`TLS certificate of the proxy 127\\.0\\.0\\.1:${squid.port} is not trusted`))
    await sidecar.stop()
  })
})
