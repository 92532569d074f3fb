/**
 * PURE: what can honestly be said about who signed an upstream's
 * certificate chain. No I/O: tls-chain.ts reads the facts from a TLS socket
 * and the trust store; failures/catalogue.ts words the verdict.
 *
 * A chain that ends at a private CA (one that is not among Node's bundled
 * public roots) has two usual owners: an on-premise 3scale's internal CA, or
 * a TLS-intercepting proxy that re-signs every site with its own CA. The
 * certificate alone cannot tell them apart: squid's ssl-bump, for one,
 * copies the subject, the names and even the validity dates of the real
 * certificate, so neither "a freshly made certificate" nor "a name that does
 * not match" is a sign of interception. Only these are:
 *   - the host is a 3scale SaaS name (`*.3scale.net`), which Red Hat serves
 *     with publicly trusted certificates only (browsers use those hosts), so
 *     a private chain for it was made by something on the path;
 *   - doctor saw a different certificate over a direct connection than
 *     through the proxy (or the same one, which clears the proxy).
 * Without either, the verdict is "a private CA", never "interception".
 */

/** One certificate, as the messages name it. */
export interface CertificateSummary {
  /** `CN=…, O=…`. */
  readonly subject: string
  readonly issuer: string
  /** basicConstraints CA:TRUE. */
  readonly ca: boolean
  /** Issued by itself (a root, or a self-signed server certificate). */
  readonly selfSigned: boolean
}

/** What the server presented, and what in the trust store vouches for it. */
export interface ChainFacts {
  /** The server's own certificate, with its SHA-256 fingerprint (to compare two connections). */
  readonly leaf: CertificateSummary & { readonly fingerprint: string }
  /** The top certificate the server sent: the leaf itself when it sent no chain. */
  readonly top: CertificateSummary
  /** How many certificates the server sent. */
  readonly sent: number
  /** The trusted CA that issued `top` (or is `top`), and where it was read: `CA_BUNDLE /etc/corp/ca.pem`. */
  readonly anchor: { readonly subject: string, readonly source: string } | undefined
  /** The chain ends at one of Node's bundled public roots. */
  readonly publicRoot: boolean
}

/** CA_BUNDLE as read at start, for hints that name its state. */
export interface CaBundleState {
  readonly path: string
  readonly directory: boolean
  readonly certificates: number
}

/** What a direct connection to the upstream showed, compared with the one through the proxy (doctor only). */
export type DirectComparison =
  | { readonly kind: 'same' }
  | { readonly kind: 'different', readonly issuer: string }
  | { readonly kind: 'unavailable', readonly reason: string }

/**
 * The stable verdict codes (log field `tlsVerdict`, doctor's `verdict`):
 * - `public_ca`: a public root vouches for the chain;
 * - `private_ca`: a private CA, whose owner the sidecar cannot tell;
 * - `internal_ca`: a private CA that a direct connection shows is the server's own;
 * - `interception`: evidence that something on the path re-signs TLS.
 */
export type TlsVerdict =
  | { readonly code: 'public_ca' }
  | { readonly code: 'private_ca', readonly direct?: { readonly kind: 'unavailable', readonly reason: string } }
  | { readonly code: 'internal_ca' }
  | { readonly code: 'interception', readonly evidence: 'saas_host' } | { readonly code: 'interception', readonly evidence: 'direct_differs', readonly directIssuer: string }

export type TlsVerdictCode = TlsVerdict['code']

/**
 * True for a 3scale SaaS host name: `3scale.net` and its subdomains
 * (`acme-admin.3scale.net`, `su1.3scale.net`). An on-premise 3scale is never
 * served under Red Hat's domain.
 */
export function isSaasHost (hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/\.$/, '')
  return host === '3scale.net' || host.endsWith('.3scale.net')
}

/** Judge `chain`, seen for `host` (through a proxy or not), with a direct connection's certificate when doctor has one. */
export function judgeChain (chain: ChainFacts, seen: { readonly host: string, readonly direct?: DirectComparison | undefined }): TlsVerdict {
  if (chain.publicRoot) return { code: 'public_ca' }
  if (isSaasHost(seen.host)) return { code: 'interception', evidence: 'saas_host' }
  const direct = seen.direct
  if (direct?.kind === 'different') return { code: 'interception', evidence: 'direct_differs', directIssuer: direct.issuer }
  if (direct?.kind === 'same') return { code: 'internal_ca' }
  return direct !== undefined ? { code: 'private_ca', direct } : { code: 'private_ca' }
}

/**
 * The CA the messages name: the trusted anchor when one vouches; else the
 * top certificate itself when it is a CA that signed itself (a root the
 * server sent); else whoever issued the top certificate.
 */
export function issuingCa (chain: ChainFacts): string {
  if (chain.anchor !== undefined) return chain.anchor.subject
  return chain.top.ca && chain.top.selfSigned ? chain.top.subject : chain.top.issuer
}
