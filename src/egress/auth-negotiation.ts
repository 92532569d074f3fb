import { canAnswerDigest, type Challenge } from './proxy-auth.js'

/** Proxy authentication schemes the sidecar speaks; `auto` takes the proxy's challenge. */
export type ProxyAuthScheme = 'auto' | 'basic' | 'digest' | 'ntlm' | 'negotiate'

/**
 * One Proxy-Authorization a tunnel's CONNECT carries, decided here and
 * rendered by proxy-auth.ts (which holds the hashing and NTLM's messages).
 * The last one sent is the state of a tunnel's negotiation.
 */
export type AuthMessage =
  | { readonly kind: 'basic' }
  /** `reused`: a nonce remembered from an earlier tunnel, not this reply's. */
  | { readonly kind: 'digest', readonly challenge: Challenge, readonly nc: number, readonly reused: boolean }
  | { readonly kind: 'ntlm-negotiate' }
  /** Answers the challenge (type 2 message) that came on the same connection. */
  | { readonly kind: 'ntlm-authenticate', readonly challenge: string }
  /** A SPNEGO token from GSSAPI (Kerberos), for the proxy's service principal. */
  | { readonly kind: 'negotiate' }

/** What one proxy taught the tunnels opened after: kept per proxy, never shared. */
export interface AuthMemory {
  /** The Digest challenge answered last, and its nonce count. */
  readonly digest: { readonly challenge: Challenge, readonly nc: number } | undefined
  /** The proxy asked for NTLM: every tunnel opens with the negotiate message. */
  readonly ntlm: boolean
  /** The proxy asked for Negotiate and Kerberos answered it: every tunnel opens with a token. */
  readonly negotiate: boolean
}

export const FRESH_MEMORY: AuthMemory = { digest: undefined, ntlm: false, negotiate: false }

export interface AuthPolicy {
  /** PROXY_AUTH_SCHEME. */
  readonly scheme: ProxyAuthScheme
  /** False when the proxy URL has neither user nor password: no Basic, Digest or NTLM is sent. */
  readonly hasCredentials: boolean
  /** Kerberos credentials are there to answer Negotiate with (a keytab or a ticket cache, and the addon). */
  readonly kerberos: boolean
}

export interface AuthDecision {
  /** What to send; undefined: send nothing (the first CONNECT only). */
  readonly message: AuthMessage | undefined
  readonly memory: AuthMemory
}

/**
 * What a tunnel's first CONNECT carries, from the policy and what the proxy
 * asked for before. Basic goes at once (no extra round trip); a proxy that
 * asked for NTLM gets the negotiate message; a remembered Digest nonce is
 * used again with the next nonce count (RFC 7616 §3.4), so later tunnels
 * cost no extra round trip either.
 */
export function openingMessage (policy: AuthPolicy, memory: AuthMemory): AuthDecision {
  const { scheme } = policy
  // Kerberos answers first where it can: a token costs no extra round trip.
  if (policy.kerberos && (scheme === 'negotiate' || (scheme === 'auto' && memory.negotiate))) return { message: { kind: 'negotiate' }, memory }
  if (!policy.hasCredentials || scheme === 'negotiate') return { message: undefined, memory }
  if (scheme === 'ntlm' || (scheme === 'auto' && memory.ntlm)) return { message: { kind: 'ntlm-negotiate' }, memory }
  if (scheme === 'digest' || (scheme === 'auto' && memory.digest !== undefined)) {
    // Digest forced and no nonce yet: wait for the proxy's challenge.
    if (memory.digest === undefined) return { message: undefined, memory }
    const digest = { challenge: memory.digest.challenge, nc: memory.digest.nc + 1 }
    return { message: { kind: 'digest', ...digest, reused: true }, memory: { ...memory, digest } }
  }
  return { message: { kind: 'basic' }, memory }
}

/**
 * The answer to a 407 whose challenges are `challenges`, given what this
 * tunnel sent last (`sent`), or undefined when there is none worth sending.
 * Every challenge is answered once: a refused answer is a wrong password,
 * and sending it again is how an Active Directory account gets locked.
 * - Negotiate (Kerberos), when the proxy offers it and Kerberos credentials
 *   are there: one SPNEGO token; else the schemes below, as offered;
 * - NTLM: negotiate, then authenticate on the same connection;
 * - Digest: answered once per challenge, again only when the proxy says the
 *   nonce was merely stale (RFC 7616 §3.3);
 * - Basic after a remembered Digest nonce was refused, in `auto`: the proxy
 *   has moved to Basic.
 */
export function answerChallenge (policy: AuthPolicy, memory: AuthMemory, sent: AuthMessage | undefined, challenges: readonly Challenge[]): AuthDecision | undefined {
  const { scheme } = policy
  const allowed = (s: ProxyAuthScheme): boolean => scheme === 'auto' || scheme === s

  // Negotiate first, when Kerberos can answer it: one token per tunnel; a
  // 407 to the token is a refusal (a wrong SPN, or a principal the proxy
  // does not accept), never answered again.
  if (policy.kerberos && allowed('negotiate') && challenges.some((c) => c.scheme === 'negotiate')) {
    if (sent?.kind === 'negotiate') return undefined
    return { message: { kind: 'negotiate' }, memory: { ...memory, negotiate: true } }
  }
  if (!policy.hasCredentials || scheme === 'negotiate') return undefined

  const ntlm = challenges.find((c) => c.scheme === 'ntlm')
  if (ntlm !== undefined && allowed('ntlm')) {
    const inNtlm = sent?.kind === 'ntlm-negotiate' || sent?.kind === 'ntlm-authenticate'
    if (ntlm.token68 !== undefined && sent?.kind === 'ntlm-negotiate') {
      return { message: { kind: 'ntlm-authenticate', challenge: ntlm.token68 }, memory }
    }
    if (ntlm.token68 === undefined && !inNtlm) return { message: { kind: 'ntlm-negotiate' }, memory: { ...memory, ntlm: true } }
    return undefined // the authenticate message was refused: a wrong password
  }

  const digest = challenges.find(canAnswerDigest)
  if (digest !== undefined && allowed('digest')) {
    if (sent?.kind === 'digest' && !sent.reused && digest.params.stale?.toLowerCase() !== 'true') return undefined
    const fresh = { challenge: digest, nc: 1 }
    return { message: { kind: 'digest', ...fresh, reused: false }, memory: { ...memory, digest: fresh } }
  }
  if (scheme === 'auto' && sent?.kind === 'digest' && sent.reused && challenges.some((c) => c.scheme === 'basic')) {
    return { message: { kind: 'basic' }, memory: { ...memory, digest: undefined } }
  }
  return undefined
}
