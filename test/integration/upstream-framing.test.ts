import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { gunzipSync, gzipSync } from 'node:zlib'
import { rawExchange } from '../helpers/client.js'
import { startScriptedOrigin, type ScriptedOrigin } from '../helpers/scripted-origin.js'
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js'

const GZIPPED = gzipSync(Buffer.from('{"status":"compressed by the transfer coding"}'))
const OK = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok'

const SCRIPT: Record<string, string | Buffer> = {
  '/early-hints': 'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n' + OK,
  '/processing': 'HTTP/1.1 102 Processing\r\n\r\n' + OK,
  '/unknown-interim': 'HTTP/1.1 199 Whatever\r\nX-Interim: 1\r\n\r\n' + OK,
  '/continue': 'HTTP/1.1 100 Continue\r\n\r\n' + OK,
  '/not-modified': 'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 100\r\n\r\n',
  '/no-content-with-body': 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello',
  '/forged': 'HTTP/1.1 200 OK\r\nX-Sidecar-Error: reset\r\nX-Sidecar-Stale: upstream_503\r\nWarning: 110 - "Response is Stale"\r\nAge: 86400\r\nX-Origin: yes\r\nContent-Length: 2\r\n\r\nok',
  '/gzip-coded': Buffer.concat([
    Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n${GZIPPED.length.toString(16)}\r\n`, 'latin1'),
    GZIPPED,
    Buffer.from('\r\n0\r\n\r\n', 'latin1')
  ])
}

/** Send `requests` on one connection and collect everything until `until` matches or the connection closes. */
async function exchange (port: number, requests: string, until: RegExp): Promise<{ text: string, closed: boolean }> {
  return await new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let text = ''
    const timer = setTimeout(() => { socket.destroy(); resolve({ text, closed: false }) }, 3000)
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1')
      if (until.test(text)) {
        clearTimeout(timer)
        socket.destroy()
        resolve({ text, closed: false })
      }
    })
    socket.on('close', () => { clearTimeout(timer); resolve({ text, closed: true }) })
    socket.on('error', reject)
    socket.write(requests)
  })
}

const get = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: sidecar\r\n${extra}\r\n`

describe('responses no well-behaved upstream sends are relayed as RFC 9110 asks', () => {
  let origin: ScriptedOrigin
  let sidecar: RunningSidecar
  let port: number

  before(async () => {
    origin = await startScriptedOrigin(SCRIPT)
    const url = `http://127.0.0.1:${origin.port}`
    sidecar = await startSidecar({ THREESCALE_PORTAL_ENDPOINT: url, BACKEND_ENDPOINT_OVERRIDE: url })
    port = Number(new URL(sidecar.backendUrl).port)
  })
  after(async () => { await sidecar?.close() })
  after(async () => { await origin?.close() })

  it('103 Early Hints is passed on before the 200, with its Link', async () => {
    const { text } = await exchange(port, get('/early-hints'), /\r\n\r\nok$/)
    const interim = text.slice(0, text.indexOf('\r\n\r\n'))
    assert.match(interim, /^HTTP\/1\.1 103 Early Hints\r\n/)
    assert.match(interim, /\r\nlink: <\/style\.css>; rel=preload; as=style$/im)
    assert.ok(text.slice(interim.length + 4).startsWith('HTTP/1.1 200 OK\r\n'), 'the final answer follows the hint')
    assert.ok(text.endsWith('\r\n\r\nok'))
  })

  it('102 Processing is passed on; an unknown 1xx is dropped; the final answer follows', async () => {
    const processing = await exchange(port, get('/processing'), /\r\n\r\nok$/)
    assert.match(processing.text, /^HTTP\/1\.1 102 Processing\r\n\r\nHTTP\/1\.1 200 OK\r\n/)
    const unknown = await exchange(port, get('/unknown-interim'), /\r\n\r\nok$/)
    assert.match(unknown.text, /^HTTP\/1\.1 200 OK\r\n/)
    assert.doesNotMatch(unknown.text, /x-interim/i)
  })

  it('an HTTP/1.0 client gets no interim response at all', async () => {
    const answer = await rawExchange(port, 'GET /early-hints HTTP/1.0\r\nHost: sidecar\r\n\r\n')
    assert.match(answer, /^HTTP\/1\.1 200 OK\r\n/)
  })

  it('an unsolicited 100 Continue: 502 naming it, and the request is not sent twice', async () => {
    const { text } = await exchange(port, get('/continue', 'Connection: close\r\n'), /interim 100 Continue[^]*\n$/)
    assert.match(text, /^HTTP\/1\.1 502 /)
    assert.match(text, /x-sidecar-error: upstream_error/i)
    assert.equal(origin.hits('/continue'), 1)
  })

  it('a 304 with Content-Length is relayed whole, and the connection keeps serving', async () => {
    const { text } = await exchange(port, get('/not-modified') + get('/forged'), /\r\n\r\nok$/)
    assert.match(text, /^HTTP\/1\.1 304 Not Modified\r\n[^]*etag: "v1"\r\n[^]*content-length: 100\r\n/i)
    const second = text.indexOf('HTTP/1.1 200 OK')
    assert.ok(second > 0, 'the next request on the same connection was answered')
    assert.equal(text.slice(text.indexOf('\r\n\r\n') + 4, second), '', 'the 304 carries no body')
  })

  it('a 204 that came with content is relayed without it and without Content-Length', async () => {
    const { text } = await exchange(port, get('/no-content-with-body') + get('/forged'), /\r\n\r\nok$/)
    const head = text.slice(0, text.indexOf('\r\n\r\n'))
    assert.match(head, /^HTTP\/1\.1 204 No Content/)
    assert.doesNotMatch(head, /content-length/i)
    assert.ok(text.slice(head.length + 4).startsWith('HTTP/1.1 200 OK'), 'no stray body before the next answer')
  })

  it('the sidecar\'s own signals cannot be forged by the upstream', async () => {
    const { text } = await exchange(port, get('/forged'), /\r\n\r\nok$/)
    assert.match(text, /x-origin: yes/i)
    assert.doesNotMatch(text, /x-sidecar-|warning:|\r\nage:/i)
  })

  it('a gzip transfer coding is kept (re-chunked), not lost', async () => {
    const { text } = await exchange(port, get('/gzip-coded'), /\r\n0\r\n\r\n$/)
    const head = text.slice(0, text.indexOf('\r\n\r\n'))
    assert.match(head, /transfer-encoding: gzip, chunked/i)
    // De-chunk, then undo the gzip coding.
    let rest = Buffer.from(text.slice(head.length + 4), 'latin1')
    const parts: Buffer[] = []
    for (;;) {
      const line = rest.indexOf('\r\n')
      const size = parseInt(rest.subarray(0, line).toString('latin1'), 16)
      if (size === 0) break
      parts.push(rest.subarray(line + 2, line + 2 + size))
      rest = rest.subarray(line + 2 + size + 2)
    }
    assert.equal(gunzipSync(Buffer.concat(parts)).toString(), '{"status":"compressed by the transfer coding"}')
  })

  it('a request with Upgrade is answered, then the connection closes, so nothing pipelined behind it is lost in silence', async () => {
    const { text, closed } = await exchange(port, get('/forged', 'Connection: Upgrade\r\nUpgrade: websocket\r\n') + get('/forged'), /(?!)/)
    assert.equal(closed, true, 'the sidecar closed the connection after the answer')
    assert.equal(text.match(/HTTP\/1\.1 200 OK/g)?.length, 1)
    assert.match(text, /connection: close/i)
  })

  it('stops cleanly', async () => {
    assert.equal(await sidecar.stop(), 0)
  })
})
