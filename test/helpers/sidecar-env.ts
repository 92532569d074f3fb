import { testCa } from './pki.js'

/**
 * What every test sidecar runs with beside `env`, in-process or as a
 * process: all three listeners on port 0 (each test binds its own), trace
 * logging, and the test CA trusted through NODE_EXTRA_CA_CERTS. The trust
 * store reads that from this environment, not from process.env, so both
 * harnesses trust the same CAs. `env` overrides any of them.
 */
export async function sidecarEnv (env: Record<string, string>): Promise<Record<string, string>> {
  const ca = await testCa()
  return {
    PORTAL_LISTEN_PORT: '0',
    BACKEND_LISTEN_PORT: '0',
    ADMIN_LISTEN_PORT: '0',
    LOG_LEVEL: 'trace',
    NODE_EXTRA_CA_CERTS: ca.certFile,
    ...env
  }
}
