import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { testCa, type CertificateAuthority } from './pki.js'

/** Names the origin's certificate covers; test proxies resolve them to 127.0.0.1. */
export const ORIGIN_NAMES = ['portal.test', 'backend.test', 'localhost', '127.0.0.1'] as const

export interface SeenRequest {
  readonly method: string
  readonly url: string
  readonly headers: IncomingMessage['headers']
  readonly rawHeaders: readonly string[]
  bodyBytes: number
  /** True once the whole request body arrived. */
  complete: boolean
  /** True once the request ended at the origin: whole, or cut off. */
  closed: boolean
  /** CN of the client certificate, when the origin asked for one. */
  readonly clientCn: string | undefined
}

export type Handler = (req: IncomingMessage, res: ServerResponse, seen: SeenRequest) => void

export interface Origin {
  readonly port: number
  /** e.g. https://portal.test:PORT — reachable only through a test proxy. */
  url (name?: string): string
  readonly requests: SeenRequest[]
  /** Sockets currently open at the origin. */
  openSockets (): number
  close (): Promise<void>
}

export const FORBIDDEN_JSON = '{"error":"Access denied"}'
export const BACKEND_403_XML = '<?xml version="1.0" encoding="UTF-8"?><error code="provider_key_or_service_token_required">Provider key or service token are required</error>'

/**
 * A stand-in for 3scale's portal and backend: answers the real paths the way
 * 3scale does (403 without credentials), plus test endpoints:
 * - /echo: the request as JSON (method, url, headers);
 * - /bytes?n=N: N bytes of body, streamed in 64 KiB chunks;
 * - /upload: counts the request body and answers with the count;
 * - /slow?ms=N: answers after N ms;
 * - /hang: never answers.
 * Every request is recorded in `requests`, with how much body arrived.
 */
export const threescaleHandler: Handler = (req, res, seen) => {
  const url = new URL(req.url ?? '/', 'http://origin')
  const chunks: Buffer[] = []
  const endpoint = url.pathname.startsWith('/echo') ? '/echo' : url.pathname
  const keep = endpoint === '/echo'
  req.on('data', (c: Buffer) => { if (keep) chunks.push(c) })
  req.on('end', () => {
    switch (endpoint) {
      case '/echo': {
        const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks).toString('utf8') })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'x-origin': 'yes', 'set-cookie': ['a=1', 'b=2'], connection: 'x-hop', 'x-hop': 'dropped', 'keep-alive': 'timeout=5' })
        res.end(body)
        return
      }
      case '/bytes': {
        let left = Number(url.searchParams.get('n') ?? '0')
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(left) })
        const chunk = Buffer.alloc(65536, 120)
        const pump = (): void => {
          while (left > 0) {
            const n = Math.min(left, chunk.length)
            left -= n
            if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
              res.once('drain', pump)
              return
            }
          }
          res.end()
        }
        pump()
        return
      }
      case '/upload':
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.end(String(seen.bodyBytes))
        return
      case '/hang':
        return
      case '/slow':
        setTimeout(() => {
          res.writeHead(200, { 'content-type': 'text/plain' })
          res.end('slow done')
        }, Number(url.searchParams.get('ms') ?? '500'))
        return
      case '/admin/api/services.json':
      case '/admin/api/account/proxy_configs/production.json':
        if (url.searchParams.get('access_token') === null && req.headers.authorization === undefined) {
          res.writeHead(403, { 'content-type': 'application/json; charset=utf-8' })
          res.end(FORBIDDEN_JSON)
          return
        }
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' })
        res.end('{"services":[{"service":{"id":2555417777820,"name":"API"}}]}')
        return
      case '/transactions/authrep.xml':
        if (url.searchParams.get('service_token') === null && url.searchParams.get('provider_key') === null) {
          res.writeHead(403, { 'content-type': 'application/vnd.3scale-v2.0+xml' })
          res.end(BACKEND_403_XML)
          return
        }
        res.writeHead(200, { 'content-type': 'application/vnd.3scale-v2.0+xml' })
        res.end('<?xml version="1.0" encoding="UTF-8"?><status><authorized>true</authorized><plan>Basic</plan></status>')
        return
      case '/transactions.xml':
        res.writeHead(202)
        res.end()
        return
      default:
        res.writeHead(404, { 'content-type': 'text/plain' })
        res.end('not found\n')
    }
  })
}

export interface OriginOptions {
  /** Serve TLS with a certificate from `ca` (default: the shared test CA). */
  readonly tls?: boolean
  readonly ca?: CertificateAuthority
  readonly handler?: Handler
  /** Require a client certificate issued by this CA (mutual TLS). */
  readonly clientCa?: CertificateAuthority
  /** More names for the certificate, beside ORIGIN_NAMES (test proxies must resolve them too). */
  readonly names?: readonly string[]
  /** Send only the server's own certificate, without its CA, as many on-premise servers are set up. */
  readonly leafOnly?: boolean
}

/** Start an origin on 127.0.0.1, port 0. */
export async function startOrigin (options: OriginOptions = {}): Promise<Origin> {
  const handler = options.handler ?? threescaleHandler
  const requests: SeenRequest[] = []
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const peer = 'getPeerCertificate' in req.socket ? (req.socket as TLSSocket).getPeerCertificate() : undefined
    const clientCn = peer?.subject?.CN
    const seen: SeenRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, bodyBytes: 0, complete: false, closed: false, clientCn: Array.isArray(clientCn) ? clientCn[0] : clientCn }
    requests.push(seen)
    req.on('data', (c: Buffer) => { seen.bodyBytes += c.length })
    req.on('end', () => { seen.complete = true })
    req.on('close', () => { seen.closed = true })
    handler(req, res, seen)
  }
  let server: Server
  if (options.tls === false) {
    server = createHttpServer(onRequest)
  } else {
    const ca = options.ca ?? await testCa()
    const issued = await ca.issue([...ORIGIN_NAMES, ...(options.names ?? [])])
    const cert = options.leafOnly === true ? issued.cert.slice(0, issued.cert.indexOf('-----END CERTIFICATE-----') + 26) : issued.cert
    const key = issued.key
    const mtls = options.clientCa !== undefined ? { requestCert: true, rejectUnauthorized: true, ca: options.clientCa.certPem } : {}
    server = createHttpsServer({ cert, key, ...mtls }, onRequest)
  }
  const sockets = new Set<Socket>()
  server.on('connection', (s: Socket) => { sockets.add(s); s.once('close', () => sockets.delete(s)) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const scheme = options.tls === false ? 'http' : 'https'
  return {
    port,
    url: (name = '127.0.0.1') => `${scheme}://${name}:${port}`,
    requests,
    openSockets: () => sockets.size,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
