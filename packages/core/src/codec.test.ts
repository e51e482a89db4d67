import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import * as encoding from 'lib0/encoding'
import { ConfigError, DecodeError, VersionVector, canonicalJson, decodeEnvelope, decodeWith, encodeEnvelope, isWellFormed, encodeWith, encoderSlabBytes, readBytes, readInt, readJson, readString, readUint, releaseEncoder, slabCopy, takeEncoder, writeByte, writeBytes, writeFloat, writeInt, writeString, writeUint } from './index.js'

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

describe('slabCopy and encoderSlabBytes: results in shared slabs', () => {
  it('keeps every result intact while later ones fill and replace slabs, whatever the size', () => {
    // Sizes on both sides of the on-heap limit (64), the slab limit (1 KiB), and enough results to
    // span many 8 KiB slabs; each result is checked after all of them were made.
    const sizes = [1, 63, 64, 65, 100, 500, 1023, 1024, 1025, 3000]
    const made: Array<{ got: Uint8Array; want: Uint8Array }> = []
    for (let i = 0; i < 400; i++) {
      const n = sizes[i % sizes.length] as number
      const want = Uint8Array.from({ length: n }, (_, k) => (i * 31 + k) & 0xff)
      const src = want.slice()
      const e = takeEncoder()
      encoding.writeUint8Array(e, src)
      const got = i % 2 === 0 ? slabCopy(src) : encoderSlabBytes(e)
      releaseEncoder(e)
      src.fill(0xaa) // the source changes afterwards: a copy must not
      made.push({ got, want })
    }
    for (const { got, want } of made) expect(got).toEqual(want)
  })

  it('copies only the first n bytes when n is given, and results never overlap', () => {
    const src = Uint8Array.from({ length: 300 }, (_, k) => k & 0xff)
    const a = slabCopy(src, 100)
    const b = slabCopy(src, 200)
    expect(Array.from(a)).toEqual(Array.from(src.subarray(0, 100)))
    b.fill(7)
    expect(Array.from(a)).toEqual(Array.from(src.subarray(0, 100)))
    // Plain Uint8Arrays: slice() copies (a Buffer's would be a view into the slab).
    expect(Object.getPrototypeOf(a)).toBe(Uint8Array.prototype)
    // Results that may be kept long are arrays of their own, not slab views.
    const kept = encodeWith((e) => encoding.writeUint8Array(e, src.subarray(0, 100)))
    expect(kept.byteOffset).toBe(0)
    expect(kept.buffer.byteLength).toBe(100)
    const s = a.slice(0, 10)
    s.fill(9)
    expect(a[0]).toBe(0)
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

  it('writes the same bytes as lib0 writeVarString, at every length around the fast-path limit and buffer end', () => {
    const strings = ['', 'a', '\u007f', 'é', 'eu/i1', 'x'.repeat(63), 'x'.repeat(64), 'x'.repeat(65), `${'x'.repeat(63)}é`, '\u{1F600}']
    for (const s of strings) {
      for (const pad of [0, 90, 99, 100, 130]) {
        const ours = encodeWith((e) => {
          for (let i = 0; i < pad; i++) writeUint(e, 1)
          writeString(e, s)
        })
        const lib = encoding.encode((e) => {
          for (let i = 0; i < pad; i++) encoding.writeVarUint(e, 1)
          encoding.writeVarString(e, s)
        })
        expect(ours).toEqual(lib)
      }
    }
  })

  it('decodes repeated and colliding short strings to the right values (the intern table never mixes them up)', () => {
    // Many distinct short ASCII strings of equal length, decoded twice in different orders: far
    // more than the table's slots, so slots are shared and overwritten.
    const strings = Array.from({ length: 20_000 }, (_, i) => `w${i.toString(36).padStart(6, '0')}`)
    const bytes = encodeWith((e) => {
      for (const s of strings) writeString(e, s)
      for (let i = strings.length - 1; i >= 0; i--) writeString(e, strings[i] as string)
    })
    const read = decodeWith('test', bytes, (d) => Array.from({ length: 2 * strings.length }, () => readString(d)))
    expect(read).toEqual([...strings, ...[...strings].reverse()])
  })

  it('rejects invalid UTF-8 with DecodeError, short and long', () => {
    for (const body of [[0x61, 0xff], [...new Array<number>(100).fill(0x61), 0xc3]]) {
      const bytes = encodeWith((e) => writeBytes(e, Uint8Array.from(body)))
      expect(() => decodeWith('test', bytes, (d) => readString(d))).toThrow(DecodeError)
    }
  })
})

describe('strings that must arrive as written', () => {
  const roundTrip = (s: string): string => decodeWith('s', encodeWith((e) => writeString(e, s)), (d) => readString(d))
  it('keeps a leading U+FEFF (a decoder with BOM sniffing dropped it: "\\uFEFForder" arrived as "order")', () => {
    for (const s of ['\uFEFForder-42', '\uFEFF$meta', '\uFEFF', 'a\uFEFF', '\uFEFF'.repeat(80)]) expect(roundTrip(s)).toBe(s)
  })
  it('refuses a lone surrogate, which has no UTF-8 form and would arrive as U+FFFD', () => {
    for (const s of ['a\uD800', '\uDC00b', 'x'.repeat(70) + '\uD800']) {
      expect(isWellFormed(s)).toBe(false)
      expect(() => encodeWith((e) => writeString(e, s))).toThrow(/not well-formed UTF-16/)
    }
    for (const s of ['😀', 'é', 'a\uD83D\uDE00b']) {
      expect(isWellFormed(s)).toBe(true)
      expect(roundTrip(s)).toBe(s)
    }
  })
})

describe('varints: one number, one byte string', () => {
  it('refuses an overlong varint (a zero last group), which decoded to the same number as the short form', () => {
    const read = (bytes: number[], f: typeof readUint | typeof readInt) => decodeWith('n', Uint8Array.from(bytes), (d) => f(d))
    for (const overlong of [[0x80, 0x00], [0x81, 0x00], [0x81, 0x80, 0x00], [0xff, 0xff, 0x80, 0x00]]) expect(() => read(overlong, readUint)).toThrow(DecodeError)
    for (const overlong of [[0x80, 0x00], [0xc1, 0x00], [0x81, 0x80, 0x00]]) expect(() => read(overlong, readInt)).toThrow(DecodeError)
    // The canonical forms still decode, including a zero in a group before the last.
    for (const n of [0, 1, 127, 128, 16_384, 2 ** 48, Number.MAX_SAFE_INTEGER]) expect(read([...encodeWith((e) => writeUint(e, n))], readUint)).toBe(n)
    for (const n of [0, -1, 63, -64, 64, 8192, -(2 ** 40)]) expect(read([...encodeWith((e) => writeInt(e, n))], readInt)).toBe(n)
  })

  it('refuses an envelope whose sequence number is written overlong (it decoded as the same envelope as the canonical bytes)', () => {
    const env = { docId: 'd', typeName: 't', region: 'eu', writer: 'eu/1', seq: 5, time: { wall: 1, logical: 0, node: 'n' }, deps: new Uint8Array(0), payload: new Uint8Array(0) }
    const bytes = encodeEnvelope(env)
    const at = 4 + 2 + 2 + 3 + 5 // magic, version, flags; then docId, typeName, region, writer with their lengths
    expect(bytes[at]).toBe(5)
    const overlong = Uint8Array.from([...bytes.subarray(0, at), 0x85, 0x00, ...bytes.subarray(at + 1)])
    expect(decodeEnvelope(bytes).seq).toBe(5)
    expect(() => decodeEnvelope(overlong)).toThrow(DecodeError)
  })

  it('writeUint refuses a number it would write as another (-1 went out as 127, 1.5 as 1, NaN as 0; Infinity looped forever)', () => {
    for (const n of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, -0.5]) {
      expect(() => encodeWith((e) => writeUint(e, n)), String(n)).toThrow(ConfigError)
    }
    expect(() => VersionVector.from([['a', Number.POSITIVE_INFINITY]]).encode()).toThrow(ConfigError)
    // The encoder is left usable.
    expect(Array.from(encodeWith((e) => writeUint(e, 300)))).toEqual([0xac, 0x02])
  })
})

describe('decodeWith and readJson on hostile input', () => {
  it('turns any throw into a DecodeError, even a value with no string form (a TypeError escaped)', () => {
    expect(() =>
      decodeWith('x', new Uint8Array(0), () => {
        throw Object.create(null) as unknown
      }),
    ).toThrow(DecodeError)
  })

  it('refuses NaN and infinite floats, which are no JSON value (NaN decoded and took the place of null in canonicalJson)', () => {
    for (const x of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      const bytes = encodeWith((e) => {
        writeByte(e, 4) // float tag
        writeFloat(e, x)
      })
      expect(() => decodeWith('json', bytes, (d) => readJson(d)), String(x)).toThrow(DecodeError)
    }
    const ok = encodeWith((e) => {
      writeByte(e, 4)
      writeFloat(e, 0.5)
    })
    expect(canonicalJson(decodeWith('json', ok, (d) => readJson(d)))).toBe('0.5')
  })
})

describe('slabCopy with a count it cannot mean', () => {
  it('refuses a count that is not a whole number of bytes within src (NaN made every later copy share one offset; past the end returned another copy\'s bytes)', () => {
    const src = Uint8Array.from([1, 2, 3, 4])
    for (const n of [Number.NaN, -1, 2.5, 5, 2000]) expect(() => slabCopy(src, n), String(n)).toThrow(ConfigError)
    const a = slabCopy(Uint8Array.from([5, 5]))
    const b = slabCopy(Uint8Array.from([6, 6]))
    expect(Array.from(a)).toEqual([5, 5])
    expect(Array.from(b)).toEqual([6, 6])
    expect(Array.from(slabCopy(src, 0))).toEqual([])
  })
})
