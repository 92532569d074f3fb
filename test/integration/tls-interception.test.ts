import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { basicUserinfo, Client } from '../helpers/client.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { createCa, testCa, type CertificateAuthority } from '../helpers/pki.js'
import { squidSkip, PROXY_PASSWORD, startSquid, type Squid } from '../helpers/proxies.js'
import { runCli } from '../helpers/sidecar-process.js'
import { startSidecar } from '../helpers/sidecar.js'

const TOKEN = 'bumped-token-4e1f'
/**
 * A 3scale SaaS name, served here by the test origin and resolved by squid
 * alone: 3scale serves such names only with publicly trusted certificates,
 * so a private chain for one is evidence of interception.
 */
const SAAS_HOST = 'acme-admin.3scale.net'

describeOrSkip('behind a TLS-intercepting squid (ssl-bump), calling 3scale SaaS', squidSkip, () => {
  let origin: Origin
  let squid: Squid
  let bumpCa: CertificateAuthority
  let bundleDir: string
  const client = new Client()

  before(async () => {
    origin = await startOrigin({ names: [SAAS_HOST] })
    bumpCa = await createCa('Corp Interception CA')
    squid = await startSquid({ sslBump: { ca: bumpCa, originCaFile: (await testCa()).certFile }, hosts: [SAAS_HOST] })
    bundleDir = mkdtempSync(join(tmpdir(), 'sidecar-bundle-'))
    writeFileSync(join(bundleDir, 'corp-interception.pem'), bumpCa.certPem)
    writeFileSync(join(bundleDir, 'README.txt'), 'not a certificate, ignored\n')
  })
  after(async () => { await client.close() })
  after(async () => { await squid?.close() })
  after(async () => { await origin?.close() })

  /**
   * A sidecar that trusts only public roots plus `trust`: NODE_EXTRA_CA_CERTS
   * is pointed at the interception CA or at nothing the origin needs.
   */
  const env = (trust: Record<string, string>): Record<string, string> => ({
    THREESCALE_PORTAL_ENDPOINT: origin.url(SAAS_HOST),
    BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
    HTTPS_PROXY: squid.url,
    NODE_EXTRA_CA_CERTS: '',
    ...trust
  })

  it('without the interception CA: 502 tls_untrusted, names the issuer, says interception because the host is 3scale SaaS, names CA_BUNDLE', async (t) => {
    const sidecar = await startSidecar(env({}), { secrets: [TOKEN, PROXY_PASSWORD] })
    t.after(async () => { await sidecar.close() })
    const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: basicUserinfo(TOKEN) } })
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'tls_untrusted')
    const line = await sidecar.waitForLog((l) => l.error === 'tls_untrusted')
    assert.match(line.msg, /issued by CN=Corp Interception CA/)
    assert.match(line.msg, /trust store does not know \(SELF_SIGNED_CERT_IN_CHAIN\)/)
    assert.match(line.msg, /the top certificate the server sent is CN=Corp Interception CA, O=apicast-sidecar-proxy tests, issued by itself \(a CA\)/)
    assert.match(line.msg, new RegExp(`acme-admin\\.3scale\\.net is a 3scale SaaS host, which 3scale serves only with publicly trusted certificates, so the proxy 127\\.0\\.0\\.1:${squid.port} intercepts TLS, re-signing it with CN=Corp Interception CA`))
    assert.match(line.msg, /add the certificate of CN=Corp Interception CA.* with CA_BUNDLE=\/path\/to\/ca\.pem/)
    assert.match(line.msg, /it is the proxy's interception CA: get it from whoever runs the proxy, or ask for 3scale's hosts to be exempted from TLS interception/)
    assert.equal(origin.requests.length, 0, 'nothing may reach 3scale over an unverified connection')
    assert.equal(await sidecar.stop(), 0)
  })

  const ways: Array<[string, () => Record<string, string>]> = [
    ['CA_BUNDLE as a file', () => ({ CA_BUNDLE: bumpCa.certFile })],
    ['CA_BUNDLE as a directory', () => ({ CA_BUNDLE: bundleDir })],
    ['SSL_CERT_FILE', () => ({ SSL_CERT_FILE: bumpCa.certFile })],
    ['SSL_CERT_DIR (a colon-separated list)', () => ({ SSL_CERT_DIR: `${mkdtempSync(join(tmpdir(), 'sidecar-empty-'))}:${bundleDir}` })],
    ['NODE_EXTRA_CA_CERTS', () => ({ NODE_EXTRA_CA_CERTS: bumpCa.certFile })]
  ]
  for (const [way, trust] of ways) {
    it(`with the interception CA given as ${way}: forwards, and warns once that the token is visible to the proxy`, async (t) => {
      const sidecar = await startSidecar(env(trust()), { secrets: [TOKEN, PROXY_PASSWORD] })
      t.after(async () => { await sidecar.close() })
      const summary = await sidecar.waitForLog((l) => /^trust store: \d+ CA certificates/.test(l.msg))
      assert.match(summary.msg, new RegExp(`${Object.keys(trust())[0] as string} [^:;]+: 1(;|$)`))
      for (let i = 0; i < 3; i++) {
        const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: basicUserinfo(TOKEN) } })
        assert.equal(res.status, 200, res.text())
      }
      assert.equal(origin.requests.at(-1)?.url, `/admin/api/services.json?access_token=${TOKEN}`)
      const warnings = sidecar.logs().filter((l) => l.interception === true && l.listener === 'portal')
      assert.equal(warnings.length, 1)
      assert.equal(warnings[0]?.level, 'warn')
      assert.equal(warnings[0]?.tlsVerdict, 'interception')
      assert.match(warnings[0]?.msg ?? '', /^TLS interception: the certificate of acme-admin\.3scale\.net:\d+ is chained to the private CA CN=Corp Interception CA, O=apicast-sidecar-proxy tests, trusted from /)
      assert.match(warnings[0]?.msg ?? '', /is a 3scale SaaS host, which 3scale serves only with publicly trusted certificates/)
      assert.match(warnings[0]?.msg ?? '', /ACCESS_TOKEN_LOCATION=header/)
      assert.equal(await sidecar.stop(), 0)
    })
  }

  it('doctor: the same verdict, from the 3scale SaaS name, without and with the interception CA', async () => {
    const stepOf = (stdout: string): { ok?: boolean, detail: string, fix?: string, verdict?: string } | undefined =>
      (JSON.parse(stdout) as { routes: Array<{ route: string, steps: Array<{ name: string, ok?: boolean, detail: string, fix?: string, verdict?: string }> }> })
        .routes.find((r) => r.route === 'portal')?.steps.find((s) => s.name === 'tls')
    const without = await runCli(env({}), ['doctor', '--json'])
    assert.equal(without.code, 1)
    const failed = stepOf(without.stdout)
    assert.equal(failed?.ok, false)
    assert.equal(failed?.verdict, 'interception')
    assert.match(failed?.detail ?? '', /acme-admin\.3scale\.net is a 3scale SaaS host, which 3scale serves only with publicly trusted certificates, so the proxy 127\.0\.0\.1:\d+ intercepts TLS/)
    assert.match(failed?.fix ?? '', /it is the proxy's interception CA/)

    const trusted = await runCli(env({ CA_BUNDLE: bumpCa.certFile }), ['doctor', '--json'])
    const ok = stepOf(trusted.stdout)
    assert.equal(ok?.ok, true)
    assert.equal(ok?.verdict, 'interception')
    assert.match(ok?.detail ?? '', /^verified; TLS interception: the certificate of acme-admin\.3scale\.net:\d+ is chained to the private CA CN=Corp Interception CA.*set ACCESS_TOKEN_LOCATION=header/)
    for (const out of [without.stdout, trusted.stdout]) assert.ok(!out.includes(PROXY_PASSWORD) && !out.includes(encodeURIComponent(PROXY_PASSWORD)), 'doctor printed the proxy password')
  })

  it('UPSTREAM_TLS_VERIFY=false forwards without the CA, and warns at every start', async (t) => {
    const sidecar = await startSidecar(env({ UPSTREAM_TLS_VERIFY: 'false' }))
    t.after(async () => { await sidecar.close() })
    const warning = await sidecar.waitForLog((l) => /UPSTREAM_TLS_VERIFY=false/.test(l.msg))
    assert.equal(warning.level, 'warn')
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 200)
    await sidecar.stop()
  })
})

describe('trust store files are checked at start', () => {
  it('an unreadable or invalid CA file is a start-up error naming each file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-badca-'))
    writeFileSync(join(dir, 'garbage.pem'), '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n')
    writeFileSync(join(dir, 'empty.pem'), 'hello\n')
    const { code, stderr } = await runCli({
      THREESCALE_PORTAL_ENDPOINT: 'https://portal.test',
      CA_BUNDLE: join(dir, 'missing.pem'),
      SSL_CERT_FILE: join(dir, 'garbage.pem'),
      NODE_EXTRA_CA_CERTS: join(dir, 'empty.pem')
    })
    assert.equal(code, 1)
    assert.match(stderr, /CA_BUNDLE: cannot read .*missing\.pem \(ENOENT\)/)
    assert.match(stderr, /SSL_CERT_FILE: certificate 1 of 1 in .*garbage\.pem is not a valid X\.509 certificate/)
    assert.match(stderr, /NODE_EXTRA_CA_CERTS: .*empty\.pem holds no PEM certificate/)
    assert.doesNotMatch(stderr, /^\s+at /m)
  })

  it('an empty CA_BUNDLE directory (an optional ConfigMap that does not exist) starts and counts 0', async (t) => {
    const empty = mkdtempSync(join(tmpdir(), 'sidecar-emptyca-'))
    const sidecar = await startSidecar({ THREESCALE_PORTAL_ENDPOINT: 'https://portal.test', CA_BUNDLE: empty })
    t.after(async () => { await sidecar.close() })
    const summary = await sidecar.waitForLog((l) => /^trust store:/.test(l.msg))
    assert.match(summary.msg, new RegExp(`CA_BUNDLE ${empty}: 0`))
    assert.equal(await sidecar.stop(), 0)
  })

  it('a server certificate given as the CA is named as the mistake it is', async () => {
    const leaf = await (await testCa()).issue(['portal.test'])
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-leaf-'))
    writeFileSync(join(dir, 'leaf.pem'), leaf.cert.split('-----END CERTIFICATE-----')[0] + '-----END CERTIFICATE-----\n')
    const { code, stderr } = await runCli({ THREESCALE_PORTAL_ENDPOINT: 'https://portal.test', CA_BUNDLE: join(dir, 'leaf.pem') })
    assert.equal(code, 1)
    assert.match(stderr, /server \(leaf\) certificate, not a CA certificate/)
  })
})
