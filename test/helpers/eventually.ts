/** How often poll() probes: often enough not to add latency, rarely enough to cost nothing. */
const INTERVAL_MS = 25

/** What poll() saw last, and whether `ok` held for it. */
export interface Polled<T> {
  readonly value: T
  readonly ok: boolean
}

/**
 * The one polling loop of the tests: probe until `ok` holds for the value, or
 * `ms` pass. Never throws on a timeout, so a caller can state what a timeout
 * means with its own assertion; an error the probe throws ends the wait.
 * Everything that waits for something to happen (eventually(), the
 * harnesses' waitForLog, waitForPort) polls through here: never a fixed
 * sleep, which is either too short on a loaded CI machine or wasted time
 * everywhere else.
 */
export async function poll<T> (probe: () => T | Promise<T>, ok: (value: T) => boolean, ms: number): Promise<Polled<T>> {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await probe()
    if (ok(value)) return { value, ok: true }
    if (Date.now() > deadline) return { value, ok: false }
    await new Promise<void>((resolve) => setTimeout(resolve, INTERVAL_MS))
  }
}

/**
 * Poll `probe` until `ok` holds for its value, or fail after `ms` with the
 * last value seen. The way tests wait for something to happen.
 */
export async function eventually<T> (probe: () => T | Promise<T>, ok: (value: T) => boolean, ms = 5000, what = 'the condition'): Promise<T> {
  const { value, ok: held } = await poll(probe, ok, ms)
  if (!held) throw new Error(`timed out after ${ms} ms waiting for ${what}; last value: ${JSON.stringify(value)}`)
  return value
}

/** Open file descriptors of process `pid` (Linux /proc). */
export async function openFds (pid: number): Promise<number> {
  const { readdir } = await import('node:fs/promises')
  return (await readdir(`/proc/${pid}/fd`)).length
}

/** Peak resident set size of process `pid` in bytes (VmHWM), and the current one (VmRSS). */
export async function memoryOf (pid: number): Promise<{ rss: number, peak: number }> {
  const { readFile } = await import('node:fs/promises')
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024
  return { rss: kb('VmRSS'), peak: kb('VmHWM') }
}
