import { readFile } from 'node:fs/promises'
import type { SecureContext } from 'node:tls'
import { Agent } from './undici-parts.js'

/** PROXY_PAC_URL, parsed: an http(s) URL, or a file (a file:// URL or a path). */
export type PacSource =
  | { readonly kind: 'url', readonly url: URL }
  | { readonly kind: 'file', readonly path: string }

/** Larger than any real PAC file (they run to tens of kB), small enough to hold. */
export const PAC_MAX_BYTES = 1024 * 1024

/** The PAC file could not be read. The message says why, in the terms of the fix; never the body. */
export class PacFetchError extends Error {
  override name = 'PacFetchError'
}

/** What the fetch of an http(s) PAC file needs: the trust store's context and the connect timeout. */
export interface PacFetchOptions {
  readonly secureContext: SecureContext
  readonly timeoutMs: number
}

/**
 * How PROXY_PAC_URL is shown in log lines: the URL without its query (a
 * PAC server may take a key there) or the path.
 */
export function pacLabel (source: PacSource): string {
  return source.kind === 'file' ? source.path : `${source.url.origin}${source.url.pathname}`
}

/**
 * A reader of the PAC file. An http(s) one is fetched directly, never
 * through a proxy (the PAC is what names the proxy; WPAD servers are
 * inside the network), with TLS verified against the sidecar's trust
 * store; one Agent is kept for the refreshes. Redirects are not followed: a
 * 3xx says where to point PROXY_PAC_URL instead.
 */
export function createPacReader (source: PacSource, options: PacFetchOptions): { read: () => Promise<string>, close: () => Promise<void> } {
  if (source.kind === 'file') {
    return {
      read: async () => {
        try {
          const text = await readFile(source.path, 'utf8')
          if (Buffer.byteLength(text) > PAC_MAX_BYTES) throw new PacFetchError(`${source.path} is larger than ${PAC_MAX_BYTES / 1024} kB`)
          return text
        } catch (err) {
          if (err instanceof PacFetchError) throw err
          throw new PacFetchError(`cannot read ${source.path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
        }
      },
      close: async () => {}
    }
  }
  const agent = new Agent({
    connections: 1,
    connect: { timeout: options.timeoutMs, secureContext: options.secureContext },
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.timeoutMs
  })
  const { url } = source
  return {
    read: async () => {
      let res
      try {
        res = await agent.request({ origin: url.origin, path: `${url.pathname}${url.search}`, method: 'GET', headers: { accept: 'application/x-ns-proxy-autoconfig, */*', 'user-agent': 'apicast-sidecar-proxy' } })
      } catch (err) {
        throw new PacFetchError(`cannot fetch it from ${url.host} (${describeFetchError(err)})`)
      }
      if (res.statusCode !== 200) {
        res.body.resume()
        const location = res.headers.location
        throw new PacFetchError(`${url.host} answered ${res.statusCode}` +
          (res.statusCode >= 300 && res.statusCode < 400 && typeof location === 'string' ? ` with Location ${location.slice(0, 200)}: set PROXY_PAC_URL to that URL (redirects are not followed)` : ''))
      }
      let size = 0
      const chunks: Buffer[] = []
      try {
        for await (const chunk of res.body) {
          size += (chunk as Buffer).length
          if (size > PAC_MAX_BYTES) {
            res.body.destroy()
            throw new PacFetchError(`${url.host} sent more than ${PAC_MAX_BYTES / 1024} kB`)
          }
          chunks.push(chunk as Buffer)
        }
      } catch (err) {
        if (err instanceof PacFetchError) throw err
        throw new PacFetchError(`the download from ${url.host} broke off (${describeFetchError(err)})`)
      }
      return Buffer.concat(chunks).toString('utf8')
    },
    close: async () => { await agent.close() }
  }
}

/** An error of the fetch, by its code: what the log line and /readyz say. */
function describeFetchError (err: unknown): string {
  const inner = err instanceof AggregateError && err.errors.length > 0 ? err.errors[0] as unknown : err
  const code = (inner as { code?: unknown }).code
  const message = inner instanceof Error ? inner.message : String(inner)
  if (typeof code === 'string' && (code.includes('CERT') || code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL') || code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE')) {
    return `${code}: its TLS certificate does not verify against the trust store; add its CA with CA_BUNDLE`
  }
  return typeof code === 'string' ? code : message
}
