import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { request } from 'node:http'
import { after, before, it } from 'node:test'
import { promisify } from 'node:util'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { eventually } from '../helpers/eventually.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { freePort, PROXY_PASSWORD, proxyUrl, squidSkip, startSquid, type Squid } from '../helpers/proxies.js'
import { startForwardProxy, type RunningSidecar } from '../helpers/sidecar.js'

const run = promisify(execFile)
const SECRETS = [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)]

/** The sidecar with its forward proxy on a free port, and that port; the proxy password must never reach its output. */
async function startForwarding (env: Record<string, string>, secrets: readonly string[] = SECRETS): Promise<{ sidecar: RunningSidecar, port: number }> {
  return await startForwardProxy(env, { secrets })
}

interface Answer { status: number, headers: Record<string, string | string[] | undefined>, body: string }

/** One request to the forward proxy with `target` as its request-target (absolute-form), as APIcast's HTTP_PROXY client sends it. */
async function send (port: number, target: string, options: { method?: string, headers?: Record<string, string>, body?: string } = {}): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: options.method ?? 'GET', path: target, headers: options.headers, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body }) })
    })
    req.on('error', reject)
    req.end(options.body)
  })
}

describeOrSkip('the forward proxy\'s absolute-form http:// requests, through squid with Basic', squidSkip, () => {
  let origin: Origin
  let squid: Squid
  let sidecar: RunningSidecar
  let port: number
  let ocsp: string

  before(async () => {
    origin = await startOrigin({ tls: false })
    squid = await startSquid({ hosts: ['ocsp.test'] })
    ocsp = `http://ocsp.test:${origin.port}`
    ;({ sidecar, port } = await startForwarding({
      THREESCALE_PORTAL_ENDPOINT: 'https://portal.test:443',
      HTTPS_PROXY: squid.url,
      HTTP_PROXY: squid.url,
      FORWARD_PROXY_ALLOW: `ocsp.test:${origin.port}`
    }))
  })
  after(async () => { await sidecar?.close() })
  after(async () => { await squid?.close() })
  after(async () => { await origin?.close() })

  it('curl -x reaches an allowed http:// URL: squid authenticates the sidecar, the path travels as written', async () => {
    const { stdout } = await run('curl', ['-sS', '--noproxy', '', '-x', `http://127.0.0.1:${port}`, '-o', '/dev/null', '-w', '%{http_code}',
      `${ocsp}/echo/MFQw%2FTA%3D?x=%41`], { env: { PATH: process.env.PATH ?? '' } })
    assert.equal(stdout, '200')
    const seen = origin.requests.at(-1)
    assert.equal(seen?.url, '/echo/MFQw%2FTA%3D?x=%41')
    assert.equal(seen?.headers.host, `ocsp.test:${origin.port}`)
    await eventually(() => squid.accessLog().filter((l) => new RegExp(`TCP_MISS/200 .*GET http://ocsp\\.test:${origin.port}/echo/MFQw%2FTA%3D\\S* sidecar `).test(l)).length,
      (n) => n === 1, 5000, 'squid\'s line for the request, authenticated as the sidecar (squid strips the query from its log)')
    const line = await sidecar.waitForLog((l) => l.listener === 'forward' && l.msg === 'request' && l.status === 200)
    assert.equal(line.method, 'GET')
    assert.match(String(line.path), new RegExp(`^http://ocsp\\.test:${origin.port}/echo/`))
  })

  it('an OCSP-style POST: the body arrives whole; APIcast\'s own Proxy-Authorization never travels on', async () => {
    const body = 'x'.repeat(83)
    const res = await send(port, `${ocsp}/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/ocsp-request', 'proxy-authorization': 'Basic YXBpY2FzdDpub3Bl', 'proxy-connection': 'keep-alive' },
      body
    })
    assert.equal(res.status, 200)
    const echoed = JSON.parse(res.body) as { method: string, headers: Record<string, string>, body: string }
    assert.equal(echoed.method, 'POST')
    assert.equal(echoed.body, body)
    assert.equal(echoed.headers['content-type'], 'application/ocsp-request')
    assert.equal(echoed.headers['proxy-authorization'], undefined)
    assert.equal(echoed.headers['proxy-connection'], undefined)
  })

  it('a destination not allowed: 403 destination_not_allowed, and squid never hears of it', async () => {
    for (const target of ['http://elsewhere.test/', `http://ocsp.test:${origin.port + 1}/`, `http://127.0.0.1:${origin.port}/echo`]) {
      const res = await send(port, target)
      assert.equal(res.status, 403, target)
      assert.equal(res.headers['x-sidecar-error'], 'destination_not_allowed', target)
      assert.match(res.body, /FORWARD_PROXY_ALLOW/)
    }
    const line = await sidecar.waitForLog((l) => l.error === 'destination_not_allowed' && l.listener === 'forward' && l.status === 403)
    assert.match(String(line.msg), /does not allow elsewhere\.test:80/)
    assert.ok(!squid.accessLog().some((l) => /elsewhere\.test|127\.0\.0\.1:\d+\/echo/.test(l)), 'a refused destination reached squid')
  })

  it('an https:// URL, an origin-form target and TRACE: a clear 4xx each, nothing forwarded', async () => {
    const before = origin.requests.length
    const https = await send(port, `https://ocsp.test:${origin.port}/`)
    assert.equal(https.status, 400)
    assert.equal(https.headers['x-sidecar-error'], 'not_a_proxy_request')
    assert.match(https.body, /use CONNECT \(HTTPS_PROXY\)/)
    const originForm = await send(port, '/admin/api/services.json')
    assert.equal(originForm.status, 400)
    assert.match(originForm.body, /forward proxy: it serves CONNECT host:port and absolute-form http:\/\//)
    const trace = await send(port, `${ocsp}/echo`, { method: 'TRACE' })
    assert.equal(trace.status, 405)
    assert.equal(trace.headers.allow, 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT')
    assert.equal(origin.requests.length, before)
  })

  it('counts the requests under listener="forward"', async () => {
    const res = await fetch(`${sidecar.adminUrl}/metrics`)
    const text = await res.text()
    assert.match(text, /sidecar_requests_total\{[^}]*listener="forward"[^}]*status="200"[^}]*\} [1-9]/)
    assert.match(text, /sidecar_requests_total\{[^}]*listener="forward"[^}]*status="403"[^}]*\} [1-9]/)
  })

  it('a wrong password: 502 proxy_auth_required naming the request, the 407 never relayed, one request at squid', async (t) => {
    const { sidecar: s, port: p } = await startForwarding({
      THREESCALE_PORTAL_ENDPOINT: 'https://portal.test:443',
      HTTP_PROXY: proxyUrl(squid.port, 'sidecar', 'not-the-password'),
      FORWARD_PROXY_ALLOW: `ocsp.test:${origin.port}`
    }, ['not-the-password'])
    t.after(async () => { await s.close() })
    const before = squid.accessLog().length
    const res = await send(p, `${ocsp}/echo`, { method: 'POST', body: 'report' })
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'proxy_auth_required')
    assert.equal(res.headers['proxy-authenticate'], undefined)
    const line = await s.waitForLog((l) => l.error === 'proxy_auth_required' && l.level === 'error')
    assert.match(String(line.msg), new RegExp(`answered the request for ocsp\\.test:${origin.port} with 407 Proxy Authentication Required`))
    assert.match(String(line.msg), /check the user and password in http_proxy .*with Basic credentials only/)
    await s.stop()
    await eventually(() => squid.accessLog().slice(before).filter((l) => /TCP_DENIED\/407/.test(l)).length, (n) => n >= 1, 5000, 'squid\'s 407 line')
    assert.equal(squid.accessLog().slice(before).filter((l) => /TCP_DENIED\/407/.test(l)).length, 1, 'a refused password must not be sent again')
  })

  it('a route to an http:// endpoint, a wrong password: 502 proxy_auth_required, and the 407\'s body dropped, not written after it', async (t) => {
    const { sidecar: s } = await startForwarding({
      THREESCALE_PORTAL_ENDPOINT: 'https://portal.test:443',
      BACKEND_ENDPOINT_OVERRIDE: `http://backend.test:${origin.port}`,
      HTTP_PROXY: proxyUrl(squid.port, 'sidecar', 'not-the-password')
    }, ['not-the-password'])
    t.after(async () => { await s.close() })
    const before = squid.accessLog().length
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${s.backendUrl}/transactions/authrep.xml?service_token=t&service_id=1`)
      assert.equal(res.status, 502)
      assert.equal(res.headers.get('x-sidecar-error'), 'proxy_auth_required')
      await res.text()
    }
    const line = await s.waitForLog((l) => l.error === 'proxy_auth_required' && l.level === 'error' && typeof l.reqId === 'number')
    assert.match(String(line.msg), new RegExp(`answered the request for backend\\.test:${origin.port} with 407`))
    assert.equal(await s.stop(), 0)
    // Lockout protection covers absolute-form too: the refused password went out once, not three times.
    await eventually(() => squid.accessLog().slice(before).filter((l) => /TCP_DENIED\/407/.test(l)).length, (n) => n >= 1, 5000, 'squid\'s 407 line')
    assert.equal(squid.accessLog().slice(before).filter((l) => /TCP_DENIED\/407/.test(l)).length, 1)
  })

  it('the proxy down: 502 proxy_unreachable; with FALLBACK_PROXIES even a POST fails over, as nothing of it left', async (t) => {
    const down = await freePort()
    const { sidecar: s, port: p } = await startForwarding({
      THREESCALE_PORTAL_ENDPOINT: 'https://portal.test:443',
      HTTP_PROXY: proxyUrl(down),
      FORWARD_PROXY_ALLOW: `ocsp.test:${origin.port}`
    })
    t.after(async () => { await s.close() })
    const unreachable = await send(p, `${ocsp}/echo`)
    assert.equal(unreachable.status, 502)
    assert.equal(unreachable.headers['x-sidecar-error'], 'proxy_unreachable')
    await s.stop()

    const { sidecar: f, port: fp } = await startForwarding({
      THREESCALE_PORTAL_ENDPOINT: 'https://portal.test:443',
      HTTP_PROXY: proxyUrl(down),
      FALLBACK_PROXIES: squid.url,
      FORWARD_PROXY_ALLOW: `ocsp.test:${origin.port}`
    })
    t.after(async () => { await f.close() })
    const before = origin.requests.length
    const res = await send(fp, `${ocsp}/echo`, { method: 'POST', body: 'once' })
    assert.equal(res.status, 200)
    assert.equal((JSON.parse(res.body) as { body: string }).body, 'once')
    assert.equal(origin.requests.length, before + 1, 'the POST arrived exactly once')
    const warn = await f.waitForLog((l) => l.level === 'warn' && /failing over to/.test(String(l.msg)))
    assert.equal(warn.next, `127.0.0.1:${squid.port}`)
    await f.stop()
  })

  it('a loopback destination goes direct; one that is down is 502 upstream_unreachable', async (t) => {
    const down = await freePort()
    const { sidecar: s, port: p } = await startForwarding({
      THREESCALE_PORTAL_ENDPOINT: 'https://portal.test:443',
      HTTP_PROXY: squid.url,
      FORWARD_PROXY_ALLOW: `127.0.0.1:${origin.port},127.0.0.1:${down}`
    })
    t.after(async () => { await s.close() })
    const res = await send(p, `http://127.0.0.1:${origin.port}/echo`)
    assert.equal(res.status, 200)
    const unreachable = await send(p, `http://127.0.0.1:${down}/`)
    assert.equal(unreachable.status, 502)
    assert.equal(unreachable.headers['x-sidecar-error'], 'upstream_unreachable')
    const line = await s.waitForLog((l) => l.error === 'upstream_unreachable' && l.level === 'error')
    assert.match(String(line.msg), new RegExp(`127\\.0\\.0\\.1:${down}`))
    await s.stop()
    assert.ok(!squid.accessLog().some((l) => /http:\/\/127\.0\.0\.1/.test(l)), 'a loopback destination went through squid')
  })

  it('stops cleanly, and no secret reached its output', async () => {
    assert.equal(await sidecar.stop(), 0)
  })
})
