import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { SETTING_NAMES } from '../../src/config/config.js'
import { PROXY_VARIABLES } from '../../src/egress/egress.js'

const README = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'README.md')

it('the README settings table lists every setting the config reads', () => {
  const text = readFileSync(README, 'utf8')
  const table = text.slice(text.indexOf('## Settings'), text.indexOf('### Proxy variables'))
  const rows = table.split('\n').filter((l) => l.startsWith('| `'))
  const documented = new Set(rows.flatMap((row) => [...(row.split(' | ')[0] ?? '').matchAll(/`([A-Za-z0-9_]+)`/g)].map((m) => m[1])))
  const missing = [...SETTING_NAMES, ...PROXY_VARIABLES].filter((name) => !documented.has(name))
  assert.deepEqual(missing, [], `settings missing from the README table: ${missing.join(', ')}`)
})
