import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Failure, FailureCode } from '../../src/failures/catalogue.js'
import { decideNextAttempt, type AttemptFacts, type NextAttempt } from '../../src/forwarding/attempts.js'

const failure = (code: FailureCode, transient: boolean): Failure =>
  ({ code, status: code === 'timeout' ? 504 : 502, message: code, hint: 'check', transient })
const reset = failure('reset', true)
const refused = failure('proxy_unreachable', false)
const auth407 = failure('proxy_auth_required', false)
const tunnelReset = failure('tunnel_refused', true)
const tunnel403 = failure('tunnel_refused', false)
const timeout = failure('timeout', false)
const untrusted = failure('tls_untrusted', false)
const dns = failure('dns', false)

const failover: NextAttempt = { action: 'failover', backOff: true }
const retry: NextAttempt = { action: 'retry', backOff: false }
const answer: NextAttempt = { action: 'answer', backOff: false }
const backOffRetry: NextAttempt = { action: 'retry', backOff: true }
const backOffAnswer: NextAttempt = { action: 'answer', backOff: true }

describe('decideNextAttempt: fail over, retry, or answer', () => {
  // A GET through the first of two proxies, failed on the connection after it was sent.
  const base: AttemptFacts = {
    method: 'GET', hasBody: false, failure: reset, beforeWrite: false, responseStarted: false, retried: false,
    proxied: true, hops: 2, tried: 1
  }
  const cases: Array<[string, Partial<AttemptFacts>, NextAttempt]> = [
    // Failover: the proxy's fault, before any byte left.
    ['proxy refused TCP: the next proxy', { beforeWrite: true, failure: refused }, failover],
    ['407: the next proxy', { beforeWrite: true, failure: auth407 }, failover],
    ['CONNECT answered 403: the next proxy', { beforeWrite: true, failure: tunnel403 }, failover],
    ['CONNECT timed out: the next proxy', { beforeWrite: true, failure: timeout }, failover],
    ['POST with a body, the tunnel refused: the next proxy (3scale saw nothing)', { method: 'POST', hasBody: true, beforeWrite: true, failure: tunnel403 }, failover],
    ['POST, the tunnel reset: the next proxy before a retry', { method: 'POST', hasBody: true, beforeWrite: true, failure: tunnelReset }, failover],
    ['third of three proxies, two tried', { beforeWrite: true, failure: refused, hops: 3, tried: 2 }, failover],
    ['already retried once: a failover is still not a second send', { beforeWrite: true, failure: refused, retried: true }, failover],
    // Every path tried: the proxy is still backed off, and the request retried or answered.
    ['both proxies refused: back off, answer', { beforeWrite: true, failure: refused, tried: 2 }, backOffAnswer],
    ['both proxies reset the tunnel: back off, retry once', { beforeWrite: true, failure: tunnelReset, tried: 2 }, backOffRetry],
    ['both reset, retried already: back off, answer', { beforeWrite: true, failure: tunnelReset, tried: 2, retried: true }, backOffAnswer],
    // No failover: not the proxy's fault, not before the write, or no other path.
    ['one proxy only: refused, answered', { beforeWrite: true, failure: refused, hops: 1 }, answer],
    ['one proxy only: the tunnel reset, retried', { beforeWrite: true, failure: tunnelReset, hops: 1 }, retry],
    ['direct: connection refused, answered', { beforeWrite: true, failure: failure('upstream_unreachable', false), proxied: false, hops: 1 }, answer],
    ['untrusted certificate: the next proxy would see the same server', { beforeWrite: true, failure: untrusted }, answer],
    ['DNS, direct', { beforeWrite: true, failure: dns, proxied: false, hops: 1 }, answer],
    ['response headers timeout after sending: APIcast would wait twice', { failure: timeout }, answer],
    ['a failover code after the request was sent: never sent twice', { failure: tunnel403 }, answer],
    // Retry on the same path (shouldRetry's rules).
    ['GET reset after sending, no response yet', {}, retry],
    ['HEAD reset after sending', { method: 'HEAD' }, retry],
    ['POST reset after sending: a usage report 3scale may have counted', { method: 'POST', hasBody: true }, answer],
    ['POST without a body reset after sending', { method: 'POST' }, answer],
    ['PUT reset after sending', { method: 'PUT', hasBody: true }, answer],
    ['GET with a body reset after sending: the body is gone', { hasBody: true }, answer],
    ['GET once the response has begun', { responseStarted: true }, answer],
    ['GET a second time', { retried: true }, answer],
    ['POST reset while connecting, direct: nothing was written', { method: 'POST', hasBody: true, beforeWrite: true, proxied: false, hops: 1 }, retry],
    ['POST while connecting, a second time', { method: 'POST', beforeWrite: true, retried: true, proxied: false, hops: 1 }, answer]
  ]
  for (const [name, change, want] of cases) {
    it(`${name} → ${want.action}${want.backOff ? ' (proxy backed off)' : ''}`, () => {
      const got = decideNextAttempt({ ...base, ...change })
      assert.deepEqual({ ...got }, want, `got ${JSON.stringify(got)}; want ${JSON.stringify(want)}`)
    })
  }

  it('a usage report is never sent twice: no POST that may have reached 3scale is retried or failed over, whatever else holds', () => {
    const failures = [reset, refused, auth407, tunnelReset, tunnel403, timeout, untrusted, dns]
    for (const f of failures) {
      for (const hasBody of [false, true]) {
        for (const responseStarted of [false, true]) {
          for (const [proxied, hops, tried] of [[false, 1, 1], [true, 1, 1], [true, 2, 1], [true, 3, 2]] as const) {
            const facts = { method: 'POST', hasBody, failure: f, beforeWrite: false, responseStarted, retried: false, proxied, hops, tried }
            assert.equal(decideNextAttempt(facts).action, 'answer', JSON.stringify({ ...facts, failure: f.code }))
          }
        }
      }
    }
  })
})
