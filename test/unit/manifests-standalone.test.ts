/**
 * openshift/standalone: the sidecar as its own Deployment behind a Service,
 * shared by the APIcast gateways of a namespace (the APIcast operator owns
 * APIcast's pod). The base is read file by file; the example overlay and the
 * TLS component are rendered with kustomize itself.
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import type { IDeployment } from 'kubernetes-models/apps/v1'
import type { INetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1'
import type { IConfigMap, IService } from 'kubernetes-models/v1'
import {
  SIDECAR_IMAGE_IN_CLUSTER,
  SIDECAR_IMAGE_PLACEHOLDER,
  containerOf,
  envOf,
  isObject,
  kustomizeBuild,
  kustomizeSkip,
  only,
  openshiftPath,
  parseKustomization,
  probeTarget,
  readYamlDocument,
  readYamlDocuments,
  selects,
  sidecarHardeningProblems,
  unknownFields,
  validateObject,
  type JsonObject
} from '../helpers/manifests.js'

const BASE = openshiftPath('standalone', 'base')
const SAMPLE_FILES = { 'standalone/example/https-proxy': 'http://user:password@proxy.corp.example:3128' }

const once = <T>(load: () => T): (() => T) => {
  let cached: { value: T } | undefined
  return () => (cached ??= { value: load() }).value
}

const baseKustomization = once(() => parseKustomization(readYamlDocument(join(BASE, 'kustomization.yaml'))))
const baseObjects = once((): Array<{ file: string, obj: JsonObject }> => baseKustomization().resources.flatMap((file) =>
  readYamlDocuments(join(BASE, file)).map((obj) => {
    if (!isObject(obj)) throw new Error(`${file}: a document is not a mapping`)
    return { file, obj }
  })))
const example = once(() => kustomizeBuild('standalone/example', SAMPLE_FILES))
/** The example overlay with the TLS component, as its comment says to turn it on. */
const exampleTls = once(() => kustomizeBuild('standalone/tls-test', {
  ...SAMPLE_FILES,
  'standalone/tls-test/kustomization.yaml': [
    'apiVersion: kustomize.config.k8s.io/v1beta1',
    'kind: Kustomization',
    'resources: [../example]',
    'components: [../components/tls]'
  ].join('\n')
}))

const describeObject = (obj: JsonObject): string => `${String(obj.kind)} ${isObject(obj.metadata) ? String(obj.metadata.name) : '?'}`
const deployment = (objects: readonly JsonObject[]): IDeployment => only(objects, 'Deployment') as unknown as IDeployment
const podLabels = (d: IDeployment): Record<string, string> => d.spec?.template.metadata?.labels ?? {}

describe('standalone base', () => {
  it('kustomization.yaml is valid and every resource exists', () => {
    assert.deepEqual(baseKustomization().resources.filter((r) => !existsSync(join(BASE, r))), [])
  })

  it('holds a Deployment, a Service, a PodDisruptionBudget and a NetworkPolicy, and no Secret or ConfigMap', () => {
    assert.deepEqual(baseObjects().map((o) => String(o.obj.kind)).sort(), ['Deployment', 'NetworkPolicy', 'PodDisruptionBudget', 'Service'])
  })

  it('every resource passes kubernetes-models validation and has no undeclared field', () => {
    const problems = baseObjects().flatMap(({ file, obj }) => [...validateObject(obj), ...unknownFields(obj)].map((e) => `${file}: ${describeObject(obj)}: ${e}`))
    assert.deepEqual(problems, [])
  })

  it('names the sidecar image only for an overlay\'s images: entry to replace', () => {
    const d = deployment(baseObjects().map((o) => o.obj))
    assert.equal(containerOf(d, 'sidecar').image, SIDECAR_IMAGE_PLACEHOLDER)
  })
})

describeOrSkip('standalone example overlay (kustomize)', kustomizeSkip, () => {
  for (const [name, objects] of [['example', example], ['example with components/tls', exampleTls]] as const) {
    it(`${name}: every object passes kubernetes-models validation and has no undeclared field`, () => {
      const problems = objects().flatMap((obj) => [...validateObject(obj), ...unknownFields(obj)].map((e) => `${describeObject(obj)}: ${e}`))
      assert.deepEqual(problems, [])
    })

    it(`${name}: the sidecar image is the one built into the namespace's image stream`, () => {
      const d = deployment(objects())
      assert.match(containerOf(d, 'sidecar').image ?? '', SIDECAR_IMAGE_IN_CLUSTER)
      const namespace = d.metadata?.namespace ?? ''
      assert.ok((containerOf(d, 'sidecar').image ?? '').includes(`/${namespace}/`), 'the image stream is in the overlay\'s namespace')
    })
  }

  it('generates the proxy Secret from the user\'s file, and the Deployment mounts it by its generated name', () => {
    const secret = only(example(), 'Secret')
    assert.ok(isObject(secret.data))
    assert.deepEqual(Object.keys(secret.data), ['https-proxy'])
    const volume = deployment(example()).spec?.template.spec?.volumes?.find((v) => v.name === 'sidecar-secret')
    assert.equal(volume?.secret?.secretName, (secret.metadata as JsonObject).name)
    assert.match(String((secret.metadata as JsonObject).name), /^apicast-sidecar-proxy-[a-z0-9]{10}$/)
  })
})

describe('standalone policy', () => {
  const objects = (): JsonObject[] => baseObjects().map((o) => o.obj)
  const d = (): IDeployment => deployment(objects())

  it('runs at least 2 replicas, rolling one at a time with none unavailable', () => {
    assert.ok((d().spec?.replicas ?? 1) >= 2)
    assert.deepEqual(d().spec?.strategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } })
  })

  it('spreads its replicas across nodes and zones, selecting its own pods', () => {
    const constraints = d().spec?.template.spec?.topologySpreadConstraints ?? []
    assert.deepEqual(constraints.map((c) => c.topologyKey).sort(), ['kubernetes.io/hostname', 'topology.kubernetes.io/zone'])
    for (const c of constraints) {
      assert.ok(selects(c.labelSelector, podLabels(d())), `${c.topologyKey}: the labelSelector does not select the pods`)
      assert.equal(c.maxSkew, 1)
    }
  })

  it('a PodDisruptionBudget keeps one replica up through drains, and never blocks them', () => {
    const pdb = only(objects(), 'PodDisruptionBudget') as unknown as IPodDisruptionBudget
    assert.ok(selects(pdb.spec?.selector, podLabels(d())))
    assert.equal(pdb.spec?.minAvailable, 1)
    assert.ok((d().spec?.replicas ?? 1) > 1, 'minAvailable 1 with one replica would block every drain')
  })

  it('the Service exposes portal 9090, backend 9091, admin 9092 and the forward proxy 3128 on the named container ports', () => {
    const service = only(objects(), 'Service') as unknown as IService
    const sidecar = containerOf(d(), 'sidecar')
    assert.ok(selects({ matchLabels: service.spec?.selector ?? {} }, podLabels(d())))
    const ports = (service.spec?.ports ?? []).map((p) => [p.name, p.port, sidecar.ports?.find((q) => q.name === p.targetPort)?.containerPort])
    assert.deepEqual(ports, [['portal', 9090, 9090], ['backend', 9091, 9091], ['admin', 9092, 9092], ['forward', 3128, 3128]])
  })

  it('the NetworkPolicy admits 9090, 9091 and the forward proxy\'s 3128 only from APIcast pods of this namespace, and 9092 only from monitoring', () => {
    const policy = only(objects(), 'NetworkPolicy') as unknown as INetworkPolicy
    assert.ok(selects(policy.spec?.podSelector, podLabels(d())))
    assert.deepEqual(policy.spec?.policyTypes, ['Ingress'])
    const rules = (policy.spec?.ingress ?? []).map((rule) => ({
      ports: (rule.ports ?? []).map((p) => p.port).sort(),
      from: (rule.from ?? []).map((peer) => JSON.stringify(peer))
    }))
    assert.deepEqual(rules, [
      // The APIcast operator's metering label on every gateway pod it makes; no namespaceSelector: this namespace only.
      { ports: ['backend', 'forward', 'portal'], from: [JSON.stringify({ podSelector: { matchLabels: { 'rht.comp': '3scale_apicast' } } })] },
      {
        ports: ['admin'],
        from: [JSON.stringify({
          namespaceSelector: {
            matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'In', values: ['openshift-monitoring', 'openshift-user-workload-monitoring'] }]
          }
        })]
      }
    ])
    // The named ports exist on the container.
    const names = new Set(containerOf(d(), 'sidecar').ports?.map((p) => p.name))
    for (const rule of rules) for (const port of rule.ports) assert.ok(names.has(String(port)), `no container port ${String(port)}`)
  })

  const env: Array<[string, string]> = [
    ['LISTEN_ADDRESS', '0.0.0.0'],
    ['ADMIN_LISTEN_ADDRESS', '0.0.0.0'],
    ['PORTAL_TOKEN_SOURCE', 'client'],
    ['HTTPS_PROXY_FILE', '/var/run/secrets/apicast-sidecar/https-proxy'],
    ['CA_BUNDLE', '/etc/pki/apicast-sidecar/ca'],
    ['STALE_CONFIG_DIR', '/var/lib/apicast-sidecar-proxy'],
    ['FORWARD_PROXY_PORT', '3128']
  ]
  for (const [name, value] of env) {
    it(`sidecar env ${name}=${value}`, () => assert.equal(envOf(containerOf(d(), 'sidecar'), name), value))
  }

  it('holds no token of its own: no ACCESS_TOKEN_FILE, no userinfo in its portal URL, only the proxy URL in its Secret', () => {
    const sidecar = containerOf(d(), 'sidecar')
    assert.equal(envOf(sidecar, 'ACCESS_TOKEN_FILE'), undefined)
    assert.equal(new URL(envOf(sidecar, 'THREESCALE_PORTAL_ENDPOINT') ?? '').username, '')
    const secret = d().spec?.template.spec?.volumes?.find((v) => v.secret !== undefined)?.secret
    assert.deepEqual(secret?.items?.map((i) => i.key), ['https-proxy'])
    for (const e of sidecar.env ?? []) assert.equal(e.valueFrom?.secretKeyRef, undefined, `${e.name} reads a Secret into the environment`)
  })

  it('is hardened like the sidecar in APIcast\'s pod', () => {
    assert.deepEqual(sidecarHardeningProblems(containerOf(d(), 'sidecar')), [])
    assert.equal(d().spec?.template.spec?.automountServiceAccountToken, false)
  })

  const probes: Array<['readinessProbe' | 'livenessProbe' | 'startupProbe', string]> = [
    ['readinessProbe', 'httpGet /readyz?once :9092'],
    ['livenessProbe', 'httpGet /healthz :9092'],
    ['startupProbe', 'httpGet /healthz :9092']
  ]
  for (const [probe, want] of probes) {
    it(`${probe}: ${want}`, () => {
      const c = containerOf(d(), 'sidecar')
      assert.equal(probeTarget(c, c[probe]), want)
    })
  }
})

describeOrSkip('standalone components/tls (kustomize)', kustomizeSkip, () => {
  it('asks the service CA for a serving certificate, and the sidecar serves HTTPS with it', () => {
    const service = only(exampleTls(), 'Service') as unknown as IService
    const secretName = service.metadata?.annotations?.['service.beta.openshift.io/serving-cert-secret-name']
    assert.equal(secretName, 'apicast-sidecar-proxy-tls')
    const d = deployment(exampleTls())
    const sidecar = containerOf(d, 'sidecar')
    const volume = d.spec?.template.spec?.volumes?.find((v) => v.secret?.secretName === secretName)
    assert.ok(volume !== undefined, 'the serving certificate Secret is not a volume')
    const mount = sidecar.volumeMounts?.find((m) => m.name === volume.name)
    assert.equal(mount?.readOnly, true)
    assert.equal(envOf(sidecar, 'LISTEN_TLS_CERT'), `${mount?.mountPath}/tls.crt`)
    assert.equal(envOf(sidecar, 'LISTEN_TLS_KEY'), `${mount?.mountPath}/tls.key`)
  })

  it('the probes stay on the admin listener, which serves plain HTTP', () => {
    const sidecar = containerOf(deployment(exampleTls()), 'sidecar')
    assert.equal(probeTarget(sidecar, sidecar.readinessProbe), 'httpGet /readyz?once :9092')
  })

  it('the service CA bundle ConfigMap is injected by OpenShift and holds no data of its own', () => {
    const cm = only(exampleTls(), 'ConfigMap', 'apicast-sidecar-proxy-service-ca') as unknown as IConfigMap
    assert.equal(cm.metadata?.annotations?.['service.beta.openshift.io/inject-cabundle'], 'true')
    assert.equal(cm.data, undefined)
  })

  it('changes nothing else in the example', () => {
    const strip = (objects: readonly JsonObject[]): JsonObject[] => objects.filter((o) => o.kind !== 'ConfigMap').map((o) => {
      const copy = structuredClone(o) as unknown as IDeployment
      const annotations = copy.metadata?.annotations
      delete annotations?.['service.beta.openshift.io/serving-cert-secret-name']
      if (annotations !== undefined && Object.keys(annotations).length === 0) delete copy.metadata?.annotations
      if (o.kind === 'Deployment') {
        const spec = copy.spec?.template.spec
        if (spec !== undefined) spec.volumes = spec.volumes?.filter((v) => v.name !== 'listen-tls')
        const c = spec?.containers.find((c) => c.name === 'sidecar')
        if (c !== undefined) {
          c.env = c.env?.filter((e) => !e.name.startsWith('LISTEN_TLS_'))
          c.volumeMounts = c.volumeMounts?.filter((m) => m.name !== 'listen-tls')
        }
      }
      return copy as unknown as JsonObject
    })
    assert.deepEqual(strip(exampleTls()), strip(example()))
  })
})
