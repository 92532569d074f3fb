import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { buildUpstreamRequest, joinPath, type IncomingRequest } from '../../src/forwarding/rewrite.js'
import type { Route, TokenPolicy } from '../../src/config/routes.js'

const basic = (userPass: string): string => 'Basic ' + Buffer.from(userPass).toString('base64')

function route (upstream: string, tokenPolicy: TokenPolicy): Route {
  return {
    name: tokenPolicy.kind === 'passthrough' ? 'backend' : 'portal',
    listenAddress: '127.0.0.1',
    listenPort: 0,
    upstream: new URL(upstream),
    tokenPolicy,
    egress: { kind: 'direct', reason: 'no_proxy_configured' }
  }
}

const portalQuery = route('https://acme-admin.3scale.net', { kind: 'access_token', location: 'query', fallbackToken: undefined, source: 'either' })
const portalHeader = route('https://acme-admin.3scale.net', { kind: 'access_token', location: 'header', fallbackToken: undefined, source: 'either' })
const portalOwnToken = route('https://acme-admin.3scale.net', { kind: 'access_token', location: 'query', fallbackToken: 'own-token', source: 'either' })
const clientOnly = route('https://acme-admin.3scale.net', { kind: 'access_token', location: 'query', fallbackToken: 'own-token', source: 'client' })
const sidecarOnly = route('https://acme-admin.3scale.net', { kind: 'access_token', location: 'query', fallbackToken: 'own-token', source: 'sidecar' })
const sidecarOnlyHeader = route('https://acme-admin.3scale.net', { kind: 'access_token', location: 'header', fallbackToken: 'own-token', source: 'sidecar' })
const portalPrefix = route('https://gw.example/3scale/admin/', { kind: 'access_token', location: 'query', fallbackToken: undefined, source: 'either' })
const backend = route('https://su1.3scale.net', { kind: 'passthrough' })
const restricted = route('https://gw.example/restricted/area', { kind: 'passthrough' })

function req (url: string, headers: Record<string, string> = {}, method = 'GET'): IncomingRequest {
  return { method, url, headers: { host: 'sidecar:9090', ...headers } }
}

describe('buildUpstreamRequest: path and query', () => {
  const cases: Array<{ name: string, route: Route, url: string, want: string }> = [
    { name: 'plain path', route: backend, url: '/transactions/authrep.xml?service_token=s&user_key=u', want: '/transactions/authrep.xml?service_token=s&user_key=u' },
    { name: 'percent-encoding kept byte for byte', route: backend, url: '/a%2Fb/%7Ex?q=%2F%20+&x', want: '/a%2Fb/%7Ex?q=%2F%20+&x' },
    { name: 'prefix joined without double slash', route: portalPrefix, url: '/admin/api/services.json', want: '/3scale/admin/admin/api/services.json' },
    { name: 'empty query marker kept', route: backend, url: '/status?', want: '/status?' },
    { name: 'dot-segments removed', route: backend, url: '/a/../b', want: '/b' },
    { name: 'double slash path stays a path', route: backend, url: '//evil.example/x', want: '//evil.example/x' },
    { name: 'fragment dropped after a query', route: backend, url: '/p?x=1#frag', want: '/p?x=1' },
    { name: 'fragment dropped after a path', route: backend, url: '/p#frag', want: '/p' },
    { name: 'fragment dropped after an empty query', route: backend, url: '/p?#frag', want: '/p?' },
    { name: 'a ? inside the fragment is not a query', route: backend, url: '/p#a?user_key=u', want: '/p' }
  ]
  for (const c of cases) {
    it(c.name, () => {
      const got = buildUpstreamRequest(req(c.url), c.route)
      assert.ok(got.ok)
      assert.equal(got.outgoing.path, c.want)
    })
  }
})

describe('buildUpstreamRequest: dot-segments (RFC 3986 §5.2.4), removed before the prefix is joined', () => {
  const cases: Array<[url: string, want: string]> = [
    ['/a/./b', '/restricted/area/a/b'],
    ['/a/b/..', '/restricted/area/a/'],
    ['/a/.', '/restricted/area/a/'],
    ['/./a', '/restricted/area/a'],
    ['/a/..', '/restricted/area/'],
    ['/x/../echo', '/restricted/area/echo'],
    ['/a/%2e%2e/b', '/restricted/area/b'],
    ['/a/%2E%2E/b', '/restricted/area/b'],
    ['/a/.%2e/b', '/restricted/area/b'],
    ['/a/%2e./b', '/restricted/area/b'],
    ['/a/%2E/b', '/restricted/area/a/b'],
    ['//../x', '/restricted/area/x'],
    ['/a%2Fb/../c%7E/d%2F', '/restricted/area/c%7E/d%2F'],
    ['/a%2Fb/./c', '/restricted/area/a%2Fb/c'],
    ['/..a/b./.../%2e%2e%2e/a..%2fb', '/restricted/area/..a/b./.../%2e%2e%2e/a..%2fb'],
    ['/a/../b?x=/../..&y=%2e%2e', '/restricted/area/b?x=/../..&y=%2e%2e'],
    ['/a/..?x', '/restricted/area/?x'],
    ['/admin/api/services.json', '/restricted/area/admin/api/services.json']
  ]
  for (const [url, want] of cases) {
    it(`${url} → ${want}`, () => {
      const got = buildUpstreamRequest(req(url), restricted)
      assert.ok(got.ok, got.ok ? '' : got.error.message)
      assert.equal(got.outgoing.path, want)
    })
  }

  const refused: Array<[url: string, message: RegExp]> = [
    ['/../../echo', /climbs above its root/],
    ['/..', /climbs above its root/],
    ['/%2e%2e/echo', /climbs above its root/],
    ['/a/../..', /climbs above its root/],
    ['/a/%2E%2E/%2e./x', /climbs above its root/],
    ['/a/../../b?user_key=u', /climbs above its root/],
    ['/..%2f', /next to an encoded/],
    ['/a/..%2Fecho', /next to an encoded/],
    ['/a/%2e%2e%5cecho', /next to an encoded/],
    ['/a/x%5C..', /next to an encoded/],
    ['/a/..\\echo', /next to an encoded/],
    ['/a%2F..%2F..%2Fecho', /next to an encoded/]
  ]
  for (const [url, message] of refused) {
    it(`${url} is refused with 400`, () => {
      const got = buildUpstreamRequest(req(url), restricted)
      assert.equal(got.ok, false, 'the request would have been forwarded')
      if (!got.ok) {
        assert.equal(got.error.statusCode, 400)
        assert.match(got.error.message, message)
      }
    })
  }
})

describe('joinPath', () => {
  const cases: Array<[string, string, string]> = [
    ['', '/x', '/x'], ['/', '/x', '/x'], ['/p', '/x', '/p/x'], ['/p/', '/x', '/p/x'], ['/p/', '/', '/p/'], ['/p', 'x', '/p/x']
  ]
  for (const [prefix, path, want] of cases) {
    it(`${JSON.stringify(prefix)} + ${JSON.stringify(path)}`, () => assert.equal(joinPath(prefix, path), want))
  }
})

describe('buildUpstreamRequest: headers', () => {
  it('sets the upstream Host and strips hop-by-hop headers, including those Connection names', () => {
    const got = buildUpstreamRequest(req('/x', {
      connection: 'keep-alive, x-drop-me',
      'keep-alive': 'timeout=5',
      'proxy-authorization': basic('a:b'),
      'proxy-connection': 'keep-alive',
      te: 'trailers',
      trailer: 'x-t',
      upgrade: 'h2c',
      'transfer-encoding': 'chunked',
      expect: '100-continue',
      'x-drop-me': '1',
      'x-keep': 'yes',
      'content-type': 'application/xml'
    }, 'POST'), backend)
    assert.ok(got.ok)
    assert.deepEqual(got.outgoing.headers, { host: 'su1.3scale.net', 'x-keep': 'yes', 'content-type': 'application/xml' })
  })

  it('keeps a non-default port in Host', () => {
    const got = buildUpstreamRequest(req('/x'), route('https://backend.test:8443', { kind: 'passthrough' }))
    assert.ok(got.ok)
    assert.equal(got.outgoing.headers.host, 'backend.test:8443')
  })

  it('does not mutate the incoming headers', () => {
    const incoming = req('/x', { authorization: basic('tok:'), connection: 'close' })
    const before = structuredClone(incoming.headers)
    buildUpstreamRequest(incoming, portalQuery)
    assert.deepEqual(incoming.headers, before)
  })

  it('a client cannot strip the Authorization the rewrite adds via Connection', () => {
    const got = buildUpstreamRequest(req('/x', { authorization: basic('tok:'), connection: 'authorization' }), portalHeader)
    assert.ok(got.ok)
    assert.equal(got.outgoing.headers.authorization, basic('tok:'))
  })

  it('backend: Authorization passes through untouched', () => {
    const got = buildUpstreamRequest(req('/x', { authorization: basic('tok:') }), backend)
    assert.ok(got.ok)
    assert.equal(got.outgoing.headers.authorization, basic('tok:'))
    assert.equal(got.outgoing.path, '/x')
  })
})

describe('buildUpstreamRequest: access token (portal)', () => {
  const cases: Array<{ name: string, route: Route, url: string, authorization?: string, path: string, auth: string | undefined }> = [
    { name: 'query: token in user name', route: portalQuery, url: '/admin/api/services.json', authorization: basic('tok:'), path: '/admin/api/services.json?access_token=tok', auth: undefined },
    { name: 'query: token in password', route: portalQuery, url: '/admin/api/services.json', authorization: basic(':tok'), path: '/admin/api/services.json?access_token=tok', auth: undefined },
    { name: 'query: appended after an existing query', route: portalQuery, url: '/admin/api/account/proxy_configs/production.json?host=a.example', authorization: basic('tok:'), path: '/admin/api/account/proxy_configs/production.json?host=a.example&access_token=tok', auth: undefined },
    { name: 'query: token is percent-encoded', route: portalQuery, url: '/x', authorization: basic('a+b/c=d&e:'), path: '/x?access_token=a%2Bb%2Fc%3Dd%26e', auth: undefined },
    { name: 'query: an access_token already in the query wins', route: portalQuery, url: '/x?access_token=q', authorization: basic('tok:'), path: '/x?access_token=q', auth: undefined },
    { name: 'query: token placed before where the fragment was', route: portalQuery, url: '/p?x=1#frag', authorization: basic('tok:'), path: '/p?x=1&access_token=tok', auth: undefined },
    { name: 'query: token placed on a path with a fragment', route: portalQuery, url: '/p#frag', authorization: basic('tok:'), path: '/p?access_token=tok', auth: undefined },
    { name: 'query: an access_token in the fragment is no token', route: portalQuery, url: '/p#?access_token=q', authorization: basic('tok:'), path: '/p?access_token=tok', auth: undefined },
    { name: 'header: Basic token forwarded as Basic', route: portalHeader, url: '/x', authorization: basic(':tok'), path: '/x', auth: basic('tok:') },
    { name: 'header: query token wins, Basic dropped', route: portalHeader, url: '/x?access_token=q', authorization: basic('tok:'), path: '/x?access_token=q', auth: undefined },
    { name: 'no token anywhere', route: portalQuery, url: '/x', path: '/x', auth: undefined },
    { name: 'sidecar token used when the request has none', route: portalOwnToken, url: '/x', path: '/x?access_token=own-token', auth: undefined },
    { name: 'request token preferred over the sidecar token', route: portalOwnToken, url: '/x', authorization: basic('tok:'), path: '/x?access_token=tok', auth: undefined },
    { name: 'empty Basic credentials fall back to the sidecar token', route: portalOwnToken, url: '/x', authorization: basic(':'), path: '/x?access_token=own-token', auth: undefined },
    { name: 'a Bearer header is not ours: passed through, no token added', route: portalOwnToken, url: '/x', authorization: 'Bearer abc', path: '/x', auth: 'Bearer abc' },
    // PORTAL_TOKEN_SOURCE=client: only APIcast's token ever travels.
    { name: 'client: APIcast\'s token is sent', route: clientOnly, url: '/x', authorization: basic('tok:'), path: '/x?access_token=tok', auth: undefined },
    { name: 'client: no token from APIcast, none added', route: clientOnly, url: '/x', path: '/x', auth: undefined },
    { name: 'client: empty Basic credentials, none added', route: clientOnly, url: '/x', authorization: basic(':'), path: '/x', auth: undefined },
    { name: 'client: a query token is APIcast\'s own and stays', route: clientOnly, url: '/x?access_token=q', path: '/x?access_token=q', auth: undefined },
    // PORTAL_TOKEN_SOURCE=sidecar: only the sidecar's token travels.
    { name: 'sidecar: APIcast\'s Basic token is replaced', route: sidecarOnly, url: '/x', authorization: basic('tok:'), path: '/x?access_token=own-token', auth: undefined },
    { name: 'sidecar: a query token is dropped, the rest of the query kept', route: sidecarOnly, url: '/x?a=1&access_token=q&b=%2F&access%5Ftoken=r', path: '/x?a=1&b=%2F&access_token=own-token', auth: undefined },
    { name: 'sidecar: a Bearer header is dropped', route: sidecarOnly, url: '/x', authorization: 'Bearer abc', path: '/x?access_token=own-token', auth: undefined },
    { name: 'sidecar: placed in the header when configured (the emptied query keeps its ?)', route: sidecarOnlyHeader, url: '/x?access_token=q', authorization: basic('tok:'), path: '/x?', auth: basic('own-token:') },
    { name: 'sidecar: even invalid client credentials are dropped unread', route: sidecarOnly, url: '/x', authorization: 'Basic !!!', path: '/x?access_token=own-token', auth: undefined }
  ]
  for (const c of cases) {
    it(c.name, () => {
      const got = buildUpstreamRequest(req(c.url, c.authorization !== undefined ? { authorization: c.authorization } : {}), c.route)
      assert.ok(got.ok, 'rewrite refused the request')
      assert.equal(got.outgoing.path, c.path)
      assert.equal(got.outgoing.headers.authorization, c.auth)
    })
  }
})

describe('buildUpstreamRequest: refusals', () => {
  const cases: Array<{ name: string, r: IncomingRequest, route: Route, status: number }> = [
    { name: 'token with CR/LF', r: req('/x', { authorization: basic('to\r\nX-Evil: 1:') }), route: portalQuery, status: 400 },
    { name: 'token with NUL in the password half', r: req('/x', { authorization: basic(':a\u0000b') }), route: portalHeader, status: 400 },
    { name: 'Basic that is not base64', r: req('/x', { authorization: 'Basic !!!' }), route: portalQuery, status: 400 },
    { name: 'absolute-form request for another host', r: req('http://other.example/x'), route: backend, status: 400 },
    { name: 'absolute-form naming the upstream', r: req('https://su1.3scale.net/x'), route: backend, status: 400 },
    { name: 'asterisk-form', r: req('*', {}, 'OPTIONS'), route: backend, status: 400 },
    { name: 'CONNECT', r: req('su1.3scale.net:443', {}, 'CONNECT'), route: backend, status: 405 },
    { name: 'an expectation other than 100-continue', r: req('/x', { expect: 'foo' }), route: backend, status: 417 },
    { name: 'TRACE on the backend', r: req('/transactions/authrep.xml?service_token=s', {}, 'TRACE'), route: backend, status: 405 },
    { name: 'TRACE on the portal, whose token it would echo', r: req('/admin/api/services.json', { authorization: basic('tok:') }, 'TRACE'), route: portalOwnToken, status: 405 },
    { name: 'TRACK', r: req('/x', {}, 'TRACK'), route: backend, status: 405 }
  ]
  for (const c of cases) {
    it(c.name, () => {
      const got = buildUpstreamRequest(c.r, c.route)
      assert.equal(got.ok, false)
      if (!got.ok) {
        assert.equal(got.error.statusCode, c.status)
        if (c.status === 405) assert.equal(got.error.headers.allow, 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS')
      }
    })
  }
})
