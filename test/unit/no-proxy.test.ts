import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { isLoopback, matchesNoProxy, NoProxyError, parseNoProxy } from '../../src/egress/no-proxy.js'

/**
 * The specification of NO_PROXY: [NO_PROXY value, upstream URL, direct?].
 * The union of curl's and Go's rules.
 */
const TABLE: Array<[string, string, boolean]> = [
  // empty and wildcard
  ['', 'https://su1.3scale.net', false],
  ['*', 'https://su1.3scale.net', true],
  [' * ', 'https://su1.3scale.net', true],
  // exact host, case-insensitive, trailing dots ignored
  ['su1.3scale.net', 'https://su1.3scale.net', true],
  ['SU1.3Scale.NET', 'https://su1.3scale.net', true],
  ['su1.3scale.net.', 'https://su1.3scale.net', true],
  ['su1.3scale.net', 'https://su1.3scale.net./x', true],
  ['su1.3scale.net', 'https://su2.3scale.net', false],
  // `domain` matches the domain and its subdomains (Go, curl)
  ['3scale.net', 'https://3scale.net', true],
  ['3scale.net', 'https://su1.3scale.net', true],
  ['3scale.net', 'https://a.b.3scale.net', true],
  ['3scale.net', 'https://not3scale.net', false],
  ['3scale.net', 'https://3scale.net.evil.example', false],
  // `.domain` matches subdomains (Go) and the domain itself (curl)
  ['.3scale.net', 'https://su1.3scale.net', true],
  ['.3scale.net', 'https://3scale.net', true],
  ['.3scale.net', 'https://not3scale.net', false],
  // `*.domain` is `.domain`
  ['*.3scale.net', 'https://su1.3scale.net', true],
  ['*.3scale.net', 'https://3scale.net', true],
  // lists: commas, spaces, empty entries
  ['localhost, .corp.example ,,su1.3scale.net', 'https://su1.3scale.net', true],
  ['a.example b.example', 'https://b.example', true],
  ['a.example,b.example', 'https://c.example', false],
  // host:port matches that port only, default ports made explicit
  ['su1.3scale.net:443', 'https://su1.3scale.net', true],
  ['su1.3scale.net:8443', 'https://su1.3scale.net', false],
  ['su1.3scale.net:8443', 'https://su1.3scale.net:8443', true],
  ['.3scale.net:80', 'http://su1.3scale.net', true],
  ['.3scale.net:80', 'https://su1.3scale.net', false],
  // IPv4 literals and ranges
  ['10.1.2.3', 'https://10.1.2.3', true],
  ['10.1.2.3', 'https://10.1.2.4', false],
  ['10.0.0.0/8', 'https://10.200.3.4:8443', true],
  ['10.0.0.0/8', 'https://11.0.0.1', false],
  ['192.168.0.0/16', 'https://192.168.255.255', true],
  ['0.0.0.0/0', 'https://203.0.113.9', true],
  ['10.0.0.0/8:8443', 'https://10.1.1.1:8443', true],
  ['10.0.0.0/8:8443', 'https://10.1.1.1', false],
  // a range never matches a host name (no DNS lookup)
  ['10.0.0.0/8', 'https://ten.example', false],
  // IPv6 literals and ranges, with or without brackets, any spelling
  ['::ffff:a00:1', 'https://[::ffff:a00:1]', true],
  ['[2001:db8::1]', 'https://[2001:db8::1]', true],
  ['2001:db8::1', 'https://[2001:0db8:0:0::1]', true],
  ['2001:db8::1', 'https://[2001:db8::2]', false],
  ['[2001:db8::1]:8443', 'https://[2001:db8::1]:8443', true],
  ['[2001:db8::1]:8443', 'https://[2001:db8::1]', false],
  ['2001:db8::/32', 'https://[2001:db8:ffff::1]', true],
  ['2001:db8::/32', 'https://[2001:db9::1]', false],
  ['fd00::/8', 'https://[fd12:3456::1]', true]
]

describe('NO_PROXY (curl ∪ Go)', () => {
  for (const [noProxy, url, want] of TABLE) {
    it(`NO_PROXY=${JSON.stringify(noProxy)} ${url} → ${want ? 'direct' : 'proxy'}`, () => {
      assert.equal(matchesNoProxy(new URL(url), parseNoProxy(noProxy)), want)
    })
  }

  const invalid = ['10.0.0.0/33', '10.0.0/8', 'fd00::/129', 'example.com/8', '10.0.0.0/x']
  for (const entry of invalid) {
    it(`refuses the malformed range ${entry}`, () => {
      assert.throws(() => parseNoProxy(`ok.example,${entry}`), (err: unknown) => err instanceof NoProxyError && err.message.includes(entry))
    })
  }
})

describe('isLoopback (never proxied)', () => {
  const cases: Array<[string, boolean]> = [
    ['http://localhost:9090', true], ['https://LOCALHOST', true], ['https://api.localhost', true],
    ['https://127.0.0.1', true], ['https://127.8.9.10', true], ['https://[::1]:8443', true],
    ['https://[0:0:0:0:0:0:0:1]', true], ['https://128.0.0.1', false], ['https://localhost.example', false],
    ['https://[::2]', false], ['https://su1.3scale.net', false]
  ]
  for (const [url, want] of cases) it(`${url} → ${want}`, () => assert.equal(isLoopback(new URL(url)), want))
})
