import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ProxyRotation } from '../../src/egress/proxy-rotation.js'

/** A rotation over `size` proxies with a 10 s back-off, on a clock the test moves. */
function rotation (size: number): { r: ProxyRotation, at: (ms: number) => void } {
  let now = 1_000_000
  const r = new ProxyRotation(size, 10_000, () => now)
  return { r, at: (ms) => { now = 1_000_000 + ms } }
}

type Step = readonly ['fail', number, number[], { next: number | undefined, wasUp: boolean }] |
  readonly ['at', number] |
  readonly ['select', { index: number, previous: number }] |
  readonly ['active', number]

describe('ProxyRotation: which proxy, and back-off after a failure', () => {
  const cases: Array<[string, number, Step[]]> = [
    ['starts on the first proxy', 3, [['active', 0], ['select', { index: 0, previous: 0 }]]],
    ['a failure moves the request and the route to the next proxy', 3, [
      ['fail', 0, [0], { next: 1, wasUp: true }], ['select', { index: 1, previous: 0 }], ['active', 1]]],
    ['a second failure of the same proxy, within its back-off, is not news (no second log line)', 3, [
      ['fail', 0, [0], { next: 1, wasUp: true }], ['fail', 0, [0], { next: 1, wasUp: false }]]],
    ['the back-off ends: back to the first proxy', 3, [
      ['fail', 0, [0], { next: 1, wasUp: true }], ['select', { index: 1, previous: 0 }], ['at', 9_999], ['active', 1],
      ['at', 10_000], ['select', { index: 0, previous: 1 }]]],
    ['skips a backed-off proxy for a later one that is up', 3, [
      ['fail', 1, [], { next: 0, wasUp: true }], ['fail', 0, [0], { next: 2, wasUp: true }], ['active', 2]]],
    ['every proxy tried: none left for this request', 2, [
      ['fail', 0, [0], { next: 1, wasUp: true }], ['fail', 1, [0, 1], { next: undefined, wasUp: true }]]],
    ['all backed off: a proxy not yet tried by this request is still offered', 2, [
      ['fail', 1, [], { next: 0, wasUp: true }], ['fail', 0, [0], { next: 1, wasUp: true }]]],
    ['all backed off: the route uses the one whose back-off ends first', 3, [
      ['fail', 0, [0], { next: 1, wasUp: true }], ['at', 1_000], ['fail', 1, [0, 1], { next: 2, wasUp: true }],
      ['at', 2_000], ['fail', 2, [0, 1, 2], { next: undefined, wasUp: true }], ['active', 0],
      ['at', 10_000], ['active', 0], ['fail', 0, [0], { next: 1, wasUp: true }], ['active', 1]]]
  ]
  for (const [name, size, steps] of cases) {
    it(name, () => {
      const { r, at } = rotation(size)
      steps.forEach((step, i) => {
        const where = `step ${i + 1}: ${JSON.stringify(step)}`
        if (step[0] === 'at') at(step[1])
        else if (step[0] === 'active') assert.equal(r.active(), step[1], where)
        else if (step[0] === 'select') assert.deepEqual(r.select(), step[1], where)
        else assert.deepEqual(r.fail(step[1], new Set(step[2])), step[3], where)
      })
    })
  }
})
