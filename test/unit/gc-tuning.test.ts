import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { tuneGc, YOUNG_GENERATION_MB } from '../../src/gc-tuning.js'

const FLAG = `--scavenger-max-new-space-capacity-mb=${YOUNG_GENERATION_MB}`

describe('tuneGc: the young generation\'s ceiling', () => {
  const cases: Array<[string, string, string, string[], string | undefined]> = [
    ['Node 24 (V8 13): set', '13.6.233.17-node.44', '', [], FLAG],
    ['a later V8: set', '14.1.0', '--enable-source-maps', ['--no-warnings'], FLAG],
    ['Node 20 (V8 11): the flag does not exist there', '11.3.244.8-node.33', '', [], undefined],
    ['Node 22 (V8 12): left alone', '12.4.254.21-node.33', '', [], undefined],
    ['the operator sized it in NODE_OPTIONS', '13.6.233.17', '--max-semi-space-size=8', [], undefined],
    ['the operator set V8\'s own flag, underscores', '13.6.233.17', '--scavenger_max_new_space_capacity_mb=16', [], undefined],
    ['the operator sized it on node\'s command line', '13.6.233.17', '', ['--min-semi-space-size=1'], undefined],
    ['an unrelated flag of similar name is no reason', '13.6.233.17', '--max-old-space-size=64', [], FLAG]
  ]
  for (const [name, v8, nodeOptions, execArgv, expected] of cases) {
    it(name, () => {
      const set: string[] = []
      assert.equal(tuneGc(v8, nodeOptions, execArgv, (f) => set.push(f)), expected)
      assert.deepEqual(set, expected === undefined ? [] : [expected])
    })
  }
})
