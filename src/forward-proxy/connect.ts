import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { isAllowed, parseConnectTarget, type ForwardAllow } from '../egress/forward-destination.js'
import type { ForwardTransport } from '../egress/forward-transport.js'
import { causeChain, describeRefusal, type Failure, type FailureCode } from '../failures/catalogue.js'
import { answerAndClose, ignoreErrors, rawAnswer } from '../http/raw-answer.js'
import { createLogSampler } from '../observe/log-sampler.js'
import type { Logger } from '../observe/logger.js'
import type { ForwardProxyMetrics } from '../observe/metrics.js'
import { relayTunnel, type Relay } from './tunnel-relay.js'

export interface ForwardProxyContext {
  /**
   * The transport in use, read once per CONNECT: a change of the proxy
   * settings (a rotated secret file) swaps it without touching open tunnels.
   */
  readonly transport: () => ForwardTransport
  readonly allow: ForwardAllow
  readonly log: Logger
  /** FORWARD_PROXY_MAX_TUNNELS: tunnels open or opening at once; past it, 503. */
  readonly maxTunnels: number
  /** FORWARD_PROXY_IDLE_TIMEOUT_MS: a tunnel with no byte either way for this long is closed. */
  readonly idleMs: number
  /** Told of each tunnel as it ends, and of each CONNECT refused or failed. */
  readonly observe?: ForwardProxyMetrics
}

export interface ConnectHandler {
  (req: IncomingMessage, socket: Duplex, head: Buffer): void
  /** Tunnels open or being opened. */
  open (): number
  /** Cut every tunnel (shutdown, after the grace period). */
  destroyAll (): void
}

/**
 * The forward proxy's CONNECT: check the destination against
 * FORWARD_PROXY_ALLOW, open the tunnel through the transport (the routes'
 * tunnel code), answer 200 and relay bytes; or answer the CONNECT with the
 * failure table's status, X-Sidecar-Error and its two lines. A destination
 * that is not allowed is answered 403 before anything is opened: no byte of
 * it reaches the corporate proxy, which would otherwise see the sidecar's
 * credentials used for a host nobody allowed.
 *
 * Each tunnel gets one log line when it ends (destination, proxy, bytes
 * each way, duration, how it ended); the explaining line of a failure
 * (cause and fix) is sampled per code as the routes' are.
 */
export function createConnectHandler (ctx: ForwardProxyContext): ConnectHandler {
  let tunnels = 0
  let opening = 0
  const relays = new Set<Relay>()
  const pending = new Set<Duplex>()
  const samplers = new Map<FailureCode, () => number | undefined>()
  const sample = (code: FailureCode): number | undefined => {
    let s = samplers.get(code)
    if (s === undefined) {
      s = createLogSampler()
      samplers.set(code, s)
    }
    return s()
  }

  const fail = (socket: Duplex, tunnel: number, destination: string, failure: Failure, via: string | undefined, started: number): void => {
    const headers = `X-Sidecar-Error: ${failure.code}\r\n${failure.status === 503 ? 'Retry-After: 1\r\n' : ''}`
    answerAndClose(socket, rawAnswer(failure.status, `${failure.message}\n${failure.hint}\n`, headers))
    ctx.observe?.refused(failure.code)
    const fields = { tunnel, destination, ...(via !== undefined ? { proxy: via } : {}), status: failure.status, error: failure.code, ms: elapsed(started) }
    const unlogged = sample(failure.code)
    if (unlogged === undefined) {
      ctx.log.info(fields, 'CONNECT failed (the cause is on the last error line with this error code)')
    } else {
      const level = failure.code === 'destination_not_allowed' || failure.code === 'too_many_tunnels' ? 'warn' : 'error'
      ctx.log[level]({ ...fields, failedSinceLastLine: unlogged },
        `CONNECT ${destination} failed: ${failure.message}; ${failure.hint}` + (unlogged > 0 ? ` (${unlogged} more CONNECTs failed this way since the last such line)` : ''))
    }
    if (failure.cause !== undefined) ctx.log.debug({ tunnel, error: failure.code, cause: causeChain(failure.cause) }, 'what the CONNECT failed with')
  }

  const handler = function connect (req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const started = performance.now()
    const tunnel = ++tunnels
    ignoreErrors(socket)
    const parsed = parseConnectTarget(req.url ?? '')
    if (!parsed.ok) {
      answerAndClose(socket, rawAnswer(400, `${parsed.reason}\n`, 'X-Sidecar-Error: bad_request\r\n'))
      ctx.log.warn({ tunnel, status: 400, error: 'bad_request' }, `refused CONNECT: ${parsed.reason}`)
      return
    }
    const { destination } = parsed
    const ctxOf = { upstream: destination.url, proxy: undefined, timeouts: { connectMs: 0, responseHeadersMs: 0, idleMs: 0 } }
    if (!isAllowed(destination, ctx.allow)) {
      fail(socket, tunnel, destination.authority, describeRefusal('destination_not_allowed', ctxOf), undefined, started)
      return
    }
    if (opening + relays.size >= ctx.maxTunnels) {
      fail(socket, tunnel, destination.authority, describeRefusal('too_many_tunnels', ctxOf, String(ctx.maxTunnels)), undefined, started)
      return
    }
    opening++
    pending.add(socket)
    const abort = new AbortController()
    const gone = (): void => { abort.abort() }
    socket.once('close', gone)
    ctx.transport().open(destination, abort.signal).then((opened) => {
      opening--
      pending.delete(socket)
      socket.off('close', gone)
      if (!opened.ok) {
        if (opened.aborted || socket.destroyed) {
          ctx.log.info({ tunnel, destination: destination.authority, proxy: opened.via, ms: elapsed(started), end: 'client_gone' }, 'CONNECT abandoned: the client went away while the tunnel was being opened')
          socket.destroy()
          return
        }
        fail(socket, tunnel, destination.authority, opened.failure, opened.via, started)
        return
      }
      const { socket: upstream, via } = opened.tunnel
      if (socket.destroyed) {
        upstream.destroy()
        return
      }
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      if (head.length > 0) upstream.write(head)
      ctx.observe?.opened()
      const relay = relayTunnel(socket, upstream, ctx.idleMs, (relayed) => {
        relays.delete(relay)
        // The bytes that came with the CONNECT went up too.
        const stats = { ...relayed, bytesUp: relayed.bytesUp + head.length }
        ctx.observe?.ended(stats)
        ctx.log.info({ tunnel, destination: destination.authority, proxy: via, bytesUp: stats.bytesUp, bytesDown: stats.bytesDown, ms: elapsed(started), end: stats.end },
          `tunnel ${destination.authority} via ${via} closed (${stats.end})`)
      })
      relays.add(relay)
    }, (err: unknown) => {
      // open() never rejects; this is a bug, said loudly, and the client freed.
      opening--
      pending.delete(socket)
      socket.destroy()
      ctx.log.error({ tunnel, err }, 'the forward proxy failed to open a tunnel')
    })
  } as ConnectHandler
  handler.open = () => opening + relays.size
  handler.destroyAll = () => {
    for (const relay of relays) relay.destroy('shutdown')
    for (const socket of pending) socket.destroy()
  }
  return handler
}

function elapsed (started: number): number {
  return Math.round((performance.now() - started) * 10) / 10
}
