import assert from 'node:assert/strict'
import { mkdtempSync, openSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { pino } from 'pino'
import { createLogger } from '../../src/observe/logger.js'

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
