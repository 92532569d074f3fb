import assert from 'node:assert/strict'
import { it } from 'node:test'
import { startOrigin } from '../helpers/origin.js'
import { testCa } from '../helpers/pki.js'
import { runCli } from '../helpers/sidecar-process.js'

it('an IP-literal https endpoint: doctor prints no Node warning (no SNI for an IP, RFC 6066)', async (t) => {
  const origin = await startOrigin()
  t.after(async () => { await origin.close() })
  const { code, stdout, stderr } = await runCli({
    THREESCALE_PORTAL_ENDPOINT: origin.url('127.0.0.1'),
    BACKEND_ENDPOINT_OVERRIDE: origin.url('127.0.0.1'),
    NODE_EXTRA_CA_CERTS: (await testCa()).certFile
  }, ['doctor'])
  assert.equal(code, 0, stdout + stderr)
  assert.doesNotMatch(stdout + stderr, /DEP0123|\(node:\d+\)/)
})
