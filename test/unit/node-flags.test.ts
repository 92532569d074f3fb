import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { NODE_FLAGS } from '../helpers/sidecar-process.js'

/*
 * The node flags the sidecar runs with are written in four places that
 * cannot import one another: scripts/node-flags.json (read by the binary's
 * build and the tests), npm start, the image's entrypoint. They must agree,
 * or what npm run bench measured is not what ships.
 */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8')
const PACKAGE = JSON.parse(read('package.json')) as { scripts: Record<string, string> }
const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(read('Dockerfile'))?.[1] ?? '[]') as string[]

describe('the node flags the sidecar ships with', () => {
  it('are some, and each a flag', () => {
    assert.ok(NODE_FLAGS.length > 0)
    for (const flag of NODE_FLAGS) assert.match(flag, /^--[a-z-]+(=\S+)?$/)
  })
  const cases: Array<[string, () => string[]]> = [
    ['npm start', () => (PACKAGE.scripts.start ?? '').split(' ').slice(1, -1)],
    ['the image\'s ENTRYPOINT', () => entrypoint.slice(1, -1)]
  ]
  for (const [where, flagsOf] of cases) {
    it(`are those of ${where}`, () => { assert.deepEqual(flagsOf(), NODE_FLAGS) })
  }
  it('are the single binary\'s execArgv', () => {
    assert.match(read('scripts/build-binary.mjs'), /execArgv: JSON\.parse\(readFileSync\(join\(root, 'scripts', 'node-flags\.json'\)/)
  })
  it('are accepted by this node, without a warning', () => {
    const run = spawnSync(process.execPath, [...NODE_FLAGS, '-e', 'process.stdout.write("ok")'], { encoding: 'utf8' })
    assert.deepEqual([run.status, run.stdout, run.stderr], [0, 'ok', ''])
  })
})
