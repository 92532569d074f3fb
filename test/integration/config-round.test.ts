import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { runCli } from '../helpers/sidecar-process.js'

const PASSWORD = 'round-password-3b7f'

describe('config problems: every one at once, TLS and secret files included', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sidecar-round-'))
  writeFileSync(join(dir, 'not-a-cert.pem'), 'hello\n')
  const env = {
    THREESCALE_PORTAL_ENDPOINT: 'https://acme-admin.3scale.net/p/admin/dashboard',
    PORTAL_LISTEN_PORT: 'ninety',
    HTTPS_PROXY: `http://corp:${PASSWORD}@proxy.corp:3128`,
    ACCESS_TOKEN_FILE: join(dir, 'missing-token'),
    CA_BUNDLE: join(dir, 'missing-ca.pem'),
    UPSTREAM_TLS_CERT: join(dir, 'not-a-cert.pem'),
    UPSTREAM_TLS_KEY: join(dir, 'not-a-cert.pem')
  }

  it('the sidecar: one list on stderr, exit 1, nothing on stdout, no stack trace, no secret', async () => {
    const { code, stdout, stderr } = await runCli(env)
    assert.equal(code, 1)
    assert.equal(stdout, '', 'stdout carries JSON log lines only')
    const listed = stderr.split('\n').filter((l) => l.startsWith('  - ')).map((l) => l.slice(4).split(/[ :]/)[0])
    assert.deepEqual(listed, ['PORTAL_LISTEN_PORT', 'ACCESS_TOKEN_FILE', 'THREESCALE_PORTAL_ENDPOINT', 'CA_BUNDLE', 'UPSTREAM_TLS_CERT'])
    assert.match(stderr, /^apicast-sidecar-proxy: invalid configuration:\n/)
    assert.match(stderr, /THREESCALE_PORTAL_ENDPOINT has the path \/p\/admin\/dashboard, a page of the admin portal as a browser shows it, not where its API is: use the origin only, https:\/\/acme-admin\.3scale\.net/)
    assert.match(stderr, /CA_BUNDLE: cannot read .*missing-ca\.pem \(ENOENT\)/)
    assert.doesNotMatch(stderr, /^\s+at /m)
    assert.ok(!stderr.includes(PASSWORD), 'the proxy password is not echoed')
  })

  it('doctor: the same list under its config step, and exit 1', async () => {
    const { code, stdout } = await runCli(env, ['doctor'])
    assert.equal(code, 1)
    assert.match(stdout, /✗ config {3}the configuration is invalid\n {6}PORTAL_LISTEN_PORT .*\n {6}ACCESS_TOKEN_FILE: .*\n {6}THREESCALE_PORTAL_ENDPOINT has the path \/p\/admin\/dashboard.*\n {6}CA_BUNDLE: cannot read .*\n {6}UPSTREAM_TLS_CERT: /)
    assert.ok(!stdout.includes(PASSWORD))
  })
})
