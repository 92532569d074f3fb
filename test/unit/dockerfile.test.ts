import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { DockerfileParser, type Instruction } from 'dockerfile-ast'
import { validate } from 'dockerfile-utils'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const TEXT = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')
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

const PACKAGE_MANAGERS = /\b(apt-get|apt|dpkg|dnf|microdnf|yum|rpm|apk)\b/

describe('Dockerfile', () => {
  it('has no lint findings (dockerfile-utils)', () => {
    const findings = validate(TEXT).map((d) => `line ${d.range.start.line + 1}: ${d.message}`)
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

  it('needs no package manager (UBI minimal has microdnf, Debian apt)', () => {
    const runs = instructions.filter((i) => i.getKeyword() === 'RUN').map((i) => i.getArgumentsContent() ?? '')
    assert.deepEqual(runs.filter((run) => PACKAGE_MANAGERS.test(run)), [])
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
    ['carries OCI labels', () => {
      const labels = args('LABEL').join(' ')
      for (const key of ['title', 'description', 'version', 'licenses', 'source']) assert.match(labels, new RegExp(`org\\.opencontainers\\.image\\.${key}=`))
    }],
    ['bakes in no secret', () => assert.doesNotMatch(TEXT, /(_proxy|PROXY|TOKEN|PASSWORD|_KEY)=/)],
    ['ships the one-file bundle and no node_modules (so no dev dependencies)', () => {
      const copies = args('COPY')
      // dockerfile-ast leaves flags out of the arguments: the one COPY is --from=build.
      assert.deepEqual(copies, ['/src/dist/bundle/apicast-sidecar-proxy.cjs ./apicast-sidecar-proxy.cjs'])
      assert.match(TEXT, /^COPY --from=build \/src\/dist\/bundle\/apicast-sidecar-proxy\.cjs /m)
      assert.match(args('ENTRYPOINT').at(-1) ?? '', /apicast-sidecar-proxy\.cjs/)
    }]
  ]
  for (const [name, check] of policy) it(name, check)

  it('has a .dockerignore that keeps the context to what the build needs', () => {
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    assert.match(ignore, /^\*$/m)
    for (const path of ['package.json', 'package-lock.json', 'src/']) assert.match(ignore, new RegExp(`^!${path.replace('.', '\\.')}$`, 'm'))
  })
})
