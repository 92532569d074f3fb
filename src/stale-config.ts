import { createHash } from 'node:crypto'

/**
 * Portal paths APIcast loads its configuration from: the services list, a
 * service's proxy configuration (latest, or a version), the account-wide
 * proxy configs, and the older spec endpoints. Everything else on the portal
 * (and every backend call) is never kept.
 */
const CONFIG_PATHS: readonly RegExp[] = [
  /^\/admin\/api\/services\.json$/,
  /^\/admin\/api\/services\/[^/]+\/proxy\.json$/,
  /^\/admin\/api\/services\/[^/]+\/proxy\/configs\/[^/]+(\/[^/]+)?\.json$/,
  /^\/admin\/api\/account\/proxy_configs\/[^/]+\.json$/,
  /^\/admin\/api\/nginx\/spec\.json$/
]

/** True when `path` (without the query) is one of APIcast's configuration reads. */
export function isConfigPath (path: string): boolean {
  return CONFIG_PATHS.some((re) => re.test(path))
}

/** A response kept whole: status 200, headers without hop-by-hop ones or cookies. */
export interface StoredResponse {
  readonly headers: Record<string, string | string[]>
  readonly body: Buffer
  readonly storedAt: number
}

export interface StaleHit {
  readonly response: StoredResponse
  readonly ageSeconds: number
}

export interface StaleConfigOptions {
  readonly maxAgeMs: number
  /** Bound on the bodies kept, in bytes; a larger response is not kept. */
  readonly maxBytes: number
  readonly now?: () => number
}

/**
 * The last good configuration response per (path, query, token), in memory,
 * for stale-if-error (RFC 5861): served only when the portal cannot answer.
 * The key is a SHA-256 of the outgoing target and credentials, so no token
 * is held as a key. Bounded in bytes (least recently stored evicted first)
 * and in age (an entry older than maxAgeMs is never served, and dropped).
 */
export class StaleConfigCache {
  readonly #entries = new Map<string, StoredResponse>()
  readonly #maxAgeMs: number
  readonly #maxBytes: number
  readonly #now: () => number
  #bytes = 0

  constructor (options: StaleConfigOptions) {
    this.#maxAgeMs = options.maxAgeMs
    this.#maxBytes = options.maxBytes
    this.#now = options.now ?? Date.now
  }

  /**
   * The key of a request, or undefined when it is not a configuration read.
   * `target` is the outgoing origin-form target (path and query, token
   * included when it travels in the query); `authorization` the outgoing
   * header, when the token travels there.
   */
  key (method: string, path: string, target: string, authorization: string | string[] | undefined): string | undefined {
    if (method !== 'GET' || !isConfigPath(path)) return undefined
    return createHash('sha256').update(target).update('\n').update(String(authorization ?? '')).digest('hex')
  }

  /** The largest body worth collecting. */
  get maxBytes (): number { return this.#maxBytes }

  get size (): number { return this.#entries.size }
  get bytes (): number { return this.#bytes }

  store (key: string, headers: Record<string, string | string[]>, body: Buffer): boolean {
    if (body.length > this.#maxBytes) return false
    this.#delete(key)
    const kept: Record<string, string | string[]> = {}
    for (const [name, value] of Object.entries(headers)) {
      if (name === 'set-cookie' || name === 'content-length' || name === 'age') continue
      kept[name] = value
    }
    this.#entries.set(key, { headers: kept, body, storedAt: this.#now() })
    this.#bytes += body.length
    for (const [oldest, entry] of this.#entries) {
      if (this.#bytes <= this.#maxBytes) break
      this.#entries.delete(oldest)
      this.#bytes -= entry.body.length
    }
    return true
  }

  /** The stored response for `key`, if one is young enough to serve. */
  lookup (key: string): StaleHit | undefined {
    const response = this.#entries.get(key)
    if (response === undefined) return undefined
    const ageMs = this.#now() - response.storedAt
    if (ageMs > this.#maxAgeMs) {
      this.#delete(key)
      return undefined
    }
    return { response, ageSeconds: Math.max(0, Math.floor(ageMs / 1000)) }
  }

  #delete (key: string): void {
    const old = this.#entries.get(key)
    if (old === undefined) return
    this.#entries.delete(key)
    this.#bytes -= old.body.length
  }
}
