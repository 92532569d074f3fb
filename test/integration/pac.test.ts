import assert from 'node:assert/strict'
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it, type TestContext } from 'node:test'
import { pathToFileURL } from 'node:url'
import { Client } from '../helpers/client.js'
import { eventually } from '../helpers/eventually.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { pacScript, startPacServer } from '../helpers/pac-server.js'
import { freePort, PROXY_PASSWORD, PROXY_USER, squidSkip, startSquid } from '../helpers/proxies.js'
import { startForwardProxy, startSidecar, type RunningSidecar } from '../helpers/sidecar.js'
import { connectThrough, getOverTunnel } from '../helpers/connect-client.js'
import { testCa } from '../helpers/pki.js'
import { request as httpRequest } from 'node:http'
import { Writable } from 'node:stream'
import { runDoctor } from '../../src/diagnostics/doctor.js'
import { sidecarEnv } from '../helpers/sidecar-env.js'

const secrets = [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)]
/** The proxy credentials of every PAC-named proxy: squid asks for Basic. */
const CREDENTIALS = { PROXY_USER, PROXY_PASSWORD }

/** The sidecar in this process for `origin`'s two routes, PROXY_PAC_URL=`pacUrl` and squid's credentials; closed after the test. */
async function pacSidecar (t: TestContext, origin: Origin, pacUrl: string, extra: Record<string, string> = {}): Promise<RunningSidecar> {
  const sidecar = await startSidecar({
    THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
    BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
    PROXY_PAC_URL: pacUrl,
    ...CREDENTIALS,
    ...extra
  }, { secrets })
  t.after(async () => { await sidecar.close() })
  return sidecar
}

/** The request line of `listener`'s next request (they are written in batches). */
async function requestLine (sidecar: RunningSidecar, listener: string, after = 0): Promise<Record<string, unknown>> {
  return await sidecar.waitForLog((l) => l.msg === 'request' && l.listener === listener && (l.reqId as number) > after)
}

describe('PROXY_PAC_URL', { skip: squidSkip }, () => {
  it('served over http: the first proxy of the list is down, so the second is used; dnsDomainIs and shExpMatch pick it; DIRECT for the backend', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const squid = await startSquid()
    t.after(async () => { await squid.close() })
    const dead = await freePort()
    const pac = await startPacServer(pacScript(`
  if (dnsDomainIs(host, "backend.test")) return "DIRECT";
  if (shExpMatch(host, "portal.*") && !isPlainHostName(host)) return "PROXY 127.0.0.1:${dead}; PROXY 127.0.0.1:${squid.port}; DIRECT";
  return "PROXY 127.0.0.1:1";`))
    t.after(async () => { await pac.close() })
    const sidecar = await pacSidecar(t, origin, pac.url)
    const portal = await sidecar.waitForLog((l) => l.event === 'pac_decision' && l.listener === 'portal')
    assert.match(portal.msg, new RegExp(`via proxy http://127\\.0\\.0\\.1:${dead} .*, then http://127\\.0\\.0\\.1:${squid.port}, then direct \\(PAC: "PROXY 127\\.0\\.0\\.1:${dead}; PROXY 127\\.0\\.0\\.1:${squid.port}; DIRECT"\\)`))
    assert.match(portal.msg, new RegExp(`proxy auth auto: Basic, Digest or NTLM as the proxy asks \\(${PROXY_USER}:\\*\\*\\*\\)`))
    // The backend's decision only: a direct request to a name that is not
    // loopback would need real DNS, which no test touches.
    const backend = await sidecar.waitForLog((l) => l.event === 'pac_decision' && l.listener === 'backend')
    assert.equal(backend.egress, 'direct')
    assert.equal(backend.directReason, 'pac')
    assert.match(backend.msg, /direct \(the PAC file says DIRECT\) \(PAC: "DIRECT"\)/)

    const client = new Client()
    t.after(async () => { await client.close() })
    const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json?access_token=t`)
    assert.equal(res.status, 200)
    assert.equal((await requestLine(sidecar, 'portal')).proxy, `127.0.0.1:${squid.port}`)
    await sidecar.waitForLog((l) => l.level === 'warn' && new RegExp(`proxy 127\\.0\\.0\\.1:${dead} failed .*failing over to 127\\.0\\.0\\.1:${squid.port}`).test(l.msg))
    assert.equal(pac.fetches(), 1, 'one fetch at start; the answers are evaluated once per destination')
    await sidecar.stop()
  })

  it('from a file (a path and a file:// URL), with a wildcard rule: a refresh that changes the decision moves new requests to the new proxy', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const first = await startSquid()
    t.after(async () => { await first.close() })
    const second = await startSquid()
    t.after(async () => { await second.close() })
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-pac-'))
    t.after(() => { rmSync(dir, { recursive: true, force: true }) })
    const file = join(dir, 'proxy.pac')
    const write = (port: number): void => {
      // As a ConfigMap is updated: a new file renamed over the old.
      writeFileSync(`${file}.new`, pacScript(`  if (shExpMatch(host, "*.test")) return "PROXY 127.0.0.1:${port}";\n  return "DIRECT";`))
      renameSync(`${file}.new`, file)
    }
    let round = 0
    for (const setting of [file, pathToFileURL(file).href]) {
      round++
      write(first.port)
      const sidecar = await pacSidecar(t, origin, setting, { PROXY_PAC_REFRESH_S: '1' })
      const client = new Client()
      t.after(async () => { await client.close() })
      const decided = await sidecar.waitForLog((l) => l.event === 'pac_decision' && l.listener === 'backend')
      assert.match(decided.msg, new RegExp(`via proxy http://127\\.0\\.0\\.1:${first.port}`))
      assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)

      write(second.port)
      const moved = await sidecar.waitForLog((l) => l.event === 'pac_decision' && l.listener === 'backend' && new RegExp(`127\\.0\\.0\\.1:${second.port}`).test(l.msg), 10_000)
      assert.match(moved.msg, /backend → https:\/\/backend\.test:\d+ via proxy/)
      assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
      await sidecar.stop()
      // Each squid logs a tunnel as it closes: one through each, per round.
      await first.idle()
      await second.idle()
      assert.equal(first.tunnels(), round, 'the request before the refresh went through the first proxy')
      assert.equal(second.tunnels(), round, 'the request after it, through the second')
    }
  })

  it('served over https, verified against the trust store; an HTTPS entry is a TLS proxy; SOCKS entries are skipped with a warning; loopback stays direct', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const issued = await (await testCa()).issue(['127.0.0.1', 'localhost'])
    const squid = await startSquid({ tls: { cert: issued.cert, key: issued.key } })
    t.after(async () => { await squid.close() })
    const pac = await startPacServer(pacScript(`  return "SOCKS5 127.0.0.1:1080; HTTPS 127.0.0.1:${squid.port}";`), { tls: true })
    t.after(async () => { await pac.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      // Loopback: never proxied, never asked of the PAC.
      BACKEND_ENDPOINT_OVERRIDE: origin.url('127.0.0.1'),
      PROXY_PAC_URL: pac.url,
      ...CREDENTIALS
    }, { secrets })
    t.after(async () => { await sidecar.close() })
    const decision = await sidecar.waitForLog((l) => l.event === 'pac_decision' && l.listener === 'portal')
    assert.match(decision.msg, new RegExp(`via proxy https://127\\.0\\.0\\.1:${squid.port}`))
    const warning = await sidecar.waitForLog((l) => l.level === 'warn' && /SOCKS/.test(l.msg))
    assert.match(warning.msg, /SOCKS5 127\.0\.0\.1:1080 skipped/)
    assert.equal(sidecar.logs().filter((l) => l.event === 'pac_decision' && l.listener === 'backend').length, 0)
    assert.match(sidecar.logs().find((l) => l.listener === 'backend' && typeof l.port === 'number')?.msg ?? '', /direct \(loopback is never proxied\)/)

    const client = new Client()
    t.after(async () => { await client.close() })
    assert.equal((await client.send(`${sidecar.portalUrl}/admin/api/services.json?access_token=t`)).status, 200)
    assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
    await sidecar.stop()
  })

  it('a PAC that cannot be fetched at start: /readyz names it, requests get 502 pac_unavailable, and it is tried again until it loads', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const squid = await startSquid()
    t.after(async () => { await squid.close() })
    const pac = await startPacServer('')
    pac.serve('', 404)
    t.after(async () => { await pac.close() })
    const sidecar = await pacSidecar(t, origin, pac.url)
    const failed = await sidecar.waitForLog((l) => l.event === 'pac_failed')
    assert.equal(failed.level, 'error')
    assert.match(failed.msg, new RegExp(`the PAC file PROXY_PAC_URL http://127\\.0\\.0\\.1:\\d+/proxy\\.pac 127\\.0\\.0\\.1:\\d+ answered 404; there is no proxy decision yet`))
    const client = new Client()
    t.after(async () => { await client.close() })
    const refused = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(refused.status, 502)
    assert.equal(refused.headers['x-sidecar-error'], 'pac_unavailable')
    assert.match(refused.body.toString(), /no proxy decision for backend\.test:\d+, so nothing was sent: the PAC file PROXY_PAC_URL http:\/\/127\.0\.0\.1:\d+\/proxy\.pac 127\.0\.0\.1:\d+ answered 404; tried \d+ times?, next in \d+ s/)
    const ready = await client.send(`${sidecar.adminUrl}/readyz`)
    assert.equal(ready.status, 503)
    const report = JSON.parse(ready.body.toString()) as { routes: Record<string, { failed: string, via: string, steps: Array<{ name: string, ok: boolean | undefined, detail: string }> }> }
    assert.equal(report.routes.backend?.failed, 'pac')
    assert.equal(report.routes.backend?.via, 'no decision yet (PROXY_PAC_URL)')
    assert.deepEqual(report.routes.backend?.steps.map((s) => [s.name, s.ok]), [['pac', false], ['tcp', undefined], ['tls', undefined], ['http', undefined]])
    assert.match(ready.body.toString(), /PROXY_PAC_URL http:\/\/127\.0\.0\.1:\d+\/proxy\.pac/)

    pac.serve(pacScript(`  return "PROXY 127.0.0.1:${squid.port}";`))
    await sidecar.waitForLog((l) => l.event === 'pac_loaded', 15_000)
    await sidecar.waitForLog((l) => l.event === 'pac_decision' && l.listener === 'backend')
    assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
    assert.equal(sidecar.logs().filter((l) => l.event === 'pac_failed').length, 1, 'the same failure is logged once, not at each retry')
    await sidecar.stop()
  })

  /** Broken scripts: each keeps the sidecar serving, and names PROXY_PAC_URL and, where there is one, the line. */
  const broken: ReadonlyArray<{ name: string, script: string, says: RegExp }> = [
    { name: 'a syntax error', script: pacScript('  if (host == "x" {\n    return "DIRECT";\n  }'), says: /has a broken script: line 3: syntax error: Unexpected token \{/ },
    { name: 'a script that throws', script: pacScript('  var proxies = null;\n  return proxies.first;'), says: /has a broken script: line 4: FindProxyForURL threw TypeError: cannot read property 'first' of null/ },
    { name: 'a script that returns garbage', script: pacScript('  return 42;'), says: /answers garbage: FindProxyForURL returned number \(42\)/ },
    { name: 'an unknown keyword', script: pacScript('  return "PROXIE 127.0.0.1:3128";'), says: /answers garbage: FindProxyForURL returned "PROXIE 127\.0\.0\.1:3128": "PROXIE 127\.0\.0\.1:3128" is not DIRECT, PROXY host:port/ },
    { name: 'a script that calls this.constructor.constructor(\'return process\')() (CVE-2021-23406\'s escape)', script: pacScript('  var p = this.constructor.constructor("return process")();\n  return "PROXY " + p.pid + ":1";'), says: /has a broken script: pac-resolver cannot compile a call in the script/ },
    { name: 'a script that reaches for require', script: pacScript('  return require("fs").readFileSync("/etc/passwd", "utf8");'), says: /has a broken script: line 3: FindProxyForURL threw ReferenceError: require is not defined/ },
    { name: 'a script that loops forever', script: pacScript('  for (;;) {}'), says: /has a broken script: the script ran longer than 250 ms and was stopped \(a loop that never ends\?\)/ },
    { name: 'a script that eats memory', script: pacScript('  var a = [];\n  for (;;) a.push(new Array(100000).fill(a.length));'), says: /has a broken script: the script used more than 16 MB and was stopped/ }
  ]
  for (const { name, script, says } of broken) {
    it(`${name}, at start and after a refresh: the last good decision is kept, the failure logged once`, async (t) => {
      const origin = await startOrigin()
      t.after(async () => { await origin.close() })
      const squid = await startSquid()
      t.after(async () => { await squid.close() })
      const good = pacScript(`  return "PROXY 127.0.0.1:${squid.port}";`)
      const pac = await startPacServer(script)
      t.after(async () => { await pac.close() })
      const sidecar = await pacSidecar(t, origin, pac.url, { PROXY_PAC_REFRESH_S: '1' })
      const client = new Client()
      t.after(async () => { await client.close() })
      // At start: no decision, a 502 that says why.
      const atStart = await sidecar.waitForLog((l) => l.event === 'pac_failed')
      assert.match(atStart.msg, says)
      const refused = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
      assert.equal(refused.status, 502)
      assert.match(refused.body.toString(), says)
      assert.equal((await client.send(`${sidecar.adminUrl}/healthz`)).status, 200, 'the sidecar keeps serving')

      // Fixed, then broken again by a refresh: the good decision stays.
      pac.serve(good)
      await sidecar.waitForLog((l) => l.event === 'pac_decision' && l.listener === 'backend', 15_000)
      pac.serve(script)
      const afterRefresh = await sidecar.waitForLog((l) => l.event === 'pac_failed' && l.kept === true, 10_000)
      assert.match(afterRefresh.msg, says)
      assert.match(afterRefresh.msg, /the last good PAC stays in use/)
      assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
      const fetched = pac.fetches()
      await eventually(() => pac.fetches(), (n) => n >= fetched + 2, 10_000, 'two more refreshes')
      assert.equal(sidecar.logs().filter((l) => l.event === 'pac_failed' && l.kept === true).length, 1, 'logged once, not at every refresh')
      await sidecar.stop()
    })
  }

  it('a script that tries to reach the process through this.constructor.constructor gets nothing of it, and the sidecar keeps serving', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const squid = await startSquid()
    t.after(async () => { await squid.close() })
    // Were the escape to work, the answer would name port 1: the request would fail.
    const pac = await startPacServer(pacScript(`
  var F = this.constructor.constructor;
  var escape = F("return typeof process + typeof require + typeof module");
  var reached = escape();
  if (reached !== "undefinedundefinedundefined") return "PROXY 127.0.0.1:1";
  return "PROXY 127.0.0.1:${squid.port}";`))
    t.after(async () => { await pac.close() })
    const sidecar = await pacSidecar(t, origin, pac.url)
    const decision = await sidecar.waitForLog((l) => l.event === 'pac_decision' && l.listener === 'backend')
    assert.match(decision.msg, new RegExp(`via proxy http://127\\.0\\.0\\.1:${squid.port}`))
    const client = new Client()
    t.after(async () => { await client.close() })
    assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
    await sidecar.stop()
  })

  it('the forward proxy asks the PAC once per destination, wildcards of FORWARD_PROXY_ALLOW included: CONNECT and absolute-form http:// leave by its answer', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const plain = await startOrigin({ tls: false })
    t.after(async () => { await plain.close() })
    const squid = await startSquid({ hosts: ['idp.test', 'ocsp.test'] })
    t.after(async () => { await squid.close() })
    const dead = await freePort()
    const pac = await startPacServer(pacScript(`
  if (url.substring(0, 5) === "http:") return "PROXY 127.0.0.1:${squid.port}";
  if (dnsDomainIs(host, ".test")) return "PROXY 127.0.0.1:${dead}; PROXY 127.0.0.1:${squid.port}";
  return "DIRECT";`))
    t.after(async () => { await pac.close() })
    const { sidecar, port } = await startForwardProxy({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      FORWARD_PROXY_ALLOW: `*.test:${origin.port}, ocsp.test:${plain.port}`,
      PROXY_PAC_URL: pac.url,
      ...CREDENTIALS
    }, { secrets })
    t.after(async () => { await sidecar.close() })
    assert.match(sidecar.logs().find((l) => l.listener === 'forward' && typeof l.port === 'number')?.msg ?? '', /as the PAC file PROXY_PAC_URL decides/)
    await sidecar.waitForLog((l) => l.event === 'pac_decision' && l.listener === 'backend')
    // A destination only the wildcard names: the PAC is asked for it on its first CONNECT.
    const tunnel = await connectThrough(port, `idp.test:${origin.port}`)
    assert.equal(tunnel.status, 200)
    const ca = await testCa()
    const answer = await getOverTunnel(tunnel.socket, 'portal.test', ca.certPem, '/admin/api/services.json?access_token=t')
    assert.equal(answer.status, 200)
    await sidecar.waitForLog((l) => l.level === 'warn' && new RegExp(`proxy 127\\.0\\.0\\.1:${dead} failed .*failing over to 127\\.0\\.0\\.1:${squid.port}`).test(l.msg))
    // http:// in absolute-form: the PAC's answer for the http: URL.
    const plainAnswer = await new Promise<number>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: `http://ocsp.test:${plain.port}/echo/x`, agent: false }, (res) => { res.resume(); resolve(res.statusCode ?? 0) })
      req.on('error', reject)
      req.end()
    })
    assert.equal(plainAnswer, 200)
    await eventually(() => squid.accessLog().filter((l) => new RegExp(`GET http://ocsp\\.test:${plain.port}/echo/x`).test(l)).length, (n) => n === 1, 5000, 'squid\'s line for the absolute-form request')
    await sidecar.stop()
  })

  it('doctor prints the PAC\'s answer for each route and checks each proxy it lists; a PAC that cannot be loaded fails every route at its pac step', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const squid = await startSquid()
    t.after(async () => { await squid.close() })
    const dead = await freePort()
    const pac = await startPacServer(pacScript(`  return "PROXY 127.0.0.1:${dead}; PROXY 127.0.0.1:${squid.port}";`))
    t.after(async () => { await pac.close() })
    const env = await sidecarEnv({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      PROXY_PAC_URL: pac.url,
      ...CREDENTIALS
    })
    const doctor = async (): Promise<{ code: number, out: string }> => {
      let out = ''
      const sink = new Writable({ write (chunk: Buffer, _enc, done) { out += chunk.toString(); done() } })
      const code = await runDoctor(['doctor'], env, sink)
      return { code, out }
    }
    const loaded = await doctor()
    assert.equal(loaded.code, 1, 'the first proxy the PAC lists is down')
    assert.match(loaded.out, new RegExp(`✓ PAC +PROXY_PAC_URL http://127\\.0\\.0\\.1:\\d+/proxy\\.pac loaded; it answers portal \\(portal\\.test:${origin.port}\\) "PROXY 127\\.0\\.0\\.1:${dead}; PROXY 127\\.0\\.0\\.1:${squid.port}", backend`))
    for (const route of ['portal', 'backend']) {
      assert.match(loaded.out, new RegExp(`${route} .* via proxy http://127\\.0\\.0\\.1:${dead}\\n  ✓ PAC +the PAC file answers "PROXY 127\\.0\\.0\\.1:${dead}; PROXY 127\\.0\\.0\\.1:${squid.port}"\\n  ✗ proxy +cannot reach the proxy 127\\.0\\.0\\.1:${dead}`))
      assert.match(loaded.out, new RegExp(`${route} .* via proxy http://127\\.0\\.0\\.1:${squid.port}\\n  ✓ PAC[^\\n]*\\n  ✓ proxy[^\\n]*\\n  ✓ CONNECT`))
    }
    assert.ok(!loaded.out.includes(PROXY_PASSWORD))

    pac.serve('', 503)
    const failed = await doctor()
    assert.equal(failed.code, 1)
    assert.match(failed.out, /✗ PAC +the PAC file PROXY_PAC_URL http:\/\/127\.0\.0\.1:\d+\/proxy\.pac 127\.0\.0\.1:\d+ answered 503\n +fix: PROXY_PAC_URL decides/)
    assert.match(failed.out, /backend .* no decision yet \(PROXY_PAC_URL\)\n {2}✗ PAC +no proxy decision for backend\.test:\d+, so nothing was sent: the PAC file PROXY_PAC_URL .* answered 503/)
  })
})
