import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { PacAnswerError, pacEgress, parsePacAnswer } from '../../src/egress/pac-answer.js'

/** What FindProxyForURL may answer → the hops used (normalised), the entries skipped. */
const ANSWERS: Array<[unknown, string, string[]]> = [
  ['DIRECT', 'DIRECT', []],
  ['direct', 'DIRECT', []],
  ['PROXY proxy.corp:8080', 'PROXY proxy.corp:8080', []],
  ['PROXY a:8080; PROXY b:8080; DIRECT', 'PROXY a:8080; PROXY b:8080; DIRECT', []],
  ['  PROXY a:8080 ;PROXY b:3128;  ', 'PROXY a:8080; PROXY b:3128', []],
  // No port: 80 for PROXY, 443 for HTTPS, as in Chrome.
  ['PROXY a', 'PROXY a', []],
  ['HTTPS secure.corp', 'HTTPS secure.corp', []],
  ['HTTPS secure.corp:8443', 'HTTPS secure.corp:8443', []],
  ['HTTP a:81', 'PROXY a:81', []],
  ['PROXY [fd00::1]:3128', 'PROXY [fd00::1]:3128', []],
  ['PROXY 10.0.0.1:3128', 'PROXY 10.0.0.1:3128', []],
  // SOCKS is skipped (named in the warning); what follows DIRECT is never reached.
  ['SOCKS5 s:1080; PROXY a:8080', 'PROXY a:8080', ['SOCKS5 s:1080']],
  ['SOCKS s:1080; SOCKS4 t:1080; DIRECT', 'DIRECT', ['SOCKS s:1080', 'SOCKS4 t:1080']],
  ['DIRECT; PROXY a:8080', 'DIRECT', []]
]

/** Answers that are garbage → what the error says. */
const GARBAGE: Array<[unknown, RegExp]> = [
  [42, /returned number \(42\), not a string/],
  [null, /returned null/],
  [undefined, /returned undefined/],
  ['', /returned an empty string/],
  [' ; ', /returned an empty string/],
  ['PROXIE a:8080', /"PROXIE a:8080" is not DIRECT, PROXY host:port/],
  ['PROXY', /"PROXY" is not DIRECT, PROXY host:port/],
  ['PROXY a:8080 b:8080', /is not DIRECT/],
  ['PROXY user:pw@a:8080', /must be a bare host:port/],
  ['PROXY a:8080/path', /must be a bare host:port/],
  ['PROXY a:99999', /has no valid host:port/],
  ['SOCKS5 s:1080', /names only SOCKS proxies/],
  ['x'.repeat(300), /…/]
]

describe('parsePacAnswer', () => {
  for (const [answer, text, skipped] of ANSWERS) {
    it(`${JSON.stringify(answer)} → ${text}`, () => {
      const parsed = parsePacAnswer(answer)
      assert.equal(parsed.text, text)
      assert.deepEqual(parsed.skipped, skipped)
    })
  }
  for (const [answer, says] of GARBAGE) {
    it(`${JSON.stringify(answer)?.slice(0, 40) ?? 'undefined'} is garbage`, () => {
      assert.throws(() => parsePacAnswer(answer), (err: unknown) => err instanceof PacAnswerError && says.test(err.message))
    })
  }
  it('quotes at most 100 characters of what the script returned', () => {
    assert.throws(() => parsePacAnswer(`PROXIE ${'a'.repeat(500)}`), (err: unknown) => err instanceof Error && err.message.length < 400 && !err.message.includes("a".repeat(101)))
  })
})

describe('pacEgress', () => {
  const credentials = { user: 'DOMAIN\\svc', password: 'p@ss' }
  it('proxies in order, each with PROXY_USER and the password, direct after them when the answer ends in DIRECT', () => {
    const egress = pacEgress(new URL('https://su1.3scale.net'), parsePacAnswer('PROXY a:8080; HTTPS b:8443; DIRECT'), credentials)
    assert.equal(egress.kind, 'proxy')
    if (egress.kind !== 'proxy') return
    assert.equal(egress.proxy.url.href, 'http://a:8080/')
    assert.equal(egress.proxy.username, 'DOMAIN\\svc')
    assert.equal(egress.proxy.password, 'p@ss')
    assert.deepEqual(egress.fallbacks.map((p) => p.url.href), ['https://b:8443/'])
    assert.equal(egress.thenDirect, true)
    assert.equal(egress.pac, 'PROXY a:8080; HTTPS b:8443; DIRECT')
  })
  it('no DIRECT at the end: no direct hop', () => {
    const egress = pacEgress(new URL('https://su1.3scale.net'), parsePacAnswer('PROXY a:8080'), credentials)
    assert.equal(egress.kind === 'proxy' && egress.thenDirect, false)
  })
  it('DIRECT first: direct, by the PAC', () => {
    assert.deepEqual(pacEgress(new URL('https://su1.3scale.net'), parsePacAnswer('DIRECT'), credentials), { kind: 'direct', reason: 'pac', pac: 'DIRECT' })
  })
  it('loopback is direct whatever the PAC says', () => {
    for (const host of ['127.0.0.1', 'localhost', '[::1]']) {
      assert.deepEqual(pacEgress(new URL(`https://${host}:8443`), parsePacAnswer('PROXY a:8080'), credentials), { kind: 'direct', reason: 'loopback' })
    }
  })
  it('without PROXY_USER, no credentials: the password alone names no one', () => {
    const egress = pacEgress(new URL('https://su1.3scale.net'), parsePacAnswer('PROXY a:8080'), { user: undefined, password: 'p@ss' })
    assert.equal(egress.kind === 'proxy' && egress.proxy.password, '')
  })
})
