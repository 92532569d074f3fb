import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { isHopByHop, withoutHopByHop } from '../../src/http/hop-by-hop.js'

describe('isHopByHop', () => {
  const cases: Array<[string, boolean]> = [
    ['connection', true], ['keep-alive', true], ['te', true], ['trailer', true], ['transfer-encoding', true],
    ['upgrade', true], ['proxy-authorization', true], ['proxy-authenticate', true], ['proxy-connection', true],
    ['content-type', false], ['content-length', false], ['authorization', false], ['x-proxy-id', false]
  ]
  for (const [name, want] of cases) it(`${name} → ${want}`, () => assert.equal(isHopByHop(name), want))
})

describe('withoutHopByHop', () => {
  it('drops headers named in Connection, across several Connection values', () => {
    assert.deepEqual(
      withoutHopByHop({ connection: ['X-A , x-b', 'close'], 'x-a': '1', 'x-b': '2', 'x-c': '3' }),
      { 'x-c': '3' })
  })
  it('keeps multi-valued headers as arrays', () => {
    assert.deepEqual(withoutHopByHop({ 'set-cookie': ['a=1', 'b=2'] }), { 'set-cookie': ['a=1', 'b=2'] })
  })
  it('drops the extra names it is given', () => {
    assert.deepEqual(withoutHopByHop({ host: 'x', expect: '100-continue', a: 'b' }, new Set(['host', 'expect'])), { a: 'b' })
  })
})
