import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { DecodeError, decodeWith, encodeWith, readBytes, readString, writeBytes, writeString, writeUint } from './index.js'

describe('encodeWith', () => {
  it('nests: an inner encodeWith inside an outer one does not disturb the outer bytes', () => {
    const inner = (): Uint8Array => encodeWith((e) => writeString(e, 'inner'))
    const bytes = encodeWith((e) => {
      writeString(e, 'before')
      writeBytes(e, inner())
      writeString(e, 'after')
    })
    const read = decodeWith('test', bytes, (d) => [readString(d), readBytes(d), readString(d)] as const)
    expect(read[0]).toBe('before')
    expect(decodeWith('test', read[1], (d) => readString(d))).toBe('inner')
    expect(read[2]).toBe('after')
  })

  it('returns arrays the caller owns: a later encode does not overwrite an earlier result', () => {
    const a = encodeWith((e) => writeString(e, 'aaaa'))
    const copy = a.slice()
    encodeWith((e) => writeString(e, 'bbbb'))
    expect(a).toEqual(copy)
  })

  it('starts clean after fn throws midway', () => {
    expect(() =>
      encodeWith((e) => {
        writeString(e, 'partial')
        throw new Error('boom')
      }),
    ).toThrow('boom')
    const bytes = encodeWith((e) => writeUint(e, 7))
    expect(Array.from(bytes)).toEqual([7])
  })

  it('round-trips byte arrays across the buffer boundary (fast path and growth path)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), (arrays) => {
        const bytes = encodeWith((e) => arrays.forEach((b) => writeBytes(e, b)))
        const back = decodeWith('test', bytes, (d) => arrays.map(() => readBytes(d)))
        expect(back).toEqual(arrays)
      }),
      { numRuns: 500 },
    )
  })
})

describe('readString', () => {
  it('round-trips ASCII, non-ASCII and long strings', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 80 }), fc.string({ unit: 'grapheme', maxLength: 80 })), (s) => {
        const bytes = encodeWith((e) => writeString(e, s))
        expect(decodeWith('test', bytes, (d) => readString(d))).toBe(s)
      }),
      { numRuns: 1000 },
    )
  })

  it('rejects invalid UTF-8 with DecodeError, short and long', () => {
    for (const body of [[0x61, 0xff], [...new Array<number>(100).fill(0x61), 0xc3]]) {
      const bytes = encodeWith((e) => writeBytes(e, Uint8Array.from(body)))
      expect(() => decodeWith('test', bytes, (d) => readString(d))).toThrow(DecodeError)
    }
  })
})
