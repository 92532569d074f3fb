// The in-process proxy (proxy-chain, Basic auth) in a process of its own,
// for machines without squid. Prints {"port":N,"url":"..."} when it listens.
import { startProxyChain } from '../dist/test/helpers/proxies.js'

const proxy = await startProxyChain()
process.stdout.write(JSON.stringify({ port: proxy.port, url: proxy.url }) + '\n')
process.on('SIGTERM', () => { proxy.close().then(() => process.exit(0)) })
