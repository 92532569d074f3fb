/**
 * What stops the sidecar from starting, found before it starts: every
 * problem at once, one line each, none echoing a secret, under a heading.
 * The base of ConfigError, TlsSetupError and TrustStoreError, so the CLI
 * reports each the same way: the message on stderr, exit 1, no stack trace
 * (a stack says nothing to an operator who has a setting or a file to fix).
 * Callers that merge several rounds into one list read `problems`.
 */
export class SetupError extends Error {
  override name = 'SetupError'
  constructor (heading: string, readonly problems: readonly string[]) {
    super(`${heading}:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
  }
}
