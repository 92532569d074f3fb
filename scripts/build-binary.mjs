#!/usr/bin/env node
// npm run build:binary — one self-contained executable (a Node single
// executable application) for hosts without Node, e.g. RHEL with systemd.
//
// 1. scripts/bundle.mjs bundles src/cli.ts and its dependencies into one
//    CommonJS file (inside a SEA, require() only loads built-in modules);
// 2. node --experimental-sea-config turns it into a blob;
// 3. the blob is injected into a copy of the shipped node binary with postject.
// The runtime inside is the pinned Node LTS of scripts/shipped-node.json, not
// the build machine's node, which may be older or end-of-life. The blob must
// come from the same node binary it is injected into, so that node makes it.
import { execFileSync } from 'node:child_process'
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { bundle, LICENSES, PARTS } from './bundle.mjs'
import { shippedNode, shippedNodeDir } from './shipped-node.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const out = join(root, 'build')
const work = join(out, 'sea')
const binary = join(out, 'apicast-sidecar-proxy')
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))

rmSync(work, { recursive: true, force: true })
mkdirSync(work, { recursive: true })

const node = shippedNode()
const nodeVersion = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim()
const main = await bundle()

writeFileSync(join(work, 'sea-config.json'), JSON.stringify({
  main,
  output: join(work, 'sea-prep.blob'),
  disableExperimentalSEAWarning: true,
  useCodeCache: true,
  // The node flags npm start and the image's entrypoint give it (a 2 MB
  // young generation: peak RSS under load about 100 MB lower on Node 24).
  execArgv: JSON.parse(readFileSync(join(root, 'scripts', 'node-flags.json'), 'utf8')).flags
}))
execFileSync(node, ['--experimental-sea-config', join(work, 'sea-config.json')], { stdio: ['ignore', 'ignore', 'inherit'] })

rmSync(binary, { force: true })
copyFileSync(node, binary)
chmodSync(binary, 0o755)
try {
  execFileSync('strip', [binary], { stdio: 'ignore' })
} catch {
  // strip is optional: without binutils the binary is only larger
}
const postject = join(root, 'node_modules', 'postject', 'dist', 'cli.js')
// postject's ELF library warns about the section names strip removed
// ("Can't find string offset"), harmlessly: its output shows only on failure.
try {
  execFileSync(process.execPath, [postject, binary, 'NODE_SEA_BLOB', join(work, 'sea-prep.blob'),
    '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'], { stdio: 'pipe' })
} catch (err) {
  process.stderr.write(String(err.stderr ?? ''))
  throw err
}

// Negotiate's addon, the optional kerberos package, cannot be inside: a
// native module loads from a file. It goes beside the binary, in
// build/node_modules/kerberos, where the binary looks (egress/kerberos.ts),
// when npm built it; without it the binary runs every other scheme.
const addon = join(root, 'node_modules', 'kerberos')
const addonOut = join(out, 'node_modules', 'kerberos')
rmSync(join(out, 'node_modules'), { recursive: true, force: true })
let addonLicence = ''
if (existsSync(join(addon, 'build', 'Release', 'kerberos.node'))) {
  mkdirSync(join(addonOut, 'build', 'Release'), { recursive: true })
  for (const f of ['package.json', 'LICENSE']) copyFileSync(join(addon, f), join(addonOut, f))
  cpSync(join(addon, 'lib'), join(addonOut, 'lib'), { recursive: true })
  copyFileSync(join(addon, 'build', 'Release', 'kerberos.node'), join(addonOut, 'build', 'Release', 'kerberos.node'))
  const { version: kv, license } = JSON.parse(readFileSync(join(addon, 'package.json'), 'utf8'))
  addonLicence = `\n${'='.repeat(78)}\nkerberos@${kv} (${license}; beside the binary, in node_modules/kerberos)\n${readFileSync(join(addon, 'LICENSE'), 'utf8').trim()}\n`
}

// The parts only some runs load (the PAC engine, doctor, the demo) go beside
// the binary too, where it looks for them (egress/package-roots.ts, loadPart).
for (const f of PARTS) copyFileSync(f, join(out, basename(f)))

// The binary holds the bundled packages and Node itself: their licences go
// beside it, to be installed with it (the README's systemd steps do).
writeFileSync(join(out, 'THIRD-PARTY-LICENSES.txt'), readFileSync(LICENSES, 'utf8') +
  `\n${'='.repeat(78)}\nNode.js ${nodeVersion} (the runtime inside the binary)\n${readFileSync(join(shippedNodeDir(), 'LICENSE'), 'utf8').trim()}\n` + addonLicence)

process.stdout.write(`built ${binary} (apicast-sidecar-proxy ${version}, Node ${nodeVersion})${addonLicence !== '' ? `, and ${addonOut} for Negotiate` : ''}\n`)
