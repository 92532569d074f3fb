import assert from 'node:assert/strict'
import { mkdtempSync, openSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { pino } from 'pino'
import { Writable } from 'node:stream'
import { createLogger, requestLineWriter, type RequestLine } from '../../src/observe/logger.js'

describe('createLogger', () => {
  it('an outage\'s burst of error lines is written whole, without piling up flush listeners', async (t) => {
    const file = join(mkdtempSync(join(tmpdir(), 'sidecar-log-')), 'out.log')
    // An open descriptor, as stdout is in production: sonic-boom opening a
    // path asynchronously mixes up lines flushed before it is open.
    const destination = pino.destination({ dest: openSync(file, 'w'), sync: false, minLength: 4096 })
    const warnings: Error[] = []
    const onWarning = (w: Error): void => { warnings.push(w) }
    process.on('warning', onWarning)
    t.after(() => { process.off('warning', onWarning) })
    const log = createLogger('info', destination)
    for (let i = 0; i < 5000; i++) log.error({ status: 502, error: 'proxy_unreachable', n: i }, 'cannot reach the proxy')
    assert.ok(destination.listenerCount('drain') <= 1, `${destination.listenerCount('drain')} drain listeners`)
    await new Promise((resolve) => { destination.once('close', resolve); destination.end() })
    assert.deepEqual(warnings.map((w) => w.name), [])
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { n: number, level: string })
    assert.equal(lines.length, 5000)
    assert.equal(lines[4999]?.n, 4999)
  })
})

/** A destination that keeps what it is given, line by line. */
function lines (): { stream: Writable, written: string[] } {
  const written: string[] = []
  const stream = new Writable({ write (chunk: Buffer, _enc, done) { written.push(chunk.toString()); done() } })
  return { stream, written }
}

const base: RequestLine = { reqId: 7, method: 'GET', path: '/transactions/authrep.xml?user_key=[REDACTED]', status: 200, ms: 1.234, bytesIn: undefined, bytesOut: 95, proxy: undefined }

describe('requestLineWriter: each request\'s completion line, off pino\'s generic path', () => {
  const table: Array<[string, RequestLine]> = [
    ['a GET with no body and one hop', base],
    ['a POST with a body, through a proxy of several', { ...base, method: 'POST', path: '/transactions.xml', status: 202, bytesIn: 512, bytesOut: 0, proxy: 'proxy-b.corp:3128' }],
    ['a path with quotes, backslashes, control and non-ASCII characters', { ...base, path: '/a"b\\c\u0001d/é?q=\u2028' }],
    ['no method (a request node:http could not parse)', { ...base, method: undefined, status: 499 }],
    ['a duration and sizes of zero', { ...base, ms: 0, bytesIn: 0, bytesOut: 0 }]
  ]
  for (const [name, line] of table) {
    it(`writes what log.info(line, msg) writes: ${name}`, () => {
      const { stream, written } = lines()
      const log = createLogger('info', stream).child({ listener: 'backend' })
      const write = requestLineWriter(log)
      // Both within one millisecond, so they share the timestamp; else try again.
      for (let i = 0; i < 5; i++) {
        written.length = 0
        log.info(line, 'request')
        write(line, 'request')
        if (written[0] === written[1]) break
      }
      assert.equal(written.length, 2)
      assert.equal(written[1], written[0])
      const parsed = JSON.parse(written[1] as string) as Record<string, unknown>
      assert.deepEqual(parsed, { level: 'info', time: parsed.time, service: 'apicast-sidecar-proxy', listener: 'backend', ...JSON.parse(JSON.stringify(line)) as Record<string, unknown>, msg: 'request' })
    })
  }

  it('writes nothing below its level', () => {
    const { stream, written } = lines()
    requestLineWriter(createLogger('warn', stream))(base, 'request')
    assert.deepEqual(written, [])
  })
})
