import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { errors as undiciErrors } from 'undici'
import { parseProxyUrl, type ProxyEndpoint } from '../../src/egress/egress.js'
import { causeChain, classifyRefusedTunnel, classifyUpstreamError, clientCertificateRefusal, ConnectFailure, describeRefusal, isFailoverFailure, ProxyClientCertificateError, tunnelRefusalOf, UpstreamCertificateError, type CauseLink, type FailureContext } from '../../src/failures/catalogue.js'
import { CertificateBackedOff } from '../../src/egress/credential-gate.js'
import type { ChainFacts } from '../../src/tls/tls-verdict.js'

const proxied: ProxyEndpoint | undefined = parseProxyUrl('http://u:p@proxy.corp:3128')
const direct: ProxyEndpoint | undefined = undefined
const timeouts = { connectMs: 10000, responseHeadersMs: 60000, idleMs: 60000 }
const ctx = (proxy: ProxyEndpoint | undefined, refusal?: FailureContext['refusal']): FailureContext =>
  ({ upstream: new URL('https://su1.3scale.net'), proxy, refusal, timeouts })

const zscalerChain: ChainFacts = {
  leaf: { subject: 'CN=su1.3scale.net', issuer: 'CN=Zscaler Root CA', ca: false, selfSigned: false, fingerprint: 'AA' },
  top: { subject: 'CN=Zscaler Root CA', issuer: 'CN=Zscaler Root CA', ca: true, selfSigned: true },
  sent: 2,
  anchor: undefined,
  publicRoot: false
}

function sysError (code: string, syscall = 'connect'): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`${syscall} ${code}`)
  err.code = code
  err.syscall = syscall
  return err
}

describe('classifyUpstreamError', () => {
  const cases: Array<{ name: string, err: unknown, ctx: FailureContext, code: string, status: number, message: RegExp, transient?: boolean }> = [
    { name: 'proxy refuses TCP', err: new ConnectFailure(sysError('ECONNREFUSED')), ctx: ctx(proxied), code: 'proxy_unreachable', status: 502, message: /proxy\.corp:3128 \(ECONNREFUSED\)/ },
    { name: 'proxy name does not resolve', err: new ConnectFailure(sysError('ENOTFOUND', 'getaddrinfo')), ctx: ctx(proxied), code: 'proxy_unreachable', status: 502, message: /does not resolve/ },
    { name: 'happy-eyeballs AggregateError', err: new ConnectFailure(new AggregateError([sysError('ECONNREFUSED'), sysError('ECONNREFUSED')])), ctx: ctx(proxied), code: 'proxy_unreachable', status: 502, message: /ECONNREFUSED/ },
    { name: '407 with schemes', err: new ConnectFailure(new undiciErrors.RequestAbortedError('Proxy response (407) !== 200 when HTTP Tunneling')), ctx: ctx(proxied, { statusCode: 407, schemes: ['Negotiate', 'NTLM'] }), code: 'proxy_auth_required', status: 502, message: /it offers Negotiate, NTLM/ },
    { name: '407 without schemes', err: new undiciErrors.RequestAbortedError('Proxy response (407) !== 200 when HTTP Tunneling'), ctx: ctx(proxied), code: 'proxy_auth_required', status: 502, message: /offered no Proxy-Authenticate scheme/ },
    { name: '407 to an absolute-form request', err: new undiciErrors.InvalidArgumentError('Proxy Authentication Required (407)'), ctx: ctx(proxied), code: 'proxy_auth_required', status: 502, message: /407/ },
    { name: 'CONNECT refused 403', err: new ConnectFailure(new undiciErrors.RequestAbortedError('Proxy response (403) !== 200 when HTTP Tunneling')), ctx: ctx(proxied), code: 'tunnel_refused', status: 502, message: /CONNECT answered 403/ },
    { name: 'CONNECT refused 503', err: new undiciErrors.RequestAbortedError('Proxy response (503) !== 200 when HTTP Tunneling'), ctx: ctx(proxied), code: 'tunnel_refused', status: 502, message: /CONNECT answered 503/ },
    { name: 'tunnel closed during set-up', err: new ConnectFailure(new undiciErrors.SocketError('other side closed')), ctx: ctx(proxied), code: 'tunnel_refused', status: 502, message: /before the tunnel and TLS handshake completed/, transient: true },
    { name: 'direct DNS failure', err: new ConnectFailure(sysError('ENOTFOUND', 'getaddrinfo')), ctx: ctx(direct), code: 'dns', status: 502, message: /cannot resolve su1\.3scale\.net \(ENOTFOUND\)/ },
    { name: 'direct EAI_AGAIN', err: new ConnectFailure(sysError('EAI_AGAIN', 'getaddrinfo')), ctx: ctx(direct), code: 'dns', status: 502, message: /EAI_AGAIN/ },
    { name: 'direct connection refused', err: new ConnectFailure(sysError('ECONNREFUSED')), ctx: ctx(direct), code: 'upstream_unreachable', status: 502, message: /su1\.3scale\.net:443 directly/ },
    { name: 'direct network unreachable', err: new ConnectFailure(sysError('ENETUNREACH')), ctx: ctx(direct), code: 'upstream_unreachable', status: 502, message: /ENETUNREACH/ },
    { name: 'untrusted certificate', err: new ConnectFailure(new UpstreamCertificateError('SELF_SIGNED_CERT_IN_CHAIN', zscalerChain, undefined)), ctx: ctx(proxied), code: 'tls_untrusted', status: 502, message: /issued by CN=Zscaler Root CA/ },
    { name: 'TLS error to an https proxy', err: new ConnectFailure(sysError('UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'tls')), ctx: ctx(proxied), code: 'tls_untrusted', status: 502, message: /UNABLE_TO_VERIFY_LEAF_SIGNATURE/ },
    { name: 'connect timeout', err: new ConnectFailure(new undiciErrors.ConnectTimeoutError()), ctx: ctx(direct), code: 'timeout', status: 504, message: /connecting to su1\.3scale\.net:443 \(CONNECT_TIMEOUT_MS=10000\)/ },
    { name: 'CONNECT reply timeout', err: new ConnectFailure(new undiciErrors.HeadersTimeoutError()), ctx: ctx(proxied), code: 'timeout', status: 504, message: /opening the tunnel to su1\.3scale\.net:443 through proxy\.corp:3128/ },
    { name: 'response headers timeout', err: new undiciErrors.HeadersTimeoutError(), ctx: ctx(proxied), code: 'timeout', status: 504, message: /RESPONSE_HEADERS_TIMEOUT_MS=60000/ },
    { name: 'CONNECT refused for a name the proxy cannot resolve', err: new ConnectFailure(new undiciErrors.RequestAbortedError('Proxy response (503) !== 200 when HTTP Tunneling')), ctx: ctx(proxied, { statusCode: 503, schemes: [], proxyError: 'ERR_DNS_FAIL 0' }), code: 'tunnel_refused', status: 502, message: /refused the tunnel to su1\.3scale\.net:443 \(CONNECT answered 503; the proxy says ERR_DNS_FAIL 0\)/ },
    { name: 'CONNECT slow to answer: names the target', err: new ConnectFailure(new undiciErrors.HeadersTimeoutError()), ctx: ctx(proxied), code: 'timeout', status: 504, message: /opening the tunnel to su1\.3scale\.net:443 through proxy\.corp:3128/ },
    { name: 'an unsolicited 100 Continue', err: new undiciErrors.SocketError('bad response'), ctx: ctx(direct), code: 'upstream_error', status: 502, message: /interim 100 Continue/, transient: false },
    { name: 'an unsolicited 101', err: new undiciErrors.SocketError('bad upgrade'), ctx: ctx(proxied), code: 'upstream_error', status: 502, message: /bad upgrade/, transient: false },
    { name: 'body idle timeout', err: new undiciErrors.BodyTimeoutError(), ctx: ctx(proxied), code: 'timeout', status: 504, message: /IDLE_TIMEOUT_MS=60000/ },
    { name: 'reset after sending', err: new undiciErrors.SocketError('other side closed'), ctx: ctx(proxied), code: 'reset', status: 502, message: /through proxy\.corp:3128 to su1\.3scale\.net:443 was closed or reset/, transient: true },
    { name: 'ECONNRESET direct', err: sysError('ECONNRESET', 'read'), ctx: ctx(direct), code: 'reset', status: 502, message: /ECONNRESET/, transient: true },
    { name: 'anything else', err: new Error('surprise'), ctx: ctx(direct), code: 'upstream_error', status: 502, message: /surprise/ }
  ]
  for (const c of cases) {
    it(`${c.name} → ${c.code}`, () => {
      const got = classifyUpstreamError(c.err, c.ctx)
      assert.equal(got.code, c.code)
      assert.equal(got.status, c.status)
      assert.match(got.message, c.message)
      assert.ok(got.hint.length > 20, 'every failure says what to check')
      assert.equal(got.transient, c.transient ?? false, 'only a reset or closed connection is worth a fresh one')
      assert.doesNotMatch(got.message + got.hint, /u:p@|:p@/)
    })
  }
})

describe('a TLS client certificate an https:// proxy refused: proxy_client_certificate, never tls_untrusted', () => {
  const tlsProxy = parseProxyUrl('https://proxy.corp:3129')
  // The codes seen from squid 5.7 with Node 20 and 24 (see ProxyClientCertificateError), and other servers' alerts.
  const refusals: Array<{ code: string, sent: boolean, want: 'missing' | 'rejected' | undefined }> = [
    { code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', sent: false, want: 'missing' },
    { code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', sent: true, want: 'missing' },
    { code: 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', sent: true, want: 'rejected' },
    { code: 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', sent: false, want: 'missing' },
    { code: 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE', sent: false, want: 'missing' },
    { code: 'ERR_SSL_SSL/TLS_ALERT_HANDSHAKE_FAILURE', sent: false, want: 'missing' },
    { code: 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE', sent: true, want: undefined },
    { code: 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE', sent: true, want: 'rejected' },
    { code: 'ERR_SSL_SSL/TLS_ALERT_BAD_CERTIFICATE', sent: true, want: 'rejected' },
    { code: 'ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED', sent: true, want: 'rejected' },
    { code: 'ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN', sent: true, want: 'rejected' },
    { code: 'ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE', sent: true, want: 'rejected' },
    { code: 'ERR_SSL_TLSV1_ALERT_ACCESS_DENIED', sent: true, want: 'rejected' },
    { code: 'ERR_SSL_WRONG_VERSION_NUMBER', sent: true, want: undefined },
    { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', sent: false, want: undefined }
  ]
  for (const r of refusals) {
    it(`${r.code}, ${r.sent ? 'a certificate' : 'none'} sent → ${String(r.want)}`, () => {
      assert.equal(clientCertificateRefusal(r.code, r.sent), r.want)
    })
  }

  const alert = (code: string): NodeJS.ErrnoException => sysError(code, 'read')
  const cases: Array<{ name: string, err: unknown, ctx: FailureContext, message: RegExp, hint: RegExp }> = [
    {
      name: 'none sent (TLS 1.3)',
      err: new ConnectFailure(new ProxyClientCertificateError('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', 'missing', alert('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED'))),
      ctx: ctx(tlsProxy),
      message: /proxy proxy\.corp:3129 requires a TLS client certificate and none was sent \(TLS alert certificate_required\)/,
      hint: /set PROXY_TLS_CERT and PROXY_TLS_KEY/
    },
    {
      name: 'another CA\'s',
      err: new ConnectFailure(new ProxyClientCertificateError('ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'rejected', alert('ERR_SSL_TLSV1_ALERT_UNKNOWN_CA'))),
      ctx: ctx(tlsProxy),
      message: /proxy proxy\.corp:3129 rejected the TLS client certificate of PROXY_TLS_CERT \(TLS alert unknown_ca\)/,
      hint: /^no CA the proxy trusts for clients issued it; .*a CA the proxy trusts for client certificates.*clientAuth/
    },
    {
      name: 'expired',
      err: new ConnectFailure(new ProxyClientCertificateError('ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED', 'rejected', alert('ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED'))),
      ctx: ctx(tlsProxy),
      message: /TLS alert certificate_expired/,
      hint: /^the certificate has expired/
    },
    {
      name: 'backed off',
      err: new ConnectFailure(new CertificateBackedOff(2000, 58_000)),
      ctx: ctx(tlsProxy),
      message: /^the proxy proxy\.corp:3129 refused the TLS handshake over the client certificate 2 s ago; no new connection is tried with the same certificate \(or none\) for another 58 s \(PROXY_AUTH_BACKOFF_MS\)$/,
      hint: /PROXY_TLS_CERT and PROXY_TLS_KEY.*the back-off ends at once when PROXY_TLS_CERT or PROXY_TLS_KEY changes/
    },
    {
      name: 'an http: upstream in absolute-form: the proxy is the only TLS peer',
      err: alert('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED'),
      ctx: { ...ctx(tlsProxy), upstream: new URL('http://backend.internal') },
      message: /requires a TLS client certificate and none was sent/,
      hint: /PROXY_TLS_CERT/
    }
  ]
  for (const c of cases) {
    it(`${c.name} → proxy_client_certificate`, () => {
      const got = classifyUpstreamError(c.err, c.ctx)
      assert.equal(got.code, 'proxy_client_certificate')
      assert.equal(got.status, 502)
      assert.match(got.message, c.message)
      assert.match(got.hint, c.hint)
      assert.doesNotMatch(got.hint, /add (its|the) CA with CA_BUNDLE/, 'adding a CA is the wrong fix')
      assert.equal(got.transient, false)
      assert.equal(isFailoverFailure(got), true, 'another proxy may not ask for a certificate')
    })
  }

  it('the same alert from the upstream, through a tunnel that was open, is not the proxy\'s', () => {
    // Without the marker TunnelClient sets, an alert on an https: upstream is
    // the upstream's TLS (mutual TLS with 3scale): not this failure.
    assert.notEqual(classifyUpstreamError(alert('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED'), ctx(tlsProxy)).code, 'proxy_client_certificate')
  })
})

describe('the 407 hint follows the schemes the proxy offers', () => {
  const hint = (schemes: string[]): string => classifyUpstreamError(
    new ConnectFailure(new undiciErrors.RequestAbortedError('Proxy response (407) !== 200 when HTTP Tunneling')),
    ctx(proxied, { statusCode: 407, schemes })).hint
  it('Basic or Digest offered: check the credentials', () => {
    assert.match(hint(['Digest']), /check the user and password in https_proxy.*answers Basic, Digest and NTLM/)
    assert.match(hint(['NTLM', 'Basic']), /check the user and password/)
  })
  it('PROXY_AUTH_SCHEME forcing a scheme the proxy does not offer: say so', () => {
    const forcedHint = classifyUpstreamError(
      new ConnectFailure(new undiciErrors.RequestAbortedError('Proxy response (407) !== 200 when HTTP Tunneling')),
      ctx(proxied, { statusCode: 407, schemes: ['Basic'], forced: 'ntlm' })).hint
    assert.equal(forcedHint, 'PROXY_AUTH_SCHEME=ntlm, but the proxy offers only Basic: set PROXY_AUTH_SCHEME=auto, or to a scheme it offers')
  })

  it('Negotiate only: name the Kerberos credentials it takes, and what a refusal with them means', () => {
    assert.match(hint(['Negotiate']), /asks for Negotiate \(Kerberos\) only: give the sidecar Kerberos credentials, a client keytab \(KRB5_CLIENT_KTNAME\) or a ticket cache from kinit \(KRB5CCNAME\).*PROXY_KRB5_SPN/)
    assert.match(hint(['Negotiate', 'NTLM']), /check the user and password/)
  })

  it('only schemes the sidecar does not answer: say so', () => {
    assert.match(hint(['Bearer']), /asks only for Bearer, which this sidecar does not answer/)
  })
})

describe('the fix follows what the proxy said', () => {
  const refused = (proxyError: string | undefined, statusCode = 503): string =>
    classifyUpstreamError(new ConnectFailure(new undiciErrors.RequestAbortedError(`Proxy response (${statusCode}) !== 200 when HTTP Tunneling`)), ctx(proxied, { statusCode, schemes: [], proxyError })).hint
  const rows: Array<[string | undefined, number, RegExp]> = [
    ['ERR_DNS_FAIL 0', 503, /cannot resolve su1\.3scale\.net: check the host name in the endpoint \(THREESCALE_PORTAL_ENDPOINT or BACKEND_ENDPOINT_OVERRIDE\) for a typo/],
    ['ERR_CONNECT_FAIL 111', 503, /cannot connect to su1\.3scale\.net:443: check the port/],
    ['ERR_CANNOT_FORWARD 0', 500, /most often it cannot resolve su1\.3scale\.net, so check the host name in the endpoint/],
    ['ERR_ACCESS_DENIED 0', 403, /policy does not allow CONNECT to su1\.3scale\.net:443/],
    [undefined, 403, /policy does not allow CONNECT/],
    [undefined, 502, /check that the proxy allows CONNECT to su1\.3scale\.net:443 and can resolve and reach it/]
  ]
  for (const [said, status, hint] of rows) it(`${String(said)} (${status})`, () => { assert.match(refused(said, status), hint) })
  it('a CONNECT timeout points at the host name first, not at raising timeouts', () => {
    const { hint } = classifyUpstreamError(new ConnectFailure(new undiciErrors.HeadersTimeoutError()), ctx(proxied))
    assert.match(hint, /still resolving the name, so first check the host in the endpoint/)
  })
})

describe('the forward proxy\'s failures', () => {
  const destination = { upstream: new URL('https://idp.corp.example:8443'), proxy: proxied, timeouts, named: 'the destination APIcast asked for (its CONNECT host:port)' }
  const rows: Array<{ name: string, failure: ReturnType<typeof describeRefusal>, code: string, status: number, message: RegExp, hint: RegExp }> = [
    { name: 'a destination not allowed', failure: describeRefusal('destination_not_allowed', destination), code: 'destination_not_allowed', status: 403, message: /does not allow idp\.corp\.example:8443: FORWARD_PROXY_ALLOW does not list it, so nothing was sent to the proxy/, hint: /add idp\.corp\.example:8443 to FORWARD_PROXY_ALLOW/ },
    { name: 'too many tunnels', failure: describeRefusal('too_many_tunnels', destination, '256'), code: 'too_many_tunnels', status: 503, message: /has 256 tunnels open already \(FORWARD_PROXY_MAX_TUNNELS\)/, hint: /FORWARD_PROXY_IDLE_TIMEOUT_MS/ },
    { name: 'a 407 to a CONNECT', failure: classifyRefusedTunnel(407, { ...destination, refusal: tunnelRefusalOf(407, { 'proxy-authenticate': 'Basic realm="x", NTLM' }, 'auto') }), code: 'proxy_auth_required', status: 502, message: /it offers Basic, NTLM/, hint: /check the user and password/ },
    { name: 'squid cannot resolve the destination', failure: classifyRefusedTunnel(503, { ...destination, refusal: tunnelRefusalOf(503, { 'x-squid-error': 'ERR_DNS_FAIL 0' }, 'auto') }), code: 'tunnel_refused', status: 502, message: /refused the tunnel to idp\.corp\.example:8443 \(CONNECT answered 503; the proxy says ERR_DNS_FAIL 0\)/, hint: /check the host name in the destination APIcast asked for/ }
  ]
  for (const row of rows) {
    it(row.name, () => {
      assert.equal(row.failure.code, row.code)
      assert.equal(row.failure.status, row.status)
      assert.match(row.failure.message, row.message)
      assert.match(row.failure.hint, row.hint)
      assert.equal(row.failure.transient, false)
    })
  }
  it('a refusal\'s squid error is made printable and short; a forced scheme is kept', () => {
    const refusal = tunnelRefusalOf(403, { 'x-squid-error': 'ERR_ACCESS_DENIED\u0007 ' + 'x'.repeat(200) }, 'ntlm')
    assert.equal(refusal.proxyError?.length, 100)
    assert.ok(!(refusal.proxyError ?? '').includes('\u0007'))
    assert.equal(refusal.forced, 'ntlm')
  })
})

describe('causeChain: every failure keeps its cause, for the debug line', () => {
  const refused = sysError('ECONNREFUSED')
  const cases: Array<[string, unknown, CauseLink[]]> = [
    ['a plain error', refused, [{ name: 'Error', code: 'ECONNREFUSED', message: 'connect ECONNREFUSED' }]],
    ['wrapped by the connector: both links', new ConnectFailure(refused), [
      { name: 'ConnectFailure', code: 'SIDECAR_CONNECT_FAILED', message: 'connect ECONNREFUSED' }, { name: 'Error', code: 'ECONNREFUSED', message: 'connect ECONNREFUSED' }]],
    ['every address refused (AggregateError): the first one', new AggregateError([refused, sysError('ENETUNREACH')], 'all failed'), [
      { name: 'AggregateError', message: 'all failed' }, { name: 'Error', code: 'ECONNREFUSED', message: 'connect ECONNREFUSED' }]],
    ['a message quoting a proxy URL with its password: redacted', new Error('bad proxy http://alice:s3cret@proxy:3128'), [
      { name: 'Error', message: 'bad proxy http://[REDACTED]@proxy:3128' }]],
    ['something thrown that is not an Error', 'boom', [{ name: 'string', message: 'boom' }]]
  ]
  for (const [name, err, want] of cases) it(name, () => assert.deepEqual(causeChain(err), want))

  it('a chain that loops ends after 5 links', () => {
    const a = new Error('a') as Error & { cause?: unknown }
    const b = new Error('b', { cause: a })
    a.cause = b
    assert.equal(causeChain(a).length, 5)
  })

  it('classifyUpstreamError keeps the error it classified', () => {
    const err = new ConnectFailure(refused)
    assert.equal(classifyUpstreamError(err, ctx(proxied)).cause, err)
  })
})
