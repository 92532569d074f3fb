import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from '../observe/logger.js'

const ALLOW = 'CONNECT'

/**
 * Any request other than CONNECT on the forward proxy's listener: a clear
 * 405 naming what it serves, never forwarded. (An origin-form request here
 * is most often APIcast pointed at the wrong port.)
 */
export function refuseNonProxyRequest (log: Logger): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const text = 'this is the sidecar\'s forward proxy: it serves CONNECT host:port (HTTPS_PROXY=http://this-listener), nothing else\n'
    res.writeHead(405, { allow: ALLOW, 'x-sidecar-error': 'not_a_proxy_request', 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text), connection: 'close' })
    res.end(text)
    req.resume()
    log.warn({ method: req.method, status: 405, error: 'not_a_proxy_request' }, `refused ${req.method ?? ''} on the forward proxy: only CONNECT is served`)
  }
}
