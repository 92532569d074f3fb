import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ConfigError } from '../../src/config/config.js'
import { SetupError } from '../../src/config/setup-error.js'
import { TlsSetupError } from '../../src/tls/tls-material.js'
import { TrustStoreError } from '../../src/tls/trust-store.js'

describe('SetupError: the one shape of every start-up problem list', () => {
  const problems = ['LOG_LEVEL "loud" is not one of: fatal, error', 'CA_BUNDLE: cannot read /x (ENOENT)']
  const cases: Array<{ error: SetupError, name: string, heading: string }> = [
    { error: new ConfigError(problems), name: 'ConfigError', heading: 'invalid configuration' },
    { error: new TlsSetupError(problems), name: 'TlsSetupError', heading: 'invalid TLS files' },
    { error: new TrustStoreError(problems), name: 'TrustStoreError', heading: 'cannot build the TLS trust store' }
  ]
  for (const c of cases) {
    it(`${c.name}: a SetupError, its problems one per line under its heading`, () => {
      assert.ok(c.error instanceof SetupError)
      assert.equal(c.error.name, c.name)
      assert.deepEqual(c.error.problems, problems)
      assert.equal(c.error.message, `${c.heading}:\n  - ${problems[0] ?? ''}\n  - ${problems[1] ?? ''}`)
    })
  }
})
