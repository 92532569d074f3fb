import { loadConfig } from '../../src/config/config.js'
import { loadSettings } from '../../src/config/settings.js'
import { createLogger } from '../../src/observe/logger.js'
import { startSidecar as startComposed } from '../../src/sidecar.js'
import { LogCapture, type LogLine } from './log-capture.js'
import { sidecarEnv } from './sidecar-env.js'

export type { LogLine }

/** A running sidecar as a test sees it, in this process or as a process. */
export interface RunningSidecar {
  readonly portalUrl: string
  readonly backendUrl: string
  readonly adminUrl: string
  /** Everything the sidecar wrote so far. */
  output (): string
  /** Its JSON log lines so far. */
  logs (): LogLine[]
  /** Wait for a log line matching `predicate`. */
  waitForLog (predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>
  /**
   * Stop it (drain, close the listeners and tunnels), and assert that no
   * secret reached its output. An exit code: 0 when it stopped cleanly, as the
   * CLI exits. Call it in the test body, after the test's own assertions.
   */
  stop (): Promise<number | null>
  /**
   * Make sure it is stopped, asserting nothing: for `t.after`, so that a
   * failing test still cleans up (a hook that throws skips the hooks after it).
   */
  close (): Promise<void>
}

export interface InProcessOptions {
  /** Strings that must never appear in the output (tokens, passwords). */
  readonly secrets?: readonly string[]
}

/**
 * Start the sidecar in this process, the way cli.ts does: loadSettings over
 * exactly `env` (plus sidecarEnv()'s defaults; never process.env), the
 * composition root's startSidecar, and secret files reloaded on change.
 * Its log goes to a sink of its own, so the lines of two sidecars in one
 * process never mix. No process is spawned, so starting one costs
 * milliseconds; what needs a process (signals, exit codes, stdout, a pid to
 * measure) is spawnSidecar()'s, in sidecar-process.ts.
 */
export async function startSidecar (env: Record<string, string>, options: InProcessOptions = {}): Promise<RunningSidecar> {
  const full = await sidecarEnv(env)
  const { config, tls } = loadSettings(full)
  const capture = new LogCapture()
  const log = createLogger(config.logLevel, { write: (line: string) => { capture.write(line) } })
  const sidecar = await startComposed(config, tls, log, { reloadConfig: () => loadConfig(full) })

  let stopped = false
  let stopping: Promise<number> | undefined
  // The CLI's exit code for the same outcome: 0 once drained, 1 when shutdown failed.
  const shutdown = async (): Promise<number> => await (stopping ??= sidecar.shutdown().then(() => 0, (err: unknown) => {
    log.error(`shutdown failed: ${String(err)}`)
    return 1
  }).finally(() => { stopped = true }))

  const url = (port: number, tls: boolean): string => `${tls ? 'https' : 'http'}://127.0.0.1:${String(port)}`
  const portal = sidecar.listeners.get('portal')
  const backend = sidecar.listeners.get('backend')
  if (portal === undefined || backend === undefined) {
    await shutdown()
    throw new Error('the sidecar started without its portal and backend listeners')
  }
  return {
    portalUrl: url(portal.address.port, portal.tls),
    backendUrl: url(backend.address.port, backend.tls),
    adminUrl: url(sidecar.admin.address.port, false),
    output: () => capture.output(),
    logs: () => capture.logs(),
    waitForLog: async (predicate, timeoutMs = 10_000) =>
      await capture.waitForLog(predicate, timeoutMs, () => stopped ? 'the sidecar stopped' : undefined),
    stop: async () => {
      const code = await shutdown()
      capture.assertNoSecrets(options.secrets ?? [])
      return code
    },
    close: async () => { await shutdown() }
  }
}

/** The sidecar in this process with its forward proxy on (FORWARD_PROXY_PORT on a free port), and that port. */
export async function startForwardProxy (env: Record<string, string>, options: InProcessOptions = {}): Promise<{ sidecar: RunningSidecar, port: number }> {
  const sidecar = await startSidecar({ FORWARD_PROXY_PORT: '0', ...env }, options)
  const line = await sidecar.waitForLog((l) => l.listener === 'forward' && typeof l.port === 'number')
  return { sidecar, port: line.port as number }
}
