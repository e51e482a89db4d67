/**
 * Convergence benchmark for the native types: bytes on the wire per operation and elapsed time to
 * replicate a workload across 5 simulated regions (three continents), and virtual time to converge
 * after a partition heals. The baseline, run side by side on the same operations and seed, is
 * classic state-based replication: every local change ships the whole `state()`.
 *
 * Run: node --conditions=@concord/source --import tsx benchmarks/src/convergence-bench.ts
 */
import { pathToFileURL } from 'node:url'
import * as fc from 'fast-check'
import type { ConflictEvent, DeltaOrigin, Replica } from '@concord/core'
import { Simulation, nativeSpecs, type AnyReplicaSpec, type ReplicaSpec } from '@concord/testing'
import { checkFlags, cliMain, machine, median, progress, saveReport, UsageError, type BenchReport, type BenchRow } from './report.js'

const REGIONS = ['us-1', 'eu-1', 'ap-1', 'us-2', 'eu-2']

/** An integer setting from the environment (at least 1), `fallback` when unset. @throws UsageError otherwise (NaN ops ran nothing). */
function envCount(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n < 1 || !/^\d+$/.test(raw.trim())) throw new UsageError(`${name} must be an integer of at least 1, got ${JSON.stringify(raw)}`)
  return n
}
/** The environment a run was given, as a command prefix: a results file names what reproduces it. */
function envPrefix(): string {
  return ['CONCORD_BENCH_OPS', 'CONCORD_BENCH_REPEATS']
    .filter((k) => (process.env[k] ?? '') !== '')
    .map((k) => `${k}=${process.env[k] as string} `)
    .join('')
}

/** Wraps a replica so that every local change is shipped as the whole state (the baseline). */
class StateShipping<V> implements Replica<V> {
  constructor(readonly inner: Replica<V>) {}
  get typeName(): string {
    return this.inner.typeName
  }
  get replicaId(): string {
    return this.inner.replicaId
  }
  value(): V {
    return this.inner.value()
  }
  version(): Uint8Array {
    return this.inner.version()
  }
  deltaSince(version?: Uint8Array): Uint8Array {
    return this.inner.deltaSince(version)
  }
  apply(delta: Uint8Array): void {
    this.inner.apply(delta)
  }
  state(): Uint8Array {
    return this.inner.state()
  }
  onDelta(fn: (delta: Uint8Array, origin: DeltaOrigin) => void): () => void {
    return this.inner.onDelta((d, origin) => fn(origin === 'local' ? this.inner.state() : d, origin))
  }
  onConflict(fn: (e: ConflictEvent) => void): () => void {
    return this.inner.onConflict(fn)
  }
}

/**
 * The spec without its test oracle (`oracle`, `carries`): the simulator then keeps the same causal
 * bookkeeping for both sides. With `carries`, every counter delta restates its writer's earlier
 * bumps, so the simulator tracks and hands on a chain of op ids per message — test bookkeeping
 * that grows with the run and is not replication work.
 */
function bare(spec: AnyReplicaSpec): AnyReplicaSpec {
  return { name: spec.name, create: spec.create, op: spec.op, perform: spec.perform }
}

function stateShipping(spec: AnyReplicaSpec): ReplicaSpec<unknown, unknown, StateShipping<unknown>> {
  return {
    name: `${spec.name} (state-based)`,
    create: (id, env) => new StateShipping(spec.create(id, env)),
    op: spec.op,
    perform: (r, op) => spec.perform(r.inner, op),
  }
}

interface Run {
  readonly bytes: number
  readonly elapsedMs: number
  readonly healMs: number
}

function runOnce(spec: ReplicaSpec<unknown, unknown, Replica<unknown>>, ops: readonly unknown[], seed: number): Run {
  // Anti-entropy is slow here so that the figures measure operation traffic, not repair traffic.
  const sim = new Simulation({ spec, regions: REGIONS, seed, latency: 'three-continents', antiEntropyIntervalMs: 1_000 })
  const t0 = performance.now()
  ops.forEach((op, i) => {
    sim.perform(REGIONS[i % REGIONS.length] as string, op)
    if (i % 10 === 9) sim.advance(5)
  })
  sim.advance(500)
  const elapsedMs = performance.now() - t0
  const bytes = sim.stats().bytes
  // Partition recovery: ap-1 isolated during a burst, then healed.
  sim.isolate('ap-1')
  ops.slice(0, 200).forEach((op, i) => sim.perform(REGIONS[i % REGIONS.length] as string, op))
  sim.advance(2_000)
  sim.heal()
  const before = sim.elapsed
  sim.converge(100)
  return { bytes, elapsedMs, healMs: sim.elapsed - before }
}

/** The run's size from the environment: CONCORD_BENCH_OPS (2,000) and CONCORD_BENCH_REPEATS (3). @throws UsageError */
export function settings(): { ops: number; repeats: number } {
  return { ops: envCount('CONCORD_BENCH_OPS', 2_000), repeats: envCount('CONCORD_BENCH_REPEATS', 3) }
}

/** Runs the benchmark and returns its report. */
export async function run(): Promise<BenchReport> {
  const { ops: OPS, repeats: REPEATS } = settings()
  const rows: BenchRow[] = []
  for (const full of nativeSpecs) {
    const spec = bare(full)
    const ops = fc.sample(spec.op, { numRuns: OPS, seed: 42 })
    const base = stateShipping(spec)
    const delta: Run[] = []
    const state: Run[] = []
    for (let i = 0; i < REPEATS; i++) {
      progress(`${spec.name}: repeat ${i + 1}/${REPEATS} (${OPS} ops, 5 regions)`)
      // interleaved so that machine noise hits both sides alike
      delta.push(runOnce(spec, ops, 1 + i))
      state.push(runOnce(base as unknown as AnyReplicaSpec, ops, 1 + i))
    }
    const dBytes = median(delta.map((r) => r.bytes)) / OPS
    const sBytes = median(state.map((r) => r.bytes)) / OPS
    const dMs = median(delta.map((r) => r.elapsedMs))
    const sMs = median(state.map((r) => r.elapsedMs))
    const baseline = `${spec.name} state-based`
    rows.push({ name: baseline, metric: 'bytes on the wire per op', value: sBytes, unit: 'B/op' })
    rows.push({ name: `${spec.name} delta (Concord)`, metric: 'bytes on the wire per op', value: dBytes, unit: 'B/op', baseline, ratio: dBytes / sBytes })
    rows.push({ name: baseline, metric: 'elapsed time for the workload', value: sMs, unit: 'ms' })
    rows.push({ name: `${spec.name} delta (Concord)`, metric: 'elapsed time for the workload', value: dMs, unit: 'ms', baseline, ratio: dMs / sMs })
    rows.push({ name: `${spec.name} delta (Concord)`, metric: 'virtual time to converge after a partition heals', value: median(delta.map((r) => r.healMs)), unit: 'ms' })
  }
  return {
    suite: 'convergence',
    command: `${envPrefix()}npm run bench -- convergence`,
    machine: await machine(),
    date: new Date().toISOString(),
    notes: [
      `${OPS} random operations per type (fast-check seed 42), 5 regions on the three-continents latency profile, median of ${REPEATS} interleaved repeats`,
      'bytes count every message the simulator carried, including anti-entropy (every 1,000 ms)',
      'time to converge is virtual time from heal() to identical state bytes in every region (anti-entropy round = 1,000 ms)',
    ],
    rows,
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await cliMain(async () => {
    checkFlags(['convergence'])
    saveReport(await run())
  })
}
