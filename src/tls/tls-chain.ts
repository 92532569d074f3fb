import { X509Certificate } from 'node:crypto'
import type { TrustStore } from './trust-store.js'
import type { CaBundleState, CertificateSummary, ChainFacts } from './tls-verdict.js'

/**
 * The facts of a server's certificate chain (tls-verdict.ts judges them).
 *
 * `leaf` comes from TLSSocket.getPeerX509Certificate(), whose
 * `issuerCertificate` links only what the server sent: the top of that chain
 * is the top certificate the server sent. Node completes a chain from the
 * trust store only in getPeerCertificate(true), which does not say where the
 * server's part ends; a server that sends only its own certificate then
 * looked like "a chain ending at the private CA CN=<the server>" (issue 16).
 * The trusted CA that vouches is looked up here instead, by the top's issuer
 * name and signature.
 */
export function readChain (leaf: X509Certificate, trust: TrustStore): ChainFacts {
  let top = leaf
  let sent = 1
  for (; sent < 10; sent++) {
    const issuer = top.issuerCertificate
    if (issuer === undefined || issuer.fingerprint256 === top.fingerprint256) break
    top = issuer
  }
  const anchor = findAnchor(top, trust)
  const publicRoot = trust.publicRoots.fingerprints.has(top.fingerprint256) ||
    (anchor !== undefined && trust.publicRoots.fingerprints.has(anchor.fingerprint)) ||
    trust.publicRoots.subjects.has(top.issuer)
  return {
    leaf: { ...summarize(leaf), fingerprint: leaf.fingerprint256 },
    top: summarize(top),
    sent,
    anchor: anchor !== undefined ? { subject: displayName(anchor.cert.subject), source: anchor.source } : undefined,
    publicRoot
  }
}

/** CA_BUNDLE as the trust store read it; undefined when it is not set. */
export function caBundleState (trust: TrustStore): CaBundleState | undefined {
  const source = trust.sources.find((s) => s.label === 'CA_BUNDLE')
  if (source?.path === undefined) return undefined
  return { path: source.path, directory: source.directory, certificates: source.read }
}

/** The trusted CA that is `top`, or that issued it (name and signature both checked). */
function findAnchor (top: X509Certificate, trust: TrustStore): { cert: X509Certificate, fingerprint: string, source: string } | undefined {
  const own = trust.sourceOf.get(top.fingerprint256)
  if (own !== undefined) return { cert: top, fingerprint: top.fingerprint256, source: own }
  for (const pem of trust.bySubject.get(top.issuer) ?? []) {
    let candidate: X509Certificate
    try {
      candidate = new X509Certificate(pem)
    } catch {
      continue
    }
    if (top.checkIssued(candidate) && top.verify(candidate.publicKey)) {
      return { cert: candidate, fingerprint: candidate.fingerprint256, source: trust.sourceOf.get(candidate.fingerprint256) ?? 'the trust store' }
    }
  }
  return undefined
}

function summarize (cert: X509Certificate): CertificateSummary {
  return {
    subject: displayName(cert.subject),
    issuer: displayName(cert.issuer),
    ca: cert.ca,
    selfSigned: cert.subject === cert.issuer && cert.checkIssued(cert)
  }
}

/**
 * `CN=…, O=…, OU=…` from X509Certificate's one-attribute-per-line form:
 * the common name first, as people name a CA, and nothing else (C, L, ST
 * add length, not recognition).
 */
export function displayName (dn: string): string {
  const lines = dn.split('\n')
  const parts: string[] = []
  for (const key of ['CN', 'O', 'OU']) {
    for (const line of lines) if (line.startsWith(`${key}=`)) parts.push(line)
  }
  return parts.length > 0 ? parts.join(', ') : (dn.replace(/\n/g, ', ') || '(no name)')
}
