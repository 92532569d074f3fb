/**
 * Poll `probe` until `ok` holds for its value, or fail after `ms` with the
 * last value seen. The one way tests wait for something to happen: never a
 * fixed sleep, which is either too short on a loaded CI machine or wasted
 * time everywhere else.
 */
export async function eventually<T> (probe: () => T | Promise<T>, ok: (value: T) => boolean, ms = 5000, what = 'the condition'): Promise<T> {
  const deadline = Date.now() + ms
  let last: T | undefined
  for (;;) {
    last = await probe()
    if (ok(last)) return last
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}; last value: ${JSON.stringify(last)}`)
    await new Promise<void>((resolve) => setTimeout(resolve, 25))
  }
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
