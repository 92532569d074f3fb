import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { describe, it } from 'node:test'
import { Client } from '../helpers/client.js'
import { eventually } from '../helpers/eventually.js'
import { startOrigin } from '../helpers/origin.js'
import { runCli, spawnSidecar } from '../helpers/sidecar-process.js'

describe('lifecycle', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal}: stops accepting, lets in-flight requests finish, exits 0`, async (t) => {
      const origin = await startOrigin()
      t.after(async () => { await origin.close() })
      const sidecar = await spawnSidecar({ THREESCALE_PORTAL_ENDPOINT: origin.url(), BACKEND_ENDPOINT_OVERRIDE: origin.url() })
      t.after(async () => { await sidecar.close() })
      const client = new Client()
      t.after(async () => { await client.close() })
      const inFlight = client.send(`${sidecar.backendUrl}/slow?ms=600`)
      await eventually(() => origin.requests.length, (n) => n > 0, 5000, 'the request at the origin')
      const exited = sidecar.stop(signal)
      await sidecar.waitForLog((l) => /draining/.test(l.msg))
      const late = new Client()
      t.after(async () => { await late.close() })
      await assert.rejects(late.send(`${sidecar.portalUrl}/echo`), 'a new connection must be refused while draining')
      const res = await inFlight
      assert.equal(res.status, 200)
      assert.equal(res.text(), 'slow done')
      assert.equal(await exited, 0)
      assert.ok(sidecar.logs().some((l) => l.msg === 'stopped'))
    })
  }

  it('bounds the drain by SHUTDOWN_GRACE_MS', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const sidecar = await spawnSidecar({ THREESCALE_PORTAL_ENDPOINT: origin.url(), BACKEND_ENDPOINT_OVERRIDE: origin.url(), SHUTDOWN_GRACE_MS: '300' })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const hanging = client.send(`${sidecar.backendUrl}/hang`).then(() => 'answered', () => 'cut')
    await eventually(() => origin.requests.length, (n) => n > 0, 5000, 'the request at the origin')
    const started = Date.now()
    assert.equal(await sidecar.stop(), 0)
    assert.ok(Date.now() - started < 5000, 'shutdown must not wait for a hanging upstream')
    assert.equal(await hanging, 'cut')
  })

  /** [the listener, the setting whose port is taken]: each names its own setting. */
  const TAKEN: ReadonlyArray<readonly [string, string]> = [['backend', 'BACKEND_LISTEN_PORT'], ['forward', 'FORWARD_PROXY_PORT']]
  for (const [listener, setting] of TAKEN) {
    it(`exits non-zero and names ${setting} when the ${listener} listener cannot bind`, async (t) => {
      const squatter = createServer()
      await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve))
      t.after(() => { squatter.close() })
      const port = (squatter.address() as AddressInfo).port
      const { code, stdout } = await runCli({ THREESCALE_PORTAL_ENDPOINT: 'https://portal.test', PORTAL_LISTEN_PORT: '0', BACKEND_LISTEN_PORT: '0', [setting]: String(port) })
      assert.equal(code, 1)
      assert.match(stdout, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} for the ${listener} listener \\(EADDRINUSE\\); another process uses the port: stop it or set ${setting}`))
    })
  }

  it('reports every config problem at once, exits 1, no stack trace, no secret', async () => {
    const { code, stdout, stderr } = await runCli({
      THREESCALE_PORTAL_ENDPOINT: 'https://tok-SECRET@host name',
      BACKEND_LISTEN_PORT: 'x',
      HTTPS_PROXY: 'http://u:pw-SECRET@[::1',
      ACCESS_TOKEN_LOCATION: 'cookie'
    })
    assert.equal(code, 1)
    assert.equal(stdout, '')
    const lines = stderr.trim().split('\n')
    assert.match(lines[0] ?? '', /invalid configuration/)
    assert.equal(lines.filter((l) => l.startsWith('  - ')).length, 4)
    assert.doesNotMatch(stderr, /SECRET/)
    assert.doesNotMatch(stderr, /^\s+at /m)
  })

  it('--help and --version answer without needing a config', async () => {
    const help = await runCli({}, ['--help'])
    assert.equal(help.code, 0)
    assert.match(help.stdout, /Usage: apicast-sidecar-proxy/)
    const version = await runCli({}, ['--version'])
    assert.equal(version.code, 0)
    assert.equal(version.stdout, `apicast-sidecar-proxy ${(JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version} (node ${process.version})\n`)
  })
})
