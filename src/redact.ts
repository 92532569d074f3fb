/**
 * Query parameters that carry 3scale credentials. Their values are replaced
 * before a path reaches a log line.
 */
const SECRET_PARAMS = new Set([
  'access_token',
  'service_token',
  'provider_key',
  'user_key',
  'app_key',
  'token'
])

export const REDACTED = '[REDACTED]'

/**
 * Replace the value of every credential-bearing query parameter in a request
 * target with `[REDACTED]`. Works on the raw target, so what is logged is what
 * was sent, minus the secrets. Parameter names are compared after
 * percent-decoding, so `user%5Fkey` is caught as well.
 */
export function redactPath (target: string): string {
  const q = target.indexOf('?')
  if (q === -1) return target
  const parts = target.slice(q + 1).split('&')
  let changed = false
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as string
    const eq = part.indexOf('=')
    const rawName = eq === -1 ? part : part.slice(0, eq)
    if (SECRET_PARAMS.has(decodeName(rawName))) {
      parts[i] = rawName + '=' + REDACTED
      changed = true
    }
  }
  return changed ? target.slice(0, q + 1) + parts.join('&') : target
}

function decodeName (raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' ')).toLowerCase()
  } catch {
    return raw.toLowerCase()
  }
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
  const port = url.port !== '' ? url.port : (url.protocol === 'https:' ? '443' : '80')
  return `${url.hostname}:${port}`
}
