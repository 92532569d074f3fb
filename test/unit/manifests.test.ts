import assert from 'node:assert/strict'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { join, relative } from 'node:path'
import { describe, it } from 'node:test'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import type { IDeployment } from 'kubernetes-models/apps/v1'
import type { IConfigMap, IContainer, IProbe, IService } from 'kubernetes-models/v1'
import {
  APICAST_IMAGE,
  REPO_ROOT,
  SIDECAR_IMAGE_IN_CLUSTER,
  SIDECAR_IMAGE_PLACEHOLDER,
  applyImages,
  isObject,
  kustomizeBuild,
  kustomizeSkip,
  openshiftPath,
  parameterReferences,
  parseKustomization,
  parseTemplate,
  processTemplate,
  readYamlDocument,
  readYamlDocuments,
  splitImage,
  strings,
  unknownFields,
  validateObject,
  type Json,
  type JsonObject,
  type Kustomization,
  type Template
} from '../helpers/manifests.js'

const TEMPLATE_FILE = openshiftPath('template.yaml')
const KUSTOMIZE_DIR = openshiftPath('kustomize', 'base')
const EXAMPLE_DIR = openshiftPath('kustomize', 'example')

/** Realistic values for the required parameters that have no default. */
const SAMPLE_VALUES: Readonly<Record<string, string>> = {
  THREESCALE_PORTAL_ENDPOINT: 'https://acme-admin.3scale.net',
  // The image as the example overlay names it: built into the cluster's registry.
  SIDECAR_IMAGE: 'image-registry.openshift-image-registry.svc:5000/apicast/apicast-sidecar-proxy:0.1.0'
}

const EXPECTED_PARAMETERS = [
  'APICAST_IMAGE', 'SIDECAR_IMAGE', 'THREESCALE_PORTAL_ENDPOINT', 'BACKEND_ENDPOINT_OVERRIDE', 'SIDECAR_SECRET',
  'PROXY_CA_CONFIGMAP', 'NO_PROXY', 'ACCESS_TOKEN_LOCATION', 'LOG_LEVEL', 'REPLICAS', 'APP_NAME'
]

const SECRET_DIR = '/var/run/secrets/apicast-sidecar'
const CA_DIR = '/etc/pki/apicast-sidecar/ca'

const once = <T>(load: () => T): (() => T) => {
  let cached: { value: T } | undefined
  return () => (cached ??= { value: load() }).value
}

const template = once((): Template => parseTemplate(readYamlDocument(TEMPLATE_FILE)))
const processed = once((): JsonObject[] => processTemplate(template(), SAMPLE_VALUES))
const kustomization = once((): Kustomization => parseKustomization(readYamlDocument(join(KUSTOMIZE_DIR, 'kustomization.yaml'))))
const exampleKustomization = once((): Kustomization => parseKustomization(readYamlDocument(join(EXAMPLE_DIR, 'kustomization.yaml'))))
/** The example overlay's endpoints ConfigMap, from its configMapGenerator literals. */
const exampleEndpoints = once((): Record<string, string> => {
  const generator = exampleKustomization().configMapGenerator.find((g) => g.name === 'apicast-sidecar-endpoints')
  assert.ok(generator !== undefined && Array.isArray(generator.literals), 'the example makes no apicast-sidecar-endpoints ConfigMap')
  return Object.fromEntries(generator.literals.map((l) => {
    const text = String(l)
    return [text.slice(0, text.indexOf('=')), text.slice(text.indexOf('=') + 1)]
  }))
})
/** The base's Deployment with the example overlay's images: what the example applies, bar generated names. */
const baseDeploymentAsExample = (): IDeployment => {
  const deployment = structuredClone(only(kustomizeObjects().map((o) => o.obj), 'Deployment')) as unknown as IDeployment
  for (const c of deployment.spec?.template.spec?.containers ?? []) {
    if (c.image !== undefined) c.image = applyImages(c.image, [...kustomization().images, ...exampleKustomization().images])
  }
  return deployment
}
const kustomizeObjects = once((): Array<{ file: string, obj: JsonObject }> =>
  kustomization().resources.flatMap((file) => readYamlDocuments(join(KUSTOMIZE_DIR, file)).map((obj) => {
    if (!isObject(obj)) throw new Error(`${file}: a document is not a mapping`)
    return { file, obj }
  })))

const describeObject = (obj: JsonObject): string => {
  const name = isObject(obj.metadata) ? String(obj.metadata.name) : '?'
  return `${String(obj.kind)} ${name}`
}

function only (objects: readonly JsonObject[], kind: string): JsonObject {
  const found = objects.filter((o) => o.kind === kind)
  assert.equal(found.length, 1, `expected one ${kind}, found ${found.length}`)
  return found[0] as JsonObject
}

/**
 * The Deployments the policy applies to, after parameters and image
 * overrides, with the ConfigMap their configMapKeyRef env reads.
 */
const DEPLOYMENTS: Array<{ source: string, load: () => IDeployment, configMap: () => { name: string, data: Record<string, string> } }> = [
  {
    source: 'Template',
    load: () => only(processed(), 'Deployment') as unknown as IDeployment,
    configMap: () => {
      const cm = only(processed(), 'ConfigMap') as unknown as IConfigMap
      return { name: cm.metadata?.name ?? '', data: cm.data ?? {} }
    }
  },
  {
    source: 'kustomize base with the example overlay\'s images',
    load: baseDeploymentAsExample,
    configMap: () => ({ name: 'apicast-sidecar-endpoints', data: exampleEndpoints() })
  }
]

function containers (d: IDeployment): IContainer[] {
  return d.spec?.template.spec?.containers ?? []
}

function container (d: IDeployment, name: string): IContainer {
  const c = containers(d).find((c) => c.name === name)
  assert.ok(c !== undefined, `no ${name} container`)
  return c
}

function env (c: IContainer, name: string): string | undefined {
  const found = (c.env ?? []).filter((e) => e.name === name)
  assert.ok(found.length <= 1, `${c.name}: ${name} set twice`)
  return found[0]?.value
}

/** A probe's port as a number, resolving a named port. */
function probePort (c: IContainer, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port
  return c.ports?.find((p) => p.name === port)?.containerPort
}

function probeTarget (c: IContainer, probe: IProbe | undefined): string {
  if (probe === undefined) return 'none'
  if (probe.httpGet !== undefined) return `httpGet ${probe.httpGet.path ?? '/'} :${probePort(c, probe.httpGet.port)}`
  if (probe.tcpSocket !== undefined) return `tcpSocket :${probePort(c, probe.tcpSocket.port)}`
  if (probe.exec !== undefined) return `exec ${(probe.exec.command ?? []).join(' ')}`
  if (probe.grpc !== undefined) return `grpc :${probe.grpc.port}`
  return 'no handler'
}

/** Looks like a credential written out: userinfo in a URL, key=value, or a long opaque string. */
const CREDENTIAL_LIKE: ReadonlyArray<[string, RegExp]> = [
  ['user:password@ or token@ in a URL', /:\/\/[^/\s@]+@/],
  ['password=, token=, secret=', /(pass(word)?|passwd|pwd|token|secret)\s*[=:]/i],
  ['a long opaque string (token-like)', /[A-Za-z0-9]{32,}/]
]

describe('OpenShift Template: parameters', () => {
  it('is one YAML document with a valid Template envelope', () => {
    assert.equal(template().name, 'apicast-sidecar-proxy')
    assert.equal(readYamlDocuments(TEMPLATE_FILE).length, 1)
  })

  it('declares the expected parameters, each with a description', () => {
    const t = template()
    assert.deepEqual(t.parameters.map((p) => p.name).sort(), [...EXPECTED_PARAMETERS].sort())
    const undescribed = t.parameters.filter((p) => (p.description ?? '').trim() === '').map((p) => p.name)
    assert.deepEqual(undescribed, [], 'parameters without a description')
  })

  it('has a sample value in this test for every required parameter without a default', () => {
    const missing = template().parameters.filter((p) => p.required && p.value === undefined && SAMPLE_VALUES[p.name] === undefined)
    assert.deepEqual(missing.map((p) => p.name), [])
  })

  for (const name of ['THREESCALE_PORTAL_ENDPOINT', 'SIDECAR_IMAGE']) {
    it(`${name} is required and has no default`, () => {
      // No registry publishes the sidecar's image: a default would be an ImagePullBackOff.
      const p = template().parameters.find((p) => p.name === name)
      assert.equal(p?.required, true)
      assert.equal(p?.value, undefined)
    })
  }

  const defaults: Array<[string, string]> = [
    ['APICAST_IMAGE', APICAST_IMAGE],
    ['BACKEND_ENDPOINT_OVERRIDE', 'https://su1.3scale.net'],
    ['ACCESS_TOKEN_LOCATION', 'query'],
    ['LOG_LEVEL', 'info'],
    ['REPLICAS', '2']
  ]
  for (const [name, value] of defaults) {
    it(`${name} defaults to ${value}`, () => {
      assert.equal(template().parameters.find((p) => p.name === name)?.value, value)
    })
  }

  it('every ${NAME} and ${{NAME}} in the objects is a declared parameter', () => {
    const declared = new Set(template().parameters.map((p) => p.name))
    const undeclared = parameterReferences([...template().objects]).filter((r) => !declared.has(r.name))
    assert.deepEqual(undeclared, [])
  })

  it('every declared parameter is used by an object', () => {
    const used = new Set(parameterReferences([...template().objects]).map((r) => r.name))
    assert.deepEqual(template().parameters.filter((p) => !used.has(p.name)).map((p) => p.name), [])
  })

  it('REPLICAS is substituted as a number, not a string', () => {
    const deployment = only(processed(), 'Deployment') as unknown as IDeployment
    assert.equal(deployment.spec?.replicas, 2)
    const raw = template().objects.find((o) => o.kind === 'Deployment')
    assert.ok(raw !== undefined && isObject(raw.spec))
    assert.equal(raw.spec.replicas, '${{REPLICAS}}')
  })

  it('no parameter reference is left after processing', () => {
    assert.deepEqual(parameterReferences(processed()), [])
  })
})

describe('OpenShift Template: objects against the Kubernetes schemas', () => {
  it('holds one Deployment, one Service and the endpoints ConfigMap', () => {
    assert.deepEqual(template().objects.map((o) => `${String(o.apiVersion)} ${String(o.kind)}`).sort(), ['apps/v1 Deployment', 'v1 ConfigMap', 'v1 Service'])
  })

  for (const kind of ['Deployment', 'Service', 'ConfigMap']) {
    it(`the ${kind} passes kubernetes-models validation`, () => {
      assert.deepEqual(validateObject(only(processed(), kind)), [])
    })
    it(`the ${kind} has no field its schema does not declare`, () => {
      assert.deepEqual(unknownFields(only(processed(), kind)), [])
    })
  }
})

describe('kustomize base', () => {
  it('kustomization.yaml is valid and every resource exists', () => {
    const missing = kustomization().resources.filter((r) => !existsSync(join(KUSTOMIZE_DIR, r)))
    assert.deepEqual(missing, [])
  })

  it('holds a Deployment and a Service', () => {
    assert.deepEqual(kustomizeObjects().map((o) => String(o.obj.kind)).sort(), ['Deployment', 'Service'])
  })

  it('every resource passes kubernetes-models validation', () => {
    const problems = kustomizeObjects().flatMap(({ file, obj }) => validateObject(obj).map((e) => `${file}: ${describeObject(obj)}: ${e}`))
    assert.deepEqual(problems, [])
  })

  it('no resource has a field its schema does not declare', () => {
    const problems = kustomizeObjects().flatMap(({ file, obj }) => unknownFields(obj).map((e) => `${file}: ${describeObject(obj)}: ${e}`))
    assert.deepEqual(problems, [])
  })

  it('names the sidecar\'s image for an overlay to replace, and the example replaces it with the cluster registry\'s, pinned', () => {
    const d = only(kustomizeObjects().map((o) => o.obj), 'Deployment') as unknown as IDeployment
    assert.equal(container(d, 'sidecar').image, SIDECAR_IMAGE_PLACEHOLDER)
    const rule = exampleKustomization().images.find((i) => i.name === SIDECAR_IMAGE_PLACEHOLDER)
    assert.ok(rule !== undefined, 'the example has no images: entry for the sidecar')
    assert.match(applyImages(SIDECAR_IMAGE_PLACEHOLDER, [rule]), SIDECAR_IMAGE_IN_CLUSTER)
  })

  it('its Deployment and Service, with the example\'s images, equal the processed Template with the same values', () => {
    assert.deepEqual(baseDeploymentAsExample(), only(processed(), 'Deployment'), 'the Deployment differs between the kustomize base and the Template')
    assert.deepEqual(only(kustomizeObjects().map((o) => o.obj), 'Service'), only(processed(), 'Service'), 'the Service differs')
  })

  it('the example\'s endpoints are the Template\'s ConfigMap with the same values', () => {
    assert.deepEqual(exampleEndpoints(), (only(processed(), 'ConfigMap') as unknown as IConfigMap).data)
  })
})

describe('bases hold no placeholders', () => {
  // `oc apply -k` of a base that held a placeholder Secret overwrote the
  // real one, and the sidecar then exited on the placeholder certificate.
  const BASES = ['kustomize/base', 'standalone/base']
  for (const base of BASES) {
    it(`${base}: no Secret, no ConfigMap, and no REPLACE_WITH_ anywhere`, () => {
      const dir = openshiftPath(...base.split('/'))
      const k = parseKustomization(readYamlDocument(join(dir, 'kustomization.yaml')))
      assert.deepEqual([...k.secretGenerator, ...k.configMapGenerator], [], 'a base generates no Secret or ConfigMap')
      const objects = k.resources.flatMap((file) => readYamlDocuments(join(dir, file)))
      assert.deepEqual(objects.filter((o) => isObject(o) && (o.kind === 'Secret' || o.kind === 'ConfigMap')).map((o) => (o as JsonObject).kind), [])
      const placeholders = [...strings(objects)].filter(({ text }) => /REPLACE_WITH_|CHANGE_?ME/i.test(text)).map(({ path }) => path)
      assert.deepEqual(placeholders, [])
    })
  }
})

describeOrSkip('kustomize example overlay (kustomize)', kustomizeSkip, () => {
  const files = {
    'kustomize/example/access-token': 'sample-access-token',
    'kustomize/example/https-proxy': 'http://user:password@proxy.corp.example:3128'
  }
  const rendered = once(() => kustomizeBuild('kustomize/example', files))

  it('every object passes kubernetes-models validation and has no undeclared field', () => {
    const problems = rendered().flatMap((obj) => [...validateObject(obj), ...unknownFields(obj)].map((e) => `${describeObject(obj)}: ${e}`))
    assert.deepEqual(problems, [])
  })

  it('generates the Secret from the user\'s files, under the keys the Deployment mounts, and mounts it by its generated name', () => {
    const secret = only(rendered(), 'Secret')
    assert.ok(isObject(secret.data) && isObject(secret.metadata))
    assert.deepEqual(Object.keys(secret.data).sort(), ['access-token', 'https-proxy'])
    assert.equal(Buffer.from(String(secret.data['access-token']), 'base64').toString(), files['kustomize/example/access-token'])
    const d = only(rendered(), 'Deployment') as unknown as IDeployment
    const volume = d.spec?.template.spec?.volumes?.find((v) => v.name === 'sidecar-secret')
    assert.equal(volume?.secret?.secretName, secret.metadata.name)
    assert.match(String(secret.metadata.name), /^apicast-sidecar-[a-z0-9]{10}$/)
  })

  it('makes the endpoints ConfigMap, which the sidecar reads by its generated name, and no CA ConfigMap unless turned on', () => {
    const cm = only(rendered(), 'ConfigMap') as unknown as IConfigMap
    assert.match(cm.metadata?.name ?? '', /^apicast-sidecar-endpoints-[a-z0-9]{10}$/)
    const d = only(rendered(), 'Deployment') as unknown as IDeployment
    const refs = container(d, 'sidecar').env?.flatMap((e) => e.valueFrom?.configMapKeyRef?.name ?? []) ?? []
    assert.deepEqual([...new Set(refs)], [cm.metadata?.name])
    assert.equal(d.spec?.template.spec?.volumes?.find((v) => v.name === 'proxy-ca')?.configMap?.optional, true)
  })

  it('kustomize renders the base\'s Deployment and Service as this test reads them', () => {
    const base = kustomizeBuild('kustomize/base')
    for (const kind of ['Deployment', 'Service']) {
      const read = structuredClone(only(kustomizeObjects().map((o) => o.obj), kind)) as unknown as IDeployment
      for (const c of read.spec?.template?.spec?.containers ?? []) {
        if (c.image !== undefined) c.image = applyImages(c.image, kustomization().images)
      }
      assert.deepEqual(only(base, kind), read)
    }
  })
})

describe('unknown-field check', () => {
  type Mutation = (d: IDeployment & { [key: string]: unknown }) => void
  const rename = (obj: object, from: string, to: string): void => {
    const o = obj as Record<string, unknown>
    assert.ok(from in o, `no ${from} to rename`)
    o[to] = o[from]
    delete o[from]
  }
  const sidecar = (d: IDeployment): IContainer => container(d, 'sidecar')
  const cases: Array<{ name: string, mutate: Mutation, want: string[] }> = [
    {
      name: 'image → imagee and readOnlyRootFilesystem → readOnlyRootFileSystem in the sidecar',
      mutate: (d) => {
        rename(sidecar(d), 'image', 'imagee')
        rename(sidecar(d).securityContext ?? {}, 'readOnlyRootFilesystem', 'readOnlyRootFileSystem')
      },
      want: ['/spec/template/spec/containers/1/imagee', '/spec/template/spec/containers/1/securityContext/readOnlyRootFileSystem']
    },
    { name: 'metadata.lables', mutate: (d) => rename(d.metadata ?? {}, 'labels', 'lables'), want: ['/metadata/lables'] },
    { name: 'spec.replica', mutate: (d) => rename(d.spec ?? {}, 'replicas', 'replica'), want: ['/spec/replica'] },
    {
      name: 'httpGet.paht in a probe',
      mutate: (d) => rename(container(d, 'apicast').readinessProbe?.httpGet ?? {}, 'path', 'paht'),
      want: ['/spec/template/spec/containers/0/readinessProbe/httpGet/paht']
    },
    {
      name: 'configMap.optinal in a volume',
      mutate: (d) => rename(d.spec?.template.spec?.volumes?.find((v) => v.configMap !== undefined)?.configMap ?? {}, 'optional', 'optinal'),
      want: ['/spec/template/spec/volumes/1/configMap/optinal']
    },
    { name: 'a field at the top', mutate: (d) => { d.specs = {} }, want: ['/specs'] }
  ]
  for (const c of cases) {
    it(`reports ${c.name}, which the schema alone accepts`, () => {
      const d = structuredClone(only(processed(), 'Deployment')) as unknown as IDeployment & { [key: string]: unknown }
      assert.equal(d.spec?.template.spec?.containers[0]?.name, 'apicast', 'the expected paths assume apicast is the first container')
      c.mutate(d)
      const mutated = d as unknown as JsonObject
      assert.deepEqual(validateObject(mutated), [], 'kubernetes-models validation alone should not see this')
      assert.deepEqual(unknownFields(mutated).sort(), [...c.want].sort())
    })
  }

  it('accepts any key in maps (labels, resources.limits)', () => {
    const d = structuredClone(only(processed(), 'Deployment')) as unknown as IDeployment
    d.metadata = { ...d.metadata, labels: { ...d.metadata?.labels, 'example.com/anything': 'x' } }
    const c = container(d, 'sidecar')
    c.resources = { ...c.resources, limits: { ...c.resources?.limits, 'ephemeral-storage': '1Gi' } }
    assert.deepEqual(unknownFields(d as unknown as JsonObject), [])
  })
})

for (const { source, load, configMap } of DEPLOYMENTS) {
  /** A sidecar setting: its literal value, or the value of the ConfigMap key it reads. */
  const setting = (name: string): string | undefined => {
    const e = container(load(), 'sidecar').env?.find((e) => e.name === name)
    const ref = e?.valueFrom?.configMapKeyRef
    if (ref === undefined) return env(container(load(), 'sidecar'), name)
    assert.equal(ref.name, configMap().name, `${name} reads another ConfigMap`)
    return configMap().data[ref.key]
  }
  describe(`policy (${source})`, () => {
    it('runs apicast and sidecar in one pod', () => {
      assert.deepEqual(containers(load()).map((c) => c.name).sort(), ['apicast', 'sidecar'])
    })

    it('every image is pinned to a tag or digest, never latest', () => {
      for (const c of containers(load())) {
        const { tag, digest } = splitImage(c.image ?? '')
        assert.ok(digest !== undefined || (tag !== undefined && tag !== 'latest'), `${c.name}: ${c.image ?? 'no image'} is not pinned`)
      }
      assert.equal(container(load(), 'sidecar').image, SAMPLE_VALUES.SIDECAR_IMAGE)
      assert.equal(container(load(), 'apicast').image, APICAST_IMAGE)
    })

    it('the sidecar runs non-root, read-only, without privilege escalation, with no capabilities', () => {
      const d = load()
      const sc = container(d, 'sidecar').securityContext
      assert.equal(sc?.runAsNonRoot, true)
      assert.equal(sc?.readOnlyRootFilesystem, true)
      assert.equal(sc?.allowPrivilegeEscalation, false)
      assert.deepEqual(sc?.capabilities?.drop, ['ALL'])
      assert.equal(sc?.capabilities?.add, undefined)
      assert.equal(sc?.seccompProfile?.type, 'RuntimeDefault')
      assert.equal(sc?.privileged, undefined)
    })

    it('apicast runs non-root without privilege escalation, with no capabilities', () => {
      const sc = container(load(), 'apicast').securityContext
      assert.equal(sc?.runAsNonRoot, true)
      assert.equal(sc?.allowPrivilegeEscalation, false)
      assert.deepEqual(sc?.capabilities?.drop, ['ALL'])
    })

    it('no fixed runAsUser (OpenShift assigns an arbitrary UID)', () => {
      const d = load()
      assert.equal(d.spec?.template.spec?.securityContext?.runAsUser, undefined)
      for (const c of containers(d)) assert.equal(c.securityContext?.runAsUser, undefined, c.name)
    })

    it('the sidecar has an emptyDir at /tmp', () => {
      const d = load()
      const mount = container(d, 'sidecar').volumeMounts?.find((m) => m.mountPath === '/tmp')
      assert.ok(mount !== undefined, 'no /tmp mount')
      assert.ok(d.spec?.template.spec?.volumes?.find((v) => v.name === mount.name)?.emptyDir !== undefined, '/tmp is not an emptyDir')
    })

    it('the sidecar keeps the last good configuration in an emptyDir (STALE_CONFIG_DIR)', () => {
      const d = load()
      const sidecar = container(d, 'sidecar')
      const dir = sidecar.env?.find((e) => e.name === 'STALE_CONFIG_DIR')?.value
      assert.equal(dir, '/var/lib/apicast-sidecar-proxy')
      const mount = sidecar.volumeMounts?.find((m) => m.mountPath === dir)
      assert.ok(mount !== undefined, 'STALE_CONFIG_DIR is not mounted')
      assert.ok(d.spec?.template.spec?.volumes?.find((v) => v.name === mount.name)?.emptyDir !== undefined, 'STALE_CONFIG_DIR is not an emptyDir')
    })

    it('every container sets cpu and memory requests and limits', () => {
      for (const c of containers(load())) {
        for (const kind of ['requests', 'limits'] as const) {
          for (const resource of ['cpu', 'memory']) {
            assert.ok(c.resources?.[kind]?.[resource] !== undefined, `${c.name}: no ${kind}.${resource}`)
          }
        }
      }
      const sidecar = container(load(), 'sidecar').resources
      assert.deepEqual({ requests: sidecar?.requests, limits: sidecar?.limits }, {
        // Measured peak RSS under load is 120-145 MB (README, Performance), and
        // the stale configuration may hold up to 32 MiB more.
        requests: { cpu: '50m', memory: '96Mi' },
        limits: { cpu: '500m', memory: '256Mi' }
      })
    })

    const probes: Array<[string, 'readinessProbe' | 'livenessProbe' | 'startupProbe', string]> = [
      ['apicast', 'readinessProbe', 'httpGet /status/ready :8090'],
      ['apicast', 'livenessProbe', 'httpGet /status/live :8090'],
      // The admin listener serves the probes; the forwarding listeners stay on loopback.
      ['sidecar', 'readinessProbe', 'httpGet /readyz?once :9092'],
      ['sidecar', 'livenessProbe', 'httpGet /healthz :9092'],
      ['sidecar', 'startupProbe', 'httpGet /healthz :9092']
    ]
    for (const [name, probe, want] of probes) {
      it(`${name} ${probe}: ${want}`, () => {
        const c = container(load(), name)
        assert.equal(probeTarget(c, c[probe]), want)
      })
    }

    it('every container has readiness and liveness probes', () => {
      for (const c of containers(load())) {
        assert.ok(c.readinessProbe !== undefined, `${c.name}: no readinessProbe`)
        assert.ok(c.livenessProbe !== undefined, `${c.name}: no livenessProbe`)
      }
    })

    it('apicast calls the sidecar on loopback, which listens there on named ports', () => {
      const d = load()
      const apicast = container(d, 'apicast')
      const sidecar = container(d, 'sidecar')
      assert.equal(env(apicast, 'THREESCALE_PORTAL_ENDPOINT'), 'http://127.0.0.1:9090')
      assert.equal(env(apicast, 'BACKEND_ENDPOINT_OVERRIDE'), 'http://127.0.0.1:9091')
      assert.equal(env(sidecar, 'LISTEN_ADDRESS'), '127.0.0.1')
      // Only the admin listener (no forwarding) is on the pod IP, for probes and Prometheus.
      assert.equal(env(sidecar, 'ADMIN_LISTEN_ADDRESS'), '0.0.0.0')
      assert.deepEqual(sidecar.ports?.map((p) => [p.name, p.containerPort]), [['portal', 9090], ['backend', 9091], ['admin', 9092]])
      assert.deepEqual(apicast.ports?.map((p) => [p.name, p.containerPort]), [['gateway', 8080], ['management', 8090]])
    })

    const sidecarEnv: Array<[string, string]> = [
      ['THREESCALE_PORTAL_ENDPOINT', 'https://acme-admin.3scale.net'],
      ['BACKEND_ENDPOINT_OVERRIDE', 'https://su1.3scale.net'],
      ['ACCESS_TOKEN_FILE', `${SECRET_DIR}/access-token`],
      ['HTTPS_PROXY_FILE', `${SECRET_DIR}/https-proxy`],
      ['NO_PROXY', '.svc,.cluster.local'],
      ['CA_BUNDLE', CA_DIR],
      ['ACCESS_TOKEN_LOCATION', 'query'],
      ['LOG_LEVEL', 'info']
    ]
    for (const [name, value] of sidecarEnv) {
      it(`sidecar env ${name}=${value}`, () => {
        assert.equal(setting(name), value)
      })
    }

    const apicastEnv: Array<[string, string]> = [
      ['THREESCALE_DEPLOYMENT_ENV', 'production'],
      ['APICAST_CONFIGURATION_LOADER', 'lazy']
    ]
    for (const [name, value] of apicastEnv) {
      it(`apicast env ${name}=${value}`, () => {
        assert.equal(env(container(load(), 'apicast'), name), value)
      })
    }

    it('the Secret is mounted read-only and its keys are the files the sidecar reads', () => {
      const d = load()
      const sidecar = container(d, 'sidecar')
      const mount = sidecar.volumeMounts?.find((m) => m.mountPath === SECRET_DIR)
      assert.ok(mount !== undefined, `nothing mounted at ${SECRET_DIR}`)
      assert.equal(mount.readOnly, true)
      const secret = d.spec?.template.spec?.volumes?.find((v) => v.name === mount.name)?.secret
      assert.ok(secret !== undefined, `${SECRET_DIR} is not a Secret volume`)
      assert.equal(secret.optional, undefined, 'the Secret is not optional')
      const files = (secret.items ?? []).map((i) => [i.key, `${SECRET_DIR}/${i.path}`])
      assert.deepEqual(files, [
        ['access-token', env(sidecar, 'ACCESS_TOKEN_FILE')],
        ['https-proxy', env(sidecar, 'HTTPS_PROXY_FILE')]
      ])
      // no other container sees the Secret
      for (const c of containers(d).filter((c) => c.name !== 'sidecar')) {
        assert.equal(c.volumeMounts?.some((m) => m.name === mount.name) ?? false, false, `${c.name} mounts the Secret`)
      }
    })

    it('the proxy CA ConfigMap is mounted read-only at CA_BUNDLE and optional', () => {
      const d = load()
      const sidecar = container(d, 'sidecar')
      const mount = sidecar.volumeMounts?.find((m) => m.mountPath === env(sidecar, 'CA_BUNDLE'))
      assert.ok(mount !== undefined, 'nothing mounted at CA_BUNDLE')
      assert.equal(mount.readOnly, true)
      const cm = d.spec?.template.spec?.volumes?.find((v) => v.name === mount.name)?.configMap
      assert.ok(cm !== undefined, 'CA_BUNDLE is not a ConfigMap volume')
      assert.equal(cm.optional, true)
      assert.deepEqual(cm.items?.map((i) => i.key), ['proxy-ca.pem'])
    })

    it('no secret is passed as an env var', () => {
      for (const c of containers(load())) {
        for (const e of c.env ?? []) {
          assert.ok(!/^(ACCESS_TOKEN|HTTPS?_PROXY|ALL_PROXY|PROXY_PASSWORD)$/i.test(e.name), `${c.name}: ${e.name} must come from a file`)
          assert.equal(e.valueFrom?.secretKeyRef, undefined, `${c.name}: ${e.name} reads a Secret into the environment`)
        }
        assert.equal(c.envFrom, undefined, `${c.name}: envFrom`)
      }
    })

    it('terminationGracePeriodSeconds is 30 and replicas 2', () => {
      const d = load()
      assert.equal(d.spec?.template.spec?.terminationGracePeriodSeconds, 30)
      assert.equal(d.spec?.replicas, 2)
    })
  })
}

describe('policy (Service)', () => {
  const services: Array<[string, () => JsonObject[]]> = [
    ['Template', processed],
    ['kustomize base', () => kustomizeObjects().map((o) => o.obj)]
  ]
  for (const [source, objects] of services) {
    it(`${source}: exposes APIcast's gateway port only, on the Deployment's pods`, () => {
      const service = only(objects(), 'Service') as unknown as IService
      const deployment = only(objects(), 'Deployment') as unknown as IDeployment
      const apicast = container(deployment, 'apicast')
      const targets = (service.spec?.ports ?? []).map((p) => typeof p.targetPort === 'string'
        ? apicast.ports?.find((q) => q.name === p.targetPort)?.containerPort
        : p.targetPort ?? p.port)
      assert.deepEqual(service.spec?.ports?.map((p) => p.port), [8080])
      assert.deepEqual(targets, [8080])
      const podLabels = deployment.spec?.template.metadata?.labels ?? {}
      for (const [k, v] of Object.entries(service.spec?.selector ?? {})) assert.equal(podLabels[k], v, `selector ${k}`)
    })
  }
})

describe('policy (Template): no credential written in the Template', () => {
  it('no env value and no parameter default looks like a token or password', () => {
    const t = template()
    const texts: Array<{ where: string, text: string }> = [
      ...t.parameters.map((p) => ({ where: `parameter ${p.name}`, text: p.value ?? '' })),
      ...t.objects.flatMap((o) => {
        const d = o as unknown as IDeployment
        return (d.spec?.template?.spec?.containers ?? []).flatMap((c) => (c.env ?? []).map((e) => ({ where: `${c.name} env ${e.name}`, text: e.value ?? '' })))
      })
    ]
    const found = texts.flatMap(({ where, text }) => CREDENTIAL_LIKE.filter(([, re]) => re.test(text)).map(([what]) => `${where}: ${what}`))
    assert.deepEqual(found, [])
  })

  it('the Template holds no Secret object and no string that looks like a credential', () => {
    assert.equal(template().objects.some((o) => o.kind === 'Secret'), false)
    const all: Json = [...template().objects]
    const found = [...strings(all)].filter(({ text }) => CREDENTIAL_LIKE.some(([, re]) => re.test(text))).map(({ path }) => path)
    assert.deepEqual(found, [])
  })

  it('the heuristics do catch credentials', () => {
    for (const text of ['https://0123456789abcdef@acme-admin.3scale.net', 'http://user:pw@proxy:3128', 'password=hunter2', 'a'.repeat(64)]) {
      assert.ok(CREDENTIAL_LIKE.some(([, re]) => re.test(text)), text)
    }
    for (const text of ['https://acme-admin.3scale.net', '/var/run/secrets/apicast-sidecar/access-token', '.svc,.cluster.local']) {
      assert.ok(!CREDENTIAL_LIKE.some(([, re]) => re.test(text)), text)
    }
  })
})

describe('every image the manifests name is real and supported', () => {
  // The sidecar is published on no registry: a default such as
  // quay.io/apicast-sidecar-proxy/...:0.1.0 was an ImagePullBackOff for every
  // new user. Bases name it for an overlay to replace; examples name the
  // cluster's registry; the template requires it; Podman builds it locally.
  const files = (dir: string): string[] => readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => /\.ya?ml$/.test(f)).map((f) => join(dir, f))
  const manifests = [...files(openshiftPath()), ...files(join(REPO_ROOT, 'deploy'))]
  const LOCAL_SIDECAR = /^localhost\/apicast-sidecar-proxy:\d+\.\d+\.\d+$/

  const allowed = (file: string, image: string): boolean => {
    const rel = relative(REPO_ROOT, file)
    if (image === APICAST_IMAGE) return true
    if (image === SIDECAR_IMAGE_PLACEHOLDER) return /\/base\//.test(rel)
    if (image === '${APICAST_IMAGE}' || image === '${SIDECAR_IMAGE}') return rel === join('openshift', 'template.yaml')
    if (LOCAL_SIDECAR.test(image)) return rel.startsWith(join('deploy', 'podman'))
    return false
  }

  it('the manifests were found', () => assert.ok(manifests.length >= 10, manifests.join(', ')))

  it('every image: is APIcast\'s supported image or the sidecar as it is built, where it is built', () => {
    const bad: string[] = []
    for (const file of manifests) {
      for (const doc of readYamlDocuments(file)) {
        const walk = (v: Json, key: string): void => {
          if (key === 'image' && typeof v === 'string' && !allowed(file, v)) bad.push(`${relative(REPO_ROOT, file)}: ${v}`)
          if (Array.isArray(v)) v.forEach((x) => walk(x, ''))
          else if (isObject(v)) for (const [k, x] of Object.entries(v)) walk(x, k)
        }
        walk(doc, '')
      }
    }
    assert.deepEqual(bad, [])
  })

  it('every kustomize images: entry points the sidecar at the cluster\'s registry, pinned', () => {
    const bad: string[] = []
    for (const file of manifests.filter((f) => f.endsWith('kustomization.yaml'))) {
      for (const rule of parseKustomization(readYamlDocument(file)).images) {
        const image = applyImages(rule.name, [rule])
        if (rule.name !== SIDECAR_IMAGE_PLACEHOLDER || !SIDECAR_IMAGE_IN_CLUSTER.test(image)) bad.push(`${relative(REPO_ROOT, file)}: ${rule.name} → ${image}`)
      }
    }
    assert.deepEqual(bad, [])
  })

  it('nothing names the unpublished quay.io image any more', () => {
    for (const file of [...manifests, join(REPO_ROOT, 'README.md')]) {
      assert.ok(!readFileSync(file, 'utf8').includes('quay.io/apicast-sidecar-proxy'), relative(REPO_ROOT, file))
    }
  })
})
