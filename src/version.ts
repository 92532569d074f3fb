import { readFileSync } from 'node:fs'

/** Set by the single-executable build (esbuild --define), where no package.json is at hand. */
declare const SIDECAR_VERSION: string | undefined

/** The sidecar's version: package.json's, or the one baked into the binary. */
export function version (): string {
  if (typeof SIDECAR_VERSION === 'string') return SIDECAR_VERSION
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}
