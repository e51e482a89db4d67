import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { ConfigError, DotSet, VersionVector } from './index.js'

const dotArb = fc.record({ replica: fc.constantFrom('a', 'b', 'c'), counter: fc.integer({ min: 1, max: 60 }) })
const key = (d: { replica: string; counter: number }) => `${d.replica}:${d.counter}`

describe('DotSet', () => {
  it('behaves as a set of dots (model-checked against a Set)', () => {
    fc.assert(
      fc.property(fc.array(dotArb, { maxLength: 80 }), fc.array(dotArb, { maxLength: 80 }), fc.array(dotArb, { maxLength: 20 }), (xs, ys, probes) => {
        const a = DotSet.of(xs)
        const b = DotSet.of(ys)
        const ma = new Set(xs.map(key))
        const mb = new Set(ys.map(key))
        for (const p of [...xs, ...ys, ...probes]) {
          expect(a.has(p)).toBe(ma.has(key(p)))
          expect(a.clone().union(b).has(p)).toBe(ma.has(key(p)) || mb.has(key(p)))
          expect(a.difference(b).has(p)).toBe(ma.has(key(p)) && !mb.has(key(p)))
        }
        expect(a.size()).toBe(ma.size)
        expect(a.clone().union(b).includes(a)).toBe(true)
        // includes against the model: every dot of b is in a
        expect(a.includes(b)).toBe([...mb].every((k) => ma.has(k)))
        expect(b.includes(a)).toBe([...ma].every((k) => mb.has(k)))
        expect(DotSet.decode(a.encode()).equals(a)).toBe(true)
        // canonical: same set, same bytes, whatever the insertion order
        expect(DotSet.of([...xs].reverse()).encode()).toEqual(a.encode())
      }),
    )
  })

  it('addRange and addRanges in any order keep the ranges sorted, disjoint and non-adjacent (model-checked; they were rebuilt per range, quadratic)', () => {
    const rangeArb = fc.tuple(fc.integer({ min: 1, max: 80 }), fc.integer({ min: 0, max: 6 })).map(([s, n]) => [s, s + n] as const)
    fc.assert(
      fc.property(fc.array(rangeArb, { maxLength: 30 }), fc.array(rangeArb, { maxLength: 30 }), (xs, ys) => {
        const model = new Set<number>()
        const a = new DotSet()
        for (const [s, e] of xs) {
          a.addRange('r', s, e)
          for (let c = s; c <= e; c++) model.add(c)
        }
        // ys as a set's canonical ranges, merged in one call.
        const b = new DotSet()
        for (const [s, e] of ys) {
          b.addRange('r', s, e)
          for (let c = s; c <= e; c++) model.add(c)
        }
        const flat = b.flatRanges('r')
        const merged = a.clone().addRanges('r', flat, 0, flat.length)
        const unioned = a.clone().union(b)
        const expected = DotSet.of([...model].map((counter) => ({ replica: 'r', counter })))
        expect(merged.flatRanges('r')).toEqual(expected.flatRanges('r'))
        expect(unioned.flatRanges('r')).toEqual(expected.flatRanges('r'))
        const r = merged.flatRanges('r')
        for (let i = 2; i < r.length; i += 2) expect(r[i] as number).toBeGreaterThan((r[i - 1] as number) + 1)
      }),
    )
  })

  it('keeps contiguous histories as one range', () => {
    const s = new DotSet()
    for (let i = 1; i <= 1_000_000; i++) s.add({ replica: 'r', counter: i })
    expect(s.ranges('r')).toEqual([[1, 1_000_000]])
    expect(s.encode().length).toBeLessThan(12)
    expect(s.contiguous('r')).toBe(1_000_000)
  })
})

describe('DotSet range reads', () => {
  it('coversRange is true exactly when every counter of the range is present', () => {
    fc.assert(
      fc.property(fc.array(dotArb, { maxLength: 40 }), fc.constantFrom('a', 'b', 'c', 'd'), fc.integer({ min: 1, max: 60 }), fc.integer({ min: 0, max: 10 }), (dots, replica, start, len) => {
        const s = DotSet.of(dots)
        let all = true
        for (let c = start; c <= start + len; c++) all &&= s.hasCounter(replica, c)
        expect(s.coversRange(replica, start, start + len)).toBe(all)
      }),
    )
  })

  it('flatRanges returns the ranges as [start, end, ...]', () => {
    const s = new DotSet().addRange('a', 1, 3).addRange('a', 7, 7).addRange('b', 2, 5)
    expect(s.flatRanges('a')).toEqual([1, 3, 7, 7])
    expect(s.flatRanges('b')).toEqual([2, 5])
    expect(s.flatRanges('zz')).toEqual([])
  })
})

describe('VersionVector', () => {
  it('compares causally', () => {
    const a = VersionVector.from([['x', 2], ['y', 1]])
    const b = VersionVector.from([['x', 2], ['y', 3]])
    const c = VersionVector.from([['x', 3]])
    expect(a.compare(b)).toBe('before')
    expect(b.compare(a)).toBe('after')
    expect(b.compare(c)).toBe('concurrent')
    expect(a.compare(a.clone())).toBe('equal')
    expect(b.clone().merge(c).toJSON()).toEqual({ x: 3, y: 3 })
    expect(b.meet(c).toJSON()).toEqual({ x: 2 })
    expect(VersionVector.decode(b.encode()).toJSON()).toEqual(b.toJSON())
  })
})

describe('DotSet on hostile sizes and careless counters', () => {
  it('difference is linear in the ranges (it rescanned the other set from its start for every range: 200k x 200k ranges took ~25 s)', () => {
    const a = new DotSet()
    const b = new DotSet()
    const n = 200_000
    for (let i = 0; i < n; i++) {
      a.addRange('r', 4 * i + 1, 4 * i + 1)
      b.addRange('r', 4 * i + 3, 4 * i + 3)
    }
    b.addRange('r', 5, 9) // one range of b covering parts of three of a's ranges (5 and 9)
    const started = Date.now()
    const d = a.difference(b)
    expect(Date.now() - started).toBeLessThan(2_000)
    expect(d.size()).toBe(n - 2)
    expect(d.hasCounter('r', 1)).toBe(true)
    expect(d.hasCounter('r', 5)).toBe(false)
    expect(d.hasCounter('r', 9)).toBe(false)
    expect(d.hasCounter('r', 13)).toBe(true)
  })

  it('difference matches the model when ranges of the other set span several of this one', () => {
    const rangeArb = fc.tuple(fc.integer({ min: 1, max: 80 }), fc.integer({ min: 0, max: 12 })).map(([s, n]) => [s, s + n] as const)
    fc.assert(
      fc.property(fc.array(rangeArb, { maxLength: 20 }), fc.array(rangeArb, { maxLength: 20 }), (xs, ys) => {
        const a = new DotSet()
        const b = new DotSet()
        for (const [s, e] of xs) a.addRange('r', s, e)
        for (const [s, e] of ys) b.addRange('r', s, e)
        const d = a.difference(b)
        for (let c = 1; c <= 100; c++) expect(d.hasCounter('r', c)).toBe(a.hasCounter('r', c) && !b.hasCounter('r', c))
      }),
    )
  })

  it('addRange refuses counters a set cannot encode (0, fractional, NaN, past 2^48): its own decode refused the bytes, Infinity looped forever', () => {
    for (const [s, e] of [[0, 3], [1.5, 3], [1, 2.5], [Number.NaN, 3], [1, Number.NaN], [1, 2 ** 48 + 1], [1, Number.POSITIVE_INFINITY], [-2, -1]] as const) {
      const set = new DotSet().addRange('r', 10, 20)
      expect(() => set.addRange('r', s, e), `${s}..${e}`).toThrow(ConfigError)
      expect(set.flatRanges('r')).toEqual([10, 20])
    }
    expect(() => DotSet.of([{ replica: 'r', counter: 0 }])).toThrow(ConfigError)
    const edge = new DotSet().addRange('r', 1, 2 ** 48)
    expect(DotSet.decode(edge.encode()).equals(edge)).toBe(true)
    // end < start is an empty range, as before.
    expect(new DotSet().addRange('r', 5, 4).isEmpty()).toBe(true)
  })
})
