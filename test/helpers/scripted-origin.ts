import { createServer, type AddressInfo, type Socket } from 'node:net'

export interface ScriptedOrigin {
  readonly port: number
  /** How many requests each path got. */
  hits (path: string): number
  close (): Promise<void>
}

/**
 * A plain-HTTP origin on 127.0.0.1:0 that answers each request (GET, no
 * body) with raw bytes chosen by its path: for responses no well-behaved
 * server would send (interim 1xx, a 304 with Content-Length, a 204 with
 * content, forged headers, odd transfer codings). Keep-alive: several
 * requests may come on one connection. An unknown path gets a 404.
 */
export async function startScriptedOrigin (script: Readonly<Record<string, string | Buffer>>): Promise<ScriptedOrigin> {
  const hits = new Map<string, number>()
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    let buffered = ''
    socket.on('data', (d: Buffer) => {
      buffered += d.toString('latin1')
      for (let end = buffered.indexOf('\r\n\r\n'); end !== -1; end = buffered.indexOf('\r\n\r\n')) {
        const head = buffered.slice(0, end)
        buffered = buffered.slice(end + 4)
        const path = (head.split(' ')[1] ?? '').split('?')[0] ?? ''
        hits.set(path, (hits.get(path) ?? 0) + 1)
        socket.write(script[path] ?? 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n')
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    hits: (path) => hits.get(path) ?? 0,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
