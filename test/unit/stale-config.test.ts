import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { StaleConfigDir } from '../../src/stale-config/stale-config-dir.js'
import { isConfigPath, StaleConfigCache, type StaleCollector } from '../../src/stale-config/stale-config.js'

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

/**
 * One step on a collection named `c`, of a cache whose maxBytes (and so
 * collection budget) is 10: `want` is whether collect() gave a collector,
 * or whether commit() stored the body.
 */
type Step =
  | { collect: string, key?: string, length?: number, want: boolean }
  | { add: string, bytes: number }
  | { commit: string, want: boolean }
  | { abandon: string }

/**
 * The collection rules: [case, steps, bytes the collections still hold,
 * the bodies stored by key]. A collection's key is its name unless given.
 */
const COLLECTIONS: Array<[string, Step[], number, Record<string, number>]> = [
  ['a body without a length is counted as it grows, and stored at its end', [
    { collect: 'a', want: true }, { add: 'a', bytes: 4 }, { add: 'a', bytes: 3 }, { commit: 'a', want: true }
  ], 0, { a: 7 }],
  ['a declared length is reserved up front', [
    { collect: 'a', length: 6, want: true }, { collect: 'b', length: 5, want: false }, { collect: 'c', length: 4, want: true }
  ], 10, {}],
  ['a declared length past maxBytes is never collected', [
    { collect: 'a', length: 11, want: false }
  ], 0, {}],
  ['a declared length is stored once filled', [
    { collect: 'a', length: 6, want: true }, { add: 'a', bytes: 2 }, { add: 'a', bytes: 4 }, { commit: 'a', want: true }
  ], 0, { a: 6 }],
  ['a body shorter than its declared length is not stored', [
    { collect: 'a', length: 6, want: true }, { add: 'a', bytes: 5 }, { commit: 'a', want: false }
  ], 0, {}],
  ['a body longer than its declared length is abandoned at once', [
    { collect: 'a', length: 3, want: true }, { add: 'a', bytes: 4 }, { collect: 'b', length: 10, want: true }, { commit: 'a', want: false }
  ], 10, {}],
  ['a second read of a key being collected is relayed, not collected', [
    { collect: 'a', want: true }, { collect: 'a2', key: 'a', want: false }, { add: 'a', bytes: 2 }, { commit: 'a', want: true },
    { collect: 'a3', key: 'a', want: true }
  ], 0, { a: 2 }],
  ['a key is free again once its collection is abandoned', [
    { collect: 'a', want: true }, { abandon: 'a' }, { collect: 'a2', key: 'a', want: true }, { add: 'a2', bytes: 1 }, { commit: 'a2', want: true }
  ], 0, { a: 1 }],
  ['the collection that would pass the budget is abandoned, its bytes released; the others go on', [
    { collect: 'a', want: true }, { collect: 'b', want: true }, { add: 'a', bytes: 6 }, { add: 'b', bytes: 3 }, { add: 'b', bytes: 2 },
    { collect: 'c', length: 4, want: true }, { add: 'a', bytes: 1 }, { commit: 'b', want: false }, { commit: 'a', want: false }, { abandon: 'c' }
  ], 0, {}],
  ['a reservation leaves room only for what it did not reserve', [
    { collect: 'a', length: 8, want: true }, { collect: 'b', want: true }, { add: 'b', bytes: 2 }, { add: 'b', bytes: 1 },
    { collect: 'c', want: true }, { add: 'a', bytes: 8 }, { commit: 'a', want: true }, { commit: 'b', want: false }
  ], 0, { a: 8 }],
  ['one body as large as the budget fits, alone', [
    { collect: 'a', want: true }, { add: 'a', bytes: 10 }, { collect: 'b', length: 1, want: false }, { commit: 'a', want: true }
  ], 0, { a: 10 }],
  ['abandon and commit are idempotent; add after either does nothing', [
    { collect: 'a', length: 4, want: true }, { abandon: 'a' }, { abandon: 'a' }, { add: 'a', bytes: 4 }, { commit: 'a', want: false },
    { collect: 'b', want: true }, { add: 'b', bytes: 1 }, { commit: 'b', want: true }, { commit: 'b', want: false }, { add: 'b', bytes: 9 }, { abandon: 'b' }
  ], 0, { b: 1 }]
]

describe('StaleConfigCache.collect: one collection per key, all within one budget', () => {
  for (const [name, steps, collecting, stored] of COLLECTIONS) {
    it(name, () => {
      const cache = new StaleConfigCache({ maxAgeMs: 60_000, maxBytes: 10 })
      const collectors = new Map<string, { key: string, collector: StaleCollector, sent: Buffer[] }>()
      const committed = new Map<string, Buffer>()
      for (const [i, step] of steps.entries()) {
        const where = `step ${i + 1}: ${JSON.stringify(step)}`
        if ('collect' in step) {
          const key = step.key ?? step.collect
          const headers: Record<string, string> = step.length !== undefined ? { 'content-length': String(step.length) } : {}
          const collector = cache.collect(key, headers)
          assert.equal(collector !== undefined, step.want, where)
          if (collector !== undefined) collectors.set(step.collect, { key, collector, sent: [] })
        } else if ('add' in step) {
          const c = collectors.get(step.add)
          const chunk = Buffer.alloc(step.bytes, String(i % 10))
          c?.sent.push(chunk)
          c?.collector.add(chunk)
        } else if ('commit' in step) {
          const c = collectors.get(step.commit)
          assert.equal(c?.collector.commit(), step.want, where)
          if (c !== undefined && step.want) committed.set(c.key, Buffer.concat(c.sent))
        } else {
          collectors.get(step.abandon)?.collector.abandon()
        }
      }
      assert.equal(cache.collectingBytes, collecting, 'bytes still held by collections')
      const got: Record<string, number> = {}
      for (const { key } of collectors.values()) {
        const hit = cache.lookup(key)
        if (hit === undefined) continue
        got[key] = hit.response.body.length
        assert.deepEqual(hit.response.body, committed.get(key), `${key}: the body as relayed`)
      }
      assert.deepEqual(got, stored)
    })
  }

  it('keeps the headers as they were at collect(), without cookie, length or age', () => {
    const cache = new StaleConfigCache({ maxAgeMs: 60_000, maxBytes: 100 })
    const headers: Record<string, string | string[]> = { 'content-type': 'application/json', 'content-length': '2', 'set-cookie': ['sid=1'], age: '3' }
    const collector = cache.collect('k', headers)
    // The relay marks its own response while draining; that is no part of what is replayed later.
    headers.connection = 'close'
    collector?.add(Buffer.from('{}'))
    assert.equal(collector?.commit(), true)
    assert.deepEqual(cache.lookup('k')?.response.headers, { 'content-type': 'application/json' })
  })

  for (const value of ['-1', '1.5', '0x10', '', ' 4', '99999999999999999999']) {
    it(`a Content-Length of ${JSON.stringify(value)} is not trusted: the body is counted as it grows`, () => {
      const cache = new StaleConfigCache({ maxAgeMs: 60_000, maxBytes: 10 })
      const collector = cache.collect('k', { 'content-length': value })
      assert.equal(cache.collectingBytes, 0)
      collector?.add(Buffer.from('abc'))
      assert.equal(collector?.commit(), true)
      assert.equal(cache.lookup('k')?.response.body.toString(), 'abc')
    })
  }
})

describe('StaleConfigCache with STALE_CONFIG_DIR', () => {
  const key = (c: string): string => c.repeat(64)
  const made: string[] = []
  after(() => { for (const path of made) rmSync(path, { recursive: true, force: true }) })
  const tempDir = (): string => {
    const path = mkdtempSync(join(tmpdir(), 'sidecar-stale-'))
    made.push(path)
    return path
  }
  const noError = (err: unknown): void => { throw err }

  it('writes entries through, mode 0600, named by key, and a new cache restores them', async () => {
    const path = tempDir()
    const dir = new StaleConfigDir(path, noError)
    const first = new StaleConfigCache({ maxAgeMs: 60_000, maxBytes: 1024, dir })
    first.store(key('a'), { 'content-type': 'application/json' }, Buffer.from('{"a":1}'))
    first.store(key('b'), {}, Buffer.from('bbb'))
    await dir.idle()
    assert.deepEqual(readdirSync(path).sort(), [`${key('a')}.json`, `${key('b')}.json`])
    assert.equal(statSync(join(path, `${key('a')}.json`)).mode & 0o777, 0o600)

    const second = new StaleConfigCache({ maxAgeMs: 60_000, maxBytes: 1024, dir: new StaleConfigDir(path, noError) })
    assert.deepEqual(second.restore(), { loaded: 2, skipped: [] })
    assert.equal(second.lookup(key('a'))?.response.body.toString(), '{"a":1}')
    assert.deepEqual(second.lookup(key('a'))?.response.headers, { 'content-type': 'application/json' })
    assert.equal(second.bytes, 10)
  })

  it('restores only what is young enough and fits, removes the rest and half-written files, and skips unreadable ones', async () => {
    const path = tempDir()
    let now = 1_000_000
    const dir = new StaleConfigDir(path, noError)
    const writer = new StaleConfigCache({ maxAgeMs: 60_000, maxBytes: 1024, dir, now: () => now })
    writer.store(key('a'), {}, Buffer.from('old'))
    now += 50_000
    writer.store(key('b'), {}, Buffer.from('x'.repeat(8)))
    now += 1_000
    writer.store(key('c'), {}, Buffer.from('y'.repeat(8)))
    await dir.idle()
    writeFileSync(join(path, `${key('d')}.json`), 'not json')
    writeFileSync(join(path, 'unrelated.txt'), 'left alone')
    mkdirSync(join(path, '.tmp-crashed')) // a write cut short by a crash

    now += 20_000 // a is 71 s old now: past maxAge
    const readerDir = new StaleConfigDir(path, noError)
    const reader = new StaleConfigCache({ maxAgeMs: 60_000, maxBytes: 10, dir: readerDir, now: () => now })
    assert.deepEqual(reader.restore(), { loaded: 1, skipped: [`${key('d')}.json`] })
    assert.equal(reader.lookup(key('c'))?.response.body.toString(), 'y'.repeat(8), 'the newest that fits')
    assert.equal(reader.lookup(key('b')), undefined, 'did not fit beside the newer one')
    assert.equal(reader.lookup(key('a')), undefined, 'too old')
    await readerDir.idle()
    assert.deepEqual(readdirSync(path).sort(), [`${key('c')}.json`, `${key('d')}.json`, 'unrelated.txt'].sort())
  })

  it('an entry evicted or expired in memory is removed from the directory too', async () => {
    const path = tempDir()
    const dir = new StaleConfigDir(path, noError)
    const cache = new StaleConfigCache({ maxAgeMs: 60_000, maxBytes: 6, dir })
    cache.store(key('a'), {}, Buffer.from('aaaa'))
    cache.store(key('b'), {}, Buffer.from('bbbb'))
    await dir.idle()
    assert.deepEqual(readdirSync(path), [`${key('b')}.json`])
  })

  it('a write that fails is reported once through onError; the entry stays in memory', async () => {
    const path = join(tempDir(), 'gone')
    const errors: unknown[] = []
    const dir = new StaleConfigDir(path, (err) => { errors.push(err) })
    const cache = new StaleConfigCache({ maxAgeMs: 60_000, maxBytes: 100, dir })
    cache.store(key('a'), {}, Buffer.from('a'))
    await dir.idle()
    assert.equal(errors.length, 1)
    assert.equal(cache.lookup(key('a'))?.response.body.toString(), 'a')
  })
})
