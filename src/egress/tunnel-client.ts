import type { IncomingHttpHeaders } from 'node:http'
import { isIP, type Socket } from 'node:net'
import { parseProxyResponse } from 'https-proxy-agent/dist/parse-proxy-response.js'
import type { buildConnector as BuildConnector, Dispatcher } from 'undici'
import { bareHostname, effectivePort } from '../http/url.js'
import { hostPort as hostPortOf } from '../observe/redact.js'
import { errors } from './undici-parts.js'
import { answerChallenge, FRESH_MEMORY, openingMessage, type AuthMemory, type AuthMessage, type AuthPolicy, type ProxyAuthScheme } from './auth-negotiation.js'
import { basicAuthorization, digestAuthorization, ntlmAuthenticate, ntlmNegotiate, parseChallenges } from './proxy-auth.js'
import { certificateKey, credentialKey, type Admission, type CredentialGate } from './credential-gate.js'
import { clientCertificateRefusal, ProxyClientCertificateError } from '../failures/catalogue.js'
import type { KerberosTokens } from './kerberos.js'

export interface TunnelClientOptions {
  readonly username: string
  readonly password: string
  readonly scheme: ProxyAuthScheme
  /** Limit for the CONNECT reply, each round. */
  readonly replyTimeoutMs: number
  /** Told of every CONNECT answered with something other than 200. */
  readonly onRefused: (statusCode: number, headers: IncomingHttpHeaders) => void
  /** Lockout protection (credential-gate.ts): no credentials are sent while it backs them off. */
  readonly gate?: CredentialGate | undefined
  /**
   * Negotiate: GSSAPI's tokens for the proxy's service principal
   * (`HTTP@` the proxy's host as written in its URL, or PROXY_KRB5_SPN).
   * undefined: no Kerberos credentials, Negotiate is not answered.
   */
  readonly kerberos?: { readonly tokens: KerberosTokens, readonly spn: string } | undefined
  /**
   * An https:// proxy: the client certificate the connector presents
   * (PROXY_TLS_CERT's SHA-256, undefined when none is), and the gate that
   * backs a refused one off. Ignored for an http:// proxy.
   */
  readonly clientCertificate?: { readonly fingerprint: string | undefined, readonly gate: CredentialGate | undefined } | undefined
}

/** What ProxyAgent reads of a CONNECT. */
interface ConnectResult {
  readonly statusCode: number
  readonly headers: IncomingHttpHeaders
  readonly socket: Socket
}

interface Reply {
  readonly statusCode: number
  readonly headers: IncomingHttpHeaders
  /** Bytes read past the end of the headers (part of a 407 body). */
  readonly rest: Buffer
}

/**
 * The client ProxyAgent opens its tunnels with (its `clientFactory`): it
 * sends CONNECT on a connection from `connector` (TCP, or TLS to an https://
 * proxy) and answers the proxy's 407 challenge:
 * - Basic: sent at once when the URL has credentials and the scheme is
 *   `basic` or `auto`, as before (no extra round trip);
 * - Digest (RFC 7616: MD5, SHA-256, SHA-512/256, their -sess forms,
 *   qop=auth): answered once per challenge; the nonce is then reused with a
 *   growing nonce count, so later tunnels need no extra round trip;
 * - Negotiate (Kerberos): one SPNEGO token from GSSAPI per tunnel, for the
 *   proxy's service principal; a proxy that asked for it gets the token
 *   with the first CONNECT of every later tunnel;
 * - NTLM: negotiate, challenge and authenticate on the tunnel's own
 *   connection (NTLM authenticates a connection, not a request); once a
 *   proxy has asked for NTLM, new tunnels start with the negotiate message.
 * It never answers the same challenge twice: a wrong password ends in the
 * 407, which ProxyAgent turns into the `proxy_auth_required` failure, and
 * the credential gate then keeps them from going out again for
 * PROXY_AUTH_BACKOFF_MS (lockout protection).
 * ProxyAgent keeps the pooling, TLS to the upstream and keep-alive.
 */
export class TunnelClient {
  /** What this proxy taught earlier tunnels (auth-negotiation.ts decides). */
  #memory: AuthMemory = FRESH_MEMORY
  readonly #policy: AuthPolicy
  readonly #sockets = new Set<Socket>()
  #closed = false

  /** The gate's key for these credentials: compared in memory, never logged. */
  readonly #gateKey: string

  constructor (private readonly connector: BuildConnector.connector, private readonly proxy: URL, private readonly options: TunnelClientOptions) {
    this.#policy = { scheme: options.scheme, hasCredentials: options.username !== '' || options.password !== '', kerberos: options.kerberos !== undefined }
    this.#gateKey = credentialKey(hostPortOf(proxy), options.username, options.password)
  }

  /**
   * Open a tunnel. To an https:// proxy, a TLS alert over the client
   * certificate becomes a ProxyClientCertificateError, wherever it comes:
   * in the handshake (TLS 1.2) or after it, while CONNECT is sent or its
   * reply read (TLS 1.3: the server reads the certificate after the
   * client's handshake is done). The client-certificate gate then keeps the
   * same certificate from a new handshake with that proxy for
   * PROXY_AUTH_BACKOFF_MS; any CONNECT reply (even a 407) proves the
   * handshake passed.
   */
  async connect (params: Dispatcher.ConnectOptions & { path: string, headers?: Record<string, string> }): Promise<ConnectResult> {
    if (this.#closed) throw new errors.ClientDestroyedError()
    const certificate = this.proxy.protocol === 'https:' ? this.options.clientCertificate : undefined
    const admission = certificate?.gate !== undefined
      ? await certificate.gate.admit(certificateKey(hostPortOf(this.proxy), certificate.fingerprint ?? ''), hostPortOf(this.proxy), params.signal as AbortSignal | undefined)
      : undefined
    try {
      const result = await this.#authenticated(params)
      admission?.settle('accepted')
      return result
    } catch (err) {
      const code = (err as { code?: unknown } | null)?.code
      const kind = this.proxy.protocol === 'https:' && typeof code === 'string' ? clientCertificateRefusal(code, certificate?.fingerprint !== undefined) : undefined
      admission?.settle(kind !== undefined ? 'refused' : 'unknown')
      throw kind !== undefined ? new ProxyClientCertificateError(code as string, kind, err) : err
    }
  }

  /** connect() past the client certificate: the credential gate, then CONNECT and its 407 rounds. */
  async #authenticated (params: Dispatcher.ConnectOptions & { path: string, headers?: Record<string, string> }): Promise<ConnectResult> {
    const gate = this.options.gate
    if (gate === undefined || (!this.#policy.hasCredentials && !this.#policy.kerberos)) return await this.#connect(params, undefined)
    // Throws CredentialsBackedOff while the proxy's refusal is recent.
    const admission = await gate.admit(this.#gateKey, hostPortOf(this.proxy), params.signal as AbortSignal | undefined)
    try {
      const result = await this.#connect(params, admission)
      // A 407 is judged inside (only when credentials went out).
      if (result.statusCode === 200) admission.settle('accepted')
      else admission.settle('unknown')
      return result
    } catch (err) {
      admission.settle('unknown')
      throw err
    }
  }

  async #connect (params: Dispatcher.ConnectOptions & { path: string, headers?: Record<string, string> }, admission: Admission | undefined): Promise<ConnectResult> {
    const target = params.path
    let socket = await this.#open(params.signal)
    let sent = this.#decide(openingMessage(this.#policy, this.#memory))
    for (let round = 0; ; round++) {
      const reply = await this.#exchange(socket, target, params.headers ?? {}, sent !== undefined ? await this.#render(sent, target) : undefined, params.signal)
      if (reply.statusCode === 200) {
        this.#sockets.delete(socket)
        return { statusCode: 200, headers: reply.headers, socket }
      }
      const decision = reply.statusCode === 407 && round < 3
        ? answerChallenge(this.#policy, this.#memory, sent, parseChallenges(reply.headers['proxy-authenticate']))
        : undefined
      const next = decision?.message
      // NTLM's authenticate message must go on the connection its challenge came on.
      const sameConnection = next?.kind === 'ntlm-authenticate'
      const reusable = next !== undefined && await this.#reusable(socket, reply, params.signal)
      if (decision === undefined || next === undefined || (sameConnection && !reusable)) {
        // Credentials went out and the proxy still says 407: refused.
        if (reply.statusCode === 407 && sent !== undefined) admission?.settle('refused')
        this.options.onRefused(reply.statusCode, reply.headers)
        this.#sockets.delete(socket)
        return { statusCode: reply.statusCode, headers: reply.headers, socket }
      }
      sent = this.#decide(decision)
      // A new connection for the next round unless this one is kept and its 407 body was skipped.
      if (!reusable) {
        socket.destroy()
        this.#sockets.delete(socket)
        socket = await this.#open(params.signal)
      }
    }
  }

  close (): Promise<void> {
    this.#closed = true
    for (const s of this.#sockets) s.destroy()
    return Promise.resolve()
  }

  async destroy (): Promise<void> {
    await this.close()
  }

  /** Keep what the decision taught about this proxy; return what to send. */
  #decide (decision: { readonly message: AuthMessage | undefined, readonly memory: AuthMemory }): AuthMessage | undefined {
    this.#memory = decision.memory
    return decision.message
  }

  /** The Proxy-Authorization value of `message`, for a CONNECT to `target`. */
  async #render (message: AuthMessage, target: string): Promise<string> {
    const { username, password, kerberos } = this.options
    switch (message.kind) {
      // The policy sends Negotiate only with kerberos set; a KerberosError names the cause.
      case 'negotiate': return `Negotiate ${await (kerberos as NonNullable<typeof kerberos>).tokens.token((kerberos as NonNullable<typeof kerberos>).spn)}`
      case 'basic': return basicAuthorization(username, password)
      case 'digest': return digestAuthorization({ challenge: message.challenge, username, password, method: 'CONNECT', uri: target, nc: message.nc })
      case 'ntlm-negotiate': return ntlmNegotiate(username)
      case 'ntlm-authenticate': return ntlmAuthenticate(message.challenge, username, password)
    }
  }

  async #open (signal: Dispatcher.ConnectOptions['signal']): Promise<Socket> {
    const url = this.proxy
    const socket = await new Promise<Socket>((resolve, reject) => {
      this.connector({
        hostname: bareHostname(url),
        host: url.host,
        protocol: url.protocol,
        port: effectivePort(url),
        // No SNI for an IP literal (RFC 6066; Node warns with DEP0123).
        ...(isIP(bareHostname(url)) === 0 ? { servername: url.hostname } : {}),
        localAddress: null
      } as unknown as BuildConnector.Options, (err, s) => {
        if (err !== null) reject(err)
        else resolve(s)
      })
    })
    this.#sockets.add(socket)
    socket.once('close', () => this.#sockets.delete(socket))
    if ((signal as AbortSignal | undefined)?.aborted === true) {
      socket.destroy()
      throw new errors.RequestAbortedError()
    }
    return socket
  }

  /** Send one CONNECT and read the reply's head, within replyTimeoutMs. */
  async #exchange (socket: Socket, target: string, headers: Record<string, string>, authorization: string | undefined, signal: Dispatcher.ConnectOptions['signal']): Promise<Reply> {
    let head = `CONNECT ${target} HTTP/1.1\r\n`
    const lines: Record<string, string> = { host: target, ...headers }
    for (const [name, value] of Object.entries(lines)) {
      if (name.toLowerCase() !== 'proxy-authorization') head += `${name}: ${value}\r\n`
    }
    if (authorization !== undefined) head += `proxy-authorization: ${authorization}\r\n`
    socket.write(head + '\r\n')
    const abortSignal = signal as AbortSignal | undefined
    let timer: NodeJS.Timeout | undefined
    const onAbort = (): void => { socket.destroy(new errors.RequestAbortedError()) }
    abortSignal?.addEventListener('abort', onAbort, { once: true })
    try {
      const timeout = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => {
          socket.destroy()
          reject(new errors.HeadersTimeoutError())
        }, this.options.replyTimeoutMs)
      })
      const { connect, buffered } = await Promise.race([parseProxyResponse(socket), timeout]).catch((err: unknown) => {
        // The proxy closed before answering: the same error undici gives.
        if (err instanceof Error && /ended before receiving CONNECT response/.test(err.message)) throw new errors.SocketError('other side closed')
        throw err
      })
      const end = buffered.indexOf('\r\n\r\n')
      return { statusCode: connect.statusCode, headers: connect.headers, rest: buffered.subarray(end + 4) }
    } finally {
      clearTimeout(timer)
      abortSignal?.removeEventListener('abort', onAbort)
    }
  }

  /**
   * True when the next round can go on `socket`: the proxy keeps it open
   * and the 407's body has a length, which is then read and dropped.
   * That read is bounded like the head (replyTimeoutMs) and ends with the
   * request's abort: a proxy that sends the head and stalls in the body
   * would otherwise hold the request with no limit at all. On timeout the
   * socket is destroyed and the error is the head's, so the failure names
   * CONNECT_TIMEOUT_MS either way.
   */
  async #reusable (socket: Socket, reply: Reply, signal: Dispatcher.ConnectOptions['signal']): Promise<boolean> {
    const connection = String(reply.headers.connection ?? reply.headers['proxy-connection'] ?? '').toLowerCase()
    const length = Number(reply.headers['content-length'])
    if (connection.includes('close') || !Number.isInteger(length) || reply.headers['transfer-encoding'] !== undefined) return false
    let left = length - reply.rest.length
    if (left <= 0) return left === 0 && !socket.destroyed
    const abortSignal = signal as AbortSignal | undefined
    return await new Promise<boolean>((resolve, reject) => {
      const settle = (): void => {
        clearTimeout(timer)
        socket.off('readable', read)
        socket.off('close', closed)
        abortSignal?.removeEventListener('abort', aborted)
      }
      const read = (): void => {
        let chunk: Buffer | null
        while (left > 0 && (chunk = socket.read() as Buffer | null) !== null) left -= chunk.length
        if (left > 0) return
        settle()
        resolve(left === 0 && !socket.destroyed)
      }
      const closed = (): void => {
        settle()
        resolve(false)
      }
      const fail = (err: Error): void => {
        settle()
        socket.destroy()
        reject(err)
      }
      const aborted = (): void => fail(new errors.RequestAbortedError())
      const timer = setTimeout(() => fail(new errors.HeadersTimeoutError()), this.options.replyTimeoutMs)
      if (abortSignal?.aborted === true) {
        aborted()
        return
      }
      socket.on('readable', read)
      socket.once('close', closed)
      abortSignal?.addEventListener('abort', aborted, { once: true })
      read()
    })
  }
}
