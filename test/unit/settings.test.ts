import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { ConfigError } from '../../src/config/config.js'
import { loadSettings } from '../../src/config/settings.js'
import { createCa } from '../helpers/pki.js'

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

  it('PROXY_TLS_CERT/KEY are read and checked like UPSTREAM_TLS_CERT/KEY, every problem at once', async () => {
    const ca = await createCa('Proxy Client CA')
    const a = await ca.issue(['sidecar-a'])
    const b = await ca.issue(['sidecar-b'])
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-settings-'))
    writeFileSync(join(dir, 'a.crt'), a.cert)
    writeFileSync(join(dir, 'a.key'), a.key)
    writeFileSync(join(dir, 'b.key'), b.key)
    writeFileSync(join(dir, 'hello.txt'), 'hello\n')
    const env = { THREESCALE_PORTAL_ENDPOINT: 'https://acme-admin.3scale.net', HTTPS_PROXY: 'https://proxy.corp:3129' }
    const cases: Array<{ cert: string, key: string, problems: RegExp[] }> = [
      { cert: 'missing.crt', key: 'missing.key', problems: [/^PROXY_TLS_CERT: cannot read .*missing\.crt \(ENOENT\)$/, /^PROXY_TLS_KEY: cannot read .*missing\.key \(ENOENT\)$/] },
      { cert: 'hello.txt', key: 'a.key', problems: [/^PROXY_TLS_CERT: .*hello\.txt holds no valid PEM certificate$/] },
      { cert: 'a.crt', key: 'hello.txt', problems: [/^PROXY_TLS_KEY: .*hello\.txt holds no valid unencrypted PEM private key$/] },
      { cert: 'a.crt', key: 'b.key', problems: [/^PROXY_TLS_KEY: the key in .*b\.key does not belong to the certificate in .*a\.crt$/] }
    ]
    for (const c of cases) {
      const problems = problemsOf({ ...env, PROXY_TLS_CERT: join(dir, c.cert), PROXY_TLS_KEY: join(dir, c.key) })
      assert.equal(problems.length, c.problems.length, problems.join('\n'))
      c.problems.forEach((re, i) => { assert.match(problems[i] ?? '', re) })
    }
    const { tls } = loadSettings({ ...env, PROXY_TLS_CERT: join(dir, 'a.crt'), PROXY_TLS_KEY: join(dir, 'a.key') })
    assert.deepEqual(tls.proxyClient, { cert: a.cert, key: a.key })
    assert.equal(tls.upstreamClient, undefined, 'the proxy\'s certificate is never 3scale\'s')
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
