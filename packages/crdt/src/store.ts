/**
 * Dot stores and their join (Almeida, Shoker & Baquero, "Delta state replicated data types", 2018).
 * A causal state is `(store, ctx)`: `ctx` is every dot ever seen, `store` holds the dots still
 * alive. A dot in `ctx` but not in `store` is dead, so removals need no tombstones beyond the
 * range-compressed context. Stores are:
 * - {@link FunStore}: dot → immutable value (a DotSet-store is a FunStore whose values are `true`);
 * - {@link MapStore}: key → nested store, all sharing the one `ctx`.
 * Internal module: the public types wrap it.
 */
import { DotSet, compareDots, dotKey, sortInPlace, sortedStrings, type ConflictEvent, type Dot, type HlcTimestamp } from '@concord/core'
import type { Schema, MapSchema, FunSchema } from './schema.js'

/** One live write: its dot and its (immutable) value. */
export interface Entry {
  readonly dot: Dot
  readonly value: unknown
}

/** Entries a {@link DotEntries} keeps in arrays before it switches to a Map. */
const SMALL_ENTRIES = 8

/**
 * dotKey → entry, with a Map's interface and iteration order. Most fun stores hold one to a few
 * entries (a register's siblings, a counter's writers, an element's adds): those are two short
 * arrays, which take less memory than a Map and, above all, let a write that replaces a dot (every
 * counter increment and register write, local or remote) do without a Map's delete and insert,
 * whose hash-table churn was the largest cost of applying such a delta. Past SMALL_ENTRIES it is a Map.
 *
 * While small, a key is made from its entry's dot only when asked for (`undefined` until then):
 * the write paths ({@link setEntry}, {@link deleteDot}, {@link removeIf}) compare dots and never
 * build the key string.
 */
export class DotEntries {
  private ks: (string | undefined)[] = []
  private vs: Entry[] = []
  private map: Map<string, Entry> | undefined

  get size(): number {
    return this.map === undefined ? this.vs.length : this.map.size
  }

  private keyAt(i: number): string {
    return (this.ks[i] ??= dotKey((this.vs[i] as Entry).dot))
  }

  private indexOfKey(k: string): number {
    for (let i = 0; i < this.vs.length; i++) if (this.keyAt(i) === k) return i
    return -1
  }

  private indexOfDot(d: Dot): number {
    const vs = this.vs
    for (let i = 0; i < vs.length; i++) {
      const x = (vs[i] as Entry).dot
      if (x.counter === d.counter && x.replica === d.replica) return i
    }
    return -1
  }

  get(k: string): Entry | undefined {
    if (this.map !== undefined) return this.map.get(k)
    const i = this.indexOfKey(k)
    return i < 0 ? undefined : this.vs[i]
  }

  has(k: string): boolean {
    return this.map === undefined ? this.indexOfKey(k) >= 0 : this.map.has(k)
  }

  /** `set(k, v)`, where `k` must be `dotKey(v.dot)` (as every fun store's keys are). */
  set(k: string, v: Entry): this {
    if (this.map !== undefined) this.map.set(k, v)
    else this.put(this.indexOfKey(k), k, v)
    return this
  }

  /** `set(dotKey(v.dot), v)`. */
  setEntry(v: Entry): this {
    if (this.map !== undefined) this.map.set(dotKey(v.dot), v)
    else this.put(this.indexOfDot(v.dot), undefined, v)
    return this
  }

  private put(i: number, k: string | undefined, v: Entry): void {
    if (i >= 0) this.vs[i] = v
    else if (this.vs.length < SMALL_ENTRIES) {
      this.ks.push(k)
      this.vs.push(v)
    } else {
      // Arrays left as they are: a forEach running over them finishes over what it started with.
      const m = new Map<string, Entry>()
      for (let j = 0; j < this.vs.length; j++) m.set(this.keyAt(j), this.vs[j] as Entry)
      m.set(k ?? dotKey(v.dot), v)
      this.map = m
      this.ks = []
      this.vs = []
    }
  }

  delete(k: string): boolean {
    if (this.map !== undefined) return this.map.delete(k)
    return this.deleteAt(this.indexOfKey(k))
  }

  /** `delete(dotKey(d))`. */
  deleteDot(d: Dot): boolean {
    if (this.map !== undefined) return this.map.delete(dotKey(d))
    return this.deleteAt(this.indexOfDot(d))
  }

  private deleteAt(i: number): boolean {
    if (i < 0) return false
    const ks = this.ks
    const vs = this.vs
    // Shift and pop: splice would allocate an array of the removed element.
    for (let j = i; j < vs.length - 1; j++) {
      ks[j] = ks[j + 1]
      vs[j] = vs[j + 1] as Entry
    }
    ks.pop()
    vs.pop()
    return true
  }

  /**
   * Deletes every entry for which `test(entry, arg)` holds, visiting in order; returns how many.
   * (`arg` instead of a closure: no function allocated per call on the apply path.)
   */
  removeIf<A>(test: (e: Entry, arg: A) => boolean, arg: A): number {
    let removed = 0
    if (this.map !== undefined) {
      for (const [k, e] of this.map) {
        if (!test(e, arg)) continue
        this.map.delete(k)
        removed++
      }
      return removed
    }
    const vs = this.vs
    for (let i = 0; i < vs.length; ) {
      if (test(vs[i] as Entry, arg)) {
        this.deleteAt(i)
        removed++
      } else i++
    }
    return removed
  }

  /**
   * Calls `fn` for every entry in order. As with a Map, `fn` may delete the entry it visits (or
   * others: those not visited yet are skipped).
   */
  forEach(fn: (v: Entry, k: string) => void): void {
    if (this.map !== undefined) return this.map.forEach(fn)
    const vs = this.vs
    for (let i = 0; i < vs.length; ) {
      const d = (vs[i] as Entry).dot
      fn(vs[i] as Entry, this.keyAt(i))
      // Unless fn deleted it (or one before it), the next entry is at i + 1 (fn may have replaced
      // it: same dot, same key).
      const w = vs[i]
      if (w !== undefined && w.dot.counter === d.counter && w.dot.replica === d.replica) i++
    }
  }

  values(): IterableIterator<Entry> {
    return this.map === undefined ? this.vs.values() : this.map.values()
  }

  keys(): IterableIterator<string> {
    if (this.map !== undefined) return this.map.keys()
    for (let i = 0; i < this.vs.length; i++) this.keyAt(i)
    return (this.ks as string[]).values()
  }

  *[Symbol.iterator](): IterableIterator<[string, Entry]> {
    if (this.map !== undefined) {
      yield* this.map
      return
    }
    for (let i = 0; i < this.vs.length; i++) yield [this.keyAt(i), this.vs[i] as Entry]
  }
}

/** dot → value. */
export class FunStore {
  readonly kind = 'fun' as const
  /** dotKey → entry */
  readonly entries = new DotEntries()
}

/** key → nested store. */
export class MapStore {
  readonly kind = 'map' as const
  readonly entries = new Map<string, Store>()
  /**
   * dotKey → key of the child holding that dot (transitively). Maintained by {@link joinStore} on
   * stores it joins into, so a removal delta finds its keys without scanning every key. Stores
   * built only to be encoded (decoded deltas, deltaSince output) leave it empty.
   */
  readonly index = new Map<string, string>()
  /** Per replica, how many of {@link index}'s dots are of it (kept with the index). */
  readonly live = new Map<string, number>()
}

export type Store = FunStore | MapStore

/** A delta or a whole state: a store fragment and the dots it speaks about. */
export interface CausalDelta {
  readonly store: Store | undefined
  readonly ctx: DotSet
}

export function emptyStore(kind: 'fun' | 'map'): Store {
  return kind === 'fun' ? new FunStore() : new MapStore()
}

export function isEmptyStore(s: Store | undefined): boolean {
  return s === undefined || s.entries.size === 0
}

/** Calls `fn` for every live entry under `s`, with the leaf schema it belongs to. */
export function forEachEntry(schema: Schema, s: Store | undefined, fn: (e: Entry, leaf: FunSchema) => void): void {
  if (s === undefined) return
  if (s.kind === 'fun') {
    if (schema.kind !== 'fun') return
    for (const e of s.entries.values()) fn(e, schema)
    return
  }
  if (schema.kind !== 'map') return
  for (const [k, child] of s.entries) {
    const cs = schema.child(k)
    if (cs !== undefined) forEachEntry(cs, child, fn)
  }
}

/** Every live dot under `s`. */
export function collectDots(s: Store | undefined): Dot[] {
  const out: Dot[] = []
  const walk = (x: Store): void => {
    if (x.kind === 'fun') for (const e of x.entries.values()) out.push(e.dot)
    else for (const c of x.entries.values()) walk(c)
  }
  if (s !== undefined) walk(s)
  return out
}

/** Builds a DotSet from dots in any order, sorting first so ranges append cheaply. */
export function dotSetOf(dots: Dot[]): DotSet {
  return DotSet.of(sortInPlace(dots.slice(), compareDots))
}

/** What a join changed, and the remote timestamps it took in (for the HLC). */
export interface JoinOut {
  readonly added: Dot[]
  readonly removed: Dot[]
  readonly times: HlcTimestamp[]
}

export function newJoinOut(): JoinOut {
  return { added: [], removed: [], times: [] }
}

/** Collects conflict events during a remote join; absent for local mutations. */
export interface ConflictSink {
  readonly typeName: string
  readonly events: ConflictEvent[]
}

/**
 * Joins `delta` (with context `dctx`) into `target` (with context `tctx`, not yet unioned) in place.
 * A dot survives if both sides hold it, or one side holds it and the other side's context has
 * never seen it. Map keys join recursively; keys left empty are dropped. Returns whether a
 * conflict was reported at or below this store (so enclosing maps do not report it twice).
 */
export function joinStore(
  schema: Schema,
  target: Store,
  tctx: DotSet,
  delta: Store | undefined,
  dctx: DotSet,
  path: readonly string[],
  sink: ConflictSink | undefined,
  out: JoinOut,
): boolean {
  if (target.kind === 'fun') {
    if (schema.kind !== 'fun') throw new Error('store/schema mismatch')
    return joinFun(schema, target, tctx, delta?.kind === 'fun' ? delta : undefined, dctx, path, sink, out)
  }
  if (schema.kind !== 'map') throw new Error('store/schema mismatch')
  return joinMap(schema, target, tctx, delta?.kind === 'map' ? delta : undefined, dctx, path, sink, out)
}

function joinFun(
  schema: FunSchema,
  target: FunStore,
  tctx: DotSet,
  delta: FunStore | undefined,
  dctx: DotSet,
  path: readonly string[],
  sink: ConflictSink | undefined,
  out: JoinOut,
): boolean {
  let added = 0
  // forEach rather than for-of over entries(): no [key, value] array per entry on this hot path.
  if (delta !== undefined) {
    delta.entries.forEach((e, k) => {
      if (!target.entries.has(k) && !tctx.has(e.dot)) {
        target.entries.set(k, e)
        out.added.push(e.dot)
        if (schema.time !== undefined) out.times.push(schema.time(e.value))
        added++
      }
    })
  }
  if (!dctx.isEmpty()) {
    // Deleting the visited entry during forEach is safe (Map iteration is live).
    target.entries.forEach((e, k) => {
      if (dctx.has(e.dot) && delta?.entries.has(k) !== true) {
        target.entries.delete(k)
        out.removed.push(e.dot)
      }
    })
  }
  if (sink !== undefined && added > 0 && target.entries.size > 1 && schema.siblings !== undefined) {
    const ev = schema.siblings([...target.entries.values()], path, sink.typeName)
    if (ev !== undefined) {
      sink.events.push(ev)
      return true
    }
  }
  return false
}

function joinMap(
  schema: MapSchema,
  target: MapStore,
  tctx: DotSet,
  delta: MapStore | undefined,
  dctx: DotSet,
  path: readonly string[],
  sink: ConflictSink | undefined,
  out: JoinOut,
): boolean {
  const keys = new Set<string>(delta?.entries.keys())
  if (!dctx.isEmpty() && target.entries.size > 0) {
    // The keys a removal speaks about: the index's, walking the context's ranges of the replicas
    // that have live dots here, unless that walk is longer than the index (then every key). The
    // context's other replicas cost nothing: its size, recounted at every nested map, and a walk of
    // ranges of replicas holding nothing here made an 11-byte delta cost ~1 s against a million
    // elements, and K nested fields x R ranges quadratic (review finding).
    const limit = target.index.size
    let walk = 0
    for (const replica of target.live.keys()) {
      const r = dctx.flatRanges(replica)
      for (let i = 0; i < r.length && walk <= limit; i += 2) walk += (r[i + 1] as number) - (r[i] as number) + 1
      if (walk > limit) break
    }
    if (walk <= limit) {
      for (const replica of target.live.keys()) {
        const r = dctx.flatRanges(replica)
        for (let i = 0; i < r.length; i += 2) {
          for (let c = r[i] as number; c <= (r[i + 1] as number); c++) {
            const k = target.index.get(dotKey({ replica, counter: c }))
            if (k !== undefined) keys.add(k)
          }
        }
      }
    } else for (const k of target.entries.keys()) keys.add(k)
  }
  let reported = false
  for (const k of sortedStrings(keys)) {
    const cs = schema.child(k)
    if (cs === undefined) continue
    const d = delta?.entries.get(k)
    let t = target.entries.get(k)
    if (t === undefined) {
      if (d === undefined) continue
      t = emptyStore(d.kind)
    }
    const sub = newJoinOut()
    const childPath = sink === undefined ? path : [...path, schema.label(k)]
    const childReported = joinStore(cs, t, tctx, d, dctx, childPath, sink, sub)
    for (const dot of sub.added) {
      const dk = dotKey(dot)
      if (!target.index.has(dk)) target.live.set(dot.replica, (target.live.get(dot.replica) ?? 0) + 1)
      target.index.set(dk, k)
    }
    for (const dot of sub.removed) {
      if (!target.index.delete(dotKey(dot))) continue
      const n = (target.live.get(dot.replica) as number) - 1
      if (n === 0) target.live.delete(dot.replica)
      else target.live.set(dot.replica, n)
    }
    if (t.entries.size === 0) target.entries.delete(k)
    else target.entries.set(k, t)
    reported ||= childReported
    if (sink !== undefined && !childReported && cs.kind === 'fun' && d === undefined && sub.removed.length > 0 && t.entries.size > 0 && schema.removal !== undefined) {
      // A removal this delta made (it writes nothing under k) lost to writes it had not seen.
      // Only for leaf fields: under a nested map, dots surviving beside removed ones may belong to
      // other elements the remover saw and kept (removing one set element is not removing the
      // field), and the nested level reports the element-level conflict itself.
      const surviving = collectDots(t).filter((dot) => !dctx.has(dot))
      if (surviving.length > 0) {
        sink.events.push(schema.removal(k, t, surviving, sub.removed, childPath, sink.typeName))
        reported = true
      }
    }
    // Loops, not push(...): past ~125,000 arguments a spread overflows the stack (review finding:
    // an or-set field of 130,000 elements failed to apply with a RangeError, half joined).
    for (const dot of sub.added) out.added.push(dot)
    for (const dot of sub.removed) out.removed.push(dot)
    for (const time of sub.times) out.times.push(time)
  }
  return reported
}

/**
 * The part of `s` a holder of context `v` lacks: entries whose dots `v` has not seen. Returns
 * undefined when nothing is left.
 */
export function filterStore(s: Store | undefined, v: DotSet): Store | undefined {
  if (s === undefined) return undefined
  if (s.kind === 'fun') {
    const f = new FunStore()
    for (const [k, e] of s.entries) if (!v.has(e.dot)) f.entries.set(k, e)
    return f.entries.size === 0 ? undefined : f
  }
  const m = new MapStore()
  for (const [k, c] of s.entries) {
    const fc = filterStore(c, v)
    if (fc !== undefined) m.entries.set(k, fc)
  }
  return m.entries.size === 0 ? undefined : m
}
