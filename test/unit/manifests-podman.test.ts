/**
 * deploy/podman: the Pod for `podman kube play` (APIcast and the sidecar in
 * one network namespace) and the ConfigMap example given with
 * `--configmap`. Validated offline against the Kubernetes schemas; what
 * podman 4.3 makes of them is checked by test/container/podman-pod.test.ts.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import type { IConfigMap, IContainer, IPod } from 'kubernetes-models/v1'
import {
  APICAST_IMAGE,
  REPO_ROOT,
  isObject,
  readYamlDocuments,
  sidecarHardeningProblems,
  unknownFields,
  validateObject,
  type JsonObject
} from '../helpers/manifests.js'

const POD_FILE = join(REPO_ROOT, 'deploy', 'podman', 'apicast-sidecar-pod.yaml')
const EXAMPLE_FILE = join(REPO_ROOT, 'deploy', 'podman', 'secrets.example.yaml')
const VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version

const objectsOf = (file: string): JsonObject[] => readYamlDocuments(file).map((d) => {
  if (!isObject(d)) throw new Error(`${file}: a document is not a mapping`)
  return d
})
const pod = (): IPod => {
  const docs = objectsOf(POD_FILE)
  assert.deepEqual(docs.map((d) => d.kind), ['Pod'], 'the file holds exactly one Pod')
  return docs[0] as unknown as IPod
}
const example = (): IConfigMap => {
  const docs = objectsOf(EXAMPLE_FILE)
  assert.deepEqual(docs.map((d) => d.kind), ['ConfigMap'], 'the example holds exactly one ConfigMap')
  return docs[0] as unknown as IConfigMap
}
const container = (name: string): IContainer => {
  const c = pod().spec?.containers.find((c) => c.name === name)
  assert.ok(c !== undefined, `no ${name} container`)
  return c
}
const envOf = (c: IContainer, name: string): string | undefined => {
  const found = (c.env ?? []).filter((e) => e.name === name)
  assert.ok(found.length <= 1, `${c.name}: ${name} set twice`)
  return found[0]?.value
}
/** The ConfigMap key an env variable reads, if it reads one. */
const keyOf = (c: IContainer, name: string): string | undefined =>
  (c.env ?? []).find((e) => e.name === name)?.valueFrom?.configMapKeyRef?.key
const exampleValue = (key: string): string => {
  const value = example().data?.[key]
  assert.ok(value !== undefined, `the example has no ${key}`)
  return value
}

describe('podman pod: schema', () => {
  for (const [name, file] of [['the Pod', POD_FILE], ['the ConfigMap example', EXAMPLE_FILE]] as const) {
    it(`${name} passes kubernetes-models validation and has no undeclared field`, () => {
      const problems = objectsOf(file).flatMap((obj) => [...validateObject(obj), ...unknownFields(obj)])
      assert.deepEqual(problems, [])
    })
  }
})

describe('podman pod: the ConfigMap example', () => {
  it('every configMapKeyRef names the example\'s ConfigMap and one of its keys, and every key is used', () => {
    const refs = (pod().spec?.containers ?? []).flatMap((c) => (c.env ?? []).flatMap((e) => e.valueFrom?.configMapKeyRef ?? []))
    const name = example().metadata?.name
    assert.deepEqual(refs.filter((r) => r.name !== name), [], `references to a ConfigMap other than ${String(name)}`)
    assert.deepEqual([...new Set(refs.map((r) => r.key))].sort(), Object.keys(example().data ?? {}).sort())
  })

  it('holds only obvious placeholders where secrets go', () => {
    assert.equal(new URL(exampleValue('apicast-portal-endpoint')).username, 'YOUR_ACCESS_TOKEN')
    assert.equal(exampleValue('proxy-user'), 'YOUR_PROXY_USER')
    assert.equal(exampleValue('proxy-password'), 'YOUR_PROXY_PASSWORD')
    const proxy = new URL(exampleValue('https-proxy'))
    assert.equal(proxy.username + proxy.password, '', 'the proxy URL carries no credentials: they have keys of their own')
  })

  it('points APIcast\'s portal endpoint at the sidecar\'s portal listener, token as userinfo', () => {
    const url = new URL(exampleValue('apicast-portal-endpoint'))
    assert.equal(`${url.protocol}//${url.host}${url.pathname}`, 'http://127.0.0.1:9090/')
  })

  it('gives the sidecar https upstreams, the SaaS backend by default, and no token in its portal URL', () => {
    assert.equal(new URL(exampleValue('portal-endpoint')).protocol, 'https:')
    assert.equal(new URL(exampleValue('portal-endpoint')).username, '')
    assert.equal(exampleValue('backend-endpoint'), 'https://su1.3scale.net')
  })
})

describe('podman pod: APIcast and the sidecar', () => {
  it('APIcast is Red Hat\'s supported image, as in openshift/', () => {
    assert.equal(container('apicast').image, APICAST_IMAGE)
  })

  it('the sidecar is the image built on this host by build-image.sh, at package.json\'s version, never pulled', () => {
    assert.equal(container('sidecar').image, `localhost/apicast-sidecar-proxy:${VERSION}`)
    assert.equal(container('sidecar').imagePullPolicy, 'Never')
  })

  it('APIcast reaches the sidecar on loopback: portal from the ConfigMap, backend http://127.0.0.1:9091', () => {
    const apicast = container('apicast')
    assert.equal(keyOf(apicast, 'THREESCALE_PORTAL_ENDPOINT'), 'apicast-portal-endpoint')
    assert.equal(envOf(apicast, 'BACKEND_ENDPOINT_OVERRIDE'), 'http://127.0.0.1:9091')
  })

  it('the sidecar\'s forwarding listeners are on the pod\'s loopback, its admin listener on the pod address', () => {
    const sidecar = container('sidecar')
    assert.equal(envOf(sidecar, 'LISTEN_ADDRESS'), '127.0.0.1')
    assert.equal(envOf(sidecar, 'ADMIN_LISTEN_ADDRESS'), '0.0.0.0')
    for (const name of ['PORTAL_LISTEN_PORT', 'BACKEND_LISTEN_PORT', 'ADMIN_LISTEN_PORT']) {
      assert.equal(envOf(sidecar, name), undefined, `${name}: the defaults (9090, 9091, 9092) are what APIcast and the probe use`)
    }
  })

  it('every secret comes from the ConfigMap, none is written in the pod', () => {
    const sidecar = container('sidecar')
    assert.deepEqual(['HTTPS_PROXY', 'PROXY_USER', 'PROXY_PASSWORD', 'THREESCALE_PORTAL_ENDPOINT', 'BACKEND_ENDPOINT_OVERRIDE'].map((n) => keyOf(sidecar, n)),
      ['https-proxy', 'proxy-user', 'proxy-password', 'portal-endpoint', 'backend-endpoint'])
    const literals = (pod().spec?.containers ?? []).flatMap((c) => (c.env ?? []).flatMap((e) => e.value !== undefined ? [`${c.name} ${e.name}=${e.value}`] : []))
    assert.deepEqual(literals.filter((l) => /:\/\/[^/\s@]+@/.test(l) || /PASSWORD|TOKEN=/.test(l)), [])
  })

  it('publishes the gateway on the host, the status API and the admin listener on its loopback only, and never 9090 or 9091', () => {
    // podman 4.3 publishes a containerPort without hostPort on every host
    // address: the portal and backend ports must not be listed at all.
    const published = (pod().spec?.containers ?? []).flatMap((c) => (c.ports ?? []).map((p) => `${c.name} ${p.hostIP ?? '*'}:${String(p.hostPort)}->${p.containerPort}`))
    assert.deepEqual(published, ['apicast *:8080->8080', 'apicast 127.0.0.1:8090->8090', 'sidecar 127.0.0.1:9092->9092'])
  })

  it('the sidecar is hardened as in APIcast\'s pod on OpenShift', () => {
    assert.deepEqual(sidecarHardeningProblems(container('sidecar')), [])
    assert.equal(pod().spec?.automountServiceAccountToken, false)
  })

  it('restarts a container that exits', () => {
    assert.equal(pod().spec?.restartPolicy, 'Always')
  })
})

describe('podman pod: volumes', () => {
  const mountOf = (c: IContainer, path: string): string | undefined => c.volumeMounts?.find((m) => m.mountPath === path)?.name
  const volume = (name: string | undefined): NonNullable<NonNullable<IPod['spec']>['volumes']>[number] | undefined =>
    pod().spec?.volumes?.find((v) => v.name === name)

  it('CA_BUNDLE is a host directory, created when missing, mounted read-only', () => {
    const sidecar = container('sidecar')
    const dir = envOf(sidecar, 'CA_BUNDLE') ?? ''
    const v = volume(mountOf(sidecar, dir))
    assert.equal(v?.hostPath?.type, 'DirectoryOrCreate')
    assert.equal(v?.hostPath?.path, '/etc/apicast-sidecar-proxy/ca')
    assert.equal(sidecar.volumeMounts?.find((m) => m.mountPath === dir)?.readOnly, true)
  })

  it('STALE_CONFIG_DIR is a named volume (persistentVolumeClaim), so it outlives podman kube down', () => {
    const sidecar = container('sidecar')
    const v = volume(mountOf(sidecar, envOf(sidecar, 'STALE_CONFIG_DIR') ?? ''))
    assert.equal(v?.persistentVolumeClaim?.claimName, 'apicast-sidecar-state')
  })
})

describe('podman pod: the sidecar\'s liveness probe', () => {
  const command = (): string[] => container('sidecar').livenessProbe?.exec?.command ?? []

  it('is an exec probe whose every word survives podman 4.3 joining them for /bin/sh', () => {
    assert.ok(command().length > 0, 'no exec livenessProbe')
    // Letters, digits and . _ : / , = + @ % - only: nothing sh splits, quotes, globs or expands.
    assert.deepEqual(command().filter((w) => !/^[A-Za-z0-9._:/,=+@%-]+$/.test(w)), [])
  })

  it('asks the admin listener\'s /healthz and fails on anything but 200, as the image\'s HEALTHCHECK does', () => {
    const words = command()
    assert.equal(words[0], 'node')
    const module = words.find((w) => w.startsWith('--import=data:text/javascript,'))
    assert.ok(module !== undefined, 'no data: URL module')
    const source = decodeURIComponent(module.slice('--import=data:text/javascript,'.length))
    assert.match(source, /get\('http:\/\/127\.0\.0\.1:9092\/healthz'/)
    assert.match(source, /process\.exit\(r\.statusCode===200\?0:1\)/)
    assert.match(source, /\.on\('error',\(\)=>process\.exit\(1\)\)/)
    assert.deepEqual(words.slice(-2), ['-e', '0'])
  })
})
