import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { testCa } from './pki.js'

/** A web server on 127.0.0.1 that serves one PAC file, changed at will, as a WPAD server does. */
export interface PacServer {
  readonly url: string
  /** Serve `script` from now on (status 200), or answer `status` with no script. */
  serve (script: string, status?: number): void
  /** How many times the PAC file was fetched. */
  fetches (): number
  close (): Promise<void>
}

/** Start it on port 0: over http, or over https with a certificate of the test CA (`tls`). */
export async function startPacServer (script: string, options: { readonly tls?: boolean } = {}): Promise<PacServer> {
  let body = script
  let status = 200
  let fetches = 0
  const onRequest = (_req: IncomingMessage, res: ServerResponse): void => {
    fetches++
    res.writeHead(status, { 'content-type': 'application/x-ns-proxy-autoconfig' })
    res.end(status === 200 ? body : '')
  }
  let server: Server
  if (options.tls === true) {
    const issued = await (await testCa()).issue(['127.0.0.1', 'localhost'])
    server = createHttpsServer({ cert: issued.cert, key: issued.key }, onRequest)
  } else {
    server = createHttpServer(onRequest)
  }
  const sockets = new Set<Socket>()
  server.on('connection', (s: Socket) => { sockets.add(s); s.once('close', () => sockets.delete(s)) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `${options.tls === true ? 'https' : 'http'}://127.0.0.1:${port}/proxy.pac`,
    serve: (next, nextStatus = 200) => {
      body = next
      status = nextStatus
    },
    fetches: () => fetches,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

/** A PAC script: FindProxyForURL with `body` as its statements. */
export function pacScript (body: string): string {
  return `// a PAC file, as a WPAD server publishes it\nfunction FindProxyForURL(url, host) {\n${body}\n}\n`
}
