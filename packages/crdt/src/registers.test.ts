import { describe, expect, test } from 'vitest'
import { DecodeError, Hlc, type ConflictEvent } from '@concord/core'
import { LwwRegister, MvRegister, PnCounter, LwwMap } from './index.js'

function clockAt(t: { now: number }): () => number {
  return () => t.now
}

describe('LwwRegister', () => {
  test('the higher HLC wins among concurrent writes, losers are reported with their clocks', () => {
    const time = { now: 1_000 }
    const a = new LwwRegister<string>({ replicaId: 'a', now: clockAt(time) })
    const b = new LwwRegister<string>({ replicaId: 'b', now: () => time.now + 50 })
    const events: ConflictEvent[] = []
    a.onConflict((e) => events.push(e))
    const ta = a.set('from-a')
    const tb = b.set('from-b')
    expect(ta.wall).toBe(1_000)
    expect(tb.wall).toBe(1_050)
    a.apply(b.state())
    b.apply(a.state())
    expect(a.value()).toBe('from-b')
    expect(b.value()).toBe('from-b')
    expect(a.state()).toEqual(b.state())
    expect(events).toEqual([
      {
        kind: 'lww-overwrite',
        typeName: 'lww-register',
        path: [],
        winner: { value: 'from-b', replica: 'b', dot: { replica: 'b', counter: 1 }, time: tb },
        losers: [{ value: 'from-a', replica: 'a', dot: { replica: 'a', counter: 1 }, time: ta }],
      },
    ])
  })

  test('equal wall and logical time: the node id breaks the tie, then the dot', () => {
    const a = new LwwRegister<number>({ replicaId: 'a', now: () => 5 })
    const b = new LwwRegister<number>({ replicaId: 'b', now: () => 5 })
    a.set(1)
    b.set(2)
    a.apply(b.state())
    expect(a.value()).toBe(2) // node 'b' > 'a'
    // two writers sharing a clock node: the dot decides
    const shared = new Hlc('n', { now: () => 7 })
    const shared2 = new Hlc('n', { now: () => 7 })
    const x = new LwwRegister<number>({ replicaId: 'x', clock: shared })
    const y = new LwwRegister<number>({ replicaId: 'y', clock: shared2 })
    x.set(10)
    y.set(20)
    x.apply(y.state())
    y.apply(x.state())
    expect(x.value()).toBe(20) // same (wall, logical, node): dot y:1 > x:1
    expect(y.value()).toBe(20)
  })

  test('a causally later write wins even with a lower clock; the sibling is removed', () => {
    const a = new LwwRegister<number>({ replicaId: 'a', now: () => 10_000 })
    const b = new LwwRegister<number>({ replicaId: 'b', now: () => 0 })
    a.set(1)
    b.apply(a.state())
    b.set(2)
    a.apply(b.state())
    expect(a.value()).toBe(2)
    expect(a.state()).toEqual(b.state())
  })

  test('remote timestamps advance the clock, but never beyond the drift bound and never throw', () => {
    const a = new LwwRegister<number>({ replicaId: 'a', clock: new Hlc('a', { now: () => 1_000, maxDriftMs: 100 }) })
    const near = new LwwRegister<number>({ replicaId: 'n', now: () => 1_050 })
    const far = new LwwRegister<number>({ replicaId: 'f', now: () => 99_999 })
    near.set(1)
    a.apply(near.state())
    expect(a.clock.peek().wall).toBe(1_050)
    far.set(2)
    a.apply(far.state())
    expect(a.clock.peek().wall).toBe(1_050)
    expect(a.value()).toBe(2) // the far write still merges; only the clock refuses to jump
    a.set(3)
    expect(a.value()).toBe(3) // overwrites what it observed
  })

  test('no conflict for local writes or causal overwrites', () => {
    const a = new LwwRegister<number>({ replicaId: 'a' })
    const b = new LwwRegister<number>({ replicaId: 'b' })
    const events: ConflictEvent[] = []
    b.onConflict((e) => events.push(e))
    a.set(1)
    b.apply(a.state())
    a.set(2)
    b.apply(a.state())
    b.set(3)
    expect(events).toEqual([])
    expect(new LwwRegister({ replicaId: 'z' }).value()).toBeUndefined()
  })
})

describe('MvRegister', () => {
  test('concurrent writes are siblings until overwritten', () => {
    const a = new MvRegister<string>({ replicaId: 'a' })
    const b = new MvRegister<string>({ replicaId: 'b' })
    const events: ConflictEvent[] = []
    a.onConflict((e) => events.push(e))
    expect(a.value()).toEqual([])
    a.set('z')
    b.set('y')
    a.apply(b.state())
    expect(a.value()).toEqual(['y', 'z'])
    expect(events).toEqual([
      {
        kind: 'siblings',
        typeName: 'mv-register',
        path: [],
        losers: [
          { value: 'z', replica: 'a', dot: { replica: 'a', counter: 1 } },
          { value: 'y', replica: 'b', dot: { replica: 'b', counter: 1 } },
        ],
      },
    ])
    a.set('w')
    b.apply(a.state())
    expect(b.value()).toEqual(['w'])
    expect(events).toHaveLength(1)
  })
})

test('MvRegister: siblings equal in canonical form (0 and -0) list in the same order everywhere (regression)', () => {
  const a = new MvRegister<number>({ replicaId: 'a' })
  const b = new MvRegister<number>({ replicaId: 'b' })
  a.set(-0)
  b.set(0)
  const x = new MvRegister<number>({ replicaId: 'x' })
  const y = new MvRegister<number>({ replicaId: 'y' })
  x.apply(a.state())
  x.apply(b.state())
  y.apply(b.state())
  y.apply(a.state())
  expect(x.value()).toEqual(y.value())
  expect(Object.is(x.value()[0], -0)).toBe(true) // dot a:1 sorts first
})

describe('PnCounter', () => {
  test('sums increments and decrements across replicas', () => {
    const a = new PnCounter({ replicaId: 'a' })
    const b = new PnCounter({ replicaId: 'b' })
    a.increment(5)
    a.decrement(2)
    b.increment()
    b.increment(10)
    a.apply(b.state())
    b.apply(a.state())
    expect(a.value()).toBe(14)
    expect(b.value()).toBe(14)
    a.increment(1)
    b.apply(a.state())
    expect(b.value()).toBe(15)
    expect(a.state()).toEqual(b.state())
  })

  test('old deltas re-applied do not double count', () => {
    const a = new PnCounter({ replicaId: 'a' })
    const b = new PnCounter({ replicaId: 'b' })
    const deltas: Uint8Array[] = []
    a.onDelta((d) => deltas.push(d))
    a.increment(2)
    a.increment(3)
    for (const d of [...deltas, ...deltas.slice().reverse(), ...deltas]) b.apply(d)
    expect(b.value()).toBe(5)
    expect(deltas[1]?.length).toBeLessThan(16)
  })

  test('a delta lost for good does not make its predecessor count twice', () => {
    // The second delta is lost and its writer's state with it (no repair can send it): the third
    // restates the total of all three, so it must remove the first's dot too, not only the
    // second's (the writer's live dot when it was made). Before, b showed 1 + 3 = 4.
    const a = new PnCounter({ replicaId: 'a' })
    const b = new PnCounter({ replicaId: 'b' })
    const c = new PnCounter({ replicaId: 'c' })
    const deltas: Uint8Array[] = []
    a.onDelta((d) => deltas.push(d))
    a.increment(1)
    a.increment(1)
    a.increment(1)
    b.increment(5)
    b.apply(deltas[0] as Uint8Array)
    b.apply(deltas[2] as Uint8Array)
    expect(b.value()).toBe(8)
    // In the other order too, and beside a replica that saw all three.
    c.apply(deltas[2] as Uint8Array)
    c.apply(deltas[0] as Uint8Array)
    c.apply(deltas[1] as Uint8Array)
    expect(c.value()).toBe(3)
    c.apply(b.state())
    b.apply(c.state())
    expect(b.value()).toBe(8)
    expect(b.state()).toEqual(c.state())
  })

  test('rejects bad amounts', () => {
    const a = new PnCounter({ replicaId: 'a' })
    expect(() => a.increment(-1)).toThrow(TypeError)
    expect(() => a.increment(1.5)).toThrow(TypeError)
    expect(() => a.decrement(Number.MAX_SAFE_INTEGER + 1)).toThrow(TypeError)
    expect(() => a.increment('1' as unknown as number)).toThrow(TypeError)
    a.increment(Number.MAX_SAFE_INTEGER)
    expect(() => a.increment(1)).toThrow(RangeError)
    expect(a.value()).toBe(Number.MAX_SAFE_INTEGER)
  })
})

describe('LwwMap', () => {
  test('set, get, delete, keys', () => {
    const m = new LwwMap<number>({ replicaId: 'a' })
    m.set('b', 2)
    m.set('a', 1)
    m.set('a', 3)
    expect(m.value()).toEqual({ a: 3, b: 2 })
    expect(m.keys()).toEqual(['a', 'b'])
    m.delete('b')
    expect(m.has('b')).toBe(false)
    expect(m.get('a')).toBe(3)
    expect(m.value()).toEqual({ a: 3 })
    m.set('__proto__', 7)
    expect(Object.keys(m.value())).toEqual(['__proto__', 'a'])
  })

  test('delete is LWW: a later delete beats an earlier concurrent set, and vice versa', () => {
    const time = { now: 100 }
    const a = new LwwMap<string>({ replicaId: 'a', now: () => time.now })
    const b = new LwwMap<string>({ replicaId: 'b', now: () => time.now })
    a.set('k', 'v0')
    b.apply(a.state())
    time.now = 200
    a.set('k', 'a-set') // earlier
    time.now = 300
    b.delete('k') // later
    const events: ConflictEvent[] = []
    a.onConflict((e) => events.push(e))
    a.apply(b.state())
    b.apply(a.state())
    expect(a.value()).toEqual({})
    expect(b.value()).toEqual({})
    expect(events[0]?.kind).toBe('lww-overwrite')
    expect(events[0]?.path).toEqual(['k'])
    expect(events[0]?.winner?.value).toBeUndefined()
    expect(events[0]?.losers[0]?.value).toBe('a-set')
    time.now = 400
    a.set('k', 'back')
    b.apply(a.state())
    expect(b.value()).toEqual({ k: 'back' })
  })

  test('wrong-type bytes are refused', () => {
    const m = new LwwMap({ replicaId: 'a' })
    const r = new LwwRegister({ replicaId: 'r' })
    r.set(1)
    expect(() => m.apply(r.state())).toThrow(DecodeError)
  })
})

describe('edge cases found by review', () => {
  test('a PnCounter past 2^53 in partial sums has one value whatever the order its deltas arrived in', () => {
    const make = (id: string): { c: PnCounter; deltas: Uint8Array[] } => {
      const c = new PnCounter({ replicaId: id })
      const deltas: Uint8Array[] = []
      c.onDelta((d) => deltas.push(d))
      return { c, deltas }
    }
    const a = make('a')
    const b = make('b')
    const c = make('c')
    a.c.increment(Number.MAX_SAFE_INTEGER - 1)
    b.c.increment(3)
    c.c.decrement(3)
    const x = new PnCounter({ replicaId: 'x' })
    const y = new PnCounter({ replicaId: 'y' })
    for (const d of [...a.deltas, ...b.deltas, ...c.deltas]) x.apply(d)
    for (const d of [...a.deltas, ...c.deltas, ...b.deltas]) y.apply(d)
    expect(x.state()).toEqual(y.state())
    expect(x.value()).toBe(y.value())
    expect(x.value()).toBe(Number.MAX_SAFE_INTEGER - 1)
  })

  test('strings that would not arrive as written are refused at the write: lone surrogates in keys, values and replica ids', () => {
    const m = new LwwMap({ replicaId: 'a' })
    expect(() => m.set('\uD800', 1)).toThrow(/well-formed/)
    expect(() => m.set('k', 'v\uDC00')).toThrow(/well-formed/)
    expect(() => m.set('k', { ['\uD800']: 1 })).toThrow(/well-formed/)
    expect(m.value()).toEqual({})
    expect(() => new MvRegister({ replicaId: '\uD800' })).toThrow(/well-formed/)
    const mv = new MvRegister({ replicaId: 'a' })
    expect(() => mv.set('\uDC00')).toThrow(/well-formed/)
    expect(mv.value()).toEqual([])
  })

  test('a clock whose node id receivers could not read is refused', () => {
    expect(() => new LwwRegister({ replicaId: 'a', clock: new Hlc('r'.repeat(300)) })).toThrow(/clock node id longer/)
  })

  test('a received context holding counters past 2^48 is refused (an 18-byte delta left its writer unable to take another dot, for good)', () => {
    const c = new PnCounter({ replicaId: 'us-1' })
    c.increment(1)
    // pn-counter tag, one writer (the victim), one range [2^53 - 1, 2^53 - 1], an empty store.
    const evil = Uint8Array.from([0x13, 1, 4, ...new TextEncoder().encode('us-1'), 1, ...varUint(Number.MAX_SAFE_INTEGER), 0, 0])
    const before = c.state()
    expect(() => c.apply(evil)).toThrow(DecodeError)
    expect(c.state()).toEqual(before)
    c.increment(1)
    expect(c.value()).toBe(2)
  })
})

function varUint(n: number): number[] {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80)
    n = Math.floor(n / 0x80)
  }
  out.push(n)
  return out
}
