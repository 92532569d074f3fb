import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { ConfigError } from '../../src/config/config.js'
import { loadSettings } from '../../src/config/settings.js'

function problemsOf (env: Record<string, string>): readonly string[] {
  try {
    loadSettings(env)
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err))
    return err.problems
  }
  assert.fail('expected a ConfigError')
}

describe('loadSettings: the environment, the secret files and the TLS files in one round', () => {
  it('reports an environment problem and every file problem together', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-settings-'))
    writeFileSync(join(dir, 'not-a-cert.pem'), 'hello\n')
    const problems = problemsOf({
      THREESCALE_PORTAL_ENDPOINT: 'https://acme-admin.3scale.net',
      LOG_LEVEL: 'loud',
      HTTPS_PROXY: 'http://corp@proxy.corp:3128',
      PROXY_PASSWORD_FILE: join(dir, 'missing-password'),
      ACCESS_TOKEN_FILE: join(dir, 'missing-token'),
      CA_BUNDLE: join(dir, 'missing-ca.pem'),
      UPSTREAM_TLS_CERT: join(dir, 'not-a-cert.pem'),
      UPSTREAM_TLS_KEY: join(dir, 'not-a-cert.pem'),
      LISTEN_TLS_CERT: join(dir, 'missing-listen.pem'),
      LISTEN_TLS_KEY: join(dir, 'missing-listen-key.pem')
    })
    assert.deepEqual(problems.map((p) => p.split(/[ :]/)[0]), [
      'LOG_LEVEL',
      'PROXY_PASSWORD_FILE',
      'ACCESS_TOKEN_FILE',
      'CA_BUNDLE',
      'UPSTREAM_TLS_CERT',
      'LISTEN_TLS_CERT',
      'LISTEN_TLS_KEY'
    ])
    assert.match(problems[3] ?? '', /^CA_BUNDLE: cannot read .*missing-ca\.pem \(ENOENT\)$/)
    assert.match(problems[4] ?? '', /^UPSTREAM_TLS_CERT: .*not-a-cert\.pem holds no valid PEM certificate$/)
  })

  it('a required setting missing still has the TLS files checked', () => {
    const problems = problemsOf({ CA_BUNDLE: '/nonexistent/ca.pem' })
    assert.equal(problems.length, 2)
    assert.match(problems[0] ?? '', /^THREESCALE_PORTAL_ENDPOINT is required/)
    assert.match(problems[1] ?? '', /^CA_BUNDLE: cannot read \/nonexistent\/ca\.pem \(ENOENT\)$/)
  })

  it('a good environment gives the config and the TLS material', () => {
    const { config, tls } = loadSettings({ THREESCALE_PORTAL_ENDPOINT: 'https://acme-admin.3scale.net' })
    assert.equal(config.portal.endpoint.href, 'https://acme-admin.3scale.net/')
    assert.ok(tls.trust.ca.length > 100)
  })
})
