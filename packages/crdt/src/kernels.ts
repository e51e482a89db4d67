/**
 * The operations of each causal type, written once over a {@link Cursor}: the standalone classes
 * use a cursor at their root, an {@link OrMapView} hands out cursors to its fields. Every mutation
 * builds a small delta — the new dot plus the dots it overwrites — and commits it.
 */
import { MAX_FIELD_BYTES, assertJson, canonicalJson, isWellFormed, type DotSet, type Dot, type HlcTimestamp, type Json } from '@concord/core'
import type { Cursor } from './base.js'
import { COUNTER, LWW, LWWMAP, MV, ORMAP, ORSET, checkJson, fieldKey, fitsField, frozenCopy, parseFieldKey, schemaOf, type CausalTypeName, type CounterValue, type LwwValue } from './schema.js'
import { FunStore, MapStore, collectDots, dotSetOf, type Store } from './store.js'

/** Throws TypeError unless `v` is a finite, acyclic JSON value of bounded depth. */
function assertValue(v: unknown, what: string): asserts v is Json {
  assertJson(v, what)
  try {
    checkJson(v, 0, true)
  } catch (e) {
    throw new TypeError(`${what}: ${e instanceof Error ? e.message : String(e)}`)
  }
}

function assertCount(n: unknown, what: string): asserts n is number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw new TypeError(`${what}: expected a safe non-negative integer, got ${String(n)}`)
}

/** A write overwriting every dot in `old`: the new dot `fresh` plus `old` as context. */
function overwriteCtx(fresh: { replica: string; counter: number }, old: Store | undefined): DotSet {
  const dots = collectDots(old)
  dots.push(fresh)
  return dotSetOf(dots)
}

function asFun(s: Store | undefined): FunStore | undefined {
  return s?.kind === 'fun' ? s : undefined
}
function asMap(s: Store | undefined): MapStore | undefined {
  return s?.kind === 'map' ? s : undefined
}

/** Add-wins observed-remove set operations. */
export class OrSetView<T extends Json = Json> {
  /** @internal */
  constructor(private readonly c: Cursor) {}

  /** Adds `element` (a JSON value; equal values, whatever their key order, are one element). */
  add(element: T): void {
    assertValue(element, 'or-set element')
    const k = canonicalJson(element)
    // The element travels as this one string: the limit is on it, not on the element's strings.
    if (!fitsField(k)) throw new TypeError(`or-set element: canonical JSON longer than ${MAX_FIELD_BYTES} UTF-8 bytes`)
    const dot = this.c.root.nextDot()
    const child = new FunStore()
    child.entries.setEntry({ dot, value: true })
    const delta = new MapStore()
    delta.entries.set(k, child)
    this.c.commit(delta, overwriteCtx(dot, asMap(this.c.store())?.entries.get(k)))
  }

  /** Removes `element` as observed here; a concurrent add elsewhere survives (add wins). Returns whether it was present. */
  remove(element: T): boolean {
    assertValue(element, 'or-set element')
    const dots = collectDots(asMap(this.c.store())?.entries.get(canonicalJson(element)))
    if (dots.length === 0) return false
    this.c.commit(undefined, dotSetOf(dots))
    return true
  }

  /** Removes every element observed here. */
  clear(): void {
    const dots = collectDots(this.c.store())
    if (dots.length > 0) this.c.commit(undefined, dotSetOf(dots))
  }

  has(element: T): boolean {
    assertValue(element, 'or-set element')
    return asMap(this.c.store())?.entries.has(canonicalJson(element)) === true
  }

  get size(): number {
    return asMap(this.c.store())?.entries.size ?? 0
  }

  /** Elements, sorted by canonical JSON. */
  value(): T[] {
    return ORSET.value(this.c.store()) as T[]
  }
}

/** Multi-value register operations. */
export class MvRegisterView<T extends Json = Json> {
  /** @internal */
  constructor(private readonly c: Cursor) {}

  /** Writes `value`, replacing every value observed here; concurrent writes become siblings. */
  set(value: T): void {
    assertValue(value, 'mv-register value')
    this.c.writeFun(this.c.root.nextDot(), frozenCopy(value), collectDots(this.c.store()))
  }

  /** Concurrent values (siblings), sorted by canonical JSON; empty before any write. */
  value(): T[] {
    return MV.value(this.c.store()) as T[]
  }
}

/** Last-writer-wins register operations. */
export class LwwRegisterView<T extends Json = Json> {
  /** @internal */
  constructor(private readonly c: Cursor) {}

  /** Writes `value` and returns the HLC timestamp it carries. */
  set(value: T): HlcTimestamp {
    assertValue(value, 'lww-register value')
    // Frozen: it is stored, returned to the caller and handed to conflict listeners (see frozenCopy).
    const t = Object.freeze(this.c.root.clock.now())
    const lv: LwwValue = { t, v: frozenCopy(value) }
    this.c.writeFun(this.c.root.nextDot(), lv, collectDots(this.c.store()))
    return t
  }

  /** The value of the highest (HLC, dot) sibling, or undefined before any write. */
  value(): T | undefined {
    return LWW.value(this.c.store()) as T | undefined
  }
}

/** Positive-negative counter operations. */
export class PnCounterView {
  /** @internal */
  constructor(private readonly c: Cursor) {}

  /** Adds `n` (a safe non-negative integer, default 1). */
  increment(n = 1): void {
    assertCount(n, 'pn-counter increment')
    this.bump(n, 0)
  }

  /** Subtracts `n` (a safe non-negative integer, default 1). */
  decrement(n = 1): void {
    assertCount(n, 'pn-counter decrement')
    this.bump(0, n)
  }

  value(): number {
    return COUNTER.value(this.c.store()) as number
  }

  private bump(inc: number, dec: number): void {
    if (inc === 0 && dec === 0) return
    // Our totals live in our one live dot; a reset (map remove) killed it, so we start from zero.
    const me = this.c.root.replicaId
    // Usually one own dot: an exact-size array, not a push-grown one.
    let old: Dot[] | undefined
    let i = inc
    let d = dec
    const own = asFun(this.c.store())
    if (own !== undefined) {
      for (const e of own.entries.values()) {
        if (e.dot.replica !== me) continue
        i += (e.value as CounterValue).inc
        d += (e.value as CounterValue).dec
        if (old === undefined) old = [e.dot]
        else old.push(e.dot)
      }
    }
    if (!Number.isSafeInteger(i) || !Number.isSafeInteger(d)) throw new RangeError('pn-counter: total exceeds Number.MAX_SAFE_INTEGER')
    const v: CounterValue = { inc: i, dec: d }
    // Standalone, our total restates every increment we ever made: the delta's context covers all
    // our earlier dots. Nested in an OrMap it does not (a reset starts it over, and our dots there
    // are shared with the map's other fields): only the live ones it overwrites (docs/semantics.md).
    this.c.writeFun(this.c.root.nextDot(), v, old ?? [], this.c.path.length === 0)
  }
}

function assertKey(k: unknown, what: string): asserts k is string {
  if (typeof k !== 'string') throw new TypeError(`${what}: key must be a string`)
  if (!isWellFormed(k)) throw new TypeError(`${what}: key is not well-formed UTF-16 (a lone surrogate would arrive as U+FFFD)`)
  if (!fitsField(k)) throw new TypeError(`${what}: key longer than ${MAX_FIELD_BYTES} UTF-8 bytes (receivers would refuse it)`)
}

/** Map of LWW registers; deletion is an LWW write too. */
export class LwwMapView<V extends Json = Json> {
  /** @internal */
  constructor(private readonly c: Cursor) {}

  /** Sets `key` to `value`; returns the write's HLC timestamp. */
  set(key: string, value: V): HlcTimestamp {
    assertKey(key, 'lww-map')
    assertValue(value, 'lww-map value')
    return this.write(key, value)
  }

  /**
   * Deletes `key` with a timestamped marker, so a concurrent older write does not bring it back.
   * Returns the deletion's HLC timestamp.
   */
  delete(key: string): HlcTimestamp {
    assertKey(key, 'lww-map')
    return this.write(key, undefined)
  }

  get(key: string): V | undefined {
    return LWW.value(asMap(this.c.store())?.entries.get(key)) as V | undefined
  }

  has(key: string): boolean {
    return this.get(key) !== undefined
  }

  /** Present keys, sorted. */
  keys(): string[] {
    // Not Object.keys(value()): an object lists integer-like keys first, in numeric order ('9' before '10').
    const m = asMap(this.c.store())
    if (m === undefined) return []
    return [...m.entries.keys()].filter((k) => LWW.value(m.entries.get(k)) !== undefined).sort()
  }

  value(): Record<string, V> {
    return LWWMAP.value(this.c.store()) as Record<string, V>
  }

  private write(key: string, value: V | undefined): HlcTimestamp {
    // Frozen: it is stored, returned to the caller and handed to conflict listeners (see frozenCopy).
    const t = Object.freeze(this.c.root.clock.now())
    const dot = this.c.root.nextDot()
    const f = new FunStore()
    const lv: LwwValue = { t, v: value === undefined ? undefined : frozenCopy(value) }
    f.entries.setEntry({ dot, value: lv })
    const delta = new MapStore()
    delta.entries.set(key, f)
    this.c.commit(delta, overwriteCtx(dot, asMap(this.c.store())?.entries.get(key)))
    return t
  }
}

/** The view handed to {@link OrMapView.update} for each field type. */
export interface FieldViews {
  'lww-register': LwwRegisterView
  'mv-register': MvRegisterView
  'pn-counter': PnCounterView
  'or-set': OrSetView
  'lww-map': LwwMapView
  'or-map': OrMapView
}

/** One field of an OrMap: its name and type. */
export interface FieldId {
  readonly name: string
  readonly type: CausalTypeName
}

const FIELD_TYPES = new Set<string>(['lww-register', 'mv-register', 'pn-counter', 'or-set', 'lww-map', 'or-map'])

function assertField(name: unknown, type: unknown): asserts type is CausalTypeName {
  if (typeof name !== 'string') throw new TypeError('or-map: field name must be a string')
  if (!isWellFormed(name)) throw new TypeError('or-map: field name is not well-formed UTF-16 (a lone surrogate would arrive as U+FFFD)')
  if (!fitsField(name)) throw new TypeError(`or-map: field name longer than ${MAX_FIELD_BYTES} UTF-8 bytes (receivers would refuse it)`)
  if (typeof type !== 'string' || !FIELD_TYPES.has(type)) throw new TypeError(`or-map: unknown field type ${String(type)}`)
}

/** Observed-remove map of nested CRDT fields, each identified by (name, type). */
export class OrMapView {
  /** @internal */
  constructor(private readonly c: Cursor) {}

  /**
   * Runs `fn` on the field's view; every write it makes goes out as one delta. Creates the field
   * on its first write.
   */
  update<K extends CausalTypeName, R>(name: string, type: K, fn: (view: FieldViews[K]) => R): R {
    assertField(name, type)
    const view = makeView(type, this.c.child(fieldKey(type, name), schemaOf(type)))
    return this.c.root.batch(() => fn(view))
  }

  /**
   * Removes the field (all types with that name when `type` is omitted) as observed here: the
   * nested state is reset. A concurrent update elsewhere survives, on top of the reset (update wins).
   * Returns whether anything was removed.
   */
  remove(name: string, type?: CausalTypeName): boolean {
    if (type !== undefined) assertField(name, type)
    const m = asMap(this.c.store())
    if (m === undefined) return false
    const dots = []
    for (const [k, s] of m.entries) {
      const f = parseFieldKey(k)
      if (f !== undefined && f.name === name && (type === undefined || f.type === type)) for (const d of collectDots(s)) dots.push(d)
    }
    if (dots.length === 0) return false
    this.c.commit(undefined, dotSetOf(dots))
    return true
  }

  /** The plain value of a field, or undefined when absent. */
  get<K extends CausalTypeName>(name: string, type: K): ReturnType<FieldViews[K]['value']> | undefined {
    assertField(name, type)
    const s = asMap(this.c.store())?.entries.get(fieldKey(type, name))
    return s === undefined ? undefined : (schemaOf(type).value(s) as ReturnType<FieldViews[K]['value']>)
  }

  /** Whether the field (of any type when `type` is omitted) is present. */
  has(name: string, type?: CausalTypeName): boolean {
    return this.fields().some((f) => f.name === name && (type === undefined || f.type === type))
  }

  /** Present fields, sorted by type code then name. */
  fields(): FieldId[] {
    const m = asMap(this.c.store())
    if (m === undefined) return []
    const out: FieldId[] = []
    for (const k of [...m.entries.keys()].sort()) {
      const f = parseFieldKey(k)
      if (f !== undefined) out.push(f)
    }
    return out
  }

  /**
   * Plain nested object: field name → that field's value. A name present with two types (written
   * concurrently as different types) appears as `name:type` for each.
   */
  value(): Record<string, unknown> {
    return ORMAP.value(this.c.store()) as Record<string, unknown>
  }
}

function makeView<K extends CausalTypeName>(type: K, c: Cursor): FieldViews[K] {
  const views: { [T in CausalTypeName]: () => FieldViews[T] } = {
    'lww-register': () => new LwwRegisterView(c),
    'mv-register': () => new MvRegisterView(c),
    'pn-counter': () => new PnCounterView(c),
    'or-set': () => new OrSetView(c),
    'lww-map': () => new LwwMapView(c),
    'or-map': () => new OrMapView(c),
  }
  return views[type]()
}
