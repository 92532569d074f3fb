import assert from 'node:assert/strict'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { describe, it } from 'node:test'
import { Client } from '../helpers/client.js'
import { eventually } from '../helpers/eventually.js'
import { startSidecar } from '../helpers/sidecar.js'

const PASSWORD = 'stall-Pa55word'

/**
 * A proxy that answers every CONNECT with a 407 whose head promises a
 * 100-byte body, sends 30 bytes of it, and then stalls. The sidecar reads
 * that body to answer the challenge on the same connection (NTLM must;
 * Digest may), so the read has to be bounded like the head.
 */
async function startStallingProxy (challenge: string): Promise<{ port: number, challenged: () => number, open: () => number, close: () => void }> {
  const sockets = new Set<Socket>()
  let challenged = 0
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    let buffered = ''
    socket.on('data', (d: Buffer) => {
      buffered += d.toString('latin1')
      const end = buffered.indexOf('\r\n\r\n')
      if (end === -1) return
      buffered = buffered.slice(end + 4)
      challenged++
      socket.write('HTTP/1.1 407 Proxy Authentication Required\r\n' +
        `Proxy-Authenticate: ${challenge}\r\n` +
        'Content-Length: 100\r\nConnection: keep-alive\r\n\r\n' + 'x'.repeat(30))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    challenged: () => challenged,
    open: () => sockets.size,
    close: () => {
      for (const s of sockets) s.destroy()
      server.close()
    }
  }
}

describe('a proxy that stalls in the body of its 407', () => {
  const cases = [
    { scheme: 'NTLM', challenge: 'NTLM' },
    { scheme: 'Digest', challenge: 'Digest realm="corp", nonce="n0nce", qop="auth", algorithm=MD5' }
  ]
  for (const c of cases) {
    it(`${c.scheme}: 504 timeout naming CONNECT_TIMEOUT_MS within seconds, and the connection closed`, { timeout: 20_000 }, async (t) => {
      const proxy = await startStallingProxy(c.challenge)
      t.after(() => proxy.close())
      const sidecar = await startSidecar({
        THREESCALE_PORTAL_ENDPOINT: 'https://portal.test',
        BACKEND_ENDPOINT_OVERRIDE: 'https://backend.test',
        HTTPS_PROXY: `http://127.0.0.1:${proxy.port}`,
        PROXY_USER: 'CORP\\alice',
        PROXY_PASSWORD: PASSWORD,
        CONNECT_TIMEOUT_MS: '500'
      }, { secrets: [PASSWORD] })
      t.after(async () => { await sidecar.close() })
      const client = new Client()
      t.after(async () => { await client.close() })

      const started = Date.now()
      const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
      const ms = Date.now() - started

      assert.equal(res.status, 504, res.text())
      assert.equal(res.headers['x-sidecar-error'], 'timeout')
      assert.ok(ms < 5000, `answered after ${ms} ms`)
      assert.ok(proxy.challenged() >= 1, 'the proxy never sent its 407')
      const line = await sidecar.waitForLog((l) => l.error === 'timeout' && l.level === 'error')
      assert.match(line.msg, /opening the tunnel to \S+ through 127\.0\.0\.1:\d+ \(CONNECT_TIMEOUT_MS=500\)/)
      await eventually(() => proxy.open(), (n) => n === 0, 5000, 'the sidecar to close its connections to the proxy')
      assert.equal(await sidecar.stop(), 0)
    })
  }
})
