import { percentDecode } from '../http/percent-decode.js'
import { effectivePort } from '../http/url.js'

/**
 * Parameter names that carry credentials: 3scale's (access_token,
 * service_token, provider_key, user_key, app_key) and the usual ones of
 * OAuth and web forms. A name ending in `_` or `-` and one of
 * SECRET_SUFFIXES is one too. Identifiers (app_id, service_id, user_id) are
 * not: operators need them to follow a request.
 */
const SECRET_NAMES: ReadonlySet<string> = new Set([
  'access_token', 'service_token', 'provider_key', 'user_key', 'app_key', 'token',
  'password', 'passwd', 'pwd', 'key', 'api_key', 'apikey', 'secret',
  'client_secret', 'refresh_token', 'id_token', 'jwt'
])
/** What a secret name may end in after a `_` or `-`: `foo_key`, `x-api-token`. */
const SECRET_SUFFIXES: ReadonlySet<string> = new Set(['key', 'token', 'secret', 'password'])

export const REDACTED = '[REDACTED]'

/**
 * A request-target as it may appear in a log line. Works on the raw target,
 * so what is logged is what was sent, minus:
 * - the fragment: never part of a request-target (RFC 9112 §3.2), and not
 *   forwarded either, so it could only carry a secret into the log;
 * - the value of every credential-bearing parameter, in the query (separated
 *   by `&` or `;`) and in a path segment's `;` parameters (RFC 3986 §3.3).
 *   A name is secret when its base or any bracketed part is, so
 *   `user_key[]`, `transactions[0][user_key]` and `[user_key]` are caught;
 *   names are compared after percent-decoding (`user%5Fkey`);
 * - the key in 3scale's `/keys/{key}.json` (Account Management API,
 *   application keys), kept as `/keys/[REDACTED].json`.
 * It runs on every request line: a target with none of `#`, `?`, `;` or
 * `/keys/` is returned as it is, without any further scan. `censor` replaces
 * each secret (the demo prints `***`); the one redactor of request-targets,
 * so what the logs, doctor and the demo hide cannot drift apart.
 */
export function redactPath (target: string, censor: string = REDACTED): string {
  if (!target.includes('?') && !target.includes('#') && !target.includes(';') && !target.includes('/keys/')) return target
  const hash = target.indexOf('#')
  const sent = hash === -1 ? target : target.slice(0, hash)
  const q = sent.indexOf('?')
  const path = q === -1 ? sent : sent.slice(0, q)
  const safePath = redactPathSegments(path, censor)
  if (q === -1) return hash === -1 && safePath === path ? target : safePath
  const query = sent.slice(q + 1)
  const safeQuery = redactParams(query, true, censor)
  return hash === -1 && safePath === path && safeQuery === query ? target : safePath + '?' + safeQuery
}

const KEY_SUFFIX = /\.(?:json|xml)$/i

/** The path with `;` parameters and `/keys/{key}` redacted; the same string when nothing was. */
function redactPathSegments (path: string, censor: string): string {
  const keys = path.includes('/keys/')
  if (!keys && !path.includes(';')) return path
  const segments = path.split('/')
  let changed = false
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i] as string
    const next = segments[i + 1]
    if (keys && segment === 'keys' && next !== undefined && next !== '') {
      segments[i + 1] = censor + (KEY_SUFFIX.exec(next)?.[0] ?? '')
      changed = true
      i++
      continue
    }
    const semi = segment.indexOf(';')
    if (semi === -1) continue
    const params = segment.slice(semi)
    const safe = redactParams(params, false, censor)
    if (safe !== params) {
      segments[i] = segment.slice(0, semi) + safe
      changed = true
    }
  }
  return changed ? segments.join('/') : path
}

/**
 * `name=value` pairs split by `;`, and by `&` too when `ampersand`, with
 * secret values replaced by `censor`; the same string when none was.
 */
function redactParams (params: string, ampersand: boolean, censor: string): string {
  let out = ''
  let from = 0 // start of the pair being read
  let kept = 0 // params[kept..from) is still to be copied to `out` as it is
  for (let i = 0; i <= params.length; i++) {
    const c = params.charCodeAt(i) // NaN past the end
    if (i < params.length && c !== 59 /* ; */ && (c !== 38 /* & */ || !ampersand)) continue
    const pair = params.slice(from, i)
    const eq = pair.indexOf('=')
    const rawName = eq === -1 ? pair : pair.slice(0, eq)
    if (rawName !== '' && isSecretName(rawName)) {
      out += params.slice(kept, from) + rawName + '=' + censor
      kept = i
    }
    from = i + 1
  }
  return kept === 0 ? params : out + params.slice(kept)
}

/** True when the decoded name, or one of its `[…]` parts, names a credential. */
function isSecretName (rawName: string): boolean {
  let name = rawName
  if (name.includes('+')) name = name.replace(/\+/g, ' ')
  if (name.includes('%')) name = percentDecode(name)
  name = name.toLowerCase()
  if (!name.includes('[') && !name.includes(']')) return isSecretPart(name)
  return name.split(/[[\]]/).some(isSecretPart)
}

function isSecretPart (raw: string): boolean {
  const part = raw.trim()
  if (SECRET_NAMES.has(part)) return true
  const cut = Math.max(part.lastIndexOf('_'), part.lastIndexOf('-'))
  return cut !== -1 && SECRET_SUFFIXES.has(part.slice(cut + 1))
}

/**
 * A URL as it may appear in a log: the password (and a token held as the user
 * name) replaced. Mirrors proxy-chain's redactUrl(): the proxy URL is only
 * ever logged through this.
 */
export function redactUrl (url: URL, { keepUsername = true } = {}): string {
  if (url.username === '' && url.password === '') return url.href
  const copy = new URL(url.href)
  if (!keepUsername && copy.username !== '') copy.username = '***'
  if (copy.password !== '') copy.password = '***'
  return copy.href
}

/** `host:port` of a URL, with the scheme's default port made explicit. */
export function hostPort (url: URL): string {
  return `${url.hostname}:${effectivePort(url)}`
}

/**
 * Free text that may quote a URL or a request-target, such as an error's
 * message, as it may appear in a log: the userinfo of every `scheme://…@`
 * and every credential-bearing parameter (as redactPath) replaced, and an
 * `Authorization`/`Proxy-Authorization` value quoted in it too. For messages
 * the sidecar does not write itself (undici's, Node's, OpenSSL's).
 */
export function redactText (text: string): string {
  return text
    .replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@]*@/gi, `$1${REDACTED}@`)
    .replace(/\b((?:proxy-)?authorization:\s*)\S+(\s+\S+)?/gi, `$1${REDACTED}`)
    .replace(/[?;&][^\s?#]*/g, (params) => params[0] + redactParams(params.slice(1), true, REDACTED))
}

/**
 * An endpoint as the operator wrote it, for start-up lines and doctor:
 * origin plus path prefix (no trailing `/`), never the userinfo, where a
 * portal token may be.
 */
export function endpointLabel (url: URL): string {
  return url.pathname === '/' || url.pathname === '' ? url.origin : url.origin + url.pathname
}
