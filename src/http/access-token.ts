/**
 * Reading the 3scale access token that APIcast sends as URL userinfo, and
 * placing it where the 3scale Account Management API reads it.
 *
 * APIcast turns `http://TOKEN@sidecar:9090` into
 * `Authorization: Basic base64("TOKEN:")`; 3scale accepts the token in either
 * half of the Basic credentials, so both are read here.
 */
import { percentDecode } from './percent-decode.js'
import { basicAuthorization } from '../egress/proxy-auth.js'

export type BasicToken =
  | { kind: 'none' }
  | { kind: 'token', token: string }
  /** Basic with both halves empty (`Basic Og==`): carries no token. */
  | { kind: 'empty' }
  /** Authorization with another scheme (Bearer…): not ours to interpret. */
  | { kind: 'other' }
  | { kind: 'invalid', reason: string }

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/
/** C0 controls and DEL: CR/LF would let a token inject headers upstream. */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f]/

/** True when a token holds a character that must never be forwarded. */
export function hasControlCharacter (token: string): boolean {
  return CONTROL.test(token)
}

/** Parse an Authorization header value as Basic credentials carrying a token. */
export function readBasicToken (authorization: string | undefined): BasicToken {
  if (authorization === undefined || authorization === '') return { kind: 'none' }
  const space = authorization.indexOf(' ')
  const scheme = space === -1 ? authorization : authorization.slice(0, space)
  if (scheme.toLowerCase() !== 'basic') return { kind: 'other' }
  const encoded = space === -1 ? '' : authorization.slice(space + 1).trim()
  if (encoded === '' || !BASE64.test(encoded)) {
    return { kind: 'invalid', reason: 'Authorization: Basic credentials are not valid base64' }
  }
  const decoded = Buffer.from(encoded, 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  const user = colon === -1 ? decoded : decoded.slice(0, colon)
  const password = colon === -1 ? '' : decoded.slice(colon + 1)
  const token = user !== '' ? user : password
  if (token === '') return { kind: 'empty' }
  if (hasControlCharacter(token)) {
    return { kind: 'invalid', reason: 'the access token contains control characters' }
  }
  return { kind: 'token', token }
}

/** The Authorization value that carries `token` the way APIcast sends it. */
export function basicTokenHeader (token: string): string {
  return basicAuthorization(token, '')
}

/** True when a raw query string (without `?`) already has an `access_token`. */
export function queryHasAccessToken (rawQuery: string): boolean {
  if (rawQuery === '') return false
  return new URLSearchParams(rawQuery).has('access_token')
}

/**
 * A raw query string without its `access_token` parameters, every other
 * byte as it was.
 */
export function withoutAccessToken (rawQuery: string): string {
  if (!queryHasAccessToken(rawQuery)) return rawQuery
  return rawQuery.split('&').filter((part) => {
    const eq = part.indexOf('=')
    return percentDecode((eq === -1 ? part : part.slice(0, eq)).replace(/\+/g, ' ')) !== 'access_token'
  }).join('&')
}

/**
 * Append `access_token` to a raw query string without re-serialising the rest,
 * so every other byte of the query reaches 3scale as APIcast sent it.
 */
export function appendAccessToken (rawQuery: string, token: string): string {
  const param = 'access_token=' + encodeURIComponent(token)
  return rawQuery === '' ? param : rawQuery + '&' + param
}
