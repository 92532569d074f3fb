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

/**
 * One 200 configuration response being collected for the store, from its
 * first body chunk to its end. Until commit() or abandon(), it holds its key
 * and its share of the budget, so the relay must end it on every path:
 * commit() at the response's end, abandon() on an error, a client abort or
 * a stale answer. Both are idempotent, and add() after either does nothing.
 */
export interface StaleCollector {
  /** Keep `chunk`; past the budget or maxBytes the collection abandons itself and the response is only relayed. */
  add (chunk: Buffer): void
  /** The response ended whole: store it. False when it was abandoned or its body fell short of its Content-Length. */
  commit (): boolean
  /** Release the chunks and the key at once. */
  abandon (): void
}

export interface StaleConfigOptions {
  readonly maxAgeMs: number
  /**
   * Bound on the bodies kept, in bytes; a larger response is not kept. The
   * same bound applies to the bodies being collected, all together.
   */
  readonly maxBytes: number
  readonly now?: () => number
  /** Write entries through to this store, and start from what it holds. */
  readonly dir?: StaleConfigStore | undefined
}

/**
 * Where the cache persists its entries (STALE_CONFIG_DIR): the cache owns
 * this interface and stale-config-dir.ts implements it, so the cache never
 * depends on the files.
 */
export interface StaleConfigStore {
  /** Every stored entry, and the names of files that could not be read. */
  load (): { entries: Array<{ key: string, response: StoredResponse }>, skipped: string[] }
  save (key: string, response: StoredResponse): void
  remove (key: string): void
  /** Resolves once every pending write has reached the disk. */
  idle (): Promise<void>
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
  readonly #dir: StaleConfigStore | undefined
  #bytes = 0
  /** Keys being collected: one collection per key, since a concurrent second one would hold another whole copy only to replace the first. */
  readonly #collecting = new Set<string>()
  /** Bytes the collections hold or have reserved (their Content-Length), all together. */
  #collectingBytes = 0
  /**
   * The bound on #collectingBytes: the same as on what is stored (a
   * collection larger than that could never be stored anyway), so the store
   * and its collections stay within twice STALE_CONFIG_MAX_BYTES (plus, for
   * a moment, one chunked body being joined), with no new setting to size.
   */
  readonly #budget: number

  constructor (options: StaleConfigOptions) {
    this.#maxAgeMs = options.maxAgeMs
    this.#maxBytes = options.maxBytes
    this.#budget = options.maxBytes
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

  get size (): number { return this.#entries.size }
  get bytes (): number { return this.#bytes }
  /** Bytes held or reserved by the collections in flight. */
  get collectingBytes (): number { return this.#collectingBytes }

  /**
   * Start collecting the 200 response for `key` whose (hop-by-hop free)
   * headers are `headers`, or undefined when it is not to be collected: the
   * key is being collected already (a concurrent read of the same
   * configuration), or its Content-Length is past maxBytes or does not fit
   * in what the collections in flight leave of the budget.
   *
   * The budget is maxBytes for all collections together, because every
   * collection holds its body whole until it ends: unbounded, 40 concurrent
   * 30 MB configuration reads held 932 MB (issue #13). A declared length is
   * reserved up front, so a collection that cannot finish never starts; a
   * body without one is counted as it grows. Either way, a response that is
   * not collected is still relayed in full: the store only misses one copy.
   */
  collect (key: string, headers: Record<string, string | string[]>): StaleCollector | undefined {
    if (this.#collecting.has(key)) return undefined
    const declared = contentLength(headers['content-length'])
    const reserve = declared ?? 0
    if (reserve > this.#maxBytes || this.#collectingBytes + reserve > this.#budget) return undefined
    // A copy: the relay may still change its own headers (Connection while draining).
    const kept = storableHeaders(headers)
    this.#collecting.add(key)
    this.#collectingBytes += reserve
    // A declared length is filled in place: what is reserved is what is held,
    // with no join at the end and no socket buffer kept alive by a chunk.
    // allocUnsafe is safe: only a body filled to its last byte is stored.
    let whole: Buffer | undefined = declared !== undefined ? Buffer.allocUnsafe(declared) : undefined
    let chunks: Buffer[] = []
    let bytes = 0
    let reserved = reserve
    let open = true
    const release = (): void => {
      if (!open) return
      open = false
      whole = undefined
      chunks = []
      this.#collectingBytes -= reserved
      this.#collecting.delete(key)
    }
    return {
      add: (chunk) => {
        if (!open) return
        if (whole !== undefined) {
          // More than declared: undici fails such a response; never store it.
          if (bytes + chunk.length > whole.length) {
            release()
            return
          }
          bytes += chunk.copy(whole, bytes)
          return
        }
        bytes += chunk.length
        if (bytes > reserved) {
          const grow = bytes - reserved
          if (bytes > this.#maxBytes || this.#collectingBytes + grow > this.#budget) {
            release()
            return
          }
          reserved = bytes
          this.#collectingBytes += grow
        }
        chunks.push(chunk)
      },
      commit: () => {
        if (!open) return false
        const body = whole !== undefined ? (bytes === whole.length ? whole : undefined) : Buffer.concat(chunks, bytes)
        release()
        return body !== undefined && this.#put(key, kept, body)
      },
      abandon: release
    }
  }

  store (key: string, headers: Record<string, string | string[]>, body: Buffer): boolean {
    return this.#put(key, storableHeaders(headers), body)
  }

  #put (key: string, kept: Record<string, string | string[]>, body: Buffer): boolean {
    if (body.length > this.#maxBytes) return false
    this.#forget(key)
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

/** The headers worth replaying: no cookie (another client's session), no length or age (set when served). */
function storableHeaders (headers: Record<string, string | string[]>): Record<string, string | string[]> {
  const kept: Record<string, string | string[]> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (name === 'set-cookie' || name === 'content-length' || name === 'age') continue
    kept[name] = value
  }
  return kept
}

/** A Content-Length the relay can trust (RFC 9110 section 8.6: digits only), or undefined. */
function contentLength (value: string | string[] | undefined): number | undefined {
  return typeof value === 'string' && /^\d{1,15}$/.test(value) ? Number(value) : undefined
}
