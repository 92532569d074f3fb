import assert from 'node:assert/strict'
import { tmpdir } from 'node:os'
import { describe, it } from 'node:test'
import { ConfigError, loadConfig } from '../../src/config/config.js'

const minimal = { THREESCALE_PORTAL_ENDPOINT: 'https://acme-admin.3scale.net' }

function problemsOf (env: Record<string, string>): readonly string[] {
  try {
    loadConfig(env)
  } catch (err) {
    assert.ok(err instanceof ConfigError)
    return err.problems
  }
  assert.fail('expected a ConfigError')
}

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const c = loadConfig(minimal)
    assert.equal(c.portal.endpoint.href, 'https://acme-admin.3scale.net/')
    assert.equal(c.portal.token, undefined)
    assert.equal(c.portal.listenPort, 9090)
    assert.equal(c.backend.endpoint.href, 'https://su1.3scale.net/')
    assert.equal(c.backend.listenPort, 9091)
    assert.equal(c.listenAddress, '127.0.0.1')
    assert.equal(c.accessTokenLocation, 'query')
    assert.equal(c.logLevel, 'info')
    assert.deepEqual(c.timeouts, { connectMs: 10000, responseHeadersMs: 60000, idleMs: 60000, keepAliveMs: 30000, shutdownGraceMs: 10000 })
    assert.equal(c.maxConnectionsPerUpstream, 64)
    assert.deepEqual(c.staleConfig, { maxAgeMs: 86_400_000, maxBytes: 32 * 1024 * 1024, dir: undefined })
    assert.equal(c.maxConcurrentRequests, 1024)
    assert.deepEqual(c.client, { headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, sendTimeoutMs: 60_000 })
    assert.ok(Object.isFrozen(c))
  })

  it('STALE_CONFIG_MAX_AGE=0 turns the stale configuration off; other values are seconds', () => {
    assert.equal(loadConfig({ ...minimal, STALE_CONFIG_MAX_AGE: '0' }).staleConfig, undefined)
    assert.deepEqual(loadConfig({ ...minimal, STALE_CONFIG_MAX_AGE: '600', STALE_CONFIG_MAX_BYTES: '1000' }).staleConfig, { maxAgeMs: 600_000, maxBytes: 1000, dir: undefined })
    assert.equal(loadConfig({ ...minimal, STALE_CONFIG_DIR: tmpdir() }).staleConfig?.dir, tmpdir())
  })

  it('PROXY_USER and PROXY_PASSWORD fill in the proxy URLs; PROXY_PASSWORD and its file exclude each other', () => {
    const c = loadConfig({ ...minimal, HTTPS_PROXY: 'http://proxy.corp:3128', FALLBACK_PROXIES: 'http://other@proxy2.corp:3128', PROXY_USER: 'CORP\\alice', PROXY_PASSWORD: 'p@ss:w%rd' })
    const proxy = c.proxies.https
    assert.equal(proxy?.url.href, 'http://proxy.corp:3128/')
    assert.equal(proxy.username, 'CORP\\alice')
    assert.equal(proxy.password, 'p@ss:w%rd')
    assert.equal(c.fallbackProxies[0]?.username, 'other', 'a URL that names its user keeps it')
    assert.equal(c.fallbackProxies[0]?.password, 'p@ss:w%rd')
    const problems = problemsOf({ ...minimal, HTTPS_PROXY: 'http://u@proxy:3128', PROXY_PASSWORD: 'x', PROXY_PASSWORD_FILE: '/nonexistent/pw' })
    assert.ok(problems.some((p) => /PROXY_PASSWORD and PROXY_PASSWORD_FILE are both set/.test(p)))
    assert.deepEqual(problemsOf({ ...minimal, HTTPS_PROXY: 'http://proxy:3128', PROXY_PASSWORD: 'x' }),
      ['PROXY_PASSWORD is set, but no proxy URL names a user (write it as http://user@proxy:port, or set PROXY_USER)'])
  })

  it('PROXY_PAC_URL: an http(s) URL, a file:// URL or a path; PROXY_USER and the password go to every proxy it names', () => {
    assert.equal(loadConfig(minimal).pac, undefined)
    const url = loadConfig({ ...minimal, PROXY_PAC_URL: 'http://wpad.corp.example/proxy.pac?site=1', PROXY_USER: 'CORP\\svc', PROXY_PASSWORD: 'pw' }).pac
    assert.equal(url?.source.kind === 'url' && url.source.url.href, 'http://wpad.corp.example/proxy.pac?site=1')
    assert.equal(url?.refreshMs, 300_000)
    assert.deepEqual(url?.credentials, { user: 'CORP\\svc', password: 'pw' })
    const file = loadConfig({ ...minimal, PROXY_PAC_URL: 'file:///etc/hostname', PROXY_PAC_REFRESH_S: '30' }).pac
    assert.deepEqual(file?.source, { kind: 'file', path: '/etc/hostname' })
    assert.equal(file?.refreshMs, 30_000)
    assert.deepEqual(loadConfig({ ...minimal, PROXY_PAC_URL: '/etc/hostname' }).pac?.source, { kind: 'file', path: '/etc/hostname' })
    const rows: Array<[Record<string, string>, string]> = [
      [{ PROXY_PAC_URL: 'http://user:secret@wpad.corp/proxy.pac' }, 'PROXY_PAC_URL must not hold credentials: the PAC file is fetched without any (value not shown)'],
      [{ PROXY_PAC_URL: 'ftp://wpad.corp/proxy.pac' }, 'PROXY_PAC_URL uses the scheme ftp; expected http://, https://, file:// or a path'],
      [{ PROXY_PAC_URL: 'http://[bad/proxy.pac' }, 'PROXY_PAC_URL is not a valid URL; expected http://host/proxy.pac, https://host/proxy.pac, file:///path/proxy.pac or a path'],
      [{ PROXY_PAC_URL: '/nonexistent/proxy.pac' }, 'PROXY_PAC_URL: the PAC file /nonexistent/proxy.pac does not exist (is its ConfigMap mounted?)'],
      [{ PROXY_PAC_URL: 'http://wpad.corp/proxy.pac', PROXY_PASSWORD: 'pw' }, 'PROXY_PASSWORD is set, but PROXY_USER is not: the proxies a PAC file (PROXY_PAC_URL) names carry no user, so set PROXY_USER'],
      [{ BACKEND_ENDPOINT_OVERRIDE: 'http://backend.corp:3000', http_proxy: 'https://proxy.corp:3129' }, 'BACKEND_ENDPOINT_OVERRIDE is an http:// URL, and every proxy it would go through (http_proxy, FALLBACK_PROXIES) is an https:// one: the sidecar sends plain http:// requests only to an http:// proxy. Name an http:// proxy in http_proxy, or use the https:// endpoint'],
      [{ PROXY_PAC_URL: 'http://wpad.corp/proxy.pac', PROXY_PAC_REFRESH_S: '0' }, 'PROXY_PAC_REFRESH_S "0" is not a positive whole number']
    ]
    for (const [env, problem] of rows) assert.deepEqual(problemsOf({ ...minimal, ...env }), [problem], JSON.stringify(env))
    assert.ok(!problemsOf({ ...minimal, PROXY_PAC_URL: 'http://user:secret@wpad.corp/proxy.pac' }).join().includes('secret'))
  })

  it('Kerberos: on with a keytab, a ticket cache or negotiate forced; their files watched; what is missing is a problem', () => {
    assert.equal(loadConfig(minimal).kerberos, undefined)
    assert.equal(loadConfig(minimal).proxyAuthBackoffMs, 60_000)
    const keytab = loadConfig({ ...minimal, KRB5_CLIENT_KTNAME: 'FILE:/etc/hostname', PROXY_KRB5_SPN: 'HTTP@proxy.corp.example', PROXY_KRB5_PRINCIPAL: 'svc@CORP' })
    assert.deepEqual(keytab.kerberos, { spn: 'HTTP@proxy.corp.example', principal: 'svc@CORP', keytab: '/etc/hostname', ccache: undefined, krb5Config: undefined })
    assert.deepEqual(keytab.secretFiles, [{ setting: 'KRB5_CLIENT_KTNAME', path: '/etc/hostname' }])
    assert.deepEqual(loadConfig({ ...minimal, KRB5CCNAME: 'FILE:/tmp/krb5cc_sidecar' }).secretFiles, [{ setting: 'KRB5CCNAME', path: '/tmp/krb5cc_sidecar' }])
    assert.deepEqual(loadConfig({ ...minimal, KRB5CCNAME: 'KEYRING:persistent:1000' }).secretFiles, [], 'only a file cache can be watched')
    assert.notEqual(loadConfig({ ...minimal, PROXY_AUTH_SCHEME: 'negotiate' }).kerberos, undefined)
    assert.deepEqual(problemsOf({ ...minimal, KRB5_CLIENT_KTNAME: '/nonexistent/client.keytab', KRB5_CONFIG: '/nonexistent/krb5.conf', PROXY_KRB5_SPN: 'proxy.corp' }), [
      'KRB5_CLIENT_KTNAME: the keytab /nonexistent/client.keytab does not exist (is its Secret mounted?)',
      'KRB5_CONFIG: /nonexistent/krb5.conf does not exist (is its ConfigMap mounted?)',
      'PROXY_KRB5_SPN must be a service principal such as HTTP@proxy.corp.example (or HTTP/proxy.corp.example)'
    ])
    assert.deepEqual(problemsOf({ ...minimal, PROXY_KRB5_SPN: 'HTTP@proxy.corp' }),
      ['PROXY_KRB5_SPN is set, but no Kerberos credentials are: set KRB5_CLIENT_KTNAME (a client keytab) or KRB5CCNAME (a ticket cache)'])
  })

  it('PROXY_TLS_CERT/KEY: a pair, for an https:// proxy, watched like the secret files', () => {
    const https = loadConfig({ ...minimal, HTTPS_PROXY: 'https://proxy.corp:3129', PROXY_TLS_CERT: '/run/proxy-tls/tls.crt', PROXY_TLS_KEY: '/run/proxy-tls/tls.key' })
    assert.deepEqual(https.tls.proxyClient, { certFile: '/run/proxy-tls/tls.crt', keyFile: '/run/proxy-tls/tls.key' })
    assert.deepEqual(https.secretFiles, [{ setting: 'PROXY_TLS_CERT', path: '/run/proxy-tls/tls.crt' }, { setting: 'PROXY_TLS_KEY', path: '/run/proxy-tls/tls.key' }])
    assert.equal(loadConfig(minimal).tls.proxyClient, undefined)
    // A fallback over TLS is enough: the certificate is presented to it.
    assert.notEqual(loadConfig({ ...minimal, HTTPS_PROXY: 'http://proxy.corp:3128', FALLBACK_PROXIES: 'https://backup.corp:3129', PROXY_TLS_CERT: '/c', PROXY_TLS_KEY: '/k' }).tls.proxyClient, undefined)
    const cases: Array<{ env: Record<string, string>, problem: RegExp }> = [
      { env: { HTTPS_PROXY: 'https://proxy.corp:3129', PROXY_TLS_CERT: '/c' }, problem: /^PROXY_TLS_KEY is required when PROXY_TLS_CERT is set$/ },
      { env: { HTTPS_PROXY: 'https://proxy.corp:3129', PROXY_TLS_KEY: '/k' }, problem: /^PROXY_TLS_CERT is required when PROXY_TLS_KEY is set$/ },
      { env: { HTTPS_PROXY: 'http://proxy.corp:3128', PROXY_TLS_CERT: '/c', PROXY_TLS_KEY: '/k' }, problem: /^PROXY_TLS_CERT and PROXY_TLS_KEY are set, but no proxy is an https:\/\/ one: .*write its URL as https:\/\/host:port/ },
      { env: { PROXY_TLS_CERT: '/c', PROXY_TLS_KEY: '/k' }, problem: /^PROXY_TLS_CERT and PROXY_TLS_KEY are set, but no proxy is: .*UPSTREAM_TLS_CERT/ }
    ]
    for (const c of cases) assert.deepEqual(problemsOf({ ...minimal, ...c.env }).map((p) => c.problem.test(p)), [true], JSON.stringify(c.env))
  })

  it('STALE_CONFIG_DIR must be an existing directory', () => {
    assert.deepEqual(problemsOf({ ...minimal, STALE_CONFIG_DIR: '/nonexistent/stale' }),
      ['STALE_CONFIG_DIR /nonexistent/stale does not exist; create it (an emptyDir volume in a pod) or unset STALE_CONFIG_DIR to keep the configuration in memory only'])
    assert.deepEqual(problemsOf({ ...minimal, STALE_CONFIG_DIR: '/etc/hostname' }), ['STALE_CONFIG_DIR /etc/hostname is not a directory'])
  })

  it('checks the resilience limits, all problems at once', () => {
    const problems = problemsOf({
      ...minimal,
      STALE_CONFIG_MAX_AGE: '-5',
      MAX_CONCURRENT_REQUESTS: '0',
      STALE_CONFIG_MAX_BYTES: 'lots'
    })
    assert.deepEqual(problems.map((p) => p.split(' ')[0]).sort(), ['MAX_CONCURRENT_REQUESTS', 'STALE_CONFIG_MAX_AGE', 'STALE_CONFIG_MAX_BYTES'])
    assert.deepEqual(problemsOf({ ...minimal, CLIENT_HEADERS_TIMEOUT_MS: '5000', CLIENT_REQUEST_TIMEOUT_MS: '1000' }),
      ['CLIENT_HEADERS_TIMEOUT_MS (5000) must not exceed CLIENT_REQUEST_TIMEOUT_MS (1000): the headers are part of the request'])
  })

  it('PORTAL_TOKEN_SOURCE: a token held while listening beyond loopback needs an explicit choice; the message never shows the token', () => {
    const token = 'exposed-token-7f3a'
    const rows: Array<{ env: Record<string, string>, problem: RegExp | undefined }> = [
      { env: { LISTEN_ADDRESS: '0.0.0.0' }, problem: /^LISTEN_ADDRESS=0\.0\.0\.0 makes the portal listener reachable from other hosts while the sidecar holds a token \(from THREESCALE_PORTAL_ENDPOINT\).*Set PORTAL_TOKEN_SOURCE explicitly/ },
      { env: { LISTEN_ADDRESS: '::' }, problem: /LISTEN_ADDRESS=:: makes/ },
      { env: { LISTEN_ADDRESS: '10.1.2.3' }, problem: /LISTEN_ADDRESS=10\.1\.2\.3 makes/ },
      { env: { LISTEN_ADDRESS: '0.0.0.0', PORTAL_TOKEN_SOURCE: 'either' }, problem: undefined },
      { env: { LISTEN_ADDRESS: '0.0.0.0', PORTAL_TOKEN_SOURCE: 'client' }, problem: undefined },
      { env: { LISTEN_ADDRESS: '0.0.0.0', PORTAL_TOKEN_SOURCE: 'sidecar' }, problem: undefined },
      { env: { LISTEN_ADDRESS: '127.0.0.1' }, problem: undefined },
      { env: { LISTEN_ADDRESS: '127.0.0.5' }, problem: undefined },
      { env: { LISTEN_ADDRESS: '::1' }, problem: undefined },
      { env: { LISTEN_ADDRESS: 'localhost' }, problem: undefined }
    ]
    for (const row of rows) {
      const env = { ...minimal, THREESCALE_PORTAL_ENDPOINT: `https://${token}@acme-admin.3scale.net`, ...row.env }
      if (row.problem === undefined) {
        assert.doesNotThrow(() => loadConfig(env), JSON.stringify(row.env))
        continue
      }
      const problems = problemsOf(env)
      assert.match(problems[0] ?? '', row.problem, JSON.stringify(row.env))
      for (const p of problems) assert.doesNotMatch(p, new RegExp(token))
    }
    // Without a token there is nothing to lend.
    assert.doesNotThrow(() => loadConfig({ ...minimal, LISTEN_ADDRESS: '0.0.0.0' }))
    assert.match(problemsOf({ ...minimal, PORTAL_TOKEN_SOURCE: 'sidecar' })[0] ?? '', /PORTAL_TOKEN_SOURCE=sidecar needs the sidecar's own token/)
    assert.match(problemsOf({ ...minimal, PORTAL_TOKEN_SOURCE: 'mine' })[0] ?? '', /PORTAL_TOKEN_SOURCE "mine" is not one of: either, client, sidecar/)
    assert.equal(loadConfig({ ...minimal }).portal.tokenFrom, 'either')
    assert.equal(loadConfig({ ...minimal, PORTAL_TOKEN_SOURCE: 'Client' }).portal.tokenFrom, 'client')
  })

  it('a raw proxy password with # / ? says what to percent-encode and offers PROXY_PASSWORD_FILE, never echoing it', () => {
    for (const password of ['pa#ss', 'pa/ss', 'pa?ss', 'p@ss#w/rd?x']) {
      const problems = problemsOf({ ...minimal, HTTPS_PROXY: `http://corp:${password}@proxy.corp:3128` })
      assert.equal(problems.length, 1, password)
      assert.match(problems[0] ?? '', /^HTTPS_PROXY .*percent-encode them \(%40 %3A %25 %23 %2F %3F %20\).*PROXY_USER and PROXY_PASSWORD_FILE/, password)
      assert.ok(!(problems[0] ?? '').includes(password), 'the password is not echoed')
    }
  })

  it('a secret file the process may not read names the UID and GID it runs as', () => {
    const denied = (): string => { throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' }) }
    let problems: readonly string[] = []
    try {
      loadConfig({ ...minimal, ACCESS_TOKEN_FILE: '/run/secrets/token' }, denied)
    } catch (err) {
      problems = (err as { problems: readonly string[] }).problems
    }
    assert.equal(problems.length, 1)
    assert.match(problems[0] ?? '', new RegExp(`^ACCESS_TOKEN_FILE: cannot read /run/secrets/token \\(EACCES: the sidecar runs as UID ${process.getuid?.() ?? ''}, GID ${process.getgid?.() ?? ''}, which may not read it`))
  })

  it('an admin portal page pasted as THREESCALE_PORTAL_ENDPOINT is a config error with the origin to use; a real prefix is not', () => {
    const token = 'pasted-token-5d0e'
    const rows: Array<[string, boolean]> = [
      ['/p/admin/dashboard', true],
      ['/p/admin', true],
      ['/p/login', true],
      ['/admin', true],
      ['/admin/api/services.json', true],
      ['/apiconfig/services/2555417777820/integration', true],
      ['/buyers/accounts', true],
      ['/', false],
      ['/3scale', false],
      ['/prefix/admin-portal', false],
      ['/pages', false]
    ]
    for (const [path, pasted] of rows) {
      const env = { THREESCALE_PORTAL_ENDPOINT: `https://${token}@acme-admin.3scale.net${path}` }
      if (!pasted) {
        assert.doesNotThrow(() => loadConfig(env), path)
        continue
      }
      const problems = problemsOf(env)
      assert.deepEqual(problems, [`THREESCALE_PORTAL_ENDPOINT has the path ${path}, a page of the admin portal as a browser shows it, not where its API is: ` +
        'use the origin only, https://acme-admin.3scale.net (3scale\'s API is at the root of its host, as in https://acme-admin.3scale.net)'], path)
      assert.ok(!(problems[0] ?? '').includes(token), 'the token is not echoed')
    }
  })

  it('takes the token from the portal URL userinfo and removes it from the endpoint', () => {
    const c = loadConfig({ THREESCALE_PORTAL_ENDPOINT: 'https://t%2Fok@acme-admin.3scale.net/prefix' })
    assert.equal(c.portal.token, 't/ok')
    assert.equal(c.portal.endpoint.href, 'https://acme-admin.3scale.net/prefix')
    assert.equal(loadConfig({ THREESCALE_PORTAL_ENDPOINT: 'https://:pw-token@h' }).portal.token, 'pw-token')
  })

  it('treats empty variables as unset', () => {
    const c = loadConfig({ ...minimal, BACKEND_ENDPOINT_OVERRIDE: '', https_proxy: '', LOG_LEVEL: '' })
    assert.equal(c.backend.endpoint.href, 'https://su1.3scale.net/')
    assert.deepEqual(c.proxies, { https: undefined, http: undefined, noProxy: [] })
  })

  it('parses the proxy variables, giving scheme-less ones http://', () => {
    const c = loadConfig({ ...minimal, HTTPS_PROXY: 'proxy:3128', no_proxy: 'localhost' })
    assert.deepEqual({ https: c.proxies.https?.url.href, http: c.proxies.http, noProxy: c.proxies.noProxy },
      { https: 'http://proxy:3128/', http: undefined, noProxy: [{ kind: 'domain', domain: 'localhost', port: undefined }] })
  })

  it('refuses a malformed NO_PROXY range, naming the entry', () => {
    const problems = problemsOf({ ...minimal, NO_PROXY: 'localhost,10.0.0.0/40' })
    assert.deepEqual(problems, ['NO_PROXY entry "10.0.0.0/40" is not a valid CIDR range (e.g. 10.0.0.0/8 or fd00::/8)'])
  })

  it('reports every problem at once, one line each', () => {
    const problems = problemsOf({
      BACKEND_ENDPOINT_OVERRIDE: 'ftp://x',
      PORTAL_LISTEN_PORT: '70000',
      ACCESS_TOKEN_LOCATION: 'cookie',
      LOG_LEVEL: 'loud',
      CONNECT_TIMEOUT_MS: '-1',
      https_proxy: 'http://u:hunter2@[x'
    })
    const names = problems.map((p) => p.split(' ')[0])
    assert.deepEqual(names.sort(), ['ACCESS_TOKEN_LOCATION', 'BACKEND_ENDPOINT_OVERRIDE', 'CONNECT_TIMEOUT_MS', 'LOG_LEVEL', 'PORTAL_LISTEN_PORT', 'THREESCALE_PORTAL_ENDPOINT', 'https_proxy'])
    for (const p of problems) assert.doesNotMatch(p, /\n/)
  })

  it('never echoes a value that may hold a secret', () => {
    const problems = problemsOf({
      THREESCALE_PORTAL_ENDPOINT: 'https://tok-SECRET@acme admin',
      BACKEND_ENDPOINT_OVERRIDE: 'https://u:pw-SECRET@su1.3scale.net',
      HTTPS_PROXY: 'socks5://u:pw-SECRET@p:1',
      http_proxy: 'http://u:pw-SECRET@p:1/path'
    })
    assert.equal(problems.length, 4)
    for (const p of problems) assert.doesNotMatch(p, /SECRET/)
  })

  it('refuses the same port for both listeners and a token with control characters', () => {
    const problems = problemsOf({ THREESCALE_PORTAL_ENDPOINT: 'https://a%0Db@h', PORTAL_LISTEN_PORT: '9000', BACKEND_LISTEN_PORT: '9000' })
    assert.equal(problems.length, 2)
    assert.match(problems.join('\n'), /both 9000/)
    assert.match(problems.join('\n'), /control characters/)
  })

  it('FORWARD_PROXY_PORT turns the forward proxy on, allowing the endpoints\' host:port unless FORWARD_PROXY_ALLOW says otherwise', () => {
    assert.equal(loadConfig(minimal).forwardProxy, undefined)
    const on = loadConfig({ ...minimal, FORWARD_PROXY_PORT: '3128' }).forwardProxy
    assert.equal(on?.port, 3128)
    assert.deepEqual(on?.allow.entries, ['acme-admin.3scale.net:443', 'su1.3scale.net:443'])
    assert.equal(on?.maxTunnels, 256)
    assert.equal(on?.idleMs, 300_000)
    const listed = loadConfig({ ...minimal, FORWARD_PROXY_PORT: '3128', FORWARD_PROXY_ALLOW: '*.3scale.net:443, sso.corp.example:443', FORWARD_PROXY_MAX_TUNNELS: '20', FORWARD_PROXY_IDLE_TIMEOUT_MS: '1000' }).forwardProxy
    assert.deepEqual(listed?.allow.entries, ['*.3scale.net:443', 'sso.corp.example:443'])
    assert.equal(listed?.maxTunnels, 20)
    assert.equal(listed?.idleMs, 1000)
  })

  it('FORWARD_PROXY_* problems are listed with the others: `*`, a bad range, an allowlist without a port, a port in use', () => {
    const problems = problemsOf({ ...minimal, FORWARD_PROXY_PORT: '9091', FORWARD_PROXY_ALLOW: '*', FORWARD_PROXY_MAX_TUNNELS: '0' })
    assert.match(problems.join('\n'), /BACKEND_LISTEN_PORT and FORWARD_PROXY_PORT are both 9091/)
    assert.match(problems.join('\n'), /FORWARD_PROXY_ALLOW must not be `\*`: that makes an open proxy/)
    assert.match(problems.join('\n'), /FORWARD_PROXY_MAX_TUNNELS/)
    assert.match(problemsOf({ ...minimal, FORWARD_PROXY_PORT: '3128', FORWARD_PROXY_ALLOW: '10.0.0.0/99' }).join('\n'), /FORWARD_PROXY_ALLOW entry "10\.0\.0\.0\/99" is not a valid CIDR range/)
    assert.match(problemsOf({ ...minimal, FORWARD_PROXY_ALLOW: 'sso.corp.example:443' }).join('\n'), /FORWARD_PROXY_ALLOW is set, but FORWARD_PROXY_PORT is not/)
  })
})
