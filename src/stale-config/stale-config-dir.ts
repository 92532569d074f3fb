import { readdirSync, readFileSync, rmSync } from 'node:fs'
import { mkdtemp, open, rename, rm, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { StaleConfigStore, StoredResponse } from './stale-config.js'

/**
 * The first line of an entry file (format 2), then a newline, then the body's
 * `bytes` raw bytes. The body is written as the cache holds it, never
 * re-encoded: format 1 (one JSON object, body in base64) made a base64 copy
 * and a JSON copy of every body it saved (issue #13). `bytes` tells a whole
 * file from one cut short.
 */
interface EntryHeader {
  readonly v: 2
  readonly storedAt: number
  readonly bytes: number
  readonly headers: Record<string, string | string[]>
}

/** Format 1, as versions before 2 wrote it: read so an upgrade keeps what they stored, never written. */
interface EntryV1 {
  readonly v: 1
  readonly storedAt: number
  readonly headers: Record<string, string | string[]>
  readonly body: string
}

const KEY = /^[0-9a-f]{64}$/
const NEWLINE = 0x0a

/** The header line of `response`'s file, newline included. */
export function encodeEntryHeader (response: StoredResponse): Buffer {
  const header: EntryHeader = { v: 2, storedAt: response.storedAt, bytes: response.body.length, headers: response.headers }
  return Buffer.from(JSON.stringify(header) + '\n')
}

/**
 * The response an entry file holds, in either format; throws when it is
 * neither (unreadable, cut short, or with more than its body). Format 1 has
 * no raw newline (JSON.stringify escapes them), so the first newline is what
 * tells format 2. A format 2 body is a view into `file`, not a copy.
 */
export function decodeEntry (file: Buffer): StoredResponse {
  const newline = file.indexOf(NEWLINE)
  if (newline === -1) {
    const e = JSON.parse(file.toString('utf8')) as Partial<EntryV1>
    if (e.v !== 1 || typeof e.storedAt !== 'number' || typeof e.body !== 'string' || !isHeaders(e.headers)) throw new Error('not an entry')
    return { headers: e.headers, body: Buffer.from(e.body, 'base64'), storedAt: e.storedAt }
  }
  const h = JSON.parse(file.subarray(0, newline).toString('utf8')) as Partial<EntryHeader>
  if (h.v !== 2 || typeof h.storedAt !== 'number' || typeof h.bytes !== 'number' || !isHeaders(h.headers)) throw new Error('not an entry')
  const body = file.subarray(newline + 1)
  if (body.length !== h.bytes) throw new Error(`the body is ${body.length} bytes, its header says ${h.bytes}`)
  return { headers: h.headers, body, storedAt: h.storedAt }
}

/** Headers writeHead can replay: each value a string or a list of strings. */
function isHeaders (value: unknown): value is Record<string, string | string[]> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false
  return Object.values(value).every((v) => typeof v === 'string' || (Array.isArray(v) && v.every((s) => typeof s === 'string')))
}

/** What is still to be done for one key: only the newest wish counts. */
type Pending = { readonly op: 'save', readonly response: StoredResponse } | { readonly op: 'remove' }

/**
 * STALE_CONFIG_DIR: the stale-config store written through to a directory,
 * so a restarted sidecar (a container restart with an emptyDir, a systemd
 * restart) still has the last good configuration. One file per entry, named
 * by its key (a SHA-256, never a token), mode 0600, written to a temporary
 * file and renamed so a crash never leaves half a file. The name stays
 * `KEY.json` in format 2, so the first save after an upgrade replaces the
 * format 1 file of that key rather than sitting beside it.
 *
 * Writes run one at a time, off the request path. What waits is at most one
 * operation per key, the newest (a save replaces a queued save, a remove
 * cancels one), holding the body the cache holds rather than a copy: so the
 * queue never outgrows the cache, however fast saves come. The files hold the
 * configuration as 3scale sent it, secrets within it included: the
 * directory should be as private as the sidecar's own Secret.
 */
export class StaleConfigDir implements StaleConfigStore {
  readonly #pending = new Map<string, Pending>()
  #worker: Promise<void> | undefined

  constructor (readonly path: string, private readonly onError: (err: unknown) => void) {}

  /** Resolves once every write asked for so far is done. */
  async idle (): Promise<void> {
    while (this.#worker !== undefined) await this.#worker
  }

  /** Operations waiting to run: at most one per key. */
  get pending (): number { return this.#pending.size }

  /** Every readable entry, newest first; unreadable files are skipped (and named in `skipped`). */
  load (): { entries: Array<{ key: string, response: StoredResponse }>, skipped: string[] } {
    const entries: Array<{ key: string, response: StoredResponse }> = []
    const skipped: string[] = []
    for (const name of readdirSync(this.path)) {
      // A write cut short by a crash: its temporary directory is all that is left.
      if (name.startsWith('.tmp-')) {
        rmSync(join(this.path, name), { recursive: true, force: true })
        continue
      }
      const key = name.endsWith('.json') ? name.slice(0, -5) : ''
      if (!KEY.test(key)) continue
      try {
        entries.push({ key, response: decodeEntry(readFileSync(join(this.path, name))) })
      } catch {
        skipped.push(name)
      }
    }
    entries.sort((a, b) => b.response.storedAt - a.response.storedAt)
    return { entries, skipped }
  }

  save (key: string, response: StoredResponse): void {
    this.#enqueue(key, { op: 'save', response })
  }

  remove (key: string): void {
    this.#enqueue(key, { op: 'remove' })
  }

  #enqueue (key: string, pending: Pending): void {
    this.#pending.set(key, pending)
    if (this.#worker !== undefined) return
    const worker = this.#drain().finally(() => { this.#worker = undefined })
    // A throwing onError reaches idle(); with no one waiting it must not crash the process.
    worker.catch(() => {})
    this.#worker = worker
  }

  async #drain (): Promise<void> {
    for (let next = this.#pending.entries().next(); next.done !== true; next = this.#pending.entries().next()) {
      const [key, pending] = next.value
      this.#pending.delete(key)
      try {
        if (pending.op === 'save') await this.#write(key, pending.response)
        else await this.#unlink(key)
      } catch (err) {
        this.onError(err)
      }
    }
  }

  async #write (key: string, response: StoredResponse): Promise<void> {
    const tmp = await mkdtemp(join(this.path, '.tmp-'))
    try {
      const file = join(tmp, 'entry')
      const handle = await open(file, 'wx', 0o600)
      try {
        // Two writes from the current position: the header line, then the body Buffer as it is.
        await handle.writeFile(encodeEntryHeader(response))
        await handle.writeFile(response.body)
      } finally {
        await handle.close()
      }
      await rename(file, join(this.path, `${key}.json`))
    } finally {
      await rm(tmp, { recursive: true, force: true })
    }
  }

  async #unlink (key: string): Promise<void> {
    await unlink(join(this.path, `${key}.json`)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err
    })
  }
}
