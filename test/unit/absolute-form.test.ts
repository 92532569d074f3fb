import assert from 'node:assert/strict'
import type { IncomingHttpHeaders } from 'node:http'
import { describe, it } from 'node:test'
import { parseForwardAllow } from '../../src/egress/forward-destination.js'
import { FORWARD_PROXY_ALLOWS, rewriteAbsoluteForm } from '../../src/forward-proxy/absolute-form.js'

const ALLOW = parseForwardAllow('ocsp.corp.example:80,*.pki.example,10.0.0.0/8:8080,[2001:db8::1]:80')

function req (url: string, headers: IncomingHttpHeaders = {}, method = 'GET'): { method: string, url: string, headers: IncomingHttpHeaders } {
  return { method, url, headers }
}

describe('rewriteAbsoluteForm: what goes to the destination', () => {
  /** [request-target, destination authority, path sent, Host sent]. */
  const FORWARDED: Array<[string, string, string, string]> = [
    ['http://ocsp.corp.example/', 'ocsp.corp.example:80', '/', 'ocsp.corp.example'],
    ['http://ocsp.corp.example', 'ocsp.corp.example:80', '/', 'ocsp.corp.example'],
    ['http://ocsp.corp.example:80/MFQw%2FTA%3D', 'ocsp.corp.example:80', '/MFQw%2FTA%3D', 'ocsp.corp.example'],
    ['http://OCSP.Corp.Example./a/../b?x=%41&y', 'ocsp.corp.example:80', '/a/../b?x=%41&y', 'ocsp.corp.example'],
    ['HTTP://ocsp.corp.example?q=1', 'ocsp.corp.example:80', '/?q=1', 'ocsp.corp.example'],
    ['http://ocsp.corp.example/x#frag', 'ocsp.corp.example:80', '/x', 'ocsp.corp.example'],
    ['http://crl.pki.example:8081/ca.crl', 'crl.pki.example:8081', '/ca.crl', 'crl.pki.example:8081'],
    ['http://10.1.2.3:8080/', '10.1.2.3:8080', '/', '10.1.2.3:8080'],
    ['http://0x0a.1.2.3:8080/', '10.1.2.3:8080', '/', '10.1.2.3:8080'],
    ['http://[2001:DB8::1]/ocsp', '[2001:db8::1]:80', '/ocsp', '[2001:db8::1]']
  ]
  for (const [target, authority, path, host] of FORWARDED) {
    it(`${target} → ${authority} ${path}`, () => {
      const got = rewriteAbsoluteForm(req(target, { host: 'whatever.example' }), ALLOW)
      assert.ok(got.ok, got.ok ? '' : got.error.message)
      assert.equal(got.destination.authority, authority)
      assert.equal(got.outgoing.path, path)
      assert.equal(got.outgoing.headers.host, host)
      assert.equal(got.outgoing.method, 'GET')
    })
  }

  it('APIcast\'s Proxy-Authorization and the hop-by-hop headers stay here; the rest travels as it came', () => {
    const got = rewriteAbsoluteForm(req('http://ocsp.corp.example/', {
      'proxy-authorization': 'Basic c2VjcmV0',
      'proxy-connection': 'keep-alive',
      connection: 'keep-alive, x-drop',
      'x-drop': 'gone',
      'keep-alive': 'timeout=5',
      te: 'trailers',
      expect: '100-continue',
      'content-type': 'application/ocsp-request',
      'content-length': '83'
    }, 'POST'), ALLOW)
    assert.ok(got.ok)
    assert.deepEqual(got.outgoing.headers, { 'content-type': 'application/ocsp-request', 'content-length': '83', host: 'ocsp.corp.example' })
    assert.equal(got.outgoing.method, 'POST')
  })
})

describe('rewriteAbsoluteForm: what is refused, with which status and code', () => {
  /** [request-target, method, status, X-Sidecar-Error, the message says]. */
  const REFUSED: Array<[string, string, number, string, RegExp]> = [
    ['http://elsewhere.example/', 'GET', 403, 'destination_not_allowed', /does not allow elsewhere\.example:80: FORWARD_PROXY_ALLOW/],
    ['http://ocsp.corp.example:8080/', 'GET', 403, 'destination_not_allowed', /ocsp\.corp\.example:8080/],
    ['http://10.1.2.3/', 'GET', 403, 'destination_not_allowed', /10\.1\.2\.3:80/],
    ['https://ocsp.corp.example/', 'GET', 400, 'not_a_proxy_request', /use CONNECT \(HTTPS_PROXY\)/],
    ['/admin/api/services.json', 'GET', 400, 'not_a_proxy_request', /forward proxy: it serves CONNECT host:port and absolute-form http:\/\//],
    ['*', 'OPTIONS', 400, 'not_a_proxy_request', /forward proxy/],
    ['ftp://ocsp.corp.example/', 'GET', 400, 'bad_request', /only http:\/\/ URLs/],
    ['http://user:pw@ocsp.corp.example/', 'GET', 400, 'bad_request', /must not carry credentials/],
    ['http://ocsp.corp.example:99999/', 'GET', 400, 'bad_request', /not a valid URL/],
    ['http://ocsp.corp.example/', 'TRACE', 405, 'method_not_allowed', /echo/],
    ['http://ocsp.corp.example/', 'TRACK', 405, 'method_not_allowed', /echo/]
  ]
  for (const [target, method, status, code, says] of REFUSED) {
    it(`${method} ${target} → ${status} ${code}`, () => {
      const got = rewriteAbsoluteForm(req(target, {}, method), ALLOW)
      assert.ok(!got.ok)
      assert.equal(got.error.statusCode, status)
      assert.equal(got.error.headers['x-sidecar-error'], code)
      assert.match(got.error.message, says)
      if (status === 405) assert.equal(got.error.headers.allow, FORWARD_PROXY_ALLOWS)
    })
  }

  it('an expectation other than 100-continue: 417', () => {
    const got = rewriteAbsoluteForm(req('http://ocsp.corp.example/', { expect: 'x-something' }), ALLOW)
    assert.ok(!got.ok)
    assert.equal(got.error.statusCode, 417)
  })
})
