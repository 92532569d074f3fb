/**
 * `apicast-sidecar-proxy demo`: the whole flow on one machine, before the user
 * has a proxy or a 3scale account. A 3scale stand-in (TLS, private CA), an
 * authenticating proxy, and the sidecar in between; then APIcast-style calls,
 * one line per call, showing the tunnels being opened and reused.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { pino } from 'pino'
import { Agent, request, type Dispatcher } from 'undici'
import { createLogger } from '../observe/logger.js'
import { redactPath } from '../observe/redact.js'
import type { RouteName } from '../config/routes.js'
import { loadSettings } from '../config/settings.js'
import { createCa } from './pki.js'
import { startDemoProxy } from './proxy.js'
import { BACKEND_HOST, PORTAL_HOST, SERVICE_ID, startThreescale } from './threescale.js'

const USAGE = `Usage: apicast-sidecar-proxy demo [--once]

Starts, on 127.0.0.1, a stand-in for 3scale (TLS with a demo CA), an
authenticating HTTP proxy, and the sidecar between them; then makes the calls
APIcast makes and prints each one. Nothing leaves this machine.

  --once   make the calls, print, stop (for scripts and CI)
  --help   this text

Without --once the demo keeps running so you can try it with curl; Ctrl-C stops it.
`

const PROXY_USER = 'demo'

interface Call {
  readonly method: 'GET' | 'POST'
  readonly listener: RouteName
  readonly path: string
  readonly note?: string
  readonly headers?: Record<string, string>
  readonly body?: string
  readonly expect: number
  /** Print the start of the body: to show that 3scale's own error came through unchanged. */
  readonly showBody?: boolean
}

export async function runDemo (argv: readonly string[], out: NodeJS.WritableStream = process.stdout, hostEnv: Readonly<Record<string, string | undefined>> = {}): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    out.write(USAGE)
    return 0
  }
  const unknown = argv.find((a) => a !== '--once')
  if (unknown !== undefined) {
    out.write(`apicast-sidecar-proxy demo: unknown argument ${JSON.stringify(unknown)}\n${USAGE}`)
    return 2
  }
  const once = argv.includes('--once')

  const secret = (): string => randomBytes(16).toString('hex')
  const proxyPassword = randomBytes(18).toString('base64url')
  const accessToken = `demo-${secret()}`
  const serviceToken = secret()
  const userKey = secret()
  // Everything printed passes through here; only the curl lines (for the
  // user to paste) are written directly, and they hold just the throwaway token.
  const hidden = [proxyPassword, Buffer.from(`${PROXY_USER}:${proxyPassword}`).toString('base64'), accessToken,
    Buffer.from(`${accessToken}:`).toString('base64'), serviceToken, userKey]
  const say = (text = ''): void => {
    out.write(hidden.reduce((t, s) => t.split(s).join('***'), text) + '\n')
  }

  // Undone in reverse order, whatever happens.
  const cleanups: Array<() => Promise<void> | void> = []
  try {
    const ca = await createCa('apicast-sidecar-proxy demo CA')
    const leaf = await ca.issue([PORTAL_HOST, BACKEND_HOST])
    const threescale = await startThreescale({ ...leaf, serviceToken, userKey })
    cleanups.push(() => threescale.close())
    const proxy = await startDemoProxy(PROXY_USER, proxyPassword)
    cleanups.push(() => proxy.close())

    const env = {
      THREESCALE_PORTAL_ENDPOINT: `https://${PORTAL_HOST}:${threescale.port}`,
      BACKEND_ENDPOINT_OVERRIDE: `https://${BACKEND_HOST}:${threescale.port}`,
      HTTPS_PROXY: `http://${PROXY_USER}:${encodeURIComponent(proxyPassword)}@127.0.0.1:${proxy.port}`,
      CA_BUNDLE: ca.certFile,
      PORTAL_LISTEN_PORT: '0',
      BACKEND_LISTEN_PORT: '0',
      // ADMIN_LISTEN_PORT when given, else a free port (said below): a
      // fixed 9092 failed beside a running sidecar.
      ADMIN_LISTEN_PORT: hostEnv.ADMIN_LISTEN_PORT ?? '0',
      LOG_LEVEL: 'info'
    }
    const { config, tls } = loadSettings(env)
    const logFile = join(mkdtempSync(join(tmpdir(), 'apicast-sidecar-demo-')), 'sidecar.log')
    // Synchronous, so the file is complete whenever the user looks at it.
    const logDestination = pino.destination({ dest: logFile, sync: true })
    cleanups.push(() => { logDestination.end() })
    // Dynamic: main.ts imports this module to dispatch `demo`.
    const { startSidecar } = await import('../sidecar.js')
    const sidecar = await startSidecar(config, tls, createLogger(config.logLevel, logDestination))
    cleanups.push(() => sidecar.shutdown())
    const agent = new Agent()
    cleanups.push(() => agent.close())

    const listenerUrl = (name: RouteName): string => {
      const listener = sidecar.listeners.get(name)
      if (listener === undefined) throw new Error(`the sidecar has no ${name} listener`)
      return `http://127.0.0.1:${listener.address.port}`
    }
    const portalUrl = listenerUrl('portal')
    const backendUrl = listenerUrl('backend')

    say('apicast-sidecar-proxy demo: APIcast → sidecar → authenticating proxy → 3scale, all on 127.0.0.1')
    say()
    say(`  3scale stand-in  https://127.0.0.1:${threescale.port}, serving ${PORTAL_HOST} (admin portal) and ${BACKEND_HOST} (backend)`)
    say(`                   with a certificate from a demo CA made just now (${ca.certFile})`)
    say(`  corporate proxy  http://${PROXY_USER}:***@127.0.0.1:${proxy.port}  (Basic auth, user demo and a secret made up now; resolves *.demo to 127.0.0.1)`)
    say(`  sidecar          portal  ${portalUrl} → ${env.THREESCALE_PORTAL_ENDPOINT}`)
    say(`                   backend ${backendUrl} → ${env.BACKEND_ENDPOINT_OVERRIDE}`)
    say(`                   via the proxy, CA_BUNDLE=${ca.certFile}; JSON logs in ${logFile}`)
    say(`                   admin   http://127.0.0.1:${sidecar.admin.address.port} (/healthz, /readyz, /metrics)`)
    say('  The log names the private demo CA that signs the stand-in\'s certificate, trusted through CA_BUNDLE, as an on-premise 3scale\'s internal CA would be: no warning.')
    say()

    const portalAuth = { authorization: 'Basic ' + Buffer.from(`${accessToken}:`).toString('base64') }
    const authrep = `/transactions/authrep.xml?service_token=${serviceToken}&service_id=${SERVICE_ID}&user_key=${userKey}`
    const report = new URLSearchParams({
      service_token: serviceToken,
      service_id: String(SERVICE_ID),
      'transactions[0][user_key]': userKey,
      'transactions[0][usage][hits]': '1'
    }).toString()
    const calls: Call[] = [
      { method: 'GET', listener: 'portal', path: '/admin/api/services.json', note: '(token as userinfo)', headers: portalAuth, expect: 200 },
      { method: 'GET', listener: 'portal', path: '/admin/api/account/proxy_configs/production.json?host=api.demo', note: '(token as userinfo)', headers: portalAuth, expect: 200 },
      { method: 'GET', listener: 'backend', path: authrep, expect: 200 },
      { method: 'GET', listener: 'backend', path: authrep, expect: 200 },
      { method: 'GET', listener: 'backend', path: authrep, expect: 200 },
      { method: 'GET', listener: 'backend', path: '/transactions/authrep.xml', note: '(no credentials)', expect: 403, showBody: true },
      { method: 'POST', listener: 'backend', path: '/transactions.xml', note: '(usage report)', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: report, expect: 202 }
    ]
    const shown = (c: Call): string => `${redactPath(c.path, '***')}${c.note !== undefined ? `  ${c.note}` : ''}`
    const width = Math.max(...calls.map((c) => shown(c).length))

    say('APIcast-style calls to the sidecar:')
    for (const call of calls) {
      const before = proxy.connects()
      const started = performance.now()
      let res: Dispatcher.ResponseData
      let body: string
      try {
        res = await request((call.listener === 'portal' ? portalUrl : backendUrl) + call.path, {
          dispatcher: agent, method: call.method, headers: call.headers, body: call.body
        })
        body = await res.body.text()
      } catch (err) {
        say(`→ ${call.method} ${call.listener} ${shown(call)}  failed: ${err instanceof Error ? err.message : String(err)}`)
        return 1
      }
      const ms = performance.now() - started
      const after = proxy.connects()
      const type = String(res.headers['content-type'] ?? '-').split(';')[0] ?? '-'
      const tunnel = after > before ? `new tunnel (${plural(after, 'CONNECT')} so far)` : 'tunnel reused'
      say(`→ ${call.method.padEnd(4)} ${call.listener.padEnd(7)} ${shown(call).padEnd(width)}  ← ${res.statusCode} ${type.padEnd(31)} ${ms.toFixed(1).padStart(6)} ms  ${tunnel}`)
      if (call.showBody === true || res.statusCode !== call.expect) say(`    body: ${body === '' ? '(empty)' : body.slice(0, 80) + (body.length > 80 ? '…' : '')}`)
      if (res.statusCode !== call.expect) {
        say(`The demo failed: expected ${call.expect}, got ${res.statusCode}. The sidecar's log may say why: ${logFile}`)
        return 1
      }
    }

    say()
    say(`${plural(calls.length, 'call')} through the sidecar, ${plural(proxy.connects(), 'CONNECT')} at the proxy: ` +
      'one tunnel per upstream, opened on first use and reused by every later call (tunnel reuse).')
    if (once) return 0

    say()
    say('The demo keeps running. Try it (the token is a throwaway made for this demo):')
    out.write(`  curl -i ${portalUrl.replace('http://', `http://${accessToken}@`)}/admin/api/services.json\n`)
    say(`  curl -i ${backendUrl}/transactions/authrep.xml                      # 403, 3scale's XML error, unchanged`)
    say(`  curl -i '${backendUrl}/transactions/authrep.xml?service_token=any&service_id=${SERVICE_ID}&user_key=bad-key'   # 409`)
    say('Press Ctrl-C to stop.')
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      const stop = (s: NodeJS.Signals): void => {
        process.off('SIGINT', stop)
        process.off('SIGTERM', stop)
        resolve(s)
      }
      process.on('SIGINT', stop)
      process.on('SIGTERM', stop)
    })
    say(`\n${signal}: stopping the sidecar, the proxy and the 3scale stand-in.`)
    return 0
  } catch (err) {
    say(`The demo failed: ${err instanceof Error ? err.message : String(err)}`)
    return 1
  } finally {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup()
      } catch (err) {
        say(`while stopping: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
  }
}

function plural (n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}
