/**
 * A replica that does no CRDT work, for the benchmarks' "no-op replica" rows: it emits a fixed
 * delta of a PnCounter increment's size on each {@link NoopReplica.write} and counts what it is
 * given in {@link NoopReplica.apply}. Run through a RegionNode, it leaves everything else in place
 * (envelopes, outbox, write-ahead log, applied set, transport), so the difference between it and
 * the PnCounter rows is what the CRDT itself costs: building, encoding, decoding and joining deltas.
 * It converges on nothing — a benchmark instrument, not a data type.
 */
import type { DeltaOrigin, Replica, ReplicaFactory } from '@concord/core'
import { crdtFactory, type PnCounter } from '@concord/crdt'
import type { RegionNode } from '@concord/replication'

/** Bytes of one PnCounter increment's delta by a writer of the benchmarks (`eu/i1`), after a first one. */
export function counterDeltaBytes(): number {
  const c = crdtFactory('pn-counter').create('eu/i1') as unknown as PnCounter
  let bytes = 0
  c.onDelta((d) => (bytes = d.length))
  c.increment(1)
  c.increment(1)
  return bytes
}

export class NoopReplica implements Replica<number> {
  readonly typeName = 'noop'
  private readonly listeners: Array<(delta: Uint8Array, origin: DeltaOrigin) => void> = []
  private readonly delta: Uint8Array
  private applied = 0

  constructor(
    readonly replicaId: string,
    deltaBytes: number,
  ) {
    this.delta = new Uint8Array(deltaBytes).fill(1)
  }

  /** Emits the fixed delta as a local change. */
  write(): void {
    for (const fn of this.listeners) fn(this.delta, 'local')
  }

  /** Deltas applied so far. */
  value(): number {
    return this.applied
  }

  version(): Uint8Array {
    return new Uint8Array(0)
  }

  deltaSince(): Uint8Array {
    return this.delta
  }

  apply(): void {
    this.applied++
  }

  state(): Uint8Array {
    return this.delta
  }

  mergeDeltas(deltas: readonly Uint8Array[]): Uint8Array {
    return deltas[0] ?? this.delta
  }

  onDelta(fn: (delta: Uint8Array, origin: DeltaOrigin) => void): () => void {
    this.listeners.push(fn)
    return () => {
      const i = this.listeners.indexOf(fn)
      if (i >= 0) this.listeners.splice(i, 1)
    }
  }

  onConflict(): () => void {
    return () => undefined
  }
}

/**
 * Factory of {@link NoopReplica}s under the type name `noop`. Its deltas default to a counter
 * increment's size plus the type names' difference, so its envelopes are as long as the counter's.
 */
export function noopFactory(deltaBytes = counterDeltaBytes() + 'pn-counter'.length - 'noop'.length): ReplicaFactory<number, NoopReplica> {
  return { typeName: 'noop', create: (replicaId) => new NoopReplica(replicaId, deltaBytes) }
}

/** What a benchmark's documents are: PnCounters (the real thing) or no-op replicas (the engine without CRDT work). */
export type BenchReplica = 'pn-counter' | 'noop'

/** Factories for a RegionNode of the benchmarks. */
export function benchFactories(kind: BenchReplica): Record<string, ReplicaFactory<unknown>> {
  return kind === 'noop' ? { noop: noopFactory() } : { 'pn-counter': crdtFactory('pn-counter') }
}

/** The benchmarks' document ids by default: d0, d1, ... */
export const shortDocId = (d: number): string => `d${d}`

/** UUID-shaped document ids (36 characters), the length of the ids many applications use. */
export const uuidDocId = (d: number): string => `6f1c2a9e-4b1d-4e8a-9c3f-${d.toString(16).padStart(12, '0')}`

/** Opens documents docId(0)..docId(n-1) of `kind` on `node`; returns one write to each (an increment, or a no-op delta). */
export async function openWriters(node: RegionNode, kind: BenchReplica, n: number, docId: (d: number) => string = shortDocId): Promise<() => void> {
  if (kind === 'noop') {
    const docs: NoopReplica[] = []
    for (let d = 0; d < n; d++) docs.push((await node.open(docId(d), 'noop')) as unknown as NoopReplica)
    return () => {
      for (const r of docs) r.write()
    }
  }
  const docs: PnCounter[] = []
  for (let d = 0; d < n; d++) docs.push((await node.open(docId(d), 'pn-counter')) as unknown as PnCounter)
  return () => {
    for (const c of docs) c.increment(1)
  }
}
