import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { it } from 'node:test'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Client } from '../helpers/client.js'
import { startOrigin } from '../helpers/origin.js'
import { testCa } from '../helpers/pki.js'
import { eventually } from '../helpers/eventually.js'
import { kerberosSkip, startKdc } from '../helpers/kerberos.js'
import { freePort, PROXY_PASSWORD, PROXY_USER, startProxyChain, startSquid, waitForPort } from '../helpers/proxies.js'
import { pacScript, startPacServer } from '../helpers/pac-server.js'

const run = promisify(execFile)
/** Set by .ci/run after it built the image with scripts/container/build-image.sh. */
const IMAGE = process.env.SIDECAR_IMAGE
const skip = IMAGE === undefined ? 'SIDECAR_IMAGE is not set (.ci/run builds the image and sets it)' : false
/** The base .ci/run built SIDECAR_IMAGE on: its variant whose default user is not root, as UBI's (1001). */
const BASE = process.env.SIDECAR_BASE_IMAGE
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const PACKAGE = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string, license: string, dependencies: Record<string, string> }

async function podman (...args: string[]): Promise<string> {
  const { stdout } = await run('podman', args, { maxBuffer: 16 * 1024 * 1024 })
  return stdout.trim()
}

/** The parts of `podman image inspect` read here. */
interface ImageInspect {
  ManifestType: string
  Config: { User?: string, Labels?: Record<string, string> }
  Healthcheck?: { Test?: string[] }
  RootFS: { Layers: string[] }
}

async function inspect (image: string): Promise<ImageInspect> {
  const [info] = JSON.parse(await podman('image', 'inspect', image)) as ImageInspect[]
  assert.ok(info, `no image ${image}`)
  return info
}

describeOrSkip('the image as built', skip, () => {
  it('carries the certification labels, with no Red Hat in name, vendor or maintainer, and an honest source', async () => {
    const labels = (await inspect(IMAGE as string)).Config.Labels ?? {}
    for (const name of ['name', 'vendor', 'version', 'release', 'summary', 'description', 'maintainer', 'io.k8s.display-name', 'io.k8s.description']) {
      assert.notEqual(labels[name] ?? '', '', `label ${name} is missing or empty`)
    }
    assert.equal(labels.name, 'apicast-sidecar-proxy')
    assert.equal(labels.version, PACKAGE.version)
    assert.equal(labels['org.opencontainers.image.licenses'], PACKAGE.license)
    for (const name of ['name', 'vendor', 'maintainer']) assert.doesNotMatch(labels[name] ?? '', /red[^a-z0-9]*hat/i, name)
    // build-image.sh passes SOURCE_URL from the environment: the label says that, or nothing.
    assert.equal(labels['org.opencontainers.image.source'], process.env.SOURCE_URL ?? '')
  })

  it('keeps its HEALTHCHECK: built in docker format, since the OCI format has no field for it', async () => {
    const info = await inspect(IMAGE as string)
    assert.equal(info.ManifestType, 'application/vnd.docker.distribution.manifest.v2+json')
    assert.deepEqual(info.Healthcheck?.Test?.slice(0, 2), ['CMD', 'node'])
    assert.match(info.Healthcheck?.Test?.join(' ') ?? '', /\/healthz/)
  })

  it('ships this repository\'s LICENSE in /licenses, and those of every package bundled into it', async () => {
    const run = (...args: string[]): Promise<string> => podman('run', '--rm', '--network', 'none', '--entrypoint', args[0] ?? '', IMAGE as string, ...args.slice(1))
    assert.equal(await run('ls', '/licenses'), 'LICENSE\nTHIRD-PARTY-LICENSES.txt')
    assert.equal(await run('cat', '/licenses/LICENSE'), readFileSync(join(ROOT, 'LICENSE'), 'utf8').trim())
    const thirdParty = await run('cat', '/licenses/THIRD-PARTY-LICENSES.txt')
    for (const name of Object.keys(PACKAGE.dependencies)) assert.match(thirdParty, new RegExp(`^${name.replace('/', '\\/')}@\\d`, 'm'), name)
  })

  it('runs doctor from its own file beside the bundle (doctor.cjs): the entrypoint takes the command', async () => {
    // doctor exits 1 on a problem: execFile rejects, with what it printed.
    const failed = await podman('run', '--rm', '--network', 'none', IMAGE as string, 'doctor').then(() => undefined, (err: { stdout?: string, stderr?: string }) => err)
    assert.ok(failed !== undefined, 'doctor reports the missing settings as a problem')
    assert.match(failed.stdout ?? '', /✗ config +the configuration is invalid\n +THREESCALE_PORTAL_ENDPOINT is required/, failed.stderr)
  })

  it('was built on a base whose default user is not root, as UBI\'s Node.js images (1001)', { skip: BASE === undefined ? 'SIDECAR_BASE_IMAGE is not set' : false }, async () => {
    const [base, image] = [await inspect(BASE as string), await inspect(IMAGE as string)]
    assert.match(base.Config.User ?? '', /^(?!0(:|$)|root(:|$)).+/, `the base's default user is ${JSON.stringify(base.Config.User ?? '')}`)
    // The image's layers start with the base's: it was built FROM that base.
    assert.deepEqual(image.RootFS.Layers.slice(0, base.RootFS.Layers.length), base.RootFS.Layers)
  })
})

describeOrSkip('the container image', skip, () => {
  const users: Array<[string, string[]]> = [
    ['as the image\'s own non-root user', []],
    ['as an arbitrary UID in group 0, as OpenShift runs it', ['--user', '1000770000:0']]
  ]
  for (const [name, userArgs] of users) {
    it(`forwards through an authenticating proxy ${name}, read-only, without capabilities, and stops cleanly on SIGTERM`, { timeout: 60_000 }, async () => {
      const ca = await testCa()
      const origin = await startOrigin()
      const proxy = await startProxyChain()
      const [portalPort, backendPort, adminPort] = [await freePort(), await freePort(), await freePort()]
      const container = `sidecar-test-${process.pid}-${Date.now()}`
      const state = `${container}-state`
      const client = new Client()
      try {
        await podman('run', '-d', '--name', container, '--network', 'host', '--read-only', '--tmpfs', '/tmp',
          '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges', ...userArgs,
          '-v', `${ca.certFile}:/etc/pki/apicast-sidecar/ca.pem:ro`,
          // A named volume for the last good configuration, as the README shows.
          '-v', `${state}:/var/lib/apicast-sidecar-proxy`,
          '-e', 'STALE_CONFIG_DIR=/var/lib/apicast-sidecar-proxy',
          '-e', 'CA_BUNDLE=/etc/pki/apicast-sidecar/ca.pem',
          '-e', 'LISTEN_ADDRESS=127.0.0.1',
          '-e', `PORTAL_LISTEN_PORT=${portalPort}`,
          '-e', `BACKEND_LISTEN_PORT=${backendPort}`,
          '-e', `ADMIN_LISTEN_PORT=${adminPort}`,
          '-e', `THREESCALE_PORTAL_ENDPOINT=https://container-token@portal.test:${origin.port}`,
          '-e', `BACKEND_ENDPOINT_OVERRIDE=${origin.url('backend.test')}`,
          '-e', `HTTPS_PROXY=${proxy.url}`,
          IMAGE as string)
        assert.ok(await waitForPort(backendPort), 'the container never listened')

        const uid = await podman('exec', container, 'id', '-u')
        assert.notEqual(uid, '0')
        if (userArgs.length === 0) assert.equal(uid, '10001')

        // The image's HEALTHCHECK asks the admin listener's /healthz.
        await podman('healthcheck', 'run', container)

        const res = await client.send(`http://127.0.0.1:${backendPort}/transactions/authrep.xml?service_token=st`)
        assert.equal(res.status, 200)
        assert.equal(proxy.tunnels(), 1)

        // The configuration read is kept in the volume, whatever the UID.
        const config = await client.send(`http://127.0.0.1:${portalPort}/admin/api/services.json`)
        assert.equal(config.status, 200)
        await new Promise((resolve) => setTimeout(resolve, 300))
        assert.match(await podman('exec', container, 'ls', '/var/lib/apicast-sidecar-proxy'), /^[0-9a-f]{64}\.json$/)

        await podman('stop', '-t', '20', container)
        assert.equal(await podman('inspect', '--format', '{{.State.ExitCode}}', container), '0')
        const logs = await podman('logs', container)
        assert.match(logs, /"msg":"stopped"/)
        assert.ok(!logs.includes(PROXY_PASSWORD) && !logs.includes(encodeURIComponent(PROXY_PASSWORD)) && !logs.includes('container-token'))
      } finally {
        await podman('rm', '-f', container).catch(() => '')
        await podman('volume', 'rm', '-f', state).catch(() => '')
        await client.close()
        await proxy.close()
        await origin.close()
      }
    })
  }
})

describeOrSkip('the image and Kerberos', IMAGE === undefined ? skip : kerberosSkip, () => {
  it('carries the Negotiate addon and GSSAPI: a tunnel through squid\'s Negotiate with a keytab mounted from outside', { timeout: 60_000 }, async (t) => {
    const ca = await testCa()
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const kdc = await startKdc()
    t.after(async () => { await kdc.close() })
    const squid = await startSquid({ auth: 'negotiate', kerberos: kdc.squid })
    t.after(async () => { await squid.close() })
    const [portalPort, backendPort, adminPort] = [await freePort(), await freePort(), await freePort()]
    const container = `sidecar-krb-${process.pid}-${Date.now()}`
    t.after(async () => { await podman('rm', '-f', container).catch(() => '') })
    // A keytab and krb5.conf as a Secret and a ConfigMap would mount them.
    await podman('run', '-d', '--name', container, '--network', 'host', '--read-only', '--tmpfs', '/tmp', '--cap-drop', 'ALL',
      '-v', `${kdc.clientKeytab}:/etc/krb5/client.keytab:ro`,
      '-v', `${kdc.krb5Conf}:/etc/krb5/krb5.conf:ro`,
      '-e', 'KRB5_CLIENT_KTNAME=/etc/krb5/client.keytab',
      '-e', 'KRB5_CONFIG=/etc/krb5/krb5.conf',
      '-e', 'KRB5CCNAME=MEMORY:sidecar',
      '-e', 'LISTEN_ADDRESS=127.0.0.1',
      '-e', `PORTAL_LISTEN_PORT=${portalPort}`,
      '-e', `BACKEND_LISTEN_PORT=${backendPort}`,
      '-e', `ADMIN_LISTEN_PORT=${adminPort}`,
      '-e', `THREESCALE_PORTAL_ENDPOINT=${origin.url('portal.test')}`,
      '-e', `BACKEND_ENDPOINT_OVERRIDE=${origin.url('backend.test')}`,
      '-e', `HTTPS_PROXY=${squid.url}`,
      '-v', `${ca.certFile}:/etc/pki/apicast-sidecar/ca.pem:ro`,
      '-e', 'CA_BUNDLE=/etc/pki/apicast-sidecar/ca.pem',
      IMAGE as string)
    assert.ok(await waitForPort(portalPort), 'the container never listened')
    const client = new Client()
    t.after(async () => { await client.close() })
    const res = await client.send(`http://127.0.0.1:${portalPort}/admin/api/services.json?access_token=t`)
    assert.equal(res.status, 200, `${res.status} ${res.text()}\n${await podman('logs', container)}`)
    await podman('stop', '-t', '20', container)
    await eventually(() => squid.accessLog().filter((l) => l.includes(` ${kdc.clientPrincipal} `)).length, (n) => n >= 1, 5000, 'the image\'s tunnel under the client principal')
  })
})

describeOrSkip('the image and a PAC file', skip, () => {
  it('loads the PAC engine beside the bundle: a PAC served over http picks the proxy, and a request goes through it', { timeout: 60_000 }, async (t) => {
    const ca = await testCa()
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const proxy = await startProxyChain()
    t.after(async () => { await proxy.close() })
    const pac = await startPacServer(pacScript(`  if (shExpMatch(host, "*.test")) return "SOCKS5 127.0.0.1:1; PROXY 127.0.0.1:${proxy.port}";\n  return "DIRECT";`))
    t.after(async () => { await pac.close() })
    const [portalPort, backendPort, adminPort] = [await freePort(), await freePort(), await freePort()]
    const container = `sidecar-pac-${process.pid}-${Date.now()}`
    t.after(async () => { await podman('rm', '-f', container).catch(() => '') })
    await podman('run', '-d', '--name', container, '--network', 'host', '--read-only', '--tmpfs', '/tmp', '--cap-drop', 'ALL',
      '-e', 'LISTEN_ADDRESS=127.0.0.1',
      '-e', `PORTAL_LISTEN_PORT=${portalPort}`,
      '-e', `BACKEND_LISTEN_PORT=${backendPort}`,
      '-e', `ADMIN_LISTEN_PORT=${adminPort}`,
      '-e', `THREESCALE_PORTAL_ENDPOINT=${origin.url('portal.test')}`,
      '-e', `BACKEND_ENDPOINT_OVERRIDE=${origin.url('backend.test')}`,
      '-e', `PROXY_PAC_URL=${pac.url}`,
      '-e', `PROXY_USER=${PROXY_USER}`,
      '-e', `PROXY_PASSWORD=${PROXY_PASSWORD}`,
      '-v', `${ca.certFile}:/etc/pki/apicast-sidecar/ca.pem:ro`,
      '-e', 'CA_BUNDLE=/etc/pki/apicast-sidecar/ca.pem',
      IMAGE as string)
    assert.ok(await waitForPort(backendPort), 'the container never listened')
    const client = new Client()
    t.after(async () => { await client.close() })
    const ready = await eventually(async () => (await client.send(`http://127.0.0.1:${adminPort}/readyz`)).status, (s) => s === 200, 15_000, 'readiness once the PAC is loaded')
    assert.equal(ready, 200)
    const res = await client.send(`http://127.0.0.1:${backendPort}/transactions/authrep.xml?service_token=st`)
    assert.equal(res.status, 200, `${res.status} ${res.text()}\n${await podman('logs', container)}`)
    assert.ok(proxy.tunnels() >= 1)
    const logs = await podman('logs', container)
    assert.match(logs, /"event":"pac_decision"/)
    assert.match(logs, /SOCKS5 127\.0\.0\.1:1 skipped/)
    await podman('stop', '-t', '20', container)
  })
})
