/**
 * openshift/kustomize/components/native-sidecar: the sidecar as an init
 * container with restartPolicy: Always, so the kubelet starts it (and waits
 * for its startup probe) before APIcast, which can then load its
 * configuration at boot. Rendered with kustomize, in the example overlay
 * (as its comment says to turn it on) and on top of it.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { it } from 'node:test'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import type { IDeployment } from 'kubernetes-models/apps/v1'
import {
  containerOf,
  envOf,
  kustomizeBuild,
  kustomizeSkip,
  only,
  openshiftPath,
  probeTarget,
  sidecarHardeningProblems,
  unknownFields,
  validateObject,
  type JsonObject
} from '../helpers/manifests.js'

const FILES = {
  'kustomize/example/access-token': 'sample-access-token',
  'kustomize/example/https-proxy': 'http://user:password@proxy.corp.example:3128'
}

const once = <T>(load: () => T): (() => T) => {
  let cached: { value: T } | undefined
  return () => (cached ??= { value: load() }).value
}

const plain = once(() => kustomizeBuild('kustomize/example', FILES))
const layouts: Array<[string, () => JsonObject[]]> = [
  ['in the example overlay', once(() => {
    const example = 'kustomize/example/kustomization.yaml'
    // Uncomment the two lines, as a user would.
    const text = readFileSync(openshiftPath('kustomize', 'example', 'kustomization.yaml'), 'utf8')
      .replace('# components:\n#   - ../components/native-sidecar', 'components:\n  - ../components/native-sidecar')
    assert.ok(text.includes('\ncomponents:\n  - ../components/native-sidecar'), 'the example no longer has the commented components: lines')
    return kustomizeBuild('kustomize/example', { ...FILES, [example]: text })
  })],
  ['on top of the example overlay', once(() => kustomizeBuild('kustomize/native-test', {
    ...FILES,
    'kustomize/native-test/kustomization.yaml': [
      'apiVersion: kustomize.config.k8s.io/v1beta1',
      'kind: Kustomization',
      'resources: [../example]',
      'components: [../components/native-sidecar]'
    ].join('\n')
  }))]
]

const describeObject = (obj: JsonObject): string => `${String(obj.kind)} ${String((obj.metadata as JsonObject | undefined)?.name)}`
const deployment = (objects: readonly JsonObject[]): IDeployment => only(objects, 'Deployment') as unknown as IDeployment

for (const [where, rendered] of layouts) {
  describeOrSkip(`native sidecar ${where} (kustomize)`, kustomizeSkip, () => {
    it('every object passes kubernetes-models validation and has no undeclared field', () => {
      const problems = rendered().flatMap((obj) => [...validateObject(obj), ...unknownFields(obj)].map((e) => `${describeObject(obj)}: ${e}`))
      assert.deepEqual(problems, [])
    })

    it('the sidecar is the one init container, restartPolicy Always; APIcast is the one container', () => {
      const spec = deployment(rendered()).spec?.template.spec
      assert.deepEqual(spec?.initContainers?.map((c) => [c.name, c.restartPolicy]), [['sidecar', 'Always']])
      assert.deepEqual(spec?.containers.map((c) => c.name), ['apicast'])
    })

    it('APIcast starts only once the whole path has worked: the startup probe is /readyz?once', () => {
      const sidecar = containerOf(deployment(rendered()), 'sidecar')
      assert.equal(probeTarget(sidecar, sidecar.startupProbe), 'httpGet /readyz?once :9092')
      // Up to 5 minutes before the kubelet restarts the sidecar.
      assert.equal((sidecar.startupProbe?.periodSeconds ?? 10) * (sidecar.startupProbe?.failureThreshold ?? 3), 300)
      assert.equal(probeTarget(sidecar, sidecar.readinessProbe), 'httpGet /readyz?once :9092')
      assert.equal(probeTarget(sidecar, sidecar.livenessProbe), 'httpGet /healthz :9092')
    })

    it('APIcast loads its configuration at boot, through the sidecar on loopback', () => {
      const apicast = containerOf(deployment(rendered()), 'apicast')
      assert.equal(envOf(apicast, 'APICAST_CONFIGURATION_LOADER'), 'boot')
      assert.equal(envOf(apicast, 'APICAST_CONFIGURATION_CACHE'), '300')
      assert.equal(envOf(apicast, 'THREESCALE_PORTAL_ENDPOINT'), 'http://127.0.0.1:9090')
      assert.equal(envOf(apicast, 'BACKEND_ENDPOINT_OVERRIDE'), 'http://127.0.0.1:9091')
    })

    it('the sidecar is otherwise the same container, as hardened', () => {
      const moved = structuredClone(containerOf(deployment(rendered()), 'sidecar'))
      const original = structuredClone(containerOf(deployment(plain()), 'sidecar'))
      assert.deepEqual(sidecarHardeningProblems(moved), [])
      delete moved.restartPolicy
      delete moved.startupProbe
      delete original.startupProbe
      assert.deepEqual(moved, original)
    })

    it('changes nothing else', () => {
      const strip = (objects: readonly JsonObject[]): JsonObject[] => objects.map((o) => {
        const copy = structuredClone(o) as unknown as IDeployment
        const spec = copy.spec?.template?.spec
        if (o.kind === 'Deployment' && spec !== undefined) {
          delete spec.initContainers
          spec.containers = spec.containers.filter((c) => c.name === 'apicast')
          const apicast = spec.containers[0]
          if (apicast !== undefined) apicast.env = apicast.env?.filter((e) => !e.name.startsWith('APICAST_CONFIGURATION_'))
        }
        return copy as unknown as JsonObject
      })
      assert.deepEqual(strip(rendered()), strip(plain()))
    })
  })
}
