import { canAnswerDigest, type Challenge } from './proxy-auth.js'

/** Proxy authentication schemes the sidecar speaks; `auto` takes the proxy's challenge. */
export type ProxyAuthScheme = 'auto' | 'basic' | 'digest' | 'ntlm'

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

/** What one proxy taught the tunnels opened after: kept per proxy, never shared. */
export interface AuthMemory {
  /** The Digest challenge answered last, and its nonce count. */
  readonly digest: { readonly challenge: Challenge, readonly nc: number } | undefined
  /** The proxy asked for NTLM: every tunnel opens with the negotiate message. */
  readonly ntlm: boolean
}

export const FRESH_MEMORY: AuthMemory = { digest: undefined, ntlm: false }

export interface AuthPolicy {
  /** PROXY_AUTH_SCHEME. */
  readonly scheme: ProxyAuthScheme
  /** False when the proxy URL has neither user nor password: nothing is ever sent. */
  readonly hasCredentials: boolean
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
  if (!policy.hasCredentials) return { message: undefined, memory }
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
 * - NTLM: negotiate, then authenticate on the same connection;
 * - Digest: answered once per challenge, again only when the proxy says the
 *   nonce was merely stale (RFC 7616 §3.3);
 * - Basic after a remembered Digest nonce was refused, in `auto`: the proxy
 *   has moved to Basic.
 */
export function answerChallenge (policy: AuthPolicy, memory: AuthMemory, sent: AuthMessage | undefined, challenges: readonly Challenge[]): AuthDecision | undefined {
  const { scheme } = policy
  if (!policy.hasCredentials) return undefined
  const allowed = (s: ProxyAuthScheme): boolean => scheme === 'auto' || scheme === s

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
