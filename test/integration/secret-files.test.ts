import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { Client, runConcurrently } from '../helpers/client.js'
import { connectThrough, getOverTunnel } from '../helpers/connect-client.js'
import { testCa } from '../helpers/pki.js'
import { startOrigin } from '../helpers/origin.js'
import { PROXY_USER, startProxyChain } from '../helpers/proxies.js'
import { runCli, spawnSidecar } from '../helpers/sidecar-process.js'
import { startSidecar } from '../helpers/sidecar.js'

const OLD_TOKEN = 'file-token-old-11aa'
const NEW_TOKEN = 'file-token-new-22bb'
const OLD_PASSWORD = 'old-p@ss:1%'
const NEW_PASSWORD = 'new-p@ss:2%'

/** Replace a file the way kubelet and editors do: write aside, then rename over it. */
function replaceFile (path: string, content: string): void {
  writeFileSync(path + '.tmp', content)
  renameSync(path + '.tmp', path)
}

const basic = (user: string, password: string): string => 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64')

describe('secrets from files', () => {
  it('reads the proxy URL, proxy password and token from files; they never reach the environment or the logs', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-secrets-'))
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const proxy = await startProxyChain({ password: OLD_PASSWORD })
    t.after(async () => { await proxy.close() })
    writeFileSync(join(dir, 'proxy-url'), `http://${PROXY_USER}@127.0.0.1:${proxy.port}\n`)
    writeFileSync(join(dir, 'proxy-password'), OLD_PASSWORD + '\n')
    writeFileSync(join(dir, 'token'), OLD_TOKEN + '\n')
    // A process: what is tested is that the secrets never reach its environment (/proc/PID/environ).
    const sidecar = await spawnSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY_FILE: join(dir, 'proxy-url'),
      PROXY_PASSWORD_FILE: join(dir, 'proxy-password'),
      ACCESS_TOKEN_FILE: join(dir, 'token')
    }, { secrets: [OLD_TOKEN, OLD_PASSWORD, encodeURIComponent(OLD_PASSWORD)] })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json`)
    assert.equal(res.status, 200)
    assert.equal(origin.requests.at(-1)?.url, `/admin/api/services.json?access_token=${OLD_TOKEN}`)
    assert.equal(proxy.authorizations.at(-1), basic(PROXY_USER, OLD_PASSWORD))
    const environ = readFileSync(`/proc/${sidecar.pid}/environ`, 'latin1')
    for (const secret of [OLD_TOKEN, OLD_PASSWORD, encodeURIComponent(OLD_PASSWORD)]) assert.ok(!environ.includes(secret))
    assert.match(sidecar.logs().find((l) => l.listener === 'portal' && typeof l.port === 'number')?.msg ?? '', /via proxy/)
    assert.match(String(sidecar.logs().find((l) => l.listener === 'portal' && typeof l.port === 'number')?.accessToken), /from ACCESS_TOKEN_FILE/)
    await sidecar.stop()
  })

  it('picks up a rotated token and proxy password without a restart or a failed request', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-rotate-'))
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    // During a rotation the proxy accepts both passwords, as real rotations overlap.
    let accepted = new Set([OLD_PASSWORD])
    const proxy = await startProxyChain({ accept: (u, p) => u === PROXY_USER && accepted.has(p) })
    t.after(async () => { await proxy.close() })
    writeFileSync(join(dir, 'password'), OLD_PASSWORD)
    writeFileSync(join(dir, 'token'), OLD_TOKEN)
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: `http://${PROXY_USER}@127.0.0.1:${proxy.port}`,
      PROXY_PASSWORD_FILE: join(dir, 'password'),
      ACCESS_TOKEN_FILE: join(dir, 'token')
    }, { secrets: [OLD_TOKEN, NEW_TOKEN, OLD_PASSWORD, NEW_PASSWORD, encodeURIComponent(OLD_PASSWORD), encodeURIComponent(NEW_PASSWORD)] })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    await sidecar.waitForLog((l) => /watching .*PROXY_PASSWORD_FILE.*ACCESS_TOKEN_FILE/.test(l.msg))
    const statuses: number[] = []
    let rotating = true
    const load = runConcurrently(100_000, 4, async () => {
      if (!rotating) return
      const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
      statuses.push(res.status)
    })
    t.after(() => { rotating = false })

    accepted = new Set([OLD_PASSWORD, NEW_PASSWORD])
    replaceFile(join(dir, 'password'), NEW_PASSWORD + '\n')
    replaceFile(join(dir, 'token'), NEW_TOKEN + '\n')
    await sidecar.waitForLog((l) => /the proxy settings changed: new requests use them/.test(l.msg) && l.listener === 'backend')
    await sidecar.waitForLog((l) => /the access token changed: the new one is in use/.test(l.msg) && l.listener === 'portal')
    accepted = new Set([NEW_PASSWORD])
    // New tunnels authenticate with the new password only.
    const after = proxy.authorizations.length
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 200)
    rotating = false
    await load
    assert.ok(statuses.length > 10, `only ${statuses.length} requests ran during the rotation`)
    assert.deepEqual([...new Set(statuses)], [200], 'no request may fail during a rotation')
    for (const a of proxy.authorizations.slice(after)) assert.equal(a, basic(PROXY_USER, NEW_PASSWORD))

    await client.send(`${sidecar.portalUrl}/admin/api/services.json`)
    assert.equal(origin.requests.at(-1)?.url, `/admin/api/services.json?access_token=${NEW_TOKEN}`)

    // A bad new value is refused and the last good one kept.
    replaceFile(join(dir, 'token'), '\n')
    await sidecar.waitForLog((l) => l.level === 'error' && /ACCESS_TOKEN_FILE changed but cannot be used .*is empty\); keeping the previous values/.test(l.msg))
    await client.send(`${sidecar.portalUrl}/admin/api/services.json`)
    assert.equal(origin.requests.at(-1)?.url, `/admin/api/services.json?access_token=${NEW_TOKEN}`)
    await sidecar.stop()
  })

  it('the forward proxy picks up a rotated proxy password: new tunnels use it, an open tunnel runs on', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-rotate-forward-'))
    const ca = await testCa()
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    let accepted = new Set([OLD_PASSWORD])
    const proxy = await startProxyChain({ accept: (u, p) => u === PROXY_USER && accepted.has(p) })
    t.after(async () => { await proxy.close() })
    writeFileSync(join(dir, 'password'), OLD_PASSWORD)
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: `http://${PROXY_USER}@127.0.0.1:${proxy.port}`,
      PROXY_PASSWORD_FILE: join(dir, 'password'),
      FORWARD_PROXY_PORT: '0'
    }, { secrets: [OLD_PASSWORD, NEW_PASSWORD, encodeURIComponent(OLD_PASSWORD), encodeURIComponent(NEW_PASSWORD)] })
    t.after(async () => { await sidecar.close() })
    const port = (await sidecar.waitForLog((l) => l.listener === 'forward' && typeof l.port === 'number')).port as number
    await sidecar.waitForLog((l) => /watching .*PROXY_PASSWORD_FILE/.test(l.msg))
    const target = `portal.test:${origin.port}`

    // Opened with the old password, used after the rotation.
    const before = await connectThrough(port, target)
    t.after(() => { before.socket.destroy() })
    assert.equal(before.status, 200)
    assert.equal(proxy.authorizations.at(-1), basic(PROXY_USER, OLD_PASSWORD))

    // The proxy now refuses the old password: only a swapped transport gets through.
    accepted = new Set([NEW_PASSWORD])
    replaceFile(join(dir, 'password'), NEW_PASSWORD + '\n')
    await sidecar.waitForLog((l) => l.listener === 'forward' && /the proxy settings changed: new tunnels and requests use them/.test(l.msg))
    const after = proxy.authorizations.length
    const fresh = await connectThrough(port, target)
    t.after(() => { fresh.socket.destroy() })
    assert.equal(fresh.status, 200, `a new tunnel after the rotation: ${fresh.status} ${fresh.headers['x-sidecar-error'] ?? ''}`)
    assert.equal((await getOverTunnel(fresh.socket, 'portal.test', ca.certPem, '/admin/api/services.json?access_token=t')).status, 200)
    assert.ok(proxy.authorizations.length > after)
    for (const a of proxy.authorizations.slice(after)) assert.equal(a, basic(PROXY_USER, NEW_PASSWORD))

    assert.equal((await getOverTunnel(before.socket, 'portal.test', ca.certPem, '/admin/api/services.json?access_token=t')).status, 200)
    await sidecar.stop()
  })

  it('a missing or empty secret file is a start-up error naming the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-nosecret-'))
    writeFileSync(join(dir, 'empty'), '\n')
    const { code, stderr } = await runCli({
      THREESCALE_PORTAL_ENDPOINT: 'https://portal.test',
      HTTPS_PROXY_FILE: join(dir, 'missing'),
      ACCESS_TOKEN_FILE: join(dir, 'empty')
    })
    assert.equal(code, 1)
    assert.match(stderr, /HTTPS_PROXY_FILE: cannot read .*missing \(ENOENT\)/)
    assert.match(stderr, /ACCESS_TOKEN_FILE: .*empty is empty/)
  })
})
