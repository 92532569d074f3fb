import { readFileSync } from 'node:fs'
import { networkInterfaces } from 'node:os'
import { loadPart } from './package-roots.js'
import type * as PacEngine from './pac-engine.js'

/** pac-resolver and QuickJS, loaded on first use: from pac-engine.cjs beside the bundle or binary, else from node_modules. */
async function loadPacEngine (): Promise<typeof PacEngine> {
  try {
    return await loadPart<typeof PacEngine>('pac-engine.cjs', async () => await import('./pac-engine.js'))
  } catch (err) {
    throw new PacScriptError(`the PAC engine cannot be loaded (${err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err)}): pac-engine.cjs and quickjs.wasm go beside the binary or the bundle, as its package lays them out`)
  }
}

/**
 * The bounds of one PAC script: the time it may run, compiling or in each
 * FindProxyForURL call (QuickJS's interrupt handler stops a loop); the
 * wall time of a call (a dnsResolve that hangs); and the memory of its
 * heap. QuickJS runs on the event loop, so `runMs` is also the longest a
 * script that loops can hold up forwarding: once per evaluation, and a
 * PAC is evaluated once per destination per refresh, never per request.
 * Real PAC scripts run in well under a millisecond.
 */
export interface PacLimits {
  readonly runMs: number
  readonly waitMs: number
  readonly memoryBytes: number
}

export const PAC_LIMITS: PacLimits = { runMs: 250, waitMs: 5_000, memoryBytes: 16 * 1024 * 1024 }

/** A PAC script that does not parse, throws, or overruns its bounds. The message names the line where one is known. */
export class PacScriptError extends Error {
  override name = 'PacScriptError'
  constructor (message: string, readonly line?: number) {
    super(line !== undefined ? `line ${line}: ${message}` : message)
  }
}

/** A compiled PAC script, in its own sandbox. */
export interface PacScript {
  /** FindProxyForURL(url, host) as the script answers it, unparsed (pac-answer.ts parses). Calls run one at a time. */
  find (url: URL): Promise<unknown>
  /** Free the sandbox. */
  dispose (): void
}

/**
 * Compile `source` into a sandbox: pac-resolver's PAC functions
 * (dnsDomainIs, shExpMatch, isInNet, dnsResolve...) over QuickJS compiled
 * to WebAssembly (quickjs-wasi). The script runs inside the WebAssembly
 * instance's own memory, with its own global object: it reaches no
 * `require`, no `process`, no file and no socket of the sidecar, whatever
 * it does with `this.constructor.constructor`; it gets only the PAC
 * functions, which take and return strings. Both packages are loaded on
 * first use: a sidecar without PROXY_PAC_URL never loads them.
 *
 * Two PAC functions are the sidecar's own: myIpAddress reads this host's
 * interfaces (pac-resolver's opens a TCP connection to 8.8.8.8:53 to find
 * its address, which a locked-down network blocks or alarms on), and
 * alert goes to `say` (pac-resolver's writes to stdout, into the JSON log).
 */
export async function compilePacScript (source: string, say: (message: string) => void, limits: PacLimits = PAC_LIMITS): Promise<PacScript> {
  const { QuickJS, createPacResolver, sandbox, wasmFile } = await loadPacEngine()
  // Read at each compile (once per refresh), not kept: 640 kB held for nothing between them.
  const wasm = readFileSync(wasmFile())
  let deadline = Number.POSITIVE_INFINITY
  const vm = await QuickJS.create({ wasm, memoryLimit: limits.memoryBytes, interruptHandler: () => performance.now() > deadline })
  let find: (url: string, host: string) => Promise<unknown>
  deadline = performance.now() + limits.runMs
  try {
    find = createPacResolver(vm, source, {
      filename: 'proxy.pac',
      sandbox: {
        ...resumingAfterWaits(sandbox, () => { deadline = performance.now() + limits.runMs }),
        myIpAddress: () => myIpAddress(),
        alert: (message?: string) => { say(String(message ?? '').slice(0, 200)) }
      }
    })
  } catch (err) {
    vm.dispose()
    throw scriptError(err, source, limits)
  } finally {
    deadline = Number.POSITIVE_INFINITY
  }

  let queue: Promise<unknown> = Promise.resolve()
  const call = async (url: URL): Promise<unknown> => {
    let timer: NodeJS.Timeout | undefined
    deadline = performance.now() + limits.runMs
    try {
      return await Promise.race([
        find(url.href, url.hostname.replace(/^\[|\]$/g, '')),
        new Promise((_resolve, reject) => {
          timer = setTimeout(() => { reject(new PacScriptError(`FindProxyForURL gave no answer within ${limits.waitMs} ms (waiting on dnsResolve or isResolvable?)`)) }, limits.waitMs)
        })
      ])
    } catch (err) {
      throw scriptError(err, source, limits, find.toString())
    } finally {
      clearTimeout(timer)
      deadline = Number.POSITIVE_INFINITY
    }
  }
  let disposed = false
  return {
    find: async (url) => {
      const result = queue.then(async () => await call(url))
      queue = result.catch(() => {})
      return await result
    },
    dispose: () => {
      if (disposed) return
      disposed = true
      // After the calls in flight: QuickJS must not be freed under one.
      queue.then(() => { vm.dispose() }, () => { vm.dispose() })
    }
  }
}

/**
 * pac-resolver's PAC functions, the asynchronous ones (dnsResolve,
 * isResolvable, isInNet) wrapped so that the script's run-time bound
 * starts again when one returns: `runMs` bounds the script's own running,
 * not the DNS answers it waits for (`waitMs` bounds those). The wrappers
 * stay native async functions, which is how pac-resolver tells which calls
 * to `await`.
 */
function resumingAfterWaits (functions: Readonly<Record<string, unknown>>, resume: () => void): Record<string, (...args: never[]) => unknown> {
  const wrapped: Record<string, (...args: never[]) => unknown> = {}
  for (const [name, fn] of Object.entries(functions)) {
    if (typeof fn !== 'function') continue
    const f = fn as (...args: unknown[]) => unknown
    wrapped[name] = f.constructor.name === 'AsyncFunction' || String(f).includes('__awaiter(')
      ? async (...args: unknown[]) => {
        try {
          return await f(...args)
        } finally {
          resume()
        }
      }
      : f
  }
  return wrapped
}

/** This host's first non-internal IPv4 address, as myIpAddress answers in browsers; 127.0.0.1 when it has none. */
function myIpAddress (): string {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) {
      if (a.family === 'IPv4' && !a.internal) return a.address
    }
  }
  return '127.0.0.1'
}

/**
 * What went wrong in the script, with the line of PROXY_PAC_URL it is on:
 * esprima's syntax errors name it (`Line 3: Unexpected token`); a runtime
 * error's stack names a line of the code as pac-resolver rewrote it (its
 * comments dropped, `await` added), whose statement is then looked up in
 * the source.
 */
function scriptError (err: unknown, source: string, limits: PacLimits, compiled?: string): PacScriptError {
  if (err instanceof PacScriptError) return err
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err)
  const syntax = /^Error: Line (\d+): (.*)$/.exec(message)
  if (syntax !== null) return new PacScriptError(`syntax error: ${syntax[2] ?? ''}`, Number(syntax[1]))
  if (/InternalError: interrupted/.test(message)) return new PacScriptError(`the script ran longer than ${limits.runMs} ms and was stopped (a loop that never ends?)`)
  if (/InternalError: out of memory/.test(message)) return new PacScriptError(`the script used more than ${Math.round(limits.memoryBytes / 1024 / 1024)} MB and was stopped`)
  if (/FindProxyForURL.* to be defined/.test(message) || /FindProxyForURL is not defined/.test(message)) {
    return new PacScriptError('the script defines no function FindProxyForURL(url, host)')
  }
  if (/^Error: Don't know how to get name for/.test(message)) {
    return new PacScriptError(`pac-resolver cannot compile a call in the script (${message.replace(/^Error: /, '')}): write it as a plain function call`)
  }
  const stack = err instanceof Error ? err.stack ?? '' : ''
  const at = /proxy\.pac:(\d+):\d+/.exec(stack)
  const line = at !== null ? sourceLine(source, compiled?.split('\n')[Number(at[1]) - 1]) : undefined
  return new PacScriptError(`FindProxyForURL threw ${message}`, line)
}

/** The line of `source` that holds `statement` (spaces and quotes aside), or undefined. */
function sourceLine (source: string, statement: string | undefined): number | undefined {
  if (statement === undefined) return undefined
  const squash = (text: string): string => text.replace(/\/\/.*$/, '').replace(/[\s;'"`]/g, '').replace(/\bawait\b/g, '')
  const wanted = squash(statement.replace(/\bawait /g, ''))
  if (wanted.length < 3) return undefined
  const lines = source.split('\n')
  const index = lines.findIndex((l) => squash(l).includes(wanted))
  return index >= 0 ? index + 1 : undefined
}
