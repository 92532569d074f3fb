#!/usr/bin/env node
// Entry point for `npm start` and the `apicast-sidecar-proxy` command.
// From a source checkout it compiles TypeScript first when dist/ is missing
// or older than src/, so a fresh clone runs with one command.
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const entry = join(root, 'dist', 'src', 'cli.js')

function newestMtime (dir) {
  let newest = 0
  for (const name of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, name.name)
    newest = Math.max(newest, name.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs)
  }
  return newest
}

const src = join(root, 'src')
if (existsSync(src) && (!existsSync(entry) || newestMtime(src) > statSync(entry).mtimeMs)) {
  let tsc
  try {
    tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
  } catch {
    process.stderr.write('apicast-sidecar-proxy: dist/ is missing or stale and TypeScript is not installed; run `npm ci` first\n')
    process.exit(1)
  }
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { stdio: ['ignore', 'ignore', 'inherit'] })
}

await import(pathToFileURL(entry).href)
