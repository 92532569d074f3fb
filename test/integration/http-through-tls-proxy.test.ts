import assert from 'node:assert/strict'
import { request } from 'node:http'
import { it } from 'node:test'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { startOrigin } from '../helpers/origin.js'
import { pacScript, startPacServer } from '../helpers/pac-server.js'
import { testCa } from '../helpers/pki.js'
import { PROXY_PASSWORD, PROXY_USER, squidSkip, startSquid } from '../helpers/proxies.js'
import { startForwardProxy } from '../helpers/sidecar.js'

/** One absolute-form request to the forward proxy, as APIcast's HTTP_PROXY client sends it. */
async function get (port: number, target: string): Promise<{ status: number, error: string | undefined, body: string, ms: number }> {
  const started = Date.now()
  return await new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: target, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, error: res.headers['x-sidecar-error'] as string | undefined, body, ms: Date.now() - started }) })
    })
    req.on('error', reject)
    req.end()
  })
}

/**
 * undici sends plain http:// requests in absolute-form only to an http://
 * proxy; through an https:// one the request used to hang for good. It
 * now fails at once, before any byte leaves, and moves to the next hop.
 */
describeOrSkip('an http:// request whose proxy is an https:// one', squidSkip, () => {
  it('through the forward proxy: 502 proxy_unreachable at once, saying why and what to name instead', async (t) => {
    const origin = await startOrigin({ tls: false })
    t.after(async () => { await origin.close() })
    const issued = await (await testCa()).issue(['127.0.0.1', 'localhost'])
    const tls = await startSquid({ tls: { cert: issued.cert, key: issued.key }, hosts: ['ocsp.test'] })
    t.after(async () => { await tls.close() })
    const { sidecar, port } = await startForwardProxy({
      THREESCALE_PORTAL_ENDPOINT: 'https://portal.test:443',
      HTTP_PROXY: tls.url,
      FORWARD_PROXY_ALLOW: `ocsp.test:${origin.port}`,
      RESPONSE_HEADERS_TIMEOUT_MS: '30000'
    }, { secrets: [PROXY_PASSWORD] })
    t.after(async () => { await sidecar.close() })
    const answer = await get(port, `http://ocsp.test:${origin.port}/echo/x`)
    assert.equal(answer.status, 502)
    assert.equal(answer.error, 'proxy_unreachable')
    assert.match(answer.body, /cannot send the http:\/\/ request for ocsp\.test:\d+ through the https:\/\/ proxy 127\.0\.0\.1:\d+/)
    assert.match(answer.body, /name an http:\/\/ proxy for http:\/\/ destinations/)
    assert.ok(answer.ms < 5000, `answered in ${answer.ms} ms, not after a timeout`)
    assert.equal(origin.requests.length, 0)
    await sidecar.stop()
  })

  it('a PAC that lists an HTTPS proxy then a PROXY one for an http:// destination: the request fails over to the http:// one', async (t) => {
    const origin = await startOrigin({ tls: false })
    t.after(async () => { await origin.close() })
    const issued = await (await testCa()).issue(['127.0.0.1', 'localhost'])
    const tls = await startSquid({ tls: { cert: issued.cert, key: issued.key }, hosts: ['ocsp.test'] })
    t.after(async () => { await tls.close() })
    const plain = await startSquid({ hosts: ['ocsp.test'] })
    t.after(async () => { await plain.close() })
    const pac = await startPacServer(pacScript(`  return "HTTPS 127.0.0.1:${tls.port}; PROXY 127.0.0.1:${plain.port}";`))
    t.after(async () => { await pac.close() })
    const { sidecar, port } = await startForwardProxy({
      THREESCALE_PORTAL_ENDPOINT: 'https://127.0.0.1:1',
      BACKEND_ENDPOINT_OVERRIDE: 'https://127.0.0.1:1',
      PROXY_PAC_URL: pac.url,
      PROXY_USER,
      PROXY_PASSWORD,
      FORWARD_PROXY_ALLOW: `ocsp.test:${origin.port}`
    }, { secrets: [PROXY_PASSWORD] })
    t.after(async () => { await sidecar.close() })
    await sidecar.waitForLog((l) => l.event === 'pac_loaded')
    const answer = await get(port, `http://ocsp.test:${origin.port}/echo/x`)
    assert.equal(answer.status, 200, answer.body)
    assert.equal(origin.requests.length, 1)
    assert.ok(plain.accessLog().some((l) => l.includes(`GET http://ocsp.test:${origin.port}/echo/x`)))
    await sidecar.stop()
  })
})
