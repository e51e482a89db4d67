/**
 * The Replica contract: one replicated object. Every backend (native CRDTs, Yjs, Automerge)
 * implements it, so replication, routing, the simulator and the benchmarks never know which
 * backend they hold.
 */
import type { Dot } from './dots.js'
import type { HlcTimestamp } from './hlc.js'
import { describeThrown } from './errors.js'

/** Where a delta came from: a local mutation, or {@link Replica.apply} of remote bytes. */
export type DeltaOrigin = 'local' | 'remote'

/** One side of a conflict: a write, with enough of its clock to say who made it and when. */
export interface ConflictSide {
  /** The written value (plain JS). */
  readonly value: unknown
  /** Replica that made the write. */
  readonly replica: string
  /** The write's dot, for dot-based types. */
  readonly dot?: Dot
  /** The write's hybrid logical timestamp, for LWW types. */
  readonly time?: HlcTimestamp
  /** Backend-specific operation id (Automerge op id, for example). */
  readonly opId?: string
}

/**
 * What kind of write a merge hid:
 * - `lww-overwrite`: a last-writer-wins register kept `winner`, concurrent `losers` are hidden;
 * - `siblings`: a multi-value register now holds concurrent values (`losers` lists all siblings);
 * - `add-wins`: an observed-remove was overridden by a concurrent add (`winner` is the surviving add,
 *   `losers` the removed dots);
 * - `update-wins`: a map key removal was overridden by a concurrent update of the key;
 * - `concurrent-assign`: a document backend (Automerge) resolved concurrent assignments to one field.
 */
export type ConflictKind = 'lww-overwrite' | 'siblings' | 'add-wins' | 'update-wins' | 'concurrent-assign'

/** Reported when a merge hides a write. Both sides come with their clocks. */
export interface ConflictEvent {
  readonly kind: ConflictKind
  /** Type name of the replica that reported it. */
  readonly typeName: string
  /** Path inside the object (map keys, set element), empty for the root. */
  readonly path: readonly string[]
  /** What the merged state shows, when one write wins. */
  readonly winner?: ConflictSide
  /** The hidden writes (for `siblings`: every concurrent value). */
  readonly losers: readonly ConflictSide[]
}

/**
 * One replicated object.
 *
 * Laws every implementation keeps (checked by the suites in `@concord/testing`):
 * `apply` is a join: idempotent, commutative and associative over deltas; applying bytes that do not
 * decode throws `DecodeError` and leaves the replica unchanged; two replicas that have applied the
 * same deltas have equal `value()` and equal `state()` bytes.
 */
export interface Replica<V> {
  /** Backend type name: `or-set`, `yjs`, `automerge`, ... */
  readonly typeName: string
  /** This writer's id, unique across all regions and instances. */
  readonly replicaId: string
  /** Plain JS view of the current value, for reads and equality checks. */
  value(): V
  /** Encoded frontier: everything this replica has seen. */
  version(): Uint8Array
  /** What a holder of `version` lacks; without it, the whole state. */
  deltaSince(version?: Uint8Array): Uint8Array
  /** Joins a delta (or a whole state). Bad bytes → `DecodeError` and no change. Never emits a remote delta back as local. */
  apply(delta: Uint8Array): void
  /**
   * Canonical encoding of the full replicated state: replicas that saw the same updates return
   * identical bytes. Also the persistence snapshot: `apply(state())` on an empty replica restores it.
   */
  state(): Uint8Array
  /**
   * Subscribes to deltas: local mutations and applied remote deltas. Every listener gets the same
   * array: read it or keep it, never change it. Returns an unsubscribe function. A listener that
   * throws stops neither the other listeners nor the mutation or apply that called it (see
   * {@link callListeners}): its error becomes a process warning.
   */
  onDelta(fn: (delta: Uint8Array, origin: DeltaOrigin) => void): () => void
  /** Subscribes to conflict events raised by merges. Returns an unsubscribe function. Listeners as in onDelta. */
  onConflict(fn: (event: ConflictEvent) => void): () => void
  /**
   * Optional: one delta with the effect of applying `deltas` in order (deltas this replica emitted
   * or applied). A replication node merges a document's local deltas of one flush with it; a type
   * without it is merged with `deltaSince` of a version the node keeps per document instead (a
   * `version()` per document and batch).
   */
  mergeDeltas?(deltas: readonly Uint8Array[]): Uint8Array
}

/** Creates empty replicas of one type, for replication, stores and the simulator. */
export interface ReplicaFactory<V, R extends Replica<V> = Replica<V>> {
  readonly typeName: string
  /** An empty replica with the given writer id. */
  create(replicaId: string): R
}

/**
 * Calls `listeners` in order with `a` and `b`. One that throws stops neither the others nor the
 * caller — whose state change is already made, so an exception escaping into it (a replica's
 * apply, a transport's fetch loop) would make it report a failure that did not happen (a valid
 * record dead-lettered, a consumer restarted) — its error becomes a process warning
 * (`CONCORD_LISTENER_THREW`), as a DOM EventTarget reports a throwing listener without stopping.
 * For replica and transport implementations.
 */
export function callListeners<A, B>(what: string, listeners: ArrayLike<(a: A, b: B) => void>, a: A, b: B): void {
  for (let i = 0; i < listeners.length; i++) {
    try {
      ;(listeners[i] as (a: A, b: B) => void)(a, b)
    } catch (e) {
      // describeThrown, not String(e): a thrown value without a string form made String() throw
      // out of here, stopping the other listeners and the caller.
      process.emitWarning(`${what}: a listener threw ${describeThrown(e)}`, { code: 'CONCORD_LISTENER_THREW' })
    }
  }
}

/**
 * A deep copy of the JSON-like value `v` whose plain objects hold every key as an own property,
 * for replicas whose `value()` comes from a decoder that builds objects by assignment (lib0's
 * readAny under Yjs, Automerge's toJS). There a `__proto__` key of remote data becomes the
 * object's prototype — its key gone from the value, its fields showing through every lookup
 * (`user.isAdmin`), and the receiver's value no longer equal to the sender's. Such a prototype (a
 * plain object, not a class's) comes back as the own key `__proto__`. Arrays are copied; class
 * instances (Uint8Array, Date, a library's own types) are kept as they are.
 */
export function ownKeysCopy(v: unknown): unknown {
  if (typeof v !== 'object' || v === null) return v
  if (Array.isArray(v)) return v.map(ownKeysCopy)
  const proto = Object.getPrototypeOf(v) as object | null
  if (proto !== Object.prototype && proto !== null && !isInjectedPrototype(proto)) return v
  const out: Record<string, unknown> = {}
  const src = v as Record<string, unknown>
  for (const k of Object.keys(src)) defineOwn(out, k, ownKeysCopy(src[k]))
  if (proto !== Object.prototype && proto !== null && !Object.hasOwn(src, '__proto__')) defineOwn(out, '__proto__', ownKeysCopy(proto))
  return out
}

/**
 * A prototype that is data (a plain object set through a `__proto__` key), not a class's: a
 * class's prototype is its constructor's `prototype` (data may hold a `constructor` key, never a
 * function).
 */
function isInjectedPrototype(p: object): boolean {
  if (p === Object.prototype) return false
  const c: unknown = (p as { constructor?: unknown }).constructor
  return !(typeof c === 'function' && (c as { prototype?: unknown }).prototype === p)
}

function defineOwn(out: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true })
}
