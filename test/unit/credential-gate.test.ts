import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { certificateKey, CertificateBackedOff, credentialKey, CredentialGate, CredentialsBackedOff, type BackOffEvent } from '../../src/egress/credential-gate.js'

const KEY = credentialKey('proxy:3128', 'sidecar', 'wrong')

/** A gate on a clock the test moves, and the back-off events it reported. */
function gate (backoffMs = 60_000): { gate: CredentialGate, events: BackOffEvent[], tick: (ms: number) => void } {
  let now = 1_000_000
  const events: BackOffEvent[] = []
  return { gate: new CredentialGate(backoffMs, (e) => { events.push(e) }, () => now), events, tick: (ms) => { now += ms } }
}

/** Whether `p` has settled after the microtasks queued so far ran. */
async function settled (p: Promise<unknown>): Promise<boolean> {
  let done = false
  p.then(() => { done = true }, () => { done = true })
  await new Promise((resolve) => setImmediate(resolve))
  return done
}

describe('CredentialGate: a refused password is not sent again for the back-off', () => {
  it('credentials not accepted yet: one attempt at a time, the others wait for its verdict', async () => {
    const { gate: g } = gate()
    const first = await g.admit(KEY, 'proxy:3128')
    const second = g.admit(KEY, 'proxy:3128')
    const third = g.admit(KEY, 'proxy:3128')
    assert.equal(await settled(second), false)
    assert.equal(await settled(third), false)
    first.settle('accepted')
    // Accepted: both go, at once, and so does every attempt after.
    assert.equal(await settled(second), true)
    assert.equal(await settled(third), true)
    assert.equal(await settled(g.admit(KEY, 'proxy:3128')), true)
  })

  it('a refusal: the waiters and every attempt for the back-off get CredentialsBackedOff, and one event is reported', async () => {
    const { gate: g, events, tick } = gate(60_000)
    const first = await g.admit(KEY, 'proxy:3128')
    const waiting = g.admit(KEY, 'proxy:3128')
    first.settle('refused')
    await assert.rejects(waiting, CredentialsBackedOff)
    tick(59_000)
    await assert.rejects(g.admit(KEY, 'proxy:3128'), (err: unknown) => {
      assert.ok(err instanceof CredentialsBackedOff)
      assert.equal(err.remainingMs, 1_000)
      assert.match(err.message, /refused these credentials 59 s ago; they are not sent again for another 1 s \(PROXY_AUTH_BACKOFF_MS\)/)
      return true
    })
    assert.deepEqual(events, [{ proxy: 'proxy:3128', backoffMs: 60_000 }])
  })

  it('after the back-off: one trial again, so a wrong password costs one refusal per back-off', async () => {
    const { gate: g, events, tick } = gate(1_000)
    let refusals = 0
    for (let period = 0; period < 5; period++) {
      const attempts = Array.from({ length: 20 }, async () => {
        try {
          const a = await g.admit(KEY, 'proxy:3128')
          refusals++
          a.settle('refused')
        } catch (err) {
          assert.ok(err instanceof CredentialsBackedOff)
        }
      })
      await Promise.all(attempts)
      tick(1_000)
    }
    assert.equal(refusals, 5)
    assert.equal(events.length, 5)
  })

  it('an attempt without a verdict (the proxy down, a timeout) hands the trial to the next waiter', async () => {
    const { gate: g } = gate()
    const first = await g.admit(KEY, 'proxy:3128')
    const second = g.admit(KEY, 'proxy:3128')
    const third = g.admit(KEY, 'proxy:3128')
    first.settle('unknown')
    assert.equal(await settled(second), true)
    assert.equal(await settled(third), false, 'still one attempt at a time')
    ;(await second).settle('accepted')
    assert.equal(await settled(third), true)
  })

  it('accepted credentials refused later (the password changed in the directory) back off too; concurrent refusals report once', async () => {
    const { gate: g, events } = gate()
    ;(await g.admit(KEY, 'proxy:3128')).settle('accepted')
    const a = await g.admit(KEY, 'proxy:3128')
    const b = await g.admit(KEY, 'proxy:3128')
    a.settle('refused')
    b.settle('refused')
    assert.equal(events.length, 1)
    await assert.rejects(g.admit(KEY, 'proxy:3128'), CredentialsBackedOff)
  })

  it('other credentials, and the same at another proxy, are judged on their own; reset() ends every back-off and wakes the waiters', async () => {
    const { gate: g } = gate()
    ;(await g.admit(KEY, 'proxy:3128')).settle('refused')
    assert.equal(await settled(g.admit(credentialKey('fallback:3128', 'sidecar', 'wrong'), 'fallback:3128')), true, 'a fallback proxy may check another directory')
    const other = credentialKey('proxy:3128', 'sidecar', 'right')
    assert.equal(await settled(g.admit(other, 'proxy:3128')), true)
    const trial = await g.admit(credentialKey('proxy:3128', 'third', 'x'), 'proxy:3128')
    const waiting = g.admit(credentialKey('proxy:3128', 'third', 'x'), 'proxy:3128')
    g.reset()
    assert.equal(await settled(waiting), true)
    assert.equal(await settled(g.admit(KEY, 'proxy:3128')), true)
    trial.settle('refused') // a verdict on credentials from before the reset changes nothing
    assert.equal(await settled(g.admit(KEY, 'proxy:3128')), false, 'a fresh trial is in flight for KEY')
  })

  it('a wait ends with the attempt\'s signal', async () => {
    const { gate: g } = gate()
    await g.admit(KEY, 'proxy:3128')
    const controller = new AbortController()
    const waiting = g.admit(KEY, 'proxy:3128', controller.signal)
    controller.abort(new Error('client gone'))
    await assert.rejects(waiting, /client gone/)
  })

  it('the client-certificate gate: its own error while backed off, keyed by proxy and certificate', async () => {
    let now = 0
    const g = new CredentialGate(60_000, () => {}, () => now, (ago, remaining) => new CertificateBackedOff(ago, remaining))
    const refused = certificateKey('proxy:3129', 'ab12')
    ;(await g.admit(refused, 'proxy:3129')).settle('refused')
    now += 1000
    await assert.rejects(g.admit(refused, 'proxy:3129'), (err: unknown) => err instanceof CertificateBackedOff && !(err instanceof CredentialsBackedOff) && /for another 59 s \(PROXY_AUTH_BACKOFF_MS\)/.test(err.message))
    // Another certificate (a rotated Secret) is tried at once.
    ;(await g.admit(certificateKey('proxy:3129', 'cd34'), 'proxy:3129')).settle('accepted')
    now += 60_000
    ;(await g.admit(refused, 'proxy:3129')).settle('unknown')
  })
})
