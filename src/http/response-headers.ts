import { withoutHopByHop } from './hop-by-hop.js'

/**
 * Response headers only the sidecar may set: its own failure and stale
 * signals. `Warning` (obsolete since RFC 9111) and `Age` are how a stale
 * answer is marked; passed through from 3scale, or from anything on the
 * path when verification is off, they would make a live answer look stale
 * (or an error look like the sidecar's) to whoever alerts on them.
 */
const SIDECAR_SIGNALS: ReadonlySet<string> = new Set(['warning', 'age'])

/** True for a status whose response never has content (RFC 9110 §6.4.1). */
export function isBodiless (status: number, method: string | undefined): boolean {
  return method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200)
}

/**
 * The headers APIcast gets for an upstream response: ModifyResponse's
 * pure half. Hop-by-hop headers are stripped (RFC 9110 §7.6.1), and with
 * them the sidecar's own signals. Pure: the input is never mutated.
 *
 * - A transfer coding other than chunked (`Transfer-Encoding: gzip,
 *   chunked`) belongs to the message's body, which is relayed as it came:
 *   it is announced again on this hop, re-framed as chunked, rather than
 *   lost (which would hand APIcast gzip bytes as if they were plain).
 * - A 204 never carries Content-Length (RFC 9110 §8.6); a 304 may, and
 *   keeps it.
 */
export function buildClientResponseHeaders (status: number, method: string | undefined, headers: Record<string, string | string[]>): Record<string, string | string[]> {
  const out = withoutHopByHop(headers)
  for (const name in out) {
    if (SIDECAR_SIGNALS.has(name) || name.startsWith('x-sidecar-')) delete out[name]
  }
  if (status === 204) delete out['content-length']
  const codings = isBodiless(status, method) ? [] : transferCodings(headers['transfer-encoding'])
  if (codings.length > 0) {
    out['transfer-encoding'] = [...codings, 'chunked'].join(', ')
    delete out['content-length']
  }
  return out
}

/** The transfer codings of a Transfer-Encoding value other than chunked, lower-case, in order. */
export function transferCodings (value: string | string[] | undefined): string[] {
  if (value === undefined) return []
  const all = (Array.isArray(value) ? value.join(',') : value).split(',')
  return all.map((c) => c.trim().toLowerCase()).filter((c) => c !== '' && c !== 'chunked')
}
