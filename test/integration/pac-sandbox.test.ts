import assert from 'node:assert/strict'
import diagnostics from 'node:diagnostics_channel'
import { describe, it } from 'node:test'
import { compilePacScript, PacScriptError } from '../../src/egress/pac-script.js'
import { ProxyAutoConfig } from '../../src/egress/pac.js'
import { createLogger } from '../../src/observe/logger.js'

const URL_ = new URL('https://su1.3scale.net/')

/** A script → what FindProxyForURL answers for https://su1.3scale.net/. */
const ANSWERS: Array<[string, string, unknown]> = [
  ['the standard functions', 'if (dnsDomainIs(host, ".3scale.net") && shExpMatch(url, "https://*") && !isPlainHostName(host) && dnsDomainLevels(host) === 2 && localHostOrDomainIs(host, "su1.3scale.net")) return "PROXY a:8080"; return "DIRECT"', 'PROXY a:8080'],
  ['isInNet over an IP literal, dnsResolve of localhost (no DNS server asked)', 'return isInNet("10.1.2.3", "10.0.0.0", "255.0.0.0") && dnsResolve("localhost") === "127.0.0.1" ? "DIRECT" : "PROXY x:1"', 'DIRECT'],
  ['no require, process, module or globalThis.process', 'return [typeof require, typeof process, typeof module, typeof globalThis.process].join()', 'undefined,undefined,undefined,undefined'],
  ['Function built from the constructor chain runs inside the sandbox', 'var F = this.constructor.constructor; var f = F("return typeof process"); return f()', 'undefined'],
  ['a PAC function\'s own constructor is the sandbox\'s Function', 'var F = dnsResolve.constructor; var f = F("return typeof require"); return f()', 'undefined'],
  ['time functions work', 'return typeof weekdayRange("MON", "SUN") + typeof timeRange(0, 23) + typeof dateRange(1, 31)', 'booleanbooleanboolean']
]

/** A broken script → what the error says. */
const BROKEN: Array<[string, string, RegExp]> = [
  ['a syntax error names its line', 'function FindProxyForURL(url, host) {\n  // a comment\n  return "DIRECT" +;\n}', /^line 3: syntax error: Unexpected token ;$/],
  ['no FindProxyForURL', 'var x = 1;', /defines no function FindProxyForURL/],
  ['a throw names the line of the source, not of the rewritten code', '// comments first\n// shift the lines\nfunction FindProxyForURL(url, host) {\n  // one more\n  var p = null;\n  return p.length;\n}', /^line 6: FindProxyForURL threw TypeError: cannot read property 'length' of null$/],
  ['a loop at the top level is stopped while compiling', 'for (;;) {}\nfunction FindProxyForURL(url, host) { return "DIRECT" }', /ran longer than 250 ms and was stopped/]
]

describe('the PAC sandbox (pac-resolver on QuickJS)', () => {
  for (const [name, body, expected] of ANSWERS) {
    it(name, async (t) => {
      const script = await compilePacScript(`function FindProxyForURL(url, host) { ${body} }`, () => {})
      t.after(() => { script.dispose() })
      assert.equal(await script.find(URL_), expected)
    })
  }
  for (const [name, source, says] of BROKEN) {
    it(name, async () => {
      await assert.rejects(async () => {
        const script = await compilePacScript(source, () => {})
        try {
          await script.find(URL_)
        } finally {
          script.dispose()
        }
      }, (err: unknown) => err instanceof PacScriptError && says.test(err.message))
    })
  }

  it('myIpAddress answers from this host\'s interfaces, opening no connection (pac-resolver\'s connects to 8.8.8.8:53)', async (t) => {
    const opened: unknown[] = []
    const onConnect = (message: unknown): void => { opened.push(message) }
    diagnostics.subscribe('net.client.socket', onConnect)
    t.after(() => { diagnostics.unsubscribe('net.client.socket', onConnect) })
    const script = await compilePacScript('function FindProxyForURL(url, host) { return myIpAddress() }', () => {})
    t.after(() => { script.dispose() })
    assert.match(String(await script.find(URL_)), /^\d+\.\d+\.\d+\.\d+$/)
    assert.equal(opened.length, 0)
  })

  it('alert() goes to the sidecar\'s log, not to stdout', async (t) => {
    const said: string[] = []
    const script = await compilePacScript('function FindProxyForURL(url, host) { alert("deciding " + host); return "DIRECT" }', (m) => { said.push(m) })
    t.after(() => { script.dispose() })
    assert.equal(await script.find(URL_), 'DIRECT')
    assert.deepEqual(said, ['deciding su1.3scale.net'])
  })

  it('a script that loops in FindProxyForURL is stopped each time it is asked, and the sandbox still answers after', async (t) => {
    const script = await compilePacScript('var n = 0; function FindProxyForURL(url, host) { n++; if (n < 3) for (;;) {} return "DIRECT " }', () => {})
    t.after(() => { script.dispose() })
    for (let i = 0; i < 2; i++) {
      const started = performance.now()
      await assert.rejects(script.find(URL_), /ran longer than 250 ms/)
      assert.ok(performance.now() - started < 2000)
    }
    assert.equal(await script.find(URL_), 'DIRECT ')
  })

  it('the script sees a destination\'s origin only, never a request\'s path or query (where tokens travel), and is asked once per destination', async (t) => {
    let reads = 0
    const pac = new ProxyAutoConfig({
      source: { kind: 'file', path: '/proxy.pac' },
      refreshMs: 60_000,
      read: async () => {
        reads++
        return await Promise.resolve('var asked = 0; function FindProxyForURL(url, host) { asked++; if (asked > 1 || url.indexOf("admin") >= 0 || url.indexOf("secret") >= 0) return "PROXY leak:1"; return "DIRECT" }')
      },
      log: createLogger('silent'),
      destinations: () => [new URL('https://su1.3scale.net/admin/api/services.json?access_token=secret')]
    })
    t.after(() => { pac.close() })
    assert.equal(await pac.load(), true)
    assert.equal(await pac.load(), false, 'the same text is not compiled again')
    assert.equal(reads, 2)
    for (let i = 0; i < 3; i++) assert.equal((await pac.answer(new URL('https://su1.3scale.net/admin/api/services.json?access_token=secret'))).text, 'DIRECT')
  })

  it('the sandbox is freed once unused and compiled again only for a destination not yet answered; the answers stay', async (t) => {
    const compiled: string[] = []
    const pac = new ProxyAutoConfig({
      source: { kind: 'file', path: '/proxy.pac' },
      refreshMs: 60_000,
      read: async () => await Promise.resolve('alert("compiled"); function FindProxyForURL(url, host) { return "PROXY " + host + ":3128" }'),
      log: { info: (_fields: unknown, message: string) => { compiled.push(message) } } as unknown as ReturnType<typeof createLogger>,
      destinations: () => [new URL('https://su1.3scale.net/')],
      sandboxIdleMs: 50
    })
    t.after(() => { pac.close() })
    await pac.load()
    assert.equal(compiled.length, 1)
    await new Promise((resolve) => setTimeout(resolve, 200))
    assert.equal((await pac.answer(new URL('https://su1.3scale.net/'))).text, 'PROXY su1.3scale.net:3128')
    assert.equal(compiled.length, 1, 'an answered destination needs no sandbox')
    assert.equal((await pac.answer(new URL('https://idp.corp.example/'))).text, 'PROXY idp.corp.example:3128')
    assert.equal(compiled.length, 2, 'a new destination compiles the script again')
    assert.equal((await pac.answer(new URL('https://jwks.corp.example/'))).text, 'PROXY jwks.corp.example:3128')
    assert.equal(compiled.length, 2, 'while it is in use, the same sandbox answers')
  })
})
