import assert from 'node:assert/strict'
import { poll } from './eventually.js'

export interface LogLine {
  level: string
  msg: string
  listener?: string
  [key: string]: unknown
}

/**
 * What one sidecar wrote, kept for its test: the text as it came, and its
 * JSON lines, each parsed once, when a test first looks (not while the
 * sidecar writes: in-process, that is its own time). Each source (stdout,
 * stderr, a log sink) buffers its own partial line, so two streams never
 * splice one line.
 */
export class LogCapture {
  private text = ''
  private readonly complete: string[] = []
  private readonly lines: LogLine[] = []
  private parsedUpTo = 0
  private readonly partial = new Map<string, string>()

  /** Append `chunk` from `source`. */
  write (chunk: string, source = 'out'): void {
    this.text += chunk
    const parts = ((this.partial.get(source) ?? '') + chunk).split('\n')
    this.partial.set(source, parts.pop() ?? '')
    for (const line of parts) if (line.startsWith('{')) this.complete.push(line)
  }

  private parsed (): LogLine[] {
    for (; this.parsedUpTo < this.complete.length; this.parsedUpTo++) this.lines.push(JSON.parse(this.complete[this.parsedUpTo] as string) as LogLine)
    return this.lines
  }

  /** Everything written so far, every source. */
  output (): string {
    return this.text
  }

  logs (): LogLine[] {
    return [...this.parsed()]
  }

  /** The last lines written, for a failure message. */
  tail (): string {
    return this.text.split('\n').slice(-25).join('\n')
  }

  /**
   * Wait for a line matching `predicate`. `gone` says why none can come any
   * more (the process exited), or undefined while one still may.
   */
  async waitForLog (predicate: (line: LogLine) => boolean, timeoutMs: number, gone: () => string | undefined = () => undefined): Promise<LogLine> {
    const { value } = await poll(() => {
      const found = this.parsed().find(predicate)
      const why = found === undefined ? gone() : undefined
      if (why !== undefined) throw new Error(`${why} before the expected log line:\n${this.tail()}`)
      return found
    }, (line) => line !== undefined, timeoutMs)
    if (value === undefined) throw new Error(`timed out after ${timeoutMs} ms waiting for a log line:\n${this.tail()}`)
    return value
  }

  /** Assert that no secret, plain or base64-encoded, was written. */
  assertNoSecrets (secrets: readonly string[]): void {
    for (const secret of secrets) {
      assert.ok(!this.text.includes(secret), `a secret reached the sidecar's output: ${secret.slice(0, 2)}…`)
      const b64 = Buffer.from(secret).toString('base64')
      assert.ok(!this.text.includes(b64), 'a base64-encoded secret reached the sidecar\'s output')
    }
  }
}
