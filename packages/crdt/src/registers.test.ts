import { describe, expect, test } from 'vitest'
import { DecodeError, Hlc, MAX_FIELD_BYTES, bytesEqual, type ConflictEvent } from '@concord/core'
import { LwwRegister, MvRegister, PnCounter, LwwMap, OrMap, OrSet } from './index.js'

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

  test('a write whose dot would pass 2^48 is refused before it changes anything (it was kept here while every receiver refused its delta)', () => {
    const c = new PnCounter({ replicaId: 'us-1' })
    c.increment(1)
    // pn-counter tag, the victim's id, its context up to exactly 2^48 (the largest a receiver accepts), an empty store.
    c.apply(Uint8Array.from([0x13, 1, 4, ...new TextEncoder().encode('us-1'), 1, 1, ...varUint(2 ** 48 - 1), 0]))
    const deltas: Uint8Array[] = []
    c.onDelta((d) => deltas.push(d))
    const before = c.state()
    expect(() => c.increment(1)).toThrow(RangeError)
    expect(c.state()).toEqual(before)
    expect(deltas).toEqual([])
    const s = new OrSet({ replicaId: 'us-1' })
    s.apply(Uint8Array.from([0x14, 1, 4, ...new TextEncoder().encode('us-1'), 1, ...varUint(2 ** 48), 0, 0]))
    expect(() => s.add('x')).toThrow(RangeError)
    expect(s.value()).toEqual([])
  })

  test('a value changed by the caller after the write, or through value(), does not change the state (it changed here only, and state() then differed from replicas that applied the same deltas)', () => {
    const obj = { x: 1, list: [1] }
    const lww = new LwwRegister<typeof obj>({ replicaId: 'a' })
    const mv = new MvRegister<typeof obj>({ replicaId: 'a' })
    const map = new LwwMap<typeof obj>({ replicaId: 'a' })
    const copies = [new LwwRegister({ replicaId: 'b' }), new MvRegister({ replicaId: 'b' }), new LwwMap({ replicaId: 'b' })]
    ;[lww, mv, map].forEach((r, i) => r.onDelta((d) => copies[i]?.apply(d)))
    lww.set(obj)
    mv.set(obj)
    map.set('k', obj)
    obj.x = 2
    obj.list.push(2)
    expect(lww.value()).toEqual({ x: 1, list: [1] })
    expect(mv.value()).toEqual([{ x: 1, list: [1] }])
    expect(map.value()).toEqual({ k: { x: 1, list: [1] } })
    // values handed out, local or received, refuse changes rather than change the state behind its deltas
    for (const r of [lww, copies[0] as LwwRegister]) expect(() => ((r.value() as typeof obj).list as number[]).push(3)).toThrow(TypeError)
    for (const r of [mv, copies[1] as MvRegister]) expect(() => ((r.value() as (typeof obj)[])[0] as typeof obj).x = 3).toThrow(TypeError)
    for (const r of [map, copies[2] as LwwMap]) expect(() => ((r.value() as Record<string, typeof obj>).k as typeof obj).x = 3).toThrow(TypeError)
    ;[lww, mv, map].forEach((r, i) => expect(r.state()).toEqual(copies[i]?.state()))
  })

  test('a write receivers could not decode (a string, key, element or field name past MAX_FIELD_BYTES) is refused at the write (it was kept here, and every state() after it was refused everywhere)', () => {
    const big = 'x'.repeat(MAX_FIELD_BYTES + 1)
    const r = new LwwRegister({ replicaId: 'a' })
    const m = new LwwMap({ replicaId: 'a' })
    const s = new OrSet({ replicaId: 'a' })
    const mv = new MvRegister({ replicaId: 'a' })
    const o = new OrMap({ replicaId: 'a' })
    expect(() => r.set(big)).toThrow(TypeError)
    expect(() => r.set({ k: [big] })).toThrow(TypeError)
    expect(() => m.set(big, 1)).toThrow(TypeError)
    expect(() => m.delete(big)).toThrow(TypeError)
    expect(() => s.add('x'.repeat(MAX_FIELD_BYTES - 1))).toThrow(TypeError) // its canonical JSON adds two quotes
    expect(() => mv.set({ k: 'x'.repeat(MAX_FIELD_BYTES / 2 + 1).replace(/x/g, 'é') })).toThrow(TypeError) // 2 UTF-8 bytes per unit
    expect(() => o.update(big, 'pn-counter', (c) => c.increment())).toThrow(TypeError)
    for (const x of [r, m, s, mv, o]) expect(x.version()).toEqual(new OrSet({ replicaId: 'z' }).version())
    // at the limit it replicates
    r.set('é'.repeat(MAX_FIELD_BYTES / 2))
    const copy = new LwwRegister({ replicaId: 'b' })
    copy.apply(r.state())
    expect(bytesEqual(copy.state(), r.state())).toBe(true) // toEqual on 16 MB arrays runs out of heap
  })

  test('LwwMap keys() is sorted also for integer-like keys (it listed them first, in numeric order: 9 before 10)', () => {
    const m = new LwwMap({ replicaId: 'a' })
    for (const k of ['a', '10', '9', '__proto__', '-1', '01', 'gone']) m.set(k, 1)
    m.delete('gone')
    expect(m.keys()).toEqual(['-1', '01', '10', '9', '__proto__', 'a'])
  })

  test('a conflict listener that scribbles on its event changes neither the state nor later events (dots and times were the store\'s own, the root path shared)', () => {
    const scribble = (e: ConflictEvent): void => {
      try {
        ;(e.path as string[]).push('junk')
      } catch {
        // a frozen path is fine
      }
      for (const s of [...e.losers, ...(e.winner === undefined ? [] : [e.winner])]) {
        try {
          ;(s.dot as { counter: number }).counter = 99
          ;(s.time as { wall: number }).wall = 0
        } catch {
          // a frozen dot or time is fine
        }
      }
    }
    const a = new LwwRegister<number>({ replicaId: 'a', now: () => 1 })
    const b = new LwwRegister<number>({ replicaId: 'b', now: () => 2 })
    const c = new LwwRegister<number>({ replicaId: 'c', now: () => 3 })
    const events: ConflictEvent[] = []
    a.onConflict((e) => events.push(structuredClone(e)))
    a.onConflict(scribble)
    a.set(1)
    b.set(2)
    c.set(3)
    a.apply(b.state())
    a.apply(c.state())
    expect(events.map((e) => e.path)).toEqual([[], []])
    expect(events[1]?.losers.map((l) => l.dot)).toEqual([
      { replica: 'b', counter: 1 },
      { replica: 'a', counter: 1 },
    ])
    expect(events[1]?.losers.map((l) => l.time?.wall)).toEqual([2, 1])
    // a replica that got the writes from their writers (a's own last: the entries it already holds are kept)
    const x = new LwwRegister<number>({ replicaId: 'x' })
    for (const r of [b, c, a]) x.apply(r.state())
    expect(a.state()).toEqual(x.state())
    // nor does the timestamp set() returns, which was the stored one
    const t = a.set(4)
    try {
      ;(t as { wall: number }).wall = 99
    } catch {
      // frozen is fine
    }
    x.apply(a.state())
    expect(a.state()).toEqual(x.state())
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
