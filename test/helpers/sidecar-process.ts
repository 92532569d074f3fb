import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { LogCapture, type LogLine } from './log-capture.js'
import { sidecarEnv } from './sidecar-env.js'
import type { RunningSidecar } from './sidecar.js'

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli.js')
/**
 * The node flags the sidecar ships with (scripts/node-flags.json: npm start,
 * the image's entrypoint and the single binary's execArgv), so that what the
 * tests measure of a process is what runs in production.
 */
export const NODE_FLAGS: readonly string[] = (JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'scripts', 'node-flags.json'), 'utf8')) as { flags: string[] }).flags

/** The sidecar as a process: what only a process has (a pid, signals, an exit code). */
export interface SidecarProcess extends RunningSidecar {
  readonly pid: number
  readonly child: ChildProcess
  /** Every line printed so far, stdout and stderr. */
  output (): string
  /**
   * Send `signal`, wait for the exit code, and assert that no secret reached
   * the output: call it in the test body, after the test's own assertions.
   */
  stop (signal?: NodeJS.Signals): Promise<number | null>
  /**
   * Make sure the process is gone, asserting nothing: for `t.after`, so that
   * a failing test still cleans up (a hook that throws skips the hooks after it).
   */
  close (): Promise<void>
}

export interface SidecarOptions {
  /** Strings that must never appear in the output (tokens, passwords). */
  readonly secrets?: readonly string[]
  /** Run this executable instead of `node dist/src/cli.js` (the single binary). */
  readonly command?: string
  /** PATH for the process (default: the test runner's). */
  readonly path?: string
}

/**
 * Run the sidecar as shipped (node dist/src/cli.js) with exactly `env` plus
 * PATH and sidecarEnv()'s defaults (the test CA trusted via
 * NODE_EXTRA_CA_CERTS, as Node itself reads it too). Nothing from the test
 * runner's environment leaks in. For what needs a process: the CLI, signals,
 * exit codes, the binary, stdout, and what is measured of a pid (descriptors,
 * memory, /proc/PID/environ); behaviour tests use startSidecar(), in-process.
 */
export async function spawnSidecar (env: Record<string, string>, options: SidecarOptions = {}): Promise<SidecarProcess> {
  const [command, args] = options.command !== undefined ? [options.command, []] : [process.execPath, [...NODE_FLAGS, CLI]]
  const child = spawn(command, args, {
    env: { PATH: options.path ?? process.env.PATH ?? '/usr/bin:/bin', ...await sidecarEnv(env) },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const capture = new LogCapture()
  child.stdout.on('data', (d: Buffer) => { capture.write(d.toString(), 'stdout') })
  child.stderr.on('data', (d: Buffer) => { capture.write(d.toString(), 'stderr') })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => { resolve(code) }))
  // Every line it wrote has been read once its pipes are closed, not merely once it exited.
  let closed = false
  const allRead = new Promise<void>((resolve) => child.once('close', () => { closed = true; resolve() }))

  const waitForLog = async (predicate: (line: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> =>
    await capture.waitForLog(predicate, timeoutMs, () => closed ? `sidecar exited (${String(child.exitCode ?? child.signalCode)})` : undefined)

  let portal: LogLine, backend: LogLine, admin: LogLine
  try {
    portal = await waitForLog((l) => l.listener === 'portal' && typeof l.port === 'number')
    backend = await waitForLog((l) => l.listener === 'backend' && typeof l.port === 'number')
    admin = await waitForLog((l) => l.listener === 'admin' && typeof l.port === 'number')
  } catch (err) {
    // No test holds it yet, so no t.after could end it.
    child.kill('SIGKILL')
    throw err
  }

  return {
    pid: child.pid as number,
    portalUrl: `${portal.tls === true ? 'https' : 'http'}://127.0.0.1:${String(portal.port)}`,
    backendUrl: `${backend.tls === true ? 'https' : 'http'}://127.0.0.1:${String(backend.port)}`,
    adminUrl: `http://127.0.0.1:${String(admin.port)}`,
    output: () => capture.output(),
    logs: () => capture.logs(),
    waitForLog,
    child,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null) child.kill(signal)
      const code = await exited
      await allRead
      capture.assertNoSecrets(options.secrets ?? [])
      return code
    },
    close: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      // A sidecar that does not drain in time is killed: cleanup must end.
      const kill = setTimeout(() => { child.kill('SIGKILL') }, 10_000)
      await exited
      clearTimeout(kill)
    }
  }
}

/** Run the CLI to completion (for config errors): exit code and output. */
export async function runCli (env: Record<string, string>, args: string[] = []): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const child = spawn(process.execPath, [...NODE_FLAGS, CLI, ...args], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  return { code, stdout, stderr }
}
