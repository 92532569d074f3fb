import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { defaultForwardAllow, ForwardAllowError, isAllowed, parseAbsoluteTarget, parseConnectTarget, parseForwardAllow, plainDestinations } from '../../src/egress/forward-destination.js'

describe('parseConnectTarget: one spelling of each destination', () => {
  /** [CONNECT target, normalised authority, or undefined when refused]. */
  const TABLE: Array<[string, string | undefined]> = [
    ['sso.corp.example:443', 'sso.corp.example:443'],
    ['SSO.Corp.Example:443', 'sso.corp.example:443'],
    ['sso.corp.example.:443', 'sso.corp.example:443'],
    ['sso.corp.example..:443', 'sso.corp.example:443'],
    ['s%53o.corp.example:443', 'sso.corp.example:443'],
    ['bücher.example:443', 'xn--bcher-kva.example:443'],
    ['10.1.2.3:8443', '10.1.2.3:8443'],
    ['0x0a.1.2.3:443', '10.1.2.3:443'],
    ['167772161:443', '10.0.0.1:443'],
    ['10.1:443', '10.0.0.1:443'],
    ['[2001:DB8:0:0::1]:443', '[2001:db8::1]:443'],
    ['[::ffff:10.1.2.3]:443', '[::ffff:a01:203]:443'],
    ['example.com:0443', 'example.com:443'],
    // refused: no port, a bad port, userinfo, a path, bare IPv6, junk
    ['example.com', undefined],
    ['example.com:', undefined],
    ['example.com:0', undefined],
    ['example.com:65536', undefined],
    ['user@example.com:443', undefined],
    ['example.com:443/path', undefined],
    ['2001:db8::1:443', undefined],
    ['[example.com]:443', undefined],
    ['exa mple.com:443', undefined],
    ['exa%00mple.com:443', undefined],
    [':443', undefined],
    ['', undefined]
  ]
  for (const [target, want] of TABLE) {
    it(`${JSON.stringify(target)} → ${want ?? 'refused'}`, () => {
      const got = parseConnectTarget(target)
      assert.equal(got.ok ? got.destination.authority : undefined, want)
    })
  }

  it('keeps host, port and a URL for the egress rules', () => {
    const got = parseConnectTarget('[2001:db8::1]:8443')
    assert.ok(got.ok)
    assert.equal(got.destination.host, '2001:db8::1')
    assert.equal(got.destination.port, 8443)
    assert.equal(got.destination.url.href, 'https://[2001:db8::1]:8443/')
  })
})

describe('parseAbsoluteTarget', () => {
  const TABLE: Array<[string, string | undefined]> = [
    ['http://Ocsp.Corp.Example/x', 'ocsp.corp.example:80'],
    ['http://ocsp.corp.example.:8080/x', 'ocsp.corp.example:8080'],
    ['https://ocsp.corp.example/x', undefined],
    ['http://u:p@ocsp.corp.example/x', undefined]
  ]
  for (const [url, want] of TABLE) {
    it(`${url} → ${want ?? 'refused'}`, () => {
      const got = parseAbsoluteTarget(new URL(url))
      assert.equal(got.ok ? got.destination.authority : undefined, want)
    })
  }
})

describe('FORWARD_PROXY_ALLOW: NO_PROXY patterns, matched after normalisation', () => {
  /** [allowlist, CONNECT target, allowed?]. */
  const TABLE: Array<[string, string, boolean]> = [
    ['sso.corp.example:443', 'sso.corp.example:443', true],
    ['sso.corp.example:443', 'SSO.CORP.EXAMPLE.:443', true],
    ['sso.corp.example:443', 'sso.corp.example:8443', false],
    ['sso.corp.example:443', 'evil.example:443', false],
    ['sso.corp.example:443', 'sso.corp.example.evil.example:443', false],
    ['sso.corp.example', 'sso.corp.example:8443', true],
    ['*.3scale.net:443', 'su1.3scale.net:443', true],
    ['*.3scale.net:443', 'a.b.3scale.net:443', true],
    ['*.3scale.net:443', 'not3scale.net:443', false],
    ['*.3scale.net:443', 'su1.3scale.net:80', false],
    ['.corp.example', 'idp.corp.example:443', true],
    ['10.1.2.3:443', '0x0a.1.2.3:443', true],
    ['10.1.2.3:443', '167838211:443', true],
    ['10.0.0.0/8', '10.9.9.9:443', true],
    ['10.0.0.0/8', '11.0.0.1:443', false],
    ['10.0.0.0/8', 'ten.corp.example:443', false],
    ['[2001:db8::1]:443', '[2001:DB8:0::1]:443', true],
    ['2001:db8::1', '[2001:db8::1]:443', true],
    ['a.example, b.example:443', 'b.example:443', true],
    ['a.example, b.example:443', 'c.example:443', false]
  ]
  for (const [allow, target, want] of TABLE) {
    it(`${allow} ${want ? 'allows' : 'refuses'} ${target}`, () => {
      const parsed = parseConnectTarget(target)
      assert.ok(parsed.ok, target)
      assert.equal(isAllowed(parsed.destination, parseForwardAllow(allow)), want)
    })
  }

  it('refuses `*`, an empty list and a malformed range', () => {
    assert.throws(() => parseForwardAllow('*'), (err: unknown) => err instanceof ForwardAllowError && /open proxy/.test(err.message))
    assert.throws(() => parseForwardAllow('sso.example:443, *'), ForwardAllowError)
    assert.throws(() => parseForwardAllow(' , '), ForwardAllowError)
    assert.throws(() => parseForwardAllow('10.0.0.0/99'), ForwardAllowError)
  })

  it('defaults to the two endpoints\' host:port, default ports made explicit', () => {
    const allow = defaultForwardAllow([new URL('https://Acme-Admin.3scale.net'), new URL('http://backend.corp.example:8080/x')])
    assert.deepEqual(allow.entries, ['acme-admin.3scale.net:443', 'backend.corp.example:8080'])
    const ok = parseConnectTarget('acme-admin.3scale.net:443')
    assert.ok(ok.ok && isAllowed(ok.destination, allow))
    const other = parseConnectTarget('acme-admin.3scale.net:80')
    assert.ok(other.ok && !isAllowed(other.destination, allow))
  })

  it('plain destinations are the entries naming one host and port', () => {
    const allow = parseForwardAllow('sso.corp.example:443, *.3scale.net:443, .corp.example, 10.0.0.0/8, [2001:db8::1]:8443, bare.example')
    assert.deepEqual(plainDestinations(allow).map((d) => d.authority), ['sso.corp.example:443', '[2001:db8::1]:8443'])
  })
})
