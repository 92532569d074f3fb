import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const UNIT = readFileSync(join(ROOT, 'deploy', 'systemd', 'apicast-sidecar-proxy.service'), 'utf8')

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
