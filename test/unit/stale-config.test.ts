import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { isConfigPath, StaleConfigCache } from '../../src/stale-config.js'

describe('isConfigPath: APIcast configuration reads are kept, nothing else', () => {
  const cases: Array<[string, boolean]> = [
    ['/admin/api/services.json', true],
    ['/admin/api/services/2555417777820/proxy/configs/production/latest.json', true],
    ['/admin/api/services/2555417777820/proxy/configs/sandbox/42.json', true],
    ['/admin/api/services/2555417777820/proxy/configs/production.json', true],
    ['/admin/api/account/proxy_configs/production.json', true],
    ['/admin/api/services/12/proxy.json', true],
    ['/admin/api/nginx/spec.json', true],
    ['/admin/api/accounts.json', false],
    ['/admin/api/services/12/metrics.json', false],
    ['/admin/api/services.json/extra', false],
    ['/transactions/authrep.xml', false],
    ['/transactions.xml', false],
    ['/', false]
  ]
  for (const [path, want] of cases) it(`${path} → ${want}`, () => assert.equal(isConfigPath(path), want))
})

describe('StaleConfigCache', () => {
  const body = (s: string): Buffer => Buffer.from(s)
  const clock = (): { now: () => number, advance: (ms: number) => void } => {
    let t = 1_000_000
    return { now: () => t, advance: (ms) => { t += ms } }
  }

  it('keys only GET configuration reads, by target and credentials, hashed', () => {
    const cache = new StaleConfigCache({ maxAgeMs: 60_000, maxBytes: 1024 })
    const path = '/admin/api/services.json'
    const a = cache.key('GET', path, `${path}?access_token=SECRET-A`, undefined)
    const b = cache.key('GET', path, `${path}?access_token=SECRET-B`, undefined)
    const h = cache.key('GET', path, path, 'Basic U0VDUkVULUE6')
    assert.ok(a !== undefined && b !== undefined && h !== undefined)
    assert.notEqual(a, b, 'another token is another entry')
    assert.notEqual(a, h)
    assert.match(a, /^[0-9a-f]{64}$/)
    assert.doesNotMatch(a + b + h, /SECRET/)
    assert.equal(cache.key('POST', path, path, undefined), undefined)
    assert.equal(cache.key('HEAD', path, path, undefined), undefined)
    assert.equal(cache.key('GET', '/transactions/authrep.xml', '/transactions/authrep.xml?user_key=x', undefined), undefined)
  })

  it('serves a stored response with its age until maxAge, then drops it', () => {
    const c = clock()
    const cache = new StaleConfigCache({ maxAgeMs: 10_000, maxBytes: 1024, now: c.now })
    assert.equal(cache.store('k', { 'content-type': 'application/json', 'content-length': '2', 'set-cookie': 'sid=1', age: '3' }, body('{}')), true)
    c.advance(4_500)
    const hit = cache.lookup('k')
    assert.equal(hit?.ageSeconds, 4)
    assert.deepEqual(hit?.response.headers, { 'content-type': 'application/json' }, 'no cookie, length or age is replayed')
    assert.equal(hit?.response.body.toString(), '{}')
    c.advance(6_000)
    assert.equal(cache.lookup('k'), undefined)
    assert.equal(cache.size, 0)
    assert.equal(cache.bytes, 0)
  })

  it('a newer response replaces the older one', () => {
    const cache = new StaleConfigCache({ maxAgeMs: 10_000, maxBytes: 1024 })
    cache.store('k', {}, body('old'))
    cache.store('k', {}, body('newer'))
    assert.equal(cache.lookup('k')?.response.body.toString(), 'newer')
    assert.equal(cache.bytes, 5)
  })

  it('stays within maxBytes, evicting the least recently stored, and refuses a body larger than the bound', () => {
    const cache = new StaleConfigCache({ maxAgeMs: 10_000, maxBytes: 10 })
    cache.store('a', {}, body('aaaa'))
    cache.store('b', {}, body('bbbb'))
    cache.store('c', {}, body('cccc'))
    assert.equal(cache.lookup('a'), undefined)
    assert.equal(cache.lookup('b')?.response.body.toString(), 'bbbb')
    assert.equal(cache.lookup('c')?.response.body.toString(), 'cccc')
    assert.ok(cache.bytes <= 10)
    assert.equal(cache.store('d', {}, body('x'.repeat(11))), false)
    assert.equal(cache.lookup('d'), undefined)
    assert.equal(cache.size, 2)
  })
})
