import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { hostPort, redactPath, redactUrl } from '../../src/redact.js'

describe('redactPath', () => {
  const cases: Array<[string, string]> = [
    ['/admin/api/services.json', '/admin/api/services.json'],
    ['/x?access_token=abc', '/x?access_token=[REDACTED]'],
    ['/transactions/authrep.xml?service_token=s&service_id=1&user_key=u&usage%5Bhits%5D=1',
      '/transactions/authrep.xml?service_token=[REDACTED]&service_id=1&user_key=[REDACTED]&usage%5Bhits%5D=1'],
    ['/t.xml?provider_key=p&app_id=a&app_key=k', '/t.xml?provider_key=[REDACTED]&app_id=a&app_key=[REDACTED]'],
    ['/x?user%5Fkey=u&ACCESS_TOKEN=t', '/x?user%5Fkey=[REDACTED]&ACCESS_TOKEN=[REDACTED]'],
    ['/x?user_key', '/x?user_key=[REDACTED]'],
    ['/x?a=%zz&user_key=u', '/x?a=%zz&user_key=[REDACTED]']
  ]
  for (const [input, want] of cases) it(input, () => assert.equal(redactPath(input), want))
})

describe('redactUrl / hostPort', () => {
  it('masks the password and keeps the user name', () => {
    assert.equal(redactUrl(new URL('http://alice:s3cret@proxy:3128')), 'http://alice:***@proxy:3128/')
    assert.equal(redactUrl(new URL('http://tok@h'), { keepUsername: false }), 'http://***@h/')
  })
  it('gives explicit ports', () => {
    assert.equal(hostPort(new URL('https://h')), 'h:443')
    assert.equal(hostPort(new URL('http://[::1]:8080')), '[::1]:8080')
  })
})
