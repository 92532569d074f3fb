import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * Where a package the code cannot carry inside it is looked for: the
 * Kerberos addon (a native .node file) and the PAC engine (pac-engine.cjs
 * and QuickJS's .wasm file). Beside the single binary (`addonDir`), beside the script
 * run (the bundle's node_modules, in the image /app/node_modules), then this
 * module's own node_modules (npm start).
 */
export function packageRoots (addonDir: string | undefined): string[] {
  const here = typeof import.meta.url === 'string' && import.meta.url !== '' ? dirname(fileURLToPath(import.meta.url)) : undefined
  const script = process.argv[1] !== undefined ? dirname(process.argv[1]) : undefined
  return [addonDir, script, here].filter((r): r is string => r !== undefined)
}

/** `require(specifier)` from the first root that has it; else the first root's error. */
export function requireBeside<T> (specifier: string, addonDir: string | undefined): T {
  let first: unknown
  for (const root of packageRoots(addonDir)) {
    try {
      return createRequire(join(root, 'noop.js'))(specifier) as T
    } catch (err) {
      first ??= err
    }
  }
  throw first instanceof Error ? first : new Error(`Cannot find module '${specifier}'`)
}

/**
 * The directory of the single binary, where its companions are (the
 * Kerberos addon, QuickJS's wasm); undefined under a plain `node`.
 */
export function addonDir (): string | undefined {
  const exe = process.execPath
  return /(^|\/)node(\.exe)?$/.test(exe) ? undefined : dirname(exe)
}
