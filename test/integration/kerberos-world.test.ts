import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, it } from 'node:test'
import { promisify } from 'node:util'
import { connectThrough, getOverTunnel } from '../helpers/connect-client.js'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { eventually } from '../helpers/eventually.js'
import { kerberosSkip, negotiateToken, startKdc, type Kdc } from '../helpers/kerberos.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { testCa, type CertificateAuthority } from '../helpers/pki.js'
import { startSquid, type Squid } from '../helpers/proxies.js'

const run = promisify(execFile)
/**
 * squid keeps a connection open after a 407 (for the next step of the
 * handshake); connectThrough reads a refusal to the close, so ask squid to
 * close rather than wait its 2 minutes of idle timeout.
 */
const CLOSE = { Connection: 'close' }

// The test world itself, with the reference clients (curl, the kerberos
// package) and no sidecar: when a Negotiate test of the sidecar fails, this
// file says whether the world or the sidecar is at fault.
describeOrSkip('a Kerberos realm and squid with Negotiate, on 127.0.0.1', kerberosSkip, () => {
  let ca: CertificateAuthority
  let origin: Origin
  let kdc: Kdc
  let squid: Squid
  let caches: string

  before(async () => {
    ca = await testCa()
    origin = await startOrigin()
    kdc = await startKdc()
    squid = await startSquid({ auth: 'negotiate', kerberos: kdc.squid })
    caches = mkdtempSync(join(tmpdir(), 'sidecar-krb-cc-'))
  })
  after(() => { rmSync(caches, { recursive: true, force: true }) })
  after(async () => { await squid?.close() })
  after(async () => { await kdc?.close() })
  after(async () => { await origin?.close() })

  /** curl --proxy-negotiate through squid (named localhost, the service's host) with the credential cache `ccache`: the HTTP status. */
  async function curlNegotiate (ccache: string, path = '/admin/api/services.json?access_token=t'): Promise<string> {
    const { stdout } = await run('curl', ['-sS', '--noproxy', '', '--proxy-negotiate', '-U', ':', '-x', squid.url, '--cacert', ca.certFile,
      '-o', '/dev/null', '-w', '%{http_code}', `${origin.url('portal.test')}${path}`],
    { env: { PATH: process.env.PATH ?? '', KRB5_CONFIG: kdc.krb5Conf, KRB5CCNAME: ccache }, timeout: 20_000 })
    return stdout
  }

  /** squid's lines for tunnels to the origin that `principal` opened. */
  function tunnelLines (principal: string): string[] {
    const escaped = principal.replace(/[.]/g, '\\.')
    return squid.accessLog().filter((l) => new RegExp(`TCP_TUNNEL/200 .*CONNECT portal\\.test:${origin.port} ${escaped} `).test(l))
  }

  it('curl --proxy-negotiate with a kinit ticket gets 200, and squid logs the client principal on the tunnel', async () => {
    assert.equal(squid.url, `http://localhost:${squid.port}`)
    const ccache = await kdc.kinit(join(caches, 'curl'))
    assert.equal(await curlNegotiate(ccache, '/admin/api/services.json?access_token=curl'), '200')
    assert.equal(origin.requests.at(-1)?.url, '/admin/api/services.json?access_token=curl')
    await eventually(() => tunnelLines(kdc.clientPrincipal).length, (n) => n === 1, 5000, 'squid\'s tunnel line naming the principal')
  })

  it('without credentials, squid answers CONNECT with 407 and Proxy-Authenticate: Negotiate', async () => {
    const reply = await connectThrough(squid.port, `portal.test:${origin.port}`, { headers: CLOSE })
    reply.socket.destroy()
    assert.equal(reply.status, 407)
    assert.equal(reply.headers['proxy-authenticate'], 'Negotiate')
  })

  it('the kerberos package makes a token from the client keytab alone; a raw CONNECT with it gets 200', async () => {
    const before = tunnelLines(kdc.clientPrincipal).length
    const token = await negotiateToken(kdc)
    assert.match(token, /^[A-Za-z0-9+/]+=*$/)
    // The variables were set for the call only.
    assert.notEqual(process.env.KRB5_CLIENT_KTNAME, kdc.clientKeytab)
    const reply = await connectThrough(squid.port, `portal.test:${origin.port}`, { headers: { 'Proxy-Authorization': `Negotiate ${token}` } })
    assert.equal(reply.status, 200)
    const res = await getOverTunnel(reply.socket, 'portal.test', ca.certPem, '/admin/api/services.json?access_token=raw')
    assert.equal(res.status, 200)
    await eventually(() => tunnelLines(kdc.clientPrincipal).length, (n) => n === before + 1, 5000, 'squid\'s tunnel line for the raw CONNECT')
  })

  it('a token for another service principal is refused with 407', async () => {
    await kdc.addPrincipal('HTTP/elsewhere')
    const token = await negotiateToken(kdc, 'HTTP@elsewhere')
    const reply = await connectThrough(squid.port, `portal.test:${origin.port}`, { headers: { ...CLOSE, 'Proxy-Authorization': `Negotiate ${token}` } })
    reply.socket.destroy()
    assert.equal(reply.status, 407)
  })

  it('a second client principal with a password of its own is logged by its name', async () => {
    const other = await kdc.addPrincipal('operator', 'other-Pw-77')
    const token = await negotiateToken(kdc, undefined, other)
    const reply = await connectThrough(squid.port, `portal.test:${origin.port}`, { headers: { 'Proxy-Authorization': `Negotiate ${token}` } })
    assert.equal(reply.status, 200)
    reply.socket.destroy()
    await eventually(() => squid.accessLog().filter((l) => / CONNECT portal\.test:\d+ operator@SIDECAR\.TEST /.test(l)).length, (n) => n === 1, 5000, 'squid\'s line naming operator@SIDECAR.TEST')
  })

  it('with the KDC stopped no new ticket can be had, a cached one still passes squid; start() brings the KDC back', async () => {
    const cached = await kdc.kinit(join(caches, 'before-outage'))
    // The first use puts the service ticket for HTTP/localhost in the cache.
    assert.equal(await curlNegotiate(cached), '200')
    await kdc.stop()
    await assert.rejects(kdc.kinit(join(caches, 'during-outage')), /Cannot contact any KDC/)
    await assert.rejects(negotiateToken(kdc), /Cannot contact any KDC/)
    // squid checks tickets with its keytab alone: no KDC on that path.
    assert.equal(await curlNegotiate(cached), '200')
    await kdc.start()
    const token = await negotiateToken(kdc)
    const reply = await connectThrough(squid.port, `portal.test:${origin.port}`, { headers: { 'Proxy-Authorization': `Negotiate ${token}` } })
    reply.socket.destroy()
    assert.equal(reply.status, 200)
  })
})

describeOrSkip('squid offering Negotiate and NTLM', kerberosSkip, () => {
  let kdc: Kdc
  let squid: Squid

  before(async () => {
    kdc = await startKdc()
    squid = await startSquid({ auth: 'negotiate-ntlm', kerberos: kdc.squid })
  })
  after(async () => { await squid?.close() })
  after(async () => { await kdc?.close() })

  it('offers Negotiate first, then NTLM, and takes a Kerberos token', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const refused = await connectThrough(squid.port, `portal.test:${origin.port}`, { headers: CLOSE })
    refused.socket.destroy()
    assert.equal(refused.status, 407)
    const offered = refused.headerLines.filter((l) => /^proxy-authenticate:/i.test(l)).map((l) => l.slice(l.indexOf(':') + 1).trim())
    assert.deepEqual(offered, ['Negotiate', 'NTLM'])
    const token = await negotiateToken(kdc)
    const reply = await connectThrough(squid.port, `portal.test:${origin.port}`, { headers: { 'Proxy-Authorization': `Negotiate ${token}` } })
    reply.socket.destroy()
    assert.equal(reply.status, 200)
  })
})
