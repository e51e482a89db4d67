/**
 * Concord's own cost per envelope, without a server: three RegionNodes replicating small
 * PnCounter deltas over the in-memory log (MemoryTransport, MemoryStore), against the same log
 * driven raw (append the same bytes, poll, commit) in the same run. What separates the two is the
 * replication engine alone: delta and envelope encoding, decode + join of every received delta,
 * the journal and applied-set bookkeeping, and the garbage they make. A third variant runs the
 * same nodes with no-op replicas (noopReplica.ts), splitting that cost into the node's own part and
 * the CRDT's. Two workloads: the benchmarks' short document ids (59-byte envelopes) and
 * UUID-shaped ones (93 bytes, past V8's 64-byte on-heap typed arrays). The transport benchmark
 * measures the same traffic over Redis and Kafka, where the client library's work is added on top.
 *
 *   node --conditions=@concord/source --import tsx benchmarks/src/engine-bench.ts [--repeats=5] [--envelopes=20000] [--batch=100]
 */
import { pathToFileURL } from 'node:url'
import { slabCopy } from '@concord/core'
import { MemoryStore, MemoryTransport, RegionNode } from '@concord/replication'
import { benchFactories, openWriters, shortDocId, uuidDocId, type BenchReplica } from './noopReplica.js'
import { checkFlags, checkWholeBatches, cliInt, cliMain, commandLine, flagDefault, machine, median, progress, saveReport, type BenchReport, type BenchRow } from './report.js'

const REGIONS = ['eu', 'us', 'ap'] as const
const COMMAND = 'node --conditions=@concord/source --import tsx benchmarks/src/engine-bench.ts'

/** Options of {@link run}. */
export interface EngineBenchOptions {
  /** Measured runs per variant (medians are reported). @default 5 */
  readonly repeats?: number
  /** Envelopes written per region and run (the transport benchmark's steady-state size). @default 20000 */
  readonly envelopes?: number
  /** Envelopes per flush / per raw append. @default 100 */
  readonly batch?: number
}

interface Timing {
  readonly ms: number
  readonly cpuUs: number
}

async function timed(body: () => Promise<void>): Promise<Timing> {
  const start = performance.now()
  const cpu0 = process.cpuUsage()
  await body()
  const cpu = process.cpuUsage(cpu0)
  return { ms: performance.now() - start, cpuUs: cpu.user + cpu.system }
}

/**
 * Three RegionNodes: every round each region writes once to each of `batch` documents and flushes,
 * then each node pumps. `kind` 'noop' swaps the PnCounters for replicas that do no CRDT work.
 */
export async function concordRun(envelopes: number, batch: number, kind: BenchReplica = 'pn-counter', docId: (d: number) => string = shortDocId): Promise<Timing> {
  const transport = new MemoryTransport()
  const nodes = REGIONS.map((region) => new RegionNode({ region, instance: 'i1', regions: [...REGIONS], transport, store: new MemoryStore(), factories: benchFactories(kind), heartbeatIntervalMs: 60_000 }))
  const writes: Array<() => void> = []
  for (const node of nodes) writes.push(await openWriters(node, kind, batch, docId))
  for (const node of nodes) await node.pump()
  const applied = (n: RegionNode): number => n.metrics().peers.reduce((s, p) => s + p.applied, 0)
  const t = await timed(async () => {
    for (let written = 0; written < envelopes; written += batch) {
      for (let r = 0; r < nodes.length; r++) {
        ;(writes[r] as () => void)()
        await (nodes[r] as RegionNode).flush()
      }
      for (const node of nodes) await node.pump()
    }
    while (nodes.some((n) => applied(n) < 2 * envelopes)) for (const node of nodes) await node.pump()
  })
  for (const node of nodes) await node.close()
  return t
}

/** The same log, raw: each region appends `batch` records of `size` bytes per round; each reader polls the other two origins and commits. */
async function rawRun(envelopes: number, batch: number, size: number): Promise<Timing> {
  const transport = new MemoryTransport()
  const payload = new Uint8Array(size).fill(7)
  let got = 0
  const readRound = async (): Promise<void> => {
    for (const reader of REGIONS) {
      for (const origin of REGIONS) {
        if (origin === reader) continue
        const recs = await transport.poll(reader, origin, { max: 256 })
        const last = recs[recs.length - 1]
        if (last === undefined) continue
        got += recs.length
        await transport.commit(reader, origin, last.position)
      }
    }
  }
  return timed(async () => {
    for (let written = 0; written < envelopes; written += batch) {
      for (const origin of REGIONS) await transport.append(origin, Array.from({ length: batch }, () => payload.slice()))
      await readRound()
    }
    while (got < 6 * envelopes) await readRound()
  })
}

/** Byte size of one envelope of {@link concordRun} (a PnCounter increment to document `docId(0)`). */
async function envelopeSize(docId: (d: number) => string): Promise<number> {
  const transport = new MemoryTransport()
  const node = new RegionNode({ region: 'eu', instance: 'i1', regions: ['eu'], transport, store: new MemoryStore(), factories: benchFactories('pn-counter'), heartbeatIntervalMs: 60_000 })
  const write = await openWriters(node, 'pn-counter', 1, docId)
  write()
  await node.flush()
  const sizes = (await transport.poll('probe', 'eu', { max: 16 })).map((r) => r.bytes.length)
  await node.close()
  // The last record: the document's first write, after the node's registration record.
  return sizes[sizes.length - 1] as number
}

/**
 * ns per copy of a `size`-byte result, `copy` being `slice()` (a backing store of its own) or
 * `slabCopy` (a view into a shared slab), one copy in 256 kept alive as a caller would keep some.
 */
function copyNs(size: number, copy: (b: Uint8Array) => Uint8Array): number {
  const src = new Uint8Array(size).fill(7)
  const kept: Uint8Array[] = []
  const runs: number[] = []
  for (let r = 0; r < 7; r++) {
    const n = 200_000
    const t = process.hrtime.bigint()
    for (let i = 0; i < n; i++) {
      const out = copy(src)
      if ((i & 255) === 0) kept.push(out)
    }
    runs.push(Number(process.hrtime.bigint() - t) / n)
    kept.length = 0
  }
  // The first runs warm the JIT up.
  return median(runs.slice(2))
}

/** Document ids of a workload: the benchmarks' short ones, and UUID-shaped ones (larger envelopes). */
const WORKLOADS = [
  { label: 'short ids', docId: shortDocId },
  { label: 'UUID ids', docId: uuidDocId },
] as const

/** Runs the benchmark and saves results/engine-overhead.{json,svg}. */
export async function run(options: EngineBenchOptions = {}): Promise<BenchReport> {
  const repeats = options.repeats ?? flagDefault('engine', 'repeats')
  const envelopes = options.envelopes ?? flagDefault('engine', 'envelopes')
  const batch = options.batch ?? flagDefault('engine', 'batch')
  checkWholeBatches(envelopes, batch)
  const rows: BenchRow[] = []
  const sizes: string[] = []
  for (const { label, docId } of WORKLOADS) {
    const size = await envelopeSize(docId)
    sizes.push(`${label} ${size} B`)
    const concord: Timing[] = []
    const noop: Timing[] = []
    const raw: Timing[] = []
    // Three unmeasured warm-ups of each (one left the engine's JIT short of its steady state), then
    // the variants in an order that rotates from run to run: none always runs first, after the same others.
    const WARMUP = 3
    const variants = [() => rawRun(envelopes, batch, size), () => concordRun(envelopes, batch, 'noop', docId), () => concordRun(envelopes, batch, 'pn-counter', docId)]
    for (let i = 0; i < repeats + WARMUP; i++) {
      progress(`${label}: ${i < WARMUP ? `warm-up ${i + 1}/${WARMUP}` : `run ${i - WARMUP + 1}/${repeats}`}`)
      const got: Timing[] = []
      for (let k = 0; k < variants.length; k++) {
        const v = (i + k) % variants.length
        got[v] = await (variants[v] as () => Promise<Timing>)()
      }
      if (i >= WARMUP) {
        raw.push(got[0] as Timing)
        noop.push(got[1] as Timing)
        concord.push(got[2] as Timing)
      }
    }
    const per = (t: Timing): number => (t.ms * 1000) / (3 * envelopes)
    const cpuPer = (t: Timing): number => t.cpuUs / (3 * envelopes)
    const RAW = 'raw MemoryTransport append + poll + commit'
    const NOOP = 'Concord RegionNode, no-op replica (no CRDT work)'
    const CONCORD = 'Concord RegionNode over MemoryTransport'
    for (const [what, f] of [
      ['time', per],
      ['CPU', cpuPer],
    ] as const) {
      const metric = `${what} per written envelope (in memory, ${label})`
      const rawV = median(raw.map(f))
      const noopV = median(noop.map(f))
      const concordV = median(concord.map(f))
      rows.push(
        { name: RAW, metric, value: rawV, unit: 'µs' },
        { name: NOOP, metric, value: noopV, unit: 'µs', baseline: RAW, ratio: noopV / rawV },
        { name: CONCORD, metric, value: concordV, unit: 'µs', baseline: RAW, ratio: concordV / rawV },
      )
    }
  }
  // What an envelope costs to copy out of the encoder: an array of its own, or a view into a shared
  // slab (what encodeEnvelope does since envelopes past 64 bytes paid a backing store each).
  for (const { label, docId } of WORKLOADS) {
    const size = await envelopeSize(docId)
    progress(`copy of a ${size}-byte envelope`)
    const metric = `copy of an envelope (${label}, ${size} B)`
    const own = copyNs(size, (b) => b.slice())
    const slab = copyNs(size, (b) => slabCopy(b))
    rows.push({ name: 'slice(): a backing store of its own', metric, value: own, unit: 'ns' }, { name: 'slabCopy(): a view into a shared 8 KiB slab', metric, value: slab, unit: 'ns', baseline: 'slice(): a backing store of its own', ratio: slab / own })
  }
  const notes = [
    `3 regions, ${envelopes} envelopes written per region (one PnCounter increment per envelope; raw records of the envelope's size), ${batch} per flush/append, each applied (Concord) or read (raw) in both other regions; median of ${repeats} after three warm-up runs of each, the variants in an order that rotates from run to run; per written envelope`,
    `documents: "short ids" d0..d${batch - 1}, "UUID ids" 36-character ids; envelope sizes: ${sizes.join(', ')}`,
    'no-op replica: the same RegionNodes and traffic with replicas that emit a fixed delta of an increment\'s size and apply nothing — the engine without CRDT work; PnCounter minus no-op = what the CRDT costs',
    'CPU = CPU time of this process (all threads, so GC included) / written envelopes',
  ]
  const report: BenchReport = { suite: 'engine-overhead', command: commandLine(COMMAND, 'engine'), machine: await machine(), date: new Date().toISOString(), notes, rows }
  saveReport(report)
  return report
}

/** The options given on the command line (also read by `npm run bench -- engine`). */
export function cliOptions(): EngineBenchOptions {
  const envelopes = cliInt('envelopes', flagDefault('engine', 'envelopes'))
  const batch = cliInt('batch', flagDefault('engine', 'batch'))
  checkWholeBatches(envelopes, batch)
  return { repeats: cliInt('repeats', flagDefault('engine', 'repeats')), envelopes, batch }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await cliMain(async () => {
    checkFlags(['engine'])
    return run(cliOptions())
  })
}
