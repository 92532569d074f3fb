import type { IncomingHttpHeaders } from 'node:http'
import { CertificateBackedOff, CredentialsBackedOff } from '../egress/credential-gate.js'
import { KerberosError } from '../egress/kerberos-cause.js'
import { PacUnavailable } from '../egress/pac-answer.js'
import type { ProxyEndpoint } from '../egress/egress.js'
import { parseAuthSchemes } from '../egress/proxy-auth.js'
import { hostPort, redactText } from '../observe/redact.js'
import { issuingCa, judgeChain, type CaBundleState, type ChainFacts, type DirectComparison, type TlsVerdict } from '../tls/tls-verdict.js'

/**
 * Stable codes for failures the sidecar itself answers for (never for a
 * response that came from 3scale).
 */
export type FailureCode =
  | 'proxy_unreachable'
  | 'proxy_auth_required'
  | 'tunnel_refused'
  | 'tls_untrusted'
  | 'dns'
  | 'upstream_unreachable'
  | 'timeout'
  | 'reset'
  | 'upstream_error'
  | 'destination_not_allowed'
  | 'too_many_tunnels'
  | 'proxy_kerberos'
  | 'pac_unavailable'
  | 'proxy_client_certificate'

/** What the classifier knows about where the request was going. */
export interface FailureContext {
  readonly upstream: URL
  /** The proxy this attempt went through; undefined when direct. */
  readonly proxy: ProxyEndpoint | undefined
  /** The proxy's last refused CONNECT on this route, if any. */
  readonly refusal?: TunnelRefusal | undefined
  readonly timeouts: { readonly connectMs: number, readonly responseHeadersMs: number, readonly idleMs: number }
  /**
   * Where the upstream's name comes from, for the fixes that ask to check
   * it: the endpoint settings by default; the forward proxy names the
   * destination APIcast asked for.
   */
  readonly named?: string | undefined
}

/** A CONNECT the proxy answered with something other than 200. */
export interface TunnelRefusal {
  readonly statusCode: number
  /** Auth schemes from `Proxy-Authenticate`, e.g. ['Basic', 'NTLM']. */
  readonly schemes: readonly string[]
  /** PROXY_AUTH_SCHEME, when it forces one ('basic', 'digest', 'ntlm'). */
  readonly forced?: string | undefined
  /** The proxy's own word on why, e.g. squid's `X-Squid-Error: ERR_DNS_FAIL 0`. */
  readonly proxyError?: string | undefined
}

/**
 * A refused CONNECT as the failure table reads it, from the proxy's reply:
 * its status, the schemes of its Proxy-Authenticate, and squid's own word
 * (X-Squid-Error), made printable and short. One builder, for the routes'
 * tunnels and the forward proxy's alike.
 */
export function tunnelRefusalOf (statusCode: number, headers: IncomingHttpHeaders, scheme: string): TunnelRefusal {
  const squid = headers['x-squid-error']
  return {
    statusCode,
    schemes: parseAuthSchemes(headers['proxy-authenticate']),
    forced: scheme !== 'auto' ? scheme : undefined,
    proxyError: typeof squid === 'string' ? squid.replace(/[^\x20-\x7e]/g, '').slice(0, 100) : undefined
  }
}

export interface Failure {
  readonly code: FailureCode
  readonly status: 403 | 502 | 503 | 504
  /** What failed, in the terms an operator uses. */
  readonly message: string
  /** What to check or change. */
  readonly hint: string
  /**
   * The connection was reset or closed under the request (ECONNRESET, EPIPE,
   * "other side closed"): a glitch of one connection that a fresh one may not
   * have, as opposed to a refusal, a timeout or a certificate that will fail
   * the same way again.
   */
  readonly transient: boolean
  /** The error it was classified from, kept for the debug line (causeChain). */
  readonly cause?: unknown
}

/**
 * Failures that are the proxy's (unreachable, refusing the tunnel or the
 * credentials, too slow to open it), so another proxy may do better. The one
 * list: the transport backs a proxy off for these, and forwarding's attempt
 * decision (forwarding/attempts.ts) fails a request over for them.
 */
const FAILOVER_CODES: ReadonlySet<FailureCode> = new Set(['proxy_unreachable', 'tunnel_refused', 'proxy_auth_required', 'proxy_client_certificate', 'timeout'])

/** True when `failure`, of an attempt through a proxy before any request byte left, should move the request to the next proxy. */
export function isFailoverFailure (failure: Failure): boolean {
  return FAILOVER_CODES.has(failure.code)
}

/**
 * A connection to the proxy or upstream (TCP, CONNECT, TLS) failed before any
 * request byte was written. The connector wraps every such error in this, so
 * (1) the classifier knows no byte reached 3scale and (2) undici fails the
 * queued requests instead of reconnecting in a loop (it retries silently on
 * UND_ERR_SOCKET during connect).
 */
export class ConnectFailure extends Error {
  override name = 'ConnectFailure'
  readonly code = 'SIDECAR_CONNECT_FAILED'
  constructor (override readonly cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause))
  }
}

/** An http:// request with an https:// proxy as its hop: a path undici does not offer (see dispatcher.ts unsupportedHop). */
export class AbsoluteFormOverTls extends Error {
  override name = 'AbsoluteFormOverTls'
  readonly code = 'SIDECAR_ABSOLUTE_FORM_OVER_TLS'
  constructor () {
    super('an http:// request cannot go through an https:// proxy')
  }
}

/** The upstream's certificate did not verify against the trust store. */
export class UpstreamCertificateError extends Error {
  override name = 'UpstreamCertificateError'
  readonly code = 'SIDECAR_TLS_UNTRUSTED'
  constructor (
    /** OpenSSL's reason, e.g. UNABLE_TO_VERIFY_LEAF_SIGNATURE. */
    readonly reason: string,
    /** What the server sent; undefined only if it sent no certificate at all. */
    readonly chain: ChainFacts | undefined,
    /** CA_BUNDLE's state, for a hint that names it (an empty directory). */
    readonly caBundle: CaBundleState | undefined
  ) {
    super(`certificate verification failed (${reason}); issued by ${chain?.leaf.issuer ?? '(unknown)'}`)
  }
}

/**
 * An https:// proxy ended the TLS handshake over the client certificate:
 * it asked for one and got none, or rejected the one sent. TunnelClient
 * wraps the TLS alert in this whenever it comes on its connection to the
 * proxy, so the classifier never mistakes it for the upstream's (whose TLS
 * runs later, inside the tunnel).
 *
 * What OpenSSL reports, found with squid 5.7 (https_port clientca=) and
 * Node 20.20 (OpenSSL 3.0) and 24.22 (OpenSSL 3.5):
 * - TLS 1.3, none sent: ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED;
 * - TLS 1.3, another CA's: ERR_SSL_TLSV1_ALERT_UNKNOWN_CA;
 *   both AFTER secureConnect (the client's side of a 1.3 handshake ends
 *   before the server has read the certificate), as an error on the socket
 *   while CONNECT is sent or its reply read;
 * - TLS 1.2, none sent: ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE (Node 20),
 *   ERR_SSL_SSL/TLS_ALERT_HANDSHAKE_FAILURE (Node 24), during the handshake;
 * - TLS 1.2, another CA's: ERR_SSL_TLSV1_ALERT_UNKNOWN_CA, during it.
 * Other servers send bad_certificate, certificate_unknown, _expired,
 * _revoked, unsupported_certificate or access_denied; the same patterns.
 */
export class ProxyClientCertificateError extends Error {
  override name = 'ProxyClientCertificateError'
  readonly code = 'SIDECAR_PROXY_CLIENT_CERTIFICATE'
  constructor (
    /** The TLS alert, as OpenSSL's code: ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED. */
    readonly alert: string,
    /** `missing`: the proxy wanted a certificate and none was sent; `rejected`: it refused the one sent. */
    readonly kind: 'missing' | 'rejected',
    override readonly cause: unknown
  ) {
    super(`the proxy ended the TLS handshake with the alert ${alertName(alert)} (${kind === 'missing' ? 'no client certificate was sent' : 'it rejected the client certificate'})`)
  }
}

/** ERR_SSL_*_ALERT_<NAME> as its RFC 8446 §6 name: certificate_required. */
export function alertName (code: string): string {
  return code.replace(/^ERR_SSL_.*_ALERT_/, '').toLowerCase()
}

const CLIENT_CERTIFICATE_ALERTS = /^ERR_SSL_(SSLV3|TLSV1|TLSV13|SSL\/TLS)_ALERT_(CERTIFICATE_REQUIRED|UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_UNKNOWN|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED|HANDSHAKE_FAILURE)$/

/**
 * Whether the TLS error `code`, received from an https:// proxy, is its
 * verdict on the client certificate, and which: undefined when it is not.
 * `sent`: a certificate was configured (PROXY_TLS_CERT). A bare
 * handshake_failure counts only when none was: it is what a TLS 1.2 proxy
 * sends for a missing certificate, and otherwise means a cipher or version
 * mismatch.
 */
export function clientCertificateRefusal (code: string, sent: boolean): 'missing' | 'rejected' | undefined {
  const m = CLIENT_CERTIFICATE_ALERTS.exec(code)
  if (m === null) return undefined
  if (m[2] === 'HANDSHAKE_FAILURE') return sent ? undefined : 'missing'
  if (m[2] === 'CERTIFICATE_REQUIRED' || !sent) return 'missing'
  return 'rejected'
}

/** An upstream chain no trusted CA vouches for, with what can be said about its CA. */
export interface UntrustedChain {
  readonly chain: ChainFacts
  readonly verdict: TlsVerdict
  readonly caBundle: CaBundleState | undefined
}

/** A refinement of a failure the description depends on. */
type Variant = 'proxy_tls' | 'tunnel' | 'backoff' | 'absolute_tls' | UntrustedChain | KerberosError | ProxyClientCertificateError
type Describe = (ctx: FailureContext, detail: string, variant?: Variant) => { message: string, hint: string }

/**
 * The one table: every failure the sidecar can answer for, its status, and
 * how it is explained. `detail` is the specific cause found by the classifier.
 */
export const FAILURES: Readonly<Record<FailureCode, { status: 403 | 502 | 503 | 504, describe: Describe }>> = {
  proxy_unreachable: {
    status: 502,
    describe: (ctx, detail, variant) => variant === 'absolute_tls'
      ? {
          message: `cannot send the http:// request for ${hostPort(ctx.upstream)} through the https:// proxy ${proxyName(ctx)}: the sidecar's HTTP client sends plain http:// requests (absolute-form) only to an http:// proxy`,
          hint: 'name an http:// proxy for http:// destinations (http_proxy=http://host:port, or PROXY host:port in the PAC file rather than HTTPS), or use the https:// URL of the destination, which is tunnelled through any proxy'
        }
      : {
          message: `cannot reach the proxy ${proxyName(ctx)} (${detail})`,
          hint: 'check the host and port in https_proxy/HTTPS_PROXY and that the proxy is running and reachable from this host'
        }
  },
  proxy_auth_required: {
    status: 502,
    describe: (ctx, detail, variant) => variant === 'backoff'
      ? {
          message: `proxy authentication failed: ${detail}, so that a wrong password cannot lock the account`,
          hint: `${proxyAuthHint(ctx.proxy, ctx.refusal, ctx.upstream.protocol === 'http:')}; the back-off ends at once when a secret file (PROXY_PASSWORD_FILE, HTTPS_PROXY_FILE) changes`
        }
      : {
          message: `proxy authentication failed: ${proxyName(ctx)} answered ${ctx.upstream.protocol === 'http:' ? `the request for ${hostPort(ctx.upstream)}` : 'CONNECT'} with 407 Proxy Authentication Required${offered(ctx)}`,
          hint: proxyAuthHint(ctx.proxy, ctx.refusal, ctx.upstream.protocol === 'http:')
        }
  },
  tunnel_refused: {
    status: 502,
    describe: (ctx, detail) => {
      const said = ctx.refusal?.proxyError
      return {
        message: `the proxy ${proxyName(ctx)} refused the ${ctx.upstream.protocol === 'http:' ? 'request for' : 'tunnel to'} ${hostPort(ctx.upstream)} (${detail}${said !== undefined ? `; the proxy says ${said}` : ''})`,
        hint: tunnelRefusedHint(ctx, said)
      }
    }
  },
  tls_untrusted: {
    status: 502,
    describe: (ctx, detail, variant) => {
      if (variant === 'proxy_tls') {
        return {
          message: `the TLS certificate of the proxy ${proxyName(ctx)} is not trusted (${detail})`,
          hint: 'an https:// proxy must present a certificate the trust store verifies: add its CA with CA_BUNDLE=/path/to/ca.pem, or use http:// if the proxy does not speak TLS'
        }
      }
      if (typeof variant === 'object' && !(variant instanceof KerberosError) && !(variant instanceof ProxyClientCertificateError)) return describeUntrusted(ctx, detail, variant)
      return {
        message: `the TLS certificate of ${hostPort(ctx.upstream)} is not trusted: ${detail}`,
        hint: 'check the endpoint URL and the system clock; if the certificate is issued by a private CA, add that CA with CA_BUNDLE=/path/to/ca.pem'
      }
    }
  },
  dns: {
    status: 502,
    describe: (ctx, detail) => ({
      message: `cannot resolve ${ctx.upstream.hostname} (${detail})`,
      hint: 'check the endpoint host name and this host\'s DNS; if only the proxy can resolve it, remove it from NO_PROXY so the request goes through https_proxy'
    })
  },
  upstream_unreachable: {
    status: 502,
    describe: (ctx, detail) => ({
      message: `cannot connect to ${hostPort(ctx.upstream)} directly (${detail})`,
      hint: 'check the endpoint URL; if outbound traffic must go through a proxy, set https_proxy and make sure NO_PROXY does not match this host'
    })
  },
  timeout: {
    status: 504,
    describe: (ctx, detail, variant) => ({
      message: `timed out ${detail}`,
      hint: variant === 'tunnel'
        ? `the proxy did not answer CONNECT ${hostPort(ctx.upstream)} in time; a proxy slow to answer CONNECT is most often still resolving the name, so first check the host in ${namedIn(ctx)} for a typo; then the proxy's log, and CONNECT_TIMEOUT_MS`
        : 'check the proxy and 3scale\'s status; raise CONNECT_TIMEOUT_MS, RESPONSE_HEADERS_TIMEOUT_MS or IDLE_TIMEOUT_MS if the network is slow'
    })
  },
  reset: {
    status: 502,
    describe: (ctx, detail) => ({
      message: `the connection ${ctx.proxy !== undefined ? `through ${proxyName(ctx)} ` : ''}to ${hostPort(ctx.upstream)} was closed or reset (${detail})`,
      hint: (ctx.proxy !== undefined
        ? 'the proxy or 3scale closed the connection; check the proxy\'s log and its idle timeout (UPSTREAM_KEEPALIVE_MS must stay below it)'
        : 'the upstream closed the connection; check its status and the network path') +
        (ctx.upstream.protocol === 'https:' ? '; an upstream that requires a client certificate (mutual TLS) also closes connections this way: set UPSTREAM_TLS_CERT and UPSTREAM_TLS_KEY' : '')
    })
  },
  upstream_error: {
    status: 502,
    describe: (_ctx, detail) => ({
      message: `the upstream request failed (${detail})`,
      hint: 'run with LOG_LEVEL=debug for the error\'s details'
    })
  },
  destination_not_allowed: {
    status: 403,
    describe: (ctx) => ({
      message: `the forward proxy does not allow ${hostPort(ctx.upstream)}: FORWARD_PROXY_ALLOW does not list it, so nothing was sent to the proxy`,
      hint: `if APIcast must reach it, add ${hostPort(ctx.upstream)} to FORWARD_PROXY_ALLOW (NO_PROXY syntax: host:port, *.domain:port, a CIDR range); if it is an in-cluster host, add it to APIcast's NO_PROXY instead`
    })
  },
  proxy_kerberos: {
    status: 502,
    describe: (ctx, detail, variant) => {
      const k = variant instanceof KerberosError ? variant : undefined
      return {
        message: `Kerberos (Negotiate) could not authenticate to the proxy ${proxyName(ctx)}: ${k?.gssMessage ?? detail}${k !== undefined ? ` (service principal ${k.spn})` : ''}`,
        hint: kerberosHint(k)
      }
    }
  },
  pac_unavailable: {
    status: 502,
    describe: (ctx, detail) => ({
      message: `no proxy decision for ${hostPort(ctx.upstream)}, so nothing was sent: ${detail}`,
      hint: 'PROXY_PAC_URL decides which proxy each destination uses: check that the URL is right, that the sidecar reaches it directly (PAC files are fetched without a proxy, with TLS verified against the trust store) and that its script answers; the sidecar keeps trying, and serves as soon as the PAC answers'
    })
  },
  proxy_client_certificate: {
    status: 502,
    describe: (ctx, detail, variant) => {
      if (variant === 'backoff') {
        return {
          message: `the proxy ${proxyName(ctx)} refused the TLS handshake over the client certificate ${detail}`,
          hint: `${CLIENT_CERTIFICATE_FIX}; the back-off ends at once when PROXY_TLS_CERT or PROXY_TLS_KEY changes`
        }
      }
      const refusal = variant instanceof ProxyClientCertificateError ? variant : undefined
      const alert = alertName(refusal?.alert ?? detail)
      if (refusal?.kind === 'missing') {
        return {
          message: `the proxy ${proxyName(ctx)} requires a TLS client certificate and none was sent (TLS alert ${alert})`,
          hint: 'set PROXY_TLS_CERT and PROXY_TLS_KEY to the PEM certificate and key issued to this sidecar for the proxy (from a Secret: tls.crt and tls.key); CA_BUNDLE does not help, it is what the sidecar trusts, not what it proves'
        }
      }
      return {
        message: `the proxy ${proxyName(ctx)} rejected the TLS client certificate of PROXY_TLS_CERT (TLS alert ${alert})`,
        hint: `${alert === 'certificate_expired' ? 'the certificate has expired (or is not valid yet): renew it; ' : alert === 'unsupported_certificate' ? 'the certificate is not meant for client authentication: it needs the clientAuth extended key usage; ' : alert === 'unknown_ca' ? 'no CA the proxy trusts for clients issued it; ' : ''}` +
          'the certificate must be issued by a CA the proxy trusts for client certificates (ask whoever runs the proxy which one), be within its validity dates and allow client authentication (extended key usage clientAuth); ' +
          'put any intermediate CA certificates after it in PROXY_TLS_CERT. Adding a CA to CA_BUNDLE does not help: that is what the sidecar trusts, not what the proxy trusts'
      }
    }
  },
  too_many_tunnels: {
    status: 503,
    describe: (_ctx, detail) => ({
      message: `the forward proxy has ${detail} tunnels open already (FORWARD_PROXY_MAX_TUNNELS)`,
      hint: 'raise FORWARD_PROXY_MAX_TUNNELS if APIcast needs more at once; otherwise look for clients that hold tunnels open (FORWARD_PROXY_IDLE_TIMEOUT_MS closes silent ones)'
    })
  }
}

/** The fix for a client certificate the proxy refused, missing or rejected (the back-off cannot tell which). */
const CLIENT_CERTIFICATE_FIX = 'the proxy asks for a TLS client certificate: set PROXY_TLS_CERT and PROXY_TLS_KEY, issued by a CA the proxy trusts for clients, not expired, and allowing client authentication (extended key usage clientAuth)'

const PROXY_STATUS = /Proxy response \((\d{3})\) !== 200/
/** undici's SocketError messages for a response it cannot frame. */
const BROKEN_FRAMING = /^bad (response|upgrade)$/
const TIMEOUT_PHASE: Readonly<Record<string, string>> = {
  UND_ERR_CONNECT_TIMEOUT: 'connecting',
  UND_ERR_HEADERS_TIMEOUT: 'waiting for the response headers',
  UND_ERR_BODY_TIMEOUT: 'waiting for the response body'
}
const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NODATA', 'EAI_NONAME'])
const CONNECT_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ETIMEDOUT', 'EHOSTDOWN', 'ENETDOWN'])
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH', 'ECONNABORTED'])

/**
 * Map an undici/Node error from forwarding to exactly one failure. Reads the
 * proxy's status where undici only puts it in the message
 * ("Proxy response (407) !== 200 when HTTP Tunneling").
 */
export function classifyUpstreamError (err: unknown, ctx: FailureContext): Failure {
  const connecting = err instanceof ConnectFailure
  const cause = innermost(connecting ? err.cause : err)
  const code = errorCode(cause)
  const viaProxy = ctx.proxy !== undefined

  const transient = RESET_CODES.has(code)
  const failure = (failureCode: FailureCode, ctx: FailureContext, detail: string, variant?: Variant): Failure =>
    ({ ...describeFailure(failureCode, ctx, detail, variant), transient, cause: err })

  if (cause instanceof UpstreamCertificateError) {
    const chain = cause.chain
    if (chain === undefined || !UNKNOWN_ISSUER.has(cause.reason)) {
      return failure('tls_untrusted', ctx, `${cause.reason} (issued by ${chain?.leaf.issuer ?? '(unknown)'})`)
    }
    return failure('tls_untrusted', ctx, cause.reason,
      { chain, verdict: judgeChain(chain, { host: ctx.upstream.hostname }), caBundle: cause.caBundle })
  }
  const proxyStatus = PROXY_STATUS.exec(messageOf(cause))
  if (proxyStatus !== null) return { ...classifyRefusedTunnel(Number(proxyStatus[1]), ctx), cause: err }
  if (cause instanceof CredentialsBackedOff) return failure('proxy_auth_required', ctx, cause.message, 'backoff')
  if (cause instanceof AbsoluteFormOverTls) return { ...failure('proxy_unreachable', ctx, '', 'absolute_tls'), transient: false }
  if (cause instanceof PacUnavailable) return { ...failure('pac_unavailable', ctx, cause.message), transient: false }
  if (cause instanceof ProxyClientCertificateError) return failure('proxy_client_certificate', ctx, cause.alert, cause)
  if (cause instanceof CertificateBackedOff) {
    return failure('proxy_client_certificate', ctx, `${Math.round(cause.refusedMsAgo / 1000)} s ago; no new connection is tried with the same certificate (or none) for another ${Math.ceil(cause.remainingMs / 1000)} s (PROXY_AUTH_BACKOFF_MS)`, 'backoff')
  }
  // An http: upstream through an https:// proxy: the proxy is the only TLS
  // peer on that path, so an alert over the client certificate is its own,
  // however it arrives (no TunnelClient marked it).
  const absoluteRefusal = ctx.proxy?.url.protocol === 'https:' && ctx.upstream.protocol === 'http:' ? clientCertificateRefusal(code, true) : undefined
  if (absoluteRefusal !== undefined) return failure('proxy_client_certificate', ctx, code, new ProxyClientCertificateError(code, absoluteRefusal, cause))
  if (cause instanceof KerberosError) return { ...failure('proxy_kerberos', ctx, cause.gssMessage, cause), transient: false }
  if (messageOf(cause).includes('Proxy Authentication Required (407)')) {
    return failure('proxy_auth_required', ctx, '')
  }
  const phase = TIMEOUT_PHASE[code]
  if (phase !== undefined) {
    const limit = code === 'UND_ERR_CONNECT_TIMEOUT' || connecting
      ? `CONNECT_TIMEOUT_MS=${ctx.timeouts.connectMs}`
      : code === 'UND_ERR_HEADERS_TIMEOUT'
        ? `RESPONSE_HEADERS_TIMEOUT_MS=${ctx.timeouts.responseHeadersMs}`
        : `IDLE_TIMEOUT_MS=${ctx.timeouts.idleMs}`
    const where = connecting ? (viaProxy ? `opening the tunnel to ${hostPort(ctx.upstream)} through ${proxyName(ctx)}` : `connecting to ${hostPort(ctx.upstream)}`) : phase
    return failure('timeout', ctx, `${where} (${limit})`, connecting && viaProxy ? 'tunnel' : undefined)
  }
  if (isTlsCode(code)) {
    // Upstream certificates are checked by verifyingConnector and arrive as
    // UpstreamCertificateError; a raw TLS error while connecting through an
    // https:// proxy is therefore about the proxy's own certificate.
    const proxyTls = connecting && ctx.proxy?.url.protocol === 'https:'
    return failure('tls_untrusted', ctx, code, proxyTls ? 'proxy_tls' : undefined)
  }
  if (DNS_CODES.has(code)) {
    return viaProxy ? failure('proxy_unreachable', ctx, `${code}: the proxy's host name does not resolve`) : failure('dns', ctx, code)
  }
  if (CONNECT_CODES.has(code)) {
    return viaProxy ? failure('proxy_unreachable', ctx, code) : failure('upstream_unreachable', ctx, code)
  }
  if (code === 'UND_ERR_SOCKET' && BROKEN_FRAMING.test(messageOf(cause))) {
    // undici gives up on the connection when the upstream answers 100
    // Continue unasked (it sends no Expect) or switches protocols unasked.
    // The request reached the upstream: never sent again.
    return { ...failure('upstream_error', ctx, `the upstream answered with an interim 100 Continue or 101 the request did not ask for (${messageOf(cause)}), which undici, the sidecar's HTTP client, cannot read past`), transient: false }
  }
  if (RESET_CODES.has(code)) {
    // TCP to the proxy worked (else ECONNREFUSED), so a close while the
    // tunnel is being set up means the proxy gave up on the upstream.
    return connecting && viaProxy
      ? failure('tunnel_refused', ctx, `${code}: the proxy closed the connection before the tunnel and TLS handshake completed`)
      : failure('reset', ctx, code === 'UND_ERR_SOCKET' ? messageOf(cause) : code)
  }
  return failure('upstream_error', ctx, code !== '' ? `${code}: ${messageOf(cause)}` : messageOf(cause))
}

/** A CONNECT the proxy answered with `status`, not 200: 407 is proxy_auth_required, any other a refusal. */
export function classifyRefusedTunnel (status: number, ctx: FailureContext): Failure {
  return status === 407
    ? { ...describeFailure('proxy_auth_required', ctx, ''), transient: false }
    : { ...describeFailure('tunnel_refused', ctx, `${ctx.upstream.protocol === 'http:' ? 'it answered' : 'CONNECT answered'} ${status}`), transient: false }
}

/** A failure of the sidecar's own making (a refusal, a limit): no error behind it. */
export function describeRefusal (code: 'destination_not_allowed' | 'too_many_tunnels', ctx: FailureContext, detail = ''): Failure {
  return { ...describeFailure(code, ctx, detail), transient: false }
}

function describeFailure (code: FailureCode, ctx: FailureContext, detail: string, variant?: Variant): Omit<Failure, 'transient'> {
  const entry = FAILURES[code]
  return { code, status: entry.status, ...entry.describe(ctx, detail, variant) }
}

/** Verify results meaning "no trusted CA vouches for this chain" (as opposed to expiry or a wrong name). */
const UNKNOWN_ISSUER = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_UNTRUSTED'
])

/**
 * tls_untrusted for a chain no trusted CA vouches for: the certificates the
 * server sent (the top one, and whether it is a CA), what can be said about
 * whose CA it is (tls-verdict.ts: "interception" only on evidence), and
 * where to put the CA, in the terms of CA_BUNDLE's state.
 */
function describeUntrusted (ctx: FailureContext, reason: string, untrusted: UntrustedChain): { message: string, hint: string } {
  const { chain, verdict } = untrusted
  const ca = issuingCa(chain)
  const whose = whoseCa(verdict, ca, ctx)
  return {
    message: `the TLS certificate of ${hostPort(ctx.upstream)} is not trusted: issued by ${chain.leaf.issuer}, which the trust store does not know (${reason}); ` +
      `${presented(chain)}${whose !== '' ? `. ${verdict.code === 'private_ca' ? `${ca} is a private CA: ` : ''}${whose}` : ''}`,
    hint: `${whereToAdd(untrusted.caBundle, ca)}${whomToAsk(verdict, ctx)}; UPSTREAM_TLS_VERIFY=false only as a last resort`
  }
}

/** What the server sent: its own certificate only, or a chain and its top. */
function presented (chain: ChainFacts): string {
  const { leaf, top } = chain
  if (chain.sent === 1) {
    return leaf.selfSigned
      ? `the server sent only a self-signed certificate, ${leaf.subject} (${leaf.ca ? 'a CA' : 'not a CA'})`
      : `the server sent only its own certificate, ${leaf.subject} (not a CA), without the CA that issued it`
  }
  return `the top certificate the server sent is ${top.subject}, issued by ${top.selfSigned ? 'itself' : top.issuer} (${top.ca ? 'a CA' : 'not a CA'})`
}

/**
 * Whose CA `ca` is, as far as the verdict knows; '' for a public one. A
 * private CA without evidence is "your 3scale's, or the proxy's if it
 * inspects TLS": never "interception".
 */
function whoseCa (verdict: TlsVerdict, ca: string, ctx: { readonly upstream: URL, readonly proxy: ProxyEndpoint | undefined }): string {
  const proxy = ctx.proxy !== undefined ? hostPort(ctx.proxy.url) : undefined
  const resigns = proxy !== undefined
    ? `the proxy ${proxy} intercepts TLS, re-signing it with ${ca}`
    : `something on the network path (a transparent proxy or firewall) intercepts TLS, re-signing it with ${ca}`
  switch (verdict.code) {
    case 'public_ca': return ''
    case 'interception':
      return verdict.evidence === 'saas_host'
        ? `${ctx.upstream.hostname} is a 3scale SaaS host, which 3scale serves only with publicly trusted certificates, so ${resigns}`
        : `a direct connection to ${hostPort(ctx.upstream)} gets a different certificate, issued by ${verdict.directIssuer}, so ${resigns}`
    case 'internal_ca':
      return `a direct connection to ${hostPort(ctx.upstream)} gets the same certificate, so the proxy passes TLS through unchanged: ${ca} is the server's own CA (an on-premise 3scale's internal CA), not the proxy's`
    case 'private_ca':
      if (proxy === undefined) return 'most likely an on-premise 3scale\'s own internal CA (no proxy is on this route)'
      return `your 3scale's own internal CA (an on-premise 3scale), or the proxy ${proxy}'s own CA if it inspects TLS; ` +
        (verdict.direct !== undefined
          ? `which one cannot be told, as a direct connection to compare with failed (${verdict.direct.reason})`
          : 'the sidecar cannot tell which from here (doctor compares with a direct connection)')
  }
}

/** Where the CA goes, in the terms of CA_BUNDLE's state: an empty directory is most often a ConfigMap that is not mounted. */
function whereToAdd (caBundle: CaBundleState | undefined, ca: string): string {
  if (caBundle?.directory === true && caBundle.certificates === 0) {
    return `CA_BUNDLE ${caBundle.path} is an empty directory: is the ConfigMap (or volume) with the CA mounted? An optional ConfigMap that does not exist mounts as an empty directory. Put the certificate of ${ca} in it, as PEM`
  }
  if (caBundle !== undefined) {
    return `CA_BUNDLE ${caBundle.path} (${caBundle.certificates} certificate${caBundle.certificates === 1 ? '' : 's'}) does not hold the CA that issued this chain: add the certificate of ${ca} to it, as PEM`
  }
  return `add the certificate of ${ca} with CA_BUNDLE=/path/to/ca.pem (a PEM file, or a directory of them), or SSL_CERT_FILE/NODE_EXTRA_CA_CERTS`
}

/** Who has that CA certificate, as far as the verdict knows. */
function whomToAsk (verdict: TlsVerdict, ctx: FailureContext): string {
  switch (verdict.code) {
    case 'interception': return '; it is the proxy\'s interception CA: get it from whoever runs the proxy, or ask for 3scale\'s hosts to be exempted from TLS interception'
    case 'internal_ca': return '; it is your 3scale\'s internal CA: get it from whoever runs 3scale'
    case 'private_ca': return ctx.proxy !== undefined
      ? '; for an on-premise 3scale it is the internal CA that issued its certificate (ask whoever runs 3scale); if the proxy inspects TLS, it is the proxy\'s CA (ask whoever runs the proxy)' +
        (verdict.direct === undefined ? '; `apicast-sidecar-proxy doctor` compares with a direct connection, where one is possible, to tell which' : '')
      : ''
    case 'public_ca': return ''
  }
}

/**
 * doctor's TLS step when the certificate did not verify: the same wording
 * as the failure a request gets, with the direct comparison doctor made.
 */
export function explainUntrustedCertificate (ctx: FailureContext, reason: string, chain: ChainFacts, caBundle: CaBundleState | undefined, direct: DirectComparison | undefined): { message: string, hint: string } {
  if (!UNKNOWN_ISSUER.has(reason)) return describeFailure('tls_untrusted', ctx, `${reason} (issued by ${chain.leaf.issuer})`)
  return describeUntrusted(ctx, reason, { chain, verdict: judgeChain(chain, { host: ctx.upstream.hostname, direct }), caBundle })
}

/**
 * What to say about a chain that verified, at a route's first connection
 * (and in doctor's TLS step). A private CA that verified is one somebody put
 * in this sidecar's trust store (CA_BUNDLE, SSL_CERT_*, NODE_EXTRA_CA_CERTS
 * or the system bundle): that act is the acknowledgement, so it is said once
 * at `info`, never as a warning on every start. Only evidence of interception
 * (tls-verdict.ts) is a warning: the proxy then reads what is sent to 3scale.
 */
export function describeTrustedChain (chain: ChainFacts, verdict: TlsVerdict, route: { readonly upstream: URL, readonly proxy: ProxyEndpoint | undefined, readonly tokenInQuery: boolean }): { level: 'info' | 'warn', message: string } | undefined {
  if (verdict.code === 'public_ca') return undefined
  const ca = issuingCa(chain)
  const chained = `the certificate of ${hostPort(route.upstream)} is chained to the private CA ${ca}` +
    (chain.anchor !== undefined ? `, trusted from ${chain.anchor.source}` : '')
  const whose = whoseCa(verdict, ca, route)
  if (verdict.code === 'interception') {
    const exposed = route.tokenInQuery
      ? ' It can read the access_token query parameter: set ACCESS_TOKEN_LOCATION=header to move the token into a header.'
      : ' It can read everything sent to 3scale, credentials in the query included.'
    return { level: 'warn', message: `TLS interception: ${chained}; ${whose}.${exposed}` }
  }
  return {
    level: 'info',
    message: `${chained}: ${whose}. A CA in the trust store is taken as known, so this is no warning`
  }
}

/**
 * The fix for an endpoint whose path is not where 3scale's API is: 3scale
 * serves it at the root of its host, so the endpoint is the origin only.
 */
export function endpointOriginFix (url: URL): string {
  return `use the origin only, ${url.origin} (3scale's API is at the root of its host, as in https://acme-admin.3scale.net)`
}

/** What a 404 from the readiness or doctor probe means: the endpoint's path or host, not the token. */
export function endpointNotFoundHint (setting: 'THREESCALE_PORTAL_ENDPOINT' | 'BACKEND_ENDPOINT_OVERRIDE', upstream: URL): string {
  if (upstream.pathname !== '/' && upstream.pathname !== '') {
    return `check the path in ${setting} (${upstream.pathname}): ${endpointOriginFix(upstream)}; keep a path only where 3scale is published under one, behind a reverse proxy`
  }
  return `${upstream.host} has no 3scale API at ${setting === 'THREESCALE_PORTAL_ENDPOINT' ? '/admin/api' : '/transactions'}: check the host in ${setting}` +
    (setting === 'THREESCALE_PORTAL_ENDPOINT' ? ' (the admin portal\'s host, such as acme-admin.3scale.net, not the developer portal\'s)' : '')
}

/** Where the upstream's name was written, for a fix that asks to check it. */
function namedIn (ctx: FailureContext): string {
  return ctx.named ?? 'the endpoint (THREESCALE_PORTAL_ENDPOINT or BACKEND_ENDPOINT_OVERRIDE)'
}

function proxyName (ctx: FailureContext): string {
  return ctx.proxy !== undefined ? hostPort(ctx.proxy.url) : '(none)'
}

/** Schemes the sidecar answers (TunnelClient). */
const SPOKEN = new Set(['basic', 'digest', 'ntlm'])

/** What to do about a 407 from `proxy`, from what it offered (failure log lines and doctor). */
export function proxyAuthHint (proxy: ProxyEndpoint | undefined, refusal: TunnelRefusal | undefined, absoluteForm = false): string {
  const variable = absoluteForm ? 'http_proxy' : 'https_proxy'
  if (proxy !== undefined && proxy.username === '') {
    return `the proxy URL has no credentials; set them as http://user:password@host:port in ${variable} (percent-encode @ : % # / ? in them), or use PROXY_USER and PROXY_PASSWORD_FILE`
  }
  const schemes = refusal?.statusCode === 407 ? refusal.schemes : []
  const check = `check the user and password in ${variable} (percent-encode @ : % # / ? in them as %40 %3A %25 %23 %2F %3F, or use PROXY_USER and PROXY_PASSWORD_FILE)`
  if (absoluteForm) {
    // undici's absolute-form client keeps the 407's Proxy-Authenticate to itself.
    return `${check}; a request for an http:// URL goes to the proxy in absolute-form, with Basic credentials only: if the proxy asks for Digest or NTLM, use the https:// URL, whose tunnel answers them`
  }
  const forced = refusal?.forced
  if (forced !== undefined && schemes.length > 0 && !schemes.some((s) => s.toLowerCase() === forced)) {
    return `PROXY_AUTH_SCHEME=${forced}, but the proxy offers only ${schemes.join(', ')}: set PROXY_AUTH_SCHEME=auto, or to a scheme it offers`
  }
  if (schemes.length > 0 && schemes.every((s) => s.toLowerCase() === 'negotiate')) {
    return 'the proxy asks for Negotiate (Kerberos) only: give the sidecar Kerberos credentials, a client keytab (KRB5_CLIENT_KTNAME) or a ticket cache from kinit (KRB5CCNAME), with KRB5_CONFIG; with them set, this refusal means the proxy does not accept the principal (PROXY_KRB5_PRINCIPAL) or the service principal is not the proxy\'s (PROXY_KRB5_SPN; by default HTTP@ the host in the proxy URL)'
  }
  if (schemes.length === 0 || schemes.some((s) => SPOKEN.has(s.toLowerCase()))) {
    return `${check}; the sidecar answers Basic, Digest and NTLM challenges (PROXY_AUTH_SCHEME forces one; NTLM takes DOMAIN\\user)`
  }
  return `the proxy asks only for ${schemes.join(', ')}, which this sidecar does not answer. Ask for NTLM, Digest, Basic or Negotiate to be allowed for this account`
}

/** The fix for a Kerberos failure, by what GSSAPI said. Never a token: GSSAPI's messages hold none. */
function kerberosHint (k: KerberosError | undefined): string {
  switch (k?.kind) {
    case 'addon_missing':
      return 'the Kerberos addon (the optional kerberos package) or MIT\'s GSSAPI library is not there: run from an npm install that built it (it needs the MIT headers, krb5-devel or libkrb5-dev, to build) with libgssapi_krb5 installed (krb5-libs on RHEL and UBI, libgssapi-krb5-2 on Debian), or install node_modules/kerberos beside the single binary; the container image carries both. Basic, Digest and NTLM work without it'
    case 'no_credentials':
      return 'no Kerberos credentials: give a client keytab with KRB5_CLIENT_KTNAME=/path/client.keytab (the way for a service: GSSAPI gets and renews tickets by itself), or run kinit and point KRB5CCNAME at its cache'
    case 'expired':
      return 'the ticket in KRB5CCNAME has expired: run kinit again, or give a client keytab (KRB5_CLIENT_KTNAME), whose tickets GSSAPI renews by itself'
    case 'kdc_unreachable':
      return 'the KDC cannot be reached: check the realm\'s kdc in KRB5_CONFIG (krb5.conf) and that port 88 (TCP and UDP) of the KDC is reachable from here'
    case 'clock_skew':
      return 'this host\'s clock and the KDC\'s differ by more than the 5 minutes Kerberos allows: fix the time synchronisation (chrony, NTP)'
    case 'unknown_spn':
      return `the KDC knows no service principal ${k.spn}: it is HTTP@ and the proxy's host name as written in the proxy URL; for a proxy reached through an alias or a load balancer, set PROXY_KRB5_SPN to its real principal (HTTP@proxy.corp.example)`
    case 'wrong_realm':
      return `the proxy's realm is not one this realm can reach (${k.gssMessage.match(/krbtgt\/\S+/)?.[0] ?? 'no cross-realm trust'}): check [domain_realm] in KRB5_CONFIG (krb5.conf), which maps the proxy's host to its realm, and default_realm; or set PROXY_KRB5_SPN to the proxy's principal with its realm`
    case 'principal_not_held':
      return 'the keytab or ticket cache holds no credentials for that client principal: check PROXY_KRB5_PRINCIPAL, its spelling and its realm (klist -k on the keytab, klist on the cache, shows what they hold), or leave it unset to use the one they hold'
    default:
      return 'check the Kerberos settings: KRB5_CONFIG, KRB5_CLIENT_KTNAME or KRB5CCNAME, PROXY_KRB5_PRINCIPAL and PROXY_KRB5_SPN; `doctor` shows the Kerberos step'
  }
}

/** The fix for a refused tunnel, from what the proxy said about it. */
function tunnelRefusedHint (ctx: FailureContext, said: string | undefined): string {
  const target = hostPort(ctx.upstream)
  const what = ctx.upstream.protocol === 'http:' ? 'requests' : 'CONNECT'
  if (said !== undefined && /^ERR_DNS_FAIL\b/.test(said)) {
    return `the proxy cannot resolve ${ctx.upstream.hostname}: check the host name in ${namedIn(ctx)} for a typo; if it is right, the proxy's DNS does not know it`
  }
  if (said !== undefined && /^ERR_CANNOT_FORWARD\b/.test(said)) {
    // squid's answer when the name does not resolve for a CONNECT, among others.
    return `the proxy could not forward to ${target}: most often it cannot resolve ${ctx.upstream.hostname}, so check the host name in ${namedIn(ctx)} for a typo; else no route leads there from the proxy`
  }
  if (said !== undefined && /^ERR_(CONNECT_FAIL|ZERO_SIZE_OBJECT|READ_TIMEOUT)\b/.test(said)) {
    return `the proxy resolved ${ctx.upstream.hostname} but cannot connect to ${target}: check the port in the endpoint, and that the host is up and reachable from the proxy`
  }
  if ((said !== undefined && /^ERR_ACCESS_DENIED\b/.test(said)) || ctx.refusal?.statusCode === 403) {
    return `the proxy's policy does not allow ${what} to ${target}: ask for it to be allowed; if this host must be reached directly, add it to NO_PROXY`
  }
  return `check that the proxy allows ${what} to ${target} and can resolve and reach it; if this host must be reached directly, add it to NO_PROXY`
}

function offered (ctx: FailureContext): string {
  const schemes = ctx.refusal?.statusCode === 407 ? ctx.refusal.schemes : []
  return schemes.length > 0
    ? `; it offers ${schemes.join(', ')}`
    : '; it offered no Proxy-Authenticate scheme'
}

/** Happy-eyeballs connects fail with an AggregateError; its first error says why. */
/** One link of an error's chain, as the debug line shows it. */
export interface CauseLink {
  readonly name: string
  readonly code?: string
  readonly message: string
}

/**
 * The error behind a failure, link by link through `cause` (and the first of
 * an AggregateError's errors, as Node's connect gives when every address
 * failed), for the debug line the upstream_error hint promises: name, code
 * and message, the message redacted (it is undici's, Node's or OpenSSL's
 * text, and may quote a URL), no stack. At most 5 links.
 */
export function causeChain (err: unknown): CauseLink[] {
  const links: CauseLink[] = []
  let current = err
  while (current !== undefined && current !== null && links.length < 5) {
    const code = errorCode(current)
    links.push({
      name: current instanceof Error ? current.name : typeof current,
      ...(code !== '' ? { code } : {}),
      message: redactText(messageOf(current))
    })
    const next: unknown = current instanceof AggregateError && current.errors.length > 0 ? current.errors[0] : (current as { cause?: unknown }).cause
    if (next === current) break
    current = next
  }
  return links
}

function innermost (err: unknown): unknown {
  if (err instanceof AggregateError && err.errors.length > 0 && errorCode(err) === '') return err.errors[0]
  return err
}

function errorCode (err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : ''
}

function messageOf (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** OpenSSL verify results Node reports as error codes, besides those naming CERT. */
const TLS_VERIFY_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY', 'INVALID_CA',
  'PATH_LENGTH_EXCEEDED', 'INVALID_PURPOSE', 'HOSTNAME_MISMATCH', 'UND_ERR_PRX_TLS', 'EPROTO'
])

/** True for a Node/OpenSSL error code that means a TLS handshake or verification failure. */
export function isTlsCode (code: string): boolean {
  return code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || code.includes('CERT') || TLS_VERIFY_CODES.has(code)
}
