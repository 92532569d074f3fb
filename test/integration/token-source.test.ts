import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { basicUserinfo, Client } from '../helpers/client.js'
import { startOrigin } from '../helpers/origin.js'
import { runCli } from '../helpers/sidecar-process.js'
import { startSidecar } from '../helpers/sidecar.js'

const OWN = 'sidecar-own-token-51aa'
const APICAST = 'apicast-token-0c9e'

describe('PORTAL_TOKEN_SOURCE: whose token reaches 3scale', () => {
  it('client: APIcast\'s token travels; a request without one gets none of the sidecar\'s', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: `https://${OWN}@127.0.0.1:${origin.port}`,
      BACKEND_ENDPOINT_OVERRIDE: origin.url(),
      PORTAL_TOKEN_SOURCE: 'client'
    }, { secrets: [OWN, APICAST] })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })

    const bare = await client.send(`${sidecar.portalUrl}/admin/api/services.json`)
    assert.equal(bare.status, 403, '3scale\'s own answer to a request without a token')
    assert.equal(origin.requests.at(-1)?.url, '/admin/api/services.json')
    assert.equal(origin.requests.at(-1)?.headers.authorization, undefined)

    const own = await client.send(`${sidecar.portalUrl}/admin/api/services.json`, { headers: { authorization: basicUserinfo(APICAST) } })
    assert.equal(own.status, 200)
    assert.equal(origin.requests.at(-1)?.url, `/admin/api/services.json?access_token=${APICAST}`)
    const line = sidecar.logs().find((l) => l.listener === 'portal' && typeof l.port === 'number')
    assert.match(String(line?.accessToken), /PORTAL_TOKEN_SOURCE=client \(APIcast's only\)/)
    assert.equal(await sidecar.stop(), 0)
  })

  it('sidecar: the sidecar\'s token replaces whatever APIcast sent', async (t) => {
    const origin = await startOrigin()
    t.after(async () => { await origin.close() })
    const sidecar = await startSidecar({
      THREESCALE_PORTAL_ENDPOINT: `https://${OWN}@127.0.0.1:${origin.port}`,
      BACKEND_ENDPOINT_OVERRIDE: origin.url(),
      PORTAL_TOKEN_SOURCE: 'sidecar'
    }, { secrets: [OWN, APICAST] })
    t.after(async () => { await sidecar.close() })
    const client = new Client()
    t.after(async () => { await client.close() })

    const res = await client.send(`${sidecar.portalUrl}/admin/api/services.json?access_token=${APICAST}`, { headers: { authorization: basicUserinfo(APICAST) } })
    assert.equal(res.status, 200)
    assert.equal(origin.requests.at(-1)?.url, `/admin/api/services.json?access_token=${OWN}`)
    assert.equal(origin.requests.at(-1)?.headers.authorization, undefined)
    assert.equal(await sidecar.stop(), 0)
  })

  it('a token held while listening on 0.0.0.0 without PORTAL_TOKEN_SOURCE: exit 1, naming the setting, never the token', async () => {
    const { code, stderr, stdout } = await runCli({ THREESCALE_PORTAL_ENDPOINT: `https://${OWN}@acme-admin.3scale.net`, LISTEN_ADDRESS: '0.0.0.0' })
    assert.equal(code, 1)
    assert.match(stderr, /LISTEN_ADDRESS=0\.0\.0\.0 makes the portal listener reachable from other hosts while the sidecar holds a token \(from THREESCALE_PORTAL_ENDPOINT\)/)
    assert.match(stderr, /PORTAL_TOKEN_SOURCE/)
    assert.doesNotMatch(stderr + stdout, new RegExp(OWN))
    assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace')
  })
})
