import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** Defined in the bundle and the binary (scripts/bundle.mjs), whose lazily loaded parts are files beside them. */
declare const SIDECAR_VERSION: string | undefined

/**
 * A part of the sidecar that only some runs need (the PAC engine, doctor,
 * the demo), loaded on first use. The bundle and the binary leave each one
 * out of their main file (scripts/bundle.mjs) and carry it beside them as
 * `file`, so that a sidecar that never needs it never reads or parses its
 * code: doctor and the demo were 1.4 MB of the bundle's 2.6 MB, and 5 MB of
 * RSS at idle. From source (npm start, the tests), `fromSource` imports it.
 */
export async function loadPart<T> (file: string, fromSource: () => Promise<T>): Promise<T> {
  if (typeof SIDECAR_VERSION === 'string') return requireBeside<T>(`./${file}`, addonDir())
  return await fromSource()
}

/**
 * Where a package the code cannot carry inside it is looked for: the
 * Kerberos addon (a native .node file) and the PAC engine (pac-engine.cjs
 * and QuickJS's .wasm file). Beside the single binary (`addonDir`), beside the
 * bundle, beside the script run (in the image /app/node_modules), then this
 * module's own node_modules (the compiled tree).
 */
export function packageRoots (addonDir: string | undefined): string[] {
  const here = typeof import.meta.url === 'string' && import.meta.url !== '' ? dirname(fileURLToPath(import.meta.url)) : undefined
  // The bundle's own folder (CommonJS has __dirname): npm start runs it
  // through bin/, so the script run is not always the bundle.
  const bundle = typeof __dirname === 'string' ? __dirname : undefined
  const script = process.argv[1] !== undefined ? dirname(process.argv[1]) : undefined
  return [addonDir, bundle, script, here].filter((r): r is string => r !== undefined)
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
