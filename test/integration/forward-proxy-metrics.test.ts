import assert from 'node:assert/strict'
import { it } from 'node:test'
import { Client } from '../helpers/client.js'
import { connectThrough, getOverTunnel } from '../helpers/connect-client.js'
import { eventually } from '../helpers/eventually.js'
import { startOrigin } from '../helpers/origin.js'
import { testCa } from '../helpers/pki.js'
import { PROXY_PASSWORD, startProxyChain } from '../helpers/proxies.js'
import { startSidecar } from '../helpers/sidecar.js'

it('the forward proxy counts its tunnels, their bytes, and the CONNECTs it refused or could not open, on /metrics', async (t) => {
  const ca = await testCa()
  const origin = await startOrigin()
  t.after(async () => { await origin.close() })
  const proxy = await startProxyChain()
  t.after(async () => { await proxy.close() })
  const sidecar = await startSidecar({
    THREESCALE_PORTAL_ENDPOINT: origin.url('portal.test'),
    BACKEND_ENDPOINT_OVERRIDE: origin.url('backend.test'),
    HTTPS_PROXY: proxy.url,
    FORWARD_PROXY_PORT: '0',
    // forbidden.test is allowed here, and refused by the proxy's policy.
    FORWARD_PROXY_ALLOW: `portal.test:${origin.port},forbidden.test:443`
  }, { secrets: [PROXY_PASSWORD, encodeURIComponent(PROXY_PASSWORD)] })
  t.after(async () => { await sidecar.close() })
  const port = (await sidecar.waitForLog((l) => l.listener === 'forward' && typeof l.port === 'number')).port as number
  const client = new Client()
  t.after(async () => { await client.close() })
  const metrics = async (): Promise<string> => (await client.send(`${sidecar.adminUrl}/metrics`)).text()
  const value = (text: string, series: string): number | undefined => {
    const line = text.split('\n').find((l) => l.startsWith(series + ' '))
    return line === undefined ? undefined : Number(line.slice(series.length + 1))
  }

  const tunnel = await connectThrough(port, `portal.test:${origin.port}`)
  t.after(() => { tunnel.socket.destroy() })
  assert.equal(tunnel.status, 200)
  await eventually(metrics, (m) => value(m, 'sidecar_forward_tunnels_open') === 1, 5000, 'one tunnel open')
  assert.equal((await getOverTunnel(tunnel.socket, 'portal.test', ca.certPem, '/admin/api/services.json?access_token=t')).status, 200)
  const closed = await sidecar.waitForLog((l) => l.listener === 'forward' && typeof l.bytesDown === 'number')
  const m = await eventually(metrics, (text) => value(text, 'sidecar_forward_tunnels_open') === 0, 5000, 'the tunnel closed')
  assert.equal(value(m, 'sidecar_forward_tunnels_opened_total'), 1)
  assert.equal(value(m, `sidecar_forward_tunnels_closed_total{end="${String(closed.end)}"}`), 1)
  // The metric and the tunnel's log line count the same bytes.
  assert.ok((closed.bytesUp as number) > 0 && (closed.bytesDown as number) > 0)
  assert.equal(value(m, 'sidecar_forward_tunnel_bytes_total{direction="up"}'), closed.bytesUp)
  assert.equal(value(m, 'sidecar_forward_tunnel_bytes_total{direction="down"}'), closed.bytesDown)

  assert.equal((await connectThrough(port, `elsewhere.test:${origin.port}`)).status, 403)
  assert.equal((await connectThrough(port, 'forbidden.test:443')).status, 502)
  const after = await metrics()
  assert.equal(value(after, 'sidecar_forward_connects_refused_total{kind="not_allowed"}'), 1)
  assert.equal(value(after, 'sidecar_forward_connects_failed_total{kind="tunnel_refused"}'), 1)
  assert.equal(value(after, 'sidecar_forward_tunnels_opened_total'), 1)
  // No label holds a destination.
  assert.doesNotMatch(after, /sidecar_forward_[^\n]*(portal|elsewhere|forbidden)\.test/)
  await sidecar.stop()
})
