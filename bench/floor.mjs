// The Node floor of the benchmark: node:http in front of one pooled undici
// ProxyAgent, through the same proxy to the same TLS origin, and nothing
// else: no rewrite, no logging, no metrics, no error handling beyond a
// 502. What any Node forwarder on this stack costs; the sidecar's features
// are measured as its ratio to this, in one run (issue 20).
// FLOOR_UPSTREAM, FLOOR_PROXY (with credentials), FLOOR_CA; prints {"port":N}.
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { ProxyAgent } from 'undici'
import { URL } from 'node:url'

const upstream = new URL(process.env.FLOOR_UPSTREAM)
const agent = new ProxyAgent({ uri: process.env.FLOOR_PROXY, connections: 64, requestTls: { ca: readFileSync(process.env.FLOOR_CA) } })
const server = createServer((req, res) => {
  agent.request({ origin: upstream.origin, method: req.method, path: req.url, headers: { host: upstream.host }, body: req.method === 'GET' || req.method === 'HEAD' ? null : req })
    .then(({ statusCode, headers, body }) => {
      res.writeHead(statusCode, headers)
      body.pipe(res)
    }, () => {
      res.writeHead(502)
      res.end()
    })
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => { process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n') })
process.on('SIGTERM', () => { server.close(); agent.close().then(() => process.exit(0)) })
