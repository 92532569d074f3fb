/**
 * openshift/operator: APIcast made by the APIcast operator, calling 3scale
 * through the shared sidecar. The example APIcast resources are validated
 * against the operator's CRD (its openAPIV3Schema, with unknown fields
 * refused, since the API server would prune them silently).
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import type { IDeployment } from 'kubernetes-models/apps/v1'
import type { INetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import type { ISecret } from 'kubernetes-models/v1'
import {
  APICAST_CRD,
  crdValidator,
  envOf,
  isObject,
  kustomizeBuild,
  kustomizeSkip,
  only,
  openshiftPath,
  readYamlDocument,
  unknownFields,
  validateObject,
  type Json,
  type JsonObject
} from '../helpers/manifests.js'

const DIR = openshiftPath('operator')
const crdSkip = existsSync(APICAST_CRD) ? false : `${APICAST_CRD} is not there (shared/reference, beside the work tree)`

const once = <T>(load: () => T): (() => T) => {
  let cached: { value: T } | undefined
  return () => (cached ??= { value: load() }).value
}
const validate = once(() => crdValidator(APICAST_CRD, 'v1alpha1'))
const read = (file: string): JsonObject => {
  const doc = readYamlDocument(join(DIR, file))
  assert.ok(isObject(doc), `${file} is not a mapping`)
  return doc
}
const spec = (file: string): JsonObject => read(file).spec as JsonObject

describeOrSkip('the example APIcast resources against the operator\'s CRD', crdSkip, () => {
  for (const file of ['apicast.yaml', 'apicast-embedded.yaml', 'apicast-forward-proxy.yaml']) {
    it(`${file} is valid`, () => assert.deepEqual(validate()(read(file)), []))
  }

  // The validator must see what the API server would refuse or drop.
  const broken: Array<[string, (cr: JsonObject) => void, RegExp]> = [
    ['a misspelled field', (cr) => { (cr.spec as JsonObject).adminPortalCredentialRef = { name: 'x' } }, /must NOT have additional properties \(adminPortalCredentialRef\)/],
    ['a value outside an enum', (cr) => { (cr.spec as JsonObject).configurationLoadMode = 'eager' }, /\/spec\/configurationLoadMode must be equal to one of the allowed values/],
    ['a string for an integer', (cr) => { (cr.spec as JsonObject).replicas = '2' }, /\/spec\/replicas must be integer/],
    ['a misspelled nested field', (cr) => { (cr.spec as JsonObject).podDisruptionBudget = { enable: true } }, /\/spec\/podDisruptionBudget must NOT have additional properties \(enable\)/],
    ['another kind', (cr) => { cr.kind = 'APIManager' }, /\/kind/]
  ]
  for (const [what, mutate, want] of broken) {
    it(`refuses ${what}`, () => {
      const cr = structuredClone(read('apicast.yaml'))
      mutate(cr)
      assert.match(validate()(cr).join('\n'), want)
    })
  }
})

describe('the example APIcast resources', () => {
  it('apicast.yaml reads its portal URL from the Secret the kustomization makes, and loads lazily', () => {
    assert.deepEqual(spec('apicast.yaml').adminPortalCredentialsRef, { name: 'apicast-portal' })
    assert.equal(spec('apicast.yaml').configurationLoadMode, 'lazy')
    assert.equal(spec('apicast.yaml').image, undefined, 'the operator\'s own image, never one named here')
  })

  it('apicast-embedded.yaml reads its configuration from a Secret and calls no portal', () => {
    assert.deepEqual(spec('apicast-embedded.yaml').embeddedConfigurationSecretRef, { name: 'apicast-embedded-config' })
    assert.equal(spec('apicast-embedded.yaml').adminPortalCredentialsRef, undefined)
  })

  it('the backend patch names the operator\'s Deployment and container for apicast.yaml, and the sidecar\'s Service', () => {
    const patch = read('backend-endpoint-override.patch.yaml')
    const name = `apicast-${String((read('apicast.yaml').metadata as JsonObject).name)}`
    // A partial Deployment fails the schema's required fields, so check it
    // merged into the shape of the operator's Deployment.
    const operatorDeployment: JsonObject = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name },
      spec: {
        selector: { matchLabels: { deployment: name } },
        template: { metadata: { labels: { deployment: name } }, spec: { containers: [{ name, image: 'apicast' }] } }
      }
    }
    assert.deepEqual([...validateObject(mergePatch(operatorDeployment, patch)), ...unknownFields(mergePatch(operatorDeployment, patch))], [])
    const d = patch as unknown as IDeployment
    assert.equal(d.metadata?.name, name)
    const containers = d.spec?.template.spec?.containers ?? []
    assert.deepEqual(containers.map((c) => c.name), [name], 'the operator names its one container as the Deployment')
    assert.deepEqual(containers[0]?.env?.map((e) => e.name), ['BACKEND_ENDPOINT_OVERRIDE'])
    const url = new URL(envOf(containers[0] ?? { name: '' }, 'BACKEND_ENDPOINT_OVERRIDE') ?? '')
    assert.equal(url.origin, `http://apicast-sidecar-proxy.${namespace()}.svc:9091`)
  })

  const namespace = (): string => String(read('kustomization.yaml').namespace)

  it('apicast-forward-proxy.yaml sends APIcast\'s calls to the sidecar\'s forward proxy, and keeps in-cluster names off it', () => {
    const cr = spec('apicast-forward-proxy.yaml')
    const service = readYamlDocument(openshiftPath('standalone', 'base', 'service.yaml')) as JsonObject
    const forward = ((service.spec as JsonObject).ports as JsonObject[]).find((p) => p.name === 'forward')
    for (const field of ['httpsProxy', 'httpProxy']) {
      const url = new URL(String(cr[field]))
      assert.equal(url.protocol, 'http:', field)
      assert.equal(url.hostname, `${String((service.metadata as JsonObject).name)}.${namespace()}.svc`, field)
      assert.equal(Number(url.port), forward?.port, field)
      assert.equal(url.username, '', `${field}: the operator's proxy fields take no credentials`)
    }
    const noProxy = String(cr.noProxy).split(',')
    for (const name of ['localhost', '127.0.0.1', '.svc', '.cluster.local']) assert.ok(noProxy.includes(name), name)
    assert.notDeepEqual(cr.adminPortalCredentialsRef, spec('apicast.yaml').adminPortalCredentialsRef, 'its Secret holds 3scale\'s own URL, not the sidecar\'s')
  })

  it('the sidecar\'s NetworkPolicy admits the pods the operator makes', () => {
    // The operator's pod labels (3scale/apicast-operator, pkg/helper/labels.go
    // and podLabelSelector): deployment: apicast-<name> and its metering labels.
    const operatorPodLabels = { deployment: 'apicast-example', 'rht.comp': '3scale_apicast', 'rht.subcomp': 'apicast' }
    const policy = readYamlDocument(openshiftPath('standalone', 'base', 'networkpolicy.yaml')) as unknown as INetworkPolicy
    const peer = policy.spec?.ingress?.[0]?.from?.[0]?.podSelector?.matchLabels ?? {}
    assert.ok(Object.keys(peer).length > 0 && Object.entries(peer).every(([k, v]) => operatorPodLabels[k as keyof typeof operatorPodLabels] === v))
  })
})

describeOrSkip('the operator kustomization (kustomize)', kustomizeSkip, () => {
  const url = 'http://sample-token@apicast-sidecar-proxy.apicast.svc:9090'
  const rendered = once(() => kustomizeBuild('operator', { 'operator/AdminPortalURL': url }))

  it('makes the Secret the APIcast resource names, under the key the operator reads, unhashed', () => {
    const secret = only(rendered(), 'Secret') as unknown as ISecret
    assert.equal(secret.metadata?.name, 'apicast-portal')
    assert.deepEqual(Object.keys(secret.data ?? {}), ['AdminPortalURL'])
    assert.equal(Buffer.from(secret.data?.AdminPortalURL ?? '', 'base64').toString(), url)
  })

  it('the APIcast resource it renders is valid', { skip: crdSkip }, () => {
    assert.deepEqual(validate()(only(rendered(), 'APIcast')), [])
  })

  it('the sidecar\'s Service is in the namespace the URL names', () => {
    const standalone = kustomizeBuild('standalone/example', { 'standalone/example/https-proxy': 'http://u:p@proxy.corp.example:3128' })
    const service = only(standalone, 'Service')
    const meta = service.metadata as JsonObject
    assert.equal(new URL(url).hostname, `${String(meta.name)}.${String(meta.namespace)}.svc`)
    assert.equal(namespaceOf(rendered()), meta.namespace)
  })
})

function namespaceOf (objects: readonly JsonObject[]): unknown {
  const namespaces = new Set(objects.map((o) => (o.metadata as JsonObject).namespace))
  assert.equal(namespaces.size, 1)
  return [...namespaces][0]
}

/** Strategic merge, as far as this patch needs it: maps merge, lists of named items merge by name. */
function mergePatch (target: Json, patch: Json): JsonObject {
  const merge = (t: Json, p: Json): Json => {
    if (isObject(t) && isObject(p)) {
      const out: JsonObject = { ...t }
      for (const [k, v] of Object.entries(p)) out[k] = k in t ? merge(t[k] as Json, v) : v
      return out
    }
    if (Array.isArray(t) && Array.isArray(p) && [...t, ...p].every((x) => isObject(x) && typeof x.name === 'string')) {
      const out = [...t] as JsonObject[]
      for (const item of p as JsonObject[]) {
        const i = out.findIndex((x) => x.name === item.name)
        if (i >= 0) out[i] = merge(out[i] as Json, item) as JsonObject
        else out.push(item)
      }
      return out
    }
    return p
  }
  return merge(target, patch) as JsonObject
}
