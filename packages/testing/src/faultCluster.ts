/**
 * A harness for fault tests of a transport on a real server: three replication nodes (eu, us, ap)
 * replicating a PnCounter — whose exact sum shows that no acknowledged update was lost — and an
 * OrSet, driven by `pump()` rounds or started, with stores that can freeze mid-write (a process
 * that dies) and per-incarnation counts of what each node applied (so a test can check that
 * redelivered envelopes were applied once). The transport, the node and the store are made by the
 * caller: `RegionNode` and `MemoryStore` fit, and so does a node or store of the caller's own.
 */
import { expect } from 'vitest'
import { bytesEqual, encodeEnvelope, isConcordError, type Envelope, type Replica, type Store, type StoreOp, type Transport } from '@concord/core'
import type { OrSet, PnCounter } from '@concord/crdt'

/** The regions of a {@link FaultCluster}. */
export const FAULT_REGIONS = ['eu', 'us', 'ap'] as const
export type FaultRegion = (typeof FAULT_REGIONS)[number]

/** Store wrapper: tells of each durable write, and can freeze (the process died mid-write). */
export class WatchedStore<S extends Store = Store> implements Store {
  readonly name = 'watched'
  /** Called after each completed write. */
  onWritten: () => void = () => undefined
  /** When set, the next write holding a consumer position (`pos/…`) never completes: the process "died". */
  freezeOnConsume = false
  /** No write completes any more. */
  frozen = false

  constructor(readonly inner: S) {}

  get(key: string): Promise<Uint8Array | undefined> {
    return this.inner.get(key)
  }

  put(key: string, value: Uint8Array): Promise<void> {
    return this.write([{ op: 'put', key, value }])
  }

  delete(key: string): Promise<void> {
    return this.write([{ op: 'delete', key }])
  }

  async write(batch: readonly StoreOp[]): Promise<void> {
    if (this.frozen || (this.freezeOnConsume && batch.some((op) => op.key.startsWith('pos/')))) {
      this.frozen = true
      return new Promise<void>(() => undefined)
    }
    await this.inner.write(batch)
    this.onWritten()
  }

  keys(prefix: string): Promise<readonly string[]> {
    return this.inner.keys(prefix)
  }

  close(): Promise<void> {
    return this.inner.close()
  }
}

/** What the harness needs of a replication node (`RegionNode` fits). */
export interface FaultNode {
  open(docId: string, typeName: string): Promise<Replica<unknown>>
  flush(): Promise<void>
  pump(): Promise<{ readonly records: number }>
  /** Trims the node's own region's log below what every region has applied (only {@link trimsOnlyStable} calls it). */
  trimStable?(): Promise<string | undefined>
  metrics(): {
    readonly seq: number
    readonly peers: readonly { readonly region: string; readonly applied: number; readonly rejected: number; readonly repairsRequested: number; readonly repairsApplied: number }[]
  }
  close(): Promise<void>
}

/** How a {@link FaultCluster} makes its parts. */
export interface FaultClusterOptions<T extends Transport, N extends FaultNode, S extends Store> {
  /** A new client of the server, for one node incarnation (a restarted node gets a new one). */
  readonly transport: () => T
  /** A node of `region` over `transport` and `store`, with the 'pn-counter' and 'or-set' types. */
  readonly node: (region: FaultRegion, transport: T, store: Store) => N
  /** A new empty store (a restart may pass the old one's contents to {@link FaultCluster.start} instead). */
  readonly store: () => S
  /** Lines describing a transport's delivery state, printed when a cluster did not converge. */
  readonly describeTransport?: (transport: T) => readonly string[]
  /** Default deadline of {@link FaultCluster.settle} and {@link FaultCluster.waitConverged}. @default 30000 */
  readonly settleMs?: number
}

/** One region's running node. */
export interface FaultMember<T extends Transport, N extends FaultNode, S extends Store> {
  readonly region: FaultRegion
  readonly node: N
  readonly transport: T
  readonly store: WatchedStore<S>
  /** Envelopes applied per origin region and durably stored, summed over this region's earlier incarnations. */
  readonly applied: Map<string, number>
  /** The same for the running incarnation, as of its last durable write. */
  readonly current: Map<string, number>
}

/** Calls `fn` until it does not fail with a retriable Concord error (`attempts` tries, 25 ms apart). */
export async function retrying<R>(fn: () => Promise<R>, attempts = 200): Promise<R> {
  for (let i = 0; ; i++) {
    try {
      return await fn()
    } catch (e) {
      if (!(isConcordError(e) && e.retriable) || i >= attempts) throw e
      await new Promise((r) => setTimeout(r, 25))
    }
  }
}

/** Three regions over one server, with the expected counter sum and set members of what they wrote. */
export class FaultCluster<T extends Transport, N extends FaultNode, S extends Store> {
  readonly members = new Map<FaultRegion, FaultMember<T, N, S>>()
  /** Sum of every increment written so far. */
  expected = 0
  /** Every set member written so far. */
  readonly tags = new Set<string>()
  private readonly settleMs: number

  constructor(private readonly options: FaultClusterOptions<T, N, S>) {
    this.settleMs = options.settleMs ?? 30_000
  }

  /**
   * Starts (or restarts) `region`'s node over a new transport client and `store` (default: a new
   * one); a restart carries the earlier incarnations' applied counts over.
   */
  start(region: FaultRegion, store: S = this.options.store()): FaultMember<T, N, S> {
    const prev = this.members.get(region)
    const transport = this.options.transport()
    const watched = new WatchedStore(store)
    const node = this.options.node(region, transport, watched)
    const applied = new Map<string, number>()
    if (prev !== undefined) for (const r of FAULT_REGIONS) applied.set(r, (prev.applied.get(r) ?? 0) + (prev.current.get(r) ?? 0))
    const m: FaultMember<T, N, S> = { region, node, transport, store: watched, applied, current: new Map() }
    watched.onWritten = () => {
      for (const p of node.metrics().peers) m.current.set(p.region, p.applied)
    }
    this.members.set(region, m)
    return m
  }

  member(region: FaultRegion): FaultMember<T, N, S> {
    const m = this.members.get(region)
    if (m === undefined) throw new Error(`fault cluster: ${region} was never started`)
    return m
  }

  async counter(region: FaultRegion): Promise<PnCounter> {
    return (await this.member(region).node.open('hits', 'pn-counter')) as unknown as PnCounter
  }

  async set(region: FaultRegion): Promise<OrSet<string>> {
    return (await this.member(region).node.open('tags', 'or-set')) as unknown as OrSet<string>
  }

  /**
   * `n` local updates in `region`, then a flush, retried through retriable failures — or, with
   * `tolerate` (the server is down), tried once: the updates are durable in the node's store once
   * flush has persisted them, and its outbox sends them on a later round.
   */
  async write(region: FaultRegion, n: number, tag: string, tolerate = false): Promise<void> {
    const c = await this.counter(region)
    const s = await this.set(region)
    for (let i = 0; i < n; i++) {
      const by = (i % 7) + 1
      c.increment(by)
      this.expected += by
      if (i % 10 === 0) {
        s.add(`${tag}-${i}`)
        this.tags.add(`${tag}-${i}`)
      }
    }
    if (tolerate) await this.member(region).node.flush().catch(() => undefined)
    else await retrying(() => this.member(region).node.flush())
  }

  /** One pump round of every node; retriable failures are left to the next round. Returns the records read. */
  async pumpAll(): Promise<number> {
    let records = 0
    for (const m of this.members.values()) {
      try {
        records += (await m.node.pump()).records
      } catch (e) {
        if (!(isConcordError(e) && e.retriable)) throw e
      }
    }
    return records
  }

  /** Pumps until every region holds every update (or `deadlineMs` passes). */
  async settle(deadlineMs = this.settleMs): Promise<void> {
    const until = Date.now() + deadlineMs
    while (Date.now() < until) {
      const busy = await this.pumpAll()
      if (busy === 0 && (await this.converged())) return
      if (busy === 0) await new Promise((r) => setTimeout(r, 20))
    }
  }

  /** Waits, without pumping, until every region holds every update (or `deadlineMs` passes): for started nodes. */
  async waitConverged(deadlineMs = this.settleMs): Promise<void> {
    const until = Date.now() + deadlineMs
    while (Date.now() < until && !(await this.converged())) await new Promise((r) => setTimeout(r, 50))
  }

  /** Whether every region holds the exact sum and set, with equal state bytes. */
  async converged(): Promise<boolean> {
    const states: Uint8Array[] = []
    for (const r of FAULT_REGIONS) {
      const c = await this.counter(r)
      const s = await this.set(r)
      if (c.value() !== this.expected || s.value().length !== this.tags.size) return false
      states.push(c.state(), s.state())
    }
    for (let i = 2; i < states.length; i++) if (!bytesEqual(states[i] as Uint8Array, states[i % 2] as Uint8Array)) return false
    return true
  }

  /**
   * Each node's transport state (when the options describe it) and what each node applied: printed
   * when a test did not converge, so that a failure in CI can be told apart (a stuck consumer,
   * records dropped as already delivered, a node that stopped applying).
   */
  describeState(): string {
    const lines: string[] = []
    for (const m of this.members.values()) {
      for (const line of this.options.describeTransport?.(m.transport) ?? []) lines.push(`${m.region} ${line}`)
      const metrics = m.node.metrics()
      const peers = metrics.peers.map((p) => ({ region: p.region, applied: p.applied, rejected: p.rejected, repairsRequested: p.repairsRequested, repairsApplied: p.repairsApplied }))
      lines.push(`${m.region} node: seq ${metrics.seq}, peers ${JSON.stringify(peers)}`)
    }
    return lines.join('\n')
  }

  /** Every region converged: exact sums, equal values and equal state bytes. */
  async expectConverged(): Promise<void> {
    if (!(await this.converged())) console.error(`not converged:\n${this.describeState()}`)
    const values = []
    for (const r of FAULT_REGIONS) {
      const c = await this.counter(r)
      const s = await this.set(r)
      values.push({ region: r, counter: c.value(), tags: [...s.value()].sort(), counterState: [...c.state()], setState: [...s.state()] })
    }
    const first = values[0] as (typeof values)[number]
    for (const v of values) {
      expect(v.counter, `${v.region}: no acknowledged update lost`).toBe(this.expected)
      expect(v.tags).toEqual([...this.tags].sort())
      expect(v.counterState).toEqual(first.counterState)
      expect(v.setState).toEqual(first.setState)
    }
  }

  /**
   * Each region applied each other region's envelopes at most once (`exact`: exactly once), counted
   * over its incarnations as of their last durable write: redelivered envelopes were dropped.
   */
  expectAppliedOnce(exact: boolean): void {
    for (const reader of this.members.values()) {
      for (const origin of FAULT_REGIONS) {
        if (origin === reader.region) continue
        const written = this.member(origin).node.metrics().seq
        const applied = (reader.applied.get(origin) ?? 0) + (reader.current.get(origin) ?? 0)
        if (exact) expect(applied, `${reader.region} applied ${origin}'s envelopes once`).toBe(written)
        else expect(applied, `${reader.region} applied ${origin}'s envelopes at most once`).toBeLessThanOrEqual(written)
      }
    }
  }

  /** Closes every node (not a frozen one: its process is dead) and every transport client. */
  async close(): Promise<void> {
    for (const m of this.members.values()) {
      if (!m.store.frozen) await m.node.close().catch(() => undefined)
      await m.transport.close()
    }
  }
}

/**
 * Trimming on a real log while a region lags: `eu` trims its log (trimStable) after every round
 * while `ap` reads nothing, so only what `us` and `ap` have both applied may go. Checks that a
 * first trim, with every region caught up, removes something (the scenario exercises trimming at
 * all), and that `ap`, reading again, gets every update eu wrote meanwhile from the log itself:
 * converged, each envelope applied once, and no repair asked of or applied from eu (a trim past
 * ap's position would have left it to anti-entropy). `heartbeatMs` is the nodes'
 * heartbeatIntervalMs: the regions learn what the others applied from heartbeats.
 */
export async function trimsOnlyStable<T extends Transport, N extends FaultNode, S extends Store>(c: FaultCluster<T, N, S>, heartbeatMs: number): Promise<void> {
  const eu = c.member('eu').node
  if (eu.trimStable === undefined) throw new Error('trimsOnlyStable: the nodes have no trimStable()')
  const trim = eu.trimStable.bind(eu)
  const rounds = async (regions: readonly FaultRegion[], ms: number): Promise<void> => {
    const until = Date.now() + ms
    while (Date.now() < until) {
      for (const r of regions) await c.member(r).node.pump().catch((e: unknown) => {
        if (!(isConcordError(e) && e.retriable)) throw e
      })
      await retrying(trim)
      await new Promise((r) => setTimeout(r, 20))
    }
  }
  await c.write('eu', 40, 'trim-a')
  await c.settle()
  // Heartbeats tell eu what the others applied: then the first trim removes something.
  let first: string | undefined
  const until = Date.now() + 20 * heartbeatMs + 10_000
  while (first === undefined && Date.now() < until) {
    await c.pumpAll()
    first = await retrying(trim)
    if (first === undefined) await new Promise((r) => setTimeout(r, heartbeatMs))
  }
  expect(first, 'a trim with every region caught up removes something').toBeDefined()
  const apBefore = c.member('ap').node.metrics().peers.find((p) => p.region === 'eu')
  // ap stops reading; eu writes on and trims after every round, while us keeps up.
  for (let i = 0; i < 4; i++) {
    await c.write('eu', 20, `trim-b${i}`)
    await rounds(['eu', 'us'], 5 * heartbeatMs)
  }
  await c.settle()
  await c.expectConverged()
  c.expectAppliedOnce(true)
  const ap = c.member('ap').node.metrics().peers.find((p) => p.region === 'eu')
  expect(ap?.repairsRequested, 'ap asked eu for no repair: the log still held what it had not read').toBe(apBefore?.repairsRequested)
  expect(ap?.repairsApplied, 'ap applied no repair from eu').toBe(apBefore?.repairsApplied)
}

/** Signing keys of the {@link FAULT_REGIONS} (nodes of a fault test sign their envelopes). */
export const FAULT_KEYS: Readonly<Record<FaultRegion, Uint8Array>> = {
  eu: new Uint8Array(32).fill(1),
  us: new Uint8Array(32).fill(2),
  ap: new Uint8Array(32).fill(3),
}

/**
 * `count` records that a node with {@link FAULT_KEYS} must all reject when they arrive in eu's
 * log: random bytes, truncations and single-byte flips of a signed envelope (the HMAC fails), an
 * envelope signed with another region's key, one of region us placed in eu's log, and an empty
 * record. Deterministic (a fixed seed).
 */
export function corruptEnvelopes(count: number): Uint8Array[] {
  let seed = 12345
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed
  }
  const env = (region: FaultRegion, seq: number): Envelope => ({
    docId: 'hits',
    typeName: 'pn-counter',
    region,
    writer: `${region}/i1`,
    seq,
    time: { wall: Date.now(), logical: 0, node: `${region}/i1` },
    deps: new Uint8Array(0),
    payload: new Uint8Array([1, 2, 3, 4]),
  })
  const good = encodeEnvelope(env('eu', 1_000_000), FAULT_KEYS.eu)
  const out: Uint8Array[] = []
  for (let i = 0; out.length < count; i++) {
    switch (i % 6) {
      case 0:
        out.push(Uint8Array.from({ length: rnd() % 200 }, () => rnd() & 0xff))
        break
      case 1:
        out.push(good.slice(0, rnd() % good.length))
        break
      case 2: {
        const flipped = good.slice()
        const at = rnd() % flipped.length
        flipped[at] = (flipped[at] as number) ^ (1 + (rnd() % 255))
        out.push(flipped)
        break
      }
      case 3:
        out.push(encodeEnvelope(env('eu', 2_000_000 + i), FAULT_KEYS.us))
        break
      case 4:
        out.push(encodeEnvelope(env('us', 3_000_000 + i), FAULT_KEYS.us))
        break
      default:
        out.push(new Uint8Array(0))
    }
  }
  return out
}
