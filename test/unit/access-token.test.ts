import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { appendAccessToken, queryHasAccessToken, readBasicToken } from '../../src/http/access-token.js'

const b64 = (s: string): string => Buffer.from(s).toString('base64')

describe('readBasicToken', () => {
  const cases: Array<[string | undefined, ReturnType<typeof readBasicToken>]> = [
    [undefined, { kind: 'none' }],
    ['', { kind: 'none' }],
    ['Basic ' + b64('tok:'), { kind: 'token', token: 'tok' }],
    ['basic ' + b64(':tok'), { kind: 'token', token: 'tok' }],
    ['BASIC ' + b64('tok'), { kind: 'token', token: 'tok' }],
    ['Basic ' + b64('user:pass:with:colons'), { kind: 'token', token: 'user' }],
    ['Basic ' + b64(':'), { kind: 'empty' }],
    ['Basic ' + b64('ünï:'), { kind: 'token', token: 'ünï' }],
    ['Bearer abc', { kind: 'other' }],
    ['Basic', { kind: 'invalid', reason: 'Authorization: Basic credentials are not valid base64' }],
    ['Basic a b c', { kind: 'invalid', reason: 'Authorization: Basic credentials are not valid base64' }],
    ['Basic ' + b64('a\rb:'), { kind: 'invalid', reason: 'the access token contains control characters' }],
    ['Basic ' + b64(':a\u007fb'), { kind: 'invalid', reason: 'the access token contains control characters' }]
  ]
  for (const [header, want] of cases) {
    it(String(header), () => assert.deepEqual(readBasicToken(header), want))
  }
})

describe('queryHasAccessToken / appendAccessToken', () => {
  const has: Array<[string, boolean]> = [
    ['', false], ['access_token=x', true], ['a=1&access_token=', true], ['my_access_token=x', false], ['access%5Ftoken=x', true]
  ]
  for (const [q, want] of has) it(`has(${JSON.stringify(q)}) → ${want}`, () => assert.equal(queryHasAccessToken(q), want))
  it('appends without re-encoding the rest', () => {
    assert.equal(appendAccessToken('a=%2F&b', 't k'), 'a=%2F&b&access_token=t%20k')
    assert.equal(appendAccessToken('', 'x'), 'access_token=x')
  })
})
