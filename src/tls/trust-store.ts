import { X509Certificate } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { rootCertificates } from 'node:tls'
import { SetupError } from '../config/setup-error.js'

/**
 * Where Go (crypto/x509, root_linux.go) looks for the system CA bundle, in
 * order; the first readable one is used. Covers Debian/Ubuntu, RHEL/UBI/
 * Fedora/CentOS, SUSE and Alpine.
 */
export const SYSTEM_CERT_FILES = [
  '/etc/ssl/certs/ca-certificates.crt', // Debian, Ubuntu, Gentoo, Alpine (ca-certificates)
  '/etc/pki/tls/certs/ca-bundle.crt', // Fedora, RHEL 6
  '/etc/ssl/ca-bundle.pem', // OpenSUSE
  '/etc/pki/tls/cacert.pem', // OpenELEC
  '/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem', // CentOS, RHEL 7+, UBI
  '/etc/ssl/cert.pem' // Alpine Linux
] as const

/** Go's default certificate directories (all files in them are read). */
export const SYSTEM_CERT_DIRS = ['/etc/ssl/certs', '/etc/pki/tls/certs'] as const

/** The settings that add to the trust store, as config read them. */
export interface TrustSettings {
  /** OpenSSL's SSL_CERT_FILE: replaces the system bundle file. */
  readonly sslCertFile: string | undefined
  /** OpenSSL's SSL_CERT_DIR: colon-separated, replaces the system directories. */
  readonly sslCertDir: string | undefined
  /** Node reads it at start too, but drops it once `ca` is set explicitly; read here so it always counts. */
  readonly nodeExtraCaCerts: string | undefined
  /** A PEM file, or a directory of PEM files: an on-premise 3scale's internal CA, or a TLS-intercepting proxy's. */
  readonly caBundle: string | undefined
}

export interface TrustSourceSummary {
  readonly label: string
  readonly path: string | undefined
  /** The path is a directory (CA_BUNDLE may be one: a mounted ConfigMap). */
  readonly directory: boolean
  /** Certificates read from this source. */
  readonly read: number
  /** Of those, how many no earlier source had. */
  readonly added: number
}

export interface TrustStore {
  /** Every trusted CA, PEM, de-duplicated: the `ca` for every TLS connection. */
  readonly ca: readonly string[]
  readonly sources: readonly TrustSourceSummary[]
  /**
   * SHA-256 fingerprints and subjects of the publicly trusted roots bundled
   * with Node (Mozilla's list). A chain that ends elsewhere was signed by a
   * private CA: an on-premise 3scale's internal CA, or a TLS-intercepting
   * proxy's (tls-verdict.ts decides what can be said about which).
   */
  readonly publicRoots: { readonly fingerprints: ReadonlySet<string>, readonly subjects: ReadonlySet<string> }
  /**
   * Every trusted CA by its subject (X509Certificate.subject), PEM: to find
   * which one vouches for a chain whose server did not send its root.
   */
  readonly bySubject: ReadonlyMap<string, readonly string[]>
  /** Where each trusted CA (by SHA-256 fingerprint) was first read: `CA_BUNDLE /etc/corp/ca.pem`. */
  readonly sourceOf: ReadonlyMap<string, string>
  /** One line for the start-up log. */
  readonly summary: string
}

/** Unreadable or invalid CA files; each problem names its file. */
export class TrustStoreError extends SetupError {
  override name = 'TrustStoreError'
  constructor (problems: readonly string[]) {
    super('cannot build the TLS trust store', problems)
  }
}

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/**
 * Build the trust store the way Go and OpenSSL users expect, on Node 20
 * (which has no --use-system-ca): Node's bundled roots, the system bundle (or
 * SSL_CERT_FILE), the system directories (or SSL_CERT_DIR),
 * NODE_EXTRA_CA_CERTS and CA_BUNDLE. Files the user named must be readable
 * and hold at least one valid certificate; the system locations are used
 * when present, as Go does.
 */
export function loadTrustStore (settings: TrustSettings): TrustStore {
  const problems: string[] = []
  const byFingerprint = new Map<string, string>()
  const bySubject = new Map<string, string[]>()
  const sourceOf = new Map<string, string>()
  const sources: TrustSourceSummary[] = []

  // The system directory usually repeats the bundle byte for byte: skip
  // text already seen before parsing it (half the start-up cost and memory).
  const seenText = new Set<string>()
  const add = (label: string, path: string | undefined, pems: readonly string[], directory = false): void => {
    let added = 0
    for (const pem of pems) {
      if (seenText.has(pem)) continue
      seenText.add(pem)
      const cert = parse(pem)
      if (cert === undefined) continue
      if (!byFingerprint.has(cert.fingerprint256)) {
        byFingerprint.set(cert.fingerprint256, pem)
        sourceOf.set(cert.fingerprint256, path !== undefined ? `${label} ${path}` : label)
        const same = bySubject.get(cert.subject)
        if (same !== undefined) same.push(pem)
        else bySubject.set(cert.subject, [pem])
        added++
      }
    }
    sources.push({ label, path, directory, read: pems.length, added })
  }

  const publicFingerprints = new Set<string>()
  const publicSubjects = new Set<string>()
  for (const pem of rootCertificates) {
    const cert = parse(pem)
    if (cert === undefined) continue
    publicFingerprints.add(cert.fingerprint256)
    publicSubjects.add(cert.subject)
  }
  add('Node bundled roots', undefined, rootCertificates)

  if (settings.sslCertFile !== undefined) {
    add('SSL_CERT_FILE', settings.sslCertFile, readRequiredFile('SSL_CERT_FILE', settings.sslCertFile, problems))
  } else {
    const found = SYSTEM_CERT_FILES.find((f) => isReadableFile(f))
    if (found !== undefined) add('system bundle', found, certificatesIn(readFileSync(found, 'utf8')))
  }

  const dirs = settings.sslCertDir !== undefined ? settings.sslCertDir.split(':').filter((d) => d !== '') : SYSTEM_CERT_DIRS
  for (const dir of dirs) {
    if (settings.sslCertDir !== undefined) {
      add('SSL_CERT_DIR', dir, readDirectory('SSL_CERT_DIR', dir, problems, false), true)
    } else if (isDirectory(dir)) {
      add('system directory', dir, readDirectory('system directory', dir, [], false), true)
    }
  }

  if (settings.nodeExtraCaCerts !== undefined) {
    add('NODE_EXTRA_CA_CERTS', settings.nodeExtraCaCerts, readRequiredFile('NODE_EXTRA_CA_CERTS', settings.nodeExtraCaCerts, problems))
  }
  if (settings.caBundle !== undefined) {
    const directory = isDirectory(settings.caBundle)
    const pems = directory
      ? readDirectory('CA_BUNDLE', settings.caBundle, problems, true)
      : readRequiredFile('CA_BUNDLE', settings.caBundle, problems)
    add('CA_BUNDLE', settings.caBundle, pems, directory)
  }

  if (problems.length > 0) throw new TrustStoreError(problems)

  const ca = [...byFingerprint.values()]
  const parts = sources.map((s) => `${s.label}${s.path !== undefined ? ` ${s.path}` : ''}: ${s.read}` +
    (s.added !== s.read ? ` (${s.added} new)` : '') + (s.directory && s.read === 0 ? ' (an empty directory)' : ''))
  return {
    ca,
    sources,
    publicRoots: { fingerprints: publicFingerprints, subjects: publicSubjects },
    bySubject,
    sourceOf,
    summary: `trust store: ${ca.length} CA certificates — ${parts.join('; ')}`
  }
}

/** The PEM certificate blocks in a text. */
export function certificatesIn (text: string): string[] {
  return text.match(PEM_BLOCK) ?? []
}

function parse (pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem)
  } catch {
    return undefined
  }
}

/** A file the user named: it must exist, be readable and hold valid certificates. */
function readRequiredFile (setting: string, path: string, problems: string[]): string[] {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    problems.push(`${setting}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
    return []
  }
  return validCertificates(setting, path, text, problems)
}

function validCertificates (setting: string, path: string, text: string, problems: string[]): string[] {
  const blocks = certificatesIn(text)
  if (blocks.length === 0) {
    problems.push(`${setting}: ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`)
    return []
  }
  const bad = blocks.findIndex((pem) => parse(pem) === undefined)
  if (bad !== -1) {
    problems.push(`${setting}: certificate ${bad + 1} of ${blocks.length} in ${path} is not a valid X.509 certificate`)
    return []
  }
  // One certificate that is neither a CA nor self-signed is a server
  // certificate given by mistake: it can never verify a chain.
  const only = blocks.length === 1 ? parse(blocks[0] as string) : undefined
  if (only !== undefined && !only.ca && only.issuer !== only.subject) {
    problems.push(`${setting}: ${path} holds a server (leaf) certificate, not a CA certificate; give the CA that issued it`)
    return []
  }
  return blocks
}

/**
 * Every certificate in a directory. `strict` (CA_BUNDLE): each *.pem, *.crt
 * or *.cer file must be valid. Otherwise (OpenSSL hashed directories) files
 * that are not certificates are skipped, as OpenSSL and Go do.
 */
function readDirectory (setting: string, dir: string, problems: string[], strict: boolean): string[] {
  let names: string[]
  try {
    names = readdirSync(dir).sort()
  } catch (err) {
    problems.push(`${setting}: cannot read the directory ${dir} (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
    return []
  }
  const pems: string[] = []
  for (const name of names) {
    const path = join(dir, name)
    if (!isReadableFile(path)) continue
    if (strict && /\.(pem|crt|cer)$/i.test(name)) {
      pems.push(...readRequiredFile(setting, path, problems))
      continue
    }
    try {
      pems.push(...certificatesIn(readFileSync(path, 'utf8'))) // add() skips what does not parse
    } catch {
      // unreadable entries of a system directory are skipped, as Go does
    }
  }
  // An empty directory is fine: it is what Kubernetes mounts for an optional
  // ConfigMap that does not exist. The summary line then counts 0.
  return pems
}

function isReadableFile (path: string): boolean {
  try {
    return statSync(path).isFile()
  } catch {
    return false
  }
}

function isDirectory (path: string): boolean {
  try {
    return statSync(path).isDirectory()
  } catch {
    return false
  }
}
