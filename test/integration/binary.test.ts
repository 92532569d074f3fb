import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { basicUserinfo, Client } from '../helpers/client.js'
import { startOrigin } from '../helpers/origin.js'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { eventually } from '../helpers/eventually.js'
import { kerberosSkip, startKdc } from '../helpers/kerberos.js'
import { PROXY_PASSWORD, PROXY_USER, startProxyChain, startSquid } from '../helpers/proxies.js'
import { pacScript } from '../helpers/pac-server.js'
import { spawnSidecar } from '../helpers/sidecar-process.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const BINARY = join(ROOT, 'build', 'apicast-sidecar-proxy')
const TOKEN = 'binary-token-9c0d'
/** The runtime the binary ships: the pinned Node LTS, whatever node builds it. */
const SHIPPED = JSON.parse(readFileSync(join(ROOT, 'scripts', 'shipped-node.json'), 'utf8')) as { version: string }
const PACKAGE = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }

describe('the single executable (npm run build:binary)', () => {
  it('builds on the pinned Node LTS, then forwards to a TLS upstream through an authenticating proxy with no node on PATH', { timeout: 120_000 }, async (t) => {
    execFileSync('npm', ['run', '--silent', 'build:binary'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] })
    const emptyPath = mkdtempSync(join(tmpdir(), 'sidecar-nopath-'))
    assert.deepEqual(readdirSync(emptyPath), [])
    const licences = readFileSync(join(ROOT, 'build', 'THIRD-PARTY-LICENSES.txt'), 'utf8')
    for (const name of Object.keys(PACKAGE.dependencies)) assert.match(licences, new RegExp(`^${name.replace('/', '\\/')}@\\d`, 'm'), `${name}'s licence goes with the binary`)
    assert.match(licences, new RegExp(`^Node\\.js v${SHIPPED.version.replaceAll('.', '\\.')} `, 'm'), 'and Node\'s, which is inside it')
    assert.match(execFileSync(BINARY, ['--version'], { encoding: 'utf8', env: { PATH: emptyPath } }),
      new RegExp(`^apicast-sidecar-proxy \\d+\\.\\d+\\.\\d+ \\(node v${SHIPPED.version.replaceAll('.', '\\.')}\\)\\n$`))

    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const proxy = await startProxyChain()
    t.after(async () => { await proxy.close() })
    const sidecar = await spawnSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxy.url
    }, { command: BINARY, path: emptyPath, secrets: [TOKEN, PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)] })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: basicUserinfo(TOKEN) } })
    assert.equal(res.status, 200)
    assert.equal(origin.requests.at(-1)?.url, `/admin/api/services.json?access_token=${TOKEN}`)
    assert.equal(proxy.tunnels(), 1)
    assert.equal(await sidecar.stop(), 0, 'the binary stops cleanly on SIGTERM')
  })

  it('loads the PAC engine from beside it (pac-engine.cjs, quickjs.wasm): a PAC file picks the proxy', { timeout: 60_000 }, async (t) => {
    // Built by the first test, which runs first in this file.
    for (const f of ['pac-engine.cjs', 'quickjs.wasm']) assert.ok(existsSync(join(ROOT, 'build', f)), `${f} goes beside the binary`)
    const emptyPath = mkdtempSync(join(tmpdir(), 'sidecar-nopath-'))
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const proxy = await startProxyChain()
    t.after(async () => { await proxy.close() })
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-pac-'))
    const file = join(dir, 'proxy.pac')
    writeFileSync(file, pacScript(`  return "PROXY 127.0.0.1:${proxy.port}; DIRECT";`))
    const sidecar = await spawnSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      PROXY_PAC_URL: file,
      PROXY_USER,
      PROXY_PASSWORD
    }, { command: BINARY, path: emptyPath, secrets: [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)] })
    t.after(async () => { await sidecar.close() })
    await sidecar.waitForLog((l) => l.event === 'pac_decision' && l.listener === 'backend')
    const client = new Client()
    t.after(async () => { await client.close() })
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 200, res.text())
    assert.equal(proxy.tunnels(), 1)
    assert.equal(await sidecar.stop(), 0)
  })

  it('runs doctor and the demo from their own files beside it (doctor.cjs, demo.cjs), with no node on PATH', { timeout: 60_000 }, () => {
    // Built by the first test. The main file leaves them out: a sidecar
    // that only forwards never reads their code (scripts/bundle.mjs).
    for (const f of ['doctor.cjs', 'demo.cjs']) assert.ok(existsSync(join(ROOT, 'build', f)), `${f} goes beside the binary`)
    const emptyPath = mkdtempSync(join(tmpdir(), 'sidecar-nopath-'))
    const doctor = spawnSync(BINARY, ['doctor'], { encoding: 'utf8', env: { PATH: emptyPath } })
    assert.equal(doctor.status, 1, doctor.stderr)
    assert.match(doctor.stdout, /^apicast-sidecar-proxy doctor \d/)
    assert.match(doctor.stdout, /✗ config +the configuration is invalid\n +THREESCALE_PORTAL_ENDPOINT is required/)
    const demo = spawnSync(BINARY, ['demo', '--once'], { encoding: 'utf8', env: { PATH: emptyPath }, timeout: 50_000 })
    assert.equal(demo.status, 0, demo.stderr)
    assert.match(demo.stdout, /7 calls through the sidecar, 2 CONNECTs at the proxy/)
  })

  describeOrSkip('with Kerberos credentials', kerberosSkip, () => {
    it('loads the Negotiate addon from beside it (node_modules/kerberos) and authenticates to squid through an MIT KDC', { timeout: 120_000 }, async (t) => {
      // Built by the test above, which runs first in this file.
      assert.ok(existsSync(join(ROOT, 'build', 'node_modules', 'kerberos', 'build', 'Release', 'kerberos.node')), 'the addon goes beside the binary')
      const emptyPath = mkdtempSync(join(tmpdir(), 'sidecar-nopath-'))
      const origin = await startOrigin()
      t.after(async () => { await origin.close() })
      const kdc = await startKdc()
      t.after(async () => { await kdc.close() })
      const squid = await startSquid({ auth: 'negotiate', kerberos: kdc.squid })
      t.after(async () => { await squid.close() })
      const sidecar = await spawnSidecar({
        THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
        BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
        HTTPS_PROXY: squid.url,
        KRB5_CONFIG: kdc.krb5Conf,
        KRB5_CLIENT_KTNAME: kdc.clientKeytab,
        KRB5CCNAME: 'MEMORY:sidecar-binary'
      }, { command: BINARY, path: emptyPath })
      t.after(async () => { await sidecar.close() })
      const client = new Client()
      t.after(async () => { await client.close() })
      const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json?access_token=t`)
      assert.equal(res.status, 200, res.text())
      assert.equal(await sidecar.stop(), 0)
      await eventually(() => squid.accessLog().filter((l) => l.includes(` ${kdc.clientPrincipal} `)).length, (n) => n >= 1, 5000, 'the binary\'s tunnel under the client principal')
      assert.doesNotMatch(sidecar.output(), /YII[A-Za-z0-9+/]{40,}|Negotiate [A-Za-z0-9+/]{20,}/)
    })
  })
})
