import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { percentDecode } from '../../src/http/percent-decode.js'

describe('percentDecode', () => {
  const cases: Array<[string, string]> = [
    ['plain', 'plain'],
    ['p%40ss%3Aw%25rd', 'p@ss:w%rd'],
    ['w0rd%', 'w0rd%'],
    ['50%off', '50%off'],
    ['a%zzb', 'a%zzb'],
    ['a%4', 'a%4'],
    ['%4%41', '%4A'],
    ['caf%C3%A9', 'café'],
    ['caf%c3%a9', 'café'],
    ['%C3', '%C3'],
    ['%C3%41', '%C3A'],
    ['%C3%A9%C3', 'é%C3'],
    ['%A9%C3%A9', '%A9é'],
    ['%C0%AF', '%C0%AF'],
    ['%ED%A0%80', '%ED%A0%80'],
    ['%F0%9F%98%80!', '😀!'],
    ['%F0%9F%98', '%F0%9F%98'],
    ['%E2%82%AC%zz%25%', '€%zz%%'],
    ['%2e%2E', '..']
  ]
  for (const [input, want] of cases) it(`${input} → ${want}`, () => assert.equal(percentDecode(input), want))
})
