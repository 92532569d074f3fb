import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { Client, rawExchange, runConcurrently } from '../helpers/client.js'
import { eventually } from '../helpers/eventually.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js'

const REPORT = 'service_token=st&service_id=1&transactions[0][user_key]=uk&transactions[0][usage][hits]=1'

/** A usage report as raw bytes, for pipelining behind another request. */
function rawReport (tag: string): string {
  return `POST /transactions.xml?case=${tag} HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/x-www-form-urlencoded\r\n` +
    `Content-Length: ${Buffer.byteLength(REPORT)}\r\n\r\n${REPORT}`
}

/** Send `data` and hang up at once, without reading anything. */
async function sendAndHangUp (port: number, data: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.end(data, () => { socket.destroy(); resolve() })
    })
    socket.on('error', reject)
  })
}

describe('pipelining: no request is forwarded whose response can never be delivered, and no slot leaks', () => {
  let origin: Origin
  let sidecar: RunningSidecar
  const client = new Client()
  const port = (): number => Number(new URL(sidecar.backendUrl).port)
  const inFlight = async (): Promise<string> => {
    const metrics = (await client.send(`${sidecar.adminUrl}/metrics`)).text()
    return /sidecar_requests_in_flight\{listener="backend"\} (\d+)/.exec(metrics)?.[1] ?? 'missing'
  }

  before(async () => {
    origin = await startOrigin({ tls: false })
    sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url(),
      BACKEND_ENDPOINT_OVERRIDE: origin.url(),
      MAX_CONCURRENT_REQUESTS: '4',
      SHUTDOWN_GRACE_MS: '8000'
    })
  })
  after(async () => { await client.close() })
  after(async () => { await sidecar?.close() })
  after(async () => { await origin?.close() })

  it('a report pipelined behind a refused request is never sent, and takes no slot', async () => {
    for (let i = 0; i < 60; i++) {
      // The absolute-form target is refused with 400 and Connection: close.
      const answer = await rawExchange(port(), `GET http://elsewhere.test/ HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n${rawReport(`behind-refusal-${i}`)}`)
      assert.match(answer, /^HTTP\/1\.1 400 /)
      assert.equal(answer.match(/HTTP\/1\.1 /g)?.length, 1, 'one answer only: the connection closes after the refusal')
    }
    assert.equal(origin.requests.filter((r) => r.url.includes('behind-refusal')).length, 0, 'no pipelined report reached 3scale')
    assert.equal(await eventually(inFlight, (n) => n === '0', 5000, 'the in-flight gauge back at 0'), '0')
  })

  it('requests pipelined by a client that hangs up are not forwarded after it is gone', async () => {
    for (let i = 0; i < 40; i++) {
      await sendAndHangUp(port(), `GET /slow?ms=100&case=first-${i} HTTP/1.1\r\nHost: sidecar\r\n\r\n${rawReport(`after-hangup-${i}`)}`)
    }
    assert.equal(await eventually(inFlight, (n) => n === '0', 5000, 'the in-flight gauge back at 0'), '0')
    assert.equal(origin.requests.filter((r) => r.url.includes('after-hangup')).length, 0, 'no report queued behind a hung-up request was sent')
  })

  it('pipelined requests on a live connection are all answered, in order', async () => {
    const answer = await rawExchange(port(),
      'GET /slow?ms=50&case=order-1 HTTP/1.1\r\nHost: sidecar\r\n\r\n' + rawReport('order-2') +
      'GET /echo?case=order-3 HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n')
    const statuses = [...answer.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1])
    assert.deepEqual(statuses, ['200', '202', '200'])
    assert.ok(answer.indexOf('slow done') < answer.indexOf('"url":"/echo?case=order-3"'), 'answers in request order')
  })

  it('afterwards every slot is free: 3 concurrent clients (of MAX_CONCURRENT_REQUESTS=4) get no 503, and shutdown does not wait out the grace period', async () => {
    const statuses: Record<string, number> = {}
    await runConcurrently(300, 3, async () => {
      const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
      statuses[res.status] = (statuses[res.status] ?? 0) + 1
    })
    assert.deepEqual(statuses, { 200: 300 }, 'a leaked slot would turn these into 503s')
    const started = Date.now()
    assert.equal(await sidecar.stop(), 0)
    assert.ok(Date.now() - started < 4000, `shutdown took ${Date.now() - started} ms (grace 8000 ms): nothing was left in flight`)
  })
})
