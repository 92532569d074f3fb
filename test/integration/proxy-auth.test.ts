import assert from 'node:assert/strict'
import { createServer, type AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { Client, runConcurrently } from '../helpers/client.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { squidSkip, PROXY_PASSWORD, PROXY_USER, proxyUrl, startSquid, type Squid } from '../helpers/proxies.js'
import { testCa } from '../helpers/pki.js'
import { runCli } from '../helpers/sidecar-process.js'
import { startSidecar } from '../helpers/sidecar.js'


describeOrSkip('proxy authentication: Digest, through squid with digest_file_auth', squidSkip, () => {
  let origin: Origin
  let squid: Squid
  const client = new Client()

  before(async () => {
    origin = await startOrigin()
    squid = await startSquid({ auth: 'digest' })
  })
  after(async () => { await client.close() })
  after(async () => { await squid?.close() })
  after(async () => { await origin?.close() })

  const lines = (re: RegExp): number => squid.accessLog().filter((l) => re.test(l)).length

  for (const scheme of ['auto', 'digest'] as const) {
    it(`PROXY_AUTH_SCHEME=${scheme}: answers the challenge, then reuses its tunnels: 1,000 requests at concurrency 8`, async (t) => {
      const tunnelsBefore = lines(/\/200 .* CONNECT /)
      const challengesBefore = lines(/TCP_DENIED\/407 .* CONNECT /)
      const secrets = [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD), Buffer.from(`${PROXY_USER}:${PROXY_PASSWORD}`).toString('base64')]
      const sidecar = await startSidecar({
        THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
        BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
        HTTPS_PROXY: squid.url,
        PROXY_AUTH_SCHEME: scheme,
        UPSTREAM_MAX_CONNECTIONS: '8'
      }, { secrets })
      t.after(async () => { await sidecar.close() })
      await runConcurrently(1000, 8, async (i) => {
        const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st&i=${i}`)
        assert.equal(res.status, 200, res.text())
      })
      assert.equal(await sidecar.stop(), 0)
      // squid writes a tunnel's line when it closes: after the sidecar stopped.
      await squid.idle()
      const opened = lines(/\/200 .* CONNECT /) - tunnelsBefore
      assert.ok(opened >= 1 && opened <= 8, `${opened} tunnels for 1,000 requests`)
      const challenges = lines(/TCP_DENIED\/407 .* CONNECT /) - challengesBefore
      assert.ok(challenges >= 1 && challenges <= 8, `${challenges} challenges: at most one per tunnel`)
    })
  }

  it('/readyz and doctor check the path the same way: ready, every step passes', async (t) => {
    const ca = await testCa()
    const env = {
      THREESCALE_PORTAL_ENDPOINT: `https://digest-doctor-token@portal.test:${origin.port}`,
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: squid.url
    }
    const sidecar = await startSidecar(env, { secrets: [PROXY_PASSWORD, 'digest-doctor-token'] })
    t.after(async () => { await sidecar.close() })
    const ready = await client.send(`${sidecar.adminUrl}/readyz`)
    assert.equal(ready.status, 200, ready.text())
    assert.equal(await sidecar.stop(), 0)
    const doctor = await runCli({ ...env, NODE_EXTRA_CA_CERTS: ca.certFile }, ['doctor'])
    assert.equal(doctor.code, 0, doctor.stdout)
    assert.match(doctor.stdout, /✓ CONNECT/)
    assert.ok(!doctor.stdout.includes(PROXY_PASSWORD))
  })

  it('a wrong password: 502 proxy_auth_required naming Digest, one challenge answered, no loop', async (t) => {
    const deniedBefore = lines(/TCP_DENIED\/407 .* CONNECT /)
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(squid.port, PROXY_USER, 'not-the-password'),
      PROXY_AUTH_SCHEME: 'digest'
    }, { secrets: ['not-the-password'] })
    t.after(async () => { await sidecar.close() })
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'proxy_auth_required')
    const line = await sidecar.waitForLog((l) => l.error === 'proxy_auth_required' && l.level === 'error')
    assert.match(line.msg, /407 Proxy Authentication Required; it offers Digest/)
    assert.equal(await sidecar.stop(), 0)
    await squid.idle()
    assert.ok(lines(/TCP_DENIED\/407 .* CONNECT /) - deniedBefore <= 2, 'the challenge, and the one wrong answer: nothing more')
  })
})

describeOrSkip('proxy authentication: NTLM, through squid with ntlm_fake_auth', squidSkip, () => {
  let origin: Origin
  let squid: Squid
  const client = new Client()

  before(async () => {
    origin = await startOrigin()
    squid = await startSquid({ auth: 'ntlm' })
  })
  after(async () => { await client.close() })
  after(async () => { await squid?.close() })
  after(async () => { await origin?.close() })

  const lines = (re: RegExp): number => squid.accessLog().filter((l) => re.test(l)).length
  const cases: Array<{ name: string, env: Record<string, string>, user: RegExp }> = [
    { name: 'PROXY_AUTH_SCHEME=auto, credentials in the proxy URL', env: {}, user: / sidecar /i },
    { name: 'PROXY_AUTH_SCHEME=ntlm, PROXY_USER=CORP\\sidecar and PROXY_PASSWORD', env: { PROXY_AUTH_SCHEME: 'ntlm', PROXY_USER: 'CORP\\sidecar', PROXY_PASSWORD: PROXY_PASSWORD }, user: /sidecar/i }
  ]
  for (const c of cases) {
    it(`${c.name}: the handshake runs on the tunnel's connection, which is then reused`, async (t) => {
      const tunnelsBefore = lines(/\/200 .* CONNECT /)
      const secrets = [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD), Buffer.from(`${PROXY_USER}:${PROXY_PASSWORD}`).toString('base64')]
      const sidecar = await startSidecar({
        THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
        BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
        HTTPS_PROXY: c.env.PROXY_USER !== undefined ? `http://127.0.0.1:${squid.port}` : squid.url,
        UPSTREAM_MAX_CONNECTIONS: '8',
        ...c.env
      }, { secrets })
      t.after(async () => { await sidecar.close() })
      await runConcurrently(1000, 8, async (i) => {
        const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st&i=${i}`)
        assert.equal(res.status, 200, res.text())
      })
      const ready = await client.send(`${sidecar.adminUrl}/readyz`)
      assert.equal(ready.status, 200, ready.text())
      assert.equal(await sidecar.stop(), 0)
      await squid.idle()
      const opened = squid.accessLog().slice(0).filter((l) => /\/200 .* CONNECT /.test(l)).slice(tunnelsBefore)
      assert.ok(opened.length >= 1 && opened.length <= 10, `${opened.length} tunnels for 1,000 requests (8 pooled, and one per route for /readyz)`)
      for (const l of opened) assert.match(l, c.user, 'squid logged the NTLM user')
    })
  }
})

describe('proxy authentication: a proxy that refuses every NTLM answer', () => {
  it('gets one handshake per request, then 502 proxy_auth_required naming NTLM: never a loop', async (t) => {
    // ntlm_fake_auth accepts any password, so the refusal comes from a
    // minimal proxy on a real socket that challenges and then refuses.
    const type2 = Buffer.alloc(48)
    type2.write('NTLMSSP\0', 0, 'latin1')
    type2.writeUInt32LE(2, 8)
    type2.writeUInt32LE(0x00000001, 20)
    let connects = 0
    const proxy = createServer((socket) => {
      let buffered = ''
      socket.on('error', () => {})
      socket.on('data', (d: Buffer) => {
        buffered += d.toString('latin1')
        let end: number
        while ((end = buffered.indexOf('\r\n\r\n')) !== -1) {
          const head = buffered.slice(0, end)
          buffered = buffered.slice(end + 4)
          connects++
          const auth = /^proxy-authorization: (\S+) ?(\S*)/im.exec(head)
          const challenge = auth?.[1] === 'NTLM' && Buffer.from(auth[2] ?? '', 'base64').readUInt32LE(8) === 1 ? `NTLM ${type2.toString('base64')}` : 'NTLM'
          socket.write(`HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: ${challenge}\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n`)
        }
      })
    })
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
    t.after(() => { proxy.close() })
    const port = (proxy.address() as AddressInfo).port
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: 'https://portal.test',
      BACKEND_ENDPOINT_OVERRIDE: 'https://backend.test',
      HTTPS_PROXY: `http://127.0.0.1:${port}`,
      PROXY_USER: 'CORP\\alice',
      PROXY_PASSWORD: 'wrong-Pa55'
    }, { secrets: ['wrong-Pa55'] })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'proxy_auth_required')
    const line = await sidecar.waitForLog((l) => l.error === 'proxy_auth_required' && l.level === 'error')
    assert.match(line.msg, /it offers NTLM/)
    assert.ok(connects <= 3, `${connects} CONNECTs: Basic, negotiate, authenticate at most`)
    assert.equal(await sidecar.stop(), 0)
  })
})
