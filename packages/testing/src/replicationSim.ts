/**
 * A deterministic harness that runs the convergence properties through real replication code:
 * every region (and optionally a second instance of one region) runs a replication node over a
 * shared log, and the harness injects the faults at the transport and process level — lost,
 * duplicated and reordered deliveries, partitions (full, one-way, isolated, swizzled), crashes at
 * any transport call with restart from the node's store, and per-region clock skew.
 *
 * Time is virtual (the nodes get an injected `now`), every random choice comes from the schedule's
 * seed, and nodes advance only when the harness calls `pump()`: the same schedule replays the same
 * run. The node, log and store implementations are injected ({@link ReplicationBackend}), so this
 * module depends only on the contracts of `@concord/core`.
 *
 * Alongside the replicas the harness tracks which operations each replica has seen, by tagging
 * every byte string a replica emits (local deltas, `deltaSince`, `state`) with the operations it
 * carries; so each op gets its exact causal past for the spec's oracle, and "an acknowledged write
 * reached every replica" can be checked directly.
 */
import * as fc from 'fast-check'
import {
  bytesEqual,
  ConfigError,
  isConcordError,
  seededRandom,
  TransportError,
  type LogPosition,
  type LogRecord,
  type PollOptions,
  type AppendOptions,
  type Random,
  type Replica,
  type ReplicaFactory,
  type Store,
  type Transport,
} from '@concord/core'
import { deepEqual, show } from './equality.js'
import type { OpRecord, ReplicaSpec, SpecEnv } from './spec.js'
import type { CounterOp, LwwMapOp } from './specs/native.js'
import { defaultRuns, type AssertOptions } from './suites.js'

// ---- the injected backend --------------------------------------------------------------------

/** Options the harness gives each node it creates (a subset of `RegionNodeOptions`). */
export interface SimNodeOptions {
  readonly region: string
  readonly instance: string
  /** Every region; each node gets its own seeded order, which is the order it reads the logs in. */
  readonly regions: readonly string[]
  readonly transport: Transport
  readonly store: Store
  readonly factories: Readonly<Record<string, ReplicaFactory<unknown, Replica<unknown>>>>
  readonly now: () => number
  readonly random: () => number
  readonly heartbeatIntervalMs: number
  readonly repairTimeoutMs: number
  readonly maxDriftMs: number
  /** How often read positions are committed (0: every round); the harness uses both. */
  readonly commitIntervalMs: number
}

/** What the harness needs of a replication node (`RegionNode` fits). */
export interface SimNode {
  open(docId: string, typeName: string): Promise<Replica<unknown>>
  /** One round without timers. */
  pump(): Promise<unknown>
}

/** The implementations under test, made fresh for every run. */
export interface ReplicationBackend {
  /** A new client of the shared log, for one node incarnation (a restart gets a new one). */
  connect(): Transport
  /** A node's durable store; kept across that node's crashes and restarts. */
  store(): Store
  node(options: SimNodeOptions): SimNode
}

// ---- schedules -------------------------------------------------------------------------------

/** Partition shapes. Logs live in their region: a partitioned region still appends to its own log. */
export type PartitionShape =
  /** `region` cannot read any other log and no one can read its log. */
  | { readonly kind: 'isolate'; readonly region: number }
  /** The regions in `side` and the rest cannot read each other's logs. */
  | { readonly kind: 'split'; readonly side: readonly number[] }
  /** `reader` cannot read the log of `origin` (the other way still works). */
  | { readonly kind: 'one-way'; readonly origin: number; readonly reader: number }

/** One action of a {@link ReplicationSchedule}. Node and region indices are taken modulo the counts. */
export type ReplicationAction<Op> =
  | { readonly type: 'op'; readonly node: number; readonly doc: number; readonly op: Op }
  | { readonly type: 'pump'; readonly node: number }
  /** Pump every live node once, in a seeded order. */
  | { readonly type: 'round' }
  /**
   * Crash `node`: at once when `at` is 0 (unflushed local writes are lost), else at its `at`-th
   * transport append or commit from now (inside a pump: the store may hold what the log does not).
   */
  | { readonly type: 'crash'; readonly node: number; readonly at: number }
  /** Restart a crashed node over its store (refused while its old incarnation may be alive). */
  | { readonly type: 'restart'; readonly node: number }
  /** Adds a partition; `swizzle` replaces all current ones by this one. */
  | { readonly type: 'partition'; readonly shape: PartitionShape; readonly swizzle: boolean }
  | { readonly type: 'heal' }
  /** Delivery faults from now on, in percent per delivered record / per poll. */
  | { readonly type: 'network'; readonly dropPct: number; readonly duplicatePct: number; readonly delayPct: number; readonly smallBatches: boolean }
  /** Sets one region's clock skew (ms, added to virtual time for its nodes and replicas). */
  | { readonly type: 'skew'; readonly region: number; readonly ms: number }

/** An action after `delayMs` of virtual time. */
export interface ReplicationStep<Op> {
  readonly delayMs: number
  readonly action: ReplicationAction<Op>
}

/** A generated run: topology, documents, initial skews and steps. */
export interface ReplicationSchedule<Op> {
  readonly seed: number
  /** Regions (≥ 3). */
  readonly regions: number
  /** Run a second instance in region 0. */
  readonly twin: boolean
  /** Documents (1..3). */
  readonly docs: number
  readonly steps: readonly ReplicationStep<Op>[]
  /**
   * Skew beyond the nodes' `maxDriftMs`, given to region 0 for the whole run until heal: its
   * envelopes are refused meanwhile and must be repaired once the clocks agree. @default 0
   */
  readonly overDriftMs?: number
}

/** Options for {@link replicationSchedule}. */
export interface ReplicationScheduleOptions {
  /** Regions. @default 5 */
  readonly regions?: number
  /** Second instance in region 0: always, never, or (undefined) chosen per case. */
  readonly twin?: boolean
  /** Most documents. @default 2 */
  readonly maxDocs?: number
  /** Operations per case, 1..maxOps. @default 12 */
  readonly maxOps?: number
  /** Most fault / pump steps besides the ops. @default 16 */
  readonly maxSteps?: number
  /** Largest skew given (stays within the drift bound). @default {@link DEFAULT_SIM_TIMING}.maxDriftMs × 0.4 */
  readonly maxSkewMs?: number
  /** Give region 0 a skew beyond the drift bound until heal. @default false */
  readonly overDrift?: boolean
  /** Which fault actions to generate. @default all */
  readonly faults?: readonly ('crash' | 'partition' | 'network' | 'skew')[]
}

/** Node timing used by the harness (virtual ms). */
export const DEFAULT_SIM_TIMING = {
  heartbeatIntervalMs: 100,
  repairTimeoutMs: 300,
  maxDriftMs: 1_000,
  /** Virtual time per round after heal. */
  roundMs: 100,
} as const

/** Generates {@link ReplicationSchedule}s; steps interleave ops with faults and pumps. */
export function replicationSchedule<Op>(op: fc.Arbitrary<Op>, options: ReplicationScheduleOptions = {}): fc.Arbitrary<ReplicationSchedule<Op>> {
  const regions = options.regions ?? 5
  if (!Number.isSafeInteger(regions) || regions < 3) throw new ConfigError(`replicationSchedule: at least 3 regions, got ${regions}`)
  const maxOps = options.maxOps ?? 12
  const maxSkew = options.maxSkewMs ?? DEFAULT_SIM_TIMING.maxDriftMs * 0.4
  const faults = new Set(options.faults ?? ['crash', 'partition', 'network', 'skew'])
  const node = fc.nat({ max: regions })
  const region = fc.nat({ max: regions - 1 })
  const shape: fc.Arbitrary<PartitionShape> = fc.oneof(
    fc.record({ kind: fc.constant('isolate' as const), region }),
    fc.record({ kind: fc.constant('split' as const), side: fc.uniqueArray(region, { minLength: 1, maxLength: regions - 1 }) }),
    fc.record({ kind: fc.constant('one-way' as const), origin: region, reader: region }),
  )
  const others: Array<{ weight: number; arbitrary: fc.Arbitrary<ReplicationAction<Op>> }> = [
    { weight: 6, arbitrary: node.map((n): ReplicationAction<Op> => ({ type: 'pump', node: n })) },
    { weight: 3, arbitrary: fc.constant<ReplicationAction<Op>>({ type: 'round' }) },
  ]
  if (faults.has('crash')) {
    others.push({ weight: 2, arbitrary: fc.record({ type: fc.constant('crash' as const), node, at: fc.nat({ max: 4 }) }) })
    others.push({ weight: 1, arbitrary: fc.record({ type: fc.constant('restart' as const), node }) })
  }
  if (faults.has('partition')) {
    others.push({ weight: 2, arbitrary: fc.record({ type: fc.constant('partition' as const), shape, swizzle: fc.boolean() }) })
    others.push({ weight: 1, arbitrary: fc.constant<ReplicationAction<Op>>({ type: 'heal' }) })
  }
  if (faults.has('network')) {
    const pct = fc.constantFrom(0, 10, 30, 60)
    others.push({
      weight: 2,
      arbitrary: fc.record({ type: fc.constant('network' as const), dropPct: pct, duplicatePct: pct, delayPct: pct, smallBatches: fc.boolean() }),
    })
  }
  if (faults.has('skew')) {
    others.push({ weight: 1, arbitrary: fc.record({ type: fc.constant('skew' as const), region, ms: fc.integer({ min: -maxSkew, max: maxSkew }) }) })
  }
  const delay = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 60 }), fc.integer({ min: 100, max: 400 }))
  const opStep = fc.record({ delayMs: delay, action: fc.record({ type: fc.constant('op' as const), node, doc: fc.nat({ max: 2 }), op }) })
  const otherStep = fc.record({ delayMs: delay, action: fc.oneof(...others) })
  return fc
    .record({
      seed: fc.integer({ min: 0, max: 0x7fff_ffff }),
      twin: options.twin === undefined ? fc.boolean() : fc.constant(options.twin),
      docs: fc.integer({ min: 1, max: options.maxDocs ?? 2 }),
      ops: fc.array(opStep, { minLength: 1, maxLength: maxOps }),
      rest: fc.array(otherStep, { maxLength: options.maxSteps ?? 16 }),
      overDriftMs: options.overDrift === true ? fc.integer({ min: DEFAULT_SIM_TIMING.maxDriftMs + 200, max: 4 * DEFAULT_SIM_TIMING.maxDriftMs }) : fc.constant(0),
    })
    .map(({ seed, twin, docs, ops, rest, overDriftMs }) => {
      // Interleave ops and the other steps in a seeded order (kept in the schedule, so a pinned
      // schedule replays without this code).
      const rng = seededRandom(seed)
      const steps: ReplicationStep<Op>[] = []
      let i = 0
      let j = 0
      while (i < ops.length || j < rest.length) {
        const takeOp = j >= rest.length || (i < ops.length && rng() < ops.length / (ops.length + rest.length))
        steps.push(takeOp ? (ops[i++] as ReplicationStep<Op>) : (rest[j++] as ReplicationStep<Op>))
      }
      const out: ReplicationSchedule<Op> = { seed, regions, twin, docs, steps, ...(overDriftMs > 0 ? { overDriftMs } : {}) }
      return out
    })
}

// ---- knowledge tracking ----------------------------------------------------------------------

function bytesKey(b: Uint8Array): string {
  let s = ''
  for (let i = 0; i < b.length; i += 4096) s += String.fromCharCode(...b.subarray(i, i + 4096))
  return s
}

const NONE: ReadonlySet<number> = new Set()

/**
 * Tags every byte string a tracked replica emits with the op ids it carries, and adds a tag's ids
 * to a replica's knowledge when it applies those bytes.
 */
class Tracker {
  private readonly tags = new Map<string, Set<number>>()
  private readonly known = new WeakMap<object, Set<number>>()
  private readonly raw = new WeakMap<object, Replica<unknown>>()
  /** Op being performed: its local deltas carry it. */
  /** Ops the local delta being emitted carries: the current op and those `spec.carries` names. */
  currentCarried: readonly number[] = []
  /** Whether the op being performed emitted a local delta (a no-op, like removing an absent element, emits none). */
  emitted = false
  /** The local deltas the op being performed emitted, as tag keys, in order. */
  emittedKeys: string[] = []

  private tag(bytes: Uint8Array, ids: Iterable<number>): void {
    const k = bytesKey(bytes)
    let t = this.tags.get(k)
    if (t === undefined) {
      t = new Set()
      this.tags.set(k, t)
    }
    // Equal bytes mean equal effect: the union is what any holder of them may have seen.
    for (const id of ids) t.add(id)
  }

  knowledge(replica: object): ReadonlySet<number> {
    return this.known.get(replica) ?? NONE
  }

  /** The replica behind a tracked proxy (reads through it tag nothing). */
  unwrap<R extends Replica<unknown>>(replica: R): R {
    return (this.raw.get(replica) ?? replica) as R
  }

  learn(replica: object, id: number): void {
    this.known.get(replica)?.add(id)
  }

  wrap<R extends Replica<unknown>>(target: R): R {
    const known = new Set<number>()
    // Knowledge at the latest version() call that returned these bytes: deltaSince(v) carries what
    // was learnt since (a node asks for deltaSince of a version it took from the same replica).
    const atVersion = new Map<string, ReadonlySet<number>>()
    target.onDelta((delta, origin) => {
      if (origin !== 'local') return
      this.emitted = true
      this.emittedKeys.push(bytesKey(delta))
      this.tag(delta, this.currentCarried)
    })
    const apply = (delta: Uint8Array): void => {
      target.apply(delta)
      const t = this.tags.get(bytesKey(delta))
      if (t === undefined) throw new Error(`replication harness: a replica applied bytes no tracked replica emitted (${show(delta)})`)
      for (const id of t) known.add(id)
    }
    const version = (): Uint8Array => {
      const v = target.version()
      atVersion.set(bytesKey(v), new Set(known))
      return v
    }
    const deltaSince = (v?: Uint8Array): Uint8Array => {
      const out = target.deltaSince(v)
      const base = v === undefined ? undefined : atVersion.get(bytesKey(v))
      this.tag(out, base === undefined ? known : [...known].filter((id) => !base.has(id)))
      return out
    }
    const state = (): Uint8Array => {
      const out = target.state()
      this.tag(out, known)
      return out
    }
    const overrides: Record<string | symbol, unknown> = { apply, version, deltaSince, state }
    const merge = target.mergeDeltas
    if (merge !== undefined) {
      // A merge carries what its inputs carry.
      overrides['mergeDeltas'] = (deltas: readonly Uint8Array[]): Uint8Array => {
        const out = merge.call(target, deltas)
        const ids = new Set<number>()
        for (const d of deltas) for (const id of this.tags.get(bytesKey(d)) ?? []) ids.add(id)
        this.tag(out, ids)
        return out
      }
    }
    const proxy = new Proxy(target, {
      get(t, prop) {
        if (Object.prototype.hasOwnProperty.call(overrides, prop)) return overrides[prop]
        const v: unknown = Reflect.get(t, prop, t)
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v
      },
    })
    this.known.set(proxy, known)
    this.raw.set(proxy, target)
    return proxy
  }
}

// ---- the harness -----------------------------------------------------------------------------

/** An op as the harness records it. */
type SimOp<Op> = OpRecord<Op> & {
  readonly doc: string
  /** The op emitted a delta; an op that changed nothing has nothing to deliver. */
  readonly effective: boolean
  /** Incarnation of the writer's slot that performed it. */
  readonly incarnation: number
  /** Tag keys of the local deltas it emitted, in order, as one string (JSON: unambiguous). */
  readonly emitted: string
}

/** One process of a node: dead from its crash point on (see faulty). */
interface Life {
  dead: boolean
  /** Called once, at the crash point. */
  died?: () => void
  /** Appends of this process still in flight (see pump). */
  readonly appending: Set<Promise<unknown>>
}

/** Thrown by the faulty transport at an armed crash point: the process dies there. */
class CrashSignal extends Error {
  constructor() {
    super('simulated crash')
    this.name = 'CrashSignal'
  }
}

interface Slot {
  readonly index: number
  readonly region: number
  readonly instance: string
  readonly store: Store
  node: SimNode | undefined
  transport: Transport | undefined
  /** The current process's life: marked dead when it crashes or is killed. */
  life: Life | undefined
  incarnation: number
  /** Transport appends/commits left before the armed crash. */
  crashIn: number | undefined
  /** Ops performed on the current incarnation and not yet acknowledged by a resolved pump. */
  unacked: number[]
}

interface Network {
  drop: number
  duplicate: number
  delay: number
  smallBatches: boolean
}

const CALM: Network = { drop: 0, duplicate: 0, delay: 0, smallBatches: false }

/** Options for {@link runReplicationSchedule} and the properties. */
export interface ReplicationCheckOptions {
  /** Rounds after heal within which the nodes must converge (the liveness bound). @default 30 */
  readonly livenessRounds?: number
  /** Check the spec's oracle (when it has one). @default true */
  readonly oracle?: boolean
  /**
   * Before healing, keep the partitions of the schedule's end (delivery faults off, crashed nodes
   * restarted) for `livenessRounds` rounds and check that every acknowledged write reached every
   * node of a region that can read the writer's log and whose log the writer can read: a partition
   * elsewhere must not stall replication between connected regions. @default true
   */
  readonly availability?: boolean
}

/** What one run did, for tests of the harness itself. */
export interface ReplicationRunReport {
  /** Rounds after heal until every node held equal states. */
  readonly rounds: number
  readonly crashes: number
  readonly restarts: number
  /** Pumps that failed because a peer's log was unreachable (a partition). */
  readonly unreachable: number
  readonly ops: number
  /** Ops acknowledged (a pump of their node resolved after them). */
  readonly acknowledged: number
  /** Final value of each document, by doc id. */
  readonly values: Readonly<Record<string, unknown>>
}

/** Doc ids used by the harness. */
export const SIM_DOC_IDS: readonly string[] = ['doc-a', 'doc-b', 'doc-c']

class ReplicationRun<V, Op, R extends Replica<V>> {
  private time = 1_700_000_000_000
  private readonly rng: Random
  private readonly tracker = new Tracker()
  private readonly slots: Slot[] = []
  private readonly regionNames: string[]
  private readonly skew: number[]
  private readonly cut = new Set<string>()
  private net: Network = CALM
  private overDrift: number
  private readonly typeName: string
  private readonly docIds: string[]
  /** `effective`: the op emitted a delta; an op that changed nothing has nothing to deliver. */
  private readonly ops: Array<SimOp<Op>> = []
  private readonly acked = new Set<number>()
  /**
   * Ops a later incarnation of their writer redid: op id → the op that redid it. A write that died
   * unsent with its process may be issued again after the restart with the same dot (the node's
   * store never saw the first); both then emit byte-identical deltas, so the tracker, which keys
   * knowledge by bytes, cannot tell them apart: they are one write, counted once.
   */
  private readonly redoneBy = new Map<number, number>()
  /** The inverse of `redoneBy`, transitively: op id → the earlier ops it redid. */
  private readonly redid = new Map<number, number[]>()
  private crashes = 0
  private restarts = 0
  private unreachable = 0

  constructor(
    private readonly spec: ReplicaSpec<V, Op, R>,
    private readonly backend: ReplicationBackend,
    private readonly schedule: ReplicationSchedule<Op>,
  ) {
    this.rng = seededRandom(schedule.seed)
    this.regionNames = Array.from({ length: schedule.regions }, (_, i) => `r${i}`)
    this.skew = this.regionNames.map(() => 0)
    this.overDrift = schedule.overDriftMs ?? 0
    this.typeName = spec.create('probe', { now: () => this.time, random: seededRandom(0) }).typeName
    this.docIds = SIM_DOC_IDS.slice(0, Math.max(1, Math.min(schedule.docs, SIM_DOC_IDS.length)))
    for (let r = 0; r < schedule.regions; r++) this.slots.push(this.slot(r, 'a'))
    if (schedule.twin) this.slots.push(this.slot(0, 'b'))
  }

  private slot(region: number, instance: string): Slot {
    return { index: this.slots.length, region, instance, store: this.backend.store(), node: undefined, transport: undefined, life: undefined, incarnation: 0, crashIn: undefined, unacked: [] }
  }

  private clock(region: number): () => number {
    return () => this.time + (this.skew[region] as number) + (region === 0 ? this.overDrift : 0)
  }

  private writer(s: Slot): string {
    return `${this.regionNames[s.region] as string}/${s.instance}`
  }

  // -- faulty transport

  private faulty(s: Slot, inner: Transport, life: Life): Transport {
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the returned object's methods need the harness, not themselves
    const run = this
    const region = this.regionNames[s.region] as string
    const alive = (): void => {
      if (life.dead) throw new CrashSignal()
    }
    const mutate = (): void => {
      alive()
      if (s.crashIn === undefined) return
      s.crashIn--
      if (s.crashIn <= 0) {
        s.crashIn = undefined
        // The process dies here: nothing it does afterwards (a round still running, say, when the
        // crash hit a background commit) reaches the log or its store.
        life.dead = true
        life.died?.()
        throw new CrashSignal()
      }
    }
    return {
      name: inner.name,
      async append(origin: string, records: readonly Uint8Array[], options?: AppendOptions): Promise<readonly LogPosition[]> {
        mutate()
        const appending = inner.append(origin, records, options)
        const settled = appending.then(
          () => undefined,
          () => undefined,
        )
        life.appending.add(settled)
        void settled.then(() => life.appending.delete(settled))
        return appending
      },
      async poll(reader: string, origin: string, options: PollOptions = {}): Promise<readonly LogRecord[]> {
        alive()
        const from = run.regionNames.indexOf(origin)
        if (origin !== region && run.cut.has(`${from}>${s.region}`)) {
          throw new TransportError(`simulated partition: ${region} cannot reach the log of ${origin}`, { retriable: true })
        }
        // A slow link: nothing arrives this time; other logs go ahead of it.
        if (origin !== region && run.rng() < run.net.delay) return []
        const max = run.net.smallBatches ? Math.min(options.max ?? 256, 1 + Math.floor(run.rng() * 3)) : options.max
        const recs = await inner.poll(reader, origin, { ...options, ...(max === undefined ? {} : { max }) })
        if (run.net.drop === 0 && run.net.duplicate === 0) return recs
        const out: LogRecord[] = []
        for (const rec of recs) {
          if (run.rng() < run.net.drop) continue
          out.push(rec)
          if (run.rng() < run.net.duplicate) out.push(rec)
        }
        return out
      },
      async commit(reader: string, origin: string, position: LogPosition): Promise<void> {
        mutate()
        return inner.commit(reader, origin, position)
      },
      committed: async (reader, origin) => {
        alive()
        return inner.committed(reader, origin)
      },
      rewind: async (reader, origin) => {
        alive()
        return inner.rewind(reader, origin)
      },
      earliest: async (origin) => {
        alive()
        return inner.earliest(origin)
      },
      trim: async (origin, before) => {
        alive()
        return inner.trim(origin, before)
      },
      comparePositions: (a, b) => inner.comparePositions(a, b),
      close: () => inner.close(),
    }
  }

  // -- node lifecycle

  private shuffled<T>(xs: readonly T[]): T[] {
    const out = xs.slice()
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.rng() * (i + 1))
      const t = out[i] as T
      out[i] = out[j] as T
      out[j] = t
    }
    return out
  }

  private factories(region: number): Record<string, ReplicaFactory<unknown, Replica<unknown>>> {
    const env = (): SpecEnv => ({ now: this.clock(region), random: seededRandom(Math.floor(this.rng() * 0x7fff_ffff)) })
    const spec = this.spec
    const tracker = this.tracker
    const factory: ReplicaFactory<unknown, Replica<unknown>> = {
      typeName: this.typeName,
      create: (replicaId) => tracker.wrap(spec.create(replicaId, env()) as Replica<unknown>),
    }
    return { [this.typeName]: factory }
  }

  /** The node's store, as long as its process lives (see faulty). */
  private mortal(store: Store, life: Life): Store {
    const alive = (): void => {
      if (life.dead) throw new CrashSignal()
    }
    return {
      name: store.name,
      get: async (key) => (alive(), store.get(key)),
      put: async (key, value) => (alive(), store.put(key, value)),
      delete: async (key) => (alive(), store.delete(key)),
      write: async (batch) => (alive(), store.write(batch)),
      keys: async (prefix) => (alive(), store.keys(prefix)),
      // Closing is the harness's business (the store outlives the process).
      close: async () => undefined,
    }
  }

  /** Starts a node on `s` (a first start or a restart). Returns false when it refused to start. */
  private async start(s: Slot): Promise<boolean> {
    const life: Life = { dead: false, appending: new Set() }
    const transport = this.faulty(s, this.backend.connect(), life)
    const node = this.backend.node({
      region: this.regionNames[s.region] as string,
      instance: s.instance,
      regions: this.shuffled(this.regionNames),
      transport,
      store: this.mortal(s.store, life),
      factories: this.factories(s.region),
      now: this.clock(s.region),
      random: seededRandom(Math.floor(this.rng() * 0x7fff_ffff)),
      heartbeatIntervalMs: DEFAULT_SIM_TIMING.heartbeatIntervalMs,
      repairTimeoutMs: DEFAULT_SIM_TIMING.repairTimeoutMs,
      maxDriftMs: DEFAULT_SIM_TIMING.maxDriftMs,
      // Both commit policies, without drawing from the rng (pinned schedules replay as before):
      // every round in even regions, every 5 rounds' worth of virtual time in odd ones.
      commitIntervalMs: s.region % 2 === 0 ? 0 : 5 * DEFAULT_SIM_TIMING.roundMs,
    })
    s.node = node
    s.transport = transport
    s.life = life
    s.incarnation++
    s.unacked = []
    // The slot is down from the crash point on, even when the crash hit work running behind a
    // round (a background commit) and no call of the harness is waiting on the node.
    life.died = () => {
      if (s.node !== node) return
      this.crashes++
      s.node = undefined
      s.transport = undefined
      s.crashIn = undefined
      s.unacked = []
      void transport.close().catch(() => undefined)
    }
    try {
      await this.pump(s)
    } catch (e) {
      // A restart too soon after a crash is refused: the old incarnation may still be alive.
      if (isConcordError(e) && e.code === 'CONFIG' && s.incarnation > 1) {
        await this.kill(s)
        return false
      }
      throw e
    }
    return s.node !== undefined
  }

  private async kill(s: Slot): Promise<void> {
    const t = s.transport
    // Whatever it still has running (a background commit) reaches neither its log nor its store.
    if (s.life !== undefined) s.life.dead = true
    s.life = undefined
    s.node = undefined
    s.transport = undefined
    s.crashIn = undefined
    s.unacked = []
    await t?.close().catch(() => undefined)
  }

  private async pump(s: Slot): Promise<void> {
    const node = s.node
    if (node === undefined) return
    const life = s.life
    const before = s.unacked
    s.unacked = []
    try {
      await node.pump()
      for (const id of before) this.acked.add(id)
    } catch (e) {
      // The slot went down at the crash point (life.died); the rest of the round failed with it —
      // with the CrashSignal (thrown only once its life is dead), or with whatever the dead
      // process's transport answered after it was closed (a server transport fails an append still
      // in flight with ClosedError: crashUnderAppendInFlight).
      if (life?.dead === true) return
      // The round failed on an unreachable peer log (documented: the next round retries). Local
      // writes were persisted before any poll, but only a resolved round acknowledges them.
      if (isConcordError(e) && e.code === 'TRANSPORT' && e.retriable && this.cut.size > 0) {
        this.unreachable++
        s.unacked = before.concat(s.unacked)
        // The round's appends (a heartbeat, a repair request or answer) went on in the background:
        // a failed pump does not wait for them, as a resolved one does. The next round starts once
        // they are done, as it would in a running node's loop — on a server, rounds that fail at
        // once otherwise outran every append: 30 rounds into a partition took 40 ms on Kafka, less
        // than one append, and a repair request never went out (lossyRoundThenPartition).
        if (life !== undefined) await Promise.all([...life.appending])
        return
      }
      throw e
    }
  }

  private async restart(s: Slot): Promise<void> {
    if (s.node !== undefined) return
    if (await this.start(s)) this.restarts++
  }

  // -- actions

  private async perform(s: Slot, doc: string, op: Op): Promise<void> {
    const node = s.node
    if (node === undefined) return
    const life = s.life
    let replica: R
    try {
      replica = (await node.open(doc, this.typeName)) as unknown as R
    } catch (e) {
      // It died at a crash point on the way (opening may load, start and register): no op.
      if (life?.dead === true) return
      throw e
    }
    const id = this.ops.length
    const deps = new Set(this.tracker.knowledge(replica))
    const carries = this.spec.carries?.({ id, replica: this.writer(s), op, deps, meta: undefined }, this.ops.filter((o) => o.doc === doc))
    this.tracker.currentCarried = [id, ...(carries ?? [])]
    this.tracker.emitted = false
    this.tracker.emittedKeys = []
    let meta: unknown
    try {
      meta = this.spec.perform(replica, op)
    } finally {
      this.tracker.currentCarried = []
    }
    this.tracker.learn(replica, id)
    const rec: SimOp<Op> = { id, replica: this.writer(s), op, deps, meta, doc, effective: this.tracker.emitted, incarnation: s.incarnation, emitted: JSON.stringify(this.tracker.emittedKeys) }
    this.tracker.emittedKeys = []
    this.noteRedo(rec)
    this.ops.push(rec)
    s.unacked.push(id)
  }

  /**
   * Records `rec` as the redo of the latest earlier op of its writer and document that emitted the
   * same bytes on an incarnation that has died since without acknowledging it (see `redoneBy`).
   * Only those: equal bytes from an acknowledged op, or from a live incarnation, would be a real
   * reuse of a dot and must stay two ops (the oracle then sees the lost one).
   */
  private noteRedo(rec: SimOp<Op>): void {
    if (!rec.effective) return
    for (let i = this.ops.length - 1; i >= 0; i--) {
      const o = this.ops[i] as SimOp<Op>
      if (o.replica !== rec.replica || o.doc !== rec.doc || o.emitted !== rec.emitted) continue
      if (o.incarnation >= rec.incarnation || this.acked.has(o.id) || this.redoneBy.has(o.id)) return
      this.redoneBy.set(o.id, rec.id)
      this.redid.set(rec.id, [o.id, ...(this.redid.get(o.id) ?? [])])
      return
    }
  }

  /** Whether `replica` has seen op `id` (or a write it redid: the same bytes). */
  private knows(replica: object, id: number): boolean {
    const known = this.tracker.knowledge(replica)
    return known.has(id) || (this.redid.get(id)?.some((x) => known.has(x)) ?? false)
  }

  /** The op that stands for `id` (itself unless redone). */
  private standIn(id: number): number {
    let cur = id
    for (let next = this.redoneBy.get(cur); next !== undefined; next = this.redoneBy.get(cur)) cur = next
    return cur
  }

  private async round(): Promise<void> {
    for (const s of this.shuffled(this.slots)) await this.pump(s)
  }

  private partition(shape: PartitionShape): void {
    const n = this.regionNames.length
    const cutBoth = (a: number, b: number): void => {
      if (a === b) return
      this.cut.add(`${a}>${b}`)
      this.cut.add(`${b}>${a}`)
    }
    switch (shape.kind) {
      case 'isolate':
        for (let r = 0; r < n; r++) cutBoth(shape.region % n, r)
        return
      case 'split': {
        const side = new Set(shape.side.map((r) => r % n))
        for (const a of side) for (let b = 0; b < n; b++) if (!side.has(b)) cutBoth(a, b)
        return
      }
      case 'one-way':
        if (shape.origin % n !== shape.reader % n) this.cut.add(`${shape.origin % n}>${shape.reader % n}`)
    }
  }

  private async step(step: ReplicationStep<Op>): Promise<void> {
    this.time += step.delayMs
    const a = step.action
    const slotOf = (i: number): Slot => this.slots[i % this.slots.length] as Slot
    switch (a.type) {
      case 'op':
        return this.perform(slotOf(a.node), this.docIds[a.doc % this.docIds.length] as string, a.op)
      case 'pump':
        return this.pump(slotOf(a.node))
      case 'round':
        return this.round()
      case 'crash': {
        const s = slotOf(a.node)
        if (s.node === undefined) return
        if (a.at <= 0) {
          this.crashes++
          return this.kill(s)
        }
        s.crashIn = a.at
        return
      }
      case 'restart':
        return this.restart(slotOf(a.node))
      case 'partition':
        if (a.swizzle) this.cut.clear()
        this.partition(a.shape)
        return
      case 'heal':
        this.cut.clear()
        return
      case 'network':
        this.net = { drop: a.dropPct / 100, duplicate: a.duplicatePct / 100, delay: a.delayPct / 100, smallBatches: a.smallBatches }
        return
      case 'skew':
        this.skew[a.region % this.skew.length] = a.ms
    }
  }

  // -- checking

  /** Why the nodes' replicas differ, or undefined when every doc has equal state bytes everywhere. */
  private async divergence(): Promise<string | undefined> {
    for (const doc of this.docIds) {
      let first: { w: string; state: Uint8Array } | undefined
      for (const s of this.slots) {
        if (s.node === undefined) return `${this.writer(s)} is down`
        const state = this.tracker.unwrap(await s.node.open(doc, this.typeName)).state()
        if (first === undefined) first = { w: this.writer(s), state }
        else if (!bytesEqual(first.state, state)) return `${doc}: state of ${first.w} ${show(first.state)} differs from ${this.writer(s)} ${show(state)}`
      }
    }
    return undefined
  }

  /** Regions `a` and `b` can read each other's logs. */
  private connected(a: number, b: number): boolean {
    return a === b || (!this.cut.has(`${a}>${b}`) && !this.cut.has(`${b}>${a}`))
  }

  private async checkAvailability(rounds: number): Promise<void> {
    this.net = CALM
    for (const s of this.slots) s.crashIn = undefined
    let missing: string | undefined
    for (let i = 0; i < rounds; i++) {
      this.time += DEFAULT_SIM_TIMING.roundMs
      for (const s of this.slots) await this.restart(s)
      await this.round()
      missing = await this.unavailable()
      if (missing === undefined) return
    }
    throw new Error(`availability: ${rounds} rounds into a partition (cut links ${[...this.cut].sort().join(' ')}), ${missing}`)
  }

  /** An acknowledged write that has not reached a node connected to its writer, if any. */
  private async unavailable(everywhere = false): Promise<string | undefined> {
    for (const o of this.ops) {
      if (!this.acked.has(o.id) || !o.effective) continue
      const from = this.slots.find((s) => this.writer(s) === o.replica) as Slot
      for (const s of this.slots) {
        if (!everywhere && !this.connected(from.region, s.region)) continue
        if (s.node === undefined) return `${this.writer(s)} is down`
        const r = await s.node.open(o.doc, this.typeName)
        if (!this.knows(r, o.id)) return `op #${o.id} by ${o.replica} has not reached ${this.writer(s)}`
      }
    }
    return undefined
  }

  async run(options: ReplicationCheckOptions): Promise<ReplicationRunReport> {
    for (const s of this.slots) if (!(await this.start(s))) throw new Error(`${this.writer(s)} refused its first start`)
    for (const step of this.schedule.steps) await this.step(step)
    if (options.availability !== false && this.cut.size > 0 && this.overDrift === 0) await this.checkAvailability(options.livenessRounds ?? 30)
    // Heal: no partitions, no delivery faults, clocks within the drift bound again, crashed nodes restarted.
    this.cut.clear()
    this.net = CALM
    for (const s of this.slots) s.crashIn = undefined
    let extra = 0
    if (this.overDrift > 0) {
      // Region 0's clocks go back, but its HLC keeps the time it reached: until physical time
      // catches up, the others still refuse its envelopes. Those rounds do not count.
      extra = Math.ceil(this.overDrift / DEFAULT_SIM_TIMING.roundMs)
      this.overDrift = 0
    }
    const bound = (options.livenessRounds ?? 30) + extra
    let rounds = 0
    let why: string | undefined = 'not checked'
    while (rounds < bound) {
      rounds++
      this.time += DEFAULT_SIM_TIMING.roundMs
      for (const s of this.slots) await this.restart(s)
      await this.round()
      // A later delta can subsume an earlier one (a counter's running total), so equal states may
      // come before every gap is repaired: wait for the acknowledged writes to arrive too.
      why = (await this.divergence()) ?? (await this.unavailable(true))
      if (why === undefined) break
    }
    if (why !== undefined) throw new Error(`liveness: not converged ${rounds} rounds after heal (bound ${bound}): ${why}`)
    // Quiescence: another round changes nothing.
    this.time += DEFAULT_SIM_TIMING.roundMs
    await this.round()
    why = await this.divergence()
    if (why !== undefined) throw new Error(`diverged again after converging: ${why}`)
    return this.verify(rounds, options)
  }

  private async verify(rounds: number, options: ReplicationCheckOptions): Promise<ReplicationRunReport> {
    const equals = this.spec.equals === undefined ? deepEqual : (a: unknown, b: unknown) => (this.spec.equals as (x: V, y: V) => boolean)(a as V, b as V)
    const values: Record<string, unknown> = {}
    for (const doc of this.docIds) {
      const replicas: Array<{ w: string; r: Replica<unknown> }> = []
      for (const s of this.slots) replicas.push({ w: this.writer(s), r: await (s.node as SimNode).open(doc, this.typeName) })
      const first = replicas[0] as { w: string; r: Replica<unknown> }
      const value = this.tracker.unwrap(first.r).value()
      values[doc] = value
      for (const { w, r } of replicas.slice(1)) {
        const v = this.tracker.unwrap(r).value()
        if (!equals(value, v)) throw new Error(`${doc}: equal state bytes but values differ: ${first.w} ${show(value)}, ${w} ${show(v)}`)
      }
      // Every acknowledged write reached every replica; unacknowledged ones survive only if durable.
      // A redone op is its redo (one write); a dependency on it is one on its redo.
      const docOps = this.ops
        .filter((o) => o.doc === doc && !this.redoneBy.has(o.id))
        .map((o) => ([...o.deps].some((d) => this.redoneBy.has(d)) ? { ...o, deps: new Set([...o.deps].map((d) => this.standIn(d))) } : o))
      const surviving = docOps.filter((o) => this.acked.has(o.id) || this.knows(first.r, o.id))
      for (const o of docOps) {
        if (!this.acked.has(o.id) || !o.effective) continue
        for (const { w, r } of replicas) {
          if (!this.knows(r, o.id)) throw new Error(`${doc}: acknowledged op #${o.id} ${show(o.op)} by ${o.replica} never reached ${w}`)
        }
      }
      if (options.oracle !== false && this.spec.oracle !== undefined) {
        const expected = this.spec.oracle(surviving, docOps)
        if (!equals(value, expected)) {
          throw new Error(`${doc}: converged to the wrong value:\n  actual   ${show(value)}\n  expected ${show(expected)} (oracle over ops ${surviving.map((o) => o.id).join(',')})`)
        }
      }
    }
    return { rounds, crashes: this.crashes, restarts: this.restarts, unreachable: this.unreachable, ops: this.ops.length, acknowledged: this.acked.size, values }
  }
}

/**
 * Runs one schedule through real replication nodes, heals, and checks: every node's replica of
 * every document has equal `state()` bytes and `value()`, within `livenessRounds` rounds after
 * heal, and stays so one more round; every acknowledged write reached every replica; the value
 * equals the spec's oracle over the surviving ops (acknowledged or durable at a crash).
 * @throws Error describing the first violated check.
 */
export async function runReplicationSchedule<V, Op, R extends Replica<V>>(
  spec: ReplicaSpec<V, Op, R>,
  backend: ReplicationBackend,
  schedule: ReplicationSchedule<Op>,
  options: ReplicationCheckOptions = {},
): Promise<ReplicationRunReport> {
  return new ReplicationRun(spec, backend, schedule).run(options)
}

/**
 * Found on Kafka (LwwMap, seed -2038020032), shrunk: a write, a crash at the node's second append or
 * commit (its round's commit, while the round's outbox append is still in flight), a pump, a write.
 * Closing the dead process's transport failed that append with ClosedError, and the harness took it
 * for a failure of the run rather than the crash's doing.
 */
export const crashUnderAppendInFlight: ReplicationSchedule<LwwMapOp> = {
  seed: 0,
  regions: 3,
  twin: false,
  docs: 1,
  steps: [
    { delayMs: 100, action: { type: 'op', node: 0, doc: 0, op: { type: 'set', key: 'k1', value: 0 } } },
    { delayMs: 1, action: { type: 'crash', node: 0, at: 2 } },
    { delayMs: 0, action: { type: 'pump', node: 0 } },
    { delayMs: 0, action: { type: 'op', node: 0, doc: 0, op: { type: 'set', key: 'k1', value: 0 } } },
  ],
}

/**
 * Found on Kafka in a fresh-clone CI run (PnCounter, seed -282029956), shrunk: an increment at r0,
 * 60 % of deliveries dropped (r1 lost it), a round, then r2 cut off from r0 and r1. Every round of
 * the partition failed at once on r2's log, before the node waited for its appends; the harness ran
 * the next round at once, so 30 rounds took 40 ms, less than one Kafka append: r1's repair request
 * was still in flight when the availability check gave up on the increment reaching r1.
 */
export const lossyRoundThenPartition: ReplicationSchedule<CounterOp> = {
  seed: 117454214,
  regions: 3,
  twin: false,
  docs: 1,
  steps: [
    { delayMs: 100, action: { type: 'op', node: 0, doc: 0, op: { type: 'inc', n: 1 } } },
    { delayMs: 100, action: { type: 'network', dropPct: 60, duplicatePct: 0, delayPct: 0, smallBatches: false } },
    { delayMs: 100, action: { type: 'round' } },
    { delayMs: 1, action: { type: 'partition', shape: { kind: 'split', side: [1, 0] }, swizzle: false } },
  ],
}

/**
 * Schedules the replication property found failing, by spec name: a backend's property test
 * replays them first (`examples` of {@link assertAsyncProperty}).
 */
export const replicationRegressions: Readonly<Record<string, readonly ReplicationSchedule<unknown>[]>> = {
  LwwMap: [crashUnderAppendInFlight],
  PnCounter: [lossyRoundThenPartition],
}

/** The property behind {@link runReplicationSchedule}, over generated schedules. */
export function checkReplication<V, Op, R extends Replica<V>>(
  spec: ReplicaSpec<V, Op, R>,
  backend: () => ReplicationBackend,
  options: ReplicationScheduleOptions & ReplicationCheckOptions = {},
): fc.IAsyncPropertyWithHooks<[ReplicationSchedule<Op>]> {
  return fc.asyncProperty(replicationSchedule(spec.op, options), async (schedule) => {
    await runReplicationSchedule(spec, backend(), schedule, options)
  })
}

/** Like `assertProperty` from the suites, for async properties: Concord's defaults, replays first, a replay message on failure. */
export async function assertAsyncProperty<T>(name: string, property: fc.IAsyncPropertyWithHooks<[T]>, options: AssertOptions<T> = {}): Promise<void> {
  const numRuns = defaultRuns(options.numRuns)
  for (const r of options.replays ?? []) await runAsync(name, property, { seed: r.seed, ...(r.path === undefined ? {} : { path: r.path }), numRuns })
  const rawSeed = options.seed ?? envNumber('CONCORD_SEED')
  const path = options.path ?? process.env['CONCORD_PATH']
  // Pinned examples in a run of their own (see assertProperty): all of them run, and a printed
  // seed and path replay the same case.
  const examples = (options.examples ?? []).map((e): [T] => [e])
  if (examples.length > 0) await runAsync(`${name} (pinned examples)`, property, { numRuns: examples.length, examples, ...(rawSeed === undefined ? {} : { seed: rawSeed }) })
  await runAsync(name, property, {
    numRuns,
    ...(rawSeed === undefined ? {} : { seed: rawSeed }),
    ...(path === undefined || path === '' ? {} : { path }),
  })
}

function envNumber(name: string): number | undefined {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return undefined
  const n = Number(raw)
  if (!Number.isSafeInteger(n)) throw new ConfigError(`${name} must be an integer, got ${JSON.stringify(raw)}`)
  return n
}

async function runAsync<T>(name: string, property: fc.IAsyncPropertyWithHooks<[T]>, params: fc.Parameters<[T]>): Promise<void> {
  const details = await fc.check(property, params)
  if (!details.failed) return
  const path = details.counterexamplePath ?? ''
  const replay = `CONCORD_SEED=${details.seed} CONCORD_PATH=${path} npx vitest run <test file> -t '${name}'`
  const err = details.errorInstance
  const why = err instanceof Error ? err.message : String(err)
  throw new Error(
    `property ${name} failed (seed ${details.seed}, path ${path}): ${why}\nReplay: ${replay}\nPin it: { seed: ${details.seed}, path: '${path}' }\n${fc.defaultReportMessage(details) ?? ''}`,
    { cause: details.errorInstance ?? undefined },
  )
}
