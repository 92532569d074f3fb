/**
 * deploy/podman/apicast-sidecar-pod.yaml, run with `podman kube play` as the
 * README says, with a stand-in for APIcast: APIcast's image cannot be pulled
 * here, so its container runs the local base ($SIDECAR_BASE_IMAGE, which has
 * node) with a script that makes APIcast's two calls, the configuration read
 * through http://TOKEN@127.0.0.1:9090 and an authrep through
 * http://127.0.0.1:9091, each time its gateway port is called. They go
 * through the sidecar in the pod, Debian's squid on the host asking for
 * Basic auth, to a TLS stand-in for 3scale with a CA made at test time.
 *
 * The pod gets its own network namespace, as it does for a user; slirp4netns
 * with allow_host_loopback lets it reach squid on the host's 127.0.0.1 as
 * 10.0.2.2. What the test changes in the manifest, and why, is listed in
 * `podForTest`; the values come from the real ConfigMap example, every one
 * of its keys replaced.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { it } from 'node:test'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { promisify } from 'node:util'
import type { IConfigMap, IPod } from 'kubernetes-models/v1'
import { stringify } from 'yaml'
import { Client } from '../helpers/client.js'
import { eventually } from '../helpers/eventually.js'
import { REPO_ROOT, readYamlDocument } from '../helpers/manifests.js'
import { startOrigin } from '../helpers/origin.js'
import { testCa } from '../helpers/pki.js'
import { freePort, squidSkip, PROXY_PASSWORD, PROXY_USER, startSquid } from '../helpers/proxies.js'

const run = promisify(execFile)
/** Set by .ci/run after it built the image with scripts/container/build-image.sh. */
const IMAGE = process.env.SIDECAR_IMAGE
/** The base .ci/run built SIDECAR_IMAGE on: it has node, for the APIcast stand-in. */
const BASE = process.env.SIDECAR_BASE_IMAGE
const skip = IMAGE === undefined
  ? 'SIDECAR_IMAGE is not set (.ci/run builds the image and sets it)'
  : BASE === undefined
    ? 'SIDECAR_BASE_IMAGE is not set (.ci/run sets it to the base it built the image on)'
    : squidSkip

const POD_FILE = join(REPO_ROOT, 'deploy', 'podman', 'apicast-sidecar-pod.yaml')
const EXAMPLE_FILE = join(REPO_ROOT, 'deploy', 'podman', 'secrets.example.yaml')

const TOKEN = 'pod-access-token-5f1c'
const SERVICE_TOKEN = 'pod-service-token-9a2e'
const USER_KEY = 'pod-user-key-33b7'
const CONFIG_PATH = '/admin/api/account/proxy_configs/production.json?host=api.example.com&version=latest'
const AUTHREP_PATH = `/transactions/authrep.xml?service_token=${SERVICE_TOKEN}&service_id=2555417777820&user_key=${USER_KEY}&usage%5Bhits%5D=1`

/**
 * The APIcast stand-in: on each request to its gateway port (8080) it makes
 * APIcast's calls, with the endpoints the pod gives APIcast, and answers
 * what it got. The portal userinfo goes as `Authorization: Basic
 * base64(TOKEN:)`, the way APIcast sends it.
 */
const STAND_IN = `const http = require('node:http')
const portal = new URL(process.env.THREESCALE_PORTAL_ENDPOINT)
const backend = new URL(process.env.BACKEND_ENDPOINT_OVERRIDE)
const userinfo = decodeURIComponent(portal.username) + ':' + decodeURIComponent(portal.password)
const get = (base, path, headers) => new Promise((resolve, reject) => {
  http.get(new URL(path, base.origin), { headers }, (res) => {
    let body = ''
    res.setEncoding('utf8')
    res.on('data', (c) => { body += c })
    res.on('end', () => resolve({ status: res.statusCode, body }))
  }).on('error', reject)
})
http.createServer((req, res) => {
  (async () => {
    const config = await get(portal, ${JSON.stringify(CONFIG_PATH)}, { authorization: 'Basic ' + Buffer.from(userinfo).toString('base64') })
    const authrep = await get(backend, ${JSON.stringify(AUTHREP_PATH)}, {})
    return JSON.stringify({ config, authrep })
  })().then((body) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(body)
  }, (err) => {
    res.writeHead(502, { 'content-type': 'text/plain' })
    res.end(String(err))
  })
}).listen(8080, '0.0.0.0')
process.on('SIGTERM', () => process.exit(0))
`

async function podman (...args: string[]): Promise<string> {
  const { stdout } = await run('podman', args, { maxBuffer: 16 * 1024 * 1024 })
  return stdout.trim()
}

interface TestPorts { readonly gateway: number, readonly management: number, readonly admin: number }

/**
 * The manifest as the test plays it. Each change is one the test cannot do
 * without:
 * - the pod's and the volume's names: unique, beside other runs on the machine;
 * - APIcast's image and command: the stand-in (no registry is reachable);
 * - the sidecar's image: the one .ci/run built, under its CI tag;
 * - the host ports: free ones, all on the host's loopback (8080, 8090 and
 *   9092 may be taken on a shared machine);
 * - the CA directory: one holding the test CA.
 */
function podForTest (name: string, ports: TestPorts, caDir: string): IPod {
  const pod = structuredClone(readYamlDocument(POD_FILE)) as unknown as IPod
  assert.ok(pod.metadata !== undefined && pod.spec !== undefined)
  pod.metadata.name = name
  const hostPorts: Record<number, number> = { 8080: ports.gateway, 8090: ports.management, 9092: ports.admin }
  for (const c of pod.spec.containers) {
    if (c.name === 'apicast') {
      c.image = BASE
      c.command = ['node', '-e', STAND_IN]
    } else if (c.name === 'sidecar') {
      c.image = IMAGE
    }
    for (const p of c.ports ?? []) {
      const hostPort = hostPorts[p.containerPort]
      assert.ok(hostPort !== undefined, `${c.name}: an unexpected port ${p.containerPort}`)
      p.hostPort = hostPort
      p.hostIP = '127.0.0.1'
    }
  }
  const volumes = pod.spec.volumes ?? []
  const ca = volumes.find((v) => v.hostPath !== undefined)
  const state = volumes.find((v) => v.persistentVolumeClaim !== undefined)
  assert.ok(ca?.hostPath !== undefined && state?.persistentVolumeClaim !== undefined, 'the manifest has no CA directory or state volume')
  ca.hostPath.path = caDir
  state.persistentVolumeClaim.claimName = `${name}-state`
  return pod
}

/** The ConfigMap example with every key given the test's value; fails if the example's keys change. */
function configMapForTest (values: Readonly<Record<string, string>>): IConfigMap {
  const cm = structuredClone(readYamlDocument(EXAMPLE_FILE)) as unknown as IConfigMap
  assert.deepEqual(Object.keys(cm.data ?? {}).sort(), Object.keys(values).sort(), 'the example\'s keys are not the ones this test fills in')
  cm.data = { ...values }
  return cm
}

describeOrSkip('the podman pod (deploy/podman)', skip, () => {
  it('APIcast\'s calls go through the sidecar in its pod, an authenticating squid and TLS to 3scale; the pod stops cleanly', { timeout: 240_000 }, async (t) => {
    const ca = await testCa()
    const origin = await startOrigin()
    t.after(() => origin.close())
    const squid = await startSquid()
    t.after(() => squid.close())
    const client = new Client()
    t.after(() => client.close())

    const dir = mkdtempSync(join(tmpdir(), 'sidecar-podman-pod-'))
    const name = `sidecar-pod-${process.pid}-${Date.now()}`
    const podFile = join(dir, 'apicast-sidecar-pod.yaml')
    const configMapFile = join(dir, 'secrets.yaml')
    // Registered before anything can fail: the pod, its volume and the files go whatever happens.
    t.after(async () => {
      if (existsSync(podFile)) await podman('kube', 'down', podFile).catch(() => '')
      await podman('volume', 'rm', '-f', `${name}-state`).catch(() => '')
      rmSync(dir, { recursive: true, force: true })
    })
    const caDir = join(dir, 'ca')
    mkdirSync(caDir)
    chmodSync(caDir, 0o755) // read by the sidecar's user, 10001
    writeFileSync(join(caDir, 'test-ca.pem'), ca.certPem, { mode: 0o644 })
    const ports = { gateway: await freePort(), management: await freePort(), admin: await freePort() }
    writeFileSync(podFile, stringify(podForTest(name, ports, caDir)))
    writeFileSync(configMapFile, stringify(configMapForTest({
      'apicast-portal-endpoint': `http://${TOKEN}@127.0.0.1:9090`,
      'portal-endpoint': `https://portal.test:${origin.port}`,
      'backend-endpoint': `https://backend.test:${origin.port}`,
      // The host's 127.0.0.1, seen from the pod through slirp4netns.
      'https-proxy': `http://10.0.2.2:${squid.port}`,
      'proxy-user': PROXY_USER,
      'proxy-password': PROXY_PASSWORD
    })), { mode: 0o600 })
    await podman('kube', 'play', '--network', 'slirp4netns:allow_host_loopback=true', '--configmap', configMapFile, podFile)

    // Only the ports the manifest publishes: never the portal and backend listeners.
    const bindings = JSON.parse(await podman('pod', 'inspect', name, '--format', '{{json .InfraConfig.PortBindings}}')) as Record<string, unknown>
    assert.deepEqual(Object.keys(bindings).sort(), ['8080/tcp', '8090/tcp', '9092/tcp'])

    // /readyz on the published admin port: proxy, CONNECT, TLS and 3scale's answer, for both routes.
    const ready = await eventually(async () => await client.send(`http://127.0.0.1:${ports.admin}/readyz`).then((r) => ({ status: r.status, body: r.text() }), (err: unknown) => ({ status: 0, body: String(err) })),
      (r) => r.status === 200, 90_000, 'the sidecar\'s /readyz')
    assert.equal((JSON.parse(ready.body) as { ready: boolean }).ready, true)

    // The liveness probe, as podman turned it into the sidecar's health check.
    await podman('healthcheck', 'run', `${name}-sidecar`)

    // A call to the gateway: the stand-in makes APIcast's two calls.
    const reply = await eventually(async () => await client.send(`http://127.0.0.1:${ports.gateway}/`).then((r) => ({ status: r.status, body: r.text() }), (err: unknown) => ({ status: 0, body: String(err) })),
      (r) => r.status !== 0, 30_000, 'the APIcast stand-in\'s gateway port')
    assert.equal(reply.status, 200, reply.body)
    const { config, authrep } = JSON.parse(reply.body) as Record<'config' | 'authrep', { status: number, body: string }>
    assert.equal(config.status, 200, config.body)
    assert.match(config.body, /"services"/)
    assert.equal(authrep.status, 200, authrep.body)
    assert.match(authrep.body, /<authorized>true<\/authorized>/)

    // What 3scale saw: the token moved from APIcast's userinfo into access_token, each on its own host.
    const configRead = origin.requests.find((r) => r.url.startsWith('/admin/api/account/proxy_configs/production.json'))
    assert.ok(configRead !== undefined, 'the configuration read never reached the origin')
    const query = new URL(configRead.url, 'https://portal.test').searchParams
    assert.equal(query.get('access_token'), TOKEN)
    assert.equal(query.get('host'), 'api.example.com')
    assert.equal(configRead.headers.authorization, undefined)
    assert.equal(configRead.headers.host, `portal.test:${origin.port}`)
    const authrepSeen = origin.requests.find((r) => r.url.includes(`service_token=${SERVICE_TOKEN}`))
    assert.ok(authrepSeen !== undefined, 'the authrep never reached the origin')
    assert.equal(authrepSeen.url, AUTHREP_PATH)
    assert.equal(authrepSeen.headers.host, `backend.test:${origin.port}`)

    // The last good configuration is in the named volume, written as the sidecar's user.
    await eventually(async () => await podman('exec', `${name}-sidecar`, 'ls', '/var/lib/apicast-sidecar-proxy'),
      (files) => /^[0-9a-f]{64}\.json$/m.test(files), 10_000, 'the stale configuration file')

    // SIGTERM: the sidecar drains and exits 0.
    await podman('pod', 'stop', '-t', '20', name)
    assert.equal(await podman('inspect', '--format', '{{.State.ExitCode}}', `${name}-sidecar`), '0')
    const logs = (await run('podman', ['logs', `${name}-sidecar`], { maxBuffer: 16 * 1024 * 1024 })).stdout
    assert.match(logs, /"msg":"stopped"/)
    for (const secret of [TOKEN, Buffer.from(`${TOKEN}:`).toString('base64'), SERVICE_TOKEN, USER_KEY,
      PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD), Buffer.from(`${PROXY_USER}:${PROXY_PASSWORD}`).toString('base64')]) {
      assert.ok(!logs.includes(secret), 'a secret reached the sidecar\'s log')
    }

    // squid logs a tunnel when it closes: every one was authenticated as the proxy user, one per upstream at least.
    const connects = await eventually(() => squid.accessLog().filter((l) => / CONNECT /.test(l)),
      (lines) => lines.some((l) => l.includes(`CONNECT portal.test:${origin.port} `)) && lines.some((l) => l.includes(`CONNECT backend.test:${origin.port} `)),
      10_000, 'squid\'s CONNECT lines for both upstreams')
    assert.deepEqual(connects.filter((l) => !(/ TCP_TUNNEL\/200 /.test(l) && l.includes(` ${PROXY_USER} `))), [], 'a CONNECT not tunnelled as the proxy user')

    // kube down removes the pod, and keeps the named volume with the configuration.
    await podman('kube', 'down', podFile)
    await assert.rejects(podman('pod', 'exists', name))
    await podman('volume', 'exists', `${name}-state`)
  })
})
