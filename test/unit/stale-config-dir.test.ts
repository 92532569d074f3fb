import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { decodeEntry, encodeEntryHeader, StaleConfigDir } from '../../src/stale-config/stale-config-dir.js'
import type { StoredResponse } from '../../src/stale-config/stale-config.js'

const HEADERS = { 'content-type': 'application/json', vary: ['accept', 'authorization'] }
/** A body a text format would have to escape: newlines, NUL, bytes that are not UTF-8. */
const BINARY = Buffer.from([0x7b, 0x0a, 0x00, 0xff, 0xfe, 0x0a, 0x0d, 0x7d])

/** A file as format 1 wrote it: one JSON object, the body in base64. */
function v1File (body: Buffer, storedAt = 1000): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, storedAt, headers: HEADERS, body: body.toString('base64') }))
}

/** A file as format 2 writes it: the header line, then the body's raw bytes. */
function v2File (body: Buffer, header: Record<string, unknown> = {}): Buffer {
  return Buffer.concat([Buffer.from(JSON.stringify({ v: 2, storedAt: 2000, bytes: body.length, headers: HEADERS, ...header }) + '\n'), body])
}

describe('decodeEntry: both formats are read; anything else, or a file cut short, is refused', () => {
  const cases: Array<[string, Buffer, StoredResponse | RegExp]> = [
    ['format 1 (a previous version\'s file)', v1File(Buffer.from('{"a":1}')), { headers: HEADERS, body: Buffer.from('{"a":1}'), storedAt: 1000 }],
    ['format 1, binary body', v1File(BINARY), { headers: HEADERS, body: BINARY, storedAt: 1000 }],
    ['format 2', v2File(Buffer.from('{"a":1}')), { headers: HEADERS, body: Buffer.from('{"a":1}'), storedAt: 2000 }],
    ['format 2, body with newlines and bytes that are not UTF-8', v2File(BINARY), { headers: HEADERS, body: BINARY, storedAt: 2000 }],
    ['format 2, empty body', v2File(Buffer.alloc(0)), { headers: HEADERS, body: Buffer.alloc(0), storedAt: 2000 }],
    ['format 2 cut short', v2File(Buffer.from('{"a":1}')).subarray(0, -1), /the body is 6 bytes, its header says 7/],
    ['format 2 with bytes past its body', Buffer.concat([v2File(Buffer.from('{}')), Buffer.from('x')]), /the body is 3 bytes, its header says 2/],
    ['format 2 header without bytes', v2File(Buffer.from('{}'), { bytes: undefined }), /not an entry/],
    ['format 1 content under a format 2 header', v2File(Buffer.from('{}'), { v: 1 }), /not an entry/],
    ['a later format', v2File(Buffer.from('{}'), { v: 3 }), /not an entry/],
    ['headers that are null', v2File(Buffer.from('{}'), { headers: null }), /not an entry/],
    ['headers that are a list', v2File(Buffer.from('{}'), { headers: ['a'] }), /not an entry/],
    ['a header value that is a number', v2File(Buffer.from('{}'), { headers: { 'content-length': 2 } }), /not an entry/],
    ['format 1 without storedAt', Buffer.from(JSON.stringify({ v: 1, headers: {}, body: '' })), /not an entry/],
    ['not JSON', Buffer.from('not json'), /JSON/],
    ['an empty file', Buffer.alloc(0), /JSON/]
  ]
  for (const [name, file, want] of cases) {
    it(name, () => {
      if (want instanceof RegExp) assert.throws(() => decodeEntry(file), want)
      else assert.deepEqual(decodeEntry(file), want)
    })
  }

  it('a format 2 file is its header line and the body as it is', () => {
    const response: StoredResponse = { headers: HEADERS, body: BINARY, storedAt: 3000 }
    const header = encodeEntryHeader(response)
    assert.equal(header.indexOf(0x0a), header.length - 1, 'one line, ending the header')
    assert.deepEqual(JSON.parse(header.toString()), { v: 2, storedAt: 3000, bytes: BINARY.length, headers: HEADERS })
    assert.deepEqual(decodeEntry(Buffer.concat([header, BINARY])), response)
  })
})

describe('StaleConfigDir: streamed writes, at most one pending per key', () => {
  const key = (c: string): string => c.repeat(64)
  const response = (body: string, storedAt = 1000): StoredResponse => ({ headers: { 'content-type': 'application/json' }, body: Buffer.from(body), storedAt })
  const made: string[] = []
  after(() => { for (const path of made) rmSync(path, { recursive: true, force: true }) })
  const tempDir = (): string => {
    const path = mkdtempSync(join(tmpdir(), 'sidecar-stale-dir-unit-'))
    made.push(path)
    return path
  }
  const noError = (err: unknown): void => { throw err }

  it('writes format 2, mode 0600, with no temporary file left', async () => {
    const path = tempDir()
    const dir = new StaleConfigDir(path, noError)
    const stored: StoredResponse = { headers: HEADERS, body: BINARY, storedAt: 1234 }
    dir.save(key('a'), stored)
    await dir.idle()
    assert.deepEqual(readdirSync(path), [`${key('a')}.json`])
    const file = join(path, `${key('a')}.json`)
    assert.equal(statSync(file).mode & 0o777, 0o600)
    assert.deepEqual(readFileSync(file), Buffer.concat([encodeEntryHeader(stored), BINARY]))
  })

  it('loads format 1 files a previous version wrote beside format 2 ones, newest first; the next save of a key replaces its format 1 file', async () => {
    const path = tempDir()
    writeFileSync(join(path, `${key('a')}.json`), v1File(Buffer.from('old format'), 1000), { mode: 0o600 })
    writeFileSync(join(path, `${key('b')}.json`), v2File(Buffer.from('new format')), { mode: 0o600 })
    const dir = new StaleConfigDir(path, noError)
    const { entries, skipped } = dir.load()
    assert.deepEqual(skipped, [])
    assert.deepEqual(entries.map((e) => [e.key, e.response.body.toString(), e.response.storedAt]), [[key('b'), 'new format', 2000], [key('a'), 'old format', 1000]])

    dir.save(key('a'), response('rewritten', 3000))
    await dir.idle()
    assert.deepEqual(readdirSync(path).sort(), [`${key('a')}.json`, `${key('b')}.json`])
    assert.equal(readFileSync(join(path, `${key('a')}.json`)).subarray(0, 6).toString(), '{"v":2')
    assert.equal(new StaleConfigDir(path, noError).load().entries.find((e) => e.key === key('a'))?.response.body.toString(), 'rewritten')
  })

  /** [case, operations asked for at once, files left with their bodies, most operations waiting at any time]. */
  const COALESCING: Array<[string, Array<[string, string | null]>, Record<string, string>, number]> = [
    ['a newer save of a key replaces the queued one', [['a', '1'], ['a', '2'], ['a', '3'], ['a', '4']], { a: '4' }, 1],
    ['a remove cancels a queued save', [['b', 'x'], ['a', '1'], ['a', null]], { b: 'x' }, 1],
    ['a save after a remove is kept', [['a', '1'], ['a', null], ['a', '2']], { a: '2' }, 1],
    ['keys do not replace one another', [['a', '1'], ['b', '1'], ['c', '1'], ['b', '2'], ['a', '2'], ['c', null]], { a: '2', b: '2' }, 3],
    ['a thousand saves of three keys wait as at most three', Array.from({ length: 1000 }, (_, i): [string, string] => [['a', 'b', 'c'][i % 3] ?? 'a', String(i)]), { a: '999', b: '997', c: '998' }, 3]
  ]
  for (const [name, ops, files, mostPending] of COALESCING) {
    it(name, async () => {
      const path = tempDir()
      const dir = new StaleConfigDir(path, noError)
      let pending = 0
      for (const [k, body] of ops) {
        if (body === null) dir.remove(key(k))
        else dir.save(key(k), response(body))
        pending = Math.max(pending, dir.pending)
      }
      assert.ok(pending <= mostPending, `${pending} operations waited, at most ${mostPending} expected`)
      await dir.idle()
      assert.equal(dir.pending, 0)
      const got = Object.fromEntries(dir.load().entries.map((e) => [e.key.slice(0, 1), e.response.body.toString()]))
      assert.deepEqual(got, files)
      assert.deepEqual(readdirSync(path).filter((n) => n.startsWith('.tmp-')), [])
    })
  }

  it('a save asked for while its key is being written runs after that write, and wins', async () => {
    const path = tempDir()
    const dir = new StaleConfigDir(path, noError)
    dir.save(key('a'), response('first'))
    assert.equal(dir.pending, 0, 'the first write is under way at once')
    dir.save(key('a'), response('second'))
    assert.equal(dir.pending, 1)
    await dir.idle()
    assert.equal(readFileSync(join(path, `${key('a')}.json`)).toString().split('\n')[1], 'second')
  })

  it('every failing operation is reported through onError, and the queue goes on', async () => {
    const path = join(tempDir(), 'gone')
    const errors: unknown[] = []
    const dir = new StaleConfigDir(path, (err) => { errors.push(err) })
    dir.save(key('a'), response('a'))
    dir.save(key('b'), response('b'))
    dir.remove(key('c'))
    await dir.idle()
    assert.equal(errors.length, 2, 'the saves fail; removing what is not there is no failure')
    assert.ok(errors.every((e) => (e as NodeJS.ErrnoException).code === 'ENOENT'))
  })
})
