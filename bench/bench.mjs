#!/usr/bin/env node
// npm run bench: the sidecar's cost on APIcast's hot path (backend authrep),
// measured on loopback, compared with the Node floor (bench/floor.mjs: the
// same proxy and origin behind node:http and one undici ProxyAgent) and with
// the same load sent straight to the origin. Prints a table and writes .bench/latest.json (and a dated copy).
//
// Where go is on PATH, two Go peers (bench/go-peer: httputil.ReverseProxy,
// stdlib only, built into .bench/go-peer at start) are measured like the
// floor, after it in each round: "go seed" with http.DefaultTransport's pool
// (2 idle connections per host), as a Go sidecar has it unless someone tunes
// it, and "go tuned" with the pool sized for the load (and the workaround
// for golang/go#59017 that older Go, Debian's 1.19 among them, needs to keep that pool: see
// bench/go-peer/main.go). They are a comparison: their failed requests are
// reported, not held against the run. Their CONNECTs are counted by the peer.
//
// BENCH_DURATION (s, default 10), BENCH_WARMUP (s, default 3),
// BENCH_CONCURRENCY (default 1,16,64), BENCH_PROXY (squid | proxy-chain),
// BENCH_ROUNDS (default 3: sidecar and floor runs alternate, ratios are
// medians and ranges over the rounds), BENCH_TOOL (wrk where it is installed, otherwise autocannon),
// BENCH_NODE_ARGS (node flags for both the sidecar and the Node floor, to
// compare V8 settings under one load: "--max-semi-space-size=1", "--cpu-prof"),
// BENCH_GO (default: the Go peers when go is on PATH; 0 leaves them out, 1 requires them).
import { execFile, execFileSync, spawn } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { clearInterval, setInterval } from 'node:timers'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import autocannon from 'autocannon'
import { freePort, haveSquid, startSquid, waitForPort } from '../dist/test/helpers/proxies.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const DURATION = Number(process.env.BENCH_DURATION ?? 10)
const WARMUP = Number(process.env.BENCH_WARMUP ?? 3)
const LEVELS = (process.env.BENCH_CONCURRENCY ?? '1,16,64').split(',').map(Number)
const useSquid = (process.env.BENCH_PROXY ?? (haveSquid ? 'squid' : 'proxy-chain')) === 'squid'
const PATH = '/transactions/authrep.xml?service_token=bench-service-token&service_id=2555417777820&user_key=bench-user-key'
const haveWrk = (() => { try { execFileSync('wrk', ['--version'], { stdio: 'ignore' }); return true } catch (err) { return err.status === 1 } })()
const TOOL = process.env.BENCH_TOOL ?? (haveWrk ? 'wrk' : 'autocannon')
if (TOOL !== 'wrk' && TOOL !== 'autocannon') throw new Error(`BENCH_TOOL must be wrk or autocannon, not ${TOOL}`)
if (TOOL === 'wrk' && !haveWrk) throw new Error('BENCH_TOOL=wrk, but wrk is not installed (apt-get install -y wrk)')
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
if (!(Number.isInteger(ROUNDS) && ROUNDS > 0)) throw new Error('BENCH_ROUNDS must be a positive whole number')
// The flags the sidecar ships with (npm start, the image, the binary), then
// BENCH_NODE_ARGS: for the sidecar and the Node floor alike, so that the
// floor is measured under the same V8 settings.
const SHIPPED_FLAGS = JSON.parse(readFileSync(join(ROOT, 'scripts', 'node-flags.json'), 'utf8')).flags
const NODE_ARGS = [...SHIPPED_FLAGS, ...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')]
const CLK_TCK = 100 // Linux USER_HZ: /proc/PID/stat counts CPU time in 1/100 s
const GO = process.env.BENCH_GO
if (GO !== undefined && GO !== '0' && GO !== '1') throw new Error(`BENCH_GO must be 0 or 1, not ${GO}`)
const goVersion = GO === '0' ? undefined : (() => { try { return execFileSync('go', ['env', 'GOVERSION'], { encoding: 'utf8' }).trim() } catch { return undefined } })()
if (GO === '1' && goVersion === undefined) throw new Error('BENCH_GO=1, but go is not on PATH (apt-get install -y golang-go)')

const children = []
let squid
// Whatever happens, leave no origin, proxy or sidecar behind.
const cleanUp = () => { for (const c of children) c.kill('SIGTERM'); squid?.close() }
process.on('exit', cleanUp)
process.on('uncaughtException', (err) => { process.stderr.write(`bench failed: ${err.stack ?? err}\n`); process.exitCode = 1; cleanUp() })
process.on('unhandledRejection', (err) => { process.stderr.write(`bench failed: ${err?.stack ?? err}\n`); process.exitCode = 1; cleanUp() })

function child (args, options = {}) {
  const c = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], ...options })
  children.push(c)
  return c
}
async function firstLine (c) {
  const rl = createInterface({ input: c.stdout })
  for await (const line of rl) return JSON.parse(line)
  throw new Error('child exited before it printed its address')
}
function cpuTicks (pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(fields[11]) + Number(fields[12]) // utime + stime
}
function statusKb (pid, field) {
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0)
}
async function tunnelsOpened (adminPort) {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text()
  return [...text.matchAll(/^sidecar_tunnels_opened_total\{listener="backend"[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0)
}
/**
 * Drive `url` with autocannon. Its own latency histogram keeps whole
 * milliseconds, so each response time (a float, in ms) is also collected
 * here for sub-millisecond percentiles.
 */
async function autocannonLoad (url, connections, seconds, tlsOptions) {
  const times = []
  const result = await new Promise((resolve, reject) => {
    const instance = autocannon({ url, connections, duration: seconds, pipelining: 1, tlsOptions, servername: tlsOptions ? 'backend.test' : undefined }, (err, res) => err ? reject(err) : resolve(res))
    instance.on('response', (_client, status, _bytes, ms) => { if (status < 300) times.push(ms) })
  })
  times.sort((a, b) => a - b)
  const at = (q) => times.length === 0 ? NaN : times[Math.min(times.length - 1, Math.floor(q * times.length))]
  return {
    requests: result.requests.total,
    rps: result.requests.total / seconds,
    p50: at(0.5),
    p99: at(0.99),
    p999: at(0.999),
    errors: result.errors + result.timeouts + result.non2xx
  }
}

// wrk keeps latencies in microseconds; its Lua `done` hook prints them as one
// JSON line. One thread: wrk in C needs far less than a core for this load.
const WRK_SCRIPT = join(ROOT, 'bench', 'wrk-report.lua')
async function wrkLoad (url, connections, seconds) {
  const stdout = await new Promise((resolve, reject) => {
    execFile('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '-s', WRK_SCRIPT, url], (err, out) => err ? reject(err) : resolve(out))
  })
  const line = stdout.split('\n').find((l) => l.startsWith('{"wrk":'))
  if (line === undefined) throw new Error(`wrk printed no report:\n${stdout}`)
  const r = JSON.parse(line).wrk
  return {
    requests: r.requests,
    rps: r.requests / (r.durationUs / 1e6),
    p50: r.p50Us / 1000,
    p99: r.p99Us / 1000,
    p999: r.p999Us / 1000,
    errors: r.connectErrors + r.readErrors + r.writeErrors + r.timeouts + r.non2xx
  }
}

/** Load `url` for `seconds` with the chosen tool; `onTick` runs each second meanwhile. */
async function load (url, connections, seconds, tlsOptions, onTick) {
  const timer = onTick !== undefined ? setInterval(onTick, 1000) : undefined
  try {
    return TOOL === 'wrk' ? await wrkLoad(url, connections, seconds) : await autocannonLoad(url, connections, seconds, tlsOptions)
  } finally {
    clearInterval(timer)
  }
}

/**
 * Build the Go peer into .bench/go-peer, or say why there is none. The
 * build cache is kept in .bench too (HOME may be read-only or shared), and
 * GOPROXY=off: the peer takes nothing but the standard library.
 */
function buildGoPeer () {
  if (GO === '0') return { skipped: 'BENCH_GO=0' }
  if (goVersion === undefined) return { skipped: 'go is not on PATH (apt-get install -y golang-go)' }
  const binary = join(ROOT, '.bench', 'go-peer')
  try {
    execFileSync('go', ['build', '-o', binary, '.'], {
      cwd: join(ROOT, 'bench', 'go-peer'), // its own module: go build ./bench/go-peer would look for one at the root
      env: { ...process.env, GOCACHE: process.env.GOCACHE ?? join(ROOT, '.bench', 'go-cache'), GOPROXY: 'off' },
      stdio: ['ignore', 'ignore', 'pipe']
    })
  } catch (err) {
    if (GO === '1') throw err
    return { skipped: `go build failed: ${String(err.stderr ?? err.message).trim()}` }
  }
  return { binary }
}
const goPeer = buildGoPeer()
if (goPeer.skipped !== undefined) process.stderr.write(`Go peers skipped: ${goPeer.skipped}\n`)

// 1. The origin, and the proxy (squid when installed).
const origin = child([join(ROOT, 'bench', 'origin.mjs')])
const { port: originPort, caFile } = await firstLine(origin)
let proxyUrl
let proxyPid
if (useSquid) {
  squid = await startSquid()
  proxyUrl = squid.url
  proxyPid = squid.pid
} else {
  const proxy = child([join(ROOT, 'bench', 'proxy.mjs')])
  proxyUrl = (await firstLine(proxy)).url
  proxyPid = proxy.pid
}

// 2. The sidecar as shipped in the image: the one-file bundle (npm run
//    build:bundle), default (info) logging, to /dev/null.
const [portalPort, backendPort, adminPort] = [await freePort(), await freePort(), await freePort()]
const launched = performance.now()
const sidecar = spawn(process.execPath, [...NODE_ARGS, join(ROOT, 'dist', 'bundle', 'apicast-sidecar-proxy.cjs')], {
  env: {
    PATH: process.env.PATH,
    THREESCALE_PORTAL_ENDPOINT: `https://portal.test:${originPort}`,
    BACKEND_ENDPOINT_OVERRIDE: `https://backend.test:${originPort}`,
    HTTPS_PROXY: proxyUrl,
    CA_BUNDLE: caFile,
    PORTAL_LISTEN_PORT: String(portalPort),
    BACKEND_LISTEN_PORT: String(backendPort),
    ADMIN_LISTEN_PORT: String(adminPort),
    // SIDECAR_ENV="NAME=value;NAME=value": extra settings to compare runs.
    ...(process.env.SIDECAR_ENV ? Object.fromEntries(process.env.SIDECAR_ENV.split(';').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])) : {})
  },
  stdio: ['ignore', 'ignore', 'inherit']
})
children.push(sidecar)
sidecar.once('exit', (code) => { if (code !== 0 && code !== null) throw new Error(`the sidecar exited with ${code} at start`) })
const up = await Promise.all([waitForPort(portalPort, 20_000), waitForPort(backendPort, 20_000)])
if (!up.every(Boolean)) throw new Error('the sidecar did not start listening')
const startupMs = performance.now() - launched
await sleep(500)
/** RSS now, and its anonymous (heap, stacks) and file-backed (node's own binary, mostly) parts. */
const rssNow = (pid) => ({ rssMb: statusKb(pid, 'VmRSS') / 1024, anonMb: statusKb(pid, 'RssAnon') / 1024, fileMb: statusKb(pid, 'RssFile') / 1024 })
const sidecarIdle = rssNow(sidecar.pid)
const idleRssMb = sidecarIdle.rssMb
const startupPeakRssMb = statusKb(sidecar.pid, 'VmHWM') / 1024

// The Node floor (bench/floor.mjs): node:http and one undici ProxyAgent,
// through the same proxy to the same origin, on the same runtime.
const floor = child([...NODE_ARGS, join(ROOT, 'bench', 'floor.mjs')], {
  env: { PATH: process.env.PATH, FLOOR_UPSTREAM: `https://backend.test:${originPort}`, FLOOR_PROXY: proxyUrl, FLOOR_CA: caFile }
})
/** A Go peer (bench/go-peer) in `mode`, given the proxy, origin and CA the floor is given. */
async function startGoPeer (key, label, mode) {
  const proc = spawn(goPeer.binary, [], {
    env: { PATH: process.env.PATH, PEER_UPSTREAM: `https://backend.test:${originPort}`, PEER_PROXY: proxyUrl, PEER_CA: caFile, PEER_MODE: mode },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  children.push(proc)
  // A crash is a bug in the peer, not a figure: unlike its failed requests, it stops the bench.
  proc.once('exit', (code) => { if (code !== 0 && code !== null) throw new Error(`the Go peer (${mode}) exited with ${code}`) })
  const { port } = await firstLine(proc)
  return { key, label, mode, pid: proc.pid, url: `http://127.0.0.1:${port}${PATH}`, tunnelsUrl: `http://127.0.0.1:${port}/.peer/tunnels` }
}
const [{ port: floorPort }, ...peers] = await Promise.all([
  firstLine(floor),
  ...(goPeer.binary === undefined ? [] : [startGoPeer('goSeed', 'go seed', 'seed'), startGoPeer('goTuned', 'go tuned', 'tuned')])
])
await sleep(500)
const floorIdle = rssNow(floor.pid)
const floorIdleRssMb = floorIdle.rssMb
for (const p of peers) p.idle = rssNow(p.pid)

// 3. For each concurrency: warm up, then measure through the sidecar, the
//    Node floor, and straight to the origin (the ceiling: no proxy, no sidecar).
const sidecarUrl = `http://127.0.0.1:${backendPort}${PATH}`
const directUrl = `https://127.0.0.1:${originPort}${PATH}`
const directTls = { ca: readFileSync(caFile) }
const floorUrl = `http://127.0.0.1:${floorPort}${PATH}`
/** One measured run through a forwarder process: its load figures, CPU per request and peak RSS of the run. */
async function measure (url, pid, c, onTick) {
  writeFileSync(`/proc/${pid}/clear_refs`, '5')
  const cpuBefore = cpuTicks(pid)
  const result = await load(url, c, DURATION, undefined, onTick)
  const cpuMs = (cpuTicks(pid) - cpuBefore) * 1000 / CLK_TCK
  return { ...result, cpuUsPerRequest: cpuMs * 1000 / result.requests, peakRssMb: statusKb(pid, 'VmHWM') / 1024 }
}
/** The median and range of `xs`. */
function spread (xs) {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return { median: sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2, min: sorted[0], max: sorted[sorted.length - 1] }
}
/** One measured run through the sidecar: as measure(), with the proxy's CPU and the tunnels opened while the load ran. */
async function measureSidecar (c) {
  const tunnelsBefore = await tunnelsOpened(adminPort)
  const proxyCpuBefore = useSquid ? cpuTicks(proxyPid) : undefined
  // Tunnels opened while the load runs, sampled every second: the count
  // after the run would include the run's own teardown (see below).
  let tunnelsDuring = tunnelsBefore
  const run = await measure(sidecarUrl, sidecar.pid, c, () => {
    tunnelsOpened(adminPort).then((n) => { tunnelsDuring = Math.max(tunnelsDuring, n) }, () => {})
  })
  const proxyCpuMs = useSquid ? (cpuTicks(proxyPid) - proxyCpuBefore) * 1000 / CLK_TCK : undefined
  return { ...run, proxyCpuUsPerRequest: proxyCpuMs !== undefined ? proxyCpuMs * 1000 / run.requests : undefined, tunnelsOpened: tunnelsDuring - tunnelsBefore }
}
/**
 * One measured run through a Go peer: as measure(), with the proxy's CPU and
 * the tunnels the peer dialled. The count is read after the run: Go dials
 * only for a request, and one cancelled as the load ends closes its
 * connection rather than opening one.
 */
async function measurePeer (peer, c) {
  const peerTunnels = async () => Number(await (await fetch(peer.tunnelsUrl)).text())
  const tunnelsBefore = await peerTunnels()
  const proxyCpuBefore = useSquid ? cpuTicks(proxyPid) : undefined
  const run = await measure(peer.url, peer.pid, c)
  const proxyCpuMs = useSquid ? (cpuTicks(proxyPid) - proxyCpuBefore) * 1000 / CLK_TCK : undefined
  return { ...run, proxyCpuUsPerRequest: proxyCpuMs !== undefined ? proxyCpuMs * 1000 / run.requests : undefined, tunnelsOpened: await peerTunnels() - tunnelsBefore }
}
/** A forwarder's run against the floor's run of the same round. */
const ofFloor = (run, floorRun) => ({ cpu: run.cpuUsPerRequest / floorRun.cpuUsPerRequest, rps: run.rps / floorRun.rps, p99: run.p99 / floorRun.p99, peakRss: run.peakRssMb / floorRun.peakRssMb })
// The machine's other work moves CPU per request by ±20% from one run to
// the next: each level runs ROUNDS rounds, the sidecar and the floor one
// after the other (then the Go peers), and the ratios are taken per round,
// then reported as median and range.
const runs = []
for (const c of LEVELS) {
  await load(sidecarUrl, c, WARMUP)
  await load(floorUrl, c, WARMUP)
  for (const p of peers) await load(p.url, c, WARMUP)
  await load(directUrl, c, Math.min(WARMUP, 2), directTls)
  const rounds = []
  for (let round = 0; round < ROUNDS; round++) {
    // A load tool ends a run with every connection busy, and the sidecar
    // aborts the upstream requests of clients that left (an aborted
    // in-flight request takes its tunnel down). Let the pool settle, so
    // tunnels opened in that teardown are not counted against the next run.
    await sleep(1000)
    const sidecarRun = await measureSidecar(c)
    await sleep(1000)
    const floorRun = await measure(floorUrl, floor.pid, c)
    const peerRuns = {}
    for (const p of peers) {
      await sleep(1000)
      const run = await measurePeer(p, c)
      peerRuns[p.key] = { ...run, ofFloor: ofFloor(run, floorRun) }
    }
    rounds.push({
      sidecar: sidecarRun,
      floor: floorRun,
      // The sidecar against the Node floor, measured in this round: what issue 20's targets are written in.
      ofFloor: ofFloor(sidecarRun, floorRun),
      peers: peerRuns
    })
  }
  const direct = await load(directUrl, c, DURATION, directTls)
  const pick = (path) => spread(rounds.map((r) => path.split('.').reduce((o, k) => o[k], r)))
  const mediansOf = (who) => Object.fromEntries(['rps', 'p50', 'p99', 'p999', 'cpuUsPerRequest', 'peakRssMb'].map((m) => [m, pick(`${who}.${m}`).median]))
  const ratiosOf = (prefix) => ({ cpu: pick(`${prefix}ofFloor.cpu`), rps: pick(`${prefix}ofFloor.rps`), p99: pick(`${prefix}ofFloor.p99`), peakRss: pick(`${prefix}ofFloor.peakRss`) })
  runs.push({
    concurrency: c,
    rounds,
    sidecar: rounds[0].sidecar,
    floor: rounds[0].floor,
    direct,
    ofFloor: ratiosOf(''),
    median: { sidecar: mediansOf('sidecar'), floor: mediansOf('floor') },
    errors: { sidecar: rounds.reduce((n, r) => n + r.sidecar.errors, 0), floor: rounds.reduce((n, r) => n + r.floor.errors, 0) },
    // Each Go peer's medians, ratios to the floor and failed requests; its runs are in rounds[].peers.
    peers: Object.fromEntries(peers.map((p) => [p.key, {
      median: mediansOf(`peers.${p.key}`),
      ofFloor: ratiosOf(`peers.${p.key}.`),
      errors: rounds.reduce((n, r) => n + r.peers[p.key].errors, 0)
    }])),
    throughputOfCeiling: pick('sidecar.rps').median / direct.rps,
    addedLatencyMs: { p50: pick('sidecar.p50').median - direct.p50, p99: pick('sidecar.p99').median - direct.p99 }
  })
  process.stderr.write(`  concurrency ${c} done\n`)
}
// Peak RSS over each process's whole life: start-up, warm-ups and the
// opening of every tunnel (64 CONNECTs and TLS handshakes at once at
// concurrency 64), which the per-run peaks, reset after the warm-up, leave out.
const lifetime = {
  sidecar: { peakRssMb: statusKb(sidecar.pid, 'VmHWM') / 1024, after: rssNow(sidecar.pid) },
  floor: { peakRssMb: statusKb(floor.pid, 'VmHWM') / 1024, after: rssNow(floor.pid) },
  ...Object.fromEntries(peers.map((p) => [p.key, { peakRssMb: statusKb(p.pid, 'VmHWM') / 1024, after: rssNow(p.pid) }]))
}

// 4. Report.
const f = (n, d = 0) => n === undefined ? '-' : n.toFixed(d)
const range = (x, d) => ROUNDS === 1 ? f(x.median, d) : `${f(x.median, d)} (${f(x.min, d)}–${f(x.max, d)})`
const rows = [['conc', 'path', 'req/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'errors', 'CPU µs/req', 'proxy µs/req', 'CONNECTs', 'run peak RSS MB', '% of ceiling']]
for (const r of runs) {
  const s = r.median.sidecar
  const fl = r.median.floor
  rows.push([String(r.concurrency), 'sidecar', f(s.rps), f(s.p50, 3), f(s.p99, 3), f(s.p999, 3), String(r.errors.sidecar), f(s.cpuUsPerRequest), f(r.sidecar.proxyCpuUsPerRequest), r.rounds.map((x) => x.sidecar.tunnelsOpened).join('/'), f(s.peakRssMb, 1), `${f(r.throughputOfCeiling * 100)}%`])
  rows.push(['', 'node floor', f(fl.rps), f(fl.p50, 3), f(fl.p99, 3), f(fl.p999, 3), String(r.errors.floor), f(fl.cpuUsPerRequest), '', '', f(fl.peakRssMb, 1), `${f(fl.rps / r.direct.rps * 100)}%`])
  for (const p of peers) {
    const g = r.peers[p.key].median
    rows.push(['', p.label, f(g.rps), f(g.p50, 3), f(g.p99, 3), f(g.p999, 3), String(r.peers[p.key].errors), f(g.cpuUsPerRequest), f(r.rounds[0].peers[p.key].proxyCpuUsPerRequest), r.rounds.map((x) => x.peers[p.key].tunnelsOpened).join('/'), f(g.peakRssMb, 1), `${f(g.rps / r.direct.rps * 100)}%`])
  }
  rows.push(['', 'direct', f(r.direct.rps), f(r.direct.p50, 3), f(r.direct.p99, 3), f(r.direct.p999, 3), String(r.direct.errors), '', '', '', '', ''])
}
const ratioLine = (c, x) => `concurrency ${c}: CPU/req ${range(x.cpu, 2)}×, req/s ${range(x.rps, 2)}×, p99 ${range(x.p99, 2)}×, run peak RSS ${range(x.peakRss, 2)}×`
const ratios = runs.map((r) => ratioLine(r.concurrency, r.ofFloor))
const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)))
const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`
const mb = (x) => `${f(x.rssMb, 1)} MB (${f(x.anonMb, 1)} anonymous, ${f(x.fileMb, 1)} file-backed)`
const out = [
  `apicast-sidecar-proxy benchmark: GET authrep through the sidecar and ${useSquid ? 'squid' : 'proxy-chain'} (Basic auth) to a TLS origin, vs. straight to the origin`,
  `machine: ${machine}${NODE_ARGS.length > 0 ? ` ${NODE_ARGS.join(' ')}` : ''}; load tool ${TOOL}; ${DURATION} s per run after ${WARMUP} s warm-up, ${ROUNDS} round${ROUNDS === 1 ? '' : 's'} (medians${ROUNDS === 1 ? '' : ', ranges in brackets'}); sidecar logging at info`,
  `start-up (launch to both listeners accepting): ${f(startupMs)} ms (peak RSS during start-up ${f(startupPeakRssMb, 1)} MB)`,
  ...(peers.length > 0 ? [`Go peers (bench/go-peer, ${goVersion}): httputil.ReverseProxy; go seed with http.DefaultTransport's pool (2 idle per host), go tuned with 64 idle and at most 64 per host, HTTP/1.1, upstream requests not cancelled with the client's`] : []),
  `idle RSS: sidecar ${mb(sidecarIdle)}; Node floor ${mb(floorIdle)}${peers.map((p) => `; ${p.label} ${mb(p.idle)}`).join('')}`,
  `peak RSS over the whole run, tunnel openings included: sidecar ${f(lifetime.sidecar.peakRssMb, 1)} MB, Node floor ${f(lifetime.floor.peakRssMb, 1)} MB${peers.map((p) => `, ${p.label} ${f(lifetime[p.key].peakRssMb, 1)} MB`).join('')}; at the end: sidecar ${mb(lifetime.sidecar.after)}, Node floor ${mb(lifetime.floor.after)}${peers.map((p) => `, ${p.label} ${mb(lifetime[p.key].after)}`).join('')}`,
  '',
  ...rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i])).join('  ')),
  '',
  'the sidecar against the Node floor (node:http + one undici ProxyAgent, no features), per round of this run:',
  ...ratios.map((r) => `  ${r}`),
  '',
  ...peers.flatMap((p) => [`${p.label} against the Node floor, per round of this run:`, ...runs.map((r) => `  ${ratioLine(r.concurrency, r.peers[p.key].ofFloor)}`), '']),
  ...runs.filter((r) => r.concurrency === 1).map((r) => `added latency at concurrency 1: p50 +${f(r.addedLatencyMs.p50, 3)} ms, p99 +${f(r.addedLatencyMs.p99, 3)} ms`)
]
process.stdout.write(out.join('\n') + '\n')

const report = { date: new Date().toISOString(), machine, nodeArgs: NODE_ARGS, tool: TOOL, proxy: useSquid ? 'squid' : 'proxy-chain', durationS: DURATION, rounds: ROUNDS, startupMs, idleRssMb, sidecarIdle, startupPeakRssMb, floorIdleRssMb, floorIdle, lifetime, runs }
// The Go peers' build and idle RSS, or why they were left out (their lifetime peaks are in lifetime, their runs in runs).
report.goPeers = peers.length > 0 ? { version: goVersion, idle: Object.fromEntries(peers.map((p) => [p.key, p.idle])) } : { skipped: goPeer.skipped }
mkdirSync(join(ROOT, '.bench'), { recursive: true })
writeFileSync(join(ROOT, '.bench', 'latest.json'), JSON.stringify(report, null, 2))
writeFileSync(join(ROOT, '.bench', `bench-${report.date.replace(/[:.]/g, '-')}.json`), JSON.stringify(report, null, 2))
process.stdout.write('results: .bench/latest.json\n')
// Figures from a run with failed requests are not a measure of the sidecar.
const failed = runs.filter((r) => r.errors.sidecar > 0 || r.errors.floor > 0 || r.rounds.some((x) => x.sidecar.requests === 0 || x.floor.requests === 0) || r.direct.errors > 0)
if (failed.length > 0) {
  process.stderr.write(`bench: requests failed at concurrency ${failed.map((r) => r.concurrency).join(', ')}; the figures are not valid\n`)
  process.exitCode = 1
}
// The Go peers are a comparison, not what is measured: the seed's tunnel
// churn may fail requests, and that is one of its figures, not a fault of the run.
for (const p of peers) {
  const bad = runs.filter((r) => r.peers[p.key].errors > 0 || r.rounds.some((x) => x.peers[p.key].requests === 0))
  if (bad.length > 0) process.stderr.write(`bench: warning: ${p.label} failed requests at concurrency ${bad.map((r) => `${r.concurrency} (${r.peers[p.key].errors})`).join(', ')}; its rows count them\n`)
}

cleanUp()
