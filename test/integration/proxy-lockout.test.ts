import assert from 'node:assert/strict'
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, it } from 'node:test'
import { Client, runConcurrently } from '../helpers/client.js'
import { connectThrough } from '../helpers/connect-client.js'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { eventually } from '../helpers/eventually.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { PROXY_PASSWORD, PROXY_USER, squidSkip, startSquid, type Squid } from '../helpers/proxies.js'
import { startForwardProxy } from '../helpers/sidecar.js'

const WRONG = 'not-the-p@ssword'
const SECRETS = [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD), WRONG, encodeURIComponent(WRONG)]

/** Replace a file the way kubelet and editors do: write aside, then rename over it. */
function replaceFile (path: string, content: string): void {
  writeFileSync(path + '.tmp', content)
  renameSync(path + '.tmp', path)
}

describeOrSkip('lockout protection: a refused password is not sent again for PROXY_AUTH_BACKOFF_MS', squidSkip, () => {
  let origin: Origin
  let squid: Squid
  before(async () => {
    origin = await startOrigin()
    squid = await startSquid()
  })
  after(async () => { await squid?.close() })
  after(async () => { await origin?.close() })

  const refusals = (from: number): number => squid.accessLog().slice(from).filter((l) => /TCP_DENIED\/407/.test(l)).length

  it('under load, the proxy sees at most 2 refused attempts per back-off; every request gets 502 at once; a fixed password file ends it', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-lockout-'))
    writeFileSync(join(dir, 'password'), WRONG)
    const { sidecar, port } = await startForwardProxy({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: `http://${PROXY_USER}@127.0.0.1:${squid.port}`,
      PROXY_PASSWORD_FILE: join(dir, 'password')
      // PROXY_AUTH_BACKOFF_MS left at its 60 s: the whole load falls in one back-off.
    }, { secrets: SECRETS })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const before = squid.accessLog().length

    // 300 requests, 16 at a time, across both routes and the forward proxy's CONNECT.
    const statuses = new Map<string, number>()
    await runConcurrently(300, 16, async (i) => {
      let key: string
      if (i % 3 === 2) {
        const reply = await connectThrough(port, `portal.test:${origin.port}`)
        reply.socket.destroy()
        key = `${reply.status} ${reply.headers['x-sidecar-error'] ?? ''}`
      } else {
        const url = i % 3 === 0 ? `${sidecar.backendUrl}/transactions/authrep.xml?service_token=t&service_id=1` : `${sidecar.portalUrl}/admin/api/services.json?access_token=t`
        const res = await client.send(url)
        key = `${res.status} ${String(res.headers['x-sidecar-error'] ?? '')}`
      }
      statuses.set(key, (statuses.get(key) ?? 0) + 1)
    })
    assert.deepEqual([...statuses], [['502 proxy_auth_required', 300]])
    assert.equal(origin.requests.length, 0)

    // squid logs a 407 when its connection ends: give it the time to.
    await eventually(() => refusals(before), (n) => n >= 1, 5000, 'squid\'s 407 line')
    await new Promise((resolve) => setTimeout(resolve, 300))
    assert.ok(refusals(before) <= 2, `the proxy saw ${refusals(before)} refused attempts in one back-off`)

    const line = await sidecar.waitForLog((l) => l.level === 'error' && /refused the proxy credentials: they are not sent to it again/.test(String(l.msg)))
    assert.equal(line.proxy, `127.0.0.1:${squid.port}`)
    assert.match(String(line.msg), /PROXY_AUTH_BACKOFF_MS/)
    assert.equal(sidecar.logs().filter((l) => /refused the proxy credentials: they are not sent to it again/.test(String(l.msg))).length, 1, 'one line per back-off')
    const backedOff = sidecar.logs().find((l) => l.error === 'proxy_auth_required' && /so that a wrong password cannot lock the account/.test(String(l.msg)))
    assert.ok(backedOff !== undefined, 'a request refused by the back-off says why')
    const metrics = await (await fetch(`${sidecar.adminUrl}/metrics`)).text()
    assert.match(metrics, new RegExp(`sidecar_proxy_auth_backoffs_total\\{proxy="127\\.0\\.0\\.1:${squid.port}"\\} 1\\b`))

    // The right password in the file: the back-off ends at once, not in 60 s.
    replaceFile(join(dir, 'password'), PROXY_PASSWORD)
    await sidecar.waitForLog((l) => /the proxy settings changed/.test(String(l.msg)) && l.listener === 'backend')
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=t&service_id=1`)
    assert.equal(res.status, 200, 'the origin answered: the request went through')
    await sidecar.stop()
  })

  it('each time the back-off runs out, one new attempt: still wrong, one more refusal and a new back-off', async (t) => {
    const { sidecar } = await startForwardProxy({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      HTTPS_PROXY: `http://${PROXY_USER}:${encodeURIComponent(WRONG)}@127.0.0.1:${squid.port}`,
      PROXY_AUTH_BACKOFF_MS: '2000'
    }, { secrets: SECRETS })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const before = squid.accessLog().length
    const url = `${sidecar.portalUrl}/admin/api/services.json?access_token=t`
    // Each round: a burst at the start of a back-off, then a wait past its end.
    for (let round = 0; round < 3; round++) {
      await runConcurrently(20, 4, async () => {
        const res = await client.send(url)
        assert.equal(res.status, 502)
      })
      await eventually(() => sidecar.logs().filter((l) => l.event === 'proxy_auth_backoff').length, (n) => n === round + 1, 5000, `back-off ${round + 1}`)
      await new Promise((resolve) => setTimeout(resolve, 2100))
    }
    await eventually(() => refusals(before), (n) => n >= 3, 5000, 'three 407 lines')
    await new Promise((resolve) => setTimeout(resolve, 300))
    assert.equal(refusals(before), 3, 'one refused attempt per back-off')
    assert.equal(sidecar.logs().filter((l) => l.event === 'proxy_auth_backoff').length, 3)
    await sidecar.stop()
  })
})
