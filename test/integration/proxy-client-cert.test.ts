import assert from 'node:assert/strict'
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, before, it } from 'node:test'
import { runDoctor } from '../../src/diagnostics/doctor.js'
import { basicUserinfo, Client } from '../helpers/client.js'
import { connectThrough } from '../helpers/connect-client.js'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { eventually } from '../helpers/eventually.js'
import { startFaultyFront, type FaultyFront } from '../helpers/faults.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { createCa, testCa, type CertificateAuthority } from '../helpers/pki.js'
import { PROXY_PASSWORD, squidSkip, startSquid, testLookup, type Squid } from '../helpers/proxies.js'
import { sidecarEnv } from '../helpers/sidecar-env.js'
import { startForwardProxy, startSidecar } from '../helpers/sidecar.js'

const TOKEN = 'client-cert-token-5d1e'
const SECRETS = [TOKEN, PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)]

interface Pair { readonly cert: string, readonly key: string }

/** The pair written as a mounted Secret would hold it: tls.crt and tls.key in a directory of their own. */
function writePair (pair: Pair): { dir: string, cert: string, key: string } {
  const dir = mkdtempSync(join(tmpdir(), 'sidecar-proxy-tls-'))
  writeFileSync(join(dir, 'tls.crt'), pair.cert)
  writeFileSync(join(dir, 'tls.key'), pair.key)
  return { dir, cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key') }
}

/** Replace `path` at once (a new inode, as kubelet's symlink swap gives a watcher). */
function replaceFile (path: string, content: string): void {
  writeFileSync(`${path}.new`, content)
  renameSync(`${path}.new`, path)
}

interface Step { name: string, ok?: boolean, detail: string, fix?: string }
interface ReadyBody { ready: boolean, routes: Record<string, { ok: boolean, failed?: string, steps: Step[] }> }
interface DoctorJson { ok: boolean, routes: Array<{ route: string, failed?: string, steps: Step[] }> }

async function doctorJson (env: Record<string, string>): Promise<{ code: number, report: DoctorJson }> {
  let out = ''
  const sink = new Writable({ write (chunk: Buffer, _enc, done) { out += chunk.toString(); done() } })
  const code = await runDoctor(['doctor', '--json'], await sidecarEnv(env), sink, { lookup: testLookup })
  return { code, report: JSON.parse(out) as DoctorJson }
}

/**
 * squid on https_port with `clientca=`: it requires a client certificate
 * issued by the proxy's client CA. Every connection to it goes through a
 * counting TCP front, so the TLS handshakes the sidecar attempts are
 * counted (one per back-off for a refused certificate).
 */
describeOrSkip('client certificates to an https:// proxy (squid https_port clientca=)', squidSkip, () => {
  let origin: Origin
  let squid: Squid
  /** The same, TLS 1.2 at most: the refusal ends the handshake itself, before any CONNECT. */
  let squid12: Squid
  let clientCa: CertificateAuthority
  let otherCa: CertificateAuthority
  before(async () => {
    origin = await startOrigin()
    clientCa = await createCa('Proxy Client CA')
    otherCa = await createCa('Some Other Client CA')
    squid = await startSquid({ tls: await (await testCa()).issue(['127.0.0.1']), clientCa: clientCa.certPem })
    squid12 = await startSquid({ tls: await (await testCa()).issue(['127.0.0.1']), clientCa: clientCa.certPem, tls12: true })
  })
  after(async () => { await squid?.close() })
  after(async () => { await squid12?.close() })
  after(async () => { await origin?.close() })

  /** A counting front for squid, and the proxy URL through it (squid's credentials, the front's port). */
  async function front (t: { after: (fn: () => Promise<void>) => void }, proxy = squid): Promise<{ front: FaultyFront, url: string }> {
    const f = await startFaultyFront(proxy.port)
    t.after(async () => { await f.close() })
    const url = new URL(proxy.url)
    url.port = String(f.port)
    return { front: f, url: url.href.replace(/\/$/, '') }
  }

  const cases: Array<{ name: string, pair: () => Promise<Pair | undefined>, status: number, first?: RegExp, tls12?: boolean }> = [
    { name: 'the certificate the proxy\'s client CA issued: 200 through the tunnel', pair: async () => await clientCa.issue(['apicast-sidecar']), status: 200 },
    { name: 'no certificate: 502 proxy_client_certificate, none was sent', pair: async () => await Promise.resolve(undefined), status: 502, first: /requires a TLS client certificate and none was sent \(TLS alert certificate_required\)\nset PROXY_TLS_CERT and PROXY_TLS_KEY/ },
    { name: 'a certificate from another CA: 502 proxy_client_certificate, rejected', pair: async () => await otherCa.issue(['apicast-sidecar']), status: 502, first: /rejected the TLS client certificate of PROXY_TLS_CERT \(TLS alert unknown_ca\)\nno CA the proxy trusts for clients issued it/ },
    // TLS 1.2: the alert ends the handshake; none sent is a bare handshake_failure.
    { name: 'TLS 1.2, no certificate: 502 proxy_client_certificate, none was sent', pair: async () => await Promise.resolve(undefined), status: 502, first: /requires a TLS client certificate and none was sent \(TLS alert handshake_failure\)/, tls12: true },
    { name: 'TLS 1.2, a certificate from another CA: 502 proxy_client_certificate, rejected', pair: async () => await otherCa.issue(['apicast-sidecar']), status: 502, first: /rejected the TLS client certificate of PROXY_TLS_CERT \(TLS alert unknown_ca\)/, tls12: true },
    { name: 'TLS 1.2, the right certificate: 200', pair: async () => await clientCa.issue(['apicast-sidecar']), status: 200, tls12: true }
  ]
  for (const c of cases) {
    it(c.name, async (t) => {
      const { front: counted, url } = await front(t, c.tls12 === true ? squid12 : squid)
      const pair = await c.pair()
      const files = pair !== undefined ? writePair(pair) : undefined
      const sidecar = await startSidecar({
        THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
        BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
        HTTPS_PROXY: url,
        ...(files !== undefined ? { PROXY_TLS_CERT: files.cert, PROXY_TLS_KEY: files.key } : {})
      }, { secrets: [...SECRETS, ...(pair !== undefined ? [pair.key] : [])] })
      t.after(async () => { await sidecar.close() })
      const client = new Client()
      t.after(async () => { await client.close() })
      // The start-up line says a certificate goes to the proxy, by its setting only.
      const started = sidecar.logs().find((l) => l.listener === 'portal' && typeof l.port === 'number')
      if (files !== undefined) assert.match(started?.msg ?? '', /TLS client certificate PROXY_TLS_CERT to https:\/\/ proxies/)
      else assert.doesNotMatch(started?.msg ?? '', /client certificate/)

      for (let i = 0; i < 5; i++) {
        const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: basicUserinfo(TOKEN) } })
        assert.equal(res.status, c.status, res.text())
        if (c.status === 200) continue
        assert.equal(res.headers['x-sidecar-error'], 'proxy_client_certificate')
        assert.doesNotMatch(res.text(), /CA_BUNDLE=/, 'never the fix of an untrusted proxy certificate')
        if (i === 0) assert.match(res.text(), c.first ?? /./)
        // The later ones are answered at once, from the back-off: no handshake.
        else assert.match(res.text(), /refused the TLS handshake over the client certificate \d+ s ago; no new connection is tried .*PROXY_AUTH_BACKOFF_MS/)
      }
      assert.equal(counted.accepted(), 1, 'one TLS connection to the proxy: pooled when accepted, backed off when refused')
      if (c.status === 200) {
        assert.equal(origin.requests.at(-1)?.url, `/admin/api/services.json?access_token=${TOKEN}`)
      } else {
        const backoffs = sidecar.logs().filter((l) => l.event === 'proxy_client_certificate_backoff')
        assert.equal(backoffs.length, 1, 'one line when the back-off starts')
        assert.equal(backoffs[0]?.level, 'error')
        assert.match(backoffs[0]?.msg ?? '', new RegExp(`^the proxy 127\\.0\\.0\\.1:${counted.port} (rejected the TLS client certificate of PROXY_TLS_CERT|requires a TLS client certificate and none is set).*PROXY_TLS_CERT`))
        // /readyz goes through the same transport and gate: the proxy step, in the same words.
        const ready = await client.send(`${sidecar.adminUrl}/readyz`)
        assert.equal(ready.status, 503)
        const body = JSON.parse(ready.text()) as ReadyBody
        assert.equal(body.routes.portal?.failed, 'proxy')
        assert.match(JSON.stringify(body.routes.portal?.steps), /client certificate/)
        assert.equal(counted.accepted(), 1, '/readyz is backed off too')
      }
      assert.equal(await sidecar.stop(), 0)
    })
  }

  it('a refused certificate fails over to FALLBACK_PROXIES, and the refusing proxy gets no new handshake meanwhile', async (t) => {
    const { front: counted, url } = await front(t)
    const fallback = await startSquid()
    t.after(async () => { await fallback.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: url,
      FALLBACK_PROXIES: fallback.url
    }, { secrets: SECRETS })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    for (let i = 0; i < 5; i++) {
      const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: basicUserinfo(TOKEN) } })
      assert.equal(res.status, 200, res.text())
    }
    assert.equal(counted.accepted(), 1)
    const line = await sidecar.waitForLog((l) => l.error === 'proxy_client_certificate' && typeof l.next === 'string')
    assert.match(line.msg, new RegExp(`^proxy 127\\.0\\.0\\.1:${counted.port} failed \\(the proxy .* requires a TLS client certificate and none was sent .*failing over to 127\\.0\\.0\\.1:${fallback.port}`))
    assert.equal(await sidecar.stop(), 0)
  })

  it('doctor names the missing and the rejected certificate on its proxy step', async (t) => {
    const rejected = writePair(await otherCa.issue(['apicast-sidecar']))
    const env = { THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'), BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test') }
    const runs = [
      { files: undefined, detail: /requires a TLS client certificate and none was sent/, fix: /set PROXY_TLS_CERT and PROXY_TLS_KEY/ },
      { files: rejected, detail: /rejected the TLS client certificate of PROXY_TLS_CERT \(TLS alert unknown_ca\)/, fix: /a CA the proxy trusts for client certificates/ }
    ]
    for (const run of runs) {
      const { url } = await front(t)
      const { code, report } = await doctorJson({ ...env, HTTPS_PROXY: url, ...(run.files !== undefined ? { PROXY_TLS_CERT: run.files.cert, PROXY_TLS_KEY: run.files.key } : {}) })
      assert.equal(code, 1)
      for (const route of report.routes) {
        assert.equal(route.failed, 'proxy', JSON.stringify(route))
        const step = route.steps.find((s) => s.name === 'proxy')
        assert.match(step?.detail ?? '', run.detail)
        assert.match(step?.fix ?? '', run.fix)
      }
    }
  })

  it('the forward proxy\'s tunnels present the certificate too', async (t) => {
    const runs = [
      { pair: await clientCa.issue(['apicast-sidecar']), status: 200 },
      { pair: undefined, status: 502 }
    ]
    for (const run of runs) {
      const { url } = await front(t)
      const files = run.pair !== undefined ? writePair(run.pair) : undefined
      const { sidecar, port } = await startForwardProxy({
        THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
        BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
        HTTPS_PROXY: url,
        ...(files !== undefined ? { PROXY_TLS_CERT: files.cert, PROXY_TLS_KEY: files.key } : {})
      }, { secrets: SECRETS })
      t.after(async () => { await sidecar.close() })
      const reply = await connectThrough(port, `portal.test:${origin.port}`)
      reply.socket.destroy()
      assert.equal(reply.status, run.status, reply.body)
      if (run.status !== 200) {
        assert.equal(reply.headers['x-sidecar-error'], 'proxy_client_certificate')
        assert.match(reply.body, /requires a TLS client certificate and none was sent/)
      }
      assert.equal(await sidecar.stop(), 0)
    }
  })

  it('a replaced certificate is used for the next connection, with no restart: the back-off ends; a half-rotated pair is kept out', async (t) => {
    const { front: counted, url } = await front(t)
    const refused = await otherCa.issue(['apicast-sidecar'])
    const good = await clientCa.issue(['apicast-sidecar'])
    const files = writePair(refused)
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: url,
      PROXY_TLS_CERT: files.cert,
      PROXY_TLS_KEY: files.key
    }, { secrets: [...SECRETS, refused.key, good.key] })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const portal = async (): Promise<number> => (await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: basicUserinfo(TOKEN) } })).status
    assert.equal(await portal(), 502)
    assert.equal(await portal(), 502)
    assert.equal(counted.accepted(), 1)

    // The certificate first: with the old key it is no pair, so it is logged and the old pair kept.
    replaceFile(files.cert, good.cert)
    const kept = await sidecar.waitForLog((l) => typeof l.msg === 'string' && /the proxy client certificate in use is kept/.test(l.msg))
    assert.match(kept.msg, /PROXY_TLS_KEY: the key in .*tls\.key does not belong to the certificate in .*tls\.crt/)
    assert.equal(kept.level, 'error')
    // Then the key: the pair is whole, the next connection presents it.
    replaceFile(files.key, good.key)
    await sidecar.waitForLog((l) => typeof l.msg === 'string' && /the proxy client certificate \(PROXY_TLS_CERT, PROXY_TLS_KEY\) changed/.test(l.msg))
    assert.equal(await eventually(portal, (s) => s === 200, 10_000, 'a 200 with the new certificate'), 200)
    // One refused handshake, perhaps a second after the gate reset on the half rotation, then the good one.
    assert.ok(counted.accepted() <= 3, `${counted.accepted()} connections to the proxy`)
    assert.equal(await sidecar.stop(), 0)
  })
})
