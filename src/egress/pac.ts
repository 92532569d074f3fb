import type { Logger } from '../observe/logger.js'
import { PacAnswerError, PacUnavailable, parsePacAnswer, type PacAnswer } from './pac-answer.js'
import { compilePacScript, PacScriptError, type PacLimits, type PacScript } from './pac-script.js'
import { pacLabel, PacFetchError, type PacSource } from './pac-source.js'

export interface PacOptions {
  readonly source: PacSource
  /** PROXY_PAC_REFRESH_S, in ms: how often the PAC file is fetched again once loaded. */
  readonly refreshMs: number
  /** Reads the PAC file's text (pac-source.ts). */
  readonly read: () => Promise<string>
  readonly log: Logger
  /** The destinations every new script must answer for before it is used (the routes' upstreams). */
  readonly destinations: () => readonly URL[]
  /** Until the first load: the first wait before fetching again, doubled up to `max`. */
  readonly retryMs?: { readonly first: number, readonly max: number }
  readonly limits?: PacLimits
  /** How long an unused sandbox is kept (SANDBOX_IDLE_MS). */
  readonly sandboxIdleMs?: number
}

/**
 * The script in use and its answers, one per destination (scheme and
 * host:port). The sandbox itself (`script`, 15-20 MB of WebAssembly memory)
 * is kept only while it is being asked: freed SANDBOX_IDLE_MS after its last
 * evaluation, and compiled again from `text` when a destination not yet
 * answered comes (a wildcard of FORWARD_PROXY_ALLOW). The answers stay.
 */
interface Loaded {
  readonly text: string
  script: Promise<PacScript> | undefined
  idle: NodeJS.Timeout | undefined
  readonly answers: Map<string, Promise<PacAnswer>>
  readonly compile: () => Promise<PacScript>
  readonly idleMs: number
}

/** How long an unused sandbox is kept: past the evaluations of one load, well short of a refresh. */
const SANDBOX_IDLE_MS = 10_000

/**
 * PROXY_PAC_URL: the PAC file, fetched, compiled into its sandbox
 * (pac-script.ts), and asked once per destination for the proxies to use.
 *
 * - At start, a PAC file that cannot be fetched, or whose script fails for
 *   a route, is tried again with back-off (1 s, doubling, at most 30 s):
 *   until then there is no decision, `unavailable()` says why, and
 *   requests get 502 pac_unavailable.
 * - Once loaded, it is fetched again every PROXY_PAC_REFRESH_S. A new
 *   script is put in use only when it answers for every route: a fetch that
 *   fails or a script that is broken keeps the last good one, and is
 *   logged once (again only when the reason changes).
 * Answers are cached per script: a PAC is evaluated once per destination,
 * never per request.
 */
export class ProxyAutoConfig {
  readonly label: string
  #loaded: Loaded | undefined
  #failure: { readonly message: string, attempts: number, nextInMs: number } | undefined
  #logged: string | undefined
  #timer: NodeJS.Timeout | undefined
  #closed = false

  constructor (private readonly options: PacOptions) {
    this.label = pacLabel(options.source)
  }

  /** True once a script is in use. */
  get loaded (): boolean {
    return this.#loaded !== undefined
  }

  /** Why there is no decision yet, in the words of the 502 and /readyz. */
  unavailable (): PacUnavailable {
    const f = this.#failure
    if (f === undefined) return new PacUnavailable(`the PAC file PROXY_PAC_URL ${this.label} is being loaded`)
    return new PacUnavailable(`the PAC file PROXY_PAC_URL ${this.label} ${f.message}; tried ${f.attempts} time${f.attempts === 1 ? '' : 's'}, next in ${Math.ceil(f.nextInMs / 1000)} s`)
  }

  /**
   * The PAC's answer for `url`, from the script in use. Throws
   * PacUnavailable when no script is loaded yet or it fails for `url`
   * (a destination first asked for after the script was loaded: a
   * wildcard of FORWARD_PROXY_ALLOW).
   */
  async answer (url: URL): Promise<PacAnswer> {
    const loaded = this.#loaded
    if (loaded === undefined) throw this.unavailable()
    try {
      return await answerOf(loaded, url)
    } catch (err) {
      throw new PacUnavailable(`the PAC file PROXY_PAC_URL ${this.label} gives no answer for ${url.host}: ${describe(err)}`)
    }
  }

  /**
   * Fetch and compile the PAC file, and ask it for every destination.
   * Returns true when a new script is now in use, false when the text did
   * not change; throws what failed, with the last good script kept.
   */
  async load (): Promise<boolean> {
    const text = await this.options.read()
    if (this.#loaded?.text === text) return false
    const compile = async (): Promise<PacScript> => await compilePacScript(text, (message) => { this.options.log.info({ pac: this.label }, `PAC alert(): ${message}`) }, this.options.limits)
    const next: Loaded = { text, script: compile(), idle: undefined, answers: new Map(), compile, idleMs: this.options.sandboxIdleMs ?? SANDBOX_IDLE_MS }
    try {
      await next.script
      // Every route must get an answer from the new script before it replaces the old.
      await Promise.all(this.options.destinations().map(async (url) => await answerOf(next, url)))
    } catch (err) {
      freeSandbox(next)
      throw err
    }
    const old = this.#loaded
    this.#loaded = next
    if (old !== undefined) freeSandbox(old)
    return true
  }

  /**
   * Load now, then keep the PAC file fresh: with back-off until the first
   * load, every `refreshMs` after. `onLoaded` runs after each new script is
   * put in use (the caller swaps the routes' transports).
   */
  start (onLoaded: () => void): void {
    const retry = this.options.retryMs ?? { first: 1_000, max: 30_000 }
    const run = async (): Promise<void> => {
      let wait: number
      try {
        const changed = await this.load()
        if (this.#failure !== undefined || changed) this.#recovered(changed)
        this.#failure = undefined
        if (changed) onLoaded()
        wait = this.options.refreshMs
      } catch (err) {
        const message = describe(err)
        const attempts = (this.#failure?.attempts ?? 0) + 1
        wait = this.#loaded === undefined ? Math.min(retry.max, retry.first * 2 ** (attempts - 1)) : this.options.refreshMs
        this.#failure = { message, attempts, nextInMs: wait }
        this.#report(message, wait)
      }
      if (!this.#closed) {
        this.#timer = setTimeout(() => { void run() }, wait)
        this.#timer.unref()
      }
    }
    void run()
  }

  /** Stop refreshing and free the sandbox. */
  close (): void {
    this.#closed = true
    clearTimeout(this.#timer)
    if (this.#loaded !== undefined) freeSandbox(this.#loaded)
  }

  /** A failure, logged once per reason: the first, and each that differs from the one before. */
  #report (message: string, waitMs: number): void {
    if (this.#logged === message) return
    this.#logged = message
    const kept = this.#loaded !== undefined
    this.options.log.error({ pac: this.label, event: 'pac_failed', kept },
      `the PAC file PROXY_PAC_URL ${this.label} ${message}; ` +
      (kept
        ? `the last good PAC stays in use; it is fetched again every ${Math.round(this.options.refreshMs / 1000)} s (PROXY_PAC_REFRESH_S)`
        : `there is no proxy decision yet, so requests get 502 pac_unavailable and /readyz is not ready; trying again in ${Math.ceil(waitMs / 1000)} s, with back-off`) +
      (/^(cannot fetch|cannot read)/.test(message) ? '. Check PROXY_PAC_URL, and that the sidecar reaches it directly (PAC files are fetched without a proxy)' : ''))
  }

  #recovered (changed: boolean): void {
    const was = this.#logged
    this.#logged = undefined
    if (was !== undefined) this.options.log.info({ pac: this.label, event: 'pac_loaded' }, `the PAC file PROXY_PAC_URL ${this.label} loads again${changed ? ', with a new script' : ', unchanged'}`)
    else if (changed) this.options.log.info({ pac: this.label, event: 'pac_loaded' }, `the PAC file PROXY_PAC_URL ${this.label} is loaded`)
  }
}

/** The answer of `loaded` for `url`, evaluated once per scheme and host:port. */
async function answerOf (loaded: Loaded, url: URL): Promise<PacAnswer> {
  const key = `${url.protocol}//${url.host}`
  let answer = loaded.answers.get(key)
  if (answer === undefined) {
    clearTimeout(loaded.idle)
    const script = loaded.script ??= loaded.compile()
    answer = script.then(async (s) => await s.find(new URL(`${key}/`))).then(parsePacAnswer)
    // The sandbox is freed once nothing has asked it for a while.
    const settled = (): void => {
      clearTimeout(loaded.idle)
      loaded.idle = setTimeout(() => { freeSandbox(loaded) }, loaded.idleMs)
      loaded.idle.unref()
    }
    answer.then(settled, settled)
    loaded.answers.set(key, answer)
    // A failure is not kept: the destination is asked again next time.
    answer.catch(() => { loaded.answers.delete(key) })
  }
  return await answer
}

/** Free `loaded`'s sandbox now (its answers stay); the next unanswered destination compiles it again. */
function freeSandbox (loaded: Loaded): void {
  clearTimeout(loaded.idle)
  const script = loaded.script
  loaded.script = undefined
  script?.then((s) => { s.dispose() }, () => {})
}

/** What failed, as one clause after "the PAC file PROXY_PAC_URL <url>" (the log line, /readyz, doctor). */
export function describePacFailure (err: unknown): string {
  return describe(err)
}

function describe (err: unknown): string {
  if (err instanceof PacFetchError) return err.message
  if (err instanceof PacScriptError) return `has a broken script: ${err.message}`
  if (err instanceof PacAnswerError) return `answers garbage: ${err.message}`
  return `cannot be used: ${err instanceof Error ? err.message : String(err)}`
}
