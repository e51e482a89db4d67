/**
 * Reusable property suites for any replicated type described by a {@link ReplicaSpec}: merge laws,
 * convergence under every fault class, liveness after heal, and the sequential-spec oracle.
 *
 * The `check*` functions return plain fast-check properties (usable with any runner);
 * {@link assertProperty} runs one with Concord's defaults and replay message; and
 * {@link describeReplicaSuites} registers all of them as vitest tests.
 */
import * as fc from 'fast-check'
import { describe, it } from 'vitest'
import { bytesEqual, checkKnownOptions, ConfigError, isConcordError, seededRandom, type Random, type Replica } from '@concord/core'
import {
  FAULT_CLASSES,
  faultSchedule,
  opSequence,
  regionNames,
  runSchedule,
  type FaultClass,
  type FaultSchedule,
  type OpSequence,
} from './arbitraries.js'
import { deepEqual, show } from './equality.js'
import { randomInt } from 'node:crypto'
import { Simulation } from './simulation.js'
import type { ReplicaSpec, SpecEnv } from './spec.js'

/** Names of the merge-law properties. */
export type MergeLaw = 'commutative' | 'associative' | 'idempotent' | 'duplicate-delivery' | 'order-independent' | 'delta-since' | 'merge-deltas' | 'rejects-bad-bytes' | 'deltas-complete' | 'apply-is-remote'

/** Every {@link MergeLaw}. */
export const MERGE_LAWS: readonly MergeLaw[] = ['commutative', 'associative', 'idempotent', 'duplicate-delivery', 'order-independent', 'delta-since', 'merge-deltas', 'rejects-bad-bytes', 'deltas-complete', 'apply-is-remote']

/**
 * A pinned failure, run before the random cases of the property it names (or of every property
 * when `property` is omitted). Either a fast-check replay (`seed` and `path` from a failure
 * report) or an explicit counter-example input.
 */
export type Regression<Op> =
  | { readonly property?: string; readonly seed: number; readonly path?: string }
  | { readonly property?: string; readonly schedule: FaultSchedule<Op> }
  | { readonly property?: string; readonly sequence: OpSequence<Op> }

/** Options for the suites. */
export interface SuiteOptions<Op> {
  /**
   * Cases per property.
   * @default env CONCORD_RUNS, else 10_000 when CONCORD_SOAK is set, else 1_000
   */
  readonly numRuns?: number
  /** fast-check seed. @default env CONCORD_SEED, else random (printed on failure) */
  readonly seed?: number
  /** fast-check replay path, used with `seed`. @default env CONCORD_PATH */
  readonly path?: string
  /** Regions per simulation (the suite requires at least 5). @default 5 */
  readonly regions?: number
  /** Most operations per generated case. @default 30 */
  readonly maxOps?: number
  /** Fault classes to run, one test each. @default every {@link FAULT_CLASSES} */
  readonly faults?: readonly FaultClass[]
  /** Liveness bound: anti-entropy rounds allowed after heal. @default regions + 2 */
  readonly livenessRounds?: number
  /** Rounds after which a convergence property declares divergence. @default 60 */
  readonly maxRounds?: number
  /** Pinned failures, always run first. */
  readonly regressions?: readonly Regression<Op>[]
  /** Anti-entropy period of the simulations, ms. @default 500 */
  readonly antiEntropyIntervalMs?: number
}

/** Property ids, as used in test titles and {@link Regression.property}. */
export function propertyIds(options: { readonly faults?: readonly FaultClass[]; readonly oracle?: boolean } = {}): string[] {
  return [
    ...MERGE_LAWS.map((l) => `laws/${l}`),
    ...(options.faults ?? FAULT_CLASSES).map((c) => `convergence/${c}`),
    'liveness',
    ...(options.oracle === false ? [] : ['oracle']),
  ]
}

function envInt(name: string): number | undefined {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return undefined
  const n = Number(raw)
  if (!Number.isSafeInteger(n)) throw new ConfigError(`${name} must be an integer, got ${JSON.stringify(raw)}`)
  return n
}

/** Cases per property: option, else CONCORD_RUNS, else 10,000 under CONCORD_SOAK, else 1,000. */
export function defaultRuns(numRuns?: number): number {
  const n = numRuns ?? envInt('CONCORD_RUNS') ?? (process.env['CONCORD_SOAK'] ? 10_000 : 1_000)
  // Zero runs would pass any property without trying it.
  if (!Number.isSafeInteger(n) || n < 1) throw new ConfigError(`numRuns (or CONCORD_RUNS) must be an integer of at least 1, got ${String(n)}`)
  return n
}

/**
 * Cases per property for a suite on a real server (Redis, Kafka), where a case is a deployment
 * (fresh keys or topics, consumer groups, connections): CONCORD_SERVER_RUNS, else `soak` under
 * CONCORD_SOAK, else `base`. CONCORD_RUNS does not apply: its default (1,000) is sized for
 * in-memory cases.
 * @throws ConfigError when CONCORD_SERVER_RUNS is not an integer of at least 1.
 */
export function serverRuns(base: number, soak: number): number {
  const raw = process.env['CONCORD_SERVER_RUNS']
  const n = raw === undefined || raw === '' ? (process.env['CONCORD_SOAK'] ? soak : base) : Number(raw)
  // Zero runs would pass any property without trying it.
  if (!Number.isSafeInteger(n) || n < 1) throw new ConfigError(`CONCORD_SERVER_RUNS must be an integer of at least 1, got ${JSON.stringify(raw ?? n)}`)
  return n
}

// ---- comparing replicas ----------------------------------------------------------------------

/** Why two replicas differ (value, then state bytes), or undefined when they agree. */
function difference<V>(equals: (a: V, b: V) => boolean, a: Replica<V>, b: Replica<V>, what: string): string | undefined {
  const va = a.value()
  const vb = b.value()
  if (!equals(va, vb)) return `${what}: values differ:\n  ${show(va)}\n  ${show(vb)}`
  const sa = a.state()
  const sb = b.state()
  if (!bytesEqual(sa, sb)) return `${what}: values agree (${show(va)}) but state() bytes differ:\n  ${show(sa)}\n  ${show(sb)}`
  return undefined
}

function check(diff: string | undefined): void {
  if (diff !== undefined) throw new Error(diff)
}

// ---- merge laws ------------------------------------------------------------------------------

interface LawContext<V, R extends Replica<V>> {
  readonly deltas: readonly Uint8Array[]
  /** Deltas a writer emitted as 'local' while it applied a sync delta (none may be). */
  readonly echoes: readonly Uint8Array[]
  /** The writers that emitted {@link deltas} (local ones) and applied the sync ones. */
  readonly writers: readonly R[]
  readonly rng: Random
  fresh(): R
  equals(a: V, b: V): boolean
}

function lawContext<V, Op, R extends Replica<V>>(spec: ReplicaSpec<V, Op, R>, seq: OpSequence<Op>): LawContext<V, R> {
  let clock = 1_700_000_000_000
  const env = (i: number): SpecEnv => ({ now: () => clock, random: seededRandom(seq.seed + i) })
  const writers: R[] = []
  const deltas: Uint8Array[] = []
  const echoes: Uint8Array[] = []
  let applying = false
  for (let i = 0; i < seq.writers; i++) {
    const w = spec.create(`w${i}`, env(i))
    w.onDelta((d, origin) => {
      if (origin !== 'local') return
      if (applying) echoes.push(d)
      else deltas.push(d)
    })
    writers.push(w)
  }
  for (const step of seq.steps) {
    clock += 1
    const w = writers[step.writer % writers.length] as R
    if (step.type === 'op') spec.perform(w, step.op)
    else {
      const from = writers[step.from % writers.length] as R
      if (from === w) continue
      // What `w` lacks is itself a delta: exercise the laws on sync deltas too.
      const d = from.deltaSince(w.version())
      applying = true
      try {
        w.apply(d)
      } finally {
        applying = false
      }
      deltas.push(d)
    }
  }
  let n = 0
  const equals = spec.equals ?? deepEqual
  return {
    deltas,
    echoes,
    writers,
    rng: seededRandom(seq.seed),
    fresh: () => spec.create(`law${n++}`, env(100 + n)),
    equals: (a, b) => equals(a, b),
  }
}

function shuffled<T>(xs: readonly T[], rng: Random): T[] {
  const out = xs.slice()
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1))
    const t = out[i] as T
    out[i] = out[j] as T
    out[j] = t
  }
  return out
}

function pick<T>(xs: readonly T[], rng: Random): T {
  return xs[Math.floor(rng() * xs.length)] as T
}

function applied<R extends Replica<unknown>>(r: R, deltas: Iterable<Uint8Array>): R {
  for (const d of deltas) r.apply(d)
  return r
}

type Law<V, R extends Replica<V>> = (c: LawContext<V, R>) => void

function laws<V, R extends Replica<V>>(): Record<MergeLaw, Law<V, R>> {
  return {
    // A replication engine ships a writer's local deltas and nothing else: every change must be in
    // them. (Anti-entropy would repair a delta that leaves a change out, so no convergence property
    // notices; a RegionNode never converges.)
    'deltas-complete'(c) {
      const fromDeltas = applied(c.fresh(), c.deltas)
      const fromStates = applied(
        c.fresh(),
        c.writers.map((w) => w.state()),
      )
      check(difference(c.equals, fromDeltas, fromStates, "every emitted delta applied vs every writer's state() applied"))
    },
    // apply() takes others' changes: it emits them as 'remote' (or not at all), never as 'local' —
    // a replication engine ships local deltas, and every region would publish each write again
    // under its own name (and, without a no-change guard, back and forth for ever).
    'apply-is-remote'(c) {
      if (c.echoes.length > 0) throw new Error(`apply() of a sync delta emitted ${c.echoes.length} delta(s) as 'local': ${show(c.echoes[0])}`)
      const r = c.fresh()
      const local: Uint8Array[] = []
      r.onDelta((d, origin) => {
        if (origin === 'local') local.push(d)
      })
      applied(r, c.deltas)
      applied(r, c.writers.map((w) => w.state()))
      if (local.length > 0) throw new Error(`apply() emitted ${local.length} delta(s) as 'local': ${show(local[0])}`)
    },
    commutative(c) {
      if (c.deltas.length < 2) return
      for (let k = 0; k < 3; k++) {
        const order = shuffled(c.deltas, c.rng)
        const base = order.slice(0, Math.floor(c.rng() * order.length))
        const x = pick(c.deltas, c.rng)
        const y = pick(c.deltas, c.rng)
        const xy = applied(applied(c.fresh(), base), [x, y])
        const yx = applied(applied(c.fresh(), base), [y, x])
        check(difference(c.equals, xy, yx, 'base ⊔ x ⊔ y vs base ⊔ y ⊔ x'))
      }
    },
    associative(c) {
      const order = shuffled(c.deltas, c.rng)
      const i = Math.floor(c.rng() * (order.length + 1))
      const j = i + Math.floor(c.rng() * (order.length - i + 1))
      const stateOf = (ds: readonly Uint8Array[]): Uint8Array => applied(c.fresh(), ds).state()
      const a = stateOf(order.slice(0, i))
      const b = stateOf(order.slice(i, j))
      const cc = stateOf(order.slice(j))
      const ab = applied(c.fresh(), [a, b]).state()
      const bc = applied(c.fresh(), [b, cc]).state()
      const left = applied(c.fresh(), [ab, cc])
      const right = applied(c.fresh(), [a, bc])
      check(difference(c.equals, left, right, '(a ⊔ b) ⊔ c vs a ⊔ (b ⊔ c)'))
      check(difference(c.equals, left, applied(c.fresh(), order), '(a ⊔ b) ⊔ c vs every delta in turn'))
    },
    idempotent(c) {
      const r = applied(c.fresh(), c.deltas)
      const reference = applied(c.fresh(), c.deltas)
      for (const d of c.deltas) {
        r.apply(d)
        check(difference(c.equals, r, reference, 're-applying a delta'))
      }
      r.apply(r.state())
      check(difference(c.equals, r, reference, 'applying its own state()'))
    },
    'duplicate-delivery'(c) {
      const order = shuffled(c.deltas, c.rng)
      const withDupes: Uint8Array[] = []
      for (const d of order) {
        withDupes.push(d)
        // re-deliver an earlier delta at random points, as an at-least-once channel does
        if (c.rng() < 0.5 && withDupes.length > 0) withDupes.push(pick(withDupes, c.rng))
      }
      check(difference(c.equals, applied(c.fresh(), withDupes), applied(c.fresh(), order), 'duplicated delivery vs once'))
    },
    'order-independent'(c) {
      const a = applied(c.fresh(), c.deltas)
      const b = applied(c.fresh(), shuffled(c.deltas, c.rng))
      const rev = applied(c.fresh(), c.deltas.slice().reverse())
      check(difference(c.equals, a, b, 'issue order vs shuffled'))
      check(difference(c.equals, a, rev, 'issue order vs reversed'))
    },
    'delta-since'(c) {
      const full = applied(c.fresh(), c.deltas)
      const partial = applied(
        c.fresh(),
        c.deltas.filter(() => c.rng() < 0.5),
      )
      partial.apply(full.deltaSince(partial.version()))
      check(difference(c.equals, partial, full, 'partial ⊔ full.deltaSince(partial.version())'))
      check(difference(c.equals, applied(c.fresh(), [full.deltaSince()]), full, 'empty ⊔ full.deltaSince()'))
      check(difference(c.equals, applied(c.fresh(), [full.state()]), full, 'restore from state()'))
    },
    'merge-deltas'(c) {
      // Types with mergeDeltas: a merged run of deltas (in issue order, as a node merges the local
      // deltas of one flush) does what the run does, on any state.
      const full = applied(c.fresh(), c.deltas)
      if (full.mergeDeltas === undefined || c.deltas.length === 0) return
      for (let k = 0; k < 3; k++) {
        const i = Math.floor(c.rng() * c.deltas.length)
        const j = i + 1 + Math.floor(c.rng() * (c.deltas.length - i))
        const run = c.deltas.slice(i, j)
        const merged = full.mergeDeltas(run)
        const base = c.deltas.filter(() => c.rng() < 0.5)
        check(difference(c.equals, applied(c.fresh(), [...base, merged]), applied(c.fresh(), [...base, ...run]), `base ⊔ mergeDeltas(deltas ${i}..${j - 1}) vs base ⊔ each in turn`))
      }
    },
    'rejects-bad-bytes'(c) {
      const r = applied(
        c.fresh(),
        c.deltas.filter(() => c.rng() < 0.5),
      )
      const garbage = Uint8Array.from({ length: 1 + Math.floor(c.rng() * 24) }, () => Math.floor(c.rng() * 256))
      const candidates: Uint8Array[] = [new Uint8Array(0), Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), garbage]
      // Must be refused, not taken as some other valid delta: a real delta with a byte after it
      // (a decoder that ignores trailing bytes accepts a corrupted frame).
      let mustRefuse: Uint8Array | undefined
      if (c.deltas.length > 0) {
        const d = pick(c.deltas, c.rng)
        candidates.push(d.subarray(0, Math.floor(d.length / 2)))
        const trailing = new Uint8Array(d.length + 1)
        trailing.set(d)
        trailing[d.length] = 0x2a
        candidates.push(trailing)
        mustRefuse = trailing
      }
      for (const bad of candidates) {
        // Garbage may happen to decode; then it must behave as a valid delta: a join, so applying
        // it again changes nothing, and the state it leaves round-trips through state()/apply.
        const reference = applied(c.fresh(), [r.state()])
        try {
          r.apply(bad)
        } catch (e) {
          if (!isConcordError(e) || e.code !== 'DECODE') throw new Error(`apply(${show(bad)}) threw ${String(e)}, expected a DecodeError`)
          check(difference(c.equals, r, reference, `after rejecting ${show(bad)} the replica changed`))
          continue
        }
        if (bad === mustRefuse) throw new Error(`apply(${show(bad)}) accepted a delta with a trailing byte; expected a DecodeError`)
        const after = applied(c.fresh(), [r.state()])
        check(difference(c.equals, after, r, `the state after accepting ${show(bad)} does not round-trip`))
        r.apply(bad)
        check(difference(c.equals, r, after, `applying the accepted ${show(bad)} again changed the replica`))
      }
    },
  }
}

/**
 * Merge-law properties over the deltas that random ops produce (local deltas and sync deltas
 * between a few writers): commutative, associative, idempotent, duplicate delivery is a no-op,
 * order independence, `deltaSince`/`state()` round trips, and bad bytes rejected with
 * `DecodeError` leaving the replica unchanged. Each compares `value()` and `state()` bytes.
 */
export function checkMergeLaws<V, Op, R extends Replica<V>>(
  spec: ReplicaSpec<V, Op, R>,
  options: Pick<SuiteOptions<Op>, 'maxOps'> = {},
): Record<MergeLaw, fc.IPropertyWithHooks<[OpSequence<Op>]>> {
  const arb = opSequence(spec.op, { maxSteps: Math.min(options.maxOps ?? 20, 30) })
  const all = laws<V, R>()
  const out = {} as Record<MergeLaw, fc.IPropertyWithHooks<[OpSequence<Op>]>>
  for (const law of MERGE_LAWS) out[law] = fc.property(arb, (seq) => all[law](lawContext(spec, seq)))
  return out
}

// ---- simulations -----------------------------------------------------------------------------

interface SimCheck {
  readonly oracle: boolean
  readonly livenessRounds: number | undefined
  readonly maxRounds: number
}

function simulate<V, Op, R extends Replica<V>>(spec: ReplicaSpec<V, Op, R>, schedule: FaultSchedule<Op>, opts: SimCheck, antiEntropyIntervalMs: number | undefined): void {
  const sim = new Simulation<V, Op, R>({
    spec,
    regions: regionNames(schedule.regions),
    seed: schedule.seed,
    latency: schedule.latency,
    ...(antiEntropyIntervalMs === undefined ? {} : { antiEntropyIntervalMs }),
  })
  runSchedule(sim, schedule)
  sim.heal()
  let rounds: number
  try {
    rounds = sim.converge(opts.maxRounds)
  } catch (e) {
    if (isConcordError(e) && e.code === 'NOT_CONVERGED') {
      throw new Error(`diverged: ${e.message}\nvalues: ${show(sim.values())}`, { cause: e })
    }
    throw e
  }
  const failures = sim.failures()
  if (failures.length > 0) {
    const f = failures[0]
    throw new Error(`replica threw during ${f?.during} at ${f?.region}: ${String(f?.error)} (${failures.length} failures)`, { cause: f?.error })
  }
  const names = sim.regionNames
  const first = sim.region(names[0] as string).replica
  for (const n of names.slice(1)) check(difference(sameValueOf(spec), first, sim.region(n).replica, `regions ${names[0]} and ${n}`))
  if (opts.oracle && spec.oracle !== undefined) {
    const ops = sim.survivingOps()
    const expected = spec.oracle(ops, sim.ops())
    const actual = first.value()
    if (!sameValueOf(spec)(actual, expected)) {
      const lost = sim.ops().filter((o) => !ops.includes(o))
      // The oracle may be what is wrong: most such failures of a correct type found so far were.
      const hint =
        lost.length === 0
          ? ''
          : `\n  ops counted lost: ${lost.map((o) => `#${o.id}`).join(', ')} (issued, never seen by a live region). If the type's deltas restate earlier ops (running totals), declare ReplicaSpec.carries; if an op removes only what is live where it runs, the oracle gets every op as its second argument (docs/testing.md, "Writing the oracle")`
      throw new Error(`converged to the wrong value:\n  actual   ${show(actual)}\n  expected ${show(expected)} (oracle over ${ops.length} ops)${hint}`)
    }
  }
  if (opts.livenessRounds !== undefined && rounds > opts.livenessRounds) {
    throw new Error(`liveness: took ${rounds} anti-entropy rounds after heal, bound is ${opts.livenessRounds}`)
  }
}

function sameValueOf<V, Op, R extends Replica<V>>(spec: ReplicaSpec<V, Op, R>): (a: V, b: V) => boolean {
  const eq = spec.equals
  return eq !== undefined ? (a, b) => eq(a, b) : deepEqual
}

/**
 * Convergence under one fault class: run a generated schedule in a simulation of `regions` (≥ 5)
 * regions, heal, run anti-entropy until quiescent; then every region must hold the same `value()`
 * and `state()` bytes, no replica may have thrown, and the value must equal the spec's oracle
 * over the surviving ops (when the spec has one).
 */
export function checkConvergence<V, Op, R extends Replica<V>>(
  spec: ReplicaSpec<V, Op, R>,
  faults: FaultClass = 'mixed',
  options: Omit<SuiteOptions<Op>, 'faults' | 'regressions'> = {},
): fc.IPropertyWithHooks<[FaultSchedule<Op>]> {
  const regions = regionCount(options.regions)
  return fc.property(faultSchedule(spec.op, { faults, regions, maxOps: options.maxOps ?? 30 }), (schedule) =>
    simulate(spec, schedule, { oracle: true, livenessRounds: undefined, maxRounds: options.maxRounds ?? 60 }, options.antiEntropyIntervalMs),
  )
}

/** Liveness: under mixed faults, once healed, regions converge within `livenessRounds` anti-entropy rounds. */
export function checkLiveness<V, Op, R extends Replica<V>>(
  spec: ReplicaSpec<V, Op, R>,
  options: Omit<SuiteOptions<Op>, 'faults' | 'regressions'> = {},
): fc.IPropertyWithHooks<[FaultSchedule<Op>]> {
  const regions = regionCount(options.regions)
  const bound = options.livenessRounds ?? regions + 2
  return fc.property(faultSchedule(spec.op, { faults: 'mixed', regions, maxOps: options.maxOps ?? 30 }), (schedule) =>
    simulate(spec, schedule, { oracle: false, livenessRounds: bound, maxRounds: Math.max(bound, options.maxRounds ?? 60) }, options.antiEntropyIntervalMs),
  )
}

/** The oracle on its own, without faults: the converged value equals `spec.oracle(ops)`. @throws ConfigError if the spec has no oracle. */
export function checkOracle<V, Op, R extends Replica<V>>(
  spec: ReplicaSpec<V, Op, R>,
  options: Omit<SuiteOptions<Op>, 'faults' | 'regressions'> = {},
): fc.IPropertyWithHooks<[FaultSchedule<Op>]> {
  if (spec.oracle === undefined) throw new ConfigError(`checkOracle: spec ${spec.name} has no oracle`)
  const regions = regionCount(options.regions)
  return fc.property(faultSchedule(spec.op, { faults: 'none', regions, maxOps: options.maxOps ?? 30, latencies: ['lan', 'three-continents'] }), (schedule) =>
    simulate(spec, schedule, { oracle: true, livenessRounds: undefined, maxRounds: options.maxRounds ?? 60 }, options.antiEntropyIntervalMs),
  )
}

function regionCount(n: number | undefined): number {
  const regions = n ?? 5
  // One region converges with itself whatever the type does: such a property cannot fail.
  if (!Number.isSafeInteger(regions) || regions < 2) throw new ConfigError(`regions must be an integer of at least 2, got ${regions}`)
  return regions
}

// ---- running ---------------------------------------------------------------------------------

/** Options for {@link assertProperty}. */
export interface AssertOptions<T> {
  readonly numRuns?: number
  readonly seed?: number
  readonly path?: string
  /** Inputs always tried first. */
  readonly examples?: readonly T[]
  /** Replays (seed and optional path) run before the random cases. */
  readonly replays?: ReadonlyArray<{ readonly seed: number; readonly path?: string }>
}

/**
 * Runs a property like `fc.assert`, with Concord's defaults (`numRuns` from {@link defaultRuns},
 * seed/path from CONCORD_SEED/CONCORD_PATH), and on failure throws an error that names the
 * property and says how to replay it.
 */
export function assertProperty<T>(name: string, property: fc.IPropertyWithHooks<[T]>, options: AssertOptions<T> = {}): void {
  // A pinned replay that fails again says so (it said "Pin it", as for a new failure).
  for (const r of options.replays ?? []) run(name, property, { seed: r.seed, ...(r.path === undefined ? {} : { path: r.path }), numRuns: defaultRuns(options.numRuns) }, true)
  // Chosen here rather than by fast-check, so that a long run can say it before it starts: a case
  // that hangs (synchronous code no test timeout stops) otherwise leaves no seed to replay.
  const seed = options.seed ?? envInt('CONCORD_SEED') ?? randomInt(-0x80000000, 0x7fffffff)
  if (process.env['CONCORD_SOAK'] !== undefined) process.stderr.write(`property ${name}: seed ${seed}\n`)
  const path = options.path ?? process.env['CONCORD_PATH']
  const numRuns = defaultRuns(options.numRuns)
  // Pinned examples in a run of their own, every one of them: fast-check counts examples into
  // numRuns (so those past it never ran) and into a failure's path (so a seed and path printed by
  // a run with examples replayed another case in a run without them).
  const examples = (options.examples ?? []).map((e): [T] => [e])
  if (examples.length > 0) run(name, property, { numRuns: examples.length, examples, seed }, true)
  const params: fc.Parameters<[T]> = {
    numRuns,
    seed,
    ...(path === undefined || path === '' ? {} : { path }),
  }
  run(name, property, params)
}

function run<T>(name: string, property: fc.IPropertyWithHooks<[T]>, params: fc.Parameters<[T]>, pinned = false): void {
  const details = fc.check(property, params)
  if (!details.failed) return
  const path = details.counterexamplePath ?? ''
  const report = fc.defaultReportMessage(details) ?? ''
  const err = details.errorInstance
  const why = err instanceof Error ? err.message : String(err)
  // vitest reads -t as a regular expression: the name's own characters escaped.
  const replayTest = `npx vitest run <test file> -t '${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}'`
  if (pinned) {
    // A pinned example (a regression) fails again: it is already pinned, and runs first every time.
    throw new Error(`property ${name} failed on a pinned example (a regression it holds): ${why}\nReplay: ${replayTest}\n${report}`, { cause: details.errorInstance ?? undefined })
  }
  const replay = `CONCORD_SEED=${details.seed} CONCORD_PATH=${path} ${replayTest}`
  const pin = `{ property: '${name}', seed: ${details.seed}, path: '${path}' }`
  throw new Error(`property ${name} failed (seed ${details.seed}, path ${path}): ${why}\nReplay: ${replay}\nPin it: regressions: [${pin}]\n${report}`, {
    cause: details.errorInstance ?? undefined,
  })
}

function regressionsFor<Op>(id: string, regressions: readonly Regression<Op>[] | undefined): Regression<Op>[] {
  return (regressions ?? []).filter((r) => r.property === undefined || r.property === id)
}

/**
 * Registers every suite for `spec` as vitest tests: one test per merge law, one convergence test
 * per fault class, liveness, and the oracle (when the spec has one). Pinned `regressions` run
 * first in the tests they name.
 *
 * ```ts
 * describeReplicaSuites(mySpec)                       // in my-type.prop.test.ts
 * describeReplicaSuites(mySpec, { numRuns: 200, regressions: [{ property: 'convergence/loss', seed: 42, path: '3:1' }] })
 * ```
 */
/** Every {@link SuiteOptions} key (the compiler keeps this in step with the interface). */
const SUITE_OPTION_KEYS: Record<keyof SuiteOptions<unknown>, true> = {
  numRuns: true,
  seed: true,
  path: true,
  regions: true,
  maxOps: true,
  faults: true,
  livenessRounds: true,
  maxRounds: true,
  regressions: true,
  antiEntropyIntervalMs: true,
}

/** Every {@link ReplicaSpec} member. */
const SPEC_KEYS: Record<keyof ReplicaSpec<unknown, unknown>, true> = { name: true, create: true, op: true, perform: true, oracle: true, carries: true, equals: true }

/**
 * Refuses a spec the suites cannot run as meant: a misspelt member (`oracel`) made its check
 * disappear without a word, a missing one failed every test as the type's fault (review finding).
 */
function checkSpec(spec: unknown): void {
  const where = 'describeReplicaSuites: spec'
  if (typeof spec !== 'object' || spec === null) throw new ConfigError(`${where} must be an object (a ReplicaSpec)`)
  checkKnownOptions(where, spec, Object.keys(SPEC_KEYS))
  const s = spec as Record<string, unknown>
  if (typeof s['name'] !== 'string' || s['name'].length === 0) throw new ConfigError(`${where}.name must be a non-empty string (it names the tests)`)
  for (const f of ['create', 'perform'] as const) if (typeof s[f] !== 'function') throw new ConfigError(`${where}.${f} must be a function`)
  for (const f of ['oracle', 'carries', 'equals'] as const) if (s[f] !== undefined && typeof s[f] !== 'function') throw new ConfigError(`${where}.${f} must be a function when given`)
  const op = s['op'] as { generate?: unknown } | null | undefined
  if (typeof op !== 'object' || op === null || typeof op.generate !== 'function') throw new ConfigError(`${where}.op must be a fast-check arbitrary (fc.integer(), fc.record(...), ...)`)
}

/** Refuses option values the suites would run wrong with, before a test blames the type for them. */
function checkSuiteValues<Op>(options: SuiteOptions<Op>, ids: readonly string[]): void {
  const where = 'describeReplicaSuites'
  const int = (name: keyof SuiteOptions<Op>, min: number): void => {
    const v = options[name]
    if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min)) throw new ConfigError(`${where}: ${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`)
  }
  int('numRuns', 1)
  int('maxOps', 1)
  int('maxRounds', 1)
  int('livenessRounds', 1)
  if (options.seed !== undefined && (typeof options.seed !== 'number' || !Number.isSafeInteger(options.seed))) throw new ConfigError(`${where}: seed must be an integer, got ${JSON.stringify(options.seed)}`)
  if (options.path !== undefined && (typeof options.path !== 'string' || options.seed === undefined)) throw new ConfigError(`${where}: path must be a string, and comes with the seed it was printed with`)
  const ae = options.antiEntropyIntervalMs
  if (ae !== undefined && (typeof ae !== 'number' || !Number.isFinite(ae) || ae < 1)) throw new ConfigError(`${where}: antiEntropyIntervalMs must be a finite number of ms >= 1, got ${JSON.stringify(ae)}`)
  if (options.regressions === undefined) return
  if (!Array.isArray(options.regressions)) throw new ConfigError(`${where}: regressions must be an array`)
  // A pinned case that names no test of this run (a misspelt id), or a kind its test does not
  // take, was dropped without a word: the regression it pinned went unchecked (review finding).
  for (const [i, r] of (options.regressions as readonly unknown[]).entries()) {
    const what = `${where}: regressions[${i}]`
    if (typeof r !== 'object' || r === null) throw new ConfigError(`${what} must be an object`)
    const e = r as { property?: unknown; seed?: unknown; path?: unknown; schedule?: unknown; sequence?: unknown }
    const kinds = (['seed', 'schedule', 'sequence'] as const).filter((k) => e[k] !== undefined)
    if (kinds.length !== 1) throw new ConfigError(`${what} must have exactly one of seed (with path), schedule or sequence`)
    checkKnownOptions(what, r, ['property', 'seed', 'path', 'schedule', 'sequence'])
    if (e.property !== undefined && (typeof e.property !== 'string' || !ids.includes(e.property))) {
      throw new ConfigError(`${what}.property ${JSON.stringify(e.property)} names no property of this run; they are ${ids.join(', ')}`)
    }
    const kind = kinds[0] as 'seed' | 'schedule' | 'sequence'
    if (kind === 'seed') {
      // A replay path belongs to one property: run under every property, it failed the others.
      if (e.property === undefined) throw new ConfigError(`${what}: a seed (and path) replays one property: name it in property`)
      if (typeof e.seed !== 'number' || !Number.isSafeInteger(e.seed)) throw new ConfigError(`${what}.seed must be an integer`)
      if (e.path !== undefined && typeof e.path !== 'string') throw new ConfigError(`${what}.path must be a string`)
    } else if (e.property !== undefined) {
      const isLaw = (e.property as string).startsWith('laws/')
      if (kind === 'sequence' && !isLaw) throw new ConfigError(`${what}: a sequence is pinned to a merge law (laws/...), not to ${e.property as string}`)
      if (kind === 'schedule' && isLaw) throw new ConfigError(`${what}: a schedule is pinned to convergence/..., liveness or oracle, not to ${e.property as string}`)
    }
  }
}

export function describeReplicaSuites<V, Op, R extends Replica<V>>(spec: ReplicaSpec<V, Op, R>, options: SuiteOptions<Op> = {}): void {
  // A misspelt option (numRun) was ignored, its default silently in force; a misspelt fault class
  // made a test that failed with a TypeError from inside the kit (review finding).
  if (typeof options !== 'object' || options === null) throw new ConfigError('describeReplicaSuites: options must be an object')
  checkKnownOptions('describeReplicaSuites', options, Object.keys(SUITE_OPTION_KEYS))
  checkSpec(spec)
  if (options.faults !== undefined && !Array.isArray(options.faults)) throw new ConfigError(`describeReplicaSuites: faults must be an array of fault classes (${FAULT_CLASSES.join(', ')})`)
  for (const f of options.faults ?? []) {
    if (!FAULT_CLASSES.includes(f)) throw new ConfigError(`describeReplicaSuites: unknown fault class ${JSON.stringify(f)}; the classes are ${FAULT_CLASSES.join(', ')}`)
  }
  checkSuiteValues(options, propertyIds({ ...(options.faults === undefined ? {} : { faults: options.faults }), oracle: spec.oracle !== undefined }))
  const regions = regionCount(options.regions)
  if (regions < 5) throw new ConfigError(`describeReplicaSuites: at least 5 regions, got ${regions}`)
  const common = { ...options, regions }
  const runOpts = <T>(id: string, pickInput: (r: Regression<Op>) => T | undefined): AssertOptions<T> => {
    const regs = regressionsFor(id, options.regressions)
    const examples = regs.map(pickInput).filter((x): x is T => x !== undefined)
    const replays = regs.flatMap((r) => ('seed' in r ? [{ seed: r.seed, ...(r.path === undefined ? {} : { path: r.path }) }] : []))
    return {
      examples,
      replays,
      ...(options.numRuns === undefined ? {} : { numRuns: options.numRuns }),
      ...(options.seed === undefined ? {} : { seed: options.seed }),
      ...(options.path === undefined ? {} : { path: options.path }),
    }
  }
  const sequenceOf = (r: Regression<Op>): OpSequence<Op> | undefined => ('sequence' in r ? r.sequence : undefined)
  const scheduleOf = (r: Regression<Op>): FaultSchedule<Op> | undefined => ('schedule' in r ? r.schedule : undefined)

  describe(spec.name, () => {
    describe('merge laws', () => {
      const props = checkMergeLaws(spec, common)
      for (const law of MERGE_LAWS) {
        const id = `laws/${law}`
        it(id, () => assertProperty(id, props[law], runOpts(id, sequenceOf)))
      }
    })
    describe('convergence', () => {
      for (const cls of options.faults ?? FAULT_CLASSES) {
        const id = `convergence/${cls}`
        it(id, () => assertProperty(id, checkConvergence(spec, cls, common), runOpts(id, scheduleOf)))
      }
    })
    it('liveness', () => assertProperty('liveness', checkLiveness(spec, common), runOpts('liveness', scheduleOf)))
    if (spec.oracle !== undefined) {
      it('oracle', () => assertProperty('oracle', checkOracle(spec, common), runOpts('oracle', scheduleOf)))
    }
  })
}
