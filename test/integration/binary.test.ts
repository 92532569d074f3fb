import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { basicUserinfo, Client } from '../helpers/client.js'
import { startOrigin } from '../helpers/origin.js'
import { PROXY_PASSWORD, startProxyChain } from '../helpers/proxies.js'
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
})
