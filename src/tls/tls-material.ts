import { createPrivateKey, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Config } from '../config/config.js'
import { SetupError } from '../config/setup-error.js'
import { certificatesIn, loadTrustStore, TrustStoreError, type TrustStore } from './trust-store.js'

export interface KeyPair {
  readonly cert: string
  readonly key: string
}

/** Everything TLS needs from disk, read once at start. */
export interface TlsMaterial {
  readonly trust: TrustStore
  readonly upstreamClient: KeyPair | undefined
  /** PROXY_TLS_CERT/KEY: presented to an https:// proxy; read again when they change (readProxyClient). */
  readonly proxyClient: KeyPair | undefined
  readonly listen: KeyPair | undefined
}

/** Unreadable or invalid TLS files; every problem names its file and setting. */
export class TlsSetupError extends SetupError {
  override name = 'TlsSetupError'
  constructor (problems: readonly string[]) {
    super('invalid TLS files', problems)
  }
}

/** Read the trust store and the optional key pairs, reporting every problem at once. */
export function loadTlsMaterial (tls: Config['tls']): TlsMaterial {
  const problems: string[] = []
  let trust: TrustStore | undefined
  try {
    trust = loadTrustStore(tls.trust)
  } catch (err) {
    if (!(err instanceof TrustStoreError)) throw err
    problems.push(...err.problems)
  }
  const upstreamClient = tls.upstreamClient !== undefined
    ? readKeyPair('UPSTREAM_TLS_CERT', tls.upstreamClient.certFile, 'UPSTREAM_TLS_KEY', tls.upstreamClient.keyFile, problems)
    : undefined
  const proxyClient = tls.proxyClient !== undefined
    ? readKeyPair('PROXY_TLS_CERT', tls.proxyClient.certFile, 'PROXY_TLS_KEY', tls.proxyClient.keyFile, problems)
    : undefined
  const listen = tls.listen !== undefined
    ? readKeyPair('LISTEN_TLS_CERT', tls.listen.certFile, 'LISTEN_TLS_KEY', tls.listen.keyFile, problems)
    : undefined
  if (problems.length > 0 || trust === undefined) throw new TlsSetupError(problems)
  return { trust, upstreamClient, proxyClient, listen }
}

/**
 * PROXY_TLS_CERT/KEY read again (their files changed: a rotated Secret),
 * checked as at start; throws TlsSetupError naming each problem, so the
 * caller keeps the pair in use. undefined when they are not set.
 */
export function readProxyClient (tls: Config['tls']): KeyPair | undefined {
  if (tls.proxyClient === undefined) return undefined
  const problems: string[] = []
  const pair = readKeyPair('PROXY_TLS_CERT', tls.proxyClient.certFile, 'PROXY_TLS_KEY', tls.proxyClient.keyFile, problems)
  if (pair === undefined || problems.length > 0) throw new TlsSetupError(problems)
  return pair
}

function readKeyPair (certName: string, certFile: string, keyName: string, keyFile: string, problems: string[]): KeyPair | undefined {
  const cert = readText(certName, certFile, problems)
  const key = readText(keyName, keyFile, problems)
  if (cert === undefined || key === undefined) return undefined
  const blocks = certificatesIn(cert)
  let leaf: X509Certificate | undefined
  try {
    leaf = blocks[0] !== undefined ? new X509Certificate(blocks[0]) : undefined
  } catch {
    leaf = undefined
  }
  if (leaf === undefined) {
    problems.push(`${certName}: ${certFile} holds no valid PEM certificate`)
    return undefined
  }
  try {
    const privateKey = createPrivateKey(key)
    if (!leaf.checkPrivateKey(privateKey)) {
      problems.push(`${keyName}: the key in ${keyFile} does not belong to the certificate in ${certFile}`)
      return undefined
    }
  } catch {
    problems.push(`${keyName}: ${keyFile} holds no valid unencrypted PEM private key`)
    return undefined
  }
  return { cert, key }
}

function readText (setting: string, path: string, problems: string[]): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    problems.push(`${setting}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
    return undefined
  }
}
