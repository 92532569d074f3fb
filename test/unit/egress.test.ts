import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { readProxySettings } from '../../src/config/proxy-settings.js'
import { parseProxyUrl, ProxyUrlError, resolveEgress, type ProxyEnv, type ProxySettings } from '../../src/egress/egress.js'

/** The variables as config parses them, once: resolveEgress takes the result. */
function proxiesOf (env: ProxyEnv): ProxySettings {
  const problems: string[] = []
  const { proxies } = readProxySettings({ variables: env }, problems)
  assert.deepEqual(problems, [])
  return proxies
}

describe('resolveEgress (proxy-from-env precedence and NO_PROXY)', () => {
  const cases: Array<{ name: string, url: string, env: ProxyEnv, want: string }> = [
    { name: 'no proxy set', url: 'https://su1.3scale.net', env: {}, want: 'direct:no_proxy_configured' },
    { name: 'https_proxy for https', url: 'https://su1.3scale.net', env: { https_proxy: 'http://p:3128' }, want: 'proxy:http://p:3128' },
    { name: 'HTTPS_PROXY for https', url: 'https://su1.3scale.net', env: { HTTPS_PROXY: 'http://P:3128' }, want: 'proxy:http://p:3128' },
    { name: 'lower case wins over upper case', url: 'https://x.example', env: { https_proxy: 'http://lower:1', HTTPS_PROXY: 'http://upper:2' }, want: 'proxy:http://lower:1' },
    { name: 'http_proxy is not used for https', url: 'https://x.example', env: { http_proxy: 'http://p:3128' }, want: 'direct:no_proxy_configured' },
    { name: 'http_proxy for http', url: 'http://x.example', env: { http_proxy: 'http://p:3128' }, want: 'proxy:http://p:3128' },
    { name: 'all_proxy as the fallback', url: 'https://x.example', env: { ALL_PROXY: 'http://a:1' }, want: 'proxy:http://a:1' },
    { name: 'scheme-less proxy means http://', url: 'https://x.example', env: { https_proxy: 'p:3128' }, want: 'proxy:http://p:3128' },
    { name: 'NO_PROXY exact host', url: 'https://su1.3scale.net', env: { https_proxy: 'http://p:1', NO_PROXY: 'su1.3scale.net' }, want: 'direct:no_proxy_match' },
    { name: 'NO_PROXY suffix with dot', url: 'https://su1.3scale.net', env: { https_proxy: 'http://p:1', no_proxy: '.3scale.net' }, want: 'direct:no_proxy_match' },
    { name: 'NO_PROXY wildcard', url: 'https://x.example', env: { https_proxy: 'http://p:1', no_proxy: '*' }, want: 'direct:no_proxy_match' },
    { name: 'NO_PROXY with port, other port', url: 'https://x.example', env: { https_proxy: 'http://p:1', no_proxy: 'x.example:8443' }, want: 'proxy:http://p:1' },
    { name: 'NO_PROXY with port, same port', url: 'https://x.example:8443', env: { https_proxy: 'http://p:1', no_proxy: 'x.example:8443' }, want: 'direct:no_proxy_match' },
    { name: 'NO_PROXY other host', url: 'https://x.example', env: { https_proxy: 'http://p:1', no_proxy: 'y.example,z.example' }, want: 'proxy:http://p:1' },
    { name: 'NO_PROXY domain matches subdomains', url: 'https://su1.3scale.net', env: { https_proxy: 'http://p:1', NO_PROXY: '3scale.net' }, want: 'direct:no_proxy_match' },
    { name: 'NO_PROXY CIDR', url: 'https://10.2.3.4', env: { https_proxy: 'http://p:1', NO_PROXY: '10.0.0.0/8' }, want: 'direct:no_proxy_match' },
    { name: 'lower-case no_proxy wins', url: 'https://x.example', env: { https_proxy: 'http://p:1', no_proxy: 'other.example', NO_PROXY: 'x.example' }, want: 'proxy:http://p:1' },
    { name: 'loopback is never proxied', url: 'https://127.0.0.1:8443', env: { https_proxy: 'http://p:1' }, want: 'direct:loopback' },
    { name: 'localhost is never proxied', url: 'http://localhost', env: { http_proxy: 'http://p:1' }, want: 'direct:loopback' }
  ]
  for (const c of cases) {
    it(c.name, () => {
      const e = resolveEgress(new URL(c.url), proxiesOf(c.env))
      assert.equal(e.kind === 'proxy' ? `proxy:${e.proxy.url.origin}` : `direct:${e.reason}`, c.want)
    })
  }

  it('does not read or change process.env', (t) => {
    const before = { ...process.env }
    t.after(() => { process.env = before })
    process.env.https_proxy = 'http://from-process:1'
    const e = resolveEgress(new URL('https://x.example'), proxiesOf({}))
    assert.equal(e.kind, 'direct')
    assert.equal(process.env.https_proxy, 'http://from-process:1')
  })
})

describe('parseProxyUrl', () => {
  const ok: Array<{ raw: string, origin: string, username: string, password: string }> = [
    { raw: 'http://proxy:3128', origin: 'http://proxy:3128', username: '', password: '' },
    { raw: 'http://alice:s3cret@proxy:3128', origin: 'http://proxy:3128', username: 'alice', password: 's3cret' },
    { raw: 'http://alice:p%40ss%3Aw%25rd@proxy:3128', origin: 'http://proxy:3128', username: 'alice', password: 'p@ss:w%rd' },
    { raw: 'http://dom%5Calice:x@proxy:3128', origin: 'http://proxy:3128', username: 'dom\\alice', password: 'x' },
    { raw: 'http://alice:p@ss@proxy:3128', origin: 'http://proxy:3128', username: 'alice', password: 'p@ss' },
    { raw: 'http://alice:50%off@proxy:3128', origin: 'http://proxy:3128', username: 'alice', password: '50%off' },
    { raw: 'alice:pw@proxy:3128', origin: 'http://proxy:3128', username: 'alice', password: 'pw' },
    // A stray `%` keeps only itself encoded, never the valid escapes next to it.
    { raw: 'http://corp:p@ss:w0rd%@proxy:3128', origin: 'http://proxy:3128', username: 'corp', password: 'p@ss:w0rd%' },
    { raw: 'http://alice:a%zz%40b@proxy:3128', origin: 'http://proxy:3128', username: 'alice', password: 'a%zz@b' },
    { raw: 'http://alice:a%4%40@proxy:3128', origin: 'http://proxy:3128', username: 'alice', password: 'a%4@' },
    { raw: 'http://alice:caf%C3%A9@proxy:3128', origin: 'http://proxy:3128', username: 'alice', password: 'café' },
    { raw: 'http://alice:caf%C3%40@proxy:3128', origin: 'http://proxy:3128', username: 'alice', password: 'caf%C3@' },
    { raw: 'http://alice:%C3%A9%C3%zz%25%@proxy:3128', origin: 'http://proxy:3128', username: 'alice', password: 'é%C3%zz%%' },
    { raw: 'http://dom%5Calice%:x@proxy:3128', origin: 'http://proxy:3128', username: 'dom\\alice%', password: 'x' },
    { raw: 'https://proxy.corp:443/', origin: 'https://proxy.corp', username: '', password: '' }
  ]
  for (const c of ok) {
    it(`parses ${c.raw.replace(/:[^:@/]*@/, ':***@')}`, () => {
      const p = parseProxyUrl(c.raw)
      assert.deepEqual({ origin: p.url.origin, username: p.username, password: p.password }, { origin: c.origin, username: c.username, password: c.password })
      assert.equal(p.url.username, '')
      assert.equal(p.url.password, '')
    })
  }

  const bad = ['http://u:hunter2@[bad', 'socks5://u:hunter2@h:1', 'ftp://h', 'http://u:hunter2@h:1/path', 'http://u:hunter2@h:99999']
  for (const raw of bad) {
    it(`refuses a malformed URL without echoing the password (${raw.split(':')[0]})`, () => {
      assert.throws(() => parseProxyUrl(raw), (err: unknown) => {
        assert.ok(err instanceof ProxyUrlError)
        assert.doesNotMatch(err.message, /hunter2/)
        return true
      })
    })
  }
})
