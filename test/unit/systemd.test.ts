import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { parseEnvFile } from '../helpers/systemd-env.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const UNIT = readFileSync(join(ROOT, 'deploy', 'systemd', 'apicast-sidecar-proxy.service'), 'utf8')
const ENV_EXAMPLE = readFileSync(join(ROOT, 'deploy', 'systemd', 'env.example'), 'utf8')

/** `Key=value` lines of one section of the unit. */
function section (name: string): Map<string, string> {
  const body = UNIT.split(/^\[/m).find((s) => s.startsWith(name + ']')) ?? ''
  const entries = body.split('\n').filter((l) => /^[A-Za-z]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as [string, string])
  return new Map(entries)
}

describe('systemd unit (deploy/systemd)', () => {
  const service = section('Service')
  const cases: Array<[string, string, RegExp]> = [
    ['runs as a dedicated user', 'User', /^apicast-sidecar$/],
    ['takes its environment from a file readable only by root and that user', 'EnvironmentFile', /^\/etc\/apicast-sidecar-proxy\/env$/],
    ['runs the single binary', 'ExecStart', /^\/usr\/local\/bin\/apicast-sidecar-proxy$/],
    ['restarts on failure', 'Restart', /^on-failure$/],
    ['stops with SIGTERM, which drains', 'KillSignal', /^SIGTERM$/],
    ['gives the drain time to finish', 'TimeoutStopSec', /^(1[1-9]|[2-9]\d)$/],
    ['keeps no privileges', 'NoNewPrivileges', /^yes$/],
    ['has no capabilities', 'CapabilityBoundingSet', /^$/],
    ['sees the file system read-only', 'ProtectSystem', /^strict$/]
  ]
  it('points Documentation= at the README the install steps put on the host, not at a foreign repository', () => {
    assert.equal(section('Unit').get('Documentation'), 'file:/usr/share/doc/apicast-sidecar-proxy/README.md')
  })
  for (const [name, key, want] of cases) {
    it(name, () => assert.match(service.get(key) ?? '(missing)', want, `${key}=${service.get(key) ?? '(missing)'}`))
  }
  it('puts the start-rate limits in [Unit], where systemd reads them', () => {
    assert.equal(section('Unit').get('StartLimitBurst'), '5')
    assert.equal(service.get('StartLimitBurst'), undefined)
  })

  const analyze = '/usr/bin/systemd-analyze'
  it('passes systemd-analyze verify', { skip: existsSync(analyze) ? false : 'systemd-analyze is not installed' }, () => {
    // verify checks that ExecStart exists: point it at a binary that does.
    const dir = mkdtempSync(join(tmpdir(), 'sidecar-unit-'))
    const unit = join(dir, 'apicast-sidecar-proxy.service')
    writeFileSync(unit, UNIT.replace(/^ExecStart=.*$/m, 'ExecStart=/usr/bin/env'))
    const result = spawnSync(analyze, ['verify', unit], { encoding: 'utf8' })
    assert.equal((result.stdout + result.stderr).trim(), '', 'systemd-analyze reports problems')
    assert.equal(result.status, 0)
  })
})

describe('systemd EnvironmentFile parsing (test/helpers/systemd-env.ts)', () => {
  // One line each: what systemd hands the service.
  const cases: Array<[string, string, string | undefined, string?]> = [
    ['an unquoted backslash is dropped', 'PROXY_USER=CORP\\alice', 'CORPalice'],
    ['an unquoted doubled backslash is one', 'PROXY_USER=CORP\\\\alice', 'CORP\\alice'],
    ['double quotes keep a backslash before an ordinary character (current rules)', 'PROXY_USER="CORP\\alice"', 'CORP\\alice', 'CORPalice'],
    ['a doubled backslash in double quotes is one, in every version', 'PROXY_USER="CORP\\\\alice"', 'CORP\\alice', 'CORP\\alice'],
    ['single quotes are literal (current rules)', "PROXY_USER='CORP\\alice'", 'CORP\\alice', 'CORPalice'],
    ['an escaped quote in double quotes', 'A="say \\"hi\\""', 'say "hi"', 'say "hi"'],
    ['trailing whitespace is dropped, quoted whitespace kept', 'A= x y  \nB=" x "', 'x y', 'x y'],
    ['a comment line is no assignment', '# A=1', undefined],
    ['backslash-newline continues the value', 'A=one\\\ntwo', 'onetwo', 'onetwo'],
    ['the last line needs no newline', 'A=1', '1', '1']
  ]
  for (const [name, text, want, legacy = want] of cases) {
    it(name, () => {
      assert.equal(parseEnvFile(text).get('A') ?? parseEnvFile(text).get('PROXY_USER'), want)
      assert.equal(parseEnvFile(text, { legacy: true }).get('A') ?? parseEnvFile(text, { legacy: true }).get('PROXY_USER'), legacy)
    })
  }
})

describe('deploy/systemd/env.example, read as systemd reads it', () => {
  /** The file with its commented-out assignments turned on, as a user would. */
  const uncommented = ENV_EXAMPLE.replace(/^# ([A-Za-z_]+=)/gm, '$1')

  it('PROXY_USER reaches the sidecar as CORP\\alice, under current and older systemd rules', () => {
    assert.equal(parseEnvFile(uncommented).get('PROXY_USER'), 'CORP\\alice')
    assert.equal(parseEnvFile(uncommented, { legacy: true }).get('PROXY_USER'), 'CORP\\alice')
  })

  it('every assignment, commented out or not, reads the same under both rules', () => {
    assert.deepEqual([...parseEnvFile(uncommented, { legacy: true })], [...parseEnvFile(uncommented)])
  })

  it('its active settings are the ones shown', () => {
    assert.deepEqual([...parseEnvFile(ENV_EXAMPLE).keys()], ['THREESCALE_PORTAL_ENDPOINT', 'BACKEND_ENDPOINT_OVERRIDE', 'https_proxy', 'NO_PROXY'])
  })

  it('no comment ends in a backslash, which would swallow the next line', () => {
    assert.deepEqual(ENV_EXAMPLE.split('\n').filter((l) => /^\s*[#;].*\\$/.test(l)), [])
  })
})
