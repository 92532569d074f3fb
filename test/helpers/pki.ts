import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createCa, type CertificateAuthority } from '../../src/demo/pki.js'

export { createCa, type CertificateAuthority }

let shared: Promise<CertificateAuthority> | undefined
/** The CA the sidecar trusts in tests (given to it as NODE_EXTRA_CA_CERTS). */
export async function testCa (): Promise<CertificateAuthority> {
  shared ??= createCa('Sidecar Test Root CA')
  return await shared
}

/** Write text to a fresh temporary file and return its path. */
export function tempFile (name: string, content: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'sidecar-')), name)
  writeFileSync(path, content)
  return path
}
