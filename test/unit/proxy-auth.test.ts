import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { basicAuthorization, canAnswerDigest, digestAuthorization, ntlmAuthenticate, ntlmIdentity, ntlmNegotiate, parseAuthSchemes, parseChallenges, type Challenge } from '../../src/egress/proxy-auth.js'

describe('parseChallenges', () => {
  const cases: Array<[string | string[] | undefined, Challenge[]]> = [
    [undefined, []],
    ['Basic realm="Squid proxy"', [{ scheme: 'basic', params: { realm: 'Squid proxy' } }]],
    ['Basic realm="a, b", charset="UTF-8"', [{ scheme: 'basic', params: { realm: 'a, b', charset: 'UTF-8' } }]],
    [['NTLM', 'Negotiate', 'Basic realm="x"'], [{ scheme: 'ntlm', params: {} }, { scheme: 'negotiate', params: {} }, { scheme: 'basic', params: { realm: 'x' } }]],
    ['NTLM TlRMTVNTUAACAAAADAAMADAAAAA=', [{ scheme: 'ntlm', params: {}, token68: 'TlRMTVNTUAACAAAADAAMADAAAAA=' }]],
    ['Digest realm="proxy", nonce="abc/+=", qop="auth,auth-int", algorithm=SHA-256, stale=false, Basic realm="proxy"',
      [{ scheme: 'digest', params: { realm: 'proxy', nonce: 'abc/+=', qop: 'auth,auth-int', algorithm: 'SHA-256', stale: 'false' } }, { scheme: 'basic', params: { realm: 'proxy' } }]],
    ['Digest realm="with \\"quotes\\""', [{ scheme: 'digest', params: { realm: 'with "quotes"' } }]],
    ['Negotiate YIIB9wYGKwYBBQUCoIIB==, NTLM', [{ scheme: 'negotiate', params: {}, token68: 'YIIB9wYGKwYBBQUCoIIB==' }, { scheme: 'ntlm', params: {} }]]
  ]
  for (const [header, want] of cases) it(JSON.stringify(header), () => assert.deepEqual(parseChallenges(header), want))
})

describe('parseAuthSchemes', () => {
  const cases: Array<[string | string[] | undefined, string[]]> = [
    [undefined, []],
    ['Basic realm="corp"', ['Basic']],
    ['Basic realm="a, b", charset="UTF-8"', ['Basic']],
    [['Negotiate', 'NTLM', 'Basic realm="x"'], ['Negotiate', 'NTLM', 'Basic']],
    ['Digest realm="x", qop="auth", nonce="abc", algorithm=SHA-256, Basic realm="x"', ['Digest', 'Basic']],
    ['Negotiate YIIB9wYGKwYBBQUCoIIB==', ['Negotiate']],
    // the proxy's spelling, each scheme once; the grammar of parseChallenges
    ['NTLM, Negotiate, NTLM', ['NTLM', 'Negotiate']],
    ['Basic realm=corp, Digest realm="with \\"quotes\\", x", nonce="n"', ['Basic', 'Digest']],
    ['Negotiate YIIB9wYGKwYBBQUCoIIB==, NTLM', ['Negotiate', 'NTLM']]
  ]
  for (const [header, want] of cases) it(JSON.stringify(header), () => assert.deepEqual(parseAuthSchemes(header), want))
})

describe('digestAuthorization (RFC 7616 §3.9.1 examples)', () => {
  const challenge = (algorithm: string): Challenge => ({
    scheme: 'digest',
    params: { realm: 'http-auth@example.org', qop: 'auth, auth-int', algorithm, nonce: '7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v', opaque: 'FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS' }
  })
  const input = { username: 'Mufasa', password: 'Circle of Life', method: 'GET', uri: '/dir/index.html', nc: 1, cnonce: 'f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ' }
  const cases: Array<[string, string]> = [
    ['MD5', '8ca523f5e9506fed4657c9700eebdbec'],
    ['SHA-256', '753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1']
  ]
  for (const [algorithm, response] of cases) {
    it(algorithm, () => {
      const header = digestAuthorization({ ...input, challenge: challenge(algorithm) })
      assert.match(header, /^Digest /)
      assert.match(header, new RegExp(`response="${response}"`))
      assert.match(header, /qop=auth, nc=00000001, cnonce="f2\/wE4q74E6zIJEtWaHKaf5wv\/H5QzzpXusqGemxURZJ"/)
      assert.match(header, /opaque="FQhe\/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"/)
      assert.doesNotMatch(header, /Circle of Life/)
    })
  }

  it('RFC 2069 form when the proxy offers no qop', () => {
    const header = digestAuthorization({ ...input, challenge: { scheme: 'digest', params: { realm: 'r', nonce: 'n' } } })
    assert.doesNotMatch(header, /qop=|nc=|cnonce=/)
  })

  it('canAnswerDigest: known algorithms, qop=auth or none, a nonce', () => {
    assert.equal(canAnswerDigest(challenge('SHA-256')), true)
    assert.equal(canAnswerDigest(challenge('MD5-sess')), true)
    assert.equal(canAnswerDigest({ scheme: 'digest', params: { nonce: 'n', qop: 'auth-int' } }), false)
    assert.equal(canAnswerDigest({ scheme: 'digest', params: { nonce: 'n', algorithm: 'SHA-1' } }), false)
    assert.equal(canAnswerDigest({ scheme: 'digest', params: { realm: 'no nonce' } }), false)
    assert.equal(canAnswerDigest({ scheme: 'basic', params: {} }), false)
  })
})

describe('basicAuthorization', () => {
  it('encodes user:password as UTF-8', () => assert.equal(basicAuthorization('sidecar', 'p@ss:w%rd/#?'), 'Basic ' + Buffer.from('sidecar:p@ss:w%rd/#?').toString('base64')))
})

describe('NTLM messages', () => {
  it('ntlmIdentity splits DOMAIN\\user', () => {
    assert.deepEqual(ntlmIdentity('CORP\\alice'), { domain: 'CORP', user: 'alice' })
    assert.deepEqual(ntlmIdentity('alice'), { domain: '', user: 'alice' })
    assert.deepEqual(ntlmIdentity('alice@corp.example'), { domain: '', user: 'alice@corp.example' })
  })

  it('negotiate is a type 1 message naming the domain', () => {
    const raw = Buffer.from(ntlmNegotiate('CORP\\alice').replace(/^NTLM /, ''), 'base64')
    assert.equal(raw.subarray(0, 8).toString('latin1'), 'NTLMSSP\0')
    assert.equal(raw.readUInt32LE(8), 1)
    assert.ok(raw.includes(Buffer.from('CORP')))
  })

  it('authenticate answers a type 2 challenge with NTLMv2, never the password itself', () => {
    // A type 2 message: Unicode, extended security and target info flags, a server challenge, target info (empty AV list).
    const targetInfo = Buffer.from([0, 0, 0, 0]) // MsvAvEOL
    const type2 = Buffer.alloc(48 + targetInfo.length)
    type2.write('NTLMSSP\0', 0, 'latin1')
    type2.writeUInt32LE(2, 8)
    type2.writeUInt32LE(0x00000001 | 0x00080000 | 0x00800000, 20)
    Buffer.from('0123456789abcdef', 'hex').copy(type2, 24)
    type2.writeUInt16LE(targetInfo.length, 40)
    type2.writeUInt16LE(targetInfo.length, 42)
    type2.writeUInt32LE(48, 44)
    targetInfo.copy(type2, 48)
    const header = ntlmAuthenticate(type2.toString('base64'), 'CORP\\alice', 'Secret-Pa55')
    const raw = Buffer.from(header.replace(/^NTLM /, ''), 'base64')
    assert.equal(raw.readUInt32LE(8), 3)
    const ntLength = raw.readUInt16LE(20)
    assert.ok(ntLength > 24, `an NTLMv2 response is longer than NTLMv1's 24 bytes (got ${ntLength})`)
    assert.ok(raw.includes(Buffer.from('alice', 'utf16le')))
    assert.ok(!raw.includes(Buffer.from('Secret-Pa55', 'utf16le')) && !raw.includes(Buffer.from('Secret-Pa55')))
  })

  it('an unreadable challenge is an error, not a crash', () => {
    assert.throws(() => ntlmAuthenticate(Buffer.from('not ntlm at all').toString('base64'), 'alice', 'pw'))
  })
})
