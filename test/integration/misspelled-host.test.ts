import assert from 'node:assert/strict'
import { it } from 'node:test'
import { describeOrSkip } from '../helpers/describe-or-skip.js'
import { Client } from '../helpers/client.js'
import { startOrigin } from '../helpers/origin.js'
import { squidSkip, PROXY_PASSWORD, startSquid } from '../helpers/proxies.js'
import { startSidecar } from '../helpers/sidecar.js'


describeOrSkip('a misspelled endpoint host through squid', squidSkip, () => {
  it('502 tunnel_refused naming the target, squid\'s own error, and the host to check; not a timeout', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const squid = await startSquid()
    t.after(async () => { await squid.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: `https://portal.tset:${origin.port}`,
      BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
      HTTPS_PROXY: squid.url
    }, { secrets: [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)] })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })

    const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json`)
    assert.equal(res.status, 502)
    assert.equal(res.headers['x-sidecar-error'], 'tunnel_refused')
    const line = await sidecar.waitForLog((l) => l.level === 'error' && l.error === 'tunnel_refused')
    assert.match(line.msg, new RegExp(`refused the tunnel to portal\\.tset:${origin.port} \\(CONNECT answered \\d{3}; the proxy says ERR_\\w+`))
    assert.match(line.msg, /check the host name in the endpoint \(THREESCALE_PORTAL_ENDPOINT or BACKEND_ENDPOINT_OVERRIDE\) for a typo/)
    assert.equal(await sidecar.stop(), 0)
  })
})
