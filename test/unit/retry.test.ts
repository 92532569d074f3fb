import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Failure, FailureCode } from '../../src/failures/catalogue.js'
import { shouldRetry, type FailedAttempt } from '../../src/forwarding/retry.js'

const failure = (code: FailureCode, transient: boolean): Failure =>
  ({ code, status: code === 'timeout' ? 504 : 502, message: code, hint: 'check', transient })
const reset = failure('reset', true)
const tunnelReset = failure('tunnel_refused', true)

describe('shouldRetry', () => {
  const base: FailedAttempt = { method: 'GET', hasBody: false, failure: reset, beforeWrite: false, responseStarted: false, retried: false }
  const cases: Array<[string, Partial<FailedAttempt>, boolean]> = [
    ['GET reset after sending, no response yet', {}, true],
    ['HEAD reset after sending', { method: 'HEAD' }, true],
    ['POST reset after sending: may have been counted', { method: 'POST', hasBody: true }, false],
    ['POST without a body reset after sending', { method: 'POST' }, false],
    ['PUT reset after sending', { method: 'PUT', hasBody: true }, false],
    ['DELETE reset after sending', { method: 'DELETE' }, false],
    ['GET with a body reset after sending: the body is gone', { hasBody: true }, false],
    ['POST reset while connecting: nothing was written', { method: 'POST', hasBody: true, beforeWrite: true, failure: tunnelReset }, true],
    ['PATCH reset while connecting', { method: 'PATCH', hasBody: true, beforeWrite: true }, true],
    ['GET once the response has begun', { responseStarted: true }, false],
    ['GET a second time', { retried: true }, false],
    ['POST while connecting, a second time', { method: 'POST', beforeWrite: true, retried: true }, false],
    ['proxy refused TCP: fails the same way again', { beforeWrite: true, failure: failure('proxy_unreachable', false) }, false],
    ['407: fails the same way again', { beforeWrite: true, failure: failure('proxy_auth_required', false) }, false],
    ['CONNECT answered 403', { beforeWrite: true, failure: failure('tunnel_refused', false) }, false],
    ['untrusted certificate', { beforeWrite: true, failure: failure('tls_untrusted', false) }, false],
    ['response headers timeout: APIcast would wait twice', { failure: failure('timeout', false) }, false],
    ['connect timeout', { beforeWrite: true, failure: failure('timeout', false) }, false]
  ]
  for (const [name, change, want] of cases) {
    it(`${name} → ${want ? 'retry' : 'no retry'}`, () => assert.equal(shouldRetry({ ...base, ...change }), want))
  }
})
