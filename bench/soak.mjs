#!/usr/bin/env node
// npm run soak: mixed backend load (GET authrep, POST usage reports) through
// the sidecar while its proxy is restarted again and again, on loopback. It
// counts every outcome, checks that no usage report was lost or delivered
// twice, and follows the sidecar's RSS and open file descriptors. Prints a
// report and writes .bench/soak-latest.json; exits 1 if a POST was
// duplicated or lost, or the sidecar died.
//
// SOAK_DURATION (s, default 120), SOAK_RESTART_EVERY (s, default 20),
// SOAK_CONCURRENCY (default 16), SOAK_WARMUP (s, default 3),
// SOAK_PROXY (squid | proxy-chain; squid where it is installed).
import { spawn } from 'node:child_process'
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:https'
import { cpus, tmpdir, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { clearInterval, setInterval } from 'node:timers'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath, URLSearchParams } from 'node:url'
import { Agent, request } from 'undici'
import { createCa } from '../dist/src/demo/pki.js'
import { freePort, haveSquid, startProxyChain, startSquid, waitForPort } from '../dist/test/helpers/proxies.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const DURATION = Number(process.env.SOAK_DURATION ?? 120)
const RESTART_EVERY = Number(process.env.SOAK_RESTART_EVERY ?? 20)
const CONCURRENCY = Number(process.env.SOAK_CONCURRENCY ?? 16)
const WARMUP = Number(process.env.SOAK_WARMUP ?? 3)
const PROXY = process.env.SOAK_PROXY ?? (haveSquid ? 'squid' : 'proxy-chain')
if (PROXY !== 'squid' && PROXY !== 'proxy-chain') throw new Error(`SOAK_PROXY must be squid or proxy-chain, not ${PROXY}`)
if (PROXY === 'squid' && !haveSquid) throw new Error('SOAK_PROXY=squid, but squid (squid-openssl, apache2-utils) is not installed')
for (const [name, value] of [['SOAK_DURATION', DURATION], ['SOAK_RESTART_EVERY', RESTART_EVERY], ['SOAK_CONCURRENCY', CONCURRENCY]]) {
  if (!(value > 0)) throw new Error(`${name} must be a positive number`)
}
const CLIENT_TIMEOUT_MS = 15_000
const SAMPLE_EVERY_MS = 5_000
const POST_SHARE = 0.2
const GET_PATH = '/transactions/authrep.xml?service_token=soak-service-token&service_id=2555417777820&user_key=soak-user-key&usage%5Bhits%5D=1'
const POST_PATH = '/transactions.xml'
const AUTHREP_XML = '<?xml version="1.0" encoding="UTF-8"?><status><authorized>true</authorized><plan>Basic</plan></status>'

let proxy
let sidecar
/** When the counted load began (performance.now()). */
let loadStarted
// Whatever happens, leave no proxy or sidecar behind (the origin is in-process).
const cleanUp = () => { sidecar?.kill('SIGKILL'); proxy?.close() }
const fail = (err) => { process.stderr.write(`soak failed: ${err?.stack ?? err}\n`); cleanUp(); process.exit(1) }
process.on('exit', cleanUp)
process.on('uncaughtException', fail)
process.on('unhandledRejection', fail)
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => { cleanUp(); process.exit(130) })

const elapsedS = (since) => (performance.now() - since) / 1000
const log = (line) => process.stderr.write(`soak: ${line}\n`)

// 1. A TLS origin standing in for 3scale's backend. It reads every body to
//    the end before it answers, and records the soak_id of each usage report.
const ca = await createCa('Soak CA')
const { cert, key } = await ca.issue(['backend.test', 'portal.test', '127.0.0.1'])
/** soak_id -> times the origin received it. */
const received = new Map()
const origin = createServer({ cert, key, keepAliveTimeout: 60_000 }, (req, res) => {
  const chunks = []
  req.on('data', (chunk) => chunks.push(chunk))
  req.on('error', () => {}) // a request cut short is simply not recorded
  req.on('end', () => {
    const path = req.url.split('?')[0]
    if (req.method === 'POST' && path === POST_PATH) {
      const id = new URLSearchParams(Buffer.concat(chunks).toString('utf8')).get('soak_id')
      if (id !== null) received.set(id, (received.get(id) ?? 0) + 1)
      res.writeHead(202, { 'content-length': 0 })
      res.end()
    } else if (req.method === 'GET' && path === '/transactions/authrep.xml') {
      res.writeHead(200, { 'content-type': 'application/vnd.3scale-v2.0+xml', 'content-length': Buffer.byteLength(AUTHREP_XML) })
      res.end(AUTHREP_XML)
    } else {
      res.writeHead(404, { 'content-length': 0 })
      res.end()
    }
  })
})
await new Promise((resolve) => origin.listen(0, '127.0.0.1', resolve))
const originPort = origin.address().port

// 2. The proxy, on a port that stays the same across restarts.
const proxyPort = await freePort()
const startProxy = () => PROXY === 'squid' ? startSquid({ port: proxyPort }) : startProxyChain({ port: proxyPort })
proxy = await startProxy()

// 3. The sidecar as shipped: the one-file bundle, its JSON log lines to a file.
const workDir = mkdtempSync(join(tmpdir(), 'sidecar-soak-'))
const logFile = join(workDir, 'sidecar.log')
const logFd = openSync(logFile, 'w')
const [portalPort, backendPort, adminPort] = [await freePort(), await freePort(), await freePort()]
// With the node flags it ships with (npm start, the image, the binary).
const NODE_FLAGS = JSON.parse(readFileSync(join(ROOT, 'scripts', 'node-flags.json'), 'utf8')).flags
sidecar = spawn(process.execPath, [...NODE_FLAGS, join(ROOT, 'dist', 'bundle', 'apicast-sidecar-proxy.cjs')], {
  env: {
    PATH: process.env.PATH,
    THREESCALE_PORTAL_ENDPOINT: `https://portal.test:${originPort}`,
    BACKEND_ENDPOINT_OVERRIDE: `https://backend.test:${originPort}`,
    HTTPS_PROXY: proxy.url,
    CA_BUNDLE: ca.certFile,
    PORTAL_LISTEN_PORT: String(portalPort),
    BACKEND_LISTEN_PORT: String(backendPort),
    ADMIN_LISTEN_PORT: String(adminPort)
  },
  stdio: ['ignore', logFd, 'inherit']
})
closeSync(logFd)
let sidecarExit
sidecar.once('exit', (code, signal) => { sidecarExit = { code, signal, atS: loadStarted === undefined ? undefined : elapsedS(loadStarted) } })
const up = await Promise.all([waitForPort(portalPort, 20_000, () => sidecarExit === undefined), waitForPort(backendPort, 20_000, () => sidecarExit === undefined)])
if (!up.every(Boolean)) throw new Error(`the sidecar did not start listening (exit: ${JSON.stringify(sidecarExit)}); its log: ${logFile}`)
const sidecarPid = sidecar.pid

// 4. The load: CONCURRENCY workers, each one request at a time, no retries.
const agent = new Agent({ connections: CONCURRENCY, headersTimeout: CLIENT_TIMEOUT_MS, bodyTimeout: CLIENT_TIMEOUT_MS })
const base = `http://127.0.0.1:${backendPort}`
const outcomes = { GET: {}, POST: {} }
const latenciesMs = []
/** soak_id -> the outcome the client saw. */
const posts = new Map()
let nextId = 0

function classifyError (err) {
  const code = err?.code ?? err?.name ?? 'unknown'
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return 'client timeout'
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE') return 'client reset'
  if (code === 'ECONNREFUSED') return 'client refused'
  return `client error ${code}`
}
function classifyStatus (status) {
  if (status >= 200 && status < 300) return '2xx'
  if (status === 502 || status === 503 || status === 504) return String(status)
  return `other ${status}`
}
/** One request; returns its outcome label (and records it unless `record` is false). */
async function once (method, record) {
  const started = performance.now()
  let id
  let outcome
  try {
    const options = { method, dispatcher: agent }
    if (method === 'POST') {
      id = `${process.pid}-${nextId++}`
      options.headers = { 'content-type': 'application/x-www-form-urlencoded' }
      options.body = new URLSearchParams({
        service_token: 'soak-service-token',
        service_id: '2555417777820',
        'transactions[0][user_key]': 'soak-user-key',
        'transactions[0][usage][hits]': '1',
        soak_id: id
      }).toString()
    }
    const res = await request(base + (method === 'POST' ? POST_PATH : GET_PATH), options)
    await res.body.dump({ limit: 1 << 20 })
    outcome = classifyStatus(res.statusCode)
  } catch (err) {
    outcome = classifyError(err)
  }
  if (record) {
    outcomes[method][outcome] = (outcomes[method][outcome] ?? 0) + 1
    latenciesMs.push(performance.now() - started)
    if (id !== undefined) posts.set(id, outcome)
  }
  return outcome
}
async function worker (until, mix, record) {
  while (performance.now() < until) {
    const outcome = await once(mix && Math.random() < POST_SHARE ? 'POST' : 'GET', record)
    // Refused or reset at once (the sidecar gone): do not spin.
    if (outcome.startsWith('client')) await sleep(20)
  }
}

// 5. The proxy restarts: a graceful stop and a hard kill, in turn.
const restarts = []
async function restartProxy (n, hard) {
  const at = elapsedS(loadStarted)
  const stopped = performance.now()
  if (hard && proxy.pid !== undefined) {
    try { process.kill(proxy.pid, 'SIGKILL') } catch { /* already gone */ }
  }
  await proxy.close()
  await sleep(1000)
  proxy = await startProxy()
  const downS = elapsedS(stopped)
  // proxy-chain runs in this process and has no pid: its close() is already abrupt.
  const how = hard && PROXY === 'squid' ? 'SIGKILL' : 'graceful stop'
  restarts.push({ n, atS: Number(at.toFixed(1)), how, downS: Number(downS.toFixed(2)) })
  log(`restart ${n} at ${at.toFixed(1)} s: ${PROXY} ${how}, listening again after ${downS.toFixed(2)} s`)
}
async function restartLoop () {
  let n = 0
  for (let t = RESTART_EVERY; t < DURATION; t += RESTART_EVERY) {
    const wait = loadStarted + t * 1000 - performance.now()
    if (wait > 0) await sleep(wait)
    if (sidecarExit !== undefined) return
    n++
    await restartProxy(n, n % 2 === 0)
  }
}

// 6. The sidecar's RSS and open file descriptors.
const samples = []
function fdsByKind (pid) {
  const kinds = {}
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target
    try { target = readlinkSync(`/proc/${pid}/fd/${fd}`) } catch { continue } // closed meanwhile
    const kind = target.startsWith('socket:') ? 'socket' : target.startsWith('pipe:') ? 'pipe' : target.startsWith('anon_inode:') ? target.slice(11).replace(/[[\]]/g, '') : 'file'
    kinds[kind] = (kinds[kind] ?? 0) + 1
  }
  return kinds
}
function sample () {
  if (sidecarExit !== undefined) return undefined
  try {
    const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${sidecarPid}/status`, 'utf8'))?.[1] ?? NaN)
    const fds = fdsByKind(sidecarPid)
    const s = { atS: Number(elapsedS(loadStarted).toFixed(1)), rssMb: Number((rssKb / 1024).toFixed(1)), fds: Object.values(fds).reduce((a, b) => a + b, 0), fdKinds: fds }
    samples.push(s)
    return s
  } catch {
    return undefined // the sidecar exited between the check and the read
  }
}

/** Counters from the sidecar's /metrics, summed over the labels that are not `keep`. */
async function sidecarCounters () {
  try {
    const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text()
    const wanted = { sidecar_tunnels_opened_total: 'listener', sidecar_upstream_retries_total: 'phase', sidecar_upstream_failures_total: 'kind' }
    const out = {}
    for (const m of text.matchAll(/^(sidecar_\w+)\{([^}]*)\} (\S+)$/gm)) {
      const keep = wanted[m[1]]
      if (keep === undefined || !/listener="backend"/.test(m[2])) continue
      const label = new RegExp(`${keep}="([^"]*)"`).exec(m[2])?.[1] ?? ''
      out[m[1]] ??= {}
      out[m[1]][label] = (out[m[1]][label] ?? 0) + Number(m[3])
    }
    return out
  } catch (err) {
    return { error: String(err?.message ?? err) }
  }
}

// Warm-up (GET only, not counted), then the soak itself.
loadStarted = performance.now()
await Promise.all(Array.from({ length: CONCURRENCY }, () => worker(performance.now() + WARMUP * 1000, false, false)))
loadStarted = performance.now()
const startSample = sample()
log(`${CONCURRENCY} workers for ${DURATION} s through the sidecar and ${PROXY}, restarting it every ${RESTART_EVERY} s; sidecar pid ${sidecarPid}, its log: ${logFile}`)
const sampler = setInterval(sample, SAMPLE_EVERY_MS)
const until = loadStarted + DURATION * 1000
const restarting = restartLoop()
await Promise.all(Array.from({ length: CONCURRENCY }, () => worker(until, true, true)))
const loadS = elapsedS(loadStarted)
await restarting
clearInterval(sampler)
await sleep(2000) // let the pool settle
const endSample = sample()
const diedDuringSoak = sidecarExit
const counters = diedDuringSoak === undefined ? await sidecarCounters() : undefined
await agent.close()

// Stop the sidecar as Kubernetes would, so its last log lines are flushed.
let shutdown
if (sidecarExit === undefined) {
  const stopAt = performance.now()
  const exited = new Promise((resolve) => sidecar.once('exit', resolve))
  sidecar.kill('SIGTERM')
  await Promise.race([exited, sleep(15_000)])
  shutdown = sidecarExit === undefined ? { hung: true } : { code: sidecarExit.code, signal: sidecarExit.signal, ms: Math.round(performance.now() - stopAt) }
}
await proxy.close()
proxy = undefined
await new Promise((resolve) => { origin.close(resolve); origin.closeAllConnections() })

// 7. Report.
const logLevels = {}
const warnings = {}
for (const line of readFileSync(logFile, 'utf8').split('\n')) {
  if (line === '') continue
  let entry
  try { entry = JSON.parse(line) } catch { logLevels.unparsed = (logLevels.unparsed ?? 0) + 1; continue }
  const level = String(entry.level)
  logLevels[level] = (logLevels[level] ?? 0) + 1
  if (level === 'warn' || level === 'error' || level === 'fatal') {
    const key = `${level}: ${String(entry.msg ?? '').replace(/\b\d+\.\d+\.\d+\.\d+\b/g, 'IP').replace(/:\d+\b/g, ':PORT').slice(0, 160)}`
    warnings[key] = (warnings[key] ?? 0) + 1
  }
}

const sent = posts.size
const answered2xx = [...posts.values()].filter((o) => o === '2xx').length
const duplicates = [...received.entries()].filter(([, n]) => n > 1)
const lost = [...posts.entries()].filter(([id, o]) => o === '2xx' && !received.has(id)).map(([id]) => id)
const receivedDespiteError = [...posts.entries()].filter(([id, o]) => o !== '2xx' && received.has(id)).length
const unknown = [...received.keys()].filter((id) => !posts.has(id)).length
const postReport = {
  sent,
  answered2xx,
  answeredError: sent - answered2xx,
  receivedAtOrigin: received.size,
  duplicates: duplicates.length,
  duplicateIds: duplicates.slice(0, 20).map(([id, n]) => ({ id, times: n })),
  lost: lost.length,
  lostIds: lost.slice(0, 20),
  receivedButAnsweredError: receivedDespiteError,
  receivedNeverSent: unknown
}
latenciesMs.sort((a, b) => a - b)
const at = (q) => latenciesMs.length === 0 ? NaN : latenciesMs[Math.min(latenciesMs.length - 1, Math.floor(q * latenciesMs.length))]
const latency = { p50: at(0.5), p99: at(0.99), max: latenciesMs.at(-1) ?? NaN, over5s: latenciesMs.filter((ms) => ms > 5000).length }
const rss = samples.map((s) => s.rssMb)
const rssTrend = rss.length === 0
  ? undefined
  : { first: rss[0], min: Math.min(...rss), max: Math.max(...rss), last: rss.at(-1) }
const pick = samples.length <= 10 ? samples : Array.from({ length: 10 }, (_, i) => samples[Math.round(i * (samples.length - 1) / 9)])
const total = (o) => Object.values(o).reduce((a, b) => a + b, 0)
const failures = []
if (postReport.duplicates > 0) failures.push(`${postReport.duplicates} POST(s) reached the origin more than once`)
if (postReport.lost > 0) failures.push(`${postReport.lost} POST(s) answered 2xx but never reached the origin`)
if (diedDuringSoak !== undefined) failures.push(`the sidecar died (code ${diedDuringSoak.code}, signal ${diedDuringSoak.signal}) at ${diedDuringSoak.atS?.toFixed(1)} s`)

const f = (n, d = 0) => n === undefined || Number.isNaN(n) ? '-' : n.toFixed(d)
const counts = (o) => Object.entries(o).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'
const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`
const out = [
  `apicast-sidecar-proxy soak: ${CONCURRENCY} workers, ${Math.round((1 - POST_SHARE) * 100)}% GET authrep / ${Math.round(POST_SHARE * 100)}% POST transactions.xml, through the sidecar and ${PROXY} (Basic auth) to a TLS origin`,
  `machine: ${machine}; ${f(loadS, 1)} s of load after ${WARMUP} s warm-up; ${PROXY} restarted every ${RESTART_EVERY} s (${restarts.length} restarts: ${restarts.map((r) => `${r.atS} s ${r.how}`).join(', ') || 'none'})`,
  '',
  `requests: ${total(outcomes.GET) + total(outcomes.POST)} (${f((total(outcomes.GET) + total(outcomes.POST)) / loadS)} req/s); latency p50 ${f(latency.p50, 1)} ms, p99 ${f(latency.p99, 1)} ms, max ${f(latency.max, 0)} ms, ${latency.over5s} over 5 s`,
  `  GET:  ${counts(outcomes.GET)}`,
  `  POST: ${counts(outcomes.POST)}`,
  `POSTs: sent ${sent}, answered 2xx ${answered2xx}, answered with an error ${postReport.answeredError}, received at the origin ${received.size}`,
  `  duplicates at the origin: ${postReport.duplicates}${postReport.duplicates > 0 ? ` (${postReport.duplicateIds.map((d) => `${d.id}×${d.times}`).join(', ')})` : ''}`,
  `  lost (2xx, never received): ${postReport.lost}${postReport.lost > 0 ? ` (${postReport.lostIds.join(', ')})` : ''}`,
  `  received although the client got an error: ${receivedDespiteError}`,
  `sidecar RSS (MB): first ${f(rssTrend?.first, 1)}, min ${f(rssTrend?.min, 1)}, max ${f(rssTrend?.max, 1)}, last ${f(rssTrend?.last, 1)}`,
  `  over time: ${pick.map((s) => `${f(s.atS, 0)} s ${f(s.rssMb, 1)}`).join(' | ')}`,
  `sidecar open fds: start ${startSample?.fds ?? '-'} (${counts(startSample?.fdKinds ?? {})}), end ${endSample?.fds ?? '-'} (${counts(endSample?.fdKinds ?? {})})`,
  `  over time: ${pick.map((s) => `${f(s.atS, 0)} s ${s.fds}`).join(' | ')}`,
  ...(counters === undefined ? [] : [`sidecar metrics (backend): ${Object.entries(counters).map(([name, v]) => `${name.replace(/^sidecar_/, '')} {${typeof v === 'object' ? counts(v) : v}}`).join('; ')}`]),
  `sidecar log lines by level: ${counts(logLevels)}`,
  ...Object.entries(warnings).sort((a, b) => b[1] - a[1]).slice(0, 10).map(([msg, n]) => `  ${n} × ${msg}`),
  `sidecar shutdown on SIGTERM: ${shutdown === undefined ? 'not run (it had died)' : shutdown.hung ? 'did not exit within 15 s' : `code ${shutdown.code}${shutdown.signal ? ` signal ${shutdown.signal}` : ''} in ${shutdown.ms} ms`}`,
  '',
  failures.length === 0 ? 'result: PASS (no POST lost or duplicated; the sidecar stayed up)' : `result: FAIL: ${failures.join('; ')}`
]
process.stdout.write(out.join('\n') + '\n')

const report = {
  date: new Date().toISOString(),
  machine,
  proxy: PROXY,
  durationS: DURATION,
  loadS,
  restartEveryS: RESTART_EVERY,
  concurrency: CONCURRENCY,
  warmupS: WARMUP,
  outcomes,
  latencyMs: latency,
  posts: postReport,
  restarts,
  rssMb: rssTrend,
  samples,
  fds: { start: startSample?.fds, end: endSample?.fds, startByKind: startSample?.fdKinds, endByKind: endSample?.fdKinds },
  sidecarCounters: counters,
  logLevels,
  logWarnings: warnings,
  logFile,
  sidecarDied: diedDuringSoak ?? null,
  shutdown: shutdown ?? null,
  failures
}
mkdirSync(join(ROOT, '.bench'), { recursive: true })
writeFileSync(join(ROOT, '.bench', 'soak-latest.json'), JSON.stringify(report, null, 2))
process.stdout.write('results: .bench/soak-latest.json\n')
if (failures.length > 0) process.exitCode = 1
