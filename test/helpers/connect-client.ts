import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'

export interface ConnectReply {
  readonly status: number
  /** Header names in lower case. */
  readonly headers: Readonly<Record<string, string>>
  /** Every header field as received, in order (`headers` keeps the last of a repeated name). */
  readonly headerLines: readonly string[]
  /** The body of a refusal (read to the close); '' for a 200. */
  readonly body: string
  /** The tunnel, for a 200; destroyed otherwise. */
  readonly socket: Socket
}

/**
 * Send `CONNECT target` to the proxy on 127.0.0.1:`port`, as APIcast's
 * HTTPS_PROXY client would, and read the reply's head (and, for a refusal,
 * its body to the close).
 */
export async function connectThrough (port: number, target: string, options: { readonly allowHalfOpen?: boolean, readonly headers?: Readonly<Record<string, string>> } = {}): Promise<ConnectReply> {
  // allowHalfOpen: the client may go on sending after the proxy's FIN (a half-close test).
  const socket = netConnect({ port, host: '127.0.0.1', allowHalfOpen: options.allowHalfOpen ?? false })
  socket.on('error', () => {})
  // headers: more request header fields, e.g. Proxy-Authorization.
  const extra = Object.entries(options.headers ?? {}).map(([name, value]) => `${name}: ${value}\r\n`).join('')
  socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${extra}\r\n`)
  let buffered = Buffer.alloc(0)
  const head = await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk])
      const end = buffered.indexOf('\r\n\r\n')
      if (end === -1) return
      socket.off('data', onData)
      socket.pause()
      const rest = buffered.subarray(end + 4)
      if (rest.length > 0) socket.unshift(rest)
      resolve(buffered.subarray(0, end).toString('latin1'))
    }
    socket.on('data', onData)
    socket.once('close', () => { reject(new Error(`the proxy closed before answering CONNECT ${target}`)) })
  })
  const [statusLine, ...lines] = head.split('\r\n')
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '')?.[1])
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const i = line.indexOf(':')
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim()
  }
  if (status === 200) return { status, headers, headerLines: lines, body: '', socket }
  const body = await readToClose(socket)
  return { status, headers, headerLines: lines, body, socket }
}

/** Everything the socket sends until it closes. */
export async function readToClose (socket: Socket): Promise<string> {
  const chunks: Buffer[] = []
  socket.on('data', (c: Buffer) => chunks.push(c))
  socket.resume()
  if (!socket.destroyed) await new Promise<void>((resolve) => socket.once('close', () => { resolve() }))
  return Buffer.concat(chunks).toString('utf8')
}

/** A GET over TLS inside an open tunnel, verified with `caPem` for `servername`: the status line and body. */
export async function getOverTunnel (socket: Socket, servername: string, caPem: string, path: string): Promise<{ status: number, body: string }> {
  const tls = tlsConnect({ socket, servername, ca: caPem })
  tls.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    tls.once('secureConnect', resolve)
    tls.once('error', reject)
  })
  tls.write(`GET ${path} HTTP/1.1\r\nHost: ${servername}\r\nConnection: close\r\n\r\n`)
  const chunks: Buffer[] = []
  tls.on('data', (c: Buffer) => chunks.push(c))
  await new Promise<void>((resolve) => tls.once('close', () => { resolve() }))
  const text = Buffer.concat(chunks).toString('utf8')
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) }
}
