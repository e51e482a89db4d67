import { describe, expect, test } from 'vitest'
import * as encoding from 'lib0/encoding'
import { ConfigError, DecodeError, DotSet, type ConflictEvent, type Json } from '@concord/core'
import { OrSet, PnCounter, crdtFactory } from './index.js'

function pair(): [OrSet<Json>, OrSet<Json>] {
  return [new OrSet<Json>({ replicaId: 'a' }), new OrSet<Json>({ replicaId: 'b' })]
}

describe('OrSet', () => {
  test('add, remove, has and sorted value', () => {
    const s = new OrSet<number | string>({ replicaId: 'a' })
    s.add('b')
    s.add(2)
    s.add('a')
    s.add(2)
    expect(s.value()).toEqual(['a', 'b', 2]) // canonical JSON order: '"a"' < '2'
    expect(s.size).toBe(3)
    expect(s.remove('a')).toBe(true)
    expect(s.remove('zzz')).toBe(false)
    expect(s.has('a')).toBe(false)
    expect(s.has(2)).toBe(true)
    s.clear()
    expect(s.value()).toEqual([])
  })

  test('equal JSON values with different key order are one element', () => {
    const s = new OrSet<Json>({ replicaId: 'a' })
    s.add({ x: 1, y: 2 })
    s.add({ y: 2, x: 1 })
    expect(s.value()).toEqual([{ x: 1, y: 2 }])
    expect(s.remove({ y: 2, x: 1 })).toBe(true)
    expect(s.value()).toEqual([])
  })

  test('add wins over a concurrent remove, and a conflict is reported on remote apply only', () => {
    const [a, b] = pair()
    const c = new OrSet({ replicaId: 'c' })
    a.add('x')
    b.apply(a.state())
    const events: ConflictEvent[] = []
    for (const r of [a, b, c]) r.onConflict((e) => events.push(e))
    let removal: Uint8Array | undefined
    b.onDelta((d) => (removal = d))
    b.remove('x') // b removes the add it saw (a:1)
    c.add('x') // concurrently c adds x (c:1)
    expect(events).toEqual([])
    a.apply(c.state())
    a.apply(removal as Uint8Array)
    b.apply(a.state())
    c.apply(a.state())
    for (const r of [a, b, c]) expect(r.value()).toEqual(['x'])
    expect(events).toHaveLength(1)
    const ev = events[0] as ConflictEvent
    expect(ev.kind).toBe('add-wins')
    expect(ev.typeName).toBe('or-set')
    expect(ev.path).toEqual(['"x"'])
    expect(ev.winner).toEqual({ value: 'x', replica: 'c', dot: { replica: 'c', counter: 1 } })
    expect(ev.losers).toEqual([{ value: 'x', replica: 'a', dot: { replica: 'a', counter: 1 } }])
  })

  test('a re-add by the same replica does not count as a conflict', () => {
    const [a, b] = pair()
    const events: ConflictEvent[] = []
    b.onConflict((e) => events.push(e))
    a.add('x')
    b.apply(a.state())
    let readd: Uint8Array | undefined
    a.onDelta((d) => (readd = d))
    a.add('x')
    b.apply(readd as Uint8Array)
    expect(b.value()).toEqual(['x'])
    expect(events).toEqual([])
  })

  test('a remove only deletes observed adds', () => {
    const [a, b] = pair()
    a.add('x')
    b.add('x')
    const bDelta = b.state()
    b.apply(a.state())
    b.remove('x') // observed both
    a.remove('x') // observed only its own
    a.apply(bDelta)
    expect(a.value()).toEqual(['x']) // b's add was not observed by a's remove
    a.apply(b.state())
    expect(a.value()).toEqual([])
  })

  test('apply is idempotent and emits a remote delta only when something changed', () => {
    const [a, b] = pair()
    const seen: string[] = []
    b.onDelta((_d, o) => seen.push(o))
    a.add(1)
    b.apply(a.state())
    const st = b.state()
    b.apply(a.state())
    expect(b.state()).toEqual(st)
    expect(seen).toEqual(['remote'])
    const off = b.onDelta(() => seen.push('late'))
    off()
    b.add(2)
    expect(seen).toEqual(['remote', 'local'])
  })

  test('state() is canonical and restores a replica', () => {
    const [a, b] = pair()
    a.add(1)
    b.add(2)
    b.remove(2)
    a.add({ k: [1, 2] })
    const ab = new OrSet({ replicaId: 'c' })
    const ba = new OrSet({ replicaId: 'd' })
    ab.apply(a.state())
    ab.apply(b.state())
    ba.apply(b.state())
    ba.apply(a.state())
    expect(ab.state()).toEqual(ba.state())
    const restored = new OrSet({ replicaId: 'a' })
    restored.apply(a.state())
    expect(restored.state()).toEqual(a.state())
    restored.add(5) // continues after its restored dots
    a.apply(restored.state())
    expect(a.value()).toEqual([1, 5, { k: [1, 2] }])
  })

  test('deltas stay small after 10,000 adds', () => {
    const a = new OrSet<number>({ replicaId: 'replica-a' })
    const b = new OrSet<number>({ replicaId: 'replica-b' })
    for (let i = 0; i < 10_000; i++) a.add(i)
    b.apply(a.state())
    let last: Uint8Array | undefined
    a.onDelta((d) => (last = d))
    a.add(123_456)
    expect((last as Uint8Array).length).toBeLessThan(64)
    a.remove(1)
    expect((last as Uint8Array).length).toBeLessThan(64)
    const since = a.deltaSince(b.version())
    expect(since.length).toBeLessThan(64)
    b.apply(since)
    expect(b.state()).toEqual(a.state())
    expect(b.value()).toHaveLength(10_000)
    // the context stays compact despite 10,000 adds and a removal
    expect(DotSet.decode(a.version()).ranges('replica-a').length).toBeLessThanOrEqual(2)
  })

  test('scattered removals are carried by deltaSince as dead-dot ranges, about 2 bytes each', () => {
    const a = new OrSet<number>({ replicaId: 'a' })
    const b = new OrSet<number>({ replicaId: 'b' })
    for (let i = 0; i < 1_000; i++) a.add(i)
    b.apply(a.state())
    for (let i = 0; i < 1_000; i += 2) a.remove(i)
    const since = a.deltaSince(b.version())
    expect(since.length).toBeLessThan(1_100)
    b.apply(since)
    expect(b.state()).toEqual(a.state())
  })

  test('deltaSince an old version carries removals as dead dots', () => {
    const [a, b] = pair()
    a.add(1)
    a.add(2)
    b.apply(a.state())
    a.remove(1)
    a.add(3)
    b.apply(a.deltaSince(b.version()))
    expect(b.value()).toEqual([2, 3])
    expect(b.state()).toEqual(a.state())
    expect(a.deltaSince(b.version()).length).toBeLessThan(16)
  })

  test('bad input', () => {
    expect(() => new OrSet({ replicaId: '' })).toThrow(ConfigError)
    expect(() => new OrSet(undefined as unknown as { replicaId: string })).toThrow(ConfigError)
    expect(() => new OrSet({ replicaId: 'a', now: 5 as unknown as () => number })).toThrow(ConfigError)
    expect(() => new OrSet({ replicaId: 'x'.repeat(300) })).toThrow(ConfigError)
    expect(() => new OrSet({ replicaID: 'a' } as never)).toThrow(ConfigError)
    expect(() => crdtFactory('or-set', { nw: () => 0 } as never)).toThrow(/crdtFactory: unknown option "nw" \(did you mean "now"\?\)/)
    expect(() => crdtFactory('or-set', { clock: 5 } as never)).toThrow(/clock must be a function/)
    // Review finding: an unknown type was accepted, and open() later threw a plain TypeError.
    expect(() => crdtFactory('bogus' as never)).toThrow(/crdtFactory: unknown native type "bogus"/)
    expect(() => new OrSet({ replicaId: 'a', clok: undefined } as never)).toThrow(/or-set: unknown option "clok" \(did you mean "clock"\?\)/)
    const s = new OrSet({ replicaId: 'a' })
    expect(() => s.add(Number.NaN)).toThrow(TypeError)
    expect(() => s.add(undefined as unknown as number)).toThrow(TypeError)
    const c = new PnCounter({ replicaId: 'c' })
    c.increment()
    expect(() => s.apply(c.state())).toThrow(DecodeError)
    expect(() => s.deltaSince(new Uint8Array([9, 9]))).toThrow(DecodeError)
    expect(s.value()).toEqual([])
  })

  test('a received element spelling a lone surrogate in its JSON text is refused (value() held an element has() and remove() refused)', () => {
    const e = encoding.createEncoder()
    encoding.writeUint8(e, 0x14) // or-set
    encoding.writeVarUint(e, 1)
    encoding.writeVarString(e, 'peer') // string table
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint(e, 0) // context: peer 1..1
    encoding.writeVarUint(e, 1)
    encoding.writeVarString(e, '"\\ud800"') // one element: the JSON text "\ud800"
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint(e, 0)
    encoding.writeVarUint(e, 1) // its store: dot peer 1
    const s = new OrSet<string>({ replicaId: 'me' })
    expect(() => s.apply(encoding.toUint8Array(e))).toThrow(DecodeError)
    expect(s.value()).toEqual([])
  })
})
