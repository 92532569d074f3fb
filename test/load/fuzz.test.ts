/**
 * A bounded random-request fuzzer (issue #13): raw HTTP/1.1 bytes, odd and
 * broken (methods, targets, framing, smuggling forms, header oddities, bare
 * LF, pipelining), from clients that misbehave (close half-way, reset, half-
 * close, send slowly, never read, never close), sent over real sockets to a
 * running sidecar's portal and backend listeners, through a real
 * authenticating proxy to a TLS origin, for FUZZ_MS (default 10 s). Then:
 * - every answer is well-formed HTTP/1.1, in the order of the requests, and
 *   every well-formed request got one (no 1xx left dangling, no sidecar error
 *   for a path the origin always answers);
 * - no client holds a connection the listener is done with, or its upstream
 *   tunnel while it reads nothing, past the listener's client-side limits;
 * - the process is alive and serving, admits MAX_CONCURRENT_REQUESTS again,
 *   holds no request in flight and no descriptor more than before;
 * - it drains and exits 0 on SIGTERM;
 * - it logged a line for every answer it sent, blamed the proxy or 3scale
 *   only for what they did (a timeout), and logged no secret it was sent.
 *
 * Every case is generated from (FUZZ_SEED, case number) alone, so a failure
 * replays: FUZZ_SEED=<seed> reruns the run (timing aside), and
 * FUZZ_SEED=<seed> FUZZ_CASES=12,40 runs only those cases, one at a time.
 * Every assertion message names the seed; findings are grouped by kind, with
 * the case number and the first bytes of an example or two.
 */
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { openFds, eventually } from '../helpers/eventually.js'
import { ALL_SECRETS, b64, describeCase, generateCase, runCase, SIDECAR_TOKEN, TOKEN, type Case, type Finding, type ListenerName, type Outcome } from '../helpers/fuzz-cases.js'
import { startOrigin, threescaleHandler, type Origin } from '../helpers/origin.js'
import { proxyUrl, startProxyChain, type TestProxy } from '../helpers/proxies.js'
import { excerpt } from '../helpers/raw-http.js'
import type { LogLine } from '../helpers/log-capture.js'
import { spawnSidecar, type SidecarProcess } from '../helpers/sidecar-process.js'

const SEED = readNumber('FUZZ_SEED', Math.floor(Math.random() * 2 ** 32)) >>> 0
const FUZZ_MS = readNumber('FUZZ_MS', 10_000)
const ONLY_CASES = (process.env.FUZZ_CASES ?? '').split(',').filter((s) => s.trim() !== '').map((s) => readNumber('FUZZ_CASES', 0, s))
const CONCURRENCY = 6
/**
 * The client-side limits the sidecar runs with, short so the run stays short.
 * No client may hold a connection it is not using for longer than the
 * largest of them (the probes in runCase check that).
 */
const CLIENT_LIMITS = {
  CLIENT_HEADERS_TIMEOUT_MS: 1000,
  CLIENT_REQUEST_TIMEOUT_MS: 2000,
  IDLE_TIMEOUT_MS: 1000,
  RESPONSE_HEADERS_TIMEOUT_MS: 2000,
  CLIENT_SEND_TIMEOUT_MS: 2000
}
const LONGEST_CLIENT_LIMIT_MS = Math.max(...Object.values(CLIENT_LIMITS))
/**
 * MAX_CONCURRENT_REQUESTS: no fewer than the fuzzer ever has in flight (each
 * connection pipelines at most 5 requests), so the limit is reached only
 * when slots are lost; afterwards the whole limit must be usable again.
 */
const MAX_CONCURRENT = CONCURRENCY * 5 + 2
const REPLAY = `replay: FUZZ_SEED=${SEED}`

/** A whole number from the environment (or `text`), or `fallback` when unset; anything else stops the run. */
function readNumber (name: string, fallback: number, text = process.env[name]): number {
  if (text === undefined || text.trim() === '') return fallback
  if (!/^\d+$/.test(text.trim())) throw new Error(`${name} must be a whole number, not ${JSON.stringify(text)}`)
  return Number(text)
}

// ---------------------------------------------------------------------------
// Probes of the sidecar from outside.

/** One request on a connection of its own (no pooling to hold descriptors), bounded by `ms`. */
async function plainGet (url: string, headers: Record<string, string> = {}, ms = 5000): Promise<{ status: number, body: string }> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false, headers, timeout: ms }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body }) })
      res.on('error', reject)
    })
    req.on('timeout', () => { req.destroy(new Error(`no answer from ${new URL(url).pathname} within ${ms} ms`)) })
    req.on('error', reject)
    req.end()
  })
}

async function inFlight (adminUrl: string): Promise<Record<ListenerName, number>> {
  const { body } = await plainGet(`${adminUrl}/metrics`)
  const read = (l: ListenerName): number => Number(new RegExp(`^sidecar_requests_in_flight\\{listener="${l}"\\} (-?\\d+)`, 'm').exec(body)?.[1] ?? NaN)
  return { portal: read('portal'), backend: read('backend') }
}

/** `text` with every secret replaced by its name, so a message can quote the output. */
const masked = (text: string): string => ALL_SECRETS.reduce((acc, { name, value }) => acc.split(value).join(`«${name}»`), text)

/** Where a secret appears in the output, with every secret in the excerpt replaced by its name. */
function findLeaks (output: string): Finding[] {
  const leaks: Finding[] = []
  for (const { name, value } of ALL_SECRETS) {
    for (const needle of [value, Buffer.from(value).toString('base64')]) {
      const at = output.indexOf(needle)
      if (at === -1) continue
      const lineStart = output.lastIndexOf('\n', at) + 1
      const lineEnd = output.indexOf('\n', at)
      const line = output.slice(lineStart, lineEnd === -1 ? undefined : lineEnd)
      // Query secrets are named `<param> as <shape>`: the shape is what the redaction missed.
      const kind = (name.includes(' as ') ? `a query secret${name.slice(name.indexOf(' as '))}` : name) + (needle === value ? '' : ' (base64)')
      leaks.push({ kind, detail: `${name} in: ${masked(line).slice(0, 400)}` })
    }
  }
  return leaks
}

/** Log lines that account for one request each: they carry its method and status. */
const isRequestLine = (l: LogLine): boolean => l.method !== undefined && typeof l.status === 'number'

// ---------------------------------------------------------------------------

describe(`fuzzing the listeners with random raw requests (FUZZ_SEED=${SEED})`, { timeout: 120_000 }, () => {
  let origin: Origin | undefined
  let proxy: TestProxy | undefined
  let sidecar: SidecarProcess
  let ports: Record<ListenerName, number>
  let baselineFds = 0
  const outcomes: Outcome[] = []
  /** /metrics as it was right after the fuzzing (the sidecar is stopped by a later test). */
  let metricsAfterFuzzing = ''

  // One hook per resource, in the order they must close; each closes only what was opened.
  after(() => { if (sidecar !== undefined && sidecar.child.exitCode === null && sidecar.child.signalCode === null) sidecar.child.kill('SIGKILL') })
  after(async () => { await proxy?.close() })
  after(async () => { await origin?.close() })

  before(async () => {
    // The origin also answers /informational?code=N with an interim 1xx
    // first (100 unasked, 102 Processing, 103 Early Hints), then /echo's answer:
    // RFC 9110 §15.2 says a client must accept a 1xx it did not expect.
    origin = await startOrigin({
      handler: (req, res, seen) => {
        const url = new URL(req.url ?? '/', 'http://origin')
        if (url.pathname === '/informational') {
          const code = url.searchParams.get('code')
          if (code === '100') res.writeContinue()
          else if (code === '102') res.writeProcessing()
          else res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' })
          req.url = '/echo'
        }
        threescaleHandler(req, res, seen)
      }
    })
    proxy = await startProxyChain()
    sidecar = await spawnSidecar({
      THREESCALE_PORTAL_ENDPOINT: `https://${SIDECAR_TOKEN}@portal.test:${origin.port}`,
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: proxyUrl(proxy.port),
      ...Object.fromEntries(Object.entries(CLIENT_LIMITS).map(([k, v]) => [k, String(v)])),
      MAX_CONCURRENT_REQUESTS: String(MAX_CONCURRENT),
      CONNECT_TIMEOUT_MS: '2000',
      UPSTREAM_KEEPALIVE_MS: '1000',
      SHUTDOWN_GRACE_MS: '3000'
    }, { secrets: ALL_SECRETS.map((s) => s.value) })
    ports = { portal: Number(new URL(sidecar.portalUrl).port), backend: Number(new URL(sidecar.backendUrl).port) }

    // One warm-up request per listener loads what is loaded lazily, then the
    // baseline, once the warm-up's pooled tunnels have been closed again.
    assert.equal((await plainGet(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)).status, 200)
    assert.equal((await plainGet(`${sidecar.portalUrl}/admin/api/services.json`, { authorization: `Basic ${b64(TOKEN + ':')}` })).status, 200)
    assert.equal((await plainGet(`${sidecar.adminUrl}/metrics`)).status, 200)
    baselineFds = await settledFds(sidecar.pid)
  })

  it(`survives ${ONLY_CASES.length > 0 ? `cases ${ONLY_CASES.join(', ')}` : `${FUZZ_MS} ms of random raw requests, ${CONCURRENCY} connections at a time`}`, async (t) => {
    t.diagnostic(`FUZZ_SEED=${SEED} FUZZ_MS=${FUZZ_MS}`)
    const deadline = performance.now() + FUZZ_MS
    let next = 0
    const worker = async (): Promise<void> => {
      for (;;) {
        if (sidecar.child.exitCode !== null || sidecar.child.signalCode !== null) return
        let c: Case
        if (ONLY_CASES.length > 0) {
          const n = ONLY_CASES[next++]
          if (n === undefined) return
          c = generateCase(SEED, n, ports)
        } else {
          if (performance.now() > deadline) return
          c = generateCase(SEED, next++, ports)
        }
        outcomes.push(await runCase(ports[c.listener], c, LONGEST_CLIENT_LIMIT_MS))
      }
    }
    await Promise.all(Array.from({ length: ONLY_CASES.length > 0 ? 1 : CONCURRENCY }, worker))

    t.diagnostic(`${outcomes.length} connections, ${outcomes.reduce((s, o) => s + o.c.requests.length, 0)} requests`)
    t.diagnostic(`answers: ${summarise(outcomes)}`)
    const byBehaviour = new Map<string, number[]>()
    for (const o of outcomes) byBehaviour.set(o.c.behaviour, [...(byBehaviour.get(o.c.behaviour) ?? []), o.ms])
    t.diagnostic(`connections by behaviour (count, mean ms): ${[...byBehaviour].map(([b, ms]) => `${b} ${ms.length} ${Math.round(ms.reduce((x, y) => x + y, 0) / ms.length)}`).join(', ')}`)
    const lastCases = outcomes.slice(-CONCURRENCY * 2).map((o) => describeCase(o.c)).join('\n  ')
    assert.equal(sidecar.child.exitCode, null, `the sidecar exited (code ${sidecar.child.exitCode}) during the fuzzing (${REPLAY}); the last cases:\n  ${lastCases}\n${masked(sidecar.output().split('\n').slice(-20).join('\n'))}`)
    assert.equal(sidecar.child.signalCode, null, `the sidecar was killed by ${sidecar.child.signalCode} during the fuzzing (${REPLAY})`)
    metricsAfterFuzzing = (await plainGet(`${sidecar.adminUrl}/metrics`)).body
  })

  it('wrote only well-formed HTTP/1.1 responses (RFC 9112 framing)', () => {
    const found = outcomes.flatMap((o) => o.parsed.violations.map((v) => ({ kind: v.kind, detail: `${v.detail}, in ${describeCase(o.c)}` })))
    assert.deepEqual(byKind(found), [], `${found.length} malformed response(s) (${REPLAY})`)
  })

  it('answered every well-formed request, and in turn', () => {
    const wrong: Finding[] = []
    for (const o of outcomes) {
      const { c } = o
      const finals = o.parsed.responses.filter((r) => r.status >= 200)
      const first = c.requests[0]
      // (A client that half-closes after its request is left out: like nginx, the sidecar takes that as the client going away, 499.)
      if (first?.clean === true && ['normal', 'hold', 'slow'].includes(c.behaviour) && o.serverClosed && finals.length === 0) {
        wrong.push({ kind: 'the connection was closed with no answer to a well-formed request', detail: `got ${excerpt(o.received)}: ${describeCase(c)}` })
      }
      // The k-th final answer belongs to the k-th request (RFC 9112 §9.3.2), up to the first request whose framing was broken on purpose.
      for (let k = 0; k < Math.min(finals.length, c.requests.length); k++) {
        const request = c.requests[k]
        const r = finals[k]
        if (request?.marker === undefined || r === undefined) break
        if (!request.clean) continue
        if ((r.status === 400 || r.status === 431) && r.header('date') === undefined) {
          wrong.push({ kind: `node:http's ${r.status} for a later request came as the answer to an earlier, well-formed one`, detail: `in place of request ${k}: ${describeCase(c)}` })
        }
        const code = r.header('x-sidecar-error')
        // 408 request_timeout: a slow client took longer than CLIENT_*_TIMEOUT_MS to send, its own doing.
        if (request.answered && code !== undefined && code !== 'overloaded' && code !== 'request_timeout') {
          wrong.push({ kind: `${r.status} X-Sidecar-Error: ${code} to a well-formed request for a path the origin always answers`, detail: `request ${k}: ${describeCase(c)}` })
        }
      }
    }
    assert.deepEqual(byKind(wrong), [], `${wrong.length} request(s) answered wrongly or not at all (${REPLAY})`)
  })

  it(`let no client hold a connection it was done with, or had stalled, past ${LONGEST_CLIENT_LIMIT_MS} ms`, () => {
    const held = outcomes.flatMap((o) => o.held.map((h) => ({ kind: h.kind, detail: `${h.detail}: ${describeCase(o.c)}` })))
    assert.deepEqual(byKind(held), [], `${held.length} connection(s) held past the client limits (${REPLAY})`)
  })

  it('is alive and serving: /healthz, and a 3scale answer through each listener', async () => {
    assert.equal(sidecar.child.exitCode, null, `the sidecar is gone (${REPLAY})`)
    const health = await plainGet(`${sidecar.adminUrl}/healthz`)
    assert.equal(health.status, 200, `GET /healthz (${REPLAY})`)
    const backend = await plainGet(`${sidecar.backendUrl}/transactions/authrep.xml?service_token=st`)
    assert.ok([200, 403].includes(backend.status), `backend listener answered ${backend.status} ${backend.body} (${REPLAY})`)
    const portal = await plainGet(`${sidecar.portalUrl}/admin/api/services.json`, { authorization: `Basic ${b64(TOKEN + ':')}` })
    assert.ok([200, 403].includes(portal.status), `portal listener answered ${portal.status} ${portal.body} (${REPLAY})`)
  })

  it('holds no request in flight afterwards (sidecar_requests_in_flight is 0 on both listeners)', async () => {
    await eventually(async () => await inFlight(sidecar.adminUrl), (v) => v.portal === 0 && v.backend === 0, 8000,
      `sidecar_requests_in_flight to return to 0 (${REPLAY})`)
  })

  it(`admits MAX_CONCURRENT_REQUESTS (${MAX_CONCURRENT}) requests at once again on each listener`, async () => {
    const statuses = async (url: string, headers: Record<string, string> = {}): Promise<string> => {
      const all = await Promise.all(Array.from({ length: MAX_CONCURRENT }, async () => (await plainGet(url, headers)).status))
      const counts = new Map<number, number>()
      for (const status of all) counts.set(status, (counts.get(status) ?? 0) + 1)
      return [...counts].map(([status, n]) => `${n}× ${status}`).join(', ')
    }
    assert.equal(await statuses(`${sidecar.backendUrl}/slow?ms=300`), `${MAX_CONCURRENT}× 200`, `backend listener (${REPLAY})`)
    assert.equal(await statuses(`${sidecar.portalUrl}/slow?ms=300`, { authorization: `Basic ${b64(TOKEN + ':')}` }), `${MAX_CONCURRENT}× 200`, `portal listener (${REPLAY})`)
  })

  it('holds no descriptor more than before the fuzzing', async (t) => {
    // Upstream tunnels pooled by the checks above close after UPSTREAM_KEEPALIVE_MS (1 s).
    const margin = 0
    const n = await eventually(async () => await openFds(sidecar.pid), (n) => n <= baselineFds + margin, 8000,
      `the sidecar's open descriptors to return to the baseline ${baselineFds} (+${margin}) (${REPLAY})`)
    t.diagnostic(`descriptors: ${baselineFds} before, ${n} after`)
  })

  it('drains and exits 0 on SIGTERM', async () => {
    sidecar.child.kill('SIGTERM')
    // SHUTDOWN_GRACE_MS is 3 s: whatever is still open then is cut.
    const code = await eventually(() => sidecar.child.exitCode ?? sidecar.child.signalCode, (c) => c !== null, 8000, `the sidecar to exit after SIGTERM (${REPLAY})`)
    assert.equal(code, 0, `exit code after SIGTERM (${REPLAY})`)
  })

  it('logged a line for every answer it sent (one completion line per request; those below HTTP sampled and counted)', () => {
    // The k-th final answer on a connection answers its k-th request; a
    // request whose framing was broken on purpose may have become several,
    // so the answers are matched only up to the first such request.
    // Requests refused with 503 for MAX_CONCURRENT_REQUESTS are logged once per 10 s, by design.
    const logged = new Set<string>()
    for (const l of sidecar.logs()) {
      if (!isRequestLine(l)) continue
      const m = /[?&]fz=(\d+\.\d+)(?:[&#;]|$)/.exec(String(l.path))
      if (m !== null) logged.add(`${String(l.listener)} ${m[1] ?? ''}`)
    }
    const unlogged: Finding[] = []
    const below = new Map<ListenerName, number>()
    for (const o of outcomes) {
      const finals = o.parsed.responses.filter((r) => r.status >= 200)
      for (let k = 0; k < Math.min(finals.length, o.c.requests.length); k++) {
        const marker = o.c.requests[k]?.marker
        if (marker === undefined) break
        const r = finals[k]
        if (r === undefined || r.header('x-sidecar-error') === 'overloaded') continue
        // The listener's own answers below HTTP (no Date: written raw, to a
        // request the parser refused) are logged sampled, one line per kind
        // per 10 s, and counted one by one: checked against the metric below.
        if (r.header('date') === undefined) {
          below.set(o.c.listener, (below.get(o.c.listener) ?? 0) + 1)
          continue
        }
        if (!logged.has(`${o.c.listener} ${marker}`)) {
          unlogged.push({ kind: `${r.status}${r.header('date') === undefined ? ', written by node:http itself' : ''}`, detail: `to request ${k} (fz=${marker}) of ${describeCase(o.c)}` })
        }
      }
    }
    // Refusals below HTTP, CONNECT's 405 among them: each counted, and each kind logged at least once.
    const metrics = metricsAfterFuzzing
    const counted = (l: ListenerName, kind?: string): number => [...metrics.matchAll(new RegExp(`^sidecar_client_errors_total\\{listener="${l}",kind="(\\w+)"\\} (\\d+)`, 'gm'))]
      .filter((m) => kind === undefined ? m[1] !== 'send_timeout' && m[1] !== 'connect' : m[1] === kind).reduce((n, m) => n + Number(m[2]), 0)
    for (const l of ['portal', 'backend'] as const) {
      const raw = below.get(l) ?? 0
      if (counted(l) < raw) unlogged.push({ kind: 'refusals below HTTP not counted', detail: `${l}: ${raw} answered, ${counted(l)} in sidecar_client_errors_total` })
      const connects = outcomes.filter((o) => o.c.listener === l && o.c.requests[0]?.method === 'CONNECT' && o.parsed.responses[0]?.status === 405).length
      if (counted(l, 'connect') < connects) unlogged.push({ kind: '405 to CONNECT not counted', detail: `${l}: ${connects} answered, ${counted(l, 'connect')} counted` })
      if (connects > 0 && !sidecar.logs().some((line) => line.listener === l && line.error === 'connect')) unlogged.push({ kind: '405 to CONNECT never logged', detail: l })
      if (raw > 0 && !sidecar.logs().some((line) => line.listener === l && ['bad_request', 'headers_too_large', 'request_timeout'].includes(String(line.error)))) unlogged.push({ kind: 'refusals below HTTP never logged', detail: l })
    }
    assert.deepEqual(byKind(unlogged), [], `${unlogged.length} answer(s) without a log line (${REPLAY})`)
  })

  it('blamed the proxy or 3scale only for their timeouts (the test\'s proxy and origin never fail)', () => {
    // /hang and /slow?ms=2500 time out by design (504); nothing else in this
    // setup fails upstream, so an upstream failure logged for a request is a
    // failure of the sidecar's own, or the client's, reported as the proxy's or 3scale's.
    const cases = new Map(outcomes.map((o) => [o.c.n, o.c]))
    const blamed: Finding[] = []
    for (const l of sidecar.logs()) {
      // A client cut off for not reading (send_timeout) is the client's doing, and says so.
      if (!isRequestLine(l) || typeof l.error !== 'string' || ['timeout', 'overloaded', 'send_timeout'].includes(l.error)) continue
      // An unasked 100 Continue: the documented 502 upstream_error (undici cannot read past it).
      if (l.error === 'upstream_error' && /\/informational\?.*code=100/.test(String(l.path))) continue
      const marker = /[?&]fz=(\d+)\.(\d+)(?:[&#;]|$)/.exec(String(l.path))
      const c = marker !== null ? cases.get(Number(marker[1])) : undefined
      blamed.push({
        kind: `${String(l.status)} error=${l.error}: ${String(l.msg).split(';')[0] ?? ''}`.replace(/127\.0\.0\.1:\d+|\.test:\d+/g, (m) => m.replace(/\d+$/, 'PORT')),
        detail: `${String(l.method)} ${String(l.path)}${c !== undefined ? ` (request ${marker?.[2] ?? ''} of ${describeCase(c)})` : ''}`
      })
    }
    assert.deepEqual(byKind(blamed.map((b) => ({ kind: masked(b.kind), detail: masked(b.detail) }))), [], `${blamed.length} upstream failure(s) logged for a healthy upstream (${REPLAY})`)
  })

  it('logged no secret it was sent, plain or base64', async () => {
    const leaks = findLeaks(sidecar.output())
    assert.deepEqual(byKind(leaks), [], `${leaks.length} secret(s) in the sidecar's output (${REPLAY})`)
    // stop() checks the same once the process has exited (the last lines are
    // flushed at exit); it would wait forever for one that never exits.
    assert.ok(sidecar.child.exitCode !== null || sidecar.child.signalCode !== null, `the sidecar has not exited, so its last lines are unchecked (${REPLAY})`)
    assert.equal(await sidecar.stop(), 0, `exit code (${REPLAY})`)
  })

  it('printed nothing but JSON log lines (no warning, no stack trace)', () => {
    const other = sidecar.output().split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{'))
    assert.deepEqual(other.slice(0, 20).map(masked), [], `non-log output (${REPLAY})`)
  })
})

/** Findings grouped by kind: how many, and the first examples, so a message stays readable. */
function byKind (findings: readonly Finding[], examples = 2): string[] {
  const groups = new Map<string, string[]>()
  for (const f of findings) groups.set(f.kind, [...(groups.get(f.kind) ?? []), f.detail])
  return [...groups].map(([kind, details]) => `${kind}: ${details.length}×, e.g.\n      ${details.slice(0, examples).join('\n      ')}`)
}

/** The descriptor count once it has stopped moving (pooled tunnels closed). */
async function settledFds (pid: number): Promise<number> {
  let last = -1
  let stableSince = 0
  return await eventually(async () => {
    const n = await openFds(pid)
    if (n !== last) {
      last = n
      stableSince = performance.now()
    }
    return { n, stableFor: performance.now() - stableSince }
  }, (v) => v.stableFor >= 1500, 10_000, 'the descriptor count to settle').then((v) => v.n)
}

/** Status counts per listener, with the sidecar's error codes: what the fuzzing provoked. */
function summarise (all: readonly Outcome[]): string {
  const counts = new Map<string, number>()
  for (const o of all) {
    for (const r of o.parsed.responses) {
      const key = `${o.c.listener} ${r.status}${r.header('x-sidecar-error') !== undefined ? ` ${r.header('x-sidecar-error') ?? ''}` : ''}`
      counts.set(key, (counts.get(key) ?? 0) + 1)
    }
    if (o.parsed.responses.length === 0) {
      const key = `${o.c.listener} no answer`
      counts.set(key, (counts.get(key) ?? 0) + 1)
    }
  }
  return [...counts].sort().map(([k, v]) => `${k}: ${v}`).join(', ')
}
