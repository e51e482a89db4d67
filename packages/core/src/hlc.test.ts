import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { Hlc, compareHlc, ClockDriftError, ConfigError, DecodeError, decodeHlc, encodeHlc, type HlcTimestamp } from './index.js'

describe('Hlc', () => {
  it('is strictly monotonic when the wall clock jumps backwards', () => {
    let t = 10_000
    const clock = new Hlc('a', { now: () => t })
    const a = clock.now()
    t = 5_000 // wall clock stepped back (NTP correction)
    const b = clock.now()
    const c = clock.now()
    expect(compareHlc(a, b)).toBeLessThan(0)
    expect(compareHlc(b, c)).toBeLessThan(0)
    expect(b.wall).toBe(10_000)
  })

  it('stays monotonic over any sequence of wall readings and receives', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.record({ kind: fc.constant('tick' as const), wall: fc.integer({ min: 0, max: 1e6 }) }), fc.record({ kind: fc.constant('recv' as const), wall: fc.integer({ min: 0, max: 1e6 }), logical: fc.integer({ min: 0, max: 10 }) })), { maxLength: 50 }),
        (steps) => {
          let t = 0
          const clock = new Hlc('me', { now: () => t, maxDriftMs: 2e6 })
          let last: HlcTimestamp | undefined
          for (const s of steps) {
            let ts: HlcTimestamp
            if (s.kind === 'tick') {
              t = s.wall
              ts = clock.now()
            } else {
              const remote = { wall: s.wall, logical: s.logical, node: 'other' }
              ts = clock.receive(remote)
              expect(compareHlc(ts, remote)).toBeGreaterThan(0)
            }
            if (last !== undefined) expect(compareHlc(last, ts)).toBeLessThan(0)
            last = ts
          }
        },
      ),
    )
  })

  it('refuses a remote timestamp beyond the drift bound and is left unchanged', () => {
    const clock = new Hlc('a', { now: () => 1_000, maxDriftMs: 500 })
    clock.now()
    const before = clock.peek()
    expect(() => clock.receive({ wall: 1_501, logical: 0, node: 'b' })).toThrow(ClockDriftError)
    expect(clock.peek()).toEqual(before)
    expect(clock.observe({ wall: 9_999_999, logical: 0, node: 'b' })).toBe(false)
    expect(clock.peek()).toEqual(before)
    // within the bound it is taken in
    const t = clock.receive({ wall: 1_500, logical: 7, node: 'b' })
    expect(t).toEqual({ wall: 1_500, logical: 8, node: 'a' })
  })

  it('breaks ties by node id so timestamps are totally ordered', () => {
    const a = { wall: 1, logical: 1, node: 'a' }
    const b = { wall: 1, logical: 1, node: 'b' }
    expect(compareHlc(a, b)).toBeLessThan(0)
    expect(compareHlc(b, a)).toBeGreaterThan(0)
    expect(compareHlc(a, { ...a })).toBe(0)
  })

  it('rejects bad options', () => {
    expect(() => new Hlc('')).toThrow(ConfigError)
    expect(() => new Hlc('a', { maxDriftMs: -1 })).toThrow(ConfigError)
    expect(() => new Hlc('a', { maxDriftMs: Number.NaN })).toThrow(ConfigError)
    expect(() => new Hlc('a', { maxDriftMs: Number.POSITIVE_INFINITY })).toThrow(/finite/)
    expect(() => new Hlc('a\uD800')).toThrow(/well-formed/)
    expect(() => new Hlc('a', { maxDrift: 5 } as never)).toThrow(/Hlc: unknown option "maxDrift" \(did you mean "maxDriftMs"\?\)/)
    expect(() => new Hlc('a', { now: 5 as never })).toThrow(/now must be a function/)
  })

  it('witness moves the clock as receive does, and throws on drift leaving it unchanged', () => {
    let now = 1_000
    const a = new Hlc('a', { now: () => now, maxDriftMs: 100 })
    const b = new Hlc('b', { now: () => now, maxDriftMs: 100 })
    const remote: HlcTimestamp = { wall: 1_050, logical: 7, node: 'r' }
    a.witness(remote)
    expect(a.peek()).toEqual({ ...b.receive(remote), node: 'a' })
    now = 1_060
    expect(() => a.witness({ wall: 5_000, logical: 0, node: 'r' })).toThrow(ClockDriftError)
    expect(a.peek()).toEqual({ wall: 1_050, logical: 8, node: 'a' })
  })

  it('round-trips through its encoding', () => {
    fc.assert(
      fc.property(fc.record({ wall: fc.integer({ min: 0, max: 2 ** 48 }), logical: fc.integer({ min: 0, max: 2 ** 32 - 1 }), node: fc.string({ minLength: 1, maxLength: 40 }) }), (t) => {
        expect(decodeHlc(encodeHlc(t))).toEqual(t)
      }),
    )
  })
})

describe('Hlc at the top of its range', () => {
  it('refuses a remote timestamp that would leave no room for a later one, instead of making undecodable ones', () => {
    const remote = decodeHlc(encodeHlc({ wall: Number.MAX_SAFE_INTEGER, logical: 0xffffffff, node: 'far' }))
    const h = new Hlc('me', { now: () => 1_700_000_000_000, maxDriftMs: Number.MAX_SAFE_INTEGER })
    expect(() => h.receive(remote)).toThrow(ClockDriftError)
    const t = h.now()
    expect(decodeHlc(encodeHlc(t))).toEqual(t)
  })
})

describe('Hlc fed values it cannot keep', () => {
  it('refuses a malformed remote timestamp and is left unchanged (a NaN wall stuck the clock at NaN for good, written as 0; a fractional one was written truncated)', () => {
    const h = new Hlc('me', { now: () => 1_000 })
    h.now()
    const before = h.peek()
    for (const remote of [
      { wall: Number.NaN, logical: 0, node: 'x' },
      { wall: 1_000, logical: Number.NaN, node: 'x' },
      { wall: 1_000.5, logical: 0, node: 'x' },
      { wall: 1_000, logical: 1.5, node: 'x' },
      { wall: 1_000, logical: 0, node: 5 as unknown as string },
    ]) {
      expect(() => h.witness(remote), JSON.stringify(remote)).toThrow(DecodeError)
      expect(() => h.receive(remote)).toThrow(DecodeError)
      expect(h.observe(remote)).toBe(false)
      expect(h.peek()).toEqual(before)
    }
    const t = h.now()
    expect(decodeHlc(encodeHlc(t))).toEqual(t)
  })

  it('refuses a physical reading that is not a time in ms and is left unchanged (Infinity made encodeHlc loop forever; NaN stuck witness at NaN)', () => {
    let t = 1_000
    const h = new Hlc('me', { now: () => t })
    h.now()
    const before = h.peek()
    for (const bad of [Number.POSITIVE_INFINITY, Number.NaN, 2 ** 60, -1]) {
      t = bad
      expect(() => h.now(), String(bad)).toThrow(ConfigError)
      expect(() => h.witness({ wall: 1_000, logical: 5, node: 'x' }), String(bad)).toThrow(ConfigError)
      expect(h.peek()).toEqual(before)
    }
    t = 2_000
    expect(h.now()).toEqual({ wall: 2_000, logical: 0, node: 'me' })
  })

  it('refuses a node id longer than a timestamp carries (1024 UTF-8 bytes): every timestamp it made was undecodable', () => {
    expect(() => new Hlc('é'.repeat(513))).toThrow(ConfigError)
    const h = new Hlc('é'.repeat(512))
    const t = h.now()
    expect(decodeHlc(encodeHlc(t))).toEqual(t)
  })
})
