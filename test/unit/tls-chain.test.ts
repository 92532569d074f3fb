import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { rootCertificates } from 'node:tls'
import { describe, it } from 'node:test'
import { caBundleState, displayName, readChain } from '../../src/tls/tls-chain.js'
import { issuingCa } from '../../src/tls/tls-verdict.js'
import { loadTrustStore } from '../../src/tls/trust-store.js'
import { createCa } from '../helpers/pki.js'

const noSystem = { sslCertFile: undefined, sslCertDir: undefined, nodeExtraCaCerts: undefined }

/** The server's own certificate, as a server that sends no chain presents it. */
function leafOf (pemChain: string): X509Certificate {
  return new X509Certificate(pemChain.slice(0, pemChain.indexOf('-----END CERTIFICATE-----') + 25))
}

describe('readChain: the top certificate the server sent, and the trusted CA that vouches for it', () => {
  it('a server that sends only its own certificate: the CA is found in the trust store by name and signature, never the leaf', async () => {
    const ca = await createCa('Acme Internal CA')
    const leaf = leafOf((await ca.issue(['portal.test'])).cert)
    const trust = loadTrustStore({ ...noSystem, caBundle: ca.certFile })
    const chain = readChain(leaf, trust)
    assert.equal(chain.sent, 1)
    assert.deepEqual(chain.top, { subject: 'CN=portal.test', issuer: 'CN=Acme Internal CA, O=apicast-sidecar-proxy tests', ca: false, selfSigned: false })
    assert.deepEqual(chain.anchor, { subject: 'CN=Acme Internal CA, O=apicast-sidecar-proxy tests', source: `CA_BUNDLE ${ca.certFile}` })
    assert.equal(chain.publicRoot, false)
    assert.equal(issuingCa(chain), 'CN=Acme Internal CA, O=apicast-sidecar-proxy tests', 'issue 16 named CN=portal.test as "the private CA"')
  })

  it('without that CA in the store: no anchor, and the CA named is still the leaf\'s issuer', async () => {
    const ca = await createCa('Acme Internal CA')
    const leaf = leafOf((await ca.issue(['portal.test'])).cert)
    const chain = readChain(leaf, loadTrustStore({ ...noSystem, caBundle: undefined }))
    assert.equal(chain.anchor, undefined)
    assert.equal(issuingCa(chain), 'CN=Acme Internal CA, O=apicast-sidecar-proxy tests')
  })

  it('a CA with the same name but another key does not vouch', async () => {
    const real = await createCa('Acme Internal CA')
    const impostor = await createCa('Acme Internal CA')
    const leaf = leafOf((await real.issue(['portal.test'])).cert)
    assert.equal(readChain(leaf, loadTrustStore({ ...noSystem, caBundle: impostor.certFile })).anchor, undefined)
  })

  it('one of Node\'s bundled roots is public', () => {
    const root = new X509Certificate(rootCertificates[0] as string)
    const chain = readChain(root, loadTrustStore({ ...noSystem, caBundle: undefined }))
    assert.equal(chain.publicRoot, true)
    assert.equal(chain.anchor?.source, 'Node bundled roots')
  })
})

describe('caBundleState', () => {
  it('an empty directory counts 0, and the start-up summary says it is empty', () => {
    const empty = mkdtempSync(join(tmpdir(), 'sidecar-empty-ca-'))
    const trust = loadTrustStore({ ...noSystem, caBundle: empty })
    assert.deepEqual(caBundleState(trust), { path: empty, directory: true, certificates: 0 })
    assert.match(trust.summary, new RegExp(`CA_BUNDLE ${empty}: 0 \\(an empty directory\\)$`))
  })
  it('unset: undefined', () => {
    assert.equal(caBundleState(loadTrustStore({ ...noSystem, caBundle: undefined })), undefined)
  })
})

describe('displayName', () => {
  const rows: Array<[string, string]> = [
    ['C=US\nO=DigiCert Inc\nOU=www.digicert.com\nCN=DigiCert Global Root G2', 'CN=DigiCert Global Root G2, O=DigiCert Inc, OU=www.digicert.com'],
    ['CN=portal.test', 'CN=portal.test'],
    ['C=DE\nL=Berlin', 'C=DE, L=Berlin']
  ]
  for (const [dn, want] of rows) it(`${JSON.stringify(dn)} → ${want}`, () => { assert.equal(displayName(dn), want) })
})
