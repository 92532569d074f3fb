import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'

/**
 * The PAC engine: pac-resolver and QuickJS, the two packages only
 * PROXY_PAC_URL needs. The bundle and the binary carry them as a file of
 * their own beside them (pac-engine.cjs, with quickjs.wasm; see
 * scripts/bundle.mjs), loaded only when a PAC is configured: 700 kB of
 * code that a sidecar without one never holds in memory.
 */
export { QuickJS } from 'quickjs-wasi'
export { createPacResolver, sandbox } from 'pac-resolver'

/** QuickJS's WebAssembly: beside pac-engine.cjs when bundled, else in the quickjs-wasi package. */
export function wasmFile (): string {
  const beside = typeof __dirname === 'string' ? join(__dirname, 'quickjs.wasm') : undefined
  if (beside !== undefined && existsSync(beside)) return beside
  return createRequire(import.meta.url).resolve('quickjs-wasi/quickjs.wasm')
}
