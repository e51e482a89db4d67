/**
 * A deterministic multi-region simulator: N regions in one process, a virtual clock driven by a
 * discrete-event queue, and one seeded PRNG for every random choice, so the same seed replays the
 * same run byte for byte ({@link Simulation.traceHash} proves it).
 *
 * Each region holds a replica made by a {@link ReplicaSpec}. A local mutation's delta is sent to
 * every other region over per-link channels with latency, jitter, loss, duplication, reordering,
 * partitions (cut links drop, clogged links hold) and crashes. Loss of any kind is repaired by
 * anti-entropy: every `antiEntropyIntervalMs` each region sends each peer its `version()` and
 * `deltaSince(lastVersionHeardFromThatPeer)` (always, even when the versions are equal). Crashed regions restart from their last persisted
 * `state()` under a new writer id (reusing the old id after losing unpersisted writes would
 * re-issue the same dots with different content).
 *
 * Alongside the replicas the simulator tracks the ground truth of causality: which operations each
 * region has seen, so every {@link OpRecord} carries its exact causal past for the spec's oracle.
 */
import { bytesEqual, checkKnownOptions, ConfigError, seededRandom, type Random, type Replica } from '@concord/core'
import { NotConvergedError, RegionDownError } from './errors.js'
import { latencyProfile, type LatencyProfile, type LatencyProfileName, type LinkLatency } from './latency.js'
import type { OpRecord, ReplicaSpec, SpecEnv } from './spec.js'

/** Options for {@link Simulation}. */
export interface SimulationOptions<V, Op, R extends Replica<V>> {
  /** The replicated type under test. */
  readonly spec: ReplicaSpec<V, Op, R>
  /**
   * Region names, also the initial writer ids of their replicas.
   * @default ['r0', 'r1', 'r2', 'r3', 'r4']
   */
  readonly regions?: readonly string[]
  /**
   * Seed of the PRNG behind every random choice (latency samples, loss, swizzles, replicas' `random`).
   * @default 1
   */
  readonly seed?: number
  /**
   * Link latencies: a built-in profile name or a custom profile.
   * @default 'lan'
   */
  readonly latency?: LatencyProfileName | LatencyProfile
  /**
   * Period of anti-entropy: each region sends each peer its version and what that peer lacks.
   * One period is one "round" for {@link Simulation.converge}.
   * @default 500
   */
  readonly antiEntropyIntervalMs?: number
  /**
   * Period at which each region persists `state()`; a crashed region restarts from the last one.
   * @default 250
   */
  readonly snapshotIntervalMs?: number
  /**
   * Virtual wall-clock time at the start, ms since the epoch.
   * @default 1_700_000_000_000
   */
  readonly startTime?: number
  /**
   * Keep a readable event log, returned by {@link Simulation.trace}. Costs time; the hash is always kept.
   * @default false
   */
  readonly recordTrace?: boolean
}

/** Network-wide fault settings, all probabilities in [0, 1]. */
export interface NetworkFaults {
  /** Probability that a message is dropped. @default 0 */
  readonly loss?: number
  /** Probability that a message is delivered twice. @default 0 */
  readonly duplicate?: number
  /** Probability that a message is delayed by an extra random amount up to `reorderWindowMs`. @default 0 */
  readonly reorder?: number
  /** Largest extra delay of a reordered message. @default 300 */
  readonly reorderWindowMs?: number
}

/** Counters of what happened on the simulated network. */
export interface SimulationStats {
  readonly sent: number
  readonly delivered: number
  readonly dropped: number
  readonly duplicated: number
  readonly bytes: number
  readonly crashes: number
}

/** An error thrown by a replica while the simulator drove it (a failed `apply`, for example). */
export interface ReplicaFailure {
  readonly region: string
  readonly time: number
  readonly during: 'apply' | 'restore' | 'deltaSince' | 'version' | 'state'
  readonly error: unknown
}

/** A view of one region. */
export interface RegionHandle<R> {
  readonly name: string
  /** False while crashed. */
  readonly up: boolean
  /** The live replica. @throws RegionDownError while the region is crashed. */
  readonly replica: R
  /** Writer id of the current incarnation: the region name, then `name~1`, `name~2` after restarts. */
  readonly replicaId: string
  /** Clock skew added to the virtual time handed to the replica. */
  readonly skewMs: number
  /** Ids of the operations this region has seen (ground truth). */
  readonly known: ReadonlySet<number>
}

interface Snapshot {
  readonly state: Uint8Array
  readonly known: ReadonlySet<number>
}

interface RegionState<R> {
  readonly name: string
  readonly index: number
  replica: R | undefined
  replicaId: string
  incarnation: number
  skewMs: number
  known: Set<number>
  /** Immutable copy of `known`, rebuilt lazily after it changes. */
  frozen: ReadonlySet<number> | undefined
  peerVersion: Array<Uint8Array | undefined>
  peerKnown: Array<ReadonlySet<number> | undefined>
  snapshot: Snapshot | undefined
  unsubscribe: (() => void) | undefined
}

interface Message {
  readonly from: number
  readonly to: number
  readonly kind: 'delta' | 'sync'
  readonly delta: Uint8Array | undefined
  /** Sender's version and known ops at send time (sync messages). */
  readonly version: Uint8Array | undefined
  readonly senderKnown: ReadonlySet<number> | undefined
  /** Op ids the delta brings to the receiver (ground truth). */
  readonly carried: readonly number[]
  readonly targetIncarnation: number
}

interface LinkState {
  cut: boolean
  clogged: boolean
  held: Message[]
  readonly latency: LinkLatency
}

interface SimEvent {
  readonly at: number
  readonly seq: number
  readonly run: () => void
}

/** Min-heap of events ordered by (time, insertion sequence): ties resolve in a fixed order. */
class EventQueue {
  private readonly heap: SimEvent[] = []

  get size(): number {
    return this.heap.length
  }

  peek(): SimEvent | undefined {
    return this.heap[0]
  }

  push(e: SimEvent): void {
    const h = this.heap
    h.push(e)
    let i = h.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      const parent = h[p] as SimEvent
      if (!before(e, parent)) break
      h[i] = parent
      i = p
    }
    h[i] = e
  }

  pop(): SimEvent | undefined {
    const h = this.heap
    const top = h[0]
    const last = h.pop()
    if (top === undefined || last === undefined || h.length === 0) return top
    let i = 0
    const n = h.length
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      const c = r < n && before(h[r] as SimEvent, h[l] as SimEvent) ? r : l
      const child = h[c] as SimEvent
      if (!before(child, last)) break
      h[i] = child
      i = c
    }
    h[i] = last
    return top
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq)
}

/** Two 32-bit multiplicative lanes: a cheap 64-bit fingerprint of the event log. */
class TraceHash {
  private a = 0x811c9dc5
  private b = 0x01000193

  word(n: number): void {
    const lo = n >>> 0
    const hi = Math.floor(n / 4294967296) >>> 0
    this.mix(lo)
    this.mix(hi)
  }

  bytes(x: Uint8Array): void {
    this.word(x.length)
    for (let i = 0; i < x.length; i++) this.mix(x[i] as number)
  }

  text(s: string): void {
    this.word(s.length)
    for (let i = 0; i < s.length; i++) this.mix(s.charCodeAt(i))
  }

  hex(): string {
    return (this.a >>> 0).toString(16).padStart(8, '0') + (this.b >>> 0).toString(16).padStart(8, '0')
  }

  private mix(x: number): void {
    this.a = Math.imul(this.a ^ x, 0x01000193)
    this.b = Math.imul((this.b ^ x) + 0x9e3779b9, 0x85ebca6b) ^ (this.b >>> 13)
  }
}

const EMPTY: ReadonlySet<number> = new Set()

/**
 * The simulator. Synchronous: nothing happens until {@link advance}, {@link converge} or
 * {@link runUntilIdle} moves the virtual clock.
 *
 * ```ts
 * const sim = new Simulation({ spec, regions: ['us', 'eu', 'ap'], latency: 'three-continents', seed: 7 })
 * sim.perform('us', { add: 'x' })
 * sim.partition(['us'], ['eu', 'ap'])
 * sim.advance(1_000)
 * sim.heal()
 * const rounds = sim.converge()
 * ```
 */
export class Simulation<V, Op, R extends Replica<V> = Replica<V>> {
  readonly spec: ReplicaSpec<V, Op, R>
  /** Region names, in index order. */
  readonly regionNames: readonly string[]
  readonly antiEntropyIntervalMs: number
  readonly snapshotIntervalMs: number
  readonly startTime: number

  private readonly random: Random
  private readonly seed: number
  private readonly queue = new EventQueue()
  private readonly regions: RegionState<R>[]
  private readonly byName = new Map<string, RegionState<R>>()
  private readonly links: LinkState[][]
  private readonly hash = new TraceHash()
  private readonly log: string[] | undefined
  private readonly records: OpRecord<Op>[] = []
  private readonly failureList: ReplicaFailure[] = []
  private time = 0
  private seq = 0
  /** Bumped by {@link heal}, so scheduled fault steps (swizzles) from before the heal do nothing. */
  private faultGeneration = 0
  /** Ops the delta being emitted carries: the current op and those `spec.carries` names. */
  private currentCarried: readonly number[] = []
  private net: Required<NetworkFaults> = { loss: 0, duplicate: 0, reorder: 0, reorderWindowMs: 300 }
  private counters = { sent: 0, delivered: 0, dropped: 0, duplicated: 0, bytes: 0, crashes: 0 }

  constructor(options: SimulationOptions<V, Op, R>) {
    if (typeof options !== 'object' || options === null) throw new ConfigError('Simulation: options must be an object with a spec')
    // A misspelt option (latancy) was ignored, its default silently in force (review finding).
    checkKnownOptions('Simulation', options, ['spec', 'regions', 'seed', 'latency', 'antiEntropyIntervalMs', 'snapshotIntervalMs', 'startTime', 'recordTrace'])
    this.spec = options.spec
    const names = options.regions ?? ['r0', 'r1', 'r2', 'r3', 'r4']
    if (names.length === 0) throw new ConfigError('Simulation: at least one region is required')
    if (new Set(names).size !== names.length) throw new ConfigError('Simulation: region names must be unique')
    for (const n of names) if (n.length === 0 || n.includes('~')) throw new ConfigError(`Simulation: bad region name ${JSON.stringify(n)} (non-empty, no "~")`)
    this.regionNames = [...names]
    this.seed = options.seed ?? 1
    this.random = seededRandom(this.seed)
    this.antiEntropyIntervalMs = options.antiEntropyIntervalMs ?? 500
    this.snapshotIntervalMs = options.snapshotIntervalMs ?? 250
    this.startTime = options.startTime ?? 1_700_000_000_000
    // Numbers of at least 1 ms: a string ('500') passed `> 0` and turned the clock arithmetic into
    // string concatenation (the worker ran out of memory), and 0.001 ms took minutes per case.
    for (const [name, v] of [['antiEntropyIntervalMs', this.antiEntropyIntervalMs], ['snapshotIntervalMs', this.snapshotIntervalMs]] as const) {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 1) throw new ConfigError(`Simulation: ${name} must be a finite number of ms >= 1, got ${JSON.stringify(v)}`)
    }
    if (typeof this.seed !== 'number' || !Number.isSafeInteger(this.seed)) throw new ConfigError(`Simulation: seed must be an integer, got ${JSON.stringify(this.seed)}`)
    this.log = options.recordTrace === true ? [] : undefined
    const profile = latencyProfile(options.latency ?? 'lan')
    const n = names.length
    this.links = names.map((from, i) =>
      names.map((to, j) => {
        const latency = i === j ? { baseMs: 0, jitterMs: 0 } : profile.link(from, to, i, j)
        // A negative or NaN latency would deliver messages before they were sent (the clock runs back).
        if (!(Number.isFinite(latency.baseMs) && latency.baseMs >= 0 && Number.isFinite(latency.jitterMs) && latency.jitterMs >= 0)) {
          throw new ConfigError(`Simulation: latency of link ${from} -> ${to} must have finite baseMs and jitterMs >= 0, got ${JSON.stringify(latency)}`)
        }
        return { cut: false, clogged: false, held: [], latency }
      }),
    )
    this.regions = names.map((name, index) => ({
      name,
      index,
      replica: undefined,
      replicaId: name,
      incarnation: 0,
      skewMs: 0,
      known: new Set<number>(),
      frozen: EMPTY,
      peerVersion: new Array<Uint8Array | undefined>(n).fill(undefined),
      peerKnown: new Array<ReadonlySet<number> | undefined>(n).fill(undefined),
      snapshot: undefined,
      unsubscribe: undefined,
    }))
    for (const r of this.regions) {
      this.byName.set(r.name, r)
      this.boot(r)
      // Random phases keep regions from ticking in lockstep, as real timers do not.
      this.every(this.random() * this.antiEntropyIntervalMs, this.antiEntropyIntervalMs, () => this.antiEntropy(r))
      this.every(this.random() * this.snapshotIntervalMs, this.snapshotIntervalMs, () => this.persist(r))
    }
  }

  // ---- reading ------------------------------------------------------------------------------

  /** Virtual time elapsed since the start, ms. */
  get elapsed(): number {
    return this.time
  }

  /** Virtual wall-clock time (without any region's skew), ms since the epoch. */
  now(): number {
    return Math.floor(this.startTime + this.time)
  }

  /** A view of the named region. @throws ConfigError for an unknown name. */
  region(name: string): RegionHandle<R> {
    const r = this.get(name)
    return {
      name: r.name,
      get up() {
        return r.replica !== undefined
      },
      get replica(): R {
        if (r.replica === undefined) throw new RegionDownError(r.name)
        return r.replica
      },
      get replicaId() {
        return r.replicaId
      },
      get skewMs() {
        return r.skewMs
      },
      get known(): ReadonlySet<number> {
        return r.known
      },
    }
  }

  /** Every operation performed, in issue order (including ones later lost in a crash). */
  ops(): readonly OpRecord<Op>[] {
    return this.records
  }

  /** Operations some live region still has: what a converged value must reflect. */
  survivingOps(): readonly OpRecord<Op>[] {
    const alive = new Set<number>()
    for (const r of this.regions) if (r.replica !== undefined) for (const id of r.known) alive.add(id)
    return this.records.filter((o) => alive.has(o.id))
  }

  /** `value()` of every live region, by name. */
  values(): Record<string, V> {
    const out: Record<string, V> = {}
    for (const r of this.regions) if (r.replica !== undefined) out[r.name] = r.replica.value()
    return out
  }

  /** True when every live region's `state()` bytes are identical. */
  isConverged(): boolean {
    return this.divergence() === undefined
  }

  /** Errors replicas threw while the simulator drove them. A correct type leaves this empty. */
  failures(): readonly ReplicaFailure[] {
    return this.failureList
  }

  /** Network counters. */
  stats(): SimulationStats {
    return { ...this.counters }
  }

  /** Fingerprint of every event so far (times, senders, receivers, message bytes, faults, ops). Same seed and inputs, same hash. */
  traceHash(): string {
    return this.hash.hex()
  }

  /** The readable event log (only with `recordTrace: true`; empty otherwise). */
  trace(): readonly string[] {
    return this.log ?? []
  }

  // ---- driving ------------------------------------------------------------------------------

  /**
   * Performs `op` at `region` as a local mutation, through `spec.perform`. Its deltas go to every
   * other region. Returns the op's record, or `undefined` if the region is down (the op is not performed).
   */
  perform(region: string, op: Op): OpRecord<Op> | undefined {
    const r = this.get(region)
    if (r.replica === undefined) {
      this.event(`op skipped at ${r.name} (down)`, 1, r.index)
      return undefined
    }
    const id = this.records.length
    const deps: ReadonlySet<number> = new Set(r.known)
    this.currentCarried = [id, ...(this.spec.carries?.({ id, replica: r.replicaId, op, deps, meta: undefined }, this.records) ?? [])]
    let meta: unknown
    try {
      meta = this.spec.perform(r.replica, op)
    } finally {
      this.currentCarried = []
    }
    const record: OpRecord<Op> = { id, replica: r.replicaId, op, deps, meta }
    this.records.push(record)
    r.known.add(id)
    r.frozen = undefined
    this.event(`op #${id} at ${r.name}`, 2, r.index, id)
    return record
  }

  /** Runs the event queue for `ms` of virtual time. */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new ConfigError(`advance: ms must be >= 0, got ${ms}`)
    const target = this.time + ms
    for (;;) {
      const next = this.queue.peek()
      if (next === undefined || next.at > target) break
      this.queue.pop()
      this.time = next.at
      next.run()
    }
    this.time = target
  }

  /**
   * Runs anti-entropy rounds (one round = `antiEntropyIntervalMs` of virtual time) until every live
   * region holds identical state bytes, and returns how many rounds that took (0 if already converged).
   * Faults stay as they are: call {@link heal} first to measure recovery.
   * @throws NotConvergedError after `maxRounds` rounds.
   */
  converge(maxRounds = 100): number {
    for (let rounds = 0; ; rounds++) {
      const diff = this.divergence()
      if (diff === undefined) return rounds
      if (rounds >= maxRounds) throw new NotConvergedError(rounds, diff)
      this.advance(this.antiEntropyIntervalMs)
    }
  }

  /** Alias of {@link converge}: runs until quiescent, returns the anti-entropy rounds it took. */
  runUntilQuiescent(maxRounds = 100): number {
    return this.converge(maxRounds)
  }

  /** Sets network-wide loss, duplication and reordering. Unset fields keep their value. */
  setNetwork(faults: NetworkFaults): void {
    if (typeof faults !== 'object' || faults === null) throw new ConfigError('setNetwork: faults must be an object')
    checkKnownOptions('setNetwork', faults, ['loss', 'duplicate', 'reorder', 'reorderWindowMs'], { lossPct: 'loss (a fraction, 0..1)', duplicatePct: 'duplicate (a fraction, 0..1)', reorderPct: 'reorder (a fraction, 0..1)' })
    const next = { ...this.net, ...faults }
    for (const k of ['loss', 'duplicate', 'reorder'] as const) {
      if (!(next[k] >= 0 && next[k] <= 1)) throw new ConfigError(`setNetwork: ${k} must be in [0, 1], got ${next[k]}`)
    }
    if (!(next.reorderWindowMs >= 0)) throw new ConfigError('setNetwork: reorderWindowMs must be >= 0')
    this.net = next
    this.event(`network loss=${next.loss} dup=${next.duplicate} reorder=${next.reorder}`, 3, Math.round(next.loss * 1000), Math.round(next.duplicate * 1000), Math.round(next.reorder * 1000))
  }

  /** Full split: no message crosses between `a` and `b`, either way. Messages already in flight still arrive. */
  partition(a: readonly string[], b: readonly string[]): void {
    for (const x of a) for (const y of b) {
      this.cut(x, y)
      this.cut(y, x)
    }
  }

  /** Asymmetric partition: messages `from → to` are dropped; `to → from` still works. */
  cut(from: string, to: string): void {
    const f = this.get(from)
    const t = this.get(to)
    if (f === t) return
    this.linkOf(f, t).cut = true
    this.event(`cut ${f.name}->${t.name}`, 4, f.index, t.index)
  }

  /** Cuts every link to and from `region`. */
  isolate(region: string): void {
    for (const other of this.regionNames) {
      if (other === region) continue
      this.cut(region, other)
      this.cut(other, region)
    }
  }

  /** Clogs `from → to`: messages are held (not dropped) until the link is unclogged. */
  clog(from: string, to: string): void {
    const f = this.get(from)
    const t = this.get(to)
    if (f === t) return
    this.linkOf(f, t).clogged = true
    this.event(`clog ${f.name}->${t.name}`, 5, f.index, t.index)
  }

  /** Unclogs `from → to` and sends what it held, each with a fresh latency sample. */
  unclog(from: string, to: string): void {
    const f = this.get(from)
    const t = this.get(to)
    const link = this.linkOf(f, t)
    if (!link.clogged) return
    link.clogged = false
    this.event(`unclog ${f.name}->${t.name}`, 6, f.index, t.index)
    const held = link.held
    link.held = []
    for (const m of held) this.transmit(m, link)
  }

  /**
   * A rolling "swizzle" (FoundationDB/Jepsen style): clogs a random subset of links one by one,
   * every `stepMs`, then unclogs them one by one in a different random order. A {@link heal}
   * cancels what has not happened yet.
   */
  swizzle(stepMs = 100): void {
    const pairs: Array<[number, number]> = []
    for (let i = 0; i < this.regions.length; i++) for (let j = 0; j < this.regions.length; j++) if (i !== j) pairs.push([i, j])
    this.shuffle(pairs)
    const chosen = pairs.slice(0, 1 + Math.floor(this.random() * pairs.length))
    const release = this.shuffle(chosen.slice())
    const gen = this.faultGeneration
    this.event(`swizzle ${chosen.length} links`, 7, chosen.length)
    chosen.forEach(([i, j], k) => {
      this.schedule(stepMs * k, () => {
        if (gen === this.faultGeneration) this.clog(this.nameOf(i), this.nameOf(j))
      })
    })
    release.forEach(([i, j], k) => {
      this.schedule(stepMs * (chosen.length + k), () => {
        if (gen === this.faultGeneration) this.unclog(this.nameOf(i), this.nameOf(j))
      })
    })
  }

  /**
   * Crashes `region`: its replica and everything not persisted are gone, messages in flight to it
   * are lost. It stays down until {@link restart} (or {@link heal}).
   */
  crash(region: string): void {
    const r = this.get(region)
    if (r.replica === undefined) return
    r.unsubscribe?.()
    r.unsubscribe = undefined
    r.replica = undefined
    r.incarnation++
    r.known = new Set()
    r.frozen = EMPTY
    r.peerVersion.fill(undefined)
    r.peerKnown.fill(undefined)
    this.counters.crashes++
    this.event(`crash ${r.name}`, 8, r.index)
  }

  /** Restarts a crashed region from its last snapshot, under a new writer id. No-op if it is up. */
  restart(region: string): void {
    const r = this.get(region)
    if (r.replica !== undefined) return
    this.boot(r)
    this.event(`restart ${r.name} as ${r.replicaId}`, 9, r.index, r.incarnation)
  }

  /** Sets the clock skew of `region`: its replica sees virtual time + `ms` (may be negative). */
  setSkew(region: string, ms: number): void {
    if (!Number.isFinite(ms)) throw new ConfigError(`setSkew: ms must be finite, got ${ms}`)
    const r = this.get(region)
    r.skewMs = ms
    this.event(`skew ${r.name} ${ms}`, 10, r.index, ms + 2 ** 40)
  }

  /**
   * Removes every fault: partitions and clogs (held messages are released), network loss,
   * duplication and reordering, pending swizzle steps; restarts crashed regions. Clock skew stays:
   * it is a property of the machines, not of the network.
   */
  heal(): void {
    this.faultGeneration++
    this.net = { ...this.net, loss: 0, duplicate: 0, reorder: 0 }
    this.event('heal', 11)
    for (const row of this.links) for (const l of row) l.cut = false
    for (const f of this.regions) for (const t of this.regions) this.unclog(f.name, t.name)
    for (const r of this.regions) this.restart(r.name)
  }

  // ---- internals ----------------------------------------------------------------------------

  private get(name: string): RegionState<R> {
    const r = this.byName.get(name)
    if (r === undefined) throw new ConfigError(`unknown region ${JSON.stringify(name)} (regions: ${this.regionNames.join(', ')})`)
    return r
  }

  private nameOf(i: number): string {
    return this.regionNames[i] as string
  }

  private linkOf(f: RegionState<R>, t: RegionState<R>): LinkState {
    return (this.links[f.index] as LinkState[])[t.index] as LinkState
  }

  private shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = Math.floor(this.random() * (i + 1))
      const t = xs[i] as T
      xs[i] = xs[j] as T
      xs[j] = t
    }
    return xs
  }

  private schedule(delay: number, run: () => void): void {
    this.queue.push({ at: this.time + delay, seq: this.seq++, run })
  }

  private every(first: number, period: number, run: () => void): void {
    const tick = (): void => {
      run()
      this.schedule(period, tick)
    }
    this.schedule(first, tick)
  }

  private event(text: string, code: number, a = 0, b = 0, c = 0): void {
    const h = this.hash
    h.word(Math.round(this.time * 1000))
    h.word(code)
    h.word(a)
    h.word(b)
    h.word(c)
    if (this.log !== undefined) this.log.push(`${this.time.toFixed(3)} ${text}`)
  }

  private fail(r: RegionState<R>, during: ReplicaFailure['during'], error: unknown): void {
    this.failureList.push({ region: r.name, time: this.time, during, error })
    this.event(`${during} failed at ${r.name}: ${error instanceof Error ? error.message : String(error)}`, 12, r.index)
  }

  private envFor(r: RegionState<R>): SpecEnv {
    const random = seededRandom((this.seed ^ Math.imul(r.index + 1, 0x9e3779b1) ^ Math.imul(r.incarnation + 1, 0x85ebca6b)) | 0)
    return { now: () => Math.floor(this.startTime + this.time + r.skewMs), random }
  }

  private boot(r: RegionState<R>): void {
    r.replicaId = r.incarnation === 0 ? r.name : `${r.name}~${r.incarnation}`
    const replica = this.spec.create(r.replicaId, this.envFor(r))
    r.known = new Set()
    if (r.snapshot !== undefined) {
      try {
        replica.apply(r.snapshot.state)
        r.known = new Set(r.snapshot.known)
      } catch (e) {
        this.fail(r, 'restore', e)
      }
    }
    r.frozen = undefined
    r.replica = replica
    r.unsubscribe = replica.onDelta((delta, origin) => {
      if (origin === 'local') this.broadcast(r, delta)
    })
  }

  private frozenKnown(r: RegionState<R>): ReadonlySet<number> {
    if (r.frozen === undefined) r.frozen = new Set(r.known)
    return r.frozen
  }

  private broadcast(r: RegionState<R>, delta: Uint8Array): void {
    const carried = this.currentCarried
    for (const t of this.regions) {
      if (t === r) continue
      this.send({ from: r.index, to: t.index, kind: 'delta', delta, version: undefined, senderKnown: undefined, carried, targetIncarnation: t.incarnation })
    }
  }

  private persist(r: RegionState<R>): void {
    if (r.replica === undefined) return
    try {
      r.snapshot = { state: r.replica.state(), known: this.frozenKnown(r) }
    } catch (e) {
      this.fail(r, 'state', e)
    }
  }

  private antiEntropy(r: RegionState<R>): void {
    const replica = r.replica
    if (replica === undefined) return
    let version: Uint8Array
    try {
      version = replica.version()
    } catch (e) {
      this.fail(r, 'version', e)
      return
    }
    const known = this.frozenKnown(r)
    for (const t of this.regions) {
      if (t === r) continue
      const peerVersion = r.peerVersion[t.index]
      // Always send deltaSince, even when the peer's version equals ours: equal versions do not
      // imply equal states (a delta applied out of causal order can leave a dead write alive
      // under the same version), and deltaSince is what repairs that.
      let delta: Uint8Array
      try {
        delta = replica.deltaSince(peerVersion)
      } catch (e) {
        this.fail(r, 'deltaSince', e)
        continue
      }
      const carried: number[] = []
      const peerKnown = r.peerKnown[t.index] ?? EMPTY
      for (const id of known) if (!peerKnown.has(id)) carried.push(id)
      this.send({ from: r.index, to: t.index, kind: 'sync', delta, version, senderKnown: known, carried, targetIncarnation: t.incarnation })
    }
  }

  private send(m: Message): void {
    const link = ((this.links[m.from] as LinkState[])[m.to]) as LinkState
    this.counters.sent++
    // bytes put on the wire by the sender: the delta plus, for sync messages, the version
    this.counters.bytes += (m.delta?.length ?? 0) + (m.version?.length ?? 0)
    if (link.cut) {
      this.counters.dropped++
      return
    }
    if (link.clogged) {
      link.held.push(m)
      return
    }
    this.transmit(m, link)
  }

  /** Puts a message on the wire: loss, duplication, reordering, latency. */
  private transmit(m: Message, link: LinkState): void {
    const copies = this.random() < this.net.duplicate ? 2 : 1
    if (copies === 2) this.counters.duplicated++
    for (let c = 0; c < copies; c++) {
      if (this.random() < this.net.loss) {
        this.counters.dropped++
        continue
      }
      let delay = link.latency.baseMs + link.latency.jitterMs * (this.random() + this.random())
      if (this.random() < this.net.reorder) delay += this.random() * this.net.reorderWindowMs
      this.schedule(delay, () => this.deliver(m))
    }
  }

  private deliver(m: Message): void {
    const r = this.regions[m.to] as RegionState<R>
    const replica = r.replica
    if (replica === undefined || r.incarnation !== m.targetIncarnation) {
      this.counters.dropped++
      return
    }
    this.counters.delivered++
    const h = this.hash
    h.word(Math.round(this.time * 1000))
    h.word(m.kind === 'delta' ? 13 : 14)
    h.word(m.from)
    h.word(m.to)
    if (m.delta !== undefined) h.bytes(m.delta)
    if (this.log !== undefined) this.log.push(`${this.time.toFixed(3)} deliver ${m.kind} ${this.nameOf(m.from)}->${r.name} ${m.delta?.length ?? 0}B ops[${m.carried.join(',')}]`)
    if (m.delta !== undefined) {
      try {
        replica.apply(m.delta)
      } catch (e) {
        this.fail(r, 'apply', e)
        return
      }
      if (m.carried.length > 0) {
        for (const id of m.carried) r.known.add(id)
        r.frozen = undefined
      }
    }
    if (m.version !== undefined && m.senderKnown !== undefined) {
      r.peerVersion[m.from] = m.version
      r.peerKnown[m.from] = m.senderKnown
    }
  }

  /** Why the live regions differ, or undefined when their state bytes agree. */
  private divergence(): string | undefined {
    let first: { name: string; state: Uint8Array } | undefined
    for (const r of this.regions) {
      if (r.replica === undefined) continue
      let state: Uint8Array
      try {
        state = r.replica.state()
      } catch (e) {
        return `state() failed at ${r.name}: ${e instanceof Error ? e.message : String(e)}`
      }
      if (first === undefined) first = { name: r.name, state }
      else if (!bytesEqual(first.state, state)) return `state of ${r.name} differs from ${first.name}`
    }
    return undefined
  }
}
