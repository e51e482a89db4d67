/**
 * fast-check arbitraries for simulations: timed fault schedules (operations at regions interleaved
 * with partitions, heals, crashes, restarts, clock skew and network settings) and op sequences for
 * the merge-law properties. Schedules are plain data, so a counter-example prints readably and can
 * be pasted back as a pinned regression.
 */
import * as fc from 'fast-check'
import type { LatencyProfileName } from './latency.js'

/** The fault classes the convergence suite runs one test for. */
export type FaultClass =
  | 'none'
  | 'loss'
  | 'duplication'
  | 'reordering'
  | 'partition-full'
  | 'partition-asymmetric'
  | 'partition-isolated'
  | 'swizzle'
  | 'crash-restart'
  | 'clock-skew'
  | 'mixed'

/** Every {@link FaultClass}, in suite order. */
export const FAULT_CLASSES: readonly FaultClass[] = [
  'none',
  'loss',
  'duplication',
  'reordering',
  'partition-full',
  'partition-asymmetric',
  'partition-isolated',
  'swizzle',
  'crash-restart',
  'clock-skew',
  'mixed',
]

/** One thing that happens in a schedule. Regions are indexes into the simulation's regions. */
export type FaultAction<Op> =
  | { readonly type: 'op'; readonly region: number; readonly op: Op }
  /** Full split: `side` against every other region. */
  | { readonly type: 'partition'; readonly side: readonly number[] }
  /** Asymmetric: `from → to` dropped. */
  | { readonly type: 'cut'; readonly from: number; readonly to: number }
  | { readonly type: 'isolate'; readonly region: number }
  | { readonly type: 'swizzle'; readonly stepMs: number }
  | { readonly type: 'heal' }
  | { readonly type: 'crash'; readonly region: number }
  | { readonly type: 'restart'; readonly region: number }
  | { readonly type: 'skew'; readonly region: number; readonly ms: number }
  /** Network settings in percent (0–100). */
  | { readonly type: 'network'; readonly lossPct: number; readonly duplicatePct: number; readonly reorderPct: number }

/** An action after `delayMs` of virtual time since the previous step. */
export interface FaultStep<Op> {
  readonly delayMs: number
  readonly action: FaultAction<Op>
}

/** A whole run: simulation seed, region count, latency profile and timed steps. */
export interface FaultSchedule<Op> {
  readonly seed: number
  readonly regions: number
  readonly latency: LatencyProfileName
  readonly steps: readonly FaultStep<Op>[]
}

/** Options for {@link faultSchedule}. */
export interface FaultScheduleOptions {
  /** Faults to mix in. @default 'mixed' */
  readonly faults?: FaultClass
  /** Number of regions. @default 5 */
  readonly regions?: number
  /** Most operations per schedule. @default 30 */
  readonly maxOps?: number
  /** Most fault steps per schedule (besides the opening one). @default 6 */
  readonly maxFaults?: number
  /** Largest delay between steps, ms. @default 300 */
  readonly maxDelayMs?: number
  /** Latency profiles to draw from. @default all built-in profiles */
  readonly latencies?: readonly LatencyProfileName[]
  /** Largest absolute clock skew, ms. Keep it under the HLC's max drift (5 min). @default 120_000 */
  readonly maxSkewMs?: number
}

const ALL_LATENCIES: readonly LatencyProfileName[] = ['lan', 'us-eu', 'three-continents']

/** Names of `n` simulated regions used by {@link runSchedule}'s callers: `r0`…`r{n-1}`. */
export function regionNames(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `r${i}`)
}

function faultActions<Op>(cls: FaultClass, n: number, maxSkewMs: number): fc.Arbitrary<FaultAction<Op>>[] {
  const region = fc.integer({ min: 0, max: n - 1 })
  const pct = (min: number, max: number): fc.Arbitrary<number> => fc.integer({ min, max })
  const heal = fc.constant<FaultAction<Op>>({ type: 'heal' })
  switch (cls) {
    case 'none':
      return []
    case 'loss':
      return [pct(5, 70).map((p): FaultAction<Op> => ({ type: 'network', lossPct: p, duplicatePct: 0, reorderPct: 0 }))]
    case 'duplication':
      return [pct(10, 90).map((p): FaultAction<Op> => ({ type: 'network', lossPct: 0, duplicatePct: p, reorderPct: 0 }))]
    case 'reordering':
      return [pct(20, 100).map((p): FaultAction<Op> => ({ type: 'network', lossPct: 0, duplicatePct: 0, reorderPct: p }))]
    case 'partition-full':
      return [
        fc
          .uniqueArray(region, { minLength: 1, maxLength: Math.max(1, n - 1) })
          .map((side): FaultAction<Op> => ({ type: 'partition', side: [...side].sort((a, b) => a - b) })),
        heal,
      ]
    case 'partition-asymmetric':
      return [
        fc
          .tuple(region, fc.integer({ min: 1, max: Math.max(1, n - 1) }))
          .map(([from, d]): FaultAction<Op> => ({ type: 'cut', from, to: (from + d) % n })),
        heal,
      ]
    case 'partition-isolated':
      return [region.map((r): FaultAction<Op> => ({ type: 'isolate', region: r })), heal]
    case 'swizzle':
      return [fc.integer({ min: 10, max: 200 }).map((stepMs): FaultAction<Op> => ({ type: 'swizzle', stepMs })), heal]
    case 'crash-restart':
      return [region.map((r): FaultAction<Op> => ({ type: 'crash', region: r })), region.map((r): FaultAction<Op> => ({ type: 'restart', region: r }))]
    case 'clock-skew':
      return [fc.tuple(region, fc.integer({ min: -maxSkewMs, max: maxSkewMs })).map(([r, ms]): FaultAction<Op> => ({ type: 'skew', region: r, ms }))]
    case 'mixed':
      return [
        pct(0, 50).chain((l) =>
          fc.tuple(pct(0, 50), pct(0, 100)).map(([d, o]): FaultAction<Op> => ({ type: 'network', lossPct: l, duplicatePct: d, reorderPct: o })),
        ),
        ...(['partition-full', 'partition-asymmetric', 'partition-isolated', 'swizzle', 'crash-restart', 'clock-skew'] as const).flatMap((c) =>
          faultActions<Op>(c, n, maxSkewMs),
        ),
      ]
  }
}

/**
 * Timed schedules for one fault class: an opening fault step of that class (none for `'none'`),
 * then up to `maxOps` operations drawn from `op` at random regions, interleaved with up to
 * `maxFaults` further faults (and heals) of the class.
 */
export function faultSchedule<Op>(op: fc.Arbitrary<Op>, options: FaultScheduleOptions = {}): fc.Arbitrary<FaultSchedule<Op>> {
  const cls = options.faults ?? 'mixed'
  const n = options.regions ?? 5
  const maxOps = options.maxOps ?? 30
  const maxFaults = options.maxFaults ?? 6
  const delay = fc.integer({ min: 0, max: options.maxDelayMs ?? 300 })
  const actions = faultActions<Op>(cls, n, options.maxSkewMs ?? 120_000)
  const opStep = fc.record({
    delayMs: delay,
    action: fc.record({ type: fc.constant('op' as const), region: fc.integer({ min: 0, max: n - 1 }), op }),
  })
  const ops = fc.array(opStep, { minLength: 1, maxLength: maxOps })
  const faultSteps =
    actions.length === 0
      ? fc.constant<Array<FaultStep<Op> & { position: number }>>([])
      : fc.array(
          fc.record({ delayMs: delay, action: fc.oneof(...actions), position: fc.nat() }),
          { maxLength: maxFaults },
        )
  const opening = actions.length === 0 ? fc.constant<FaultStep<Op>[]>([]) : fc.oneof(...actions.slice(0, 1)).map((action) => [{ delayMs: 0, action }])
  return fc
    .record({
      seed: fc.integer(),
      latency: fc.constantFrom(...(options.latencies ?? ALL_LATENCIES)),
      opening,
      ops,
      faults: faultSteps,
    })
    .map(({ seed, latency, opening, ops, faults }) => {
      // Interleave faults into the op sequence at their drawn positions (stable, deterministic).
      const steps: FaultStep<Op>[] = [...opening]
      const at = new Map<number, FaultStep<Op>[]>()
      for (const f of faults) {
        const p = f.position % (ops.length + 1)
        const list = at.get(p) ?? []
        list.push({ delayMs: f.delayMs, action: f.action })
        at.set(p, list)
      }
      for (let i = 0; i <= ops.length; i++) {
        for (const f of at.get(i) ?? []) steps.push(f)
        const o = ops[i]
        if (o !== undefined) steps.push(o)
      }
      return { seed, regions: n, latency, steps }
    })
}

/** Performs a schedule's steps on a simulation (regions by index, modulo the region count). Does not heal. */
export function runSchedule<Op>(s: SimulationLike<Op>, schedule: FaultSchedule<Op>): void {
  const names = s.regionNames
  const n = names.length
  const name = (i: number): string => names[((i % n) + n) % n] as string
  for (const step of schedule.steps) {
    s.advance(step.delayMs)
    const a = step.action
    switch (a.type) {
      case 'op':
        s.perform(name(a.region), a.op)
        break
      case 'partition': {
        const side = new Set(a.side.map(name))
        const rest = names.filter((x) => !side.has(x))
        s.partition([...side], rest)
        break
      }
      case 'cut':
        s.cut(name(a.from), name(a.to))
        break
      case 'isolate':
        s.isolate(name(a.region))
        break
      case 'swizzle':
        s.swizzle(a.stepMs)
        break
      case 'heal':
        s.heal()
        break
      case 'crash':
        s.crash(name(a.region))
        break
      case 'restart':
        s.restart(name(a.region))
        break
      case 'skew':
        s.setSkew(name(a.region), a.ms)
        break
      case 'network':
        s.setNetwork({ loss: a.lossPct / 100, duplicate: a.duplicatePct / 100, reorder: a.reorderPct / 100 })
        break
    }
  }
}

/** The part of `Simulation` that {@link runSchedule} drives. */
export interface SimulationLike<Op> {
  readonly regionNames: readonly string[]
  advance(ms: number): void
  perform(region: string, op: Op): unknown
  partition(a: readonly string[], b: readonly string[]): void
  cut(from: string, to: string): void
  isolate(region: string): void
  swizzle(stepMs?: number): void
  heal(): void
  crash(region: string): void
  restart(region: string): void
  setSkew(region: string, ms: number): void
  setNetwork(faults: { loss?: number; duplicate?: number; reorder?: number }): void
}

/** One step of a merge-law case: an op at a writer, or a writer pulling what it lacks from another. */
export type LawStep<Op> =
  | { readonly type: 'op'; readonly writer: number; readonly op: Op }
  | { readonly type: 'sync'; readonly writer: number; readonly from: number }

/** Input of the merge-law properties: steps over a few writers, and a seed for shuffles. */
export interface OpSequence<Op> {
  readonly writers: number
  readonly steps: readonly LawStep<Op>[]
  readonly seed: number
}

/** Options for {@link opSequence}. */
export interface OpSequenceOptions {
  /** Number of writers. @default 3 */
  readonly writers?: number
  /** Most steps. @default 20 */
  readonly maxSteps?: number
}

/**
 * Operation sequences over a few writers with occasional syncs between them, so that the deltas
 * they emit have real causal relations (a remove that observed an add, a write that overwrote one).
 */
export function opSequence<Op>(op: fc.Arbitrary<Op>, options: OpSequenceOptions = {}): fc.Arbitrary<OpSequence<Op>> {
  const writers = options.writers ?? 3
  const writer = fc.integer({ min: 0, max: writers - 1 })
  const step: fc.Arbitrary<LawStep<Op>> = fc.oneof(
    { weight: 4, arbitrary: fc.record({ type: fc.constant('op' as const), writer, op }) },
    { weight: 1, arbitrary: fc.record({ type: fc.constant('sync' as const), writer, from: writer }) },
  )
  return fc.record({
    writers: fc.constant(writers),
    steps: fc.array(step, { minLength: 1, maxLength: options.maxSteps ?? 20 }),
    seed: fc.integer(),
  })
}
