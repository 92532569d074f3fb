import { loadConfig, type Config } from './config/config.js'
import { SetupError } from './config/setup-error.js'
import { loadSettings } from './config/settings.js'
import { createLogger, type Logger } from './observe/logger.js'
import { ListenError, startSidecar, type Sidecar } from './sidecar.js'
import type { TlsMaterial } from './tls/tls-material.js'
import { loadPart } from './egress/package-roots.js'
import { version } from './version.js'

const USAGE = `Usage: apicast-sidecar-proxy [--help | --version]
       apicast-sidecar-proxy doctor [--json]  check every step to 3scale and say what to fix (run this first)
       apicast-sidecar-proxy demo [--once]    everything on 127.0.0.1: a 3scale stand-in, a proxy, the sidecar

Forwards APIcast's calls to the 3scale admin portal (listener 9090) and
backend (listener 9091) through the corporate proxy in https_proxy.
All settings come from the environment; see the README.
`

/**
 * The process entry: parse argv, validate the environment, start, and handle
 * signals. The only place that exits the process; returns the exit code.
 */
async function main (argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE)
    return 0
  }
  if (argv.includes('--version')) {
    process.stdout.write(`apicast-sidecar-proxy ${version()} (node ${process.version})\n`)
    return 0
  }
  if (argv[0] === 'doctor') {
    const doctor = await loadCommand('doctor.cjs', async () => await import('./diagnostics/doctor.js'))
    return doctor === undefined ? 1 : await doctor.runDoctor(argv.slice(1), env)
  }
  if (argv[0] === 'demo') {
    const demo = await loadCommand('demo.cjs', async () => await import('./demo/index.js'))
    return demo === undefined ? 1 : await demo.runDemo(argv.slice(1), process.stdout, env)
  }
  if (argv.length > 0) {
    process.stderr.write(`apicast-sidecar-proxy: unknown argument ${JSON.stringify(argv[0])}\n${USAGE}`)
    return 2
  }

  // Every problem of the environment, the secret files and the TLS files at
  // once, on stderr: stdout carries JSON log lines only.
  let config: Config
  let tls: TlsMaterial
  try {
    ({ config, tls } = loadSettings(env))
  } catch (err) {
    if (!(err instanceof SetupError)) throw err
    return reportSetupError(err)
  }

  const log = createLogger(config.logLevel)
  // Signals are taken from here on: one that arrives while the listeners are
  // still starting (an orchestrator stopping a pod that has just started)
  // is acted on once they are up, rather than killing the process with
  // the default action and no drain.
  let onSignal: (signal: NodeJS.Signals) => void
  const early: NodeJS.Signals[] = []
  onSignal = (signal) => { early.push(signal) }
  const signalled = (signal: NodeJS.Signals): void => { onSignal(signal) }
  process.on('SIGTERM', signalled)
  process.on('SIGINT', signalled)

  let sidecar: Sidecar
  try {
    sidecar = await startSidecar(config, tls, log, { reloadConfig: () => loadConfig(env) })
  } catch (err) {
    log.fatal(err instanceof ListenError ? err.message : `start-up failed: ${String(err)}`)
    await flushed(log)
    return 1
  }

  return await new Promise<number>((resolve) => {
    let stopping = false
    onSignal = (signal) => {
      if (stopping) {
        log.warn(`${signal} again: exiting without waiting for in-flight requests`)
        resolve(1)
        return
      }
      stopping = true
      log.info(`${signal} received: draining (up to SHUTDOWN_GRACE_MS=${config.timeouts.shutdownGraceMs})`)
      log.flush()
      sidecar.shutdown().then(() => {
        log.info('stopped')
        resolve(0)
      }, (err: unknown) => {
        log.error(`shutdown failed: ${String(err)}`)
        resolve(1)
      })
    }
    for (const signal of early) onSignal(signal)
  }).finally(async () => { await flushed(log) })
}

/**
 * A SetupError (ConfigError, TlsSetupError, TrustStoreError), whichever
 * command met it: its list on stderr, no stack trace, exit code 1.
 */
function reportSetupError (err: SetupError): number {
  process.stderr.write(`apicast-sidecar-proxy: ${err.message}\n`)
  return 1
}

/** Wait until every buffered log line is written: the process exits next. */
async function flushed (log: Logger): Promise<void> {
  await new Promise<void>((resolve) => { log.flush(() => { resolve() }) })
}

/**
 * doctor or the demo: in the bundle and the binary, a file of its own beside
 * them (loadPart). Undefined, with the reason on stderr, when it is missing.
 */
async function loadCommand<T> (file: string, fromSource: () => Promise<T>): Promise<T | undefined> {
  try {
    return await loadPart(file, fromSource)
  } catch (err) {
    const reason = err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err)
    process.stderr.write(`apicast-sidecar-proxy: ${file} cannot be loaded (${reason}): it ships beside the binary or the bundle, as its package lays them out; copy the whole folder\n`)
    return undefined
  }
}

main(process.argv.slice(2), process.env).then((code) => {
  process.exit(code)
}, (err: unknown) => {
  if (err instanceof SetupError) process.exit(reportSetupError(err))
  process.stderr.write(`apicast-sidecar-proxy: unexpected error: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
