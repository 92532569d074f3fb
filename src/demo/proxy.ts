/**
 * The demo's "corporate proxy": proxy-chain with Basic auth, resolving the
 * stand-in's *.demo names to 127.0.0.1 so nothing touches real DNS.
 */
import type { lookup } from 'node:dns'
import { Server } from 'proxy-chain'

export interface DemoProxy {
  readonly port: number
  /** Authenticated CONNECTs so far: one per tunnel the sidecar opened. */
  connects (): number
  close (): Promise<void>
}

/** Node 20 calls lookup with `{ all: true }` (happy eyeballs) and then wants an array. */
const demoLookup = ((hostname: string, options: unknown, callback: (err: NodeJS.ErrnoException | null, address: unknown, family?: number) => void) => {
  const cb = typeof options === 'function' ? options as typeof callback : callback
  const all = typeof options === 'object' && options !== null && (options as { all?: boolean }).all === true
  if (hostname.endsWith('.demo')) {
    if (all) cb(null, [{ address: '127.0.0.1', family: 4 }])
    else cb(null, '127.0.0.1', 4)
    return
  }
  const err: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname}`)
  err.code = 'ENOTFOUND'
  cb(err, all ? [] : '', 4)
}) as unknown as typeof lookup

export async function startDemoProxy (user: string, password: string): Promise<DemoProxy> {
  let connects = 0
  const server = new Server({
    port: 0,
    host: '127.0.0.1',
    authRealm: 'apicast-sidecar-proxy demo',
    prepareRequestFunction: ({ username, password: given, isHttp }) => {
      if (username !== user || given !== password) return { requestAuthentication: true, failMsg: 'bad proxy credentials' }
      if (!isHttp) connects++
      return { dnsLookup: demoLookup }
    }
  })
  await server.listen()
  return {
    port: server.port,
    connects: () => connects,
    close: async () => { await server.close(true) }
  }
}
