import assert from 'node:assert/strict'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { connectThrough, readToClose } from '../helpers/connect-client.js'
import { eventually, openFds } from '../helpers/eventually.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { squidSkip, startSquid, type Squid } from '../helpers/proxies.js'
import { spawnSidecar, type SidecarProcess } from '../helpers/sidecar-process.js'
import { describeOrSkip } from '../helpers/describe-or-skip.js'

/** A raw TCP destination: `script` runs for each connection. */
async function startTcp (script: (socket: Socket) => void): Promise<{ port: number, sockets: Set<Socket>, close: () => Promise<void> }> {
  const sockets = new Set<Socket>()
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.once('close', () => sockets.delete(s))
    script(s)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    sockets,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => { resolve() }))
    }
  }
}

/** A sidecar process: these tests count its file descriptors. */
async function startForwarding (env: Record<string, string>): Promise<{ sidecar: SidecarProcess, port: number }> {
  const sidecar = await spawnSidecar({ THREESCALE_PORTAL_ENDPOINT: 'https://portal.test', FORWARD_PROXY_PORT: '0', ...env })
  const line = await sidecar.waitForLog((l) => l.listener === 'forward' && typeof l.port === 'number')
  return { sidecar, port: line.port as number }
}

describe('the forward proxy\'s limits (loopback destinations, reached directly)', () => {
  // Echoes the byte count once the client has half-closed; says hello first.
  let counter: Awaited<ReturnType<typeof startTcp>>
  // Sends 64 MiB at once, whether or not anyone reads.
  let firehose: Awaited<ReturnType<typeof startTcp>>
  let sidecar: SidecarProcess
  let port: number
  const afterServerFin: number[] = []

  before(async () => {
    counter = await startTcp((s) => {
      let n = 0
      s.on('data', (c: Buffer) => { n += c.length })
      s.once('end', () => { s.end(`got ${n}`) })
    })
    firehose = await startTcp((s) => {
      s.on('data', () => {})
      s.write(Buffer.alloc(64 * 1024 * 1024))
    })
    ;({ sidecar, port } = await startForwarding({
      FORWARD_PROXY_ALLOW: `localhost:${counter.port},localhost:${firehose.port}`,
      FORWARD_PROXY_MAX_TUNNELS: '25',
      FORWARD_PROXY_IDLE_TIMEOUT_MS: '700'
    }))
  })
  after(async () => { await sidecar?.close() })
  after(async () => { await counter?.close() })
  after(async () => { await firehose?.close() })

  it('half-close from the client: the destination sees the FIN and its answer still comes back', async () => {
    const { socket } = await connectThrough(port, `localhost:${counter.port}`)
    socket.end('x'.repeat(1000))
    assert.equal(await readToClose(socket), 'got 1000')
    const line = await sidecar.waitForLog((l) => l.listener === 'forward' && l.bytesUp === 1000)
    assert.equal(line.bytesDown, 'got 1000'.length)
    assert.equal(line.end, 'closed')
    assert.equal(line.proxy, 'direct')
  })

  it('half-close from the destination: the client sees the FIN and can still send', async (t) => {
    const early = await startTcp((s) => {
      let n = 0
      s.end('bye')
      s.on('data', (c: Buffer) => { n += c.length })
      s.once('end', () => { afterServerFin.push(n) })
    })
    t.after(async () => { await early.close() })
    const { sidecar: s, port: p } = await startForwarding({ FORWARD_PROXY_ALLOW: `localhost:${early.port}` })
    t.after(async () => { await s.close() })
    const { socket } = await connectThrough(p, `localhost:${early.port}`, { allowHalfOpen: true })
    const got: Buffer[] = []
    socket.on('data', (c: Buffer) => got.push(c))
    socket.resume()
    await new Promise<void>((resolve) => socket.once('end', () => { resolve() }))
    assert.equal(Buffer.concat(got).toString(), 'bye')
    socket.end('still here')
    await eventually(() => afterServerFin.length, (n) => n === 1, 5000, 'the destination to get the rest')
    assert.deepEqual(afterServerFin, ['still here'.length])
    await s.stop()
  })

  it('20 tunnels at once, then 1,000 one after the other: descriptors back to the baseline', async () => {
    const baseline = await openFds(sidecar.pid)
    const once = async (): Promise<void> => {
      const { status, socket } = await connectThrough(port, `localhost:${counter.port}`)
      assert.equal(status, 200)
      socket.end('ping')
      assert.equal(await readToClose(socket), 'got 4')
    }
    await Promise.all(Array.from({ length: 20 }, once))
    for (let i = 0; i < 1000; i++) await once()
    await eventually(async () => await openFds(sidecar.pid), (n) => n <= baseline, 5000, 'descriptors back to the baseline')
  })

  it('past FORWARD_PROXY_MAX_TUNNELS: 503 too_many_tunnels with Retry-After; freed tunnels make room', async () => {
    const held = await Promise.all(Array.from({ length: 25 }, async () => await connectThrough(port, `localhost:${counter.port}`)))
    assert.ok(held.every((r) => r.status === 200))
    const refused = await connectThrough(port, `localhost:${counter.port}`)
    assert.equal(refused.status, 503)
    assert.equal(refused.headers['x-sidecar-error'], 'too_many_tunnels')
    assert.equal(refused.headers['retry-after'], '1')
    for (const r of held) r.socket.destroy()
    await eventually(async () => (await connectThrough(port, `localhost:${counter.port}`)).status, (s) => s === 200, 5000, 'a free tunnel')
  })

  it('a client that stops reading, and a silent one, lose their tunnels to the idle timeout', async () => {
    const baseline = await openFds(sidecar.pid)
    const stuck = await connectThrough(port, `localhost:${firehose.port}`)
    assert.equal(stuck.status, 200) // and never read
    const silent = await connectThrough(port, `localhost:${counter.port}`)
    assert.equal(silent.status, 200) // and never send
    await eventually(() => sidecar.logs().filter((l) => l.listener === 'forward' && l.end === 'idle_timeout').length, (n) => n >= 2, 10_000, 'two idle_timeout lines')
    const stuckLine = sidecar.logs().find((l) => l.end === 'idle_timeout' && l.destination === `localhost:${firehose.port}`)
    assert.ok(stuckLine !== undefined && (stuckLine.bytesDown as number) < 64 * 1024 * 1024, 'the stuck client did not read everything')
    await eventually(() => firehose.sockets.size, (n) => n === 0, 5000, 'the destination connection closed')
    await eventually(async () => await openFds(sidecar.pid), (n) => n <= baseline, 5000, 'descriptors back to the baseline')
    stuck.socket.destroy()
    silent.socket.destroy()
  })

  it('exits 0 on SIGTERM', async () => {
    assert.equal(await sidecar.stop(), 0)
  })
})

describeOrSkip('the forward proxy: 20 tunnels at once through squid', squidSkip, () => {
  let origin: Origin
  let squid: Squid
  before(async () => {
    origin = await startOrigin()
    squid = await startSquid()
  })
  after(async () => { await squid?.close() })
  after(async () => { await origin?.close() })

  it('opens 20 tunnels at once through squid, each its own CONNECT', async (t) => {
    const { sidecar, port } = await startForwarding({ THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'), HTTPS_PROXY: squid.url })
    t.after(async () => { await sidecar.close() })
    const replies = await Promise.all(Array.from({ length: 20 }, async () => await connectThrough(port, `portal.test:${origin.port}`)))
    assert.deepEqual(replies.map((r) => r.status), Array.from({ length: 20 }, () => 200))
    for (const r of replies) r.socket.destroy()
    await eventually(() => sidecar.logs().filter((l) => l.listener === 'forward' && typeof l.bytesDown === 'number').length, (n) => n === 20, 5000, '20 tunnel lines')
    await sidecar.stop()
    await eventually(() => squid.accessLog().filter((l) => / CONNECT portal\.test:/.test(l)).length, (n) => n === 20, 5000, 'squid\'s 20 CONNECT lines')
  })
})
