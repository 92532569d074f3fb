import { BlockList, isIP } from 'node:net'
import { bareHostname, effectivePort } from '../http/url.js'

/**
 * NO_PROXY as users write it: the union of curl's and Go's rules
 * (golang.org/x/net/http/httpproxy, curl's noproxy.c). proxy-from-env covers
 * only part of it (no CIDR, and `example.com` does not match its
 * subdomains there), so the matching is done here; proxy-from-env still
 * decides which proxy variable applies.
 *
 * Entries are separated by commas or whitespace, compared case-insensitively:
 * - `*` alone: everything is direct;
 * - `example.com`, `.example.com`, `*.example.com`: the domain and all its
 *   subdomains (curl and Go each match one of these forms differently; the
 *   union matches both);
 * - `host:port`, `.domain:port`, `[::1]:port`: only that port;
 * - `10.1.2.3`, `::1`, `[::1]`: that IP literal;
 * - `10.0.0.0/8`, `fd00::/8`: IP literals in the range. Host names are never
 *   resolved to test a range, as in Go and curl.
 */
export type NoProxyRule =
  | { readonly kind: 'all' }
  | { readonly kind: 'domain', readonly domain: string, readonly port: number | undefined }
  | { readonly kind: 'ip', readonly ip: string, readonly port: number | undefined }
  | { readonly kind: 'range', readonly range: BlockList, readonly text: string, readonly port: number | undefined }

/** A NO_PROXY entry that cannot mean anything (a malformed CIDR range). */
export class NoProxyError extends Error {
  override name = 'NoProxyError'
}

/** Parse a NO_PROXY value; throws NoProxyError naming the first malformed entry. */
export function parseNoProxy (value: string): readonly NoProxyRule[] {
  const rules: NoProxyRule[] = []
  for (const raw of value.split(/[\s,]+/)) {
    const entry = raw.trim().toLowerCase()
    if (entry === '') continue
    if (entry === '*') {
      rules.push({ kind: 'all' })
      continue
    }
    const { host, port } = splitPort(entry)
    const slash = host.indexOf('/')
    if (slash !== -1) {
      rules.push(parseRange(entry, host.slice(0, slash), host.slice(slash + 1), port))
      continue
    }
    const bare = host.replace(/^\[|\]$/g, '')
    if (isIP(bare) !== 0) {
      rules.push({ kind: 'ip', ip: normalizeIp(bare), port })
      continue
    }
    const domain = host.replace(/^\*?\.+/, '').replace(/\.$/, '')
    if (domain !== '') rules.push({ kind: 'domain', domain, port })
  }
  return rules
}

/** True when `url` must be reached directly under `rules`. */
export function matchesNoProxy (url: URL, rules: readonly NoProxyRule[]): boolean {
  if (rules.length === 0) return false
  const host = bareHostname(url).replace(/\.$/, '').toLowerCase()
  const port = effectivePort(url)
  const family = isIP(host)
  const ip = family !== 0 ? normalizeIp(host) : undefined
  for (const rule of rules) {
    if (rule.kind === 'all') return true
    if (rule.port !== undefined && rule.port !== port) continue
    switch (rule.kind) {
      case 'domain':
        if (host === rule.domain || host.endsWith('.' + rule.domain)) return true
        break
      case 'ip':
        if (ip === rule.ip) return true
        break
      case 'range':
        if (ip !== undefined && rule.range.check(ip, family === 6 ? 'ipv6' : 'ipv4')) return true
        break
    }
  }
  return false
}

const LOOPBACK = new BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

/**
 * Loopback never goes through a proxy: a corporate proxy cannot reach this
 * host's 127.0.0.1, so proxying it could only fail (Go has the same rule).
 */
export function isLoopback (url: URL): boolean {
  const host = bareHostname(url).replace(/\.$/, '').toLowerCase()
  if (host === 'localhost' || host.endsWith('.localhost')) return true
  const family = isIP(host)
  return family !== 0 && LOOPBACK.check(normalizeIp(host), family === 6 ? 'ipv6' : 'ipv4')
}

function splitPort (entry: string): { host: string, port: number | undefined } {
  if (entry.startsWith('[')) {
    const m = /^(\[[^\]]+\])(?::(\d+))?$/.exec(entry)
    if (m !== null) return { host: m[1] as string, port: m[2] !== undefined ? Number(m[2]) : undefined }
  }
  // One colon followed by digits is a port; more colons is an IPv6 literal.
  const m = /^([^:]+):(\d+)$/.exec(entry)
  if (m !== null) return { host: m[1] as string, port: Number(m[2]) }
  return { host: entry, port: undefined }
}

function parseRange (entry: string, address: string, prefixText: string, port: number | undefined): NoProxyRule {
  const family = isIP(address)
  const prefix = /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN
  if (family === 0 || !(prefix >= 0 && prefix <= (family === 4 ? 32 : 128))) {
    throw new NoProxyError(`entry "${entry}" is not a valid CIDR range (e.g. 10.0.0.0/8 or fd00::/8)`)
  }
  const range = new BlockList()
  range.addSubnet(normalizeIp(address), prefix, family === 4 ? 'ipv4' : 'ipv6')
  return { kind: 'range', range, text: entry, port }
}

/** IPv6 literals have many spellings (::1, 0:0::1); compare one. */
function normalizeIp (ip: string): string {
  if (isIP(ip) !== 6) return ip
  return new URL(`http://[${ip}]/`).hostname.replace(/^\[|\]$/g, '')
}
