/**
 * What a user provides to run Concord's property suites on a replicated type: how to create a
 * replica, which operations exist, how to perform one, and (optionally) the type's sequential
 * specification, the oracle the converged value is checked against.
 */
import type * as fc from 'fast-check'
import type { Replica } from '@concord/core'

/** Environment handed to {@link ReplicaSpec.create}: the simulator's virtual, per-region skewed clock. */
export interface SpecEnv {
  /** Physical time of the replica's region in ms (virtual; may be skewed by minutes). */
  readonly now: () => number
  /** Seeded random source for the replica, when it needs one. */
  readonly random: () => number
}

/** One operation as performed, with its causal past: the ground truth an oracle reasons over. */
export interface OpRecord<Op> {
  /** Unique id, in issue order. */
  readonly id: number
  /** Replica that performed it. */
  readonly replica: string
  readonly op: Op
  /**
   * Ids of every operation whose effect had reached the issuer when this one was performed: its
   * observed causal past, tracked by the simulator from message flow. A delta that arrives ahead
   * of its own causal past brings only itself, so `deps` is not always transitively closed.
   */
  readonly deps: ReadonlySet<number>
  /** Whatever {@link ReplicaSpec.perform} returned (for example the HLC timestamp of an LWW write). */
  readonly meta: unknown
}

/** Describes a replicated type to the simulator and the property suites. */
export interface ReplicaSpec<V, Op, R extends Replica<V> = Replica<V>> {
  /** Display name, used in test titles and failure reports. */
  readonly name: string
  /** Creates an empty replica with the given writer id. */
  create(replicaId: string, env: SpecEnv): R
  /** Operations to generate. */
  readonly op: fc.Arbitrary<Op>
  /** Performs `op` on `replica` as a local mutation; the return value is kept as the op's `meta`. */
  perform(replica: R, op: Op): unknown
  /**
   * The sequential specification: the value a replica must show once it has seen exactly `ops`
   * (the ops that survived the run, in issue order). `history` holds every op performed, in issue
   * order, lost ones included: an op's `deps` may name a lost op, and what that op did where it ran
   * (say, removed a dot) shaped the deltas of the ops issued after it there. Omit for types with no
   * meaningful oracle.
   */
  oracle?(ops: readonly OpRecord<Op>[], history: readonly OpRecord<Op>[]): V
  /**
   * Ids of earlier operations whose effect the delta of `op` carries besides its own — for types
   * whose deltas restate a running value, like a counter's per-writer total: that delta brings the
   * writer's earlier increments along, so where it arrives they count as seen even if their own
   * deltas were lost. `history` holds every earlier op (of the document); `op.meta` is not known yet
   * (this is asked before the op runs). Omit when a delta carries only its own op.
   */
  carries?(op: OpRecord<Op>, history: readonly OpRecord<Op>[]): Iterable<number>
  /** Value equality; defaults to structural deep equality. */
  equals?(a: V, b: V): boolean
}
