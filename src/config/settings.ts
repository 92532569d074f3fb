import { ConfigError, readConfig, type Config, type ReadSecret } from './config.js'
import { loadTlsMaterial, TlsSetupError, type TlsMaterial } from '../tls/tls-material.js'

/** What the sidecar reads at start: the config (secret files included) and the TLS files it names. */
export interface Settings {
  readonly config: Config
  readonly tls: TlsMaterial
}

/**
 * Read the environment, the secret files and the TLS files (trust store,
 * client and listener key pairs) in one round, and throw one ConfigError
 * that lists every problem of all of them: an operator fixes them in one
 * go, rather than meeting the TLS files' problems only once the environment
 * is right. Never exits the process: main and doctor decide what to print.
 */
export function loadSettings (env: Readonly<Record<string, string | undefined>>, readSecret?: ReadSecret): Settings {
  const reading = readConfig(env, readSecret)
  const problems = reading.ok ? [] : [...reading.problems]
  let tls: TlsMaterial | undefined
  try {
    tls = loadTlsMaterial(reading.ok ? reading.config.tls : reading.tls)
  } catch (err) {
    if (!(err instanceof TlsSetupError)) throw err
    problems.push(...err.problems)
  }
  if (!reading.ok || tls === undefined || problems.length > 0) throw new ConfigError(problems)
  return { config: reading.config, tls }
}
