import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { Client, rawExchange } from '../helpers/client.js'
import { eventually, openFds } from '../helpers/eventually.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { spawnSidecar } from '../helpers/sidecar-process.js'
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js'

const SECRET = 'uk-smuggled-secret'

describe('requests node:http refuses are answered, logged (sampled) and counted; refused CONNECTs are closed', () => {
  let origin: Origin
  let sidecar: RunningSidecar
  const client = new Client()
  const port = (): number => Number(new URL(sidecar.backendUrl).port)
  const metrics = async (): Promise<string> => (await client.send(`${sidecar.adminUrl}/metrics`)).text()

  before(async () => {
    origin = await startOrigin({ tls: false })
    sidecar = await startSidecar({ THREESCALE_PORTAL_ENDPOINT: origin.url(), BACKEND_ENDPOINT_OVERRIDE: origin.url() }, { secrets: [SECRET] })
  })
  after(async () => { await client.close() })
  after(async () => { await sidecar?.close() })
  after(async () => { await origin?.close() })

  it('a smuggling attempt (Content-Length with Transfer-Encoding) gets 400, one log line and a count, and reaches nothing', async () => {
    const before = origin.requests.length
    const answer = await rawExchange(port(),
      `POST /transactions.xml?user_key=${SECRET} HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n`)
    assert.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/)
    assert.match(answer, /\r\nX-Sidecar-Error: bad_request\r\n/)
    assert.match(answer, /\r\nContent-Length: 0\r\n/, 'no body: the refused request may have been a HEAD')
    assert.equal(origin.requests.length, before, 'nothing reached the upstream')
    const line = await sidecar.waitForLog((l) => l.error === 'bad_request')
    assert.equal(line.level, 'warn')
    assert.equal(line.listener, 'backend')
    assert.equal(line.status, 400)
    assert.match(String(line.code), /^HPE_/)
    assert.match(line.msg, /nothing was sent upstream/)
    assert.match(await metrics(), /sidecar_client_errors_total\{listener="backend",kind="bad_request"\} 1/)
  })

  it('a flood of malformed requests is counted one by one but logged once per 10 s', async () => {
    for (let i = 0; i < 30; i++) {
      assert.match(await rawExchange(port(), 'GET /x HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n'), /^HTTP\/1\.1 400 /)
    }
    await eventually(metrics, (m) => /kind="bad_request"\} 31/.test(m), 5000, '31 bad requests counted')
    assert.equal(sidecar.logs().filter((l) => l.error === 'bad_request').length, 1, 'one line for the flood, within 10 s of the first')
  })

  it('oversized headers get 431, counted apart', async () => {
    const answer = await rawExchange(port(), `GET /x HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)
    assert.match(answer, /^HTTP\/1\.1 431 /)
    assert.match(await metrics(), /kind="headers_too_large"\} 1/)
    const line = await sidecar.waitForLog((l) => l.error === 'headers_too_large')
    assert.match(line.msg, /16 KiB/)
  })

  it('stops cleanly, and the smuggled secret never reached its output', async () => {
    assert.equal(await sidecar.stop(), 0)
  })
})

describe('refused CONNECTs are closed', () => {
  // A process: its descriptors are what is counted.
  it('400 CONNECTs left half-open by their clients are closed: descriptors return, the listeners keep serving', async (t) => {
    const origin = await startOrigin({ tls: false })
    t.after(async () => { await origin.close() })
    const sidecar = await spawnSidecar({ THREESCALE_PORTAL_ENDPOINT: origin.url(), BACKEND_ENDPOINT_OVERRIDE: origin.url() })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const port = Number(new URL(sidecar.backendUrl).port)
    const metrics = async (): Promise<string> => (await client.send(`${sidecar.adminUrl}/metrics`)).text()
    await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    const baseline = await openFds(sidecar.pid)
    const sockets: Socket[] = []
    t.after(() => { for (const s of sockets) s.destroy() })
    const answers: Array<Promise<string>> = []
    for (let i = 0; i < 400; i++) {
      const socket = connect(port, '127.0.0.1')
      socket.on('error', () => {})
      sockets.push(socket)
      answers.push(new Promise((resolve) => {
        let got = ''
        socket.on('data', (d: Buffer) => { got += d.toString('latin1') })
        socket.on('close', () => { resolve(got) })
      }))
      // The client never ends its side: only the sidecar can close these.
      socket.write('CONNECT elsewhere.test:443 HTTP/1.1\r\nHost: elsewhere.test:443\r\n\r\n')
    }
    const got = await Promise.all(answers)
    assert.ok(got.every((a) => a.startsWith('HTTP/1.1 405 Method Not Allowed\r\n')), 'each got its 405, then the close')
    const fds = await eventually(async () => await openFds(sidecar.pid), (n) => n <= baseline + 2, 5000, 'descriptors back to the baseline')
    assert.ok(fds <= baseline + 2)
    assert.equal((await client.send(`${sidecar.adminUrl}/healthz`)).status, 200)
    assert.equal((await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
    assert.match(await metrics(), /kind="connect"\} 400/)
    const line = await sidecar.waitForLog((l) => l.error === 'connect')
    assert.match(line.msg, /refused CONNECT elsewhere\.test:443: .*not a forward proxy/)
    assert.equal(await sidecar.stop(), 0)
  })
})
