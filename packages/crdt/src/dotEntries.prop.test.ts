/**
 * DotEntries (a fun store's entries: arrays while small, a Map past that) must behave as the Map
 * it replaced: the same lookups, sizes and iteration order after any sequence of writes and
 * deletes — by key or by dot, with keys given or made lazily from the dots — and the same visits
 * by a forEach that deletes or replaces as it goes.
 */
import { describe, expect, test } from 'vitest'
import fc from 'fast-check'
import { dotKey } from '@concord/core'
import { DotEntries, type Entry } from './store.js'

let tick = 0
/** A fresh entry (a new value each time) for dot n. */
const entry = (n: number): Entry => ({ dot: { replica: `r${n % 3}`, counter: n }, value: `${n}.${tick++}` })
const key = (n: number): string => dotKey({ replica: `r${n % 3}`, counter: n })
const numberOf = (e: Entry): number => e.dot.counter
/**
 * set(k, e) (0), delete(k) (1), a forEach deleting every visited entry whose number is ≡ n (mod 3) (2),
 * setEntry (3), deleteDot (4), removeIf of the numbers ≡ n (mod 3) (5), a forEach replacing every
 * visited entry whose number is ≡ n (mod 3) with a new one for the same dot (6).
 */
const op = fc.tuple(fc.nat(6), fc.nat(15))

describe('DotEntries', () => {
  test('behaves as a Map under any writes, deletes and visiting forEach', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const d = new DotEntries()
        const m = new Map<string, Entry>()
        for (const [kind, n] of ops) {
          const k = key(n)
          if (kind === 0 || kind === 3) {
            const e = entry(n)
            if (kind === 0) d.set(k, e)
            else d.setEntry(e)
            m.set(k, e)
          } else if (kind === 1) expect(d.delete(k)).toBe(m.delete(k))
          else if (kind === 4) expect(d.deleteDot({ replica: `r${n % 3}`, counter: n })).toBe(m.delete(k))
          else if (kind === 5) {
            let removed = 0
            for (const [mk, e] of m) if (numberOf(e) % 3 === n % 3 && m.delete(mk)) removed++
            expect(d.removeIf((e, r) => numberOf(e) % 3 === r, n % 3)).toBe(removed)
          } else {
            const seenD: string[] = []
            const seenM: string[] = []
            const visit = (target: { delete(k: string): unknown; set(k: string, e: Entry): unknown }, seen: string[]) => (e: Entry, mk: string) => {
              seen.push(mk)
              if (numberOf(e) % 3 !== n % 3) return
              if (kind === 2) target.delete(mk)
              else target.set(mk, { dot: { ...e.dot }, value: `${String(e.value)}'` })
            }
            d.forEach(visit(d, seenD))
            m.forEach(visit(m, seenM))
            expect(seenD).toEqual(seenM)
          }
          expect(d.size).toBe(m.size)
          expect([...d.keys()]).toEqual([...m.keys()])
          expect([...d.values()].map((e) => e.value)).toEqual([...m.values()].map((e) => e.value))
          expect([...d]).toEqual([...m])
          for (let j = 0; j < 16; j++) {
            expect(d.has(key(j))).toBe(m.has(key(j)))
            expect(d.get(key(j))).toEqual(m.get(key(j)))
          }
        }
      }),
      { numRuns: 500 },
    )
  })
})
