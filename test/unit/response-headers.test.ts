import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { buildClientResponseHeaders, transferCodings } from '../../src/http/response-headers.js'

describe('buildClientResponseHeaders', () => {
  const rows: Array<{ name: string, status: number, method?: string, in: Record<string, string | string[]>, want: Record<string, string | string[]> }> = [
    { name: 'plain headers pass', status: 200, in: { 'content-type': 'application/json', 'content-length': '2' }, want: { 'content-type': 'application/json', 'content-length': '2' } },
    { name: 'hop-by-hop stripped', status: 200, in: { connection: 'x-hop', 'x-hop': '1', 'keep-alive': 'timeout=5', 'x-keep': 'y' }, want: { 'x-keep': 'y' } },
    { name: 'forged sidecar signals stripped', status: 200, in: { 'x-sidecar-error': 'reset', 'x-sidecar-stale': 'upstream_503', warning: '110 - "Response is Stale"', age: '5', 'x-sidecarish': 'kept' }, want: { 'x-sidecarish': 'kept' } },
    { name: 'gzip transfer coding kept, re-chunked', status: 200, in: { 'transfer-encoding': 'gzip, chunked', 'content-type': 'text/plain' }, want: { 'transfer-encoding': 'gzip, chunked', 'content-type': 'text/plain' } },
    { name: 'close-delimited gzip coding', status: 200, in: { 'transfer-encoding': 'GZIP' }, want: { 'transfer-encoding': 'gzip, chunked' } },
    { name: 'chunked alone is this hop\'s framing', status: 200, in: { 'transfer-encoding': 'chunked' }, want: {} },
    { name: 'codings win over a Content-Length', status: 200, in: { 'transfer-encoding': 'deflate, chunked', 'content-length': '9' }, want: { 'transfer-encoding': 'deflate, chunked' } },
    { name: '204 drops Content-Length', status: 204, in: { 'content-length': '5', etag: '"e"' }, want: { etag: '"e"' } },
    { name: '304 keeps Content-Length', status: 304, in: { 'content-length': '100', etag: '"e"' }, want: { 'content-length': '100', etag: '"e"' } },
    { name: 'no transfer coding on a bodiless answer', status: 304, in: { 'transfer-encoding': 'gzip, chunked' }, want: {} },
    { name: 'HEAD answers carry no coding', status: 200, method: 'HEAD', in: { 'transfer-encoding': 'gzip, chunked', 'content-length': '10' }, want: { 'content-length': '10' } }
  ]
  for (const row of rows) {
    it(row.name, () => {
      const input = structuredClone(row.in)
      assert.deepEqual(buildClientResponseHeaders(row.status, row.method ?? 'GET', input), row.want)
      assert.deepEqual(input, row.in, 'the input is not mutated')
    })
  }
})

describe('transferCodings', () => {
  const rows: Array<[string | string[] | undefined, string[]]> = [
    [undefined, []],
    ['chunked', []],
    ['gzip, chunked', ['gzip']],
    [['gzip', 'chunked'], ['gzip']],
    [' x-custom ,  Chunked ', ['x-custom']]
  ]
  for (const [value, want] of rows) it(JSON.stringify(value), () => { assert.deepEqual(transferCodings(value), want) })
})
