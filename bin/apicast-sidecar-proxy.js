#!/usr/bin/env node
// Entry point for `npm start` and the `apicast-sidecar-proxy` command. It
// runs the one-file bundle (dist/bundle), the same code the image and the
// single binary run: the ESM tree of dist/src starts the same sidecar, but
// Node's ESM loader and its CommonJS interop cost about 17 MB more RSS
// (measured idle, Node 20: 82 MB against 65). From a source checkout it
// bundles first when the bundle is missing or older than src/ (esbuild, in
// about a second), so a fresh clone runs with one command.
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const bundle = join(root, 'dist', 'bundle', 'apicast-sidecar-proxy.cjs')
const require = createRequire(import.meta.url)

function newestMtime (dir) {
  let newest = 0
  for (const name of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, name.name)
    newest = Math.max(newest, name.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs)
  }
  return newest
}

const src = join(root, 'src')
if (existsSync(src)) {
  const built = existsSync(bundle) ? statSync(bundle).mtimeMs : 0
  const inputs = Math.max(newestMtime(src), statSync(join(root, 'package-lock.json'), { throwIfNoEntry: false })?.mtimeMs ?? 0)
  if (built < inputs) {
    try {
      require.resolve('esbuild')
    } catch {
      process.stderr.write('apicast-sidecar-proxy: the bundle (dist/bundle) is missing or older than src/, and esbuild is not installed to build it; run `npm ci` first\n')
      process.exit(1)
    }
    execFileSync(process.execPath, [join(root, 'scripts', 'bundle.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] })
  }
}

if (existsSync(bundle)) {
  require(bundle)
} else {
  // A package installed without its bundle: the compiled ESM tree.
  await import(pathToFileURL(join(root, 'dist', 'src', 'cli.js')).href)
}
