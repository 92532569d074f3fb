import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { answerChallenge, FRESH_MEMORY, openingMessage, type AuthMemory, type AuthMessage, type AuthPolicy, type ProxyAuthScheme } from '../../src/egress/auth-negotiation.js'
import { parseChallenges, type Challenge } from '../../src/egress/proxy-auth.js'

const policy = (scheme: ProxyAuthScheme, hasCredentials = true, kerberos = false): AuthPolicy => ({ scheme, hasCredentials, kerberos })
const DIGEST: Challenge = parseChallenges('Digest realm="corp", nonce="n1", qop="auth", algorithm=SHA-256')[0] as Challenge
const STALE: Challenge = parseChallenges('Digest realm="corp", nonce="n2", qop="auth", stale=true')[0] as Challenge
const remembered: AuthMemory = { digest: { challenge: DIGEST, nc: 4 }, ntlm: false, negotiate: false }
const ntlmProxy: AuthMemory = { digest: undefined, ntlm: true, negotiate: false }
const negotiateProxy: AuthMemory = { digest: undefined, ntlm: false, negotiate: true }

describe('openingMessage: what a tunnel\'s first CONNECT carries', () => {
  const cases: Array<[string, AuthPolicy, AuthMemory, AuthMessage | undefined, AuthMemory]> = [
    ['no credentials: nothing, whatever the scheme', policy('basic', false), FRESH_MEMORY, undefined, FRESH_MEMORY],
    ['auto, a proxy not seen before: Basic at once, no extra round trip', policy('auto'), FRESH_MEMORY, { kind: 'basic' }, FRESH_MEMORY],
    ['basic', policy('basic'), remembered, { kind: 'basic' }, remembered],
    ['ntlm forced: the negotiate message', policy('ntlm'), FRESH_MEMORY, { kind: 'ntlm-negotiate' }, FRESH_MEMORY],
    ['auto, a proxy that asked for NTLM before: negotiate', policy('auto'), ntlmProxy, { kind: 'ntlm-negotiate' }, ntlmProxy],
    ['digest forced, no nonce yet: nothing, the proxy\'s challenge comes first', policy('digest'), FRESH_MEMORY, undefined, FRESH_MEMORY],
    ['negotiate forced, Kerberos there: a token at once', policy('negotiate', false, true), FRESH_MEMORY, { kind: 'negotiate' }, FRESH_MEMORY],
    ['negotiate forced without Kerberos credentials: nothing (the 407 names what is missing)', policy('negotiate', true, false), FRESH_MEMORY, undefined, FRESH_MEMORY],
    ['auto, a proxy that asked for Negotiate before: a token, before Basic', policy('auto', true, true), negotiateProxy, { kind: 'negotiate' }, negotiateProxy],
    ['auto, Kerberos there, a proxy not seen before, no password: nothing until it asks', policy('auto', false, true), FRESH_MEMORY, undefined, FRESH_MEMORY],
    ['auto, a remembered nonce: used again with the next nonce count', policy('auto'), remembered,
      { kind: 'digest', challenge: DIGEST, nc: 5, reused: true }, { digest: { challenge: DIGEST, nc: 5 }, ntlm: false, negotiate: false }]
  ]
  for (const [name, p, memory, message, after] of cases) {
    it(name, () => assert.deepEqual(openingMessage(p, memory), { message, memory: after }))
  }
})

describe('answerChallenge: the answer to a 407, each challenge answered once', () => {
  const fresh = { kind: 'digest', challenge: DIGEST, nc: 1, reused: false } as const
  const cases: Array<[string, AuthPolicy, AuthMemory, AuthMessage | undefined, string, ReturnType<typeof answerChallenge>]> = [
    ['no credentials: no answer (the 407 is the failure)', policy('auto', false), FRESH_MEMORY, undefined, 'Basic realm="x"', undefined],
    ['Basic refused: never sent again (a wrong password; AD would lock the account)', policy('auto'), FRESH_MEMORY, { kind: 'basic' }, 'Basic realm="x"', undefined],
    ['Digest after Basic: answered, the nonce remembered', policy('auto'), FRESH_MEMORY, { kind: 'basic' },
      'Digest realm="corp", nonce="n1", qop="auth", algorithm=SHA-256', { message: fresh, memory: { digest: { challenge: DIGEST, nc: 1 }, ntlm: false, negotiate: false } }],
    ['Digest answer refused: not again', policy('auto'), remembered, fresh, 'Digest realm="corp", nonce="n1", qop="auth", algorithm=SHA-256', undefined],
    ['Digest answer refused as stale: answered with the new nonce', policy('auto'), remembered, fresh,
      'Digest realm="corp", nonce="n2", qop="auth", stale=true', { message: { kind: 'digest', challenge: STALE, nc: 1, reused: false }, memory: { digest: { challenge: STALE, nc: 1 }, ntlm: false, negotiate: false } }],
    ['a remembered nonce refused: the new challenge is answered', policy('auto'), remembered, { kind: 'digest', challenge: DIGEST, nc: 5, reused: true },
      'Digest realm="corp", nonce="n1", qop="auth", algorithm=SHA-256', { message: fresh, memory: { digest: { challenge: DIGEST, nc: 1 }, ntlm: false, negotiate: false } }],
    ['a remembered nonce refused and only Basic offered (auto): Basic, the nonce forgotten', policy('auto'), remembered,
      { kind: 'digest', challenge: DIGEST, nc: 5, reused: true }, 'Basic realm="x"', { message: { kind: 'basic' }, memory: FRESH_MEMORY }],
    ['the same, with digest forced: no Basic', policy('digest'), remembered, { kind: 'digest', challenge: DIGEST, nc: 5, reused: true }, 'Basic realm="x"', undefined],
    ['basic forced, Digest offered: no answer', policy('basic'), FRESH_MEMORY, { kind: 'basic' }, 'Digest realm="corp", nonce="n1", qop="auth"', undefined],
    ['NTLM offered: negotiate, and the proxy is remembered as NTLM', policy('auto'), FRESH_MEMORY, { kind: 'basic' }, 'NTLM',
      { message: { kind: 'ntlm-negotiate' }, memory: ntlmProxy }],
    ['NTLM challenge after negotiate: authenticate, on that connection', policy('auto'), ntlmProxy, { kind: 'ntlm-negotiate' }, 'NTLM TlRMTVNTUAACAAAA',
      { message: { kind: 'ntlm-authenticate', challenge: 'TlRMTVNTUAACAAAA' }, memory: ntlmProxy }],
    ['NTLM authenticate refused: a wrong password, not again', policy('auto'), ntlmProxy, { kind: 'ntlm-authenticate', challenge: 'TlRMTVNTUAACAAAA' }, 'NTLM', undefined],
    ['NTLM bare after negotiate: no loop', policy('ntlm'), ntlmProxy, { kind: 'ntlm-negotiate' }, 'NTLM', undefined],
    ['NTLM preferred over Digest and Basic when all are offered', policy('auto'), FRESH_MEMORY, undefined, 'Basic realm="x", Digest realm="d", nonce="n", qop="auth", NTLM',
      { message: { kind: 'ntlm-negotiate' }, memory: ntlmProxy }],
    ['digest forced, NTLM and Digest offered: Digest', policy('digest'), FRESH_MEMORY, undefined, 'NTLM, Digest realm="corp", nonce="n1", qop="auth", algorithm=SHA-256',
      { message: fresh, memory: { digest: { challenge: DIGEST, nc: 1 }, ntlm: false, negotiate: false } }],
    ['Negotiate only, no Kerberos credentials: no answer', policy('auto'), FRESH_MEMORY, { kind: 'basic' }, 'Negotiate', undefined],
    ['Negotiate offered and Kerberos there: a token, and the proxy is remembered as Negotiate', policy('auto', false, true), FRESH_MEMORY, undefined, 'Negotiate',
      { message: { kind: 'negotiate' }, memory: negotiateProxy }],
    ['Negotiate preferred over NTLM when both are offered and Kerberos is there', policy('auto', true, true), FRESH_MEMORY, { kind: 'basic' }, 'Negotiate, NTLM',
      { message: { kind: 'negotiate' }, memory: negotiateProxy }],
    ['Negotiate and NTLM offered, no Kerberos: NTLM', policy('auto', true, false), FRESH_MEMORY, { kind: 'basic' }, 'Negotiate, NTLM',
      { message: { kind: 'ntlm-negotiate' }, memory: ntlmProxy }],
    ['the token refused (a wrong SPN, an unknown principal): never sent again', policy('auto', true, true), negotiateProxy, { kind: 'negotiate' }, 'Negotiate, NTLM', undefined],
    ['negotiate forced, only NTLM offered: no answer', policy('negotiate', true, true), FRESH_MEMORY, undefined, 'NTLM', undefined]
  ]
  for (const [name, p, memory, sent, header, expected] of cases) {
    it(name, () => assert.deepEqual(answerChallenge(p, memory, sent, parseChallenges(header)), expected))
  }
})
