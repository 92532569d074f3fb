import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { after, before, it } from 'node:test'
import { promisify } from 'node:util'
import { connectThrough, getOverTunnel } from '../helpers/connect-client.js'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { eventually } from '../helpers/eventually.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { createCa, testCa, type CertificateAuthority } from '../helpers/pki.js'
import { freePort, PROXY_PASSWORD, proxyUrl, squidSkip, startSilentServer, startSquid, type Squid } from '../helpers/proxies.js'
import { startForwardProxy, type RunningSidecar } from '../helpers/sidecar.js'

const run = promisify(execFile)
const SECRETS = [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)]

/** The sidecar with its forward proxy on a free port, and that port; the proxy password must never reach its output. */
async function startForwarding (env: Record<string, string>, secrets: readonly string[] = SECRETS): Promise<{ sidecar: RunningSidecar, port: number }> {
  return await startForwardProxy(env, { secrets })
}

describeOrSkip('the forward proxy, through squid with Basic', squidSkip, () => {
  let origin: Origin
  let squid: Squid
  let ca: CertificateAuthority
  let sidecar: RunningSidecar
  let port: number

  before(async () => {
    ca = await testCa()
    origin = await startOrigin()
    squid = await startSquid()
    // FORWARD_PROXY_ALLOW unset: the two endpoints' host:port are allowed.
    ;({ sidecar, port } = await startForwarding({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: squid.url
    }))
  })
  after(async () => { await sidecar?.close() })
  after(async () => { await squid?.close() })
  after(async () => { await origin?.close() })

  it('curl reaches an allowed destination through a tunnel squid authenticated; TLS is end to end', async () => {
    const { stdout } = await run('curl', ['-sS', '--noproxy', '', '-x', `http://127.0.0.1:${port}`, '--cacert', ca.certFile,
      '-o', '/dev/null', '-w', '%{http_code}', `${origin.url('portal.test')}/admin/api/services.json?access_token=t`], { env: { PATH: process.env.PATH ?? '' } })
    assert.equal(stdout, '200')
    await eventually(() => squid.accessLog().filter((l) => new RegExp(`TCP_TUNNEL/200 .*CONNECT portal\\.test:${origin.port} sidecar`).test(l)).length, (n) => n === 1, 5000, 'squid\'s tunnel line')
    assert.equal(origin.requests.at(-1)?.url, '/admin/api/services.json?access_token=t')
  })

  it('a destination not allowed gets 403 destination_not_allowed, and squid never hears of it', async () => {
    for (const target of [`elsewhere.test:${origin.port}`, 'portal.test:1', `[::1]:${origin.port}`, `127.0.0.1:${origin.port}`]) {
      const reply = await connectThrough(port, target)
      assert.equal(reply.status, 403, target)
      assert.equal(reply.headers['x-sidecar-error'], 'destination_not_allowed', target)
      assert.match(reply.body, /FORWARD_PROXY_ALLOW/)
    }
    const line = await sidecar.waitForLog((l) => l.error === 'destination_not_allowed' && l.level === 'warn')
    assert.match(line.msg, new RegExp(`does not allow elsewhere\\.test:${origin.port}`))
    assert.ok(!squid.accessLog().some((l) => /elsewhere\.test|portal\.test:1 /.test(l)), 'a refused destination reached squid')
  })

  it('names are compared normalised: upper case and a trailing dot are the allowed host', async () => {
    const reply = await connectThrough(port, `PORTAL.Test.:${origin.port}`)
    assert.equal(reply.status, 200)
    const res = await getOverTunnel(reply.socket, 'portal.test', ca.certPem, '/admin/api/services.json?access_token=t')
    assert.equal(res.status, 200)
  })

  it('a malformed target gets 400; so does an origin-form request, which is not for a proxy', async () => {
    for (const target of ['portal.test', 'user@portal.test:443', 'portal.test:99999', 'portal.test:443/x']) {
      const reply = await connectThrough(port, target)
      assert.equal(reply.status, 400, target)
      assert.equal(reply.headers['x-sidecar-error'], 'bad_request')
    }
    const res = await fetch(`http://127.0.0.1:${port}/admin/api/services.json`)
    assert.equal(res.status, 400)
    assert.equal(res.headers.get('x-sidecar-error'), 'not_a_proxy_request')
  })

  it('a destination squid cannot connect to: 502 tunnel_refused, with squid\'s word', async (t) => {
    const { sidecar: s, port: p } = await startForwarding({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      HTTPS_PROXY: squid.url,
      FORWARD_PROXY_ALLOW: `portal.test:${origin.port},portal.test:1`
    })
    t.after(async () => { await s.close() })
    const reply = await connectThrough(p, 'portal.test:1')
    assert.equal(reply.status, 502)
    assert.equal(reply.headers['x-sidecar-error'], 'tunnel_refused')
    const line = await s.waitForLog((l) => l.error === 'tunnel_refused' && l.level === 'error')
    assert.match(line.msg, /refused the tunnel to portal\.test:1 \(CONNECT answered 503; the proxy says ERR_CONNECT_FAIL/)
    assert.match(line.msg, /the destination APIcast asked for|check the port/)
    await s.stop()
  })

  it('a wrong password: 502 proxy_auth_required, the 407 logged, one attempt per CONNECT', async (t) => {
    const { sidecar: s, port: p } = await startForwarding({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      HTTPS_PROXY: proxyUrl(squid.port, 'sidecar', 'not-the-password')
    }, ['not-the-password'])
    t.after(async () => { await s.close() })
    const before = squid.accessLog().length
    const reply = await connectThrough(p, `portal.test:${origin.port}`)
    assert.equal(reply.status, 502)
    assert.equal(reply.headers['x-sidecar-error'], 'proxy_auth_required')
    const line = await s.waitForLog((l) => l.error === 'proxy_auth_required' && l.level === 'error')
    assert.match(line.msg, /answered CONNECT with 407 Proxy Authentication Required; it offers Basic/)
    await s.stop()
    await eventually(() => squid.accessLog().slice(before).filter((l) => /TCP_DENIED\/407/.test(l)).length, (n) => n >= 1, 5000, 'squid\'s 407 line')
    assert.equal(squid.accessLog().slice(before).filter((l) => /TCP_DENIED\/407/.test(l)).length, 1, 'the sidecar must not loop on 407')
  })

  it('the proxy down: 502 proxy_unreachable; with FALLBACK_PROXIES the tunnel fails over to squid', async (t) => {
    const down = await freePort()
    const { sidecar: s, port: p } = await startForwarding({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      HTTPS_PROXY: proxyUrl(down)
    })
    t.after(async () => { await s.close() })
    const unreachable = await connectThrough(p, `portal.test:${origin.port}`)
    assert.equal(unreachable.status, 502)
    assert.equal(unreachable.headers['x-sidecar-error'], 'proxy_unreachable')
    const line = await s.waitForLog((l) => l.error === 'proxy_unreachable' && l.level === 'error')
    assert.match(line.msg, new RegExp(`cannot reach the proxy 127\\.0\\.0\\.1:${down} \\(ECONNREFUSED\\)`))
    await s.stop()
    const { sidecar: f, port: fp } = await startForwarding({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      HTTPS_PROXY: proxyUrl(down),
      FALLBACK_PROXIES: squid.url
    })
    t.after(async () => { await f.close() })
    const reply = await connectThrough(fp, `portal.test:${origin.port}`)
    assert.equal(reply.status, 200)
    assert.equal((await getOverTunnel(reply.socket, 'portal.test', ca.certPem, '/admin/api/services.json?access_token=t')).status, 200)
    const warn = await f.waitForLog((l) => l.level === 'warn' && /failing over to/.test(l.msg))
    assert.equal(warn.next, `127.0.0.1:${squid.port}`)
    await f.stop()
  })

  it('a proxy that never answers CONNECT: 504 timeout naming CONNECT_TIMEOUT_MS', async (t) => {
    const silent = await startSilentServer()
    t.after(async () => { await silent.close() })
    const { sidecar: s, port: p } = await startForwarding({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      HTTPS_PROXY: `http://127.0.0.1:${silent.port}`,
      CONNECT_TIMEOUT_MS: '300'
    })
    t.after(async () => { await s.close() })
    const reply = await connectThrough(p, `portal.test:${origin.port}`)
    assert.equal(reply.status, 504)
    assert.equal(reply.headers['x-sidecar-error'], 'timeout')
    const line = await s.waitForLog((l) => l.error === 'timeout' && l.level === 'error')
    assert.match(line.msg, /CONNECT_TIMEOUT_MS=300/)
    await s.stop()
  })

  it('a loopback destination goes direct, never through squid', async (t) => {
    const { sidecar: s, port: p } = await startForwarding({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      HTTPS_PROXY: squid.url,
      FORWARD_PROXY_ALLOW: `localhost:${origin.port}`
    })
    t.after(async () => { await s.close() })
    const reply = await connectThrough(p, `localhost:${origin.port}`)
    assert.equal(reply.status, 200)
    assert.equal((await getOverTunnel(reply.socket, 'localhost', ca.certPem, '/admin/api/services.json?access_token=t')).status, 200)
    const line = await s.waitForLog((l) => l.listener === 'forward' && typeof l.bytesDown === 'number')
    assert.equal(line.proxy, 'direct')
    await s.stop()
    assert.ok(!squid.accessLog().some((l) => /CONNECT localhost:/.test(l)))
  })

  it('stops cleanly, and no secret reached its output', async () => {
    assert.equal(await sidecar.stop(), 0)
  })
})

describeOrSkip('the forward proxy, through squid over TLS (an https:// proxy)', squidSkip, () => {
  let origin: Origin
  before(async () => { origin = await startOrigin() })
  after(async () => { await origin?.close() })

  it('tunnels inside TLS to the proxy, verified by the trust store; an untrusted proxy certificate is 502 tls_untrusted', async (t) => {
    const ca = await testCa()
    for (const [proxyCa, expected] of [[ca, 200], [await createCa('Unknown Proxy CA'), 502]] as const) {
      const squid = await startSquid({ tls: await proxyCa.issue(['127.0.0.1']) })
      t.after(async () => { await squid.close() })
      const { sidecar, port } = await startForwarding({ THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'), HTTPS_PROXY: squid.url })
      t.after(async () => { await sidecar.close() })
      const reply = await connectThrough(port, `portal.test:${origin.port}`)
      assert.equal(reply.status, expected)
      if (expected === 200) {
        assert.equal((await getOverTunnel(reply.socket, 'portal.test', ca.certPem, '/admin/api/services.json?access_token=t')).status, 200)
      } else {
        assert.equal(reply.headers['x-sidecar-error'], 'tls_untrusted')
        const line = await sidecar.waitForLog((l) => l.error === 'tls_untrusted' && l.level === 'error')
        assert.match(line.msg, new RegExp(`the TLS certificate of the proxy 127\\.0\\.0\\.1:${squid.port} is not trusted`))
      }
      await sidecar.stop()
      await squid.close()
    }
  })
})

for (const auth of ['digest', 'ntlm'] as const) {
  describeOrSkip(`the forward proxy, through squid with ${auth}`, squidSkip, () => {
    let origin: Origin
    let squid: Squid
    before(async () => {
      origin = await startOrigin()
      squid = await startSquid({ auth })
    })
    after(async () => { await squid?.close() })
    after(async () => { await origin?.close() })

    it(`curl gets through with ${auth}; a wildcard allowlist lets in what it covers and nothing else`, async (t) => {
      const ca = await testCa()
      const { sidecar, port } = await startForwarding({
        THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
        HTTPS_PROXY: auth === 'ntlm' ? proxyUrl(squid.port, 'CORP\\sidecar') : squid.url,
        FORWARD_PROXY_ALLOW: `*.test:${origin.port}`
      })
      t.after(async () => { await sidecar.close() })
      for (const name of ['portal.test', 'backend.test']) {
        const { stdout } = await run('curl', ['-sS', '--noproxy', '', '-x', `http://127.0.0.1:${port}`, '--cacert', ca.certFile,
          '-o', '/dev/null', '-w', '%{http_code}', `${origin.url(name)}/admin/api/services.json?access_token=t`], { env: { PATH: process.env.PATH ?? '' } })
        assert.equal(stdout, '200', name)
      }
      const refused = await connectThrough(port, 'portal.test:1')
      assert.equal(refused.status, 403)
      assert.equal(await sidecar.stop(), 0)
      await eventually(() => squid.accessLog().filter((l) => /TCP_TUNNEL\/200 .*CONNECT (portal|backend)\.test:/.test(l)).length, (n) => n === 2, 5000, 'squid\'s tunnel lines')
      assert.ok(!squid.accessLog().some((l) => /portal\.test:1 /.test(l)))
    })
  })
}
