/**
 * Small replicated types used to test the simulator and the suites themselves (not exported from
 * the package): a correct state-based grow-only counter, and two deliberately broken types the
 * suites must reject — a non-commutative "first delivered wins" register and a counter that
 * converges to the wrong value.
 */
import * as fc from 'fast-check'
import {
  decodeWith,
  encodeWith,
  readString,
  readUint,
  VersionVector,
  writeString,
  writeUint,
  type ConflictEvent,
  type DeltaOrigin,
  type Replica,
} from '@concord/core'
import type { FaultSchedule } from './arbitraries.js'
import type { ReplicaSpec } from './spec.js'

type DeltaListener = (delta: Uint8Array, origin: DeltaOrigin) => void

abstract class FixtureReplica<V> implements Replica<V> {
  abstract readonly typeName: string
  readonly replicaId: string
  private readonly listeners = new Set<DeltaListener>()

  constructor(replicaId: string) {
    this.replicaId = replicaId
  }

  abstract value(): V
  abstract version(): Uint8Array
  abstract deltaSince(version?: Uint8Array): Uint8Array
  abstract apply(delta: Uint8Array): void
  abstract state(): Uint8Array

  onDelta(fn: DeltaListener): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  onConflict(_fn: (event: ConflictEvent) => void): () => void {
    return () => undefined
  }

  protected emit(delta: Uint8Array, origin: DeltaOrigin): void {
    for (const fn of this.listeners) fn(delta, origin)
  }
}

/** Grow-only counter: per-writer totals joined by pointwise max. Its state is its version vector. */
export class GCounter extends FixtureReplica<number> {
  readonly typeName = 'g-counter'
  private readonly counts = new VersionVector()

  increment(n: number): void {
    const next = this.counts.get(this.replicaId) + n
    this.counts.set(this.replicaId, next)
    this.emit(VersionVector.from([[this.replicaId, next]]).encode(), 'local')
  }

  value(): number {
    let sum = 0
    for (const [, n] of this.counts.entries()) sum += n
    return sum
  }

  version(): Uint8Array {
    return this.counts.encode()
  }

  deltaSince(version?: Uint8Array): Uint8Array {
    if (version === undefined) return this.state()
    const seen = VersionVector.decode(version)
    const out = new VersionVector()
    for (const [k, n] of this.counts.entries()) if (n > seen.get(k)) out.set(k, n)
    return out.encode()
  }

  apply(delta: Uint8Array): void {
    const incoming = VersionVector.decode(delta)
    if (this.counts.dominates(incoming)) return
    this.counts.merge(incoming)
    this.emit(delta, 'remote')
  }

  state(): Uint8Array {
    return this.counts.encode()
  }
}

/** Spec of {@link GCounter}, with the sum of increments as oracle. */
export const gCounterSpec: ReplicaSpec<number, number, GCounter> = {
  name: 'g-counter (fixture)',
  create: (id) => new GCounter(id),
  op: fc.integer({ min: 1, max: 5 }),
  perform: (r, n) => r.increment(n),
  oracle: (ops) => ops.reduce((s, o) => s + o.op, 0),
  // An increment's delta restates its writer's running total: every earlier increment of the same
  // writer (incarnation) arrives with it, even where its own delta never did.
  carries: (op, history) => history.filter((h) => h.replica === op.replica && op.deps.has(h.id)).map((h) => h.id),
}

/**
 * Found by convergence/mixed in CI (seed 1750904065), pinned in fixtures.prop.test.ts: r3 increments
 * while partitioned (its delta dropped), increments again after the heal and crashes before
 * persisting. The second delta restates r3's total (2), so r0 counts both increments; a spec without
 * {@link ReplicaSpec.carries} has the oracle expect the first one lost with r3.
 */
export const gCounterRunningTotalAfterPartition: FaultSchedule<number> = {
  seed: 0,
  regions: 5,
  latency: 'lan',
  steps: [
    { delayMs: 0, action: { type: 'network', lossPct: 0, duplicatePct: 0, reorderPct: 0 } },
    { delayMs: 0, action: { type: 'partition', side: [3] } },
    { delayMs: 0, action: { type: 'op', region: 0, op: 1 } },
    { delayMs: 0, action: { type: 'op', region: 3, op: 1 } },
    { delayMs: 0, action: { type: 'heal' } },
    { delayMs: 0, action: { type: 'op', region: 3, op: 1 } },
    { delayMs: 0, action: { type: 'crash', region: 3 } },
    { delayMs: 0, action: { type: 'op', region: 0, op: 1 } },
    { delayMs: 0, action: { type: 'op', region: 0, op: 1 } },
  ],
}

/**
 * BROKEN: a register that keeps the first value delivered to it (a local write always overwrites).
 * `apply` is not commutative, so regions that receive writes in different orders diverge for good.
 */
export class FirstDeliveredRegister extends FixtureReplica<string> {
  readonly typeName = 'first-delivered-register'
  private current = ''
  private seq = 0

  set(v: string): void {
    this.current = v
    this.seq++
    this.emit(this.state(), 'local')
  }

  value(): string {
    return this.current
  }

  version(): Uint8Array {
    return encodeWith((e) => writeUint(e, this.seq))
  }

  deltaSince(): Uint8Array {
    return this.state()
  }

  apply(delta: Uint8Array): void {
    const v = decodeWith('ldw register', delta, (d) => {
      readUint(d)
      return readString(d)
    })
    if (this.current !== '' || v === '') return
    this.current = v
    this.seq++
    this.emit(delta, 'remote')
  }

  state(): Uint8Array {
    return encodeWith((e) => {
      writeUint(e, 0)
      writeString(e, this.current)
    })
  }
}

/** Spec of the broken {@link FirstDeliveredRegister}. */
export const firstDeliveredSpec: ReplicaSpec<string, string, FirstDeliveredRegister> = {
  name: 'first-delivered register (broken)',
  create: (id) => new FirstDeliveredRegister(id),
  op: fc.constantFrom('a', 'b', 'c', 'd'),
  perform: (r, v) => r.set(v),
}

/**
 * BROKEN: a counter whose state is a single total joined by max. Max is a join, so every region
 * converges — to the largest region's total, not to the sum of all increments. Only an oracle catches it.
 */
export class MaxCounter extends FixtureReplica<number> {
  readonly typeName = 'max-counter'
  private total = 0

  increment(n: number): void {
    this.total += n
    this.emit(this.state(), 'local')
  }

  value(): number {
    return this.total
  }

  version(): Uint8Array {
    return this.state()
  }

  deltaSince(): Uint8Array {
    return this.state()
  }

  apply(delta: Uint8Array): void {
    const n = decodeWith('max counter', delta, readUint)
    if (n > this.total) {
      this.total = n
      this.emit(delta, 'remote')
    }
  }

  state(): Uint8Array {
    return encodeWith((e) => writeUint(e, this.total))
  }
}

/** Spec of the broken {@link MaxCounter}, with the (correct) sum oracle it fails. */
export const maxCounterSpec: ReplicaSpec<number, number, MaxCounter> = {
  name: 'max counter (broken)',
  create: (id) => new MaxCounter(id),
  op: fc.integer({ min: 1, max: 5 }),
  perform: (r, n) => r.increment(n),
  oracle: (ops) => ops.reduce((s, o) => s + o.op, 0),
}

/**
 * BROKEN: a grow-only counter whose `deltaSince` only ever sends the writer's own entry, so it
 * never relays what it learned from others. Fine while every writer stays alive; a writer lost
 * in a crash takes its increments away from the regions that had not heard them directly.
 */
export class ForgetfulCounter extends GCounter {
  override deltaSince(version?: Uint8Array): Uint8Array {
    const mine = VersionVector.decode(this.state()).get(this.replicaId)
    const seen = version === undefined ? 0 : VersionVector.decode(version).get(this.replicaId)
    return VersionVector.from(mine > seen ? [[this.replicaId, mine]] : []).encode()
  }
}

/** Spec of the broken {@link ForgetfulCounter}. */
export const forgetfulCounterSpec: ReplicaSpec<number, number, ForgetfulCounter> = {
  ...(gCounterSpec as unknown as ReplicaSpec<number, number, ForgetfulCounter>),
  name: 'forgetful counter (broken)',
  create: (id) => new ForgetfulCounter(id),
}

/**
 * BROKEN: a grow-only counter whose `apply` emits what it took as a `'local'` delta. Its merges are
 * lawful and it converges; but a replication engine ships local deltas, so every region would
 * publish each write again under its own name.
 */
export class EchoCounter extends GCounter {
  override apply(delta: Uint8Array): void {
    const before = this.value()
    super.apply(delta)
    if (this.value() !== before) this.emit(delta, 'local')
  }
}

/** Spec of the broken {@link EchoCounter}. */
export const echoCounterSpec: ReplicaSpec<number, number, EchoCounter> = {
  ...(gCounterSpec as unknown as ReplicaSpec<number, number, EchoCounter>),
  name: 'echo counter (broken)',
  create: (id) => new EchoCounter(id),
}
