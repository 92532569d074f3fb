import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { hostPort, redactPath, redactText, redactUrl } from '../../src/observe/redact.js'

describe('redactPath', () => {
  const cases: Array<[string, string]> = [
    ['/admin/api/services.json', '/admin/api/services.json'],
    ['/x?access_token=abc', '/x?access_token=[REDACTED]'],
    ['/transactions/authrep.xml?service_token=s&service_id=1&user_key=u&usage%5Bhits%5D=1',
      '/transactions/authrep.xml?service_token=[REDACTED]&service_id=1&user_key=[REDACTED]&usage%5Bhits%5D=1'],
    ['/t.xml?provider_key=p&app_id=a&app_key=k', '/t.xml?provider_key=[REDACTED]&app_id=a&app_key=[REDACTED]'],
    ['/x?user%5Fkey=u&ACCESS_TOKEN=t', '/x?user%5Fkey=[REDACTED]&ACCESS_TOKEN=[REDACTED]'],
    ['/x?user_key', '/x?user_key=[REDACTED]'],
    ['/x?a=%zz&user_key=u', '/x?a=%zz&user_key=[REDACTED]'],
    ['/x?user_key%zz=u&user%5Fkey%=v', '/x?user_key%zz=u&user%5Fkey%=v'],
    // `;` separates parameters as `&` does
    ['/x?a=1;user_key=SECRET', '/x?a=1;user_key=[REDACTED]'],
    ['/x?user_key=SECRET;a=1&app_key=K2', '/x?user_key=[REDACTED];a=1&app_key=[REDACTED]'],
    // bracket forms: the base name or any bracketed part
    ['/x?user_key[]=SECRET', '/x?user_key[]=[REDACTED]'],
    ['/transactions.xml?transactions[0][user_key]=SECRET&transactions[0][usage][hits]=1',
      '/transactions.xml?transactions[0][user_key]=[REDACTED]&transactions[0][usage][hits]=1'],
    ['/x?[user_key]=SECRET', '/x?[user_key]=[REDACTED]'],
    ['/x?transactions%5B0%5D%5Buser_key%5D=SECRET', '/x?transactions%5B0%5D%5Buser_key%5D=[REDACTED]'],
    ['/x?user%5Fkey%5B%5D=SECRET', '/x?user%5Fkey%5B%5D=[REDACTED]'],
    ['/x?usage[hits]=1&transactions[0][app_id]=a', '/x?usage[hits]=1&transactions[0][app_id]=a'],
    // suffixes
    ['/x?foo_key=SECRET&my_token=T&db-password=P&oauth_secret=S&x-api-key=K',
      '/x?foo_key=[REDACTED]&my_token=[REDACTED]&db-password=[REDACTED]&oauth_secret=[REDACTED]&x-api-key=[REDACTED]'],
    // identifiers stay: operators need them
    ['/x?app_id=a&service_id=1&user_id=2&key_id=3&keys=4&monkey=5', '/x?app_id=a&service_id=1&user_id=2&key_id=3&keys=4&monkey=5'],
    // the key in the Account Management API's path
    ['/admin/api/accounts/1/applications/2/keys/SECRET.json', '/admin/api/accounts/1/applications/2/keys/[REDACTED].json'],
    ['/admin/api/accounts/1/applications/2/keys/SECRET', '/admin/api/accounts/1/applications/2/keys/[REDACTED]'],
    ['/admin/api/accounts/1/applications/2/keys/SECRET.xml?access_token=T', '/admin/api/accounts/1/applications/2/keys/[REDACTED].xml?access_token=[REDACTED]'],
    ['/admin/api/accounts/1/applications/2/keys/a.b.json', '/admin/api/accounts/1/applications/2/keys/[REDACTED].json'],
    ['/admin/api/accounts/1/applications/2/keys.json', '/admin/api/accounts/1/applications/2/keys.json'],
    ['/admin/api/accounts/1/applications/2/keys/', '/admin/api/accounts/1/applications/2/keys/'],
    // `;` parameters of a path segment (RFC 3986 §3.3)
    ['/x;user_key=SECRET/y', '/x;user_key=[REDACTED]/y'],
    ['/x;v=1/y', '/x;v=1/y'],
    // the fragment is dropped, whatever it holds
    ['/x#user_key=SECRET', '/x'],
    ['/x?a=1#user_key=SECRET', '/x?a=1'],
    ['/x?user_key=SECRET#frag', '/x?user_key=[REDACTED]'],
    ['/x#?user_key=SECRET', '/x']
  ]
  const names = ['access_token', 'service_token', 'provider_key', 'user_key', 'app_key', 'token', 'password', 'passwd', 'pwd', 'key',
    'api_key', 'apikey', 'secret', 'client_secret', 'refresh_token', 'id_token', 'jwt']
  for (const name of names) cases.push([`/x?app_id=a&${name}=SECRET`, `/x?app_id=a&${name}=[REDACTED]`])
  for (const [input, want] of cases) it(input, () => assert.equal(redactPath(input), want))

  // The demo prints its calls with `***`: the same rules, another censor.
  const censored: Array<[string, string]> = [
    ['/transactions/authrep.xml?service_token=s&service_id=1&user_key=u', '/transactions/authrep.xml?service_token=***&service_id=1&user_key=***'],
    ['/admin/api/account/proxy_configs/production.json?host=api.demo', '/admin/api/account/proxy_configs/production.json?host=api.demo'],
    ['/x;user_key=SECRET/keys/K.json?access_token=T#f', '/x;user_key=***/keys/***.json?access_token=***'],
    ['/admin/api/services.json', '/admin/api/services.json']
  ]
  for (const [input, want] of censored) it(`${input} with the censor ***`, () => assert.equal(redactPath(input, '***'), want))
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

describe('redactText: error messages the sidecar did not write', () => {
  const cases: Array<[string, string]> = [
    ['connect ECONNREFUSED 127.0.0.1:3128', 'connect ECONNREFUSED 127.0.0.1:3128'],
    ['Invalid URL: http://alice:s3cret@proxy.corp:3128', 'Invalid URL: http://[REDACTED]@proxy.corp:3128'],
    ['Invalid URL: https://TOKEN123@portal.test/admin', 'Invalid URL: https://[REDACTED]@portal.test/admin'],
    ['GET /admin/api/services.json?access_token=t0k3n&page=2 failed', 'GET /admin/api/services.json?access_token=[REDACTED]&page=2 failed'],
    ['authrep?service_id=7&user_key=k3y', 'authrep?service_id=7&user_key=[REDACTED]'],
    ['sent Proxy-Authorization: Basic YWxpY2U6czNjcmV0 and failed', 'sent Proxy-Authorization: [REDACTED] and failed'],
    ['header authorization: Bearer abc.def', 'header authorization: [REDACTED]'],
    ['Proxy response (407) !== 200 when HTTP Tunneling', 'Proxy response (407) !== 200 when HTTP Tunneling'],
    ['a question? no parameters here', 'a question? no parameters here']
  ]
  for (const [input, want] of cases) it(input, () => assert.equal(redactText(input), want))
})
