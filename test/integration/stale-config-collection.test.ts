import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { request } from 'undici'
import { Client } from '../helpers/client.js'
import { eventually, memoryOf } from '../helpers/eventually.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { spawnSidecar } from '../helpers/sidecar-process.js'
import { startSidecar } from '../helpers/sidecar.js'

const MiB = 1024 * 1024
const BODY_BYTES = 8 * MiB
const READS = 40

/**
 * The bound on the sidecar's peak RSS through the load: the pod's memory
 * limit (256Mi in the manifests). Measured on a 2-core machine: the relay
 * alone (STALE_CONFIG_MAX_AGE=0) peaks at 124-143 MiB; collecting every body
 * whole with no total bound, at 541-551 MiB in memory and 863-909 MiB with
 * STALE_CONFIG_DIR (issue #13); with the collection budget, at 159-171 MiB
 * and 161-180 MiB.
 */
const PEAK_BOUND = 256 * MiB

/** The 8 MiB configuration of service `n`: valid JSON, its id first, padded to the exact size. */
function configOf (n: number): { head: Buffer, pad: Buffer, tail: Buffer } {
  const head = Buffer.from(`{"proxy":{"service_id":${n},"pad":"`)
  const tail = Buffer.from('"}}')
  return { head, pad: PAD.subarray(0, BODY_BYTES - head.length - tail.length), tail }
}
const PAD = Buffer.alloc(BODY_BYTES, 'x')

/** What the portal does to service N's next read, once: break the connection mid-body, or stall mid-body. */
type Fault = 'break' | 'stall'

interface Portal {
  status: number
  readonly faults: Map<number, Fault>
  /** While set, every configuration is sent but for its last 3 bytes, which wait for this. */
  tails: Promise<void> | undefined
}

/**
 * A portal whose `/admin/api/services/N/proxy.json` answers 200 with service
 * N's 8 MiB configuration (even N with Content-Length, odd N chunked, so a
 * collection is bounded both by the declared length and as it grows), or
 * `portal.status` once that is set to an error, or the fault set for N.
 */
async function startPortal (): Promise<{ origin: Origin, portal: Portal }> {
  const portal: Portal = { status: 200, faults: new Map(), tails: undefined }
  const origin = await startOrigin({
    handler: (req, res) => {
      req.resume()
      const n = Number(/^\/admin\/api\/services\/(\d+)\/proxy\.json$/.exec(req.url ?? '')?.[1] ?? NaN)
      if (!Number.isInteger(n) || portal.status !== 200) {
        res.writeHead(Number.isInteger(n) ? portal.status : 404, { 'content-type': 'text/plain' })
        res.end('unavailable\n')
        return
      }
      const { head, pad, tail } = configOf(n)
      const fault = portal.faults.get(n)
      portal.faults.delete(n)
      res.writeHead(200, { 'content-type': 'application/json', ...(n % 2 === 0 ? { 'content-length': String(BODY_BYTES) } : {}) })
      res.write(head)
      if (fault !== undefined) {
        // Half the body, then the connection breaks, or nothing more comes (until the origin closes).
        res.write(pad.subarray(0, pad.length / 2), () => { if (fault === 'break') req.socket.destroy() })
        return
      }
      res.write(pad)
      if (portal.tails === undefined) res.end(tail)
      else void portal.tails.then(() => { res.end(tail) })
    }
  })
  return { origin, portal }
}

/**
 * GET service n's configuration through the sidecar, counting the body (the
 * test process keeps none of it) and telling `progress` the count so far.
 */
async function read (client: Client, base: string, n: number, progress?: (bytes: number) => void): Promise<{ status: number, bytes: number, complete: boolean, stale: string | undefined }> {
  const res = await request(`${base}/admin/api/services/${n}/proxy.json`, { dispatcher: client.agent })
  let bytes = 0
  let first: Buffer | undefined
  let last: Buffer | undefined
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    first ??= chunk
    last = chunk
    bytes += chunk.length
    progress?.(bytes)
  }
  const { head } = configOf(n)
  const complete = bytes === BODY_BYTES &&
    first !== undefined && first.subarray(0, head.length).equals(head) &&
    last !== undefined && last.subarray(-3).toString() === '"}}'
  const stale = res.headers['x-sidecar-stale']
  return { status: res.statusCode, bytes, complete, stale: typeof stale === 'string' ? stale : undefined }
}

describe('stale-config collection: bounded in memory under concurrent large configuration reads', () => {
  for (const withDir of [false, true]) {
    it(`${READS} concurrent 8 MiB reads ${withDir ? 'with' : 'without'} STALE_CONFIG_DIR: every response complete, peak RSS under ${PEAK_BOUND / MiB} MiB, and the store still serves`, async (t) => {
      const { origin, portal } = await startPortal()
      t.after(async () => { await origin.close() })
      const dir = withDir ? mkdtempSync(join(tmpdir(), 'sidecar-stale-memory-')) : undefined
      if (dir !== undefined) t.after(() => { rmSync(dir, { recursive: true, force: true }) })
      // A process: its peak RSS is what is measured.
      const sidecar = await spawnSidecar({
        THREESCALE_PORTAL_ENDPOINT: origin.url(),
        BACKEND_ENDPOINT_OVERRIDE: origin.url(),
        LOG_LEVEL: 'info',
        ...(dir !== undefined ? { STALE_CONFIG_DIR: dir } : {})
      })
      t.after(async () => { await sidecar.close() })
      const client = new Client()
      t.after(async () => { await client.close() })

      // The 40 reads overlap whole: each response reaches APIcast but for its
      // last 3 bytes, and only then do they all end. Without this, on a loaded
      // machine the first could end before the last began, and a sidecar that
      // collected without bound could still pass.
      const ids = Array.from({ length: READS }, (_, i) => i + 1)
      let endAll = (): void => {}
      portal.tails = new Promise((resolve) => { endAll = resolve })
      const received = new Map<number, number>()
      const reads = Promise.all(ids.map(async (n) => await read(client, sidecar.portalUrl, n, (bytes) => received.set(n, bytes))))
      await eventually(() => ids.filter((n) => (received.get(n) ?? 0) >= BODY_BYTES - 3).length, (done) => done === READS, 60_000, 'every response but its last 3 bytes')
      portal.tails = undefined
      endAll()
      const results = await reads
      for (const [i, r] of results.entries()) {
        assert.equal(r.status, 200, `service ${ids[i]}`)
        assert.equal(r.bytes, BODY_BYTES, `service ${ids[i]}: the whole body, collected or not`)
        assert.ok(r.complete, `service ${ids[i]}: its own configuration, start to end`)
        assert.equal(r.stale, undefined)
      }

      // The portal fails: what was kept is served stale, whole; the rest passes 3scale's 503 through.
      portal.status = 503
      const during = []
      for (const n of ids) during.push(await read(client, sidecar.portalUrl, n))
      const served = during.filter((r) => r.status === 200)
      assert.ok(served.length >= 1, 'at least one configuration was kept')
      for (const r of served) {
        assert.equal(r.stale, 'upstream_503')
        assert.ok(r.complete, 'a stale answer is the whole configuration')
      }
      assert.ok(during.every((r) => r.status === 200 || r.status === 503))

      const { peak } = await memoryOf(sidecar.pid)
      t.diagnostic(`peak RSS ${(peak / MiB).toFixed(0)} MiB; ${served.length} configuration(s) kept`)
      assert.ok(peak < PEAK_BOUND, `peak RSS ${(peak / MiB).toFixed(0)} MiB, bound ${PEAK_BOUND / MiB} MiB`)

      assert.equal(await sidecar.stop(), 0)
      if (dir !== undefined) {
        // Shutdown waits for the writes: the directory holds what memory held, each file private.
        const files = readdirSync(dir)
        assert.equal(files.length, served.length, files.join(', '))
        for (const f of files) {
          assert.match(f, /^[0-9a-f]{64}\.json$/)
          assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600, f)
        }
      }
    })
  }
})

describe('stale-config collection: a collection cut short gives back its key and its budget', () => {
  it('after the portal breaks one read mid-body and APIcast abandons another, both are collected again and served stale', async (t) => {
    const { origin, portal } = await startPortal()
    t.after(async () => { await origin.close() })
    // A budget of one 8 MiB body: a collection never released would keep every later one out.
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url(),
      BACKEND_ENDPOINT_OVERRIDE: origin.url(),
      STALE_CONFIG_MAX_BYTES: String(BODY_BYTES + MiB)
    })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })

    portal.faults.set(2, 'break')
    await assert.rejects(read(client, sidecar.portalUrl, 2))
    await sidecar.waitForLog((l) => /response interrupted/.test(l.msg))

    portal.faults.set(3, 'stall')
    const aborted = new AbortController()
    const res = await request(`${sidecar.portalUrl}/admin/api/services/3/proxy.json`, { dispatcher: client.agent, signal: aborted.signal })
    for await (const _chunk of res.body) break // APIcast goes away mid-body
    aborted.abort()
    await sidecar.waitForLog((l) => /request aborted: the client closed the connection/.test(l.msg))

    for (const n of [2, 3]) {
      const r = await read(client, sidecar.portalUrl, n)
      assert.ok(r.status === 200 && r.complete, `service ${n}, read again`)
    }
    // Only one of them fits the store's 9 MiB: the one stored last.
    portal.status = 503
    const stale = await read(client, sidecar.portalUrl, 3)
    assert.equal(stale.status, 200)
    assert.equal(stale.stale, 'upstream_503')
    assert.ok(stale.complete)
    await sidecar.stop()
  })
})
