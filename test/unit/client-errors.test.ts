import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { answerClientError } from '../../src/operate/client-errors.js'
import { createLogSampler } from '../../src/observe/log-sampler.js'

describe('answerClientError', () => {
  const rows: Array<[string | undefined, number | undefined, string | undefined]> = [
    ['HPE_HEADER_OVERFLOW', 431, 'headers_too_large'],
    ['ERR_HTTP_REQUEST_TIMEOUT', 408, 'request_timeout'],
    ['HPE_UNEXPECTED_CONTENT_LENGTH', 400, 'bad_request'],
    ['HPE_INVALID_TRANSFER_ENCODING', 400, 'bad_request'],
    ['HPE_INVALID_METHOD', 400, 'bad_request'],
    ['HPE_INVALID_HEADER_TOKEN', 400, 'bad_request'],
    [undefined, 400, 'bad_request'],
    ['ECONNRESET', undefined, undefined],
    ['EPIPE', undefined, undefined]
  ]
  for (const [code, status, kind] of rows) {
    it(`${String(code)} → ${String(status)} ${String(kind)}`, () => {
      const answer = answerClientError(code)
      assert.equal(answer?.status, status)
      assert.equal(answer?.kind, kind)
    })
  }
})

describe('createLogSampler: the first at once, then one per interval with the count left unsaid', () => {
  it('follows the clock it is given', () => {
    let now = 0
    const sample = createLogSampler(10_000, () => now)
    const got: Array<number | undefined> = []
    for (const at of [0, 1, 2, 9_999, 10_000, 10_001, 25_000, 25_001]) {
      now = at
      got.push(sample())
    }
    assert.deepEqual(got, [0, undefined, undefined, undefined, 3, undefined, 1, undefined])
  })
})
