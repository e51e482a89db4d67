import { createHmac } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { ConfigError, DecodeError, SignatureError, decodeEnvelope, encodeEnvelope, type Envelope } from './index.js'

const env: Envelope = {
  docId: 'cart:42',
  typeName: 'or-set',
  region: 'eu',
  writer: 'eu/1',
  seq: 17,
  time: { wall: 1_700_000_000_000, logical: 3, node: 'eu/1' },
  deps: new Uint8Array([1, 2, 3]),
  payload: new Uint8Array([9, 8, 7, 6, 5]),
}
const euKey = new Uint8Array(32).fill(7)
const usKey = new Uint8Array(32).fill(9)
const keys = new Map([
  ['eu', euKey],
  ['us', usKey],
])

describe('encodeEnvelope refuses what no receiver would read as written', () => {
  it('refuses fields that were signed as other values (seq -1 as 127, 1.5 as 1, wall NaN as 0) or that every receiver refuses (seq 0, past 2^48, empty or overlong ids)', () => {
    const bad: Array<Partial<Envelope>> = [
      { seq: -1 },
      { seq: 1.5 },
      { seq: 0 },
      { seq: 2 ** 48 + 1 },
      { seq: Number.NaN },
      { time: { ...env.time, wall: Number.NaN } },
      { time: { ...env.time, wall: -5 } },
      { time: { ...env.time, wall: 1.5 } },
      { time: { ...env.time, logical: 2 ** 32 } },
      { time: { ...env.time, node: 'n'.repeat(1025) } },
      { docId: '' },
      { docId: 'é'.repeat(513) },
      { typeName: '' },
      { typeName: 't'.repeat(129) },
      { region: '' },
      { region: 'r'.repeat(257) },
      { writer: '' },
      { writer: 'w'.repeat(257) },
      { deps: new Uint8Array(1024 * 1024 + 1) },
      { payload: 'not bytes' as unknown as Uint8Array },
    ]
    for (const b of bad) {
      expect(() => encodeEnvelope({ ...env, ...b }, euKey), JSON.stringify(b).slice(0, 80)).toThrow(ConfigError)
      expect(() => encodeEnvelope({ ...env, ...b }), JSON.stringify(b).slice(0, 80)).toThrow(ConfigError)
    }
    // The limits themselves are fine.
    const edge = { ...env, seq: 2 ** 48, docId: 'é'.repeat(512), typeName: 't'.repeat(128), region: 'r'.repeat(256), writer: 'w'.repeat(256), time: { wall: 0, logical: 2 ** 32 - 1, node: 'n'.repeat(1024) } }
    const back = decodeEnvelope(encodeEnvelope(edge, usKey), new Map([['r'.repeat(256), usKey]]))
    expect({ ...back, deps: [...back.deps], payload: [...back.payload] }).toEqual({ ...edge, deps: [...edge.deps], payload: [...edge.payload] })
  })
})

describe('decodeEnvelope on tampered signed bytes', () => {
  const signed = encodeEnvelope(env, euKey).slice()

  it('refuses every truncation, every single-byte change and any byte added, with a typed error and nothing accepted', () => {
    expect(decodeEnvelope(signed, keys).seq).toBe(17)
    const refused = (b: Uint8Array, what: string): void => {
      let err: unknown
      try {
        decodeEnvelope(b, keys)
      } catch (e) {
        err = e
      }
      expect(err instanceof DecodeError || err instanceof SignatureError, what).toBe(true)
    }
    for (let n = 0; n < signed.length; n++) refused(signed.subarray(0, n), `cut at ${n}`)
    for (let i = 0; i < signed.length; i++) {
      for (const x of [0x01, 0x80, 0xff]) {
        const b = signed.slice()
        b[i] = (b[i] as number) ^ x
        refused(b, `byte ${i} ^ ${x}`)
      }
    }
    for (const tail of [[0], [1, 2, 3], Array.from({ length: 32 }, () => 0)]) refused(Uint8Array.from([...signed, ...tail]), `tail ${tail.length}`)
    // A byte inserted before the MAC (the body one longer, the MAC window shifted).
    refused(Uint8Array.from([...signed.subarray(0, signed.length - 32), 0, ...signed.subarray(signed.length - 32)]), 'inserted')
  })

  it("refuses one region's key signing for another, and an unsigned copy of a signed envelope", () => {
    expect(() => decodeEnvelope(encodeEnvelope(env, usKey), keys)).toThrow(SignatureError)
    expect(() => decodeEnvelope(encodeEnvelope({ ...env, region: 'us' }, euKey), keys)).toThrow(SignatureError)
    const unsigned = signed.slice(0, signed.length - 32)
    unsigned[3] = 0
    expect(() => decodeEnvelope(unsigned, keys)).toThrow(SignatureError)
    expect(() => decodeEnvelope(encodeEnvelope({ ...env, region: 'ap' }, euKey), keys)).toThrow(/no key for region ap/)
  })

  it('re-encodes a decoded envelope to the same bytes (canonical: one envelope, one byte string)', () => {
    const back = decodeEnvelope(signed, keys)
    expect(encodeEnvelope(back, euKey)).toEqual(signed)
    expect(encodeEnvelope(decodeEnvelope(encodeEnvelope(env)))).toEqual(encodeEnvelope(env))
  })
})

describe('keys too short to keep anyone out', () => {
  it('refuses a key shorter than 16 bytes on both ends (an empty key signed and verified: anyone can compute that MAC and sign for the region)', () => {
    const empty = new Uint8Array(0)
    expect(() => encodeEnvelope(env, empty)).toThrow(ConfigError)
    expect(() => encodeEnvelope(env, new Uint8Array(15))).toThrow(ConfigError)
    // A forger with no key at all: the MAC under the empty key is public.
    const body = encodeEnvelope(env).slice()
    body[3] = 1
    const forged = Uint8Array.from([...body, ...createHmac('sha256', empty).update(body).digest()])
    expect(() => decodeEnvelope(forged, new Map([['eu', empty]]))).toThrow(SignatureError)
    expect(decodeEnvelope(encodeEnvelope(env, new Uint8Array(16).fill(1)), new Map([['eu', new Uint8Array(16).fill(1)]])).seq).toBe(17)
  })
})

describe('decodeEnvelope and the timestamp it shares between envelopes', () => {
  it('is frozen: a receiver cannot change the time of other envelopes decoded with the same time bytes (review finding: one object, changed in place, changed them all)', () => {
    const a = decodeEnvelope(encodeEnvelope(env))
    expect(Object.isFrozen(a.time)).toBe(true)
    expect(() => {
      ;(a.time as { wall: number }).wall = 5
    }).toThrow(TypeError)
    const b = decodeEnvelope(encodeEnvelope({ ...env, seq: env.seq + 1 }))
    expect(b.time.wall).toBe(env.time.wall)
  })
})
