import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { copyFileSync, mkdtempSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, it } from 'node:test'
import { Client, runConcurrently } from '../helpers/client.js'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { eventually } from '../helpers/eventually.js'
import { kerberosSkip, negotiateToken, startKdc, type Kdc } from '../helpers/kerberos.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { testCa } from '../helpers/pki.js'
import { startSquid, type Squid } from '../helpers/proxies.js'
import { connectThrough } from '../helpers/connect-client.js'
import { startForwardProxy, startSidecar, type RunningSidecar } from '../helpers/sidecar.js'
import { runCli } from '../helpers/sidecar-process.js'
import { pacScript, startPacServer } from '../helpers/pac-server.js'

/**
 * GSSAPI reads KRB5_CONFIG, KRB5_CLIENT_KTNAME and KRB5CCNAME from the
 * process's environment when it makes a token, not from the sidecar's
 * config: an in-process sidecar therefore gets them in process.env too
 * (this file's own process), for the span of a test.
 */
async function withKerberosEnv<T> (vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]))
  const put = (values: Record<string, string | undefined>): void => {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) Reflect.deleteProperty(process.env, k)
      else process.env[k] = v
    }
  }
  put(vars)
  try {
    return await fn()
  } finally {
    put(saved)
  }
}

const run = promisify(execFile)

/** SPNEGO tokens are base64 of DER that starts 0x60 0x82: "YII". */
const TOKEN_LIKE = /YII[A-Za-z0-9+/]{40,}|Negotiate [A-Za-z0-9+/]{20,}/

describeOrSkip('Negotiate (Kerberos) to squid with negotiate_kerberos_auth and an MIT KDC', kerberosSkip, () => {
  let origin: Origin
  let kdc: Kdc
  let squid: Squid
  let env: Record<string, string>
  let cache = 0
  /** A ticket cache of its own per sidecar, so no test leans on another's tickets. */
  const freshCache = (): string => `MEMORY:sidecar-negotiate-${process.pid}-${++cache}`

  before(async () => {
    origin = await startOrigin()
    kdc = await startKdc()
    squid = await startSquid({ auth: 'negotiate', kerberos: kdc.squid })
    env = {
      THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      // The proxy as its service principal names it: HTTP@localhost.
      HTTPS_PROXY: squid.url,
      KRB5_CONFIG: kdc.krb5Conf,
      KRB5_CLIENT_KTNAME: kdc.clientKeytab
    }
  })
  after(async () => { await squid?.close() })
  after(async () => { await kdc?.close() })
  after(async () => { await origin?.close() })

  /** Start a sidecar with `extra`, GSSAPI's variables in process.env for as long as `fn` runs. */
  async function withSidecar (extra: Record<string, string | undefined>, fn: (s: RunningSidecar, client: Client) => Promise<void>): Promise<RunningSidecar> {
    const vars = { KRB5_CONFIG: kdc.krb5Conf, KRB5_CLIENT_KTNAME: kdc.clientKeytab, KRB5CCNAME: freshCache(), ...extra }
    const sidecarEnv = Object.fromEntries(Object.entries({ ...env, ...vars }).filter((e): e is [string, string] => e[1] !== undefined))
    return await withKerberosEnv(vars, async () => {
      const sidecar = await startSidecar(sidecarEnv)
      const client = new Client()
      try {
        await fn(sidecar, client)
      } finally {
        await client.close()
        await sidecar.close()
      }
      return sidecar
    })
  }

  it('a client keytab, no kinit: 1,000 requests over at most 8 tunnels, one handshake each, the principal in squid\'s log', async () => {
    const before = squid.accessLog().length
    const sidecar = await withSidecar({ UPSTREAM_MAX_CONNECTIONS: '8' }, async (s, client) => {
      let ok = 0
      await runConcurrently(1000, 16, async (i) => {
        const url = i % 2 === 0 ? `${s.backendUrl}/transactions/authrep.xml?service_token=t&service_id=1` : `${s.portalUrl}/admin/api/services.json?access_token=t`
        const res = await client.send(url)
        if (res.status === 200) ok++
      })
      assert.equal(ok, 1000)
      const start = await s.waitForLog((l) => l.listener === 'portal' && typeof l.proxyAuth === 'string')
      assert.match(String(start.proxyAuth), /Negotiate/)
    })
    // squid writes a tunnel's line when it closes: after the sidecar stopped.
    const tunnels = (): string[] => squid.accessLog().slice(before).filter((l) => /TCP_TUNNEL\/200 .*CONNECT (portal|backend)\.test:\d+ /.test(l))
    await eventually(() => tunnels().length, (n) => n >= 2, 5000, 'squid\'s tunnel lines')
    assert.ok(tunnels().length <= 16, `${tunnels().length} tunnels for 1,000 requests (8 per route at most)`)
    assert.ok(tunnels().every((l) => l.includes(` ${kdc.clientPrincipal} `)), 'every tunnel authenticated as the client principal')
    assert.doesNotMatch(sidecar.output(), TOKEN_LIKE)
  })

  it('a proxy a PAC file names gets a ticket for the host the PAC named (HTTP@localhost)', async (t) => {
    const pac = await startPacServer(pacScript(`  return "PROXY localhost:${squid.port}";`))
    t.after(async () => { await pac.close() })
    const before = squid.accessLog().length
    await withSidecar({ HTTPS_PROXY: undefined, PROXY_PAC_URL: pac.url }, async (s, client) => {
      const decision = await s.waitForLog((l) => l.event === 'pac_decision' && l.listener === 'portal')
      assert.match(decision.msg, new RegExp(`via proxy http://localhost:${squid.port} \\(CONNECT tunnel, proxy auth auto: Negotiate, Basic, Digest or NTLM as the proxy asks \\(Kerberos for HTTP@localhost\\)\\)`))
      assert.equal((await client.send(`${s.portalUrl}/admin/api/services.json?access_token=t`)).status, 200)
    })
    await eventually(() => squid.accessLog().slice(before).filter((l) => l.includes(` ${kdc.clientPrincipal} `)).length, (n) => n >= 1, 5000, 'the tunnel under the client principal')
  })

  it('a token over 8 KB (as an Active Directory user in many groups has) goes through: a 2,000-character principal makes one', async () => {
    // MIT's KDC adds no group PAC; the client name is in the ticket, so a long one makes the token as large.
    const big = await kdc.addPrincipal(`member-of-many-groups-${'g'.repeat(1980)}`, 'big-principal-pw')
    const before = squid.accessLog().length
    await withSidecar({ KRB5_CLIENT_KTNAME: big.keytab }, async (s, client) => {
      const res = await client.send(`${s.portalUrl}/admin/api/services.json?access_token=t`)
      assert.equal(res.status, 200)
    })
    assert.ok((await negotiateToken(kdc, 'HTTP@localhost', big)).length > 8192, 'the token is over 8 KB')
    await eventually(() => squid.accessLog().slice(before).filter((l) => l.includes(big.name)).length, (n) => n >= 1, 5000, 'squid\'s line under the long principal')
  })

  it('a keytab replaced in place (a rotated Secret) is used for the next tunnel, with no restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-keytab-'))
    const keytab = join(dir, 'client.keytab')
    // Not a keytab yet: as a Secret mounted before its key was written.
    writeFileSync(keytab, 'not a keytab\n')
    await withSidecar({ KRB5_CLIENT_KTNAME: keytab }, async (s, client) => {
      const broken = await client.send(`${s.portalUrl}/admin/api/services.json?access_token=t`)
      assert.equal(broken.status, 502)
      assert.equal(broken.headers['x-sidecar-error'], 'proxy_kerberos')
      // kubelet's swap: written aside, renamed over.
      copyFileSync(kdc.clientKeytab, `${keytab}.new`)
      renameSync(`${keytab}.new`, keytab)
      await eventually(async () => (await client.send(`${s.portalUrl}/admin/api/services.json?access_token=t`)).status, (status) => status === 200, 10_000, 'a tunnel with the new keytab')
    })
  })

  it('a ticket cache from kinit (KRB5CCNAME) works as well as a keytab', async () => {
    const ccache = await kdc.kinit(`${kdc.dir}/cc-kinit`)
    await withSidecar({ KRB5_CLIENT_KTNAME: undefined, KRB5CCNAME: ccache }, async (s, client) => {
      const res = await client.send(`${s.portalUrl}/admin/api/services.json?access_token=t`)
      assert.equal(res.status, 200)
    })
  })

  it('no Kerberos credentials: 502 proxy_kerberos naming KRB5_CLIENT_KTNAME and kinit', async () => {
    const sidecar = await withSidecar({ KRB5_CLIENT_KTNAME: undefined, PROXY_AUTH_SCHEME: 'negotiate' }, async (s, client) => {
      const res = await client.send(`${s.portalUrl}/admin/api/services.json?access_token=t`)
      assert.equal(res.status, 502)
      assert.equal(res.headers['x-sidecar-error'], 'proxy_kerberos')
      const line = await s.waitForLog((l) => l.error === 'proxy_kerberos' && l.level === 'error')
      assert.match(String(line.msg), /Kerberos \(Negotiate\) could not authenticate to the proxy localhost:\d+: .*\(service principal HTTP@localhost\)/)
      assert.match(String(line.msg), /no Kerberos credentials: give a client keytab with KRB5_CLIENT_KTNAME.*or run kinit and point KRB5CCNAME/)
    })
    assert.doesNotMatch(sidecar.output(), TOKEN_LIKE)
  })

  it('an expired ticket cache: 502 saying it expired, and to run kinit again or use a keytab', async () => {
    const ccache = `FILE:${kdc.dir}/cc-short`
    await run('kinit', ['-l', '2s', '-kt', kdc.clientKeytab, '-c', ccache, kdc.clientPrincipal], { env: { ...process.env, KRB5_CONFIG: kdc.krb5Conf } })
    await new Promise((resolve) => setTimeout(resolve, 3000))
    await withSidecar({ KRB5_CLIENT_KTNAME: undefined, KRB5CCNAME: ccache }, async (s, client) => {
      const res = await client.send(`${s.portalUrl}/admin/api/services.json?access_token=t`)
      assert.equal(res.status, 502)
      assert.equal(res.headers['x-sidecar-error'], 'proxy_kerberos')
      const line = await s.waitForLog((l) => l.error === 'proxy_kerberos' && l.level === 'error')
      assert.match(String(line.msg), /Ticket expired/)
      assert.match(String(line.msg), /the ticket in KRB5CCNAME has expired: run kinit again, or give a client keytab \(KRB5_CLIENT_KTNAME\)/)
    })
  })

  it('a wrong service principal (PROXY_KRB5_SPN): 502 naming the SPN used and how to set it', async () => {
    await withSidecar({ PROXY_KRB5_SPN: 'HTTP@alias.sidecar.test' }, async (s, client) => {
      const res = await client.send(`${s.portalUrl}/admin/api/services.json?access_token=t`)
      assert.equal(res.status, 502)
      assert.equal(res.headers['x-sidecar-error'], 'proxy_kerberos')
      const line = await s.waitForLog((l) => l.error === 'proxy_kerberos' && l.level === 'error')
      assert.match(String(line.msg), /service principal HTTP@alias\.sidecar\.test/)
      assert.match(String(line.msg), /the KDC knows no service principal HTTP@alias\.sidecar\.test.*PROXY_KRB5_SPN/)
    })
  })

  it('a realm the KDC cannot reach, and a principal the keytab does not hold: 502, each with its own fix', async () => {
    await withSidecar({ PROXY_KRB5_SPN: 'HTTP@proxy.other.example' }, async (s, client) => {
      assert.equal((await client.send(`${s.portalUrl}/admin/api/services.json?access_token=t`)).status, 502)
      const line = await s.waitForLog((l) => l.error === 'proxy_kerberos' && l.level === 'error')
      assert.match(String(line.msg), /the proxy's realm is not one this realm can reach \(krbtgt\/OTHER\.EXAMPLE@SIDECAR\.TEST\): check \[domain_realm\] in KRB5_CONFIG/)
    })
    await withSidecar({ PROXY_KRB5_PRINCIPAL: 'sidecar@OTHER.EXAMPLE' }, async (s, client) => {
      assert.equal((await client.send(`${s.portalUrl}/admin/api/services.json?access_token=t`)).status, 502)
      const line = await s.waitForLog((l) => l.error === 'proxy_kerberos' && l.level === 'error')
      assert.match(String(line.msg), /sidecar@OTHER\.EXAMPLE/)
      assert.match(String(line.msg), /holds no credentials for that client principal: check PROXY_KRB5_PRINCIPAL, its spelling and its realm/)
    })
  })

  it('the KDC stopped: 502 naming the KDC and KRB5_CONFIG; back, it works again', async () => {
    await kdc.stop()
    try {
      await withSidecar({}, async (s, client) => {
        const res = await client.send(`${s.portalUrl}/admin/api/services.json?access_token=t`)
        assert.equal(res.status, 502)
        assert.equal(res.headers['x-sidecar-error'], 'proxy_kerberos')
        const line = await s.waitForLog((l) => l.error === 'proxy_kerberos' && l.level === 'error')
        assert.match(String(line.msg), /the KDC cannot be reached: check the realm's kdc in KRB5_CONFIG/)
      })
    } finally {
      await kdc.start()
    }
    await withSidecar({}, async (s, client) => {
      assert.equal((await client.send(`${s.portalUrl}/admin/api/services.json?access_token=t`)).status, 200)
    })
  })

  it('/readyz and doctor go through Kerberos too', async () => {
    const ca = await testCa()
    await withSidecar({}, async (s, client) => {
      const res = await client.send(`${s.adminUrl}/readyz`)
      assert.equal(res.status, 200, res.text())
    })
    const doctor = await runCli({ ...env, KRB5CCNAME: freshCache(), NODE_EXTRA_CA_CERTS: ca.certFile }, ['doctor'])
    assert.equal(doctor.code, 0, doctor.stdout)
    assert.match(doctor.stdout, new RegExp(`✓ Kerberos +${kdc.clientPrincipal.replace('.', '\\.')} has a ticket for HTTP@localhost, from the keytab ${kdc.clientKeytab.replace(/[.]/g, '\\.')}`))
    assert.match(doctor.stdout, /✓ Kerberos .*\(KRB5_CLIENT_KTNAME; GSSAPI renews the ticket itself\); the ticket-granting ticket expires \d\d\/\d\d\/\d\d \d\d:\d\d:\d\d\n/)
    assert.match(doctor.stdout, /✓ CONNECT/)
    assert.doesNotMatch(doctor.stdout, TOKEN_LIKE)

    const wrong = await runCli({ ...env, KRB5CCNAME: freshCache(), PROXY_KRB5_SPN: 'HTTP@alias.sidecar.test', NODE_EXTRA_CA_CERTS: ca.certFile }, ['doctor'])
    assert.equal(wrong.code, 1, wrong.stdout)
    assert.match(wrong.stdout, /✗ Kerberos +Kerberos \(Negotiate\) could not authenticate .*\(service principal HTTP@alias\.sidecar\.test\)\n {6}fix: the KDC knows no service principal HTTP@alias\.sidecar\.test/)
  })

  it('the forward proxy\'s CONNECT authenticates with Kerberos too', async () => {
    const before = squid.accessLog().length
    const vars = { KRB5_CONFIG: kdc.krb5Conf, KRB5_CLIENT_KTNAME: kdc.clientKeytab, KRB5CCNAME: freshCache() }
    await withKerberosEnv(vars, async () => {
      const { sidecar, port } = await startForwardProxy({ ...env, ...vars })
      try {
        const reply = await connectThrough(port, `portal.test:${origin.port}`)
        reply.socket.destroy()
        assert.equal(reply.status, 200)
      } finally {
        await sidecar.close()
      }
    })
    await eventually(() => squid.accessLog().slice(before).filter((l) => new RegExp(`TCP_TUNNEL/200 .*CONNECT portal\\.test:${origin.port} ${kdc.clientPrincipal.replace('.', '\\.')} `).test(l)).length,
      (n) => n === 1, 5000, 'the forward tunnel under the client principal')
  })
})

describeOrSkip('a proxy that offers Negotiate and NTLM together', kerberosSkip, () => {
  let origin: Origin
  let kdc: Kdc
  let squid: Squid
  before(async () => {
    origin = await startOrigin()
    kdc = await startKdc()
    squid = await startSquid({ auth: 'negotiate-ntlm', kerberos: kdc.squid })
  })
  after(async () => { await squid?.close() })
  after(async () => { await kdc?.close() })
  after(async () => { await origin?.close() })

  it('auto answers Negotiate when Kerberos credentials are there, and NTLM when they are not', async () => {
    const vars = { KRB5_CONFIG: kdc.krb5Conf, KRB5_CLIENT_KTNAME: kdc.clientKeytab, KRB5CCNAME: `MEMORY:sidecar-both-${process.pid}` }
    const base = { THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'), HTTPS_PROXY: squid.url }
    const before = squid.accessLog().length
    await withKerberosEnv(vars, async () => {
      const sidecar = await startSidecar({ ...base, ...vars })
      const client = new Client()
      try {
        assert.equal((await client.send(`${sidecar.portalUrl}/admin/api/services.json?access_token=t`)).status, 200)
      } finally {
        await client.close()
        await sidecar.close()
      }
    })
    await eventually(() => squid.accessLog().slice(before).filter((l) => l.includes(` ${kdc.clientPrincipal} `)).length, (n) => n >= 1, 5000, 'a tunnel as the Kerberos principal')

    // No Kerberos variables: the same proxy gets NTLM (ntlm_fake_auth takes any password).
    const ntlm = await startSidecar(base)
    const client = new Client()
    try {
      assert.equal((await client.send(`${ntlm.portalUrl}/admin/api/services.json?access_token=t`)).status, 200)
    } finally {
      await client.close()
      await ntlm.close()
    }
  })
})
