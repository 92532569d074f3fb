import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseProxyUrl, type ProxyEndpoint } from '../../src/egress/egress.js'
import { classifyUpstreamError, ConnectFailure, describeTrustedChain, explainUntrustedCertificate, UpstreamCertificateError, type FailureContext } from '../../src/failures/catalogue.js'
import { isSaasHost, issuingCa, judgeChain, type CaBundleState, type ChainFacts, type DirectComparison, type TlsVerdictCode } from '../../src/tls/tls-verdict.js'

const proxy: ProxyEndpoint = parseProxyUrl('http://u:p@proxy.corp:3128')
const timeouts = { connectMs: 10000, responseHeadersMs: 60000, idleMs: 60000 }
const ctx = (host: string, via: ProxyEndpoint | undefined): FailureContext => ({ upstream: new URL(`https://${host}`), proxy: via, timeouts })

/** An on-premise server that sends only its own certificate, from an internal CA. */
const leafOnly: ChainFacts = {
  leaf: { subject: 'CN=threescale.corp.example', issuer: 'CN=Acme Internal CA, O=Acme', ca: false, selfSigned: false, fingerprint: 'AA:01' },
  top: { subject: 'CN=threescale.corp.example', issuer: 'CN=Acme Internal CA, O=Acme', ca: false, selfSigned: false },
  sent: 1,
  anchor: undefined,
  publicRoot: false
}
/** A leaf and the self-signed CA that issued it, as squid's ssl-bump sends them. */
const withRoot: ChainFacts = {
  leaf: { subject: 'CN=su1.3scale.net', issuer: 'CN=Corp Proxy CA', ca: false, selfSigned: false, fingerprint: 'BB:02' },
  top: { subject: 'CN=Corp Proxy CA', issuer: 'CN=Corp Proxy CA', ca: true, selfSigned: true },
  sent: 2,
  anchor: undefined,
  publicRoot: false
}
const publicChain: ChainFacts = { ...withRoot, top: { ...withRoot.top, subject: 'CN=ISRG Root X1', issuer: 'CN=ISRG Root X1' }, publicRoot: true }
const trusted = (chain: ChainFacts, source: string): ChainFacts => ({ ...chain, anchor: { subject: issuingCa(chain), source } })

describe('isSaasHost: names 3scale serves only with public certificates', () => {
  const rows: Array<[string, boolean]> = [
    ['acme-admin.3scale.net', true],
    ['su1.3scale.net', true],
    ['3scale.net', true],
    ['SU1.3SCALE.NET.', true],
    ['3scale.net.corp.example', false],
    ['my3scale.net', false],
    ['threescale.corp.example', false],
    ['portal.test', false]
  ]
  for (const [host, want] of rows) it(`${host} → ${String(want)}`, () => { assert.equal(isSaasHost(host), want) })
})

describe('judgeChain: "interception" only on evidence', () => {
  const rows: Array<{ name: string, chain: ChainFacts, host: string, direct?: DirectComparison, want: TlsVerdictCode }> = [
    { name: 'a public root', chain: publicChain, host: 'threescale.corp.example', want: 'public_ca' },
    { name: 'a public root for SaaS', chain: publicChain, host: 'su1.3scale.net', want: 'public_ca' },
    { name: 'a private CA for an on-premise name', chain: leafOnly, host: 'threescale.corp.example', want: 'private_ca' },
    { name: 'a private CA for a 3scale SaaS name', chain: withRoot, host: 'su1.3scale.net', want: 'interception' },
    { name: 'a private CA, the same certificate directly', chain: leafOnly, host: 'threescale.corp.example', direct: { kind: 'same' }, want: 'internal_ca' },
    { name: 'a private CA, another certificate directly', chain: withRoot, host: 'threescale.corp.example', direct: { kind: 'different', issuer: 'CN=Acme Internal CA' }, want: 'interception' },
    { name: 'a private CA, no direct connection possible', chain: leafOnly, host: 'threescale.corp.example', direct: { kind: 'unavailable', reason: 'ENOTFOUND' }, want: 'private_ca' },
    { name: 'SaaS wins over a direct comparison (a transparent proxy re-signs both)', chain: withRoot, host: 'su1.3scale.net', direct: { kind: 'same' }, want: 'interception' }
  ]
  for (const row of rows) {
    it(`${row.name} → ${row.want}`, () => { assert.equal(judgeChain(row.chain, { host: row.host, direct: row.direct }).code, row.want) })
  }

  it('names the CA, never the server\'s own certificate', () => {
    assert.equal(issuingCa(leafOnly), 'CN=Acme Internal CA, O=Acme')
    assert.equal(issuingCa(withRoot), 'CN=Corp Proxy CA')
    assert.equal(issuingCa(trusted(leafOnly, 'CA_BUNDLE /ca.pem')), 'CN=Acme Internal CA, O=Acme')
  })
})

describe('tls_untrusted: the message names what the server sent, says what is known, and the fix follows CA_BUNDLE\'s state', () => {
  const fail = (chain: ChainFacts, host: string, via: ProxyEndpoint | undefined, reason = 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', caBundle?: CaBundleState): { code: string, text: string, message: string, hint: string } => {
    const f = classifyUpstreamError(new ConnectFailure(new UpstreamCertificateError(reason, chain, caBundle)), ctx(host, via))
    return { code: f.code, text: `${f.message}; ${f.hint}`, message: f.message, hint: f.hint }
  }
  const rows: Array<{ name: string, got: () => ReturnType<typeof fail>, message: RegExp[], hint: RegExp[], not?: RegExp }> = [
    {
      name: 'on-premise name through a proxy: a private CA, whose owner cannot be told',
      got: () => fail(leafOnly, 'threescale.corp.example', proxy),
      message: [/^the TLS certificate of threescale\.corp\.example:443 is not trusted: issued by CN=Acme Internal CA, O=Acme, which the trust store does not know \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/,
        /the server sent only its own certificate, CN=threescale\.corp\.example \(not a CA\), without the CA that issued it/,
        /CN=Acme Internal CA, O=Acme is a private CA: your 3scale's own internal CA \(an on-premise 3scale\), or the proxy proxy\.corp:3128's own CA if it inspects TLS; the sidecar cannot tell which from here/],
      hint: [/^add the certificate of CN=Acme Internal CA, O=Acme with CA_BUNDLE=\/path\/to\/ca\.pem/, /doctor` compares with a direct connection/, /UPSTREAM_TLS_VERIFY=false only as a last resort$/],
      not: /intercept|interception/i
    },
    {
      name: '3scale SaaS through a proxy: interception, on the evidence of the name',
      got: () => fail(withRoot, 'su1.3scale.net', proxy, 'SELF_SIGNED_CERT_IN_CHAIN'),
      message: [/the top certificate the server sent is CN=Corp Proxy CA, issued by itself \(a CA\)/, /su1\.3scale\.net is a 3scale SaaS host, which 3scale serves only with publicly trusted certificates, so the proxy proxy\.corp:3128 intercepts TLS, re-signing it with CN=Corp Proxy CA/],
      hint: [/add the certificate of CN=Corp Proxy CA with CA_BUNDLE=/, /it is the proxy's interception CA: get it from whoever runs the proxy/]
    },
    {
      name: '3scale SaaS reached directly: something on the network path',
      got: () => fail(withRoot, 'su1.3scale.net', undefined, 'SELF_SIGNED_CERT_IN_CHAIN'),
      message: [/something on the network path \(a transparent proxy or firewall\) intercepts TLS/],
      hint: [/interception CA/]
    },
    {
      name: 'on-premise name reached directly: a private CA, with no proxy to suspect',
      got: () => fail(leafOnly, 'threescale.corp.example', undefined),
      message: [/CN=Acme Internal CA, O=Acme is a private CA: most likely an on-premise 3scale's own internal CA \(no proxy is on this route\)$/],
      hint: [/^add the certificate of CN=Acme Internal CA, O=Acme with CA_BUNDLE=/],
      not: /intercept|the proxy/i
    },
    {
      name: 'an empty CA_BUNDLE directory: is the ConfigMap mounted?',
      got: () => fail(leafOnly, 'threescale.corp.example', proxy, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', { path: '/etc/apicast-sidecar/ca', directory: true, certificates: 0 }),
      message: [/is a private CA/],
      hint: [/^CA_BUNDLE \/etc\/apicast-sidecar\/ca is an empty directory: is the ConfigMap \(or volume\) with the CA mounted\? An optional ConfigMap that does not exist mounts as an empty directory\. Put the certificate of CN=Acme Internal CA, O=Acme in it, as PEM/],
      not: /CA_BUNDLE=\/path/
    },
    {
      name: 'a CA_BUNDLE without the right CA: add it there',
      got: () => fail(leafOnly, 'threescale.corp.example', proxy, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', { path: '/etc/corp/ca.pem', directory: false, certificates: 2 }),
      message: [/is a private CA/],
      hint: [/^CA_BUNDLE \/etc\/corp\/ca\.pem \(2 certificates\) does not hold the CA that issued this chain: add the certificate of CN=Acme Internal CA, O=Acme to it, as PEM/],
      not: /CA_BUNDLE=\/path/
    },
    {
      name: 'an expired certificate is not about who issued it',
      got: () => fail(leafOnly, 'threescale.corp.example', proxy, 'CERT_HAS_EXPIRED'),
      message: [/not trusted: CERT_HAS_EXPIRED \(issued by CN=Acme Internal CA, O=Acme\)/],
      hint: [/system clock/],
      not: /intercept/i
    }
  ]
  for (const row of rows) {
    it(row.name, () => {
      const got = row.got()
      assert.equal(got.code, 'tls_untrusted')
      for (const re of row.message) assert.match(got.message, re)
      for (const re of row.hint) assert.match(got.hint, re)
      if (row.not !== undefined) assert.doesNotMatch(got.text, row.not)
      assert.doesNotMatch(got.text, /u:p@|:p@/)
    })
  }

  it('doctor\'s direct comparison decides it: same certificate, another one, or none to compare with', () => {
    const explain = (direct: DirectComparison): string => {
      const e = explainUntrustedCertificate(ctx('threescale.corp.example', proxy), 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', leafOnly, undefined, direct)
      return `${e.message} | ${e.hint}`
    }
    assert.match(explain({ kind: 'same' }), /a direct connection to threescale\.corp\.example:443 gets the same certificate, so the proxy passes TLS through unchanged: CN=Acme Internal CA, O=Acme is the server's own CA.*\| .*it is your 3scale's internal CA: get it from whoever runs 3scale/)
    assert.doesNotMatch(explain({ kind: 'same' }), /intercept/i)
    assert.match(explain({ kind: 'different', issuer: 'CN=Acme Internal CA' }), /gets a different certificate, issued by CN=Acme Internal CA, so the proxy proxy\.corp:3128 intercepts TLS.*\| .*it is the proxy's interception CA/)
    assert.match(explain({ kind: 'unavailable', reason: 'ETIMEDOUT' }), /which one cannot be told, as a direct connection to compare with failed \(ETIMEDOUT\)/)
    assert.doesNotMatch(explain({ kind: 'unavailable', reason: 'ETIMEDOUT' }), /doctor` compares/, 'doctor does not send the user to doctor')
  })
})

describe('a chain that verified: said once, a warning only on evidence of interception', () => {
  const route = (host: string, tokenInQuery = true) => ({ upstream: new URL(`https://${host}`), proxy, tokenInQuery })
  it('a public root: nothing to say', () => {
    assert.equal(describeTrustedChain(publicChain, judgeChain(publicChain, { host: 'su1.3scale.net' }), route('su1.3scale.net')), undefined)
  })
  it('a private CA from CA_BUNDLE for an on-premise name: info, naming the CA and where it was trusted', () => {
    const chain = trusted(leafOnly, 'CA_BUNDLE /etc/corp/ca.pem')
    const said = describeTrustedChain(chain, judgeChain(chain, { host: 'threescale.corp.example' }), route('threescale.corp.example'))
    assert.equal(said?.level, 'info')
    assert.match(said?.message ?? '', /^the certificate of threescale\.corp\.example:443 is chained to the private CA CN=Acme Internal CA, O=Acme, trusted from CA_BUNDLE \/etc\/corp\/ca\.pem: your 3scale's own internal CA/)
    assert.match(said?.message ?? '', /A CA in the trust store is taken as known, so this is no warning$/)
    assert.doesNotMatch(said?.message ?? '', /intercept|CN=threescale\.corp\.example/i)
  })
  it('a private CA for 3scale SaaS: a warning that the proxy reads the traffic, and how to keep the token out of URLs', () => {
    const chain = trusted(withRoot, 'CA_BUNDLE /etc/corp/proxy-ca.pem')
    const said = describeTrustedChain(chain, judgeChain(chain, { host: 'acme-admin.3scale.net' }), route('acme-admin.3scale.net'))
    assert.equal(said?.level, 'warn')
    assert.match(said?.message ?? '', /^TLS interception: the certificate of acme-admin\.3scale\.net:443 is chained to the private CA CN=Corp Proxy CA, trusted from CA_BUNDLE \/etc\/corp\/proxy-ca\.pem; acme-admin\.3scale\.net is a 3scale SaaS host/)
    assert.match(said?.message ?? '', /set ACCESS_TOKEN_LOCATION=header/)
    const header = describeTrustedChain(chain, judgeChain(chain, { host: 'su1.3scale.net' }), route('su1.3scale.net', false))
    assert.match(header?.message ?? '', /It can read everything sent to 3scale, credentials in the query included\.$/)
  })
})
