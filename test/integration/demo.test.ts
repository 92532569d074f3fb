import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const CLI = join(ROOT, 'dist', 'src', 'cli.js')
const TIMEOUT_MS = 60_000

/** Run `apicast-sidecar-proxy demo ...` as a user would; killed if it outlives TIMEOUT_MS. */
async function runDemoCli (args: string[], extraEnv: Record<string, string> = {}): Promise<{ code: number | null, stdout: string, stderr: string, timedOut: boolean }> {
  // Only PATH: the demo must not depend on the caller's proxy or 3scale settings.
  const child = spawn(process.execPath, [CLI, 'demo', ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...(process.env.TMPDIR !== undefined ? { TMPDIR: process.env.TMPDIR } : {}), ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  let timedOut = false
  const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL') }, TIMEOUT_MS)
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  clearTimeout(timer)
  return { code, stdout, stderr, timedOut }
}

describe('apicast-sidecar-proxy demo', () => {
  it('runs the whole flow through an authenticating proxy and stops with --once', { timeout: TIMEOUT_MS + 10_000 }, async () => {
    const { code, stdout, stderr, timedOut } = await runDemoCli(['--once'])
    const output = stdout + stderr
    assert.equal(timedOut, false, `the demo did not finish within ${TIMEOUT_MS} ms:\n${output}`)
    assert.equal(code, 0, `the demo failed:\n${output}`)

    assert.match(stdout, /→ GET\s+portal\s+\/admin\/api\/services\.json.*← 200 application\/json\b/)
    // No fixed admin port: a free one, said in the output.
    assert.match(stdout, /admin {3}http:\/\/127\.0\.0\.1:\d+ \(\/healthz, \/readyz, \/metrics\)/)
    assert.match(stdout, /→ GET\s+backend\s+\/transactions\/authrep\.xml\?service_token=\*\*\*&service_id=\d+&user_key=\*\*\*.*← 200 application\/vnd\.3scale-v2\.0\+xml/)
    assert.match(stdout, /→ GET\s+backend\s+\/transactions\/authrep\.xml\s.*← 403 application\/vnd\.3scale-v2\.0\+xml/)
    assert.match(stdout, /<\?xml version="1\.0" encoding="UTF-8"\?><error code="provider_key_or_service_token/, '3scale\'s 403 XML is shown as it came')
    assert.match(stdout, /→ POST\s+backend\s+\/transactions\.xml.*← 202\b/)
    assert.match(stdout, /new tunnel \(1 CONNECT so far\)/)
    assert.match(stdout, /tunnel reused/)

    const summary = /(\d+) calls? through the sidecar, (\d+) CONNECTs? at the proxy/.exec(stdout)
    assert.ok(summary !== null, `no summary line:\n${stdout}`)
    const calls = Number(summary[1])
    const connects = Number(summary[2])
    assert.ok(connects >= 1 && connects < calls, `expected tunnel reuse: ${connects} CONNECTs for ${calls} calls`)

    // The sidecar's JSON logs go to a file, so the output stays readable.
    assert.doesNotMatch(stdout, /^\{"level"/m)
    const logFile = /JSON logs in (\S+)/.exec(stdout)?.[1]
    assert.ok(logFile !== undefined, 'the log file is named')
    assert.match(readFileSync(logFile, 'utf8'), /"listener":"backend"/)

    // No credentials in the output: the proxy's only as demo:***, no tokens,
    // no Basic credentials, and no curl lines (which hold the demo token) with --once.
    assert.doesNotMatch(output, /proxy-authorization/i)
    assert.doesNotMatch(output, /password/i)
    assert.doesNotMatch(output, /demo:(?!\*\*\*@)[^\s@/]+@/)
    assert.doesNotMatch(output, /Basic [A-Za-z0-9+/]{8,}/)
    assert.doesNotMatch(output, /(?<!demo:\*\*\*)@127\.0\.0\.1/)
    assert.doesNotMatch(output, /(access_token|service_token|provider_key|user_key)=(?!\*\*\*)[^&\s]/)
    assert.doesNotMatch(output, /curl /)
  })

  it('takes ADMIN_LISTEN_PORT when it is given', { timeout: TIMEOUT_MS + 10_000 }, async () => {
    const { freePort } = await import('../helpers/proxies.js')
    const port = await freePort()
    const { code, stdout } = await runDemoCli(['--once'], { ADMIN_LISTEN_PORT: String(port) })
    assert.equal(code, 0, stdout)
    assert.match(stdout, new RegExp(`admin {3}http://127\\.0\\.0\\.1:${port} `))
  })
})
