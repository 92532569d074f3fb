// A TLS origin that answers authrep like 3scale's backend, for the benchmark.
// Prints {"port":N,"caFile":"..."} on stdout when it listens.
import { createServer } from 'node:https'
import { createCa } from '../dist/src/demo/pki.js'

const ca = await createCa('Benchmark CA')
const { cert, key } = await ca.issue(['backend.test', 'portal.test', '127.0.0.1'])
const body = '<?xml version="1.0" encoding="UTF-8"?><status><authorized>true</authorized><plan>Basic</plan></status>'
const server = createServer({ cert, key, keepAliveTimeout: 60_000 }, (req, res) => {
  req.resume()
  res.writeHead(200, { 'content-type': 'application/vnd.3scale-v2.0+xml', 'content-length': Buffer.byteLength(body) })
  res.end(body)
})
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port, caFile: ca.certFile }) + '\n')
})
process.on('SIGTERM', () => server.close(() => process.exit(0)))
