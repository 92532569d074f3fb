import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, before, it, type TestContext } from 'node:test'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { runDoctor } from '../../src/diagnostics/doctor.js'
import { basicUserinfo, Client } from '../helpers/client.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { createCa, type CertificateAuthority } from '../helpers/pki.js'
import { squidSkip, PROXY_PASSWORD, startSquid, testLookup, type Squid } from '../helpers/proxies.js'
import { runCli } from '../helpers/sidecar-process.js'
import { startSidecar, type LogLine } from '../helpers/sidecar.js'

const TOKEN = 'private-ca-token-91c2'
const SECRETS = [TOKEN, PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)]

/** What the sidecar must not claim without evidence. */
const INTERCEPTION_CLAIM = /TLS interception|intercepts TLS|looks like/

interface DoctorJson { ok: boolean, routes: Array<{ route: string, steps: Array<{ name: string, ok?: boolean, detail: string, fix?: string, verdict?: string }> }> }

/** doctor in this process, resolving *.test to 127.0.0.1 so its direct comparison can reach the origin. */
async function doctorInProcess (env: Record<string, string>): Promise<{ code: number, text: string, json: DoctorJson }> {
  const run = async (argv: string[]): Promise<{ code: number, out: string }> => {
    let out = ''
    const sink = new Writable({ write (chunk: Buffer, _enc, done) { out += chunk.toString(); done() } })
    const code = await runDoctor(argv, env, sink, { lookup: testLookup })
    return { code, out }
  }
  const text = await run(['doctor'])
  const json = await run(['doctor', '--json'])
  return { code: text.code, text: text.out, json: JSON.parse(json.out) as DoctorJson }
}

function tlsStep (report: DoctorJson, route: string): { ok?: boolean, detail: string, fix?: string, verdict?: string } {
  const step = report.routes.find((r) => r.route === route)?.steps.find((s) => s.name === 'tls')
  assert.ok(step !== undefined, `no TLS step for ${route}`)
  return step
}

/**
 * An on-premise 3scale whose certificate comes from an internal CA, sending
 * only its own certificate (as many such servers are set up), reached
 * through squid: plain CONNECT, and TLS-intercepting (ssl-bump).
 */
describeOrSkip('an origin on a private CA, through squid', squidSkip, () => {
  let internalCa: CertificateAuthority
  let bumpCa: CertificateAuthority
  let origin: Origin
  let plain: Squid
  let bumping: Squid
  const client = new Client()

  before(async () => {
    internalCa = await createCa('Acme Internal CA')
    bumpCa = await createCa('Corp Interception CA')
    origin = await startOrigin({ ca: internalCa, leafOnly: true })
    plain = await startSquid()
    bumping = await startSquid({ sslBump: { ca: bumpCa, originCaFile: internalCa.certFile } })
  })
  after(async () => { await client.close() })
  after(async () => { await bumping?.close() })
  after(async () => { await plain?.close() })
  after(async () => { await origin?.close() })

  const env = (squid: Squid, extra: Record<string, string> = {}): Record<string, string> => ({
    THREESCALE_PORTAL_ENDPOINT: `https://${TOKEN}@portal.test:${origin.port}`,
    BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
    HTTPS_PROXY: squid.url,
    // Only public roots and what the case gives: not the helpers' test CA.
    NODE_EXTRA_CA_CERTS: '',
    ...extra
  })

  async function failureLine (t: TestContext, sidecarEnv: Record<string, string>): Promise<LogLine> {
    const sidecar = await startSidecar(sidecarEnv, { secrets: SECRETS })
    t.after(async () => { await sidecar.close() })
    const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: basicUserinfo(TOKEN) } })
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'tls_untrusted')
    const line = await sidecar.waitForLog((l) => l.level === 'error' && l.error === 'tls_untrusted')
    assert.equal(await sidecar.stop(), 0)
    return line
  }

  it('plain squid, CA not trusted: 502 tls_untrusted naming the internal CA as a private CA, not interception', async (t) => {
    const line = await failureLine(t, env(plain))
    assert.match(line.msg, new RegExp(`the TLS certificate of portal\\.test:${origin.port} is not trusted: issued by CN=Acme Internal CA, O=apicast-sidecar-proxy tests, which the trust store does not know \\(UNABLE_TO_VERIFY_LEAF_SIGNATURE\\)`))
    assert.match(line.msg, /the server sent only its own certificate, CN=portal\.test \(not a CA\), without the CA that issued it/)
    assert.match(line.msg, new RegExp(`CN=Acme Internal CA, O=apicast-sidecar-proxy tests is a private CA: your 3scale's own internal CA \\(an on-premise 3scale\\), or the proxy 127\\.0\\.0\\.1:${plain.port}'s own CA if it inspects TLS; the sidecar cannot tell which from here`))
    assert.match(line.msg, /add the certificate of CN=Acme Internal CA.* with CA_BUNDLE=\/path\/to\/ca\.pem/)
    assert.match(line.msg, /doctor` compares with a direct connection/)
    assert.doesNotMatch(line.msg, INTERCEPTION_CLAIM)
    assert.equal(origin.requests.length, 0, 'nothing reaches 3scale over an unverified connection')
  })

  it('plain squid, the internal CA in CA_BUNDLE: forwards; one info line names that CA and where it was trusted; no warning', async (t) => {
    const sidecar = await startSidecar(env(plain, { CA_BUNDLE: internalCa.certFile }), { secrets: SECRETS })
    t.after(async () => { await sidecar.close() })
    for (let i = 0; i < 2; i++) {
      const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: basicUserinfo(TOKEN) } })
      assert.equal(res.status, 200, res.text())
    }
    const said = await sidecar.waitForLog((l) => l.listener === 'portal' && l.tlsVerdict !== undefined)
    assert.equal(said.level, 'info')
    assert.equal(said.tlsVerdict, 'private_ca')
    assert.equal(said.issuer, 'CN=Acme Internal CA, O=apicast-sidecar-proxy tests', 'the CA, not the server\'s own certificate')
    assert.equal(said.trustSource, `CA_BUNDLE ${internalCa.certFile}`)
    assert.match(said.msg, new RegExp(`the certificate of portal\\.test:${origin.port} is chained to the private CA CN=Acme Internal CA, O=apicast-sidecar-proxy tests, trusted from CA_BUNDLE ${internalCa.certFile}`))
    assert.match(said.msg, /A CA in the trust store is taken as known, so this is no warning/)
    assert.doesNotMatch(said.msg, INTERCEPTION_CLAIM)
    assert.deepEqual(sidecar.logs().filter((l) => l.level === 'warn').map((l) => l.msg), [], 'no warning on start for a known internal CA')
    assert.equal(await sidecar.stop(), 0)
  })

  it('plain squid: doctor compares with a direct connection, finds the same certificate: the server\'s own CA, not the proxy\'s', async () => {
    const without = await doctorInProcess(env(plain))
    assert.equal(without.code, 1)
    const failed = tlsStep(without.json, 'portal')
    assert.equal(failed.ok, false)
    assert.equal(failed.verdict, 'internal_ca')
    assert.match(failed.detail, new RegExp(`a direct connection to portal\\.test:${origin.port} gets the same certificate, so the proxy passes TLS through unchanged: CN=Acme Internal CA, O=apicast-sidecar-proxy tests is the server's own CA`))
    assert.match(failed.fix ?? '', /^add the certificate of CN=Acme Internal CA, O=apicast-sidecar-proxy tests with CA_BUNDLE=\/path\/to\/ca\.pem .*; it is your 3scale's internal CA: get it from whoever runs 3scale/)
    assert.doesNotMatch(failed.detail, INTERCEPTION_CLAIM)
    assert.match(without.text, /✗ TLS +the TLS certificate of portal\.test:\d+ is not trusted: issued by CN=Acme Internal CA/)

    const trusted = await doctorInProcess(env(plain, { CA_BUNDLE: internalCa.certFile }))
    assert.equal(trusted.code, 0, trusted.text)
    const ok = tlsStep(trusted.json, 'portal')
    assert.equal(ok.verdict, 'internal_ca')
    assert.match(ok.detail, new RegExp(`^verified; the certificate of portal\\.test:\\d+ is chained to the private CA CN=Acme Internal CA, O=apicast-sidecar-proxy tests, trusted from CA_BUNDLE ${internalCa.certFile}`))
    assert.match(ok.detail, /gets the same certificate/)
    assert.doesNotMatch(trusted.text, /private CA CN=portal\.test/, 'the server\'s own certificate is never named as the CA')
    for (const secret of SECRETS) assert.ok(!trusted.text.includes(secret) && !without.text.includes(secret), 'doctor printed a secret')
  })

  it('plain squid: doctor as a process, where no direct connection can be made, says it cannot tell, with the reason', async () => {
    const { code, stdout } = await runCli(env(plain), ['doctor', '--json'])
    assert.equal(code, 1)
    const step = tlsStep(JSON.parse(stdout) as DoctorJson, 'portal')
    assert.equal(step.verdict, 'private_ca')
    assert.match(step.detail, /is a private CA: your 3scale's own internal CA \(an on-premise 3scale\), or the proxy 127\.0\.0\.1:\d+'s own CA if it inspects TLS; which one cannot be told, as a direct connection to compare with failed \((ENOTFOUND|EAI_AGAIN)\)/)
    assert.doesNotMatch(step.detail, INTERCEPTION_CLAIM)
  })

  it('intercepting squid, CA not trusted: 502 tls_untrusted naming squid\'s CA, the top certificate it sent, and still only "a private CA"', async (t) => {
    const line = await failureLine(t, env(bumping))
    assert.match(line.msg, /issued by CN=Corp Interception CA, O=apicast-sidecar-proxy tests, which the trust store does not know \(SELF_SIGNED_CERT_IN_CHAIN\)/)
    assert.match(line.msg, /the top certificate the server sent is CN=Corp Interception CA, O=apicast-sidecar-proxy tests, issued by itself \(a CA\)/)
    assert.match(line.msg, /the sidecar cannot tell which from here/)
    assert.doesNotMatch(line.msg, INTERCEPTION_CLAIM, 'portal.test is no 3scale SaaS name, and the sidecar opens no direct connection to compare')
  })

  it('intercepting squid: doctor sees a different certificate directly, so says interception, and which CA to get', async () => {
    const without = await doctorInProcess(env(bumping))
    const failed = tlsStep(without.json, 'portal')
    assert.equal(failed.verdict, 'interception')
    assert.match(failed.detail, new RegExp(`a direct connection to portal\\.test:${origin.port} gets a different certificate, issued by CN=Acme Internal CA, O=apicast-sidecar-proxy tests, so the proxy 127\\.0\\.0\\.1:${bumping.port} intercepts TLS, re-signing it with CN=Corp Interception CA`))
    assert.match(failed.fix ?? '', /^add the certificate of CN=Corp Interception CA, O=apicast-sidecar-proxy tests with CA_BUNDLE=.*; it is the proxy's interception CA: get it from whoever runs the proxy/)

    const trusted = await doctorInProcess(env(bumping, { CA_BUNDLE: bumpCa.certFile }))
    assert.equal(trusted.code, 0, trusted.text)
    const ok = tlsStep(trusted.json, 'portal')
    assert.equal(ok.verdict, 'interception')
    assert.match(ok.detail, /TLS interception: the certificate of portal\.test:\d+ is chained to the private CA CN=Corp Interception CA.*set ACCESS_TOKEN_LOCATION=header/)
  })

  it('an empty CA_BUNDLE directory (an absent optional ConfigMap): the fix asks whether it is mounted, for requests and doctor', async (t) => {
    const empty = mkdtempSync(join(tmpdir(), 'sidecar-empty-bundle-'))
    const line = await failureLine(t, env(plain, { CA_BUNDLE: empty }))
    assert.match(line.msg, new RegExp(`CA_BUNDLE ${empty} is an empty directory: is the ConfigMap \\(or volume\\) with the CA mounted\\?`))
    assert.match(line.msg, /Put the certificate of CN=Acme Internal CA.* in it, as PEM/)
    assert.doesNotMatch(line.msg, /CA_BUNDLE=\/path/)

    const { code, stdout } = await runCli(env(plain, { CA_BUNDLE: empty }), ['doctor'])
    assert.equal(code, 1)
    assert.match(stdout, new RegExp(`fix: CA_BUNDLE ${empty} is an empty directory: is the ConfigMap \\(or volume\\) with the CA mounted\\?`))
  })
})
