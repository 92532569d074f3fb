import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { Client } from '../helpers/client.js'
import { eventually } from '../helpers/eventually.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js'

/** Ask for a large body and never read it: the response backs up into the sidecar. */
async function nonReader (port: number, path: string): Promise<{ socket: Socket, closed: Promise<void> }> {
  const socket = connect(port, '127.0.0.1')
  socket.on('error', () => {})
  await new Promise<void>((resolve) => socket.once('connect', resolve))
  socket.write(`GET ${path} HTTP/1.1\r\nHost: sidecar\r\n\r\n`)
  socket.pause()
  return { socket, closed: new Promise<void>((resolve) => socket.once('close', () => { resolve() })) }
}

describe('CLIENT_SEND_TIMEOUT_MS: a client that never reads its response cannot hold a tunnel', () => {
  let origin: Origin
  let sidecar: RunningSidecar
  const client = new Client()

  before(async () => {
    origin = await startOrigin()
    sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url(),
      BACKEND_ENDPOINT_OVERRIDE: origin.url(),
      UPSTREAM_MAX_CONNECTIONS: '2',
      CLIENT_SEND_TIMEOUT_MS: '600'
    })
  })
  after(async () => { await client.close() })
  after(async () => { await sidecar?.close() })
  after(async () => { await origin?.close() })

  it('past the limit the stuck responses are cut off, their tunnels freed, and others are served', async () => {
    const port = Number(new URL(sidecar.backendUrl).port)
    // As many non-readers as the pool has connections: without the limit,
    // every later request on this listener waits for a tunnel for good.
    const stuck = await Promise.all([nonReader(port, '/bytes?n=268435456'), nonReader(port, '/bytes?n=268435456')])
    const started = Date.now()
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 200)
    assert.ok(Date.now() - started < 5000, `served after ${Date.now() - started} ms`)
    const metrics = async (): Promise<string> => (await client.send(`${sidecar.adminUrl}/metrics`)).text()
    await eventually(metrics, (m) => /sidecar_client_errors_total\{listener="backend",kind="send_timeout"\} 2/.test(m), 5000, 'both stuck responses cut off')
    const lines = sidecar.logs().filter((l) => l.error === 'send_timeout')
    assert.equal(lines.length, 2)
    for (const line of lines) {
      assert.equal(line.level, 'warn')
      assert.match(line.msg, /did not read its response for 600 ms \(CLIENT_SEND_TIMEOUT_MS\).*upstream request aborted/)
    }
    // A paused socket sees its connection close only once it reads again.
    for (const s of stuck) s.socket.resume()
    await Promise.all(stuck.map(async (s) => { await s.closed }))
    assert.equal(await eventually(async () => /sidecar_requests_in_flight\{listener="backend"\} (\d+)/.exec(await metrics())?.[1], (n) => n === '0'), '0')
  })

  it('a client that reads slowly but steadily is not cut off', async () => {
    const port = Number(new URL(sidecar.backendUrl).port)
    const socket = connect(port, '127.0.0.1')
    let got = 0
    const done = new Promise<void>((resolve, reject) => {
      socket.on('data', (d: Buffer) => {
        got += d.length
        // Stop for 300 ms after each 4 MiB: under the 600 ms limit each time.
        if (got % (4 << 20) < d.length) {
          socket.pause()
          setTimeout(() => socket.resume(), 300)
        }
      })
      socket.on('end', resolve)
      socket.on('error', reject)
    })
    socket.write('GET /bytes?n=16777216 HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n')
    await done
    assert.ok(got > 16 << 20, `the whole body arrived (${got} bytes with the head)`)
  })

  it('stops cleanly', async () => {
    assert.equal(await sidecar.stop(), 0)
  })
})

describe('CLIENT_SEND_TIMEOUT_MS: a client that goes away', () => {
  // The send timer armed by the pause used to survive the response: it logged
  // and counted a send_timeout for a client long gone, and kept a stopped
  // sidecar's timer alive for CLIENT_SEND_TIMEOUT_MS (found in-process, where
  // the test file then waited 60 s for it before it could exit).
  it('while its response is blocked is logged once, as 499: no send timeout follows', async (t) => {
    // An origin that says when its writes back up: the sidecar stopped reading
    // it, so its relay is paused on APIcast's full socket.
    let blocked = false
    const origin = await startOrigin({
      tls: false,
      handler: (req, res) => {
        req.resume()
        res.writeHead(200, { 'content-type': 'application/octet-stream' })
        const chunk = Buffer.alloc(65536, 120)
        const pump = (): void => {
          while (res.write(chunk)) if (res.destroyed) return
          blocked = true
          res.once('drain', pump)
        }
        pump()
      }
    })
    t.after(async () => { await origin.close() })
    const sidecar = await startSidecar({ THREESCALE_PORTAL_ENDPOINT: origin.url(), BACKEND_ENDPOINT_OVERRIDE: origin.url(), CLIENT_SEND_TIMEOUT_MS: '600' })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const { socket } = await nonReader(Number(new URL(sidecar.backendUrl).port), '/stream')
    await eventually(() => blocked, (b) => b, 5000, 'the origin\'s writes to back up')
    socket.destroy()
    const aborted = await sidecar.waitForLog((l) => l.status === 499)
    assert.match(aborted.msg, /client closed/)
    // What is tested is that nothing follows once CLIENT_SEND_TIMEOUT_MS has passed: let it pass, twice over.
    await new Promise((resolve) => setTimeout(resolve, 1200))
    assert.deepEqual(sidecar.logs().filter((l) => l.error === 'send_timeout').map((l) => l.msg), [])
    assert.doesNotMatch((await client.send(`${sidecar.adminUrl}/metrics`)).text(), /kind="send_timeout"\} [1-9]/)
    await sidecar.stop()
  })
})
