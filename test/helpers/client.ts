import { connect } from 'node:net'
import { Agent, request, type Dispatcher } from 'undici'

export interface Reply {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: Buffer
  text (): string
}

/** An HTTP client for talking to the sidecar's listeners, as APIcast would. */
export class Client {
  readonly agent = new Agent({ connections: 64, keepAliveTimeout: 1000 })

  async send (url: string, options: { method?: Dispatcher.HttpMethod, headers?: Record<string, string>, body?: string | Buffer | NodeJS.ReadableStream | null } = {}): Promise<Reply> {
    const res = await request(url, {
      dispatcher: this.agent,
      method: options.method ?? 'GET',
      headers: options.headers,
      body: options.body as Dispatcher.RequestOptions['body']
    })
    const body = Buffer.from(await res.body.arrayBuffer())
    return { status: res.statusCode, headers: res.headers, body, text: () => body.toString('utf8') }
  }

  private closing: Promise<void> | undefined

  /** Idempotent: a test may close its client itself, and its t.after closes it again. */
  async close (): Promise<void> {
    this.closing ??= this.agent.close()
    await this.closing
  }
}

/** Basic credentials the way APIcast sends URL userinfo `TOKEN@`. */
export function basicUserinfo (token: string): string {
  return 'Basic ' + Buffer.from(token + ':').toString('base64')
}

/**
 * Write raw bytes to a listener and return everything it answers until it
 * closes or `timeoutMs` passes: for request forms no HTTP client will send.
 */
export async function rawExchange (port: number, data: string, timeoutMs = 3000): Promise<string> {
  return await new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let got = ''
    const timer = setTimeout(() => { socket.destroy(); resolve(got) }, timeoutMs)
    socket.on('data', (d: Buffer) => { got += d.toString('latin1') })
    socket.on('error', (err) => { clearTimeout(timer); reject(err) })
    socket.on('close', () => { clearTimeout(timer); resolve(got) })
    socket.write(data)
  })
}

/** Run `count` calls of `fn` with at most `concurrency` in flight. */
export async function runConcurrently (count: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  const workers = Array.from({ length: concurrency }, async () => {
    while (next < count) {
      const i = next++
      await fn(i)
    }
  })
  await Promise.all(workers)
}
