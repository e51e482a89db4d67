/**
 * The machinery every native CRDT shares: a causal state `(store, ctx)`, local mutations committed
 * as small deltas, `apply` as the lattice join, `deltaSince` from a causal context, canonical
 * `state()`, and the delta/conflict subscriptions. Internal module: the public classes extend it.
 */
import {
  ConfigError,
  callListeners,
  checkKnownOptions,
  isWellFormed,
  DotSet,
  Hlc,
  MAX_DOT_COUNTER,
  MAX_REPLICA_ID_BYTES,
  type ConflictEvent,
  type DeltaOrigin,
  type Dot,
  type Replica,
  rangeIndexIn,
} from '@concord/core'
import { MAX_MAP_DEPTH, type CausalTypeName, type FunSchema, type Schema } from './schema.js'
import { FunStore, MapStore, collectDots, dotSetOf, emptyStore, filterStore, joinStore, newJoinOut, type ConflictSink, type Entry, type Store } from './store.js'
import { decodeDelta, decodeFunDelta, encodeDelta, encodeFunWrite, takeFunDelta, type FunDelta } from './wire.js'

/** A dot the delta's context has seen but its store does not hold: removed there. */
function removedBy(e: Entry, fd: FunDelta): boolean {
  const ri = tableIndex(fd.table, e.dot.replica)
  if (ri < 0) return false
  const c = e.dot.counter
  return rangeIndexIn(fd.ranges, fd.rangeAt[ri] as number, fd.rangeAt[ri + 1] as number, c) >= 0 && !holdsDot(fd.dots, fd.size, ri, c)
}

/** Index of `s` in a decoded delta's string table (strictly sorted: validated), or -1. */
function tableIndex(table: readonly string[], s: string): number {
  if (table.length <= 8) return table.indexOf(s)
  let lo = 0
  let hi = table.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    const t = table[mid] as string
    if (t === s) return mid
    if (t < s) lo = mid + 1
    else hi = mid - 1
  }
  return -1
}

/**
 * Whether the first `n` of the flat `[table index, counter, ...]` dots of a decoded delta hold
 * (ri, counter). They are strictly sorted (validated): a binary search, where a walk made applying
 * a delta of n dots to a state of n entries cost O(n^2).
 */
function holdsDot(dots: readonly number[], n: number, ri: number, counter: number): boolean {
  let lo = 0
  let hi = n - 1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    const r = dots[2 * mid] as number
    const c = dots[2 * mid + 1] as number
    if (r === ri && c === counter) return true
    if (r < ri || (r === ri && c < counter)) lo = mid + 1
    else hi = mid - 1
  }
  return false
}

/**
 * The root's path in a join (shared: joins never change a path, they extend a copy). Frozen: it is
 * also the path of every root conflict event, and a listener pushing onto one changed them all.
 */
const EMPTY_PATH: readonly string[] = Object.freeze([])

/** Options every native CRDT accepts. */
export interface CrdtOptions {
  /** This writer's id: unique across all regions and instances, at most 256 UTF-8 bytes. */
  readonly replicaId: string
  /**
   * Clock for LWW timestamps. Give one to share a clock between objects of one region.
   * @default new Hlc(replicaId, { now })
   */
  readonly clock?: Hlc
  /**
   * Physical time in ms for the default clock (ignored when `clock` is given; giving both is an error).
   * @default Date.now
   */
  readonly now?: () => number
}

function validateOptions(type: string, options: unknown): { replicaId: string; clock: Hlc } {
  if (typeof options !== 'object' || options === null) throw new ConfigError(`${type}: options must be an object with a replicaId`)
  const o = options as Record<string, unknown>
  checkKnownOptions(type, o, ['replicaId', 'clock', 'now'])
  const { replicaId, clock, now } = o
  if (typeof replicaId !== 'string' || replicaId.length === 0) throw new ConfigError(`${type}: replicaId must be a non-empty string`)
  if (!isWellFormed(replicaId)) throw new ConfigError(`${type}: replicaId is not well-formed UTF-16 (a lone surrogate)`)
  if (new TextEncoder().encode(replicaId).length > MAX_REPLICA_ID_BYTES) throw new ConfigError(`${type}: replicaId longer than ${MAX_REPLICA_ID_BYTES} bytes`)
  if (clock !== undefined && !(clock instanceof Hlc)) throw new ConfigError(`${type}: clock must be an Hlc`)
  // Its node id goes into LWW deltas' string tables, which receivers read with the replica-id limit.
  if (clock !== undefined && new TextEncoder().encode(clock.node).length > MAX_REPLICA_ID_BYTES) {
    throw new ConfigError(`${type}: clock node id longer than ${MAX_REPLICA_ID_BYTES} bytes`)
  }
  if (now !== undefined && typeof now !== 'function') throw new ConfigError(`${type}: now must be a function`)
  if (clock !== undefined && now !== undefined) throw new ConfigError(`${type}: give either clock or now, not both`)
  return { replicaId, clock: clock ?? new Hlc(replicaId, now === undefined ? {} : { now: now as () => number }) }
}

/** Base of the native CRDTs. */
export abstract class CausalReplica<V> implements Replica<V> {
  readonly typeName: CausalTypeName
  readonly replicaId: string
  /** The clock stamping LWW writes; remote timestamps are observed into it on apply. */
  readonly clock: Hlc
  /** @internal */
  readonly schema: Schema
  /** @internal the live store */
  root: Store
  /** @internal every dot seen */
  readonly ctx = new DotSet()
  private readonly deltaListeners = new Set<(delta: Uint8Array, origin: DeltaOrigin) => void>()
  /** Snapshot of `deltaListeners`, replaced (never mutated) when it changes. */
  private deltaFns: ReadonlyArray<(delta: Uint8Array, origin: DeltaOrigin) => void> = []
  private readonly conflictListeners = new Set<(event: ConflictEvent) => void>()
  private batchDepth = 0
  private pending: { store: Store; ctx: DotSet } | undefined

  protected constructor(type: CausalTypeName, schema: Schema, options: CrdtOptions) {
    const { replicaId, clock } = validateOptions(type, options)
    this.typeName = type
    this.replicaId = replicaId
    this.clock = clock
    this.schema = schema
    this.root = emptyStore(schema.kind)
  }

  abstract value(): V

  version(): Uint8Array {
    return this.ctx.encode()
  }

  deltaSince(version?: Uint8Array): Uint8Array {
    if (version === undefined) return this.state()
    const v = DotSet.decode(version)
    // Alive dots the asker already holds need no word; everything else we know (new dots and
    // dead ones) goes in the context, which ranges keep compact.
    const known = collectDots(this.root).filter((d) => v.has(d))
    return encodeDelta(this.typeName, this.schema, filterStore(this.root, v), this.ctx.difference(dotSetOf(known)))
  }

  state(): Uint8Array {
    return encodeDelta(this.typeName, this.schema, this.root, this.ctx)
  }

  /** One delta joining `deltas` (each validated as in {@link apply}): what applying them in order does. */
  mergeDeltas(deltas: readonly Uint8Array[]): Uint8Array {
    const store = emptyStore(this.schema.kind)
    const ctx = new DotSet()
    for (const d of deltas) {
      const dec = decodeDelta(this.typeName, this.schema, d)
      joinStore(this.schema, store, ctx, dec.store, dec.ctx, [], undefined, newJoinOut())
      ctx.union(dec.ctx)
    }
    return encodeDelta(this.typeName, this.schema, store, ctx)
  }

  apply(delta: Uint8Array): void {
    if (this.schema.kind === 'fun' && this.root.kind === 'fun') return this.applyFun(this.schema, this.root, delta)
    const dec = decodeDelta(this.typeName, this.schema, delta)
    // Everything below works on validated data and cannot fail.
    // Conflict events are only worked out for someone listening.
    const sink: ConflictSink | undefined = this.conflictListeners.size === 0 ? undefined : { typeName: this.typeName, events: [] }
    const out = newJoinOut()
    const grows = !this.ctx.includes(dec.ctx)
    joinStore(this.schema, this.root, this.ctx, dec.store, dec.ctx, EMPTY_PATH, sink, out)
    this.ctx.union(dec.ctx)
    for (const t of out.times) this.clock.observe(t)
    if (!grows && out.added.length === 0 && out.removed.length === 0) return
    if (sink !== undefined) for (const ev of sink.events) callListeners(this.typeName, [...this.conflictListeners], ev, undefined)
    this.emit(delta, 'remote')
  }

  /**
   * {@link apply} for a dot-to-value root (registers, counters), joining the flat decoded delta
   * straight into the state: the same join as joinStore's (a dot survives if both sides hold it,
   * or one side holds it and the other's context has never seen it), without building the
   * delta's store and context first.
   */
  private applyFun(schema: FunSchema, root: FunStore, delta: Uint8Array): void {
    const fd = takeFunDelta()
    let added = 0
    let removed = 0
    let grows = false
    try {
      decodeFunDelta(this.typeName, schema, delta, fd)
      // Everything below works on validated data and cannot fail.
      const { table, rangeAt, ranges, dots, values } = fd
      const ctx = this.ctx
      for (let i = 0; i < table.length && !grows; i++) {
        for (let j = rangeAt[i] as number; j < (rangeAt[i + 1] as number); j += 2) {
          if (!ctx.coversRange(table[i] as string, ranges[j] as number, ranges[j + 1] as number)) {
            grows = true
            break
          }
        }
      }
      const te = root.entries
      const n = fd.size
      for (let i = 0; i < n; i++) {
        const replica = table[dots[2 * i] as number] as string
        const counter = dots[2 * i + 1] as number
        // Seen before: we hold it (both sides do) or it is dead here. Our store's dots are all in
        // our context, so an unseen dot cannot be in the store yet.
        if (ctx.hasCounter(replica, counter)) continue
        const dot: Dot = { replica, counter }
        const value = values[i]
        te.setEntry({ dot, value })
        added++
        if (schema.time !== undefined) this.clock.observe(schema.time(value))
      }
      if (table.length > 0) removed = te.removeIf(removedBy, fd)
      for (let i = 0; i < table.length; i++) ctx.addRanges(table[i] as string, ranges, rangeAt[i] as number, rangeAt[i + 1] as number)
    } finally {
      fd.release()
    }
    if (!grows && added === 0 && removed === 0) return
    const te = root.entries
    if (this.conflictListeners.size > 0 && added > 0 && te.size > 1 && schema.siblings !== undefined) {
      const ev = schema.siblings([...te.values()], EMPTY_PATH, this.typeName)
      if (ev !== undefined) callListeners(this.typeName, [...this.conflictListeners], ev, undefined)
    }
    this.emit(delta, 'remote')
  }

  onDelta(fn: (delta: Uint8Array, origin: DeltaOrigin) => void): () => void {
    this.deltaListeners.add(fn)
    this.deltaFns = [...this.deltaListeners]
    return () => {
      this.deltaListeners.delete(fn)
      this.deltaFns = [...this.deltaListeners]
    }
  }

  onConflict(fn: (event: ConflictEvent) => void): () => void {
    this.conflictListeners.add(fn)
    return () => {
      this.conflictListeners.delete(fn)
    }
  }

  /** @internal A fresh dot for a local write. */
  nextDot(): Dot {
    const counter = this.ctx.max(this.replicaId) + 1
    // Receivers refuse counters past MAX_DOT_COUNTER (decodeDelta), and a received context may
    // reach it: a write past it would be kept here and refused everywhere else, so it is refused
    // here, before anything changes.
    if (counter > MAX_DOT_COUNTER) throw new RangeError(`${this.typeName}: dot counter exhausted`)
    return { replica: this.replicaId, counter }
  }

  /** @internal Joins a local delta into the state and emits it (or adds it to the open batch). */
  commit(store: Store | undefined, ctx: DotSet): void {
    joinStore(this.schema, this.root, this.ctx, store, ctx, EMPTY_PATH, undefined, newJoinOut())
    this.ctx.union(ctx)
    if (this.pending !== undefined) {
      joinStore(this.schema, this.pending.store, this.pending.ctx, store, ctx, EMPTY_PATH, undefined, newJoinOut())
      this.pending.ctx.union(ctx)
    } else this.emit(encodeDelta(this.typeName, this.schema, store, ctx), 'local')
  }

  /**
   * @internal {@link commit} of one write at a fun-store root outside a batch — the entry (`dot`,
   * `value`) overwriting the live dots `old` — without building the delta's store and context:
   * the same state change and the same delta bytes. Returns false (nothing done) elsewhere.
   * `restatesOwn`: the delta's context covers all of `dot`'s replica's dots up to it (see Cursor.writeFun).
   */
  commitRootWrite(dot: Dot, value: unknown, old: readonly Dot[], restatesOwn = false): boolean {
    const root = this.root
    const schema = this.schema
    if (this.pending !== undefined || root.kind !== 'fun' || schema.kind !== 'fun') return false
    // joinStore's result: the fresh dot (never seen: nextDot) is added, the overwritten live dots
    // (in the delta's context, not in its store) removed; the context gains them all.
    for (const o of old) root.entries.deleteDot(o)
    root.entries.setEntry({ dot, value })
    for (const o of old) this.ctx.add(o)
    this.ctx.add(dot)
    this.emit(encodeFunWrite(this.typeName, schema, dot, value, old, restatesOwn), 'local')
    return true
  }

  /** @internal Runs `fn`, emitting the mutations it commits as one delta. */
  batch<R>(fn: () => R): R {
    if (this.batchDepth === 0) this.pending = { store: emptyStore(this.schema.kind), ctx: new DotSet() }
    this.batchDepth++
    try {
      return fn()
    } finally {
      this.batchDepth--
      if (this.batchDepth === 0) {
        const p = this.pending as { store: Store; ctx: DotSet }
        this.pending = undefined
        // Emitted even when fn threw: what it committed is already in the state.
        if (!p.ctx.isEmpty()) this.emit(encodeDelta(this.typeName, this.schema, p.store, p.ctx), 'local')
      }
    }
  }

  private emit(delta: Uint8Array, origin: DeltaOrigin): void {
    // The snapshot array: listeners (un)subscribing during the loop do not change who is called.
    callListeners(this.typeName, this.deltaFns, delta, origin)
  }
}

/**
 * A position in a replica's store (a path of map keys) with its schema: what a kernel operates
 * on, whether it is the root of a standalone type or a field nested in an OrMap.
 * @internal
 */
export class Cursor {
  constructor(
    readonly root: CausalReplica<unknown>,
    readonly path: readonly string[],
    readonly schema: Schema,
  ) {
    // A map-kind value (or-set, lww-map, or-map) at the end of the path is one level more, and the
    // decoder counts it: refused here, not after the write, when every receiver would refuse it.
    if (path.length + (schema.kind === 'map' ? 1 : 0) > MAX_MAP_DEPTH) throw new RangeError(`maps nest deeper than ${MAX_MAP_DEPTH}`)
  }

  /** The live store at this position, if any. */
  store(): Store | undefined {
    let s: Store | undefined = this.root.root
    for (const k of this.path) {
      if (s === undefined || s.kind !== 'map') return undefined
      s = s.entries.get(k)
    }
    return s
  }

  child(key: string, schema: Schema): Cursor {
    return new Cursor(this.root, [...this.path, key], schema)
  }

  /**
   * Commits a write at this fun-store position: the entry (`dot`, a fresh dot, with `value`)
   * overwriting the live dots `old` (a fresh array: it becomes the delta's context). At the root,
   * outside a batch, without building the delta. With `restatesOwn` the context also covers every
   * earlier dot of `dot`'s replica, live or not: a write that restates all of them (a standalone
   * counter's running total) must remove them wherever they are still alive, including a dot
   * whose overwrite was lost on the way (else that region would count it twice).
   */
  writeFun(dot: Dot, value: unknown, old: Dot[], restatesOwn = false): void {
    if (this.path.length === 0 && this.root.commitRootWrite(dot, value, old, restatesOwn)) return
    const f = new FunStore()
    f.entries.setEntry({ dot, value })
    old.push(dot)
    const ctx = dotSetOf(old)
    if (restatesOwn) ctx.addRange(dot.replica, 1, dot.counter)
    this.commit(f, ctx)
  }

  /** Commits a delta expressed at this position, wrapping it in the enclosing map keys. */
  commit(store: Store | undefined, ctx: DotSet): void {
    let s = store
    for (let i = this.path.length - 1; i >= 0; i--) {
      const m = new MapStore()
      if (s !== undefined && s.entries.size > 0) m.entries.set(this.path[i] as string, s)
      s = m
    }
    this.root.commit(s, ctx)
  }
}
