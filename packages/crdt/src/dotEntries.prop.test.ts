/**
 * DotEntries (a fun store's entries: arrays while small, a Map past that) must behave as the Map
 * it replaced: the same lookups, sizes and iteration order after any sequence of sets and deletes,
 * and the same visits by a forEach that deletes as it goes.
 */
import { describe, expect, test } from 'vitest'
import fc from 'fast-check'
import { DotEntries, type Entry } from './store.js'

const entry = (n: number): Entry => ({ dot: { replica: `r${n % 3}`, counter: n }, value: n })
/** set (0) / delete (1) of key k{n}, or a forEach (2) deleting every visited key whose number is ≡ n (mod 3). */
const op = fc.tuple(fc.nat(2), fc.nat(15))

describe('DotEntries', () => {
  test('behaves as a Map under any sets, deletes and deleting forEach', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const d = new DotEntries()
        const m = new Map<string, Entry>()
        for (const [kind, n] of ops) {
          const k = `k${n}`
          if (kind === 0) {
            d.set(k, entry(n))
            m.set(k, entry(n))
          } else if (kind === 1) expect(d.delete(k)).toBe(m.delete(k))
          else {
            const seenD: string[] = []
            const seenM: string[] = []
            d.forEach((_, key) => {
              seenD.push(key)
              if (Number(key.slice(1)) % 3 === n % 3) d.delete(key)
            })
            m.forEach((_, key) => {
              seenM.push(key)
              if (Number(key.slice(1)) % 3 === n % 3) m.delete(key)
            })
            expect(seenD).toEqual(seenM)
          }
          expect(d.size).toBe(m.size)
          expect([...d.keys()]).toEqual([...m.keys()])
          expect([...d.values()]).toEqual([...m.values()])
          expect([...d]).toEqual([...m])
          for (let j = 0; j < 16; j++) {
            expect(d.has(`k${j}`)).toBe(m.has(`k${j}`))
            expect(d.get(`k${j}`)).toEqual(m.get(`k${j}`))
          }
        }
      }),
      { numRuns: 500 },
    )
  })
})
