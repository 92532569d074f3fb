import assert from 'node:assert/strict'
import { after, before, describe, it, type TestContext } from 'node:test'
import { request } from 'undici'
import { Client } from '../helpers/client.js'
import { eventually, poll } from '../helpers/eventually.js'
import { startOrigin, threescaleHandler, type Origin } from '../helpers/origin.js'
import { createCa } from '../helpers/pki.js'
import { freePort, proxyUrl, PROXY_PASSWORD, startProxyChain, startSilentServer, type TestProxy } from '../helpers/proxies.js'
import { startSidecar, type LogLine } from '../helpers/sidecar.js'

const client = new Client()
after(async () => { await client.close() })

interface Expectation {
  status: number
  code: string
  /** Patterns the error log line must match: the cause and the fix. */
  log: RegExp[]
}

/** Start a sidecar with `env`, send one backend request, check reply and log. */
async function expectFailure (t: TestContext, env: Record<string, string>, path: string, want: Expectation): Promise<LogLine> {
  const sidecar = await startSidecar(env, { secrets: [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)] })
  t.after(async () => { await sidecar.close() })
  const res = await client.send(sidecar.backendUrl + path)
  assert.equal(res.status, want.status, res.text())
  assert.equal(res.headers['x-sidecar-error'], want.code)
  assert.match(res.headers['content-type'] as string, /^text\/plain/)
  const line = await sidecar.waitForLog((l) => l.error === want.code && l.level !== 'info')
  assert.equal(line.level, 'error')
  assert.equal(line.status, want.status)
  for (const re of want.log) assert.match(line.msg, re)
  assert.equal(await sidecar.stop(), 0)
  return line
}

describe('failures: each maps to a status, an X-Sidecar-Error code and a log line with cause and fix', () => {
  let origin: Origin
  let proxy: TestProxy

  before(async () => {
    origin = await startOrigin()
    proxy = await startProxyChain()
  })
  after(async () => { await proxy?.close() })
  after(async () => { await origin?.close() })

  it('proxy unreachable → 502 proxy_unreachable', async (t) => {
    const port = await freePort()
    await expectFailure(t, {
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(port)
    }, '/transactions/authrep.xml', {
      status: 502,
      code: 'proxy_unreachable',
      log: [new RegExp(`cannot reach the proxy 127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`), /check the host and port in https_proxy/]
    })
  })

  it('proxy answers CONNECT with 407 → 502 proxy_auth_required naming the offered schemes, without looping', async (t) => {
    const before = proxy.authorizations.length
    await expectFailure(t, {
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(proxy.port, 'sidecar', 'wrong-password')
    }, '/transactions/authrep.xml', {
      status: 502,
      code: 'proxy_auth_required',
      log: [/proxy authentication failed/, /407 Proxy Authentication Required; it offers Basic/, /check the user and password in https_proxy/]
    })
    assert.equal(proxy.authorizations.length - before, 1, 'one request must cause exactly one CONNECT attempt')
  })

  it('proxy without credentials configured, proxy requires them → the hint says to add them', async (t) => {
    await expectFailure(t, {
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: `http://127.0.0.1:${proxy.port}`
    }, '/transactions/authrep.xml', {
      status: 502,
      code: 'proxy_auth_required',
      log: [/offers Basic/, /the proxy URL has no credentials/]
    })
  })

  it('proxy refuses the tunnel (403) → 502 tunnel_refused', async (t) => {
    await expectFailure(t, {
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('forbidden.test'),
      HTTPS_PROXY: proxy.url
    }, '/transactions/authrep.xml', {
      status: 502,
      code: 'tunnel_refused',
      log: [new RegExp(`refused the tunnel to forbidden\\.test:${origin.port} \\(CONNECT answered 403\\)`), /policy does not allow CONNECT to forbidden\.test/, /NO_PROXY/]
    })
  })

  it('the proxy cannot resolve or reach the upstream → 502 tunnel_refused', async (t) => {
    await expectFailure(t, {
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: 'https://no-such-host.invalid',
      HTTPS_PROXY: proxy.url
    }, '/transactions/authrep.xml', {
      status: 502,
      code: 'tunnel_refused',
      log: [/no-such-host\.invalid:443/, /can resolve and reach it/]
    })
  })

  it('upstream connection refused (direct) → 502 upstream_unreachable', async (t) => {
    const port = await freePort()
    await expectFailure(t, {
      THREESCALE_PORTAL_ENDPOINT: origin.url(),
      BACKEND_ENDPOINT_OVERRIDE: `https://127.0.0.1:${port}`
    }, '/transactions/authrep.xml', {
      status: 502,
      code: 'upstream_unreachable',
      log: [new RegExp(`cannot connect to 127\\.0\\.0\\.1:${port} directly \\(ECONNREFUSED\\)`), /set https_proxy/]
    })
  })

  it('at LOG_LEVEL=debug the failure keeps its cause: a debug line with the request\'s reqId and the error chain, secrets redacted', async (t) => {
    const port = await freePort()
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url(),
      BACKEND_ENDPOINT_OVERRIDE: `https://127.0.0.1:${port}`,
      LOG_LEVEL: 'debug'
    }, { secrets: ['s3cr3t-user-key'] })
    t.after(async () => { await sidecar.close() })
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_id=1&user_key=s3cr3t-user-key`)
    assert.equal(res.status, 502)
    const failed = await sidecar.waitForLog((l) => l.error === 'upstream_unreachable' && l.level === 'error')
    const debug = await sidecar.waitForLog((l) => l.level === 'debug' && l.reqId === failed.reqId && Array.isArray(l.cause))
    assert.equal(debug.failure, 'upstream_unreachable')
    assert.ok((debug.cause as Array<{ code?: string }>).some((link) => link.code === 'ECONNREFUSED'), JSON.stringify(debug.cause))
    await sidecar.stop()
  })

  it('upstream certificate from an unknown CA (through the proxy) → 502 tls_untrusted naming the issuer; no request reaches it', async (t) => {
    const rogueCa = await createCa('Corp Interception CA')
    const rogue = await startOrigin({ ca: rogueCa })
    t.after(async () => { await rogue.close() })
    await expectFailure(t, {
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: rogue.url('backend.test'),
      HTTPS_PROXY: proxy.url
    }, '/transactions/authrep.xml?service_token=st', {
      status: 502,
      code: 'tls_untrusted',
      log: [/issued by CN=Corp Interception CA/, /trust store does not know/, /NODE_EXTRA_CA_CERTS/]
    })
    assert.equal(rogue.requests.length, 0)
  })

  it('upstream certificate for another name → 502 tls_untrusted', async (t) => {
    await expectFailure(t, {
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('not-in-the-certificate.test'),
      HTTPS_PROXY: proxy.url
    }, '/transactions/authrep.xml', {
      status: 502,
      code: 'tls_untrusted',
      log: [/not-in-the-certificate\.test/, /ERR_TLS_CERT_ALTNAME_INVALID/]
    })
  })

  it('no response headers in time → 504 timeout', async (t) => {
    await expectFailure(t, {
      THREESCALE_PORTAL_ENDPOINT: origin.url(),
      BACKEND_ENDPOINT_OVERRIDE: origin.url(),
      RESPONSE_HEADERS_TIMEOUT_MS: '300'
    }, '/hang', {
      status: 504,
      code: 'timeout',
      log: [/timed out waiting for the response headers \(RESPONSE_HEADERS_TIMEOUT_MS=300\)/]
    })
  })

  it('a proxy that never answers CONNECT → 504 timeout', async (t) => {
    const silent = await startSilentServer()
    t.after(async () => { await silent.close() })
    await expectFailure(t, {
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: `http://127.0.0.1:${silent.port}`,
      CONNECT_TIMEOUT_MS: '300'
    }, '/transactions/authrep.xml', {
      status: 504,
      code: 'timeout',
      log: [new RegExp(`opening the tunnel to \\S+ through 127\\.0\\.0\\.1:${silent.port} \\(CONNECT_TIMEOUT_MS=300\\)`)]
    })
  })
})

describe('failures after the request was sent', () => {
  it('a POST whose connection breaks after it was sent is answered 502 and sent exactly once', async (t) => {
    const origin = await startOrigin({
      handler: (req, res, seen) => {
        if (req.method === 'POST') {
          req.on('end', () => res.socket?.destroy())
          req.resume()
          return
        }
        threescaleHandler(req, res, seen)
      }
    })
    t.after(async () => { await origin.close() })
    const sidecar = await startSidecar({ THREESCALE_PORTAL_ENDPOINT: origin.url(), BACKEND_ENDPOINT_OVERRIDE: origin.url() })
    t.after(async () => { await sidecar.close() })
    const res = await client.send(`${sidecar.backendUrl}/transactions.xml`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'service_token=st&service_id=1&transactions[0][usage][hits]=1'
    })
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'reset')
    // Its completion line is the sidecar's last word on it: no retry can follow.
    await sidecar.waitForLog((l) => l.method === 'POST' && l.status === 502 && l.error === 'reset')
    assert.equal(origin.requests.filter((r) => r.method === 'POST').length, 1)
    await sidecar.stop()
  })

  it('when APIcast goes away, the upstream request is aborted and logged as 499', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const sidecar = await startSidecar({ THREESCALE_PORTAL_ENDPOINT: origin.url(), BACKEND_ENDPOINT_OVERRIDE: origin.url() })
    t.after(async () => { await sidecar.close() })
    const ac = new AbortController()
    const pending = request(`${sidecar.backendUrl}/hang`, { signal: ac.signal }).catch((err: unknown) => err)
    await eventually(() => origin.requests.length, (n) => n > 0, 5000, 'the request at the origin')
    assert.equal(origin.openSockets(), 1)
    ac.abort()
    await pending
    const line = await sidecar.waitForLog((l) => l.status === 499)
    assert.match(line.msg, /client closed/)
    await poll(() => origin.openSockets(), (n) => n === 0, 1000)
    assert.equal(origin.openSockets(), 0, 'the upstream connection must be closed')
    await sidecar.stop()
  })
})
