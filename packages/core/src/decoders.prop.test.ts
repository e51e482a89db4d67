import { describe, expect, test } from 'vitest'
import { DotSet, VersionVector } from './dots.js'
import { decodeHlc, encodeHlc } from './hlc.js'
import { decodeEnvelope, encodeEnvelope } from './envelope.js'
import { DecodeError } from './errors.js'
import { seededRandom, type Random } from './random.js'

const CASES = 10_000

function corrupt(valid: Uint8Array, rnd: Random): Uint8Array {
  const mode = Math.floor(rnd() * 3)
  if (mode === 0) {
    const b = new Uint8Array(Math.floor(rnd() * 40))
    for (let i = 0; i < b.length; i++) b[i] = Math.floor(rnd() * 256)
    return b
  }
  if (mode === 1) return valid.slice(0, Math.floor(rnd() * valid.length))
  const b = valid.slice()
  for (let i = 0, n = 1 + Math.floor(rnd() * 3); i < n && b.length > 0; i++) {
    const at = Math.floor(rnd() * b.length)
    b[at] = (b[at] as number) ^ (1 << Math.floor(rnd() * 8))
  }
  return b
}

/** Each corrupted input decodes to something that re-encodes and decodes equal, or throws DecodeError. */
function fuzz<T>(name: string, seed: number, samples: Uint8Array[], decode: (b: Uint8Array) => T, encode: (v: T) => Uint8Array): void {
  const rnd = seededRandom(seed)
  let refused = 0
  for (let i = 0; i < CASES; i++) {
    const input = corrupt(samples[Math.floor(rnd() * samples.length)] as Uint8Array, rnd)
    let v: T
    try {
      v = decode(input)
    } catch (e) {
      if (!(e instanceof DecodeError)) throw new Error(`${name} seed ${seed} case ${i}: threw ${String(e)}`, { cause: e })
      refused++
      continue
    }
    expect(decode(encode(v)), `${name} seed ${seed} case ${i}`).toEqual(v)
  }
  expect(refused).toBeGreaterThan(CASES / 3)
}

describe('core decoders on corrupted bytes', () => {
  test('DotSet.decode', () => {
    const a = new DotSet().addRange('eu-1', 1, 40).addRange('eu-1', 50, 60).addRange('us-2', 3, 3).addRange('ap', 1, 100_000)
    const b = DotSet.of([{ replica: 'x', counter: 7 }])
    fuzz('dot set', 11, [a.encode(), b.encode(), new DotSet().encode()], DotSet.decode, (s) => s.encode())
  })

  test('VersionVector.decode', () => {
    const a = VersionVector.from([['eu-1', 40], ['us-2', 3], ['ap', 1_000_000]])
    fuzz('version vector', 12, [a.encode(), new VersionVector().encode()], VersionVector.decode, (v) => v.encode())
  })

  test('decodeHlc', () => {
    const s = [encodeHlc({ wall: 1_700_000_000_000, logical: 3, node: 'eu-1' }), encodeHlc({ wall: 0, logical: 0, node: 'n' })]
    fuzz('hlc', 13, s, decodeHlc, encodeHlc)
  })

  test('decodeEnvelope', () => {
    const env = {
      docId: 'cart:42',
      typeName: 'or-set',
      region: 'eu',
      writer: 'eu-1',
      seq: 17,
      time: { wall: 1_700_000_000_000, logical: 1, node: 'eu-1' },
      deps: new Uint8Array([1, 2, 3]),
      payload: new Uint8Array([9, 8, 7, 6, 5]),
    }
    const s = [encodeEnvelope(env), encodeEnvelope(env, new Uint8Array(32).fill(7))]
    fuzz('envelope', 14, s, (b) => decodeEnvelope(b), (e) => encodeEnvelope(e))
  })
})
