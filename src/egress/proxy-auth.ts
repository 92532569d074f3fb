import { createHash, randomBytes } from 'node:crypto'
import * as ntlm from 'httpntlm/ntlm.js'

/** One challenge of a `Proxy-Authenticate` header (RFC 9110 §11.6.1). */
export interface Challenge {
  /** Lower-case scheme, e.g. 'basic', 'digest', 'ntlm'. */
  readonly scheme: string
  /** auth-params, names lower-cased, quoted values unquoted. */
  readonly params: Readonly<Record<string, string>>
  /** A token68 (NTLM and Negotiate carry their messages this way). */
  readonly token68?: string
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*/

/**
 * Parse `Proxy-Authenticate` values into challenges. A value may hold
 * several challenges separated by commas, and the commas also separate a
 * challenge's auth-params, so the grammar is followed rather than split.
 * Anything malformed ends that value's parse; what was read stays.
 */
export function parseChallenges (header: string | readonly string[] | undefined): Challenge[] {
  return readChallenges(header, undefined)
}

/**
 * The auth schemes `Proxy-Authenticate` offers, each once, as the proxy
 * spelled them (`Basic realm="x", NTLM` → ['Basic', 'NTLM']): for the
 * operator's hint, which quotes the proxy. The same grammar as
 * parseChallenges, so what the hint says is offered is what the tunnel
 * answers.
 */
export function parseAuthSchemes (header: string | readonly string[] | undefined): string[] {
  const written: string[] = []
  readChallenges(header, (scheme) => { written.push(scheme) })
  return [...new Set(written)]
}

/** The one Proxy-Authenticate grammar (RFC 9110 §11.6.1); `onScheme` sees each scheme as written. */
function readChallenges (header: string | readonly string[] | undefined, onScheme: ((scheme: string) => void) | undefined): Challenge[] {
  if (header === undefined) return []
  const out: Challenge[] = []
  for (const value of typeof header === 'string' ? [header] : header) {
    let rest = value
    let current: { scheme: string, params: Record<string, string>, token68?: string } | undefined
    while (rest.length > 0) {
      rest = rest.replace(/^[\s,]+/, '')
      if (rest === '') break
      const name = TOKEN.exec(rest)?.[0]
      if (name === undefined) break
      const after = rest.slice(name.length)
      const param = /^\s*=\s*/.exec(after)
      if (current !== undefined && param !== null && !/^\s*=\s*(,|$)/.test(after)) {
        // auth-param of the current challenge: name=token or name="quoted"
        let v = after.slice(param[0].length)
        let parsed: string
        if (v.startsWith('"')) {
          const m = /^"((?:[^"\\]|\\.)*)"/.exec(v)
          if (m === null) break
          parsed = (m[1] ?? '').replace(/\\(.)/g, '$1')
          v = v.slice(m[0].length)
        } else {
          const t = TOKEN.exec(v)?.[0]
          if (t === undefined) break
          parsed = t
          v = v.slice(t.length)
        }
        current.params[name.toLowerCase()] = parsed
        rest = v
        continue
      }
      // A new challenge: scheme [ token68 | auth-params ]
      onScheme?.(name)
      current = { scheme: name.toLowerCase(), params: {} }
      out.push(current)
      rest = after
      const space = /^\s+/.exec(rest)
      if (space !== null) {
        const candidate = rest.slice(space[0].length)
        const t68 = TOKEN68.exec(candidate)?.[0]
        // A token68 stands alone: a comma or the end follows it ('realm="x"' is a param).
        if (t68 !== undefined && /^\s*(,|$)/.test(candidate.slice(t68.length))) {
          current.token68 = t68
          rest = candidate.slice(t68.length)
        } else {
          rest = candidate
        }
      }
    }
  }
  return out
}

/** The Digest algorithms of RFC 7616 this client answers: hash, and the -sess variants. */
const DIGEST_HASH: Readonly<Record<string, string>> = {
  md5: 'md5',
  'md5-sess': 'md5',
  'sha-256': 'sha256',
  'sha-256-sess': 'sha256',
  'sha-512-256': 'sha512-256',
  'sha-512-256-sess': 'sha512-256'
}

/** True when this client can answer `challenge` (a Digest challenge with a known algorithm and qop=auth or none). */
export function canAnswerDigest (challenge: Challenge): boolean {
  const algorithm = (challenge.params.algorithm ?? 'MD5').toLowerCase()
  const qops = challenge.params.qop?.split(',').map((q) => q.trim().toLowerCase())
  return challenge.scheme === 'digest' && challenge.params.nonce !== undefined &&
    DIGEST_HASH[algorithm] !== undefined && (qops === undefined || qops.includes('auth'))
}

export interface DigestInput {
  readonly challenge: Challenge
  readonly username: string
  readonly password: string
  readonly method: string
  readonly uri: string
  /** Nonce count: 1 for the first use of this nonce. */
  readonly nc: number
  /** Client nonce; random when not given (tests pass one). */
  readonly cnonce?: string
}

/**
 * The `Proxy-Authorization: Digest …` value answering `challenge` (RFC 7616
 * §3.4, qop=auth; RFC 2069 form when the proxy offers no qop). Written here
 * because no maintained npm package answers SHA-256 challenges; node:crypto
 * does the hashing.
 */
export function digestAuthorization (input: DigestInput): string {
  const { challenge, username, password, method, uri, nc } = input
  const realm = challenge.params.realm ?? ''
  const nonce = challenge.params.nonce ?? ''
  const algorithmName = challenge.params.algorithm ?? 'MD5'
  const algorithm = algorithmName.toLowerCase()
  const hashName = DIGEST_HASH[algorithm]
  if (hashName === undefined) throw new Error(`Digest algorithm ${algorithmName} is not supported`)
  const h = (s: string): string => createHash(hashName).update(s, 'utf8').digest('hex')
  const qop = challenge.params.qop !== undefined ? 'auth' : undefined
  const cnonce = input.cnonce ?? randomBytes(16).toString('hex')
  const ncHex = nc.toString(16).padStart(8, '0')
  let ha1 = h(`${username}:${realm}:${password}`)
  if (algorithm.endsWith('-sess')) ha1 = h(`${ha1}:${nonce}:${cnonce}`)
  const ha2 = h(`${method}:${uri}`)
  const response = qop !== undefined ? h(`${ha1}:${nonce}:${ncHex}:${cnonce}:${qop}:${ha2}`) : h(`${ha1}:${nonce}:${ha2}`)
  const q = (s: string): string => `"${s.replace(/(["\\])/g, '\\$1')}"`
  const parts = [
    `username=${q(username)}`,
    `realm=${q(realm)}`,
    `nonce=${q(nonce)}`,
    `uri=${q(uri)}`,
    `algorithm=${algorithmName}`,
    `response=${q(response)}`
  ]
  if (challenge.params.opaque !== undefined) parts.push(`opaque=${q(challenge.params.opaque)}`)
  if (qop !== undefined) parts.push(`qop=${qop}`, `nc=${ncHex}`, `cnonce=${q(cnonce)}`)
  return `Digest ${parts.join(', ')}`
}

/** `DOMAIN\\user` (or `user@DOMAIN` left as it is) split for NTLM. */
export function ntlmIdentity (username: string): { domain: string, user: string } {
  const slash = username.indexOf('\\')
  return slash === -1 ? { domain: '', user: username } : { domain: username.slice(0, slash), user: username.slice(slash + 1) }
}

/** NTLM negotiate (type 1): the first message of the handshake. */
export function ntlmNegotiate (username: string): string {
  return ntlm.createType1Message({ domain: ntlmIdentity(username).domain, workstation: '' })
}

/**
 * NTLM authenticate (type 3) answering the proxy's challenge (type 2, the
 * token68 of its `NTLM …` challenge): NTLMv2 when the proxy offers extended
 * security with target info, as curl does. The messages are httpntlm's
 * (maintained, with a JavaScript MD4: Node 20's OpenSSL 3 has none).
 */
export function ntlmAuthenticate (type2Token: string, username: string, password: string): string {
  let failure: Error | undefined
  const type2 = ntlm.parseType2Message(`NTLM ${type2Token}`, (err) => { failure = err })
  if (type2 === null) throw failure ?? new Error('the proxy sent an unreadable NTLM challenge')
  const { domain, user } = ntlmIdentity(username)
  return ntlm.createType3Message(type2, { username: user, password, domain, workstation: '' })
}

/** `Proxy-Authorization: Basic …` for the proxy URL's credentials. */
export function basicAuthorization (username: string, password: string): string {
  return 'Basic ' + Buffer.from(`${username}:${password}`, 'utf8').toString('base64')
}
