import { createHash } from 'node:crypto'
import type { StaleConfigDir } from './stale-config-dir.js'

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
  /** Write entries through to this directory, and start from what it holds. */
  readonly dir?: StaleConfigDir | undefined
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
  readonly #dir: StaleConfigDir | undefined
  #bytes = 0

  constructor (options: StaleConfigOptions) {
    this.#maxAgeMs = options.maxAgeMs
    this.#maxBytes = options.maxBytes
    this.#now = options.now ?? Date.now
    this.#dir = options.dir
  }

  /**
   * Take in what the directory holds (newest first, while it fits and is
   * young enough); drop the files that are too old or do not fit. Returns
   * what was loaded and the unreadable files, for the start-up line.
   */
  restore (): { loaded: number, skipped: string[] } {
    if (this.#dir === undefined) return { loaded: 0, skipped: [] }
    const { entries, skipped } = this.#dir.load()
    const now = this.#now()
    // Newest first from load(); insert oldest first so eviction order stays "least recently stored".
    const kept: typeof entries = []
    let bytes = 0
    for (const e of entries) {
      if (now - e.response.storedAt > this.#maxAgeMs || bytes + e.response.body.length > this.#maxBytes) {
        this.#dir.remove(e.key)
        continue
      }
      bytes += e.response.body.length
      kept.push(e)
    }
    for (const e of kept.reverse()) {
      this.#entries.set(e.key, e.response)
      this.#bytes += e.response.body.length
    }
    return { loaded: kept.length, skipped }
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

  /** Resolves once every write to STALE_CONFIG_DIR asked for so far is done (for shutdown). */
  async idle (): Promise<void> { await this.#dir?.idle() }

  /** The largest body worth collecting. */
  get maxBytes (): number { return this.#maxBytes }

  get size (): number { return this.#entries.size }
  get bytes (): number { return this.#bytes }

  store (key: string, headers: Record<string, string | string[]>, body: Buffer): boolean {
    if (body.length > this.#maxBytes) return false
    this.#forget(key)
    const kept: Record<string, string | string[]> = {}
    for (const [name, value] of Object.entries(headers)) {
      if (name === 'set-cookie' || name === 'content-length' || name === 'age') continue
      kept[name] = value
    }
    const stored: StoredResponse = { headers: kept, body, storedAt: this.#now() }
    this.#entries.set(key, stored)
    this.#bytes += body.length
    this.#dir?.save(key, stored)
    for (const oldest of this.#entries.keys()) {
      if (this.#bytes <= this.#maxBytes) break
      this.#delete(oldest)
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

  /** Drop `key` from memory only: a new version of it is about to be written. */
  #forget (key: string): void {
    const old = this.#entries.get(key)
    if (old === undefined) return
    this.#entries.delete(key)
    this.#bytes -= old.body.length
  }

  #delete (key: string): void {
    if (!this.#entries.has(key)) return
    this.#forget(key)
    this.#dir?.remove(key)
  }
}
