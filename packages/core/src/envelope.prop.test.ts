/**
 * decodeEnvelope keeps the bytes of the last envelope's type/region/writer fields and time and
 * reuses their decoded values when the next envelope holds the same bytes there. Whatever the
 * sequence — the same batch repeated, fields of equal length that differ in one byte, fields that
 * shift by a byte, corrupted envelopes in between — every envelope must decode exactly as it would
 * alone.
 */
import { describe, expect, test } from 'vitest'
import fc from 'fast-check'
import { decodeEnvelope, encodeEnvelope, type Envelope } from './envelope.js'
import { DecodeError } from './errors.js'

// Small pools, so that consecutive envelopes often share fields, and near misses: same length,
// one byte apart ('eu/a' / 'eu/b'), a prefix of another ('pn' / 'pn-counter').
const types = ['pn-counter', 'pn-counteR', 'pn', 'or-set']
const regions = ['eu', 'us', 'e']
const instances = ['a', 'b', 'ab']
const envelope: fc.Arbitrary<Envelope> = fc
  .record({
    docId: fc.constantFrom('d0', 'd1', 'd10', 'x'),
    typeName: fc.constantFrom(...types),
    region: fc.constantFrom(...regions),
    instance: fc.constantFrom(...instances),
    seq: fc.integer({ min: 1, max: 300 }),
    wall: fc.constantFrom(1_700_000_000_000, 1_700_000_000_001, 127, 128),
    logical: fc.nat(2),
    deps: fc.uint8Array({ maxLength: 3 }),
    payload: fc.uint8Array({ maxLength: 5 }),
  })
  .map(({ docId, typeName, region, instance, seq, wall, logical, deps, payload }) => ({
    docId,
    typeName,
    region,
    writer: `${region}/${instance}`,
    seq,
    time: { wall, logical, node: `${region}/${instance}` },
    deps,
    payload,
  }))

/** An envelope's bytes, or (flip) the same with one byte changed. */
const item = fc.tuple(envelope, fc.option(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { freq: 4 }))

const plain = (e: Envelope): unknown => ({ ...e, time: { ...e.time }, deps: [...e.deps], payload: [...e.payload] })

describe('decodeEnvelope in sequence', () => {
  test('decodes each envelope of any sequence as it decodes alone', () => {
    fc.assert(
      fc.property(fc.array(item, { minLength: 1, maxLength: 40 }), (items) => {
        const inputs = items.map(([env, flip]) => {
          const bytes = encodeEnvelope(env)
          if (flip !== null) bytes[flip[0] % bytes.length] = (bytes[flip[0] % bytes.length] as number) ^ flip[1]
          return bytes
        })
        // Alone: a fresh decode of each, with a different envelope decoded just before it.
        const alone = inputs.map((bytes) => {
          decodeEnvelope(encodeEnvelope({ docId: 'z', typeName: 'zz', region: 'zzz', writer: 'zzz/z', seq: 1, time: { wall: 9, logical: 9, node: 'q' }, deps: new Uint8Array(0), payload: new Uint8Array(0) }))
          try {
            return plain(decodeEnvelope(bytes))
          } catch (e) {
            expect(e).toBeInstanceOf(DecodeError)
            return 'refused'
          }
        })
        // In sequence: each right after the previous one.
        inputs.forEach((bytes, i) => {
          let got: unknown
          try {
            got = plain(decodeEnvelope(bytes))
          } catch (e) {
            expect(e).toBeInstanceOf(DecodeError)
            got = 'refused'
          }
          expect(got).toEqual(alone[i])
        })
        // And the unflipped ones decode to what was encoded.
        for (const [env, flip] of items) if (flip === null) expect(plain(decodeEnvelope(encodeEnvelope(env)))).toEqual(plain(env))
      }),
    )
  })
})
