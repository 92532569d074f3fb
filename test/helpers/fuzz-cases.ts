/**
 * The fuzzer's cases (issue #13): raw HTTP/1.1 requests, odd and broken, and
 * clients that misbehave, each generated from (seed, case number) alone so a
 * failure replays; and the runner that plays one case over a real socket.
 * Nothing here knows the sidecar: it only needs the listeners' ports.
 */
import { connect, type Socket } from 'node:net'
import { PROXY_PASSWORD, PROXY_USER } from './proxies.js'
import { excerpt, parseResponses, type ParsedExchange } from './raw-http.js'

/** The longest a fuzzing client keeps a connection. */
const MAX_LIFETIME_MS = 3000

// ---------------------------------------------------------------------------
// Secrets: every one of them is sent by the fuzzer, and none may be logged.

/** The token APIcast sends as Basic userinfo (`http://TOKEN@sidecar:9090`). */
export const TOKEN = 'apicastTOKENfz7Q'
/** The sidecar's own token, the fallback, from THREESCALE_PORTAL_ENDPOINT. */
export const SIDECAR_TOKEN = 'sidecarTOKENfz3K'
const SECRET_PARAMS = ['user_key', 'service_token', 'provider_key', 'app_key', 'access_token'] as const
type SecretParam = typeof SECRET_PARAMS[number]

/**
 * The shapes in which a credential travels in a query: `&`-separated (3scale's
 * usual), after a `;` (a separator to Rack 2 and many servers), as an array
 * (`user_key[]`), nested as in a usage report (`transactions[0][user_key]`),
 * with a percent-encoded or upper-case name, or repeated.
 */
const FORMS = {
  amp: (p: string, v: string) => `${p}=${v}`,
  semicolon: (p: string, v: string) => `x=1;${p}=${v}`,
  brackets: (p: string, v: string) => `${p}[]=${v}`,
  nested: (p: string, v: string) => `transactions[0][${p}]=${v}`,
  nestedEncoded: (p: string, v: string) => `transactions%5B0%5D%5B${p}%5D=${v}`,
  encodedName: (p: string, v: string) => `${p.replace('_', '%5F')}=${v}`,
  upper: (p: string, v: string) => `${p.toUpperCase()}=${v}`,
  repeated: (p: string, v: string) => `${p}=plain&${p}=${v}`
} as const
type Form = keyof typeof FORMS
const FORM_NAMES = Object.keys(FORMS) as Form[]

/** A distinct value per parameter and shape, so a leak names its shape. */
const secretValue = (param: SecretParam, form: Form): string => `${param.replace(/_/g, '')}${form}SECRETfz`

const QUERY_SECRETS = SECRET_PARAMS.flatMap((p) => FORM_NAMES.map((f) => ({ name: `${p} as ${f}`, value: secretValue(p, f) })))
export const ALL_SECRETS: ReadonlyArray<{ name: string, value: string }> = [
  { name: 'the APIcast token', value: TOKEN },
  { name: 'the sidecar token', value: SIDECAR_TOKEN },
  { name: 'the proxy password', value: PROXY_PASSWORD },
  { name: 'the proxy password, percent-encoded', value: encodeURIComponent(PROXY_PASSWORD) },
  ...QUERY_SECRETS
]

// ---------------------------------------------------------------------------
// A seeded PRNG (mulberry32): small, fast, and the same on every platform.

class Rng {
  #a: number
  constructor (seed: number) { this.#a = seed >>> 0 }
  next (): number {
    this.#a = (this.#a + 0x6D2B79F5) >>> 0
    let t = this.#a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }

  int (n: number): number { return Math.floor(this.next() * n) }
  between (lo: number, hi: number): number { return lo + this.int(hi - lo + 1) }
  chance (p: number): boolean { return this.next() < p }
  pick<T> (items: readonly T[]): T { return items[this.int(items.length)] as T }
  /** Pick by weight: [[weight, value], …]. */
  weighted<T> (items: ReadonlyArray<readonly [number, T]>): T {
    let r = this.next() * items.reduce((s, [w]) => s + w, 0)
    for (const [w, v] of items) {
      r -= w
      if (r < 0) return v
    }
    return (items[items.length - 1] as readonly [number, T])[1]
  }
}

/** The seed of case `n` of run `seed`: a case does not depend on which ran before it. */
const caseSeed = (seed: number, n: number): number => (Math.imul(seed ^ 0x9E3779B9, 0x85EBCA6B) + Math.imul(n + 1, 0xC2B2AE35)) >>> 0

// ---------------------------------------------------------------------------
// Generating one connection's worth of raw bytes.

export type ListenerName = 'portal' | 'backend'

/** What the client does besides sending. */
export type Behaviour =
  /** Send, read until the server closes (or the lifetime ends). */
  | 'normal'
  /** Send, then close at once. */
  | 'close-after-send'
  /** Send part of the bytes, then close. */
  | 'close-halfway'
  /** Send, then half-close (FIN), and keep reading. */
  | 'half-close'
  /** Send, never read: the server's writes back up. */
  | 'never-read'
  /** Send a few bytes at a time with pauses. */
  | 'slow'
  /** Send, then reset (RST) after a moment. */
  | 'reset'
  /** Send and read, never close or half-close (allowHalfOpen): only the lifetime ends it. */
  | 'hold'

export interface RawRequest {
  readonly method: string
  readonly bytes: Buffer
  /**
   * The `fz=<case>.<request>` query parameter that ties a log line to this
   * request, when the request is framed so that its answer is the next one
   * on the connection (a broken framing may turn its body into more requests).
   */
  readonly marker: string | undefined
  /** Nothing in it is odd: whatever goes wrong with it is the listener's doing. */
  readonly clean: boolean
  /** Its path is one the origin answers at once, always (not /hang or /slow). */
  readonly answered: boolean
  /** A short label of what the generator chose, for reports. */
  readonly label: string
}

export interface Case {
  readonly n: number
  readonly listener: ListenerName
  readonly behaviour: Behaviour
  readonly requests: readonly RawRequest[]
  /** How the concatenated bytes are cut into writes. */
  readonly writeSizes: readonly number[]
  /** Pause before each write after the first ('slow'). */
  readonly pauseMs: number
  /** For 'close-halfway': how many bytes are sent. */
  readonly cutAt: number
  readonly lifetimeMs: number
  /** For 'reset': when the RST is sent. */
  readonly resetAfterMs: number
}

const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1')
const utf8AsLatin1 = (s: string): string => Buffer.from(s, 'utf8').toString('latin1')
export const b64 = (s: string): string => Buffer.from(s, 'latin1').toString('base64')

const COMMON_METHODS = ['GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'PATCH'] as const
const ODD_METHODS = ['TRACE', 'CONNECT', 'get', 'Get', 'FOO', 'M-SEARCH', 'PROPFIND', 'PRI', 'GETT', 'G\x00ET', 'GET\t', '\xff\xfe', '', 'X'.repeat(300), 'QUERY', 'SOURCE', 'LINK'] as const

export function generateCase (seed: number, n: number, ports: Readonly<Record<ListenerName, number>>): Case {
  const rng = new Rng(caseSeed(seed, n))
  const listener: ListenerName = rng.pick(['portal', 'backend'] as const)
  // Some connections are a client that takes the listener for an HTTPS proxy:
  // CONNECT, then what it sends through the tunnel it expects (a TLS hello,
  // a request), often without waiting for the answer.
  const tunnel = rng.chance(0.05)
  const behaviour = rng.weighted<Behaviour>(tunnel
    ? [[30, 'normal'], [30, 'hold'], [20, 'slow'], [10, 'half-close'], [10, 'close-after-send']]
    : [[30, 'normal'], [10, 'close-after-send'], [10, 'close-halfway'], [10, 'half-close'], [4, 'never-read'], [10, 'slow'], [7, 'reset'], [4, 'hold']])
  // A stalled client matters with one large response; pipelining is exercised by the others.
  const count = behaviour !== 'never-read' && rng.chance(0.3) ? rng.between(2, 5) : 1
  const requests = Array.from({ length: count }, (_, i) => generateRequest(rng, listener, behaviour, ports, `${n}.${i}`))
  if (tunnel) {
    const authority = rng.pick(['portal.test:443', `127.0.0.1:${ports.portal}`, 'backend.test:443', 'evil.example:22'])
    const connect = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n` +
      (rng.chance(0.3) ? `Proxy-Authorization: Basic ${b64(`${PROXY_USER}:${PROXY_PASSWORD}`)}\r\n` : '') + '\r\n'
    const through = rng.pick(['', '\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03', 'SSH-2.0-OpenSSH_9.6\r\n'])
    requests.unshift({ method: 'CONNECT', bytes: latin1(connect + through), marker: undefined, clean: false, answered: false, label: `"CONNECT" tunnel ${authority}` })
  }
  const total = requests.reduce((s, r) => s + r.bytes.length, 0)
  const writeSizes: number[] = []
  if (behaviour === 'slow') {
    for (let left = total; left > 0;) {
      const size = Math.min(left, rng.between(1, 40))
      writeSizes.push(size)
      left -= size
    }
  } else if (rng.chance(0.3)) {
    // Cut at random places: a request line, a header or a body split across segments.
    for (let left = total; left > 0;) {
      const size = Math.min(left, rng.between(1, Math.max(1, Math.ceil(total / 2))))
      writeSizes.push(size)
      left -= size
    }
  } else {
    writeSizes.push(total)
  }
  return {
    n,
    listener,
    behaviour,
    requests,
    writeSizes,
    pauseMs: rng.between(5, 120),
    cutAt: rng.int(Math.max(1, total)),
    // A client that holds or stalls does so for as long as it may, to outlast the listener's limits.
    lifetimeMs: behaviour === 'hold' || behaviour === 'never-read' ? MAX_LIFETIME_MS : rng.between(100, MAX_LIFETIME_MS),
    resetAfterMs: rng.between(0, 400)
  }
}

/**
 * What can be wrong with one request. A request gets none (about half of
 * them: valid traffic keeps the pool, pipelining and the handler busy), or
 * one to three, so that a failure points at few causes.
 */
const ODDITIES = [
  'method', 'target', 'version', 'host', 'authorization', 'proxy-authorization', 'connection', 'upgrade', 'expect',
  'te-header', 'keep-alive', 'big-header', 'many-headers', 'obs-fold', 'odd-line', 'forwarded', 'spoof', 'framing', 'bare-lf'
] as const
type Oddity = typeof ODDITIES[number]

function generateRequest (rng: Rng, listener: ListenerName, behaviour: Behaviour, ports: Readonly<Record<ListenerName, number>>, marker: string): RawRequest {
  const odd = new Set<Oddity>()
  const k = rng.weighted([[45, 0], [35, 1], [15, 2], [5, 3]])
  while (odd.size < k) odd.add(rng.pick(ODDITIES))
  const labels: string[] = [...odd]

  // CONNECT is the one method node:http hands to the listener outside the request handler.
  const method = odd.has('method') ? (rng.chance(0.4) ? 'CONNECT' : rng.pick(ODD_METHODS)) : rng.pick(COMMON_METHODS)
  // CONNECT's own form is authority-form (RFC 9112 §3.2.3); anything else is a parse error before any handler.
  const target = method === 'CONNECT' && rng.chance(0.8)
    ? rng.pick(['portal.test:443', `127.0.0.1:${ports.portal}`, 'evil.example:22', '[::1]:80'])
    : generateTarget(rng, listener, behaviour, ports, odd.has('target'), marker, labels)
  const version = odd.has('version') ? rng.pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 x', '', 'http/1.1', 'HTTP/1.10', 'HTTP/9.9']) : 'HTTP/1.1'

  const headers: string[] = []
  const add = (line: string): void => { headers.push(line) }
  if (odd.has('host')) {
    add(rng.pick(['', 'Host: x\r\nHost: x', 'Host: portal.test\r\nHost: evil.example', 'Host:', `Host: localhost:${rng.pick(['0', '99999', 'abc', ''])}`,
      `Host: ${rng.pick(['exa mple', 'a@b', '[::1', 'ex\xe4mple', 'a/b'])}`]))
  } else {
    add(`Host: ${rng.pick(['x', 'portal.test', 'backend.test', `127.0.0.1:${ports[listener]}`])}`)
  }
  if (odd.has('authorization')) {
    add(`Authorization: ${rng.pick([
      `basic  ${b64(TOKEN + ':x')}`, 'Basic', 'Basic ===', 'Basic Og==', `Bearer ${TOKEN}`, `Basic ${b64(TOKEN + '\r\nX-Injected: 1:')}`,
      `Basic ${b64(TOKEN + '\x00:')}`, `Basic ${b64('\xff\xfe' + TOKEN + ':')}`, `Basic ${b64(TOKEN + ':')}, Basic ${b64(TOKEN + ':')}`,
      `Basic ${b64(TOKEN + ':')}\r\nAuthorization: Basic ${b64('other:')}`, `Basic ${b64(TOKEN)}`, `Digest username="${TOKEN}"`
    ])}`)
  } else if (rng.chance(listener === 'portal' ? 0.6 : 0.1)) {
    add(`Authorization: Basic ${b64(rng.chance(0.8) ? TOKEN + ':' : ':' + TOKEN)}`)
  }
  if (odd.has('proxy-authorization')) add(`Proxy-Authorization: Basic ${b64(`${PROXY_USER}:${PROXY_PASSWORD}`)}`)
  if (odd.has('connection')) {
    add(`Connection: ${rng.pick(['close', 'Keep-Alive, close', 'authorization', 'host', 'content-length', 'transfer-encoding', 'x-a, authorization, host, te', 'upgrade', 'close, close', '', ',,,'])}`)
  } else if (rng.chance(0.1)) {
    add(`Connection: ${rng.pick(['close', 'keep-alive'])}`)
  }
  if (odd.has('upgrade')) add(`Upgrade: ${rng.pick(['websocket', 'h2c', 'HTTP/2.0', 'tls/1.3'])}${rng.chance(0.7) ? '\r\nConnection: Upgrade' : ''}${rng.chance(0.5) ? '\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13' : ''}`)
  if (odd.has('expect')) add(`Expect: ${rng.pick(['100-continue', '100-Continue', 'foo', '100-continue, 100-continue', ''])}`)
  if (odd.has('te-header')) add(`TE: ${rng.pick(['trailers', 'gzip', 'chunked'])}`)
  if (odd.has('keep-alive')) add(`Keep-Alive: timeout=${rng.pick(['1', '0', '-1', '99999999'])}`)
  if (odd.has('big-header')) add(`X-Big: ${'b'.repeat(rng.pick([4000, 9000, 17000, 70000]))}`)
  if (odd.has('many-headers')) add(Array.from({ length: rng.pick([150, 1000, 2100]) }, (_, i) => `X-H${i}: v`).join('\r\n'))
  if (odd.has('obs-fold')) add(`X-Fold: first\r\n${rng.pick([' ', '\t'])}folded`)
  if (odd.has('odd-line')) add(rng.pick(['X-No-Colon', ': empty-name', 'X Space: v', 'X-Nul: a\x00b', 'X-Ctl: a\x01b', 'X-Del: a\x7fb', 'X-Latin: caf\xe9', `X-Utf8: ${utf8AsLatin1('café ☃')}`, 'X-Cr: a\rb', 'Trailer: X-After']))
  if (odd.has('forwarded')) add(`${rng.pick(['X-Forwarded-For', 'Forwarded', 'X-Forwarded-Host'])}: ${rng.pick(['1.2.3.4', 'unknown', 'for=1.2.3.4;host=evil.example', 'evil.example'])}`)
  if (odd.has('spoof')) add(`${rng.pick(['X-Sidecar-Error', 'X-Sidecar-Stale', 'Warning'])}: ${rng.pick(['reset', 'overloaded', '110 - "Response is Stale"'])}`)

  // Framing and body: a body for the methods that carry one, framed correctly unless 'framing' is odd.
  const body = rng.weighted([
    [6, `service_token=${secretValue('service_token', 'amp')}&service_id=1&transactions[0][user_key]=${secretValue('user_key', 'nested')}&transactions[0][usage][hits]=1`],
    [2, 'x'.repeat(rng.pick([1, 100, 20_000, 200_000]))],
    [1, 'GET /admin/api/services.json HTTP/1.1\r\nHost: x\r\n\r\n'],
    [1, '\x00\xff\r\n\r\n']
  ])
  const carries = ['POST', 'PUT', 'PATCH'].includes(method)
  const framing = odd.has('framing')
    ? rng.pick(['length-short', 'length-long', 'chunked-broken', 'te+cl', 'te-odd', 'cl-odd', 'cl-and-body-none'] as const)
    : carries ? rng.weighted([[6, 'length'], [3, 'chunked'], [1, 'none']] as const) : rng.weighted([[9, 'none'], [1, 'length']] as const)
  labels.push(framing)
  let payload = ''
  switch (framing) {
    case 'none':
      break
    case 'length':
      add(`Content-Length: ${body.length}`)
      payload = body
      break
    case 'length-short':
      // Fewer bytes than declared: the body never completes.
      add(`Content-Length: ${body.length + 1 + rng.int(100)}`)
      payload = body.slice(0, rng.int(Math.max(1, body.length)))
      break
    case 'length-long':
      // More bytes than declared: the rest is read as the next request.
      add(`Content-Length: ${Math.floor(body.length / 2)}`)
      payload = body + rng.pick(['', 'GET /echo HTTP/1.1\r\nHost: x\r\n\r\n', 'garbage\r\n\r\n'])
      break
    case 'chunked': {
      add(`Transfer-Encoding: ${rng.pick(['chunked', 'Chunked', 'gzip, chunked'])}`)
      let rest = body
      while (rest.length > 0) {
        const size = Math.min(rest.length, rng.between(1, 8192))
        payload += `${size.toString(16)}${rng.chance(0.1) ? ';ext=1' : ''}\r\n${rest.slice(0, size)}\r\n`
        rest = rest.slice(size)
      }
      payload += rng.chance(0.1) ? '0\r\nX-Trailer: t\r\n\r\n' : '0\r\n\r\n'
      break
    }
    case 'chunked-broken':
      add('Transfer-Encoding: chunked')
      payload = rng.pick([
        `zz\r\n${body}\r\n0\r\n\r\n`, '-1\r\nx\r\n0\r\n\r\n', 'ffffffffffffffffff\r\nx\r\n', `5\r\n${body}0\r\n\r\n`,
        '5\nhello\n0\n\n', '5\r\nhello', '0\r\n', `${(body.length + 5).toString(16)}\r\n${body}\r\n0\r\n\r\n`, '5 \r\nhello\r\n0\r\n\r\n'
      ])
      break
    case 'te+cl':
      // The classic smuggling forms: both framings, in either order.
      add(rng.chance(0.5) ? `Content-Length: ${rng.int(10)}\r\nTransfer-Encoding: chunked` : `Transfer-Encoding: chunked\r\nContent-Length: ${rng.int(10)}`)
      payload = rng.pick(['0\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n', `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`, '3\r\nabc\r\n0\r\n\r\n'])
      break
    case 'te-odd':
      add(`Transfer-Encoding: ${rng.pick(['xchunked', ' chunked', 'chunked ', 'chunked, gzip', 'identity', 'chunked\r\nTransfer-Encoding: x', 'chunked, chunked', '\tchunked', 'chu\x00nked', ''])}`)
      payload = rng.pick(['0\r\n\r\n', `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`, body])
      break
    case 'cl-odd':
      add(`Content-Length: ${rng.pick([`${body.length}, ${body.length}`, `${body.length}\r\nContent-Length: ${body.length + 1}`, `${body.length}\r\nContent-Length: ${body.length}`, `+${body.length}`, '-1', '0x10', '1e3', '99999999999999999999', ` ${body.length}`, 'abc', ''])}`)
      payload = body
      break
    case 'cl-and-body-none':
      add('Content-Length: 0')
      payload = rng.chance(0.5) ? body : ''
      break
  }

  const lines = headers.filter((h) => h !== '')
  shuffle(rng, lines)
  const line = version === '' ? `${method} ${target}` : `${method} ${target} ${version}`
  let head: string
  if (odd.has('bare-lf')) {
    if (rng.chance(0.5)) {
      head = [line, ...lines].map((l) => l.replace(/\r\n/g, '\n') + '\n').join('') + '\n'
    } else {
      const all = [line, ...lines]
      const i = rng.int(all.length)
      head = all.map((l, j) => l + (j === i ? '\n' : '\r\n')).join('') + '\r\n'
    }
  } else {
    head = [line, ...lines].map((l) => l + '\r\n').join('') + '\r\n'
  }
  const framedOnce = !odd.has('framing') && target.includes(`?fz=${marker}&`)
  const pathname = target.split('?')[0] ?? ''
  return {
    method,
    bytes: latin1(head + payload),
    marker: framedOnce ? marker : undefined,
    clean: odd.size === 0,
    // An unasked 100 Continue is one undici cannot read past: the sidecar's
    // documented answer is 502 upstream_error (not sent again), so the
    // origin's answer never arrives.
    answered: ALWAYS_ANSWERED.has(pathname) && !target.includes('code=100'),
    label: `${JSON.stringify(method).slice(0, 20)}${labels.length > 0 ? ' ' + labels.join(',') : ''}`
  }
}

/** The origin's paths that answer at once, whatever the method. */
const ALWAYS_ANSWERED: ReadonlySet<string> = new Set([
  '/echo', '/echo/sub', '/transactions/authrep.xml', '/transactions.xml', '/admin/api/services.json',
  '/admin/api/account/proxy_configs/production.json', '/upload', '/nope', '/bytes', '/informational'
])

function generateTarget (rng: Rng, listener: ListenerName, behaviour: Behaviour, ports: Readonly<Record<ListenerName, number>>, odd: boolean, marker: string, labels: string[]): string {
  const shape = odd ? rng.pick(['absolute', 'asterisk', 'dots', 'long', 'control', 'non-ascii', 'relative', 'empty', 'fragment'] as const) : 'origin'
  if (odd) labels.push(shape)
  if (shape === 'asterisk') return '*'
  if (shape === 'empty') return rng.pick(['', ' ', '?'])
  const paths = [
    '/echo', '/echo/sub', '/transactions/authrep.xml', '/transactions.xml', '/admin/api/services.json',
    '/admin/api/account/proxy_configs/production.json', '/upload', '/nope', '/hang',
    `/slow?ms=${rng.pick([10, 300, 1500, 2500])}`, `/bytes?n=${rng.pick([0, 10, 65536, 1_000_000])}`,
    `/informational?code=${rng.pick([100, 102, 103])}`
  ]
  // A client that never reads is only a problem when the response is large:
  // larger than socket buffers hold (4 MB may fit), and than can be read
  // in the probe's 300 ms once the client reads again (256 MB).
  let path = behaviour === 'never-read' && rng.chance(0.9) ? `/bytes?n=${rng.weighted([[3, 4_000_000], [7, 256_000_000]])}` : rng.pick(paths)
  // The marker first: it ties the log line of this request to it.
  const params: string[] = [`fz=${marker}`]
  const extra = rng.int(4)
  for (let i = 0; i < extra; i++) {
    if (rng.chance(0.6)) {
      const form = rng.pick(FORM_NAMES)
      const param = rng.pick(SECRET_PARAMS)
      params.push(FORMS[form](param, secretValue(param, form)))
    } else {
      params.push(rng.pick(['service_id=1', 'usage[hits]=1', 'x=%zz', 'a=b=c', '=x', '', '%', 'flag', 'x=%00', 'x=a%20b+c']))
    }
  }
  path = path.includes('?') ? path.replace('?', `?${params.join('&')}&`) : `${path}?${params.join('&')}`

  switch (shape) {
    case 'absolute':
      return rng.pick([`http://portal.test:${ports[listener]}${path}`, `https://evil.example${path}`, `http://127.0.0.1:${ports.portal}${path}`, `//evil.example${path}`])
    case 'dots':
      return rng.pick(['/..', '/../..', '/%2e%2e', '/%2E%2E/%2e%2e', '/./', '/echo/..', '/.%2e', '//', '/%2f..']) + path
    case 'long':
      return path.replace('/', '/' + 'a'.repeat(rng.pick([1000, 8000, 17000, 70000])) + '/')
    case 'control': {
      const i = rng.between(1, path.length)
      return path.slice(0, i) + rng.pick(['\x00', '\x01', '\x7f', '\t', '\r', '\x1b', '\x0b']) + path.slice(i)
    }
    case 'non-ascii': {
      const i = rng.between(1, path.length)
      return path.slice(0, i) + rng.pick(['\xe9', '\xff', utf8AsLatin1('é'), utf8AsLatin1('☃'), '\x80\x81']) + path.slice(i)
    }
    case 'relative':
      return path.slice(1)
    case 'fragment':
      return path + rng.pick(['#frag', '#', '#a?b=c'])
    default:
      return path
  }
}

function shuffle<T> (rng: Rng, items: T[]): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng.int(i + 1)
    const tmp = items[i] as T
    items[i] = items[j] as T
    items[j] = tmp
  }
}

// ---------------------------------------------------------------------------
// Running one case over a real socket.

/** One thing a check found: what kind of problem, and this instance of it. */
export interface Finding {
  readonly kind: string
  readonly detail: string
}

export interface Outcome {
  readonly c: Case
  readonly received: Buffer
  /** The server ended or closed the connection before the client did. */
  readonly serverClosed: boolean
  readonly error: string | undefined
  readonly parsed: ParsedExchange
  /** What the client's probes found the server holding past `limitMs` (see runCase). */
  readonly held: readonly Finding[]
  /** How long the connection lived. */
  readonly ms: number
}

/** How long before the end of its lifetime a holding or stalled client probes the server. */
const PROBE_BEFORE_END_MS = 300

/**
 * Play case `c` on a fresh connection to 127.0.0.1:`port` and collect what
 * the server wrote. The connection is destroyed after `c.lifetimeMs` at most.
 *
 * `limitMs` is the longest time the listener lets a client hold a connection
 * it is not using (its largest client-side limit). Two behaviours probe it,
 * just before the end of their lifetime, well past `limitMs`:
 * - 'hold' (the server sent FIN early, the client never closes): two bytes
 *   are written; a server that closed the connection answers the first with
 *   RST (the second write then fails), one that still keeps it half-open
 *   accepts both silently;
 * - 'never-read' (a large response, nothing read): reading starts; a server
 *   that gave up on the stalled client has closed (the bytes end), one that
 *   still streams the response keeps its upstream tunnel busy for nobody.
 */
export async function runCase (port: number, c: Case, limitMs: number): Promise<Outcome> {
  const data = Buffer.concat(c.requests.map((r) => r.bytes))
  const started = performance.now()
  return await new Promise((resolve) => {
    const socket: Socket = connect({ port, host: '127.0.0.1', allowHalfOpen: c.behaviour === 'hold' })
    const chunks: Buffer[] = []
    const timers = new Set<NodeJS.Timeout>()
    const held: Finding[] = []
    let serverClosedAt: number | undefined
    let error: string | undefined
    let settled = false
    let probe: (() => void) | undefined
    const later = (ms: number, fn: () => void): NodeJS.Timeout => {
      const t = setTimeout(() => { timers.delete(t); fn() }, ms)
      timers.add(t)
      return t
    }
    const methods = c.requests.map((r) => r.method)
    const finish = (): void => {
      if (settled) return
      settled = true
      for (const t of timers) clearTimeout(t)
      probe?.()
      socket.destroy()
      const received = Buffer.concat(chunks)
      resolve({ c, received, serverClosed: serverClosedAt !== undefined, error, parsed: parseResponses(received, methods, serverClosedAt !== undefined), held, ms: performance.now() - started })
    }
    // A client that reads stops once every request has its complete answer
    // (checked when the bytes pause, not on every chunk of a large body).
    const waitsForAll = c.behaviour === 'normal' || c.behaviour === 'half-close' || c.behaviour === 'slow'
    let check: NodeJS.Timeout | undefined
    socket.on('data', (d: Buffer) => {
      chunks.push(d)
      if (!waitsForAll) return
      if (check !== undefined) { clearTimeout(check); timers.delete(check) }
      check = later(10, () => {
        const { responses, finals } = parseResponses(Buffer.concat(chunks), methods, false)
        if (finals >= c.requests.length && responses[responses.length - 1]?.complete === true) finish()
      })
    })
    socket.on('end', () => { serverClosedAt ??= performance.now() - started })
    socket.on('error', (err: NodeJS.ErrnoException) => { error ??= err.code ?? err.message })
    socket.on('close', finish)
    later(c.lifetimeMs, finish)

    const probeAt = c.lifetimeMs - PROBE_BEFORE_END_MS
    if (c.behaviour === 'hold' && probeAt > limitMs) {
      later(probeAt, () => {
        if (serverClosedAt === undefined || probeAt - serverClosedAt < limitMs) return
        const finAt = serverClosedAt
        // Reading stopped at the FIN, so an RST shows only as the second write failing.
        socket.write('x')
        later(PROBE_BEFORE_END_MS / 3, () => { socket.write('y') })
        probe = () => {
          if (error === undefined) {
            held.push({
              kind: 'a half-closed connection that nothing times out',
              detail: `the server sent FIN ${Math.round(finAt)} ms in, and ${Math.round(probeAt - finAt)} ms later still accepted bytes`
            })
          }
        }
      })
    }
    if (c.behaviour === 'never-read') {
      socket.pause()
      if (probeAt > limitMs) {
        later(probeAt, () => {
          socket.resume()
          probe = () => {
            const first = parseResponses(Buffer.concat(chunks), methods, false).responses[0]
            const length = Number(first?.header('content-length') ?? 0)
            if (first?.status === 200 && length >= 4_000_000 && !first.complete && serverClosedAt === undefined && error === undefined) {
              held.push({
                kind: 'a stalled client keeps its response (and the upstream tunnel) going',
                detail: `a client that read nothing for ${probeAt} ms still had its ${length}-byte response streamed to it (${first.bodyBytes} bytes so far)`
              })
            }
          }
        })
      }
    }

    socket.once('connect', () => {
      switch (c.behaviour) {
        case 'close-after-send':
          socket.write(data, () => { socket.destroy() })
          return
        case 'close-halfway':
          socket.write(data.subarray(0, c.cutAt), () => { socket.destroy() })
          return
        case 'reset':
          socket.write(data, () => { later(c.resetAfterMs, () => { socket.resetAndDestroy() }) })
          return
        default: {
          let offset = 0
          const writeNext = (i: number): void => {
            if (socket.destroyed || i >= c.writeSizes.length) {
              if (c.behaviour === 'half-close' && !socket.destroyed) socket.end()
              return
            }
            const size = c.writeSizes[i] as number
            socket.write(data.subarray(offset, offset + size))
            offset += size
            if (c.behaviour === 'slow') later(c.pauseMs, () => { writeNext(i + 1) })
            else writeNext(i + 1)
          }
          writeNext(0)
        }
      }
    })
  })
}

/** How a case is shown in a message: its number, what it does, and its first bytes. */
export function describeCase (c: Case): string {
  const bytes = Buffer.concat(c.requests.map((r) => r.bytes))
  return `case ${c.n} (${c.listener}, ${c.behaviour}, ${c.requests.length} request(s): ${c.requests.map((r) => r.label).join(' | ')}): ${excerpt(bytes, 300)}`
}

