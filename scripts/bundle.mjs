#!/usr/bin/env node
// npm run build:bundle: the sidecar and its production dependencies as one
// CommonJS file, dist/bundle/apicast-sidecar-proxy.cjs. The container image
// and the single binary both run it. Measured against the ESM dist/ tree:
// about 6 MB less RSS at idle, because Node's ESM-to-CommonJS interop (and
// its module lexer) is never loaded, and one file to read at start.
import { copyFileSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
export const BUNDLE = join(root, 'dist', 'bundle', 'apicast-sidecar-proxy.cjs')
/**
 * The parts only some runs need, each a file of its own beside the bundle
 * (src/egress/package-roots.ts, loadPart), so that a sidecar that never
 * needs one never reads or parses its code: the PAC engine (pac-resolver,
 * QuickJS), loaded only with PROXY_PAC_URL, with QuickJS's WebAssembly;
 * doctor; the demo. Measured: doctor and the demo were 1.4 MB of a 2.6 MB
 * bundle, and 5 MB of RSS at idle (Node 20 and 24). The image and the
 * binary carry every one of them beside the bundle.
 */
export const PAC_ENGINE = join(root, 'dist', 'bundle', 'pac-engine.cjs')
export const QUICKJS_WASM = join(root, 'dist', 'bundle', 'quickjs.wasm')
export const DOCTOR = join(root, 'dist', 'bundle', 'doctor.cjs')
export const DEMO = join(root, 'dist', 'bundle', 'demo.cjs')
export const PARTS = [PAC_ENGINE, QUICKJS_WASM, DOCTOR, DEMO]
/** The licences of the packages inside the bundle, which ships with it. */
export const LICENSES = join(root, 'dist', 'bundle', 'THIRD-PARTY-LICENSES.txt')

/**
 * The imports of the parts (loadPart's `fromSource`) left out of a bundle
 * that is not the part itself: at run time the part's own file is loaded.
 */
const partsOutside = (self) => ({
  name: 'parts-outside',
  setup (b) {
    const parts = { 'pac-engine.js': './pac-engine.cjs', 'doctor.js': './doctor.cjs', 'index.js': './demo.cjs' }
    b.onResolve({ filter: /\/(pac-engine|diagnostics\/doctor|demo\/index)\.js$/ }, (args) => {
      const part = parts[args.path.slice(args.path.lastIndexOf('/') + 1)]
      return part === self ? undefined : { path: part, external: true }
    })
  }
})

/**
 * prom-client loads the OpenTelemetry API for exemplars, which the sidecar
 * does not enable: a stand-in with no active span, so exemplars, if ever
 * enabled, would carry no trace labels instead of failing.
 */
const noOpenTelemetry = {
  name: 'no-opentelemetry',
  setup (b) {
    b.onResolve({ filter: /^@opentelemetry\/api$/ }, () => ({ path: 'otel', namespace: 'stub' }))
    b.onLoad({ filter: /.*/, namespace: 'stub' }, () => ({ contents: 'module.exports = { trace: { getSpan: () => undefined }, context: { active: () => undefined } }', loader: 'js' }))
  }
}

/**
 * What both outputs share: one CommonJS file for Node 20 and later. The
 * import.meta uses (version.ts, pac-engine.ts) are reached only outside a
 * bundle, where SIDECAR_VERSION is not defined or no file sits beside it.
 */
const COMMON = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  minifySyntax: true,
  legalComments: 'none',
  logOverride: { 'empty-import-meta': 'silent' },
  logLevel: 'warning',
  metafile: true
}

export async function bundle () {
  const one = (entry, outfile) => build({
    ...COMMON,
    plugins: [partsOutside(`./${basename(outfile)}`), noOpenTelemetry],
    entryPoints: [join(root, 'src', ...entry)],
    outfile,
    define: { SIDECAR_VERSION: JSON.stringify(version) }
  })
  const results = await Promise.all([
    one(['cli.ts'], BUNDLE),
    one(['egress', 'pac-engine.ts'], PAC_ENGINE),
    one(['diagnostics', 'doctor.ts'], DOCTOR),
    one(['demo', 'index.ts'], DEMO)
  ])
  copyFileSync(createRequire(import.meta.url).resolve('quickjs-wasi/quickjs.wasm'), QUICKJS_WASM)
  writeFileSync(LICENSES, thirdPartyLicenses([...results.flatMap((r) => Object.keys(r.metafile.inputs)), 'node_modules/quickjs-wasi/quickjs.wasm']))
  return BUNDLE
}

/**
 * One text with the name, version, licence and licence file of every package
 * whose code esbuild put in the bundle. Bundling drops node_modules, and with
 * it the LICENSE files that MIT, ISC, BSD and Apache-2.0 all require to go
 * with copies of the code: this file goes with the bundle instead (the image
 * has it in /licenses, the binary beside it).
 */
export function thirdPartyLicenses (inputs) {
  const roots = new Set()
  for (const input of inputs) {
    // The last node_modules/<name> (or @scope/name) of the path, so a
    // nested copy (a/node_modules/b) is listed as itself.
    const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input)
    if (m !== null) roots.add(m[1])
  }
  const sections = [...roots].map((dir) => {
    const pkg = JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8'))
    const files = readdirSync(join(root, dir)).filter((f) => /^(licen[cs]e|copying|notice)/i.test(f)).sort()
    const texts = files.map((f) => readFileSync(join(root, dir, f), 'utf8').trim())
    const licence = typeof pkg.license === 'string' ? pkg.license : JSON.stringify(pkg.license ?? pkg.licenses ?? 'none stated')
    return { id: `${pkg.name}@${pkg.version}`, text: `${pkg.name}@${pkg.version} (${licence})\n${texts.length > 0 ? texts.join('\n\n') : `The package has no licence file; its package.json states ${licence}.`}` }
  })
  const unique = new Map(sections.map((s) => [s.id, s.text]))
  const ids = [...unique.keys()].sort()
  return `apicast-sidecar-proxy ${version} bundles the following packages.\n\n` +
    ids.map((id) => `${'='.repeat(78)}\n${unique.get(id)}\n`).join('\n')
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.stdout.write(`built ${await bundle()}\n`)
}
