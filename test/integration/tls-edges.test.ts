import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { Agent, request } from 'undici'
import { Client } from '../helpers/client.js'
import { startOrigin } from '../helpers/origin.js'
import { createCa, testCa } from '../helpers/pki.js'
import { runCli } from '../helpers/sidecar-process.js'
import { startSidecar } from '../helpers/sidecar.js'

function writeAll (files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'sidecar-tls-'))
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content)
  return dir
}

describe('optional TLS at the edges', () => {
  it('LISTEN_TLS_CERT/KEY: the listeners serve HTTPS', async (t) => {
    const ca = await testCa()
    const pair = await ca.issue(['127.0.0.1', 'sidecar.test'])
    const dir = writeAll({ 'cert.pem': pair.cert, 'key.pem': pair.key })
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url(),
      BACKEND_ENDPOINT_OVERRIDE: origin.url(),
      LISTEN_TLS_CERT: join(dir, 'cert.pem'),
      LISTEN_TLS_KEY: join(dir, 'key.pem')
    })
    t.after(async () => { await sidecar.close() })
    const agent = new Agent({ connect: { ca: ca.certPem } })
    t.after(async () => { await agent.close() })
    assert.match(sidecar.backendUrl, /^https:/)
    assert.match(sidecar.logs().find((l) => l.listener === 'backend' && typeof l.port === 'number')?.msg ?? '', /^backend https:\/\//)
    const res = await request(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`, { dispatcher: agent })
    assert.equal(res.statusCode, 200)
    await res.body.text()
    await sidecar.stop()
  })

  it('UPSTREAM_TLS_CERT/KEY: presents a client certificate to an upstream that requires mutual TLS', async (t) => {
    const clientCa = await createCa('On-premise 3scale Client CA')
    const clientPair = await clientCa.issue(['apicast-sidecar'])
    const dir = writeAll({ 'client.pem': clientPair.cert, 'client-key.pem': clientPair.key })
    const origin = await startOrigin({ clientCa })
    t.after(async () => { await origin.close() })
    const client = new Client()
    t.after(async () => { await client.close() })
    const without = await startSidecar({ THREESCALE_PORTAL_ENDPOINT: origin.url(), BACKEND_ENDPOINT_OVERRIDE: origin.url() })
    t.after(async () => { await without.close() })
    const refused = await client.send(`${without.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(refused.status, 502, 'without a client certificate the upstream refuses the handshake')
    await without.stop()
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: origin.url(),
      BACKEND_ENDPOINT_OVERRIDE: origin.url(),
      UPSTREAM_TLS_CERT: join(dir, 'client.pem'),
      UPSTREAM_TLS_KEY: join(dir, 'client-key.pem')
    })
    t.after(async () => { await sidecar.close() })
    const res = await client.send(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 200)
    assert.equal(origin.requests.at(-1)?.clientCn, 'apicast-sidecar')
    await sidecar.stop()
  })

  it('a certificate without its key, or a key that does not match, is a start-up error naming the files', async () => {
    const a = await (await testCa()).issue(['a.test'])
    const b = await (await testCa()).issue(['b.test'])
    const dir = writeAll({ 'a.pem': a.cert, 'b-key.pem': b.key })
    const mismatch = await runCli({ THREESCALE_PORTAL_ENDPOINT: 'https://portal.test', UPSTREAM_TLS_CERT: join(dir, 'a.pem'), UPSTREAM_TLS_KEY: join(dir, 'b-key.pem') })
    assert.equal(mismatch.code, 1)
    assert.match(mismatch.stderr, /UPSTREAM_TLS_KEY: the key in .*b-key\.pem does not belong to the certificate in .*a\.pem/)
    const half = await runCli({ THREESCALE_PORTAL_ENDPOINT: 'https://portal.test', LISTEN_TLS_CERT: join(dir, 'a.pem') })
    assert.equal(half.code, 1)
    assert.match(half.stderr, /LISTEN_TLS_KEY is required when LISTEN_TLS_CERT is set/)
  })
})
