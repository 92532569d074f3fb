/**
 * Offline checks of the manifests under openshift/: YAML parsing, OpenShift
 * Template parameters, Kubernetes schema validation with kubernetes-models,
 * and a strict unknown-field check (the schemas themselves accept any extra
 * field, so a typo such as `imagee:` would otherwise pass).
 */
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Deployment, type IDeployment } from 'kubernetes-models/apps/v1'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1'
import { ConfigMap, Pod, Secret, Service, type IContainer, type IProbe } from 'kubernetes-models/v1'
import { Ajv } from 'ajv'
import { parseAllDocuments } from 'yaml'

/** The repository root, from dist/test/helpers (or test/helpers). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')

export const openshiftPath = (...parts: string[]): string => join(REPO_ROOT, 'openshift', ...parts)

export type Json = string | number | boolean | null | Json[] | { [key: string]: Json }
export type JsonObject = { [key: string]: Json }

export const isObject = (v: unknown): v is JsonObject =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

/**
 * Every YAML document of a file, as plain data. Throws on any parse error or
 * warning. YAML 1.1, as kubectl and oc read it (sigs.k8s.io/yaml): an
 * unquoted `on` is a boolean and `0440` is octal there too.
 */
export function readYamlDocuments (path: string): Json[] {
  const text = readFileSync(path, 'utf8')
  const docs = parseAllDocuments(text, { version: '1.1', prettyErrors: true, uniqueKeys: true })
  if (!Array.isArray(docs)) return [] // an empty stream
  const problems = docs.flatMap((d) => [...d.errors, ...d.warnings].map((e) => e.message))
  if (problems.length > 0) throw new Error(`${path}: YAML problems:\n${problems.join('\n')}`)
  return docs.map((d) => d.toJS() as Json).filter((d) => d !== null)
}

export function readYamlDocument (path: string): Json {
  const docs = readYamlDocuments(path)
  if (docs.length !== 1) throw new Error(`${path}: expected one YAML document, found ${docs.length}`)
  return docs[0] as Json
}

// ---------------------------------------------------------------------------
// OpenShift Template

const TEMPLATE_KEYS = new Set(['apiVersion', 'kind', 'metadata', 'parameters', 'objects', 'labels', 'message'])
const PARAMETER_KEYS = new Set(['name', 'displayName', 'description', 'value', 'required', 'generate', 'from'])
const PARAMETER_NAME = /^[A-Z][A-Z0-9_]*$/

export interface TemplateParameter {
  readonly name: string
  readonly value: string | undefined
  readonly required: boolean
  readonly description: string | undefined
}

export interface Template {
  readonly name: string
  readonly parameters: readonly TemplateParameter[]
  readonly objects: readonly JsonObject[]
}

/**
 * Check a template.openshift.io/v1 Template's envelope against a small strict
 * schema, and return it typed; throws listing every problem.
 */
export function parseTemplate (doc: Json): Template {
  const problems: string[] = []
  if (!isObject(doc)) throw new Error('the Template is not a mapping')
  for (const key of Object.keys(doc)) {
    if (!TEMPLATE_KEYS.has(key)) problems.push(`unknown Template field ${key}`)
  }
  if (doc.apiVersion !== 'template.openshift.io/v1') problems.push(`apiVersion is ${JSON.stringify(doc.apiVersion)}, not template.openshift.io/v1`)
  if (doc.kind !== 'Template') problems.push(`kind is ${JSON.stringify(doc.kind)}, not Template`)
  const metadata = doc.metadata
  if (!isObject(metadata) || typeof metadata.name !== 'string' || metadata.name === '') problems.push('metadata.name is missing')
  if (doc.message !== undefined && typeof doc.message !== 'string') problems.push('message is not a string')
  if (doc.labels !== undefined && !(isObject(doc.labels) && Object.values(doc.labels).every((v) => typeof v === 'string'))) {
    problems.push('labels is not a map of strings')
  }

  const parameters: TemplateParameter[] = []
  if (!Array.isArray(doc.parameters)) {
    problems.push('parameters is not a list')
  } else {
    doc.parameters.forEach((p, i) => {
      if (!isObject(p)) {
        problems.push(`parameters[${i}] is not a mapping`)
        return
      }
      for (const key of Object.keys(p)) {
        if (!PARAMETER_KEYS.has(key)) problems.push(`parameters[${i}]: unknown field ${key}`)
      }
      if (typeof p.name !== 'string' || !PARAMETER_NAME.test(p.name)) {
        problems.push(`parameters[${i}]: name ${JSON.stringify(p.name)} is not UPPER_SNAKE_CASE`)
        return
      }
      for (const key of ['displayName', 'description', 'value', 'generate', 'from'] as const) {
        if (p[key] !== undefined && typeof p[key] !== 'string') problems.push(`${p.name}: ${key} is not a string`)
      }
      if (p.required !== undefined && typeof p.required !== 'boolean') problems.push(`${p.name}: required is not a boolean`)
      if (parameters.some((q) => q.name === p.name)) problems.push(`${p.name} is declared twice`)
      parameters.push({
        name: p.name,
        value: typeof p.value === 'string' ? p.value : undefined,
        required: p.required === true,
        description: typeof p.description === 'string' ? p.description : undefined
      })
    })
  }

  const objects: JsonObject[] = []
  if (!Array.isArray(doc.objects) || doc.objects.length === 0) {
    problems.push('objects is not a non-empty list')
  } else {
    doc.objects.forEach((o, i) => {
      if (isObject(o)) objects.push(o)
      else problems.push(`objects[${i}] is not a mapping`)
    })
  }

  if (problems.length > 0) throw new Error(`invalid Template:\n${problems.join('\n')}`)
  return { name: (metadata as JsonObject).name as string, parameters, objects }
}

/** `${NAME}` (string substitution) or `${{NAME}}` (the whole value, as JSON). */
const PARAMETER_REF = /\$\{\{([^{}]*)\}\}|\$\{([^{}]*)\}/g

/** Every string in a value, keys included, with its path. */
export function * strings (value: Json, path = ''): Generator<{ path: string, text: string }> {
  if (typeof value === 'string') {
    yield { path, text: value }
  } else if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) yield * strings(v, `${path}[${i}]`)
  } else if (isObject(value)) {
    for (const [k, v] of Object.entries(value)) {
      yield { path: `${path}.${k} (key)`, text: k }
      yield * strings(v, `${path}.${k}`)
    }
  }
}

/** The names of every parameter reference in a value. */
export function parameterReferences (value: Json): Array<{ path: string, name: string }> {
  const refs: Array<{ path: string, name: string }> = []
  for (const { path, text } of strings(value)) {
    for (const m of text.matchAll(PARAMETER_REF)) refs.push({ path, name: m[1] ?? m[2] ?? '' })
  }
  return refs
}

/**
 * Process a Template's objects as `oc process` does: `${NAME}` is replaced in
 * strings; a value that is exactly `${{NAME}}` becomes the parameter's value
 * parsed as JSON (REPLICAS: "2" → 2).
 */
export function processTemplate (template: Template, values: Readonly<Record<string, string>>): JsonObject[] {
  const lookup = (name: string): string => {
    const v = values[name] ?? template.parameters.find((p) => p.name === name)?.value
    if (v === undefined) throw new Error(`no value for the template parameter ${name}`)
    return v
  }
  const substitute = (value: Json): Json => {
    if (typeof value === 'string') {
      const whole = /^\$\{\{([^{}]*)\}\}$/.exec(value)
      if (whole !== null) return JSON.parse(lookup(whole[1] ?? '')) as Json
      return value.replace(PARAMETER_REF, (_m, nonString: string | undefined, name: string | undefined) => {
        if (nonString !== undefined) throw new Error(`\${{${nonString}}} must be a whole value`)
        return lookup(name ?? '')
      })
    }
    if (Array.isArray(value)) return value.map(substitute)
    if (isObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [substitute(k) as string, substitute(v)]))
    return value
  }
  return template.objects.map((o) => substitute(o) as JsonObject)
}

// ---------------------------------------------------------------------------
// Kubernetes schemas (kubernetes-models)

interface Validatable { validate (): void }

/** The kubernetes-models classes for the kinds the manifests use. */
const MODELS: Readonly<Record<string, (data: JsonObject) => Validatable>> = {
  'apps/v1/Deployment': (d) => new Deployment(d),
  'v1/Service': (d) => new Service(d),
  'v1/Secret': (d) => new Secret(d),
  'v1/ConfigMap': (d) => new ConfigMap(d),
  'v1/Pod': (d) => new Pod(d),
  'policy/v1/PodDisruptionBudget': (d) => new PodDisruptionBudget(d),
  'networking.k8s.io/v1/NetworkPolicy': (d) => new NetworkPolicy(d)
}

export const SUPPORTED_KINDS = Object.keys(MODELS)

const kindKey = (obj: JsonObject): string => `${String(obj.apiVersion)}/${String(obj.kind)}`

interface SchemaError { readonly instancePath: string, readonly message?: string }

const isSchemaErrors = (v: unknown): v is SchemaError[] =>
  Array.isArray(v) && v.every((e) => isObject(e) && typeof e.instancePath === 'string')

/** Run kubernetes-models' validator; the ajv errors, none when valid. */
function schemaErrors (obj: JsonObject | Record<string, unknown>): SchemaError[] {
  const model = MODELS[kindKey(obj as JsonObject)]
  if (model === undefined) {
    return [{ instancePath: '', message: `${kindKey(obj as JsonObject)} is not one of the kinds this test knows: ${SUPPORTED_KINDS.join(', ')}` }]
  }
  try {
    model(obj as JsonObject).validate()
    return []
  } catch (err) {
    const errors = isObject(err) || err instanceof Error ? (err as { errors?: unknown }).errors : undefined
    if (isSchemaErrors(errors)) return errors
    throw err
  }
}

/** kubernetes-models validation: `instancePath message` for each error. */
export function validateObject (obj: JsonObject): string[] {
  return schemaErrors(obj).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`)
}

const pointer = (path: ReadonlyArray<string | number>): string =>
  path.map((p) => '/' + String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('')

/** A value no schema type accepts: not a string, number, boolean, object, array or null. */
const PROBE = Symbol('unknown-field probe')

function setAt (root: Record<string, unknown>, path: ReadonlyArray<string | number>, value: unknown): void {
  let node: unknown = root
  for (const step of path.slice(0, -1)) node = (node as Record<string | number, unknown>)[step]
  ;(node as Record<string | number, unknown>)[path[path.length - 1] as string | number] = value
}

/**
 * Every field of `obj` that kubernetes-models' schema does not declare, as a
 * JSON pointer (`/spec/template/spec/containers/1/imagee`).
 *
 * kubernetes-models ships its JSON schemas only compiled (ajv standalone
 * code, no schema data and no `additionalProperties: false`), so the compiled
 * validator is asked instead: each field in turn is replaced by a value of no
 * JSON type. A field the schema declares — or that a map such as `labels` or
 * `resources.limits` accepts as an additional property — then fails type
 * validation at exactly that path; an undeclared field is never looked at, so
 * no error names it. Children of an undeclared field are not reported again.
 */
export function unknownFields (obj: JsonObject): string[] {
  if (MODELS[kindKey(obj)] === undefined) return [`${kindKey(obj)}: no schema`]
  const baseline = new Set(schemaErrors(obj).map((e) => e.instancePath))
  const unknown: string[] = []
  const declared = (path: ReadonlyArray<string | number>): boolean => {
    const probe = structuredClone(obj) as Record<string, unknown>
    setAt(probe, path, PROBE)
    const at = pointer(path)
    return schemaErrors(probe).some((e) => !baseline.has(e.instancePath) && (e.instancePath === at || e.instancePath.startsWith(at + '/')))
  }
  const walk = (value: Json, path: Array<string | number>): void => {
    if (Array.isArray(value)) {
      value.forEach((v, i) => walk(v, [...path, i]))
    } else if (isObject(value)) {
      for (const [key, v] of Object.entries(value)) {
        const child = [...path, key]
        // apiVersion and kind are checked by the validator's enums already
        if (path.length === 0 && (key === 'apiVersion' || key === 'kind')) continue
        if (declared(child)) walk(v, child)
        else unknown.push(pointer(child))
      }
    }
  }
  walk(obj, [])
  return unknown
}

// ---------------------------------------------------------------------------
// Kustomize

const KUSTOMIZATION_KEYS = new Set(['apiVersion', 'kind', 'resources', 'images', 'labels', 'commonLabels', 'commonAnnotations', 'namespace', 'namePrefix', 'nameSuffix', 'patches', 'configMapGenerator', 'secretGenerator', 'generatorOptions', 'replicas', 'components'])
const LIST_KEYS = ['resources', 'components', 'patches', 'configMapGenerator', 'secretGenerator'] as const
const IMAGE_KEYS = new Set(['name', 'newName', 'newTag', 'digest'])

export interface KustomizeImage { readonly name: string, readonly newName?: string, readonly newTag?: string, readonly digest?: string }

export interface Kustomization {
  readonly kind: 'Kustomization' | 'Component'
  readonly resources: readonly string[]
  readonly components: readonly string[]
  readonly images: readonly KustomizeImage[]
  readonly secretGenerator: readonly JsonObject[]
  readonly configMapGenerator: readonly JsonObject[]
}

/**
 * A kustomization.yaml (a Kustomization, or a Component: kustomize's reusable
 * piece of an overlay) checked against a small strict schema.
 */
export function parseKustomization (doc: Json): Kustomization {
  const problems: string[] = []
  if (!isObject(doc)) throw new Error('kustomization.yaml is not a mapping')
  for (const key of Object.keys(doc)) {
    if (!KUSTOMIZATION_KEYS.has(key)) problems.push(`unknown kustomization field ${key}`)
  }
  const kind = doc.kind
  if (kind === 'Component') {
    if (doc.apiVersion !== 'kustomize.config.k8s.io/v1alpha1') problems.push('a Component\'s apiVersion is not kustomize.config.k8s.io/v1alpha1')
  } else if (kind === 'Kustomization') {
    if (doc.apiVersion !== 'kustomize.config.k8s.io/v1beta1') problems.push('apiVersion is not kustomize.config.k8s.io/v1beta1')
  } else {
    problems.push('kind is neither Kustomization nor Component')
  }
  for (const key of LIST_KEYS) {
    if (doc[key] !== undefined && !Array.isArray(doc[key])) problems.push(`${key} is not a list`)
  }
  const resources = doc.resources ?? []
  const components = doc.components ?? []
  for (const [key, list] of [['resources', resources], ['components', components]] as const) {
    if (Array.isArray(list) && !list.every((r) => typeof r === 'string')) problems.push(`${key} is not a list of paths`)
  }
  if (kind === 'Kustomization' && Array.isArray(resources) && resources.length === 0) problems.push('resources is empty')
  const generators = (key: 'secretGenerator' | 'configMapGenerator'): JsonObject[] => {
    const list = doc[key] ?? []
    if (!Array.isArray(list)) return []
    if (!list.every(isObject)) problems.push(`${key} holds something that is not a mapping`)
    return list.filter(isObject)
  }
  const secretGenerator = generators('secretGenerator')
  const configMapGenerator = generators('configMapGenerator')
  const images: KustomizeImage[] = []
  if (doc.images !== undefined) {
    if (!Array.isArray(doc.images)) {
      problems.push('images is not a list')
    } else {
      doc.images.forEach((img, i) => {
        if (!isObject(img)) return problems.push(`images[${i}] is not a mapping`)
        for (const key of Object.keys(img)) {
          if (!IMAGE_KEYS.has(key)) problems.push(`images[${i}]: unknown field ${key}`)
          else if (typeof img[key] !== 'string') problems.push(`images[${i}].${key} is not a string`)
        }
        if (typeof img.name !== 'string') return problems.push(`images[${i}] has no name`)
        images.push(img as unknown as KustomizeImage)
      })
    }
  }
  if (problems.length > 0) throw new Error(`invalid kustomization.yaml:\n${problems.join('\n')}`)
  return { kind: kind as 'Kustomization' | 'Component', resources: resources as string[], components: components as string[], images, secretGenerator, configMapGenerator }
}

/** An image reference split as registry/repository[:tag][@digest]. */
export function splitImage (ref: string): { name: string, tag: string | undefined, digest: string | undefined } {
  const [withTag = '', digest] = ref.split('@', 2)
  const slash = withTag.lastIndexOf('/')
  const colon = withTag.lastIndexOf(':')
  if (colon > slash) return { name: withTag.slice(0, colon), tag: withTag.slice(colon + 1), digest }
  return { name: withTag, tag: undefined, digest }
}

/** kustomize's `images:` transformer, on one image reference. */
export function applyImages (ref: string, images: readonly KustomizeImage[]): string {
  const { name, tag, digest } = splitImage(ref)
  const rule = images.find((i) => i.name === name)
  if (rule === undefined) return ref
  const newName = rule.newName ?? name
  if (rule.digest !== undefined) return `${newName}@${rule.digest}`
  const newTag = rule.newTag ?? tag
  return `${newName}${newTag !== undefined ? `:${newTag}` : ''}${rule.newTag === undefined && digest !== undefined ? `@${digest}` : ''}`
}

// ---------------------------------------------------------------------------
// kustomize itself (kubectl kustomize), for overlays and components

const KUBECTL = ['/usr/bin/kubectl', '/usr/local/bin/kubectl'].find((p) => existsSync(p))

/** Why the tests that render with kustomize are skipped, or false when they run. */
export const kustomizeSkip: string | false = KUBECTL === undefined
  ? 'kubectl is not installed: kubectl kustomize renders overlays and components offline'
  : false

/**
 * Render openshift/<dir> with `kubectl kustomize`, as `oc apply -k` would,
 * in a copy of openshift/ where `files` (paths relative to openshift/) are
 * written first: the files an overlay's generators read, which users keep
 * out of git, or a kustomization made for the test.
 */
export function kustomizeBuild (dir: string, files: Readonly<Record<string, string>> = {}): JsonObject[] {
  if (KUBECTL === undefined) throw new Error('kubectl is not installed')
  const root = mkdtempSync(join(tmpdir(), 'sidecar-kustomize-'))
  try {
    cpSync(openshiftPath(), join(root, 'openshift'), { recursive: true })
    for (const [path, content] of Object.entries(files)) {
      mkdirSync(dirname(join(root, 'openshift', path)), { recursive: true })
      writeFileSync(join(root, 'openshift', path), content)
    }
    const out = execFileSync(KUBECTL, ['kustomize', join(root, 'openshift', dir)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    const docs = parseAllDocuments(out)
    if (!Array.isArray(docs)) return []
    return docs.map((d) => d.toJS() as Json).filter(isObject)
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------------------
// Pods: the objects, containers, env and probes the policy tests look at

const nameOf = (obj: JsonObject): string => isObject(obj.metadata) ? String(obj.metadata.name) : '?'

/** The one object of `kind` (and `name`, when given); throws unless exactly one. */
export function only (objects: readonly JsonObject[], kind: string, name?: string): JsonObject {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || nameOf(o) === name))
  if (found.length !== 1) throw new Error(`expected one ${kind}${name !== undefined ? ` ${name}` : ''}, found ${found.length}`)
  return found[0] as JsonObject
}

/** Every container of a pod template, init containers included. */
export function allContainers (d: IDeployment): IContainer[] {
  return [...(d.spec?.template.spec?.initContainers ?? []), ...(d.spec?.template.spec?.containers ?? [])]
}

export function containerOf (d: IDeployment, name: string): IContainer {
  const c = allContainers(d).find((c) => c.name === name)
  if (c === undefined) throw new Error(`no ${name} container`)
  return c
}

/** A literal env value; throws when the variable is set twice. */
export function envOf (c: IContainer, name: string): string | undefined {
  const found = (c.env ?? []).filter((e) => e.name === name)
  if (found.length > 1) throw new Error(`${c.name}: ${name} set twice`)
  return found[0]?.value
}

/** A probe's port as a number, resolving a named port. */
function probePort (c: IContainer, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port
  return c.ports?.find((p) => p.name === port)?.containerPort
}

/** `httpGet PATH :PORT` (with the scheme when it is not HTTP), `tcpSocket :PORT`, … or `none`. */
export function probeTarget (c: IContainer, probe: IProbe | undefined): string {
  if (probe === undefined) return 'none'
  if (probe.httpGet !== undefined) {
    const scheme = probe.httpGet.scheme !== undefined && probe.httpGet.scheme !== 'HTTP' ? `${probe.httpGet.scheme} ` : ''
    return `httpGet ${scheme}${probe.httpGet.path ?? '/'} :${probePort(c, probe.httpGet.port)}`
  }
  if (probe.tcpSocket !== undefined) return `tcpSocket :${probePort(c, probe.tcpSocket.port)}`
  if (probe.exec !== undefined) return `exec ${(probe.exec.command ?? []).join(' ')}`
  if (probe.grpc !== undefined) return `grpc :${probe.grpc.port}`
  return 'no handler'
}

/** Do these labels satisfy a selector's matchLabels (and only matchLabels)? */
export function selects (selector: { matchLabels?: Record<string, string>, matchExpressions?: unknown[] } | undefined, labels: Record<string, string> | undefined): boolean {
  if (selector === undefined || (selector.matchExpressions ?? []).length > 0) return false
  const wanted = Object.entries(selector.matchLabels ?? {})
  return wanted.length > 0 && wanted.every(([k, v]) => labels?.[k] === v)
}

// ---------------------------------------------------------------------------
// Images: what the manifests may name

/** The supported APIcast image of Red Hat 3scale API Management 2.16 (registry.redhat.io, needs a pull secret). */
export const APICAST_IMAGE = 'registry.redhat.io/3scale-amp2/apicast-gateway-rhel8:3scale2.16'
/** The sidecar is not published on any registry: users build it into their cluster's registry. */
export const SIDECAR_IMAGE_IN_CLUSTER = /^image-registry\.openshift-image-registry\.svc:5000\/[a-z0-9]([-a-z0-9]*[a-z0-9])?\/apicast-sidecar-proxy:\d+\.\d+\.\d+$/
/** The name a base gives the sidecar's image, for an overlay's `images:` to replace. */
export const SIDECAR_IMAGE_PLACEHOLDER = 'apicast-sidecar-proxy'

/**
 * What keeps the sidecar's container from being hardened as the README
 * promises: non-root, read-only root, no privilege escalation, no
 * capabilities, RuntimeDefault seccomp, no fixed UID (OpenShift assigns one),
 * and cpu and memory requests and limits. Empty when it is.
 */
export function sidecarHardeningProblems (c: IContainer): string[] {
  const sc = c.securityContext
  const problems: string[] = []
  if (sc?.runAsNonRoot !== true) problems.push('runAsNonRoot is not true')
  if (sc?.readOnlyRootFilesystem !== true) problems.push('readOnlyRootFilesystem is not true')
  if (sc?.allowPrivilegeEscalation !== false) problems.push('allowPrivilegeEscalation is not false')
  if (JSON.stringify(sc?.capabilities?.drop) !== '["ALL"]') problems.push('capabilities.drop is not [ALL]')
  if (sc?.capabilities?.add !== undefined) problems.push('capabilities.add is set')
  if (sc?.seccompProfile?.type !== 'RuntimeDefault') problems.push('seccompProfile is not RuntimeDefault')
  if (sc?.privileged !== undefined) problems.push('privileged is set')
  if (sc?.runAsUser !== undefined) problems.push('runAsUser is fixed')
  for (const kind of ['requests', 'limits'] as const) {
    for (const resource of ['cpu', 'memory']) {
      if (c.resources?.[kind]?.[resource] === undefined) problems.push(`no ${kind}.${resource}`)
    }
  }
  return problems
}

// ---------------------------------------------------------------------------
// Custom resources, against their CustomResourceDefinition's openAPIV3Schema

/** /work/shared/reference, beside the work tree: the APIcast operator's CRD (source and commit in its first line). */
export const APICAST_CRD = join(REPO_ROOT, '..', 'shared', 'reference', 'apicast-operator-crd.yaml')

/**
 * The schema with `additionalProperties: false` wherever an object lists its
 * properties and neither allows more nor preserves unknown fields. The API
 * server prunes an undeclared field of a structural schema silently, so a
 * typo such as `adminPortalCredentialRef` would be dropped without an error:
 * here it fails instead.
 */
function closeObjects (schema: Json): Json {
  if (Array.isArray(schema)) return schema.map(closeObjects)
  if (!isObject(schema)) return schema
  const out: JsonObject = Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, k === 'properties' && isObject(v)
    ? Object.fromEntries(Object.entries(v).map(([name, sub]) => [name, closeObjects(sub)]))
    : closeObjects(v)]))
  if (isObject(schema.properties) && schema.additionalProperties === undefined && schema['x-kubernetes-preserve-unknown-fields'] !== true) {
    out.additionalProperties = false
  }
  return out
}

/**
 * A validator for the custom resources a CRD defines, from the served
 * version's openAPIV3Schema (ajv); it returns `instancePath message` for
 * each error, none when valid. Throws when the CRD holds no such version.
 */
export function crdValidator (crdFile: string, version: string): (obj: JsonObject) => string[] {
  const crd = readYamlDocuments(crdFile).find((d) => isObject(d) && d.kind === 'CustomResourceDefinition')
  if (!isObject(crd) || !isObject(crd.spec) || !Array.isArray(crd.spec.versions) || !isObject(crd.spec.names)) throw new Error(`${crdFile}: not a CustomResourceDefinition`)
  const served = crd.spec.versions.find((v) => isObject(v) && v.name === version)
  const schema = isObject(served) && isObject(served.schema) ? served.schema.openAPIV3Schema : undefined
  if (schema === undefined) throw new Error(`${crdFile}: no openAPIV3Schema for version ${version}`)
  const group = String(crd.spec.group)
  const kind = String(crd.spec.names.kind)
  const ajv = new Ajv({ allErrors: true, strict: false })
  // The formats Kubernetes' schemas use.
  ajv.addFormat('int32', { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 })
  ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isSafeInteger(n) })
  ajv.addFormat('date-time', (t: string) => !Number.isNaN(Date.parse(t)))
  const validate = ajv.compile(closeObjects(schema) as object)
  return (obj) => {
    const problems: string[] = []
    if (obj.apiVersion !== `${group}/${version}`) problems.push(`/apiVersion is ${JSON.stringify(obj.apiVersion)}, not ${group}/${version}`)
    if (obj.kind !== kind) problems.push(`/kind is ${JSON.stringify(obj.kind)}, not ${kind}`)
    if (!isObject(obj.metadata) || typeof obj.metadata.name !== 'string' || obj.metadata.name === '') problems.push('/metadata/name is missing')
    if (!validate(obj)) {
      for (const e of validate.errors ?? []) {
        const extra = e.keyword === 'additionalProperties' ? ` (${String((e.params as { additionalProperty?: string }).additionalProperty)})` : ''
        problems.push(`${e.instancePath || '/'} ${e.message ?? 'is invalid'}${extra}`)
      }
    }
    return problems
  }
}
