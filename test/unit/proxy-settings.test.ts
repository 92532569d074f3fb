import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { readProxySettings, type ProxyInput, type ProxyReading } from '../../src/config/proxy-settings.js'
import type { ProxyEnv } from '../../src/egress/egress.js'

function read (input: ProxyInput): { reading: ProxyReading, problems: string[] } {
  const problems: string[] = []
  return { reading: readProxySettings(input, problems), problems }
}

describe('readProxySettings: the proxy of each scheme, as proxy-from-env picks it', () => {
  const cases: Array<{ name: string, env: ProxyEnv, https: string | undefined, http: string | undefined }> = [
    { name: 'nothing set', env: {}, https: undefined, http: undefined },
    { name: 'https_proxy: https only', env: { https_proxy: 'http://p:3128' }, https: 'http://p:3128', http: undefined },
    { name: 'HTTPS_PROXY: https only', env: { HTTPS_PROXY: 'http://p:3128' }, https: 'http://p:3128', http: undefined },
    { name: 'https_proxy before HTTPS_PROXY', env: { https_proxy: 'http://lower:1', HTTPS_PROXY: 'http://upper:2' }, https: 'http://lower:1', http: undefined },
    { name: 'http_proxy: http only', env: { http_proxy: 'http://p:3128' }, https: undefined, http: 'http://p:3128' },
    { name: 'http_proxy before HTTP_PROXY', env: { http_proxy: 'http://lower:1', HTTP_PROXY: 'http://upper:2' }, https: undefined, http: 'http://lower:1' },
    { name: 'all_proxy: both schemes', env: { all_proxy: 'http://a:1' }, https: 'http://a:1', http: 'http://a:1' },
    { name: 'all_proxy before ALL_PROXY', env: { all_proxy: 'http://lower:1', ALL_PROXY: 'http://upper:2' }, https: 'http://lower:1', http: 'http://lower:1' },
    { name: 'the scheme\'s variable before all_proxy', env: { https_proxy: 'http://s:1', ALL_PROXY: 'http://a:2' }, https: 'http://s:1', http: 'http://a:2' },
    { name: 'HTTPS_PROXY before all_proxy', env: { HTTPS_PROXY: 'http://s:1', all_proxy: 'http://a:2' }, https: 'http://s:1', http: 'http://a:2' },
    { name: 'an empty value counts as unset', env: { https_proxy: '', HTTPS_PROXY: 'http://upper:2' }, https: 'http://upper:2', http: undefined },
    { name: 'a value without scheme means http://', env: { https_proxy: 'p:3128', http_proxy: 'q:8080' }, https: 'http://p:3128', http: 'http://q:8080' },
    { name: 'an https:// proxy stays https', env: { https_proxy: 'https://p.corp:8443' }, https: 'https://p.corp:8443', http: undefined },
    { name: 'one value in two spellings', env: { https_proxy: 'p:1', all_proxy: 'http://p:1' }, https: 'http://p:1', http: 'http://p:1' }
  ]
  for (const c of cases) {
    it(c.name, () => {
      const { reading, problems } = read({ variables: c.env })
      assert.deepEqual(problems, [])
      assert.deepEqual({ https: reading.proxies.https?.url.origin, http: reading.proxies.http?.url.origin }, { https: c.https, http: c.http })
    })
  }

  it('leaves process.env as it was, and never reads it', (t) => {
    const saved = process.env
    const before = { ...process.env }
    t.after(() => { process.env = before })
    process.env.https_proxy = 'http://from-process:1'
    const { reading } = read({ variables: { http_proxy: 'http://p:1' } })
    assert.equal(reading.proxies.https, undefined)
    assert.equal(process.env, saved, 'the same object is back')
    assert.equal(process.env.https_proxy, 'http://from-process:1')
  })
})

describe('readProxySettings: NO_PROXY, parsed once', () => {
  const cases: Array<{ name: string, env: ProxyEnv, domains: string[] }> = [
    { name: 'none', env: { https_proxy: 'http://p:1' }, domains: [] },
    { name: 'NO_PROXY', env: { NO_PROXY: 'a.example, b.example' }, domains: ['a.example', 'b.example'] },
    { name: 'no_proxy before NO_PROXY', env: { no_proxy: 'lower.example', NO_PROXY: 'upper.example' }, domains: ['lower.example'] },
    { name: 'an empty no_proxy counts as unset', env: { no_proxy: '', NO_PROXY: 'upper.example' }, domains: ['upper.example'] }
  ]
  for (const c of cases) {
    it(c.name, () => {
      const { reading, problems } = read({ variables: c.env })
      assert.deepEqual(problems, [])
      assert.deepEqual(reading.proxies.noProxy.map((r) => r.kind === 'domain' ? r.domain : r.kind), c.domains)
    })
  }
})

describe('readProxySettings: every problem, named by its setting, no value echoed', () => {
  const cases: Array<{ name: string, input: ProxyInput, problems: RegExp[] }> = [
    {
      name: 'every set variable is checked, the unused ones too',
      input: { variables: { https_proxy: 'http://u:pw-SECRET@[x', http_proxy: 'socks5://u:pw-SECRET@p:1', ALL_PROXY: 'http://u:pw-SECRET@p:1/path' } },
      problems: [/^https_proxy is not a valid URL/, /^http_proxy uses the unsupported scheme socks5/, /^ALL_PROXY must not have a path/]
    },
    {
      name: 'https_proxy read from HTTPS_PROXY_FILE is named by the file setting',
      input: { variables: { https_proxy: 'http://u:pw-SECRET@[x' }, sources: { https_proxy: 'HTTPS_PROXY_FILE' } },
      problems: [/^HTTPS_PROXY_FILE is not a valid URL.*\(value not shown: it may hold a password\)$/]
    },
    {
      name: 'both NO_PROXY spellings are checked',
      input: { variables: { no_proxy: '10.0.0.0/40', NO_PROXY: 'fd00::/200' } },
      problems: [/^no_proxy entry "10\.0\.0\.0\/40" is not a valid CIDR range/, /^NO_PROXY entry "fd00::\/200" is not a valid CIDR range/]
    },
    {
      name: 'FALLBACK_PROXIES entries by number',
      input: { variables: {}, fallbacks: 'http://ok:1, http://u:pw-SECRET@h:1/x' },
      problems: [/^FALLBACK_PROXIES entry 2 must not have a path/]
    },
    {
      name: 'a password and no user anywhere',
      input: { variables: { https_proxy: 'http://p:1' }, fallbacks: 'http://q:1', credentials: { user: undefined, password: 'pw-SECRET', passwordSetting: 'PROXY_PASSWORD_FILE' } },
      problems: [/^PROXY_PASSWORD_FILE is set, but no proxy URL names a user/]
    }
  ]
  for (const c of cases) {
    it(c.name, () => {
      const { problems } = read(c.input)
      assert.equal(problems.length, c.problems.length, problems.join('\n'))
      c.problems.forEach((want, i) => assert.match(problems[i] ?? '', want))
      for (const p of problems) assert.doesNotMatch(p, /SECRET/)
    })
  }
})

describe('readProxySettings: PROXY_USER and the password go to every proxy URL', () => {
  const cases: Array<{ name: string, input: ProxyInput, want: Array<[string, string]> }> = [
    {
      name: 'PROXY_USER where the URL names no user; the password to each',
      input: { variables: { https_proxy: 'http://p:1' }, fallbacks: 'http://q:1', credentials: { user: 'CORP\\alice', password: 'p@ss:w%rd', passwordSetting: 'PROXY_PASSWORD' } },
      want: [['CORP\\alice', 'p@ss:w%rd'], ['CORP\\alice', 'p@ss:w%rd']]
    },
    {
      name: 'a URL that names its user keeps it, and gets the password',
      input: { variables: { https_proxy: 'http://bob@p:1' }, fallbacks: 'http://carol:own@q:1', credentials: { user: 'alice', password: 'pw', passwordSetting: 'PROXY_PASSWORD' } },
      want: [['bob', 'pw'], ['carol', 'pw']]
    },
    {
      name: 'a password only goes where a user is named',
      input: { variables: { https_proxy: 'http://p:1' }, fallbacks: 'http://dave@q:1', credentials: { user: undefined, password: 'pw', passwordSetting: 'PROXY_PASSWORD' } },
      want: [['', ''], ['dave', 'pw']]
    },
    {
      name: 'the credentials stay decoded: nothing to percent-encode',
      input: { variables: { all_proxy: 'http://p:1' }, credentials: { user: 'a b', password: '%41#/?', passwordSetting: 'PROXY_PASSWORD' } },
      want: [['a b', '%41#/?']]
    }
  ]
  for (const c of cases) {
    it(c.name, () => {
      const { reading, problems } = read(c.input)
      assert.deepEqual(problems, [])
      const proxies = [reading.proxies.https ?? reading.proxies.http, ...reading.fallbackProxies]
      assert.deepEqual(proxies.map((p) => [p?.username, p?.password]), c.want)
      for (const p of proxies) assert.equal(p?.url.username, '', 'the URL never holds the credentials')
    })
  }
})
