import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { effectivePort } from '../../src/http/url.js'

describe('effectivePort', () => {
  const cases: Array<[string, number]> = [
    ['https://su1.3scale.net', 443],
    ['http://proxy.corp', 80],
    ['https://h:8443/x', 8443],
    ['http://h:3128', 3128],
    // A default port written out is dropped by the URL parser; still the same port.
    ['https://h:443', 443],
    ['http://h:80', 80],
    // A default port of the other scheme is kept as written.
    ['http://h:443', 443],
    ['https://h:80', 80],
    ['https://[::1]:9443', 9443],
    ['http://[fd00::1]', 80]
  ]
  for (const [url, want] of cases) it(`${url} → ${want}`, () => assert.equal(effectivePort(new URL(url)), want))
})
