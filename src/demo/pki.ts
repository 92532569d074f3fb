/**
 * Certificates made on the spot, for the demo (and the tests): a CA and the
 * leaf certificates it signs, ECDSA P-256 so they are fast to make.
 */
import 'reflect-metadata' // @peculiar/x509 (via tsyringe) needs it loaded first
import { webcrypto } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as x509 from '@peculiar/x509'

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const

export interface CertificateAuthority {
  readonly name: string
  readonly certPem: string
  /** The CA certificate written to a file, for NODE_EXTRA_CA_CERTS. */
  readonly certFile: string
  /** The CA's private key (PKCS#8 PEM), for a proxy that signs certificates with it. */
  readonly keyPem: string
  issue (hosts: readonly string[]): Promise<{ cert: string, key: string }>
}

function pem (label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`
}

function serial (): string {
  return Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString('hex').replace(/^[89a-f]/, '1')
}

/** A CA made now, and the leaf certificates (server and client auth) it signs. */
export async function createCa (commonName: string): Promise<CertificateAuthority> {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])
  const now = Date.now()
  const caCert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${commonName}, O=apicast-sidecar-proxy tests`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 24 * 3600_000),
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)
    ]
  })
  const certPem = caCert.toString('pem') + '\n'
  const dir = mkdtempSync(join(tmpdir(), 'sidecar-ca-'))
  const certFile = join(dir, 'ca.pem')
  writeFileSync(certFile, certPem)

  const keyPem = pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey))
  return {
    name: commonName,
    certPem,
    certFile,
    keyPem,
    issue: async (hosts) => {
      const leafKeys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])
      const names = hosts.map((h) => /^[\d.]+$/.test(h) ? { type: 'ip' as const, value: h } : { type: 'dns' as const, value: h })
      const leaf = await x509.X509CertificateGenerator.create({
        serialNumber: serial(),
        subject: `CN=${hosts[0] ?? 'localhost'}`,
        issuer: caCert.subject,
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + 24 * 3600_000),
        signingAlgorithm: ALG,
        publicKey: leafKeys.publicKey,
        signingKey: keys.privateKey,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
          new x509.SubjectAlternativeNameExtension(names),
          await x509.AuthorityKeyIdentifierExtension.create(caCert)
        ]
      })
      const key = pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey))
      return { cert: leaf.toString('pem') + '\n' + certPem, key }
    }
  }
}
