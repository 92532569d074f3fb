/**
 * Percent-decode `value` (RFC 3986 §2.1) the lenient way: each escaped
 * UTF-8 sequence (`%C3%A9`) is decoded, and only what cannot be decoded
 * stays as written: a `%` that starts no escape (`50%off`, `%4`, a trailing
 * `%`) and an escaped byte that is not part of valid UTF-8 (a lone `%C3`).
 *
 * decodeURIComponent throws on the first malformed escape, so using it on
 * the whole value kept a proxy password like `p%40ss%3Aw0rd%` (what the
 * WHATWG URL makes of `p@ss:w0rd%`) entirely encoded, and the proxy got the
 * wrong password. Pure; one decoder for every place that compares or uses a
 * decoded value, so they cannot drift apart.
 */
export function percentDecode (value: string): string {
  if (!value.includes('%')) return value
  try {
    // Where it succeeds it gives what the lenient walk would, faster.
    return decodeURIComponent(value)
  } catch {
    return value.replace(ESCAPE_RUN, decodeRun)
  }
}

const ESCAPE_RUN = /(?:%[0-9A-Fa-f]{2})+/g

/** Decode a run of `%XX` one UTF-8 sequence at a time, keeping the bytes that form none. */
function decodeRun (run: string): string {
  let out = ''
  const bytes = run.length / 3
  for (let i = 0; i < bytes;) {
    const length = sequenceLength(parseInt(run.slice(i * 3 + 1, i * 3 + 3), 16))
    const escaped = run.slice(i * 3, (i + length) * 3)
    let decoded: string | undefined
    if (length > 0 && i + length <= bytes) {
      // decodeURIComponent rejects bad continuation bytes, overlong forms and surrogates.
      try { decoded = decodeURIComponent(escaped) } catch { decoded = undefined }
    }
    if (decoded === undefined) {
      out += run.slice(i * 3, i * 3 + 3)
      i++
    } else {
      out += decoded
      i += length
    }
  }
  return out
}

/** The length of the UTF-8 sequence a lead byte starts (RFC 3629 §3), 0 for a byte that starts none. */
function sequenceLength (lead: number): number {
  if (lead < 0x80) return 1
  if (lead >= 0xc2 && lead <= 0xdf) return 2
  if (lead >= 0xe0 && lead <= 0xef) return 3
  if (lead >= 0xf0 && lead <= 0xf4) return 4
  return 0
}
