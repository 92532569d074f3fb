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
 * JSON lines, each parsed once. Each source (stdout, stderr, a log sink)
 * buffers its own partial line, so two streams never splice one line.
 */
export class LogCapture {
  private text = ''
  private readonly lines: LogLine[] = []
  private readonly partial = new Map<string, string>()

  /** Append `chunk` from `source`; complete lines that are JSON are parsed. */
  write (chunk: string, source = 'out'): void {
    this.text += chunk
    let rest = (this.partial.get(source) ?? '') + chunk
    for (let nl = rest.indexOf('\n'); nl !== -1; nl = rest.indexOf('\n')) {
      const line = rest.slice(0, nl)
      rest = rest.slice(nl + 1)
      if (line.startsWith('{')) this.lines.push(JSON.parse(line) as LogLine)
    }
    this.partial.set(source, rest)
  }

  /** Everything written so far, every source. */
  output (): string {
    return this.text
  }

  logs (): LogLine[] {
    return [...this.lines]
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
      const found = this.lines.find(predicate)
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
