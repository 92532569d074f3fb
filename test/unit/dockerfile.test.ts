import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { type Arg, DockerfileParser, type Instruction, type Label } from 'dockerfile-ast'
import { validate } from 'dockerfile-utils'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const TEXT = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')
const PACKAGE = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string, license: string }
const dockerfile = DockerfileParser.parse(TEXT)
const instructions = dockerfile.getInstructions()

/** The instructions of each stage, its FROM first. */
const stages: Instruction[][] = []
for (const instruction of instructions) {
  if (instruction.getKeyword() === 'FROM') stages.push([])
  stages.at(-1)?.push(instruction)
}
const finalStage = stages.at(-1) ?? []
const args = (keyword: string): string[] => finalStage.filter((i) => i.getKeyword() === keyword).map((i) => i.getArgumentsContent() ?? '')

/** The final stage's ARG defaults, as a build without --build-arg sees them. */
const defaults = new Map(finalStage.filter((i): i is Arg => i.getKeyword() === 'ARG')
  .map((a) => [a.getProperty()?.getName() ?? '', a.getProperty()?.getValue() ?? '']))
const expand = (value: string): string => value.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, braced?: string, bare?: string) => defaults.get(braced ?? bare ?? '') ?? '')
/** The final stage's labels: as written, and with the ARG defaults expanded. */
const written = new Map(finalStage.filter((i): i is Label => i.getKeyword() === 'LABEL')
  .flatMap((l) => l.getProperties()).map((p) => [p.getName(), p.getValue() ?? '']))
const labels = new Map([...written].map(([name, value]) => [name, expand(value)]))

// Red Hat's certification (openshift-preflight, HasNoProhibitedLabels) refuses
// these three labels when they contain "Red Hat" in any spelling.
const RED_HAT = /red[^a-z0-9]*hat/i
const CERTIFICATION_LABELS = ['name', 'vendor', 'version', 'release', 'summary', 'description', 'maintainer']
const PACKAGE_MANAGERS = /\b(apt-get|apt|dpkg|dnf|microdnf|yum|rpm|apk)\b/

describe('Dockerfile', () => {
  it('has no lint findings (dockerfile-utils)', () => {
    const findings = validate(TEXT).map((d) => `line ${d.range.start.line + 1}: ${typeof d.message === 'string' ? d.message : d.message.value}`)
    assert.deepEqual(findings, [])
  })

  it('is a multi-stage build whose base is an ARG defaulting to UBI\'s Node.js 24 minimal image, with a version tag', () => {
    const froms = dockerfile.getFROMs()
    assert.ok(froms.length >= 2)
    for (const from of froms) assert.equal(from.getImage(), '${BASE_IMAGE}')
    const base = dockerfile.getARGs().find((a) => a.getProperty()?.getName() === 'BASE_IMAGE')?.getProperty()?.getValue() ?? ''
    assert.match(base, /^registry\.access\.redhat\.com\/ubi\d+\/nodejs-24-minimal:\d[\w.-]*(@sha256:[0-9a-f]{64})?$/, `got BASE_IMAGE=${base}`)
  })

  it('runs every RUN as root set in its own stage, never as the base\'s default user (UBI\'s is 1001)', () => {
    for (const stage of stages) {
      let user: string | undefined
      for (const instruction of stage) {
        if (instruction.getKeyword() === 'USER') user = instruction.getArgumentsContent() ?? ''
        if (instruction.getKeyword() !== 'RUN') continue
        const line = instruction.getRange().start.line + 1
        assert.match(user ?? '(inherited from the base)', /^(0|root)(:0|:root)?$/, `line ${line}: RUN as ${user ?? 'the base\'s user'}; want USER 0 before it`)
      }
    }
  })

  it('uses a package manager only for Negotiate (the addon\'s build, the GSSAPI library), and only the base\'s own: microdnf on UBI, apt-get on Debian', () => {
    const runs = instructions.filter((i) => i.getKeyword() === 'RUN').map((i) => i.getArgumentsContent() ?? '')
    const installing = runs.filter((run) => PACKAGE_MANAGERS.test(run))
    assert.equal(installing.length, 2, 'the build stage\'s compiler and headers, the runtime\'s GSSAPI library')
    for (const run of installing) {
      assert.match(run, /^if command -v microdnf >\/dev\/null 2>&1; then .* elif command -v apt-get >\/dev\/null 2>&1; then .* fi$/s, 'each is guarded by the base\'s own package manager')
      assert.match(run, /krb5/)
    }
  })

  const policy: Array<[string, () => void]> = [
    ['runs as a non-root user in group 0 (OpenShift arbitrary UIDs)', () => {
      const user = args('USER').at(-1) ?? ''
      assert.match(user, /^\d+:0$/)
      assert.notEqual(user.split(':')[0], '0')
    }],
    ['listens on every interface inside the container', () => assert.match(args('ENV').join(' '), /LISTEN_ADDRESS=0\.0\.0\.0/)],
    ['exposes the portal, backend and admin listeners', () => assert.deepEqual(args('EXPOSE').join(' ').split(/\s+/).sort(), ['9090', '9091', '9092'])],
    ['checks its health on the admin listener', () => assert.match(args('HEALTHCHECK').at(-1) ?? '', /\/healthz/)],
    ['starts node directly as PID 1 (exec form), stopping on SIGTERM', () => {
      assert.match(args('ENTRYPOINT').at(-1) ?? '', /^\["node",/)
      assert.equal(args('STOPSIGNAL').at(-1), 'SIGTERM')
    }],
    ['carries the labels Red Hat\'s certification requires, none of them empty', () => {
      const missing = [...CERTIFICATION_LABELS, 'io.k8s.display-name', 'io.k8s.description'].filter((name) => (labels.get(name) ?? '') === '')
      assert.deepEqual(missing, [])
    }],
    ['names no Red Hat in name, vendor or maintainer (the base\'s would be inherited otherwise)', () => {
      for (const name of ['name', 'vendor', 'maintainer']) assert.doesNotMatch(labels.get(name) ?? '', RED_HAT, `${name}=${labels.get(name) ?? ''}`)
    }],
    ['replaces the labels that describe UBI\'s S2I builder, not this image', () => {
      assert.equal(labels.get('io.openshift.expose-services'), '9090:http,9091:http,9092:http')
      assert.doesNotMatch(labels.get('io.openshift.tags') ?? '', /builder|nodejs/)
      assert.equal(labels.get('io.openshift.s2i.scripts-url'), '')
      assert.equal(labels.get('io.s2i.scripts-url'), '')
    }],
    ['carries OCI labels', () => {
      for (const key of ['title', 'description', 'version', 'licenses', 'source']) assert.ok(written.has(`org.opencontainers.image.${key}`), key)
    }],
    ['labels the version of package.json and its licence', () => {
      assert.equal(labels.get('version'), PACKAGE.version)
      assert.equal(labels.get('org.opencontainers.image.version'), PACKAGE.version)
      assert.equal(labels.get('org.opencontainers.image.licenses'), PACKAGE.license)
    }],
    ['names as source only what SOURCE_URL says: empty unless given, never 3scale\'s repository', () => {
      assert.equal(written.get('org.opencontainers.image.source'), '${SOURCE_URL}')
      assert.equal(defaults.get('SOURCE_URL'), '')
      assert.doesNotMatch(TEXT, /github\.com\/3scale/)
    }],
    ['ships the licence in /licenses', () => assert.match(TEXT, /^COPY LICENSE \/licenses\/LICENSE$/m)],
    ['bakes in no secret', () => assert.doesNotMatch(TEXT, /(_proxy|PROXY|TOKEN|PASSWORD|_KEY)=/)],
    ['ships the one-file bundle, the PAC engine beside it, its licences and, of node_modules, only the kerberos addon (so no dev dependencies)', () => {
      const copies = args('COPY')
      // dockerfile-ast leaves flags out of the arguments: the bundle's COPY is --from=build.
      // The PAC engine is a bundle of its own, loaded only with PROXY_PAC_URL.
      // The one node_modules entry is Negotiate's native addon, which cannot be bundled (dist/addon: node_modules/kerberos).
      assert.deepEqual(copies, ['/src/dist/bundle/apicast-sidecar-proxy.cjs ./apicast-sidecar-proxy.cjs', '/src/dist/bundle/pac-engine.cjs /src/dist/bundle/quickjs.wasm /src/dist/bundle/doctor.cjs /src/dist/bundle/demo.cjs ./', '/src/dist/addon/ ./', 'LICENSE /licenses/LICENSE',
        '/src/dist/bundle/THIRD-PARTY-LICENSES.txt /licenses/THIRD-PARTY-LICENSES.txt'])
      assert.match(TEXT, /^COPY --from=build \/src\/dist\/bundle\/apicast-sidecar-proxy\.cjs /m)
      assert.match(args('ENTRYPOINT').at(-1) ?? '', /apicast-sidecar-proxy\.cjs/)
    }]
  ]
  for (const [name, check] of policy) it(name, check)

  it('has the Apache License 2.0 at the root, as package.json says', () => {
    assert.equal(PACKAGE.license, 'Apache-2.0')
    const license = readFileSync(join(ROOT, 'LICENSE'), 'utf8')
    assert.match(license, /^\s*Apache License\s+Version 2\.0, January 2004\s+http:\/\/www\.apache\.org\/licenses\/\s+TERMS AND CONDITIONS/)
    assert.match(license, /END OF TERMS AND CONDITIONS/)
  })

  it('has a .dockerignore that keeps the context to what the build needs', () => {
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    assert.match(ignore, /^\*$/m)
    for (const path of ['package.json', 'package-lock.json', 'src/', 'LICENSE']) assert.match(ignore, new RegExp(`^!${path.replace('.', '\\.')}$`, 'm'))
  })
})
