import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { compareStrings, sortInPlace, sortedStrings } from './sort.js'

describe('sortInPlace / sortedStrings', () => {
  it('orders strings exactly as the built-in default sort, short and long arrays', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'grapheme', maxLength: 6 }), { maxLength: 40 }), (xs) => {
        expect(sortedStrings(xs)).toEqual([...xs].sort())
        expect(sortedStrings(new Set(xs))).toEqual([...new Set(xs)].sort())
      }),
      { numRuns: 2000 },
    )
  })

  it('is stable with a comparator, like the built-in sort', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ k: fc.integer({ min: 0, max: 4 }), id: fc.nat() }), { maxLength: 40 }), (xs) => {
        const cmp = (a: { k: number }, b: { k: number }): number => a.k - b.k
        expect(sortInPlace(xs.slice(), cmp)).toEqual(xs.slice().sort(cmp))
      }),
      { numRuns: 2000 },
    )
    expect(compareStrings('a', 'b')).toBe(-1)
    expect(compareStrings('b', 'a')).toBe(1)
    expect(compareStrings('a', 'a')).toBe(0)
  })
})
