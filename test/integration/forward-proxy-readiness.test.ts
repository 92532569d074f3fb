import assert from 'node:assert/strict'
import { it } from 'node:test'
import { Client } from '../helpers/client.js'
import { startOrigin } from '../helpers/origin.js'
import { testCa } from '../helpers/pki.js'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { eventually } from '../helpers/eventually.js'
import { PROXY_PASSWORD, proxyUrl, squidSkip, startProxyChain, startSquid } from '../helpers/proxies.js'
import { startSidecar } from '../helpers/sidecar.js'
import { runCli } from '../helpers/sidecar-process.js'

const SECRETS = [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)]

interface ReadyBody {
  readonly ready: boolean
  readonly forward?: Record<string, { ok: boolean, failed?: string, via: string, steps: Array<{ name: string, ok?: boolean, fix?: string }> }>
}

it('/readyz and doctor open a tunnel to each plain destination of FORWARD_PROXY_ALLOW through the forward transport', async (t) => {
  const ca = await testCa()
  const origin = await startOrigin()
  t.after(async () => { await origin.close() })
  const proxy = await startProxyChain()
  t.after(async () => { await proxy.close() })
  const env = {
    THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
    BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
    HTTPS_PROXY: proxy.url,
    FORWARD_PROXY_PORT: '0',
    // A wildcard is not a host to open a tunnel to: only the plain entry is checked.
    FORWARD_PROXY_ALLOW: `portal.test:${origin.port},.apps.test`
  }
  const sidecar = await startSidecar(env, { secrets: SECRETS })
  t.after(async () => { await sidecar.close() })
  const client = new Client()
  t.after(async () => { await client.close() })

  const before = proxy.tunnels()
  const res = await client.send(`${sidecar.adminUrl}/readyz`)
  assert.equal(res.status, 200, res.text())
  const body = JSON.parse(res.text()) as ReadyBody
  assert.deepEqual(Object.keys(body.forward ?? {}), [`portal.test:${origin.port}`])
  const tunnel = body.forward?.[`portal.test:${origin.port}`]
  assert.equal(tunnel?.ok, true)
  assert.deepEqual(tunnel?.steps.map((s) => [s.name, s.ok]), [['proxy', true], ['connect', true]])
  assert.equal(tunnel?.via, `via proxy 127.0.0.1:${proxy.port}`)
  // The routes' two probes and the forward proxy's own CONNECT.
  assert.equal(proxy.tunnels() - before, 3)

  const doctor = await runCli({ ...env, NODE_EXTRA_CA_CERTS: ca.certFile }, ['doctor'])
  assert.equal(doctor.code, 0, doctor.stdout)
  assert.match(doctor.stdout, new RegExp(`forward proxy {2}CONNECT portal\\.test:${origin.port} {2}via proxy 127\\.0\\.0\\.1:${proxy.port}\\n {2}✓ proxy .*\\n {2}✓ CONNECT .*opened the tunnel to portal\\.test:${origin.port}`))
  for (const secret of SECRETS) assert.ok(!doctor.stdout.includes(secret))
  await sidecar.stop()
})

it('a destination the proxy refuses makes /readyz 503 and doctor exit 1, naming the CONNECT step and its fix', async (t) => {
  const ca = await testCa()
  const origin = await startOrigin()
  t.after(async () => { await origin.close() })
  const proxy = await startProxyChain()
  t.after(async () => { await proxy.close() })
  const env = {
    THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
    BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
    HTTPS_PROXY: proxy.url,
    FORWARD_PROXY_PORT: '0',
    // proxy-chain refuses forbidden.test with 403, as a proxy's policy would.
    FORWARD_PROXY_ALLOW: `portal.test:${origin.port},forbidden.test:443`
  }
  const sidecar = await startSidecar(env, { secrets: SECRETS })
  t.after(async () => { await sidecar.close() })
  const client = new Client()
  t.after(async () => { await client.close() })

  const res = await client.send(`${sidecar.adminUrl}/readyz`)
  assert.equal(res.status, 503, res.text())
  const body = JSON.parse(res.text()) as ReadyBody
  assert.equal(body.forward?.[`portal.test:${origin.port}`]?.ok, true)
  const refused = body.forward?.['forbidden.test:443']
  assert.equal(refused?.failed, 'connect')
  assert.deepEqual(refused?.steps.map((s) => [s.name, s.ok]), [['proxy', true], ['connect', false]])
  assert.match(refused?.steps[1]?.fix ?? '', /\S/)

  const doctor = await runCli({ ...env, NODE_EXTRA_CA_CERTS: ca.certFile }, ['doctor'])
  assert.equal(doctor.code, 1, doctor.stdout)
  assert.match(doctor.stdout, /forward proxy {2}CONNECT forbidden\.test:443 .*\n {2}✓ proxy .*\n {2}✗ CONNECT .*\n {6}fix: /)
  assert.match(doctor.stdout, /1 of the sections above has a problem/)
  await sidecar.stop()
})

describeOrSkip('a port-80 destination is checked as APIcast calls it: a request in absolute-form, never a CONNECT', squidSkip, () => {
  it('squid cannot reach it: /readyz 503 at the http step with squid\'s word, doctor the same; a wrong password fails at the proxy step', async (t) => {
    const ca = await testCa()
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const squid = await startSquid({ hosts: ['ocsp.test'] })
    t.after(async () => { await squid.close() })
    const env = {
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: squid.url,
      HTTP_PROXY: squid.url,
      FORWARD_PROXY_PORT: '0',
      // Nothing listens on 127.0.0.1:80 here (tests bind port 0 only): squid answers ERR_CONNECT_FAIL.
      FORWARD_PROXY_ALLOW: `portal.test:${origin.port},ocsp.test:80`
    }
    const sidecar = await startSidecar(env, { secrets: SECRETS })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })

    const res = await client.send(`${sidecar.adminUrl}/readyz`)
    assert.equal(res.status, 503, res.text())
    const body = JSON.parse(res.text()) as ReadyBody
    assert.equal(body.forward?.[`portal.test:${origin.port}`]?.ok, true)
    const plain = body.forward?.['ocsp.test:80']
    assert.deepEqual(plain?.steps.map((s) => [s.name, s.ok]), [['proxy', true], ['http', false]])
    assert.match(JSON.stringify(plain), /refused the request for ocsp\.test:80 \(it answered 503; the proxy says ERR_CONNECT_FAIL/)
    await eventually(() => squid.accessLog().filter((l) => /GET http:\/\/ocsp\.test\/ sidecar/.test(l)).length, (n) => n >= 1, 5000, 'squid\'s line for the GET')
    assert.ok(!squid.accessLog().some((l) => /CONNECT ocsp\.test/.test(l)), 'a port-80 destination was checked with CONNECT')

    const doctor = await runCli({ ...env, NODE_EXTRA_CA_CERTS: ca.certFile }, ['doctor'])
    assert.equal(doctor.code, 1, doctor.stdout)
    assert.match(doctor.stdout, new RegExp(`forward proxy {2}GET http://ocsp\\.test:80/ {2}via proxy 127\\.0\\.0\\.1:${squid.port}\\n {2}✓ proxy .*\\n {2}✗ HTTP .*ERR_CONNECT_FAIL.*\\n {6}fix: the proxy resolved ocsp\\.test but cannot connect`))
    await sidecar.stop()

    const wrong = await startSidecar({ ...env, HTTP_PROXY: proxyUrl(squid.port, 'sidecar', 'not-the-password') }, { secrets: [...SECRETS, 'not-the-password'] })
    t.after(async () => { await wrong.close() })
    const refused = JSON.parse((await client.send(`${wrong.adminUrl}/readyz`)).text()) as ReadyBody
    const step = refused.forward?.['ocsp.test:80']
    assert.equal(step?.failed, 'proxy')
    assert.match(JSON.stringify(step), /answered the request for ocsp\.test:80 with 407/)
    await wrong.stop()
  })
})
