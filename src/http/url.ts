/**
 * The TCP port `url` connects to: its own, else its scheme's default, 443
 * for https and 80 for http (RFC 9110 §4.2.1, §4.2.2). The WHATWG URL
 * leaves `port` empty for a default port, even when it was written
 * (`https://h:443` has `port === ''`), so every place that needs the number
 * (NO_PROXY `host:port` entries, `host:port` in logs, the proxy socket)
 * asks here. Pure.
 */
export function effectivePort (url: URL): number {
  if (url.port !== '') return Number(url.port)
  return url.protocol === 'https:' ? 443 : 80
}

/**
 * `url`'s host name as a socket takes it: an IPv6 literal without the
 * brackets the URL keeps around it (`[::1]` → `::1`). Pure.
 */
export function bareHostname (url: URL): string {
  const host = url.hostname
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
}
