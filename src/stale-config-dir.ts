import { readdirSync, readFileSync, rmSync } from 'node:fs'
import { mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { StoredResponse } from './stale-config.js'

/** One stored response on disk: what the cache holds, with the body in base64. */
interface FileEntry {
  readonly v: 1
  readonly storedAt: number
  readonly headers: Record<string, string | string[]>
  readonly body: string
}

const KEY = /^[0-9a-f]{64}$/

/**
 * STALE_CONFIG_DIR: the stale-config store written through to a directory,
 * so a restarted sidecar (a container restart with an emptyDir, a systemd
 * restart) still has the last good configuration. One file per entry, named
 * by its key (a SHA-256, never a token), mode 0600, written to a temporary
 * file and renamed so a crash never leaves half a file. Writes run one after
 * another, off the request path, in the order they were asked for. The files hold the
 * configuration as 3scale sent it, secrets within it included: the
 * directory should be as private as the sidecar's own Secret.
 */
export class StaleConfigDir {
  #queue: Promise<void> = Promise.resolve()

  constructor (readonly path: string, private readonly onError: (err: unknown) => void) {}

  /** Resolves once every write asked for so far is done. */
  async idle (): Promise<void> { await this.#queue }

  #then (op: () => Promise<void>): void {
    this.#queue = this.#queue.then(op).catch(this.onError)
  }

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
        const e = JSON.parse(readFileSync(join(this.path, name), 'utf8')) as FileEntry
        if (e.v !== 1 || typeof e.storedAt !== 'number' || typeof e.body !== 'string' || typeof e.headers !== 'object') throw new Error('not an entry')
        entries.push({ key, response: { headers: e.headers, body: Buffer.from(e.body, 'base64'), storedAt: e.storedAt } })
      } catch {
        skipped.push(name)
      }
    }
    entries.sort((a, b) => b.response.storedAt - a.response.storedAt)
    return { entries, skipped }
  }

  save (key: string, response: StoredResponse): void {
    const entry: FileEntry = { v: 1, storedAt: response.storedAt, headers: response.headers, body: response.body.toString('base64') }
    this.#then(async () => {
      const tmp = await mkdtemp(join(this.path, '.tmp-'))
      try {
        const file = join(tmp, 'entry')
        await writeFile(file, JSON.stringify(entry), { mode: 0o600 })
        await rename(file, join(this.path, `${key}.json`))
      } finally {
        await rm(tmp, { recursive: true, force: true })
      }
    })
  }

  remove (key: string): void {
    this.#then(async () => {
      await unlink(join(this.path, `${key}.json`)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err
      })
    })
  }
}
