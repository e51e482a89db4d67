/**
 * Replication throughput over the real transports, end to end: three RegionNodes, each writing
 * small PnCounter deltas (one envelope per document per flush, `batch` documents per flush), until
 * every region's envelopes are applied in the other two. Measured beside a raw client doing the
 * same traffic with the same batching on the same server, in the same run:
 *
 *   - Redis: pipelined XADD of `batch` entries per region and round; each region reads the other
 *     two streams with XREADGROUP COUNT 256 and XACKs what it read.
 *   - Kafka: one kafkajs send of `batch` messages per region and round (acks=-1), keyed by
 *     document id as Concord's records are; each region has one consumer group on the other two
 *     regions' topics (as KafkaTransport has one per reader), counts the messages it receives and
 *     commits their offsets once a second (a RegionNode's default commitIntervalMs; the
 *     transport-alone variant does the same). Final commits come after the clock stops, as the
 *     nodes' (made by close()).
 *
 * A third variant drives the Concord transport alone (no RegionNode) the way the nodes drive it,
 * to tell the transport's cost from the engine's; a fourth runs the RegionNodes with no-op replicas
 * (noopReplica.ts), to tell the engine's own cost from the CRDT's.
 *
 * Raw entries have the byte size of a Concord envelope. Reports envelopes/s (written envelopes
 * delivered to both other regions, per second) and Concord/raw ratios (targets: Redis ≥ 0.5,
 * Kafka ≥ 0.7). Needs Redis on REDIS_URL (default 127.0.0.1:6379) and Kafka on KAFKA_BROKERS
 * (default 127.0.0.1:9092).
 *
 * With --profile=N, N more runs of each variant are CPU-profiled, and the report splits each
 * variant's client CPU by component (the client library, Concord's engine, core, CRDTs and
 * transport, the garbage collector, the Node.js runtime; see profile.ts).
 *
 *   node --conditions=@concord/source --import tsx benchmarks/src/transport-bench.ts [--repeats=3] [--warmup=3] [--envelopes=20000] [--batch=100] [--only=redis|kafka] [--profile=0]
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { pathToFileURL } from 'node:url'
import { Redis } from 'ioredis'
import { Kafka, logLevel } from 'kafkajs'
import type { Transport } from '@concord/core'
import { crdtFactory, type PnCounter } from '@concord/crdt'
import { MemoryStore, RegionNode } from '@concord/replication'
import { RedisTransport } from '@concord/transport-redis'
import { KafkaTransport } from '@concord/transport-kafka'
import { benchFactories, openWriters, type BenchReplica } from './noopReplica.js'
import { kafkaBrokers, redisUrl, requireServers } from './servers.js'
import { byComponent, startProfiler, type CpuProfile } from './profile.js'
import { checkFlags, checkWholeBatches, cliInt, cliMain, cliOnly, finishReport, flagDefault, median, progress, type BenchReport, type BenchRow } from './report.js'

const REGIONS = ['eu', 'us', 'ap'] as const
const COMMAND = 'node --conditions=@concord/source --import tsx benchmarks/src/transport-bench.ts'

/**
 * Elapsed time of the measured part of a run, the CPU time this process spent in it (µs, all
 * threads), and the main thread's event-loop utilization in it (0..1: the share of the time it ran
 * code rather than waited for I/O or timers).
 */
export interface Timing {
  readonly ms: number
  readonly cpuUs: number
  readonly elu: number
}

/**
 * Starts measuring; the returned function ends it. With `profiles`, the measured part is also
 * CPU-profiled (profile.ts) and its profile added there: such a run is slower, and its timing is
 * not reported.
 */
async function measuring(profiles?: CpuProfile[]): Promise<() => Promise<Timing>> {
  const profiler = profiles === undefined ? undefined : await startProfiler()
  const start = performance.now()
  const cpu0 = process.cpuUsage()
  const elu0 = performance.eventLoopUtilization()
  return async () => {
    const ms = performance.now() - start
    const cpu = process.cpuUsage(cpu0)
    const timing = { ms, cpuUs: cpu.user + cpu.system, elu: performance.eventLoopUtilization(elu0).utilization }
    if (profiler !== undefined) profiles?.push(await profiler.stop())
    return timing
  }
}

/** Options of {@link run}. */
export interface TransportBenchOptions {
  /** Measured runs per variant (medians are reported). @default 3 */
  readonly repeats?: number
  /**
   * Unmeasured runs per variant first (JIT warm-up, connections, server caches). A service runs
   * warm: with one, the engine's code was still being optimized in the measured runs (its first
   * runs in one process took 1.3–2x the CPU of its fourth and later, the raw client's far less).
   * @default 3
   */
  readonly warmup?: number
  /**
   * Envelopes written per region and run. Long enough for the steady state: with 3,000 the fixed
   * costs of a run (first fetches, the tail) were a large share and flattered Concord. @default 20000
   */
  readonly envelopes?: number
  /** Envelopes per flush / per raw append. @default 100 */
  readonly batch?: number
  /** Transports to measure. @default ['redis', 'kafka'] */
  readonly only?: readonly ('redis' | 'kafka')[]
  /**
   * Extra runs per variant, after the measured ones, whose measured part is CPU-profiled: the
   * report then splits each variant's client CPU by component (profile.ts). Their throughput is
   * not reported (the sampler slows a run down). @default 0
   */
  readonly profile?: number
}

const VARIANTS = ['raw', 'alone', 'noop', 'concord'] as const
type Variant = (typeof VARIANTS)[number]


/** RegionNode's default commitIntervalMs: the transport-alone loop commits as often as a node does. */
const COMMIT_INTERVAL_MS = 1000

/** A run that stops delivering fails instead of hanging the suite (a dead server, a lost consumer). */
const RUN_DEADLINE_MS = 180_000
function deadline(what: string): () => void {
  const until = Date.now() + RUN_DEADLINE_MS
  return () => {
    if (Date.now() > until) throw new Error(`${what}: not every envelope was delivered within ${RUN_DEADLINE_MS / 1000} s`)
  }
}

/** Byte size of one Concord envelope of this benchmark (a one-increment PnCounter delta). */
export async function envelopeSize(): Promise<number> {
  const { MemoryTransport } = await import('@concord/replication')
  const t = new MemoryTransport()
  const node = new RegionNode({ region: 'eu', instance: 'i1', regions: ['eu'], transport: t, store: new MemoryStore(), factories: { 'pn-counter': crdtFactory('pn-counter') } })
  const c = (await node.open('d0', 'pn-counter')) as unknown as PnCounter
  c.increment(1)
  await node.flush()
  const [rec] = await t.poll('probe', 'eu', { max: 1 })
  await node.close()
  return rec?.bytes.length ?? 100
}

/**
 * Concord: three RegionNodes over `open()` transports; resolves with the elapsed ms. `kind` 'noop'
 * swaps the PnCounters for replicas that do no CRDT work (noopReplica.ts).
 */
export async function concordRun(open: () => Transport, envelopes: number, batch: number, kind: BenchReplica = 'pn-counter', profiles?: CpuProfile[]): Promise<Timing> {
  const transports: Transport[] = []
  const nodes = REGIONS.map((region) => {
    const transport = open()
    transports.push(transport)
    return new RegionNode({ region, instance: 'i1', regions: [...REGIONS], transport, store: new MemoryStore(), factories: benchFactories(kind), heartbeatIntervalMs: 60_000 })
  })
  const writes: Array<() => void> = []
  for (const node of nodes) writes.push(await openWriters(node, kind, batch))
  // Warm up: connections, consumer groups, the first records.
  for (let i = 0; i < 3; i++) for (const node of nodes) await node.pump()
  const base = nodes.map((n) => n.metrics().peers.reduce((s, p) => s + p.applied, 0))
  const target = 2 * envelopes
  const applied = (i: number): number => (nodes[i] as RegionNode).metrics().peers.reduce((s, p) => s + p.applied, 0) - (base[i] as number)
  const measured = await measuring(profiles)
  let written = 0
  const check = deadline('Concord run')
  while (written < envelopes || nodes.some((_, i) => applied(i) < target)) {
    check()
    if (written < envelopes) {
      for (let r = 0; r < nodes.length; r++) {
        ;(writes[r] as () => void)()
        await (nodes[r] as RegionNode).flush()
      }
      written += batch
    }
    let records = 0
    for (const node of nodes) records += (await node.pump()).records
    if (records === 0 && written >= envelopes) await new Promise((r) => setTimeout(r, 1))
  }
  const timing = await measured()
  for (const node of nodes) await node.close()
  for (const t of transports) await t.close()
  return timing
}

/**
 * A Concord transport alone, no engine: the same loop as {@link concordRun} (each region appends
 * `batch` records keyed by document, then each reader polls the other two origins; positions are
 * committed every second and at the end, as a RegionNode does with its default commitIntervalMs),
 * with raw bytes of an envelope's size. Separates the transport's cost from the engine's.
 */
export async function transportRun(open: () => Transport, envelopes: number, batch: number, size: number, profiles?: CpuProfile[]): Promise<Timing> {
  const transports = REGIONS.map(() => open())
  const reader = (i: number): string => `${REGIONS[i] as string}/i1`
  for (let i = 0; i < REGIONS.length; i++) await (transports[i] as Transport).subscribe?.(reader(i), REGIONS)
  const got = REGIONS.map(() => 0)
  const toCommit = REGIONS.map(() => new Map<string, string>())
  let lastCommitAt = Number.NEGATIVE_INFINITY
  const commitAll = async (): Promise<void> => {
    lastCommitAt = Date.now()
    for (let i = 0; i < REGIONS.length; i++) {
      for (const [origin, position] of toCommit[i] as Map<string, string>) await (transports[i] as Transport).commit(reader(i), origin, position)
      ;(toCommit[i] as Map<string, string>).clear()
    }
  }
  const readRound = async (): Promise<number> => {
    let n = 0
    for (let i = 0; i < REGIONS.length; i++) {
      const t = transports[i] as Transport
      for (const origin of REGIONS) {
        if (origin === REGIONS[i]) continue
        const recs = await t.poll(reader(i), origin, { max: 256, waitMs: 0 })
        const last = recs[recs.length - 1]
        if (last === undefined) continue
        got[i] = (got[i] as number) + recs.length
        n += recs.length
        ;(toCommit[i] as Map<string, string>).set(origin, last.position)
      }
    }
    if (Date.now() - lastCommitAt >= COMMIT_INTERVAL_MS) await commitAll()
    return n
  }
  // Warm up as concordRun does: connections, consumer groups, a first record each.
  for (let i = 0; i < REGIONS.length; i++) await (transports[i] as Transport).append(REGIONS[i] as string, [new Uint8Array(size)])
  const warm = deadline('transport warm-up')
  while (got.some((g) => g < 2)) {
    warm()
    if ((await readRound()) === 0) await new Promise((r) => setTimeout(r, 5))
  }
  got.fill(0)
  const payload = randomBytes(size)
  const keys = Array.from({ length: batch }, (_, d) => `d${d}`)
  const measured = await measuring(profiles)
  let written = 0
  const check = deadline('transport run')
  while (written < envelopes || got.some((g) => g < 2 * envelopes)) {
    check()
    if (written < envelopes) {
      for (let i = 0; i < REGIONS.length; i++) await (transports[i] as Transport).append(REGIONS[i] as string, Array.from({ length: batch }, () => payload), { keys })
      written += batch
    }
    if ((await readRound()) === 0 && written >= envelopes) await new Promise((r) => setTimeout(r, 1))
  }
  // The last commit after the clock, as for the nodes (their close() commits, untimed).
  const timing = await measured()
  await commitAll()
  for (const t of transports) await t.close()
  return timing
}

/** Raw Redis: pipelined XADD + XREADGROUP/XACK with the same batching. */
export async function rawRedisRun(prefix: string, envelopes: number, batch: number, size: number, profiles?: CpuProfile[]): Promise<Timing> {
  const writers = REGIONS.map(() => new Redis(redisUrl()))
  const readers = REGIONS.map(() => new Redis(redisUrl()))
  const stream = (o: string): string => `${prefix}:raw:${o}`
  for (const o of REGIONS) for (const r of REGIONS) if (r !== o) await (writers[0] as Redis).xgroup('CREATE', stream(o), r, '0', 'MKSTREAM')
  const got = new Map<string, number>(REGIONS.map((r) => [r, 0]))
  const payload = randomBytes(size)
  const measured = await measuring(profiles)
  let written = 0
  const check = deadline('raw Redis run')
  while (written < envelopes || REGIONS.some((r) => (got.get(r) as number) < 2 * envelopes)) {
    check()
    if (written < envelopes) {
      for (let i = 0; i < REGIONS.length; i++) {
        const p = (writers[i] as Redis).pipeline()
        for (let j = 0; j < batch; j++) p.xadd(stream(REGIONS[i] as string), '*', 'b', payload)
        await p.exec()
      }
      written += batch
    }
    for (let i = 0; i < REGIONS.length; i++) {
      const reader = REGIONS[i] as string
      for (const origin of REGIONS) {
        if (origin === reader) continue
        const conn = readers[i] as Redis
        const res = (await conn.callBuffer('XREADGROUP', 'GROUP', reader, 'c', 'COUNT', 256, 'STREAMS', stream(origin), '>')) as [Buffer, [Buffer, Buffer[]][]][] | null
        const entries = res?.[0]?.[1] ?? []
        if (entries.length === 0) continue
        await conn.xack(stream(origin), reader, ...entries.map((e) => e[0]))
        got.set(reader, (got.get(reader) as number) + entries.length)
      }
    }
  }
  const timing = await measured()
  await (writers[0] as Redis).del(...REGIONS.map(stream))
  for (const c of [...writers, ...readers]) await c.quit()
  return timing
}

/**
 * Raw kafkajs: one send of `batch` messages per region and round, keyed by document like
 * Concord's; a consumer group per reader on the other two origins' topics (as KafkaTransport
 * has), committing once a second as a node does.
 */
export async function rawKafkaRun(prefix: string, envelopes: number, batch: number, size: number, profiles?: CpuProfile[]): Promise<Timing> {
  const kafka = new Kafka({ clientId: 'bench-raw', brokers: kafkaBrokers(), logLevel: logLevel.NOTHING })
  const admin = kafka.admin()
  await admin.connect()
  const topic = (o: string): string => `${prefix}-raw.${o}`
  await admin.createTopics({ waitForLeaders: true, topics: REGIONS.map((o) => ({ topic: topic(o), numPartitions: 1 })) })
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  const got = new Map<string, number>(REGIONS.map((r) => [r, 0]))
  const consumers = []
  const joins: Promise<void>[] = []
  // Offsets are committed as a RegionNode commits them (commitIntervalMs): at most once a second
  // per consumer, and once at the end.
  const finalCommits: Array<() => Promise<void>> = []
  for (const reader of REGIONS) {
    const origins = REGIONS.filter((o) => o !== reader).map(topic)
    const consumer = kafka.consumer({ groupId: `${prefix}-raw/${reader}`, maxWaitTimeInMs: 100 })
    joins.push(new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve())))
    await consumer.connect()
    await consumer.subscribe({ topics: origins, fromBeginning: true })
    const next = new Map<string, string>()
    let committedAt = Number.NEGATIVE_INFINITY
    const commit = async (): Promise<void> => {
      if (next.size === 0) return
      const offsets = [...next].map(([t, offset]) => ({ topic: t, partition: 0, offset }))
      next.clear()
      committedAt = Date.now()
      await consumer.commitOffsets(offsets)
    }
    finalCommits.push(commit)
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch: b }) => {
        got.set(reader, (got.get(reader) as number) + b.messages.length)
        next.set(b.topic, String(BigInt(b.lastOffset()) + 1n))
        if (Date.now() - committedAt >= COMMIT_INTERVAL_MS) await commit()
      },
    })
    consumers.push(consumer)
  }
  await Promise.all(joins)
  const payload = randomBytes(size)
  // The same records as Concord's: keyed by document (the key travels with each record), the
  // topic's one partition named (as KafkaTransport does: kafkajs then hashes no key).
  const keys = Array.from({ length: batch }, (_, d) => `d${d}`)
  const measured = await measuring(profiles)
  for (let written = 0; written < envelopes; written += batch) {
    for (const origin of REGIONS) await producer.send({ topic: topic(origin), acks: -1, messages: keys.map((key) => ({ key, value: payload, partition: 0 })) })
  }
  const check = deadline('raw Kafka run')
  while (REGIONS.some((r) => (got.get(r) as number) < 2 * envelopes)) {
    check()
    await new Promise((r) => setTimeout(r, 1))
  }
  // The last commits after the clock, as for the nodes (their close() commits, untimed).
  const timing = await measured()
  await Promise.all(finalCommits.map((c) => c()))
  await Promise.all(consumers.map((c) => c.disconnect()))
  await producer.disconnect()
  await admin.deleteTopics({ topics: REGIONS.map(topic) }).catch(() => undefined)
  await admin.disconnect()
  return timing
}

/** The version scripts/kafka.sh fetches and starts by default. */
const KAFKA_SCRIPT_VERSION = '3.9.1'

/** The Redis server's version, as its INFO reports it. */
async function redisVersion(): Promise<string> {
  const conn = new Redis(redisUrl(), { lazyConnect: true, maxRetriesPerRequest: 1 })
  try {
    await conn.connect()
    return /redis_version:(\S+)/.exec(await conn.info('server'))?.[1] ?? 'of unknown version'
  } finally {
    conn.disconnect()
  }
}

/** Runs the benchmark and saves results/transport-throughput.{json,svg}. */
export async function run(options: TransportBenchOptions = {}): Promise<BenchReport> {
  const repeats = options.repeats ?? flagDefault('transport', 'repeats')
  const warmup = options.warmup ?? flagDefault('transport', 'warmup')
  const envelopes = options.envelopes ?? flagDefault('transport', 'envelopes')
  const batch = options.batch ?? flagDefault('transport', 'batch')
  checkWholeBatches(envelopes, batch)
  const only = options.only ?? ['redis', 'kafka']
  const profileRuns = options.profile ?? flagDefault('transport', 'profile')
  await requireServers('transport benchmark', only)
  const size = await envelopeSize()
  const rows: BenchRow[] = []
  const notes = [
    `3 regions, ${envelopes} envelopes written per region (${size} B each, one PnCounter increment), ${batch} per flush/append; throughput = 3 x ${envelopes} envelopes, each applied in both other regions, / elapsed; median of ${repeats} after ${warmup} unmeasured warm-up run(s) of each variant, the variants alternating in an order that rotates from run to run`,
    '"no-op replica" = the same RegionNodes and traffic with replicas that emit a fixed delta of an increment\'s size and apply nothing: the engine without CRDT work',
    '"alone (no engine)" = the Concord transport driven like the nodes drive it (append a flush\'s records keyed by document, poll each other origin, commit every second as a node does by default) with raw bytes of an envelope\'s size: what the transport costs without the replication engine',
    'client CPU = CPU time of this Node process (all threads: JavaScript, GC, I/O) during the measured part of a run / written envelopes; the Redis server and the Kafka broker run in their own processes',
    'main thread busy = event-loop utilization of the Node main thread during the measured part (the share of the time it ran code rather than waited for I/O or timers); near 100 % the variant is bounded by that one thread\'s CPU, not by round trips',
    ...(only.includes('redis') ? [`Redis server ${await redisVersion()} (INFO server); the Kafka broker's version is not reported by kafkajs (scripts/kafka.sh starts ${KAFKA_SCRIPT_VERSION} unless KAFKA_VERSION says otherwise)`] : []),
    ...(profileRuns === 0
      ? []
      : [
          `CPU by component = self time in a V8 CPU profile (sampled every 250 µs) of the measured part of ${profileRuns} extra run(s) of each variant, by the code it ran (native calls and Node internals count for the library or package that called them; idle time left out), / written envelopes; the profiled runs are slower and their throughput is not reported`,
        ]),
  ]
  const rate = (ms: number): number => (3 * envelopes) / (ms / 1000)
  // CPU of this process (every thread: JS, GC, I/O) per written envelope, in µs, during the measured part.
  type Measured = { rate: number; cpu: number; busy: number }
  const measure = async (run: () => Promise<Timing>): Promise<Measured> => {
    const t = await run()
    return { rate: rate(t.ms), cpu: t.cpuUs / (3 * envelopes), busy: 100 * t.elu }
  }
  /** Raw client, the Concord transport alone, and Concord: warm-up runs, then `repeats` measured, alternating. */
  const compare = async (
    transport: 'Redis' | 'Kafka',
    names: { raw: string; alone: string; noop: string; concord: string },
    target: number,
    round: (prefix: string) => Record<Variant, (profiles?: CpuProfile[]) => Promise<Timing>> & { cleanup: () => Promise<void> },
  ): Promise<void> => {
    const newPrefix = (): string => (transport === 'Redis' ? `{bench-${randomUUID()}}` : `bench-${randomUUID().slice(0, 8)}`)
    const results = { raw: [] as Measured[], alone: [] as Measured[], noop: [] as Measured[], concord: [] as Measured[] }
    for (let i = 0; i < warmup + repeats; i++) {
      const prefix = newPrefix()
      progress(i < warmup ? `${transport.toLowerCase()} warm-up ${i + 1}/${warmup}` : `${transport.toLowerCase()} run ${i - warmup + 1}/${repeats}`)
      const r = round(prefix)
      // The order rotates from run to run: no variant always runs first (or last) in a round,
      // after the same others (JIT, heap and broker state left behind).
      const order = VARIANTS.map((_, k) => VARIANTS[(i + k) % VARIANTS.length] as Variant)
      const got = {} as Record<Variant, Measured>
      for (const v of order) got[v] = await measure(r[v])
      const { raw, alone, noop, concord } = got
      await r.cleanup()
      if (i < warmup) continue
      results.raw.push(raw)
      results.alone.push(alone)
      results.noop.push(noop)
      results.concord.push(concord)
    }
    const throughput = `replication throughput (${transport})`
    const cpu = `client CPU per envelope (${transport})`
    const rawRate = median(results.raw.map((x) => x.rate))
    const rawCpu = median(results.raw.map((x) => x.cpu))
    rows.push({ name: names.raw, metric: throughput, value: rawRate, unit: 'envelopes/s' })
    for (const variant of ['alone', 'noop', 'concord'] as const) {
      const v = median(results[variant].map((x) => x.rate))
      const ratio = v / rawRate
      rows.push({ name: names[variant], metric: throughput, value: v, unit: 'envelopes/s', baseline: names.raw, ratio, ...(variant === 'concord' ? { target: `>= ${target.toFixed(2)}`, pass: ratio >= target } : {}) })
    }
    // The same ratio run by run: each measured run's variants ran back to back against one broker
    // state, so a run's ratio is free of the drift between runs (a slow minute of the shared
    // machine) that the ratio of medians above mixes in; its spread is how far one run can be trusted.
    const perRun = `run-by-run throughput / raw throughput, lowest and highest of ${results.raw.length} (${transport})`
    for (const variant of ['alone', 'noop', 'concord'] as const) {
      const ratios = results[variant].map((x, i) => x.rate / (results.raw[i] as Measured).rate)
      rows.push({ name: `${names[variant]}: lowest`, metric: perRun, value: Math.min(...ratios), unit: 'x' })
      rows.push({ name: `${names[variant]}: highest`, metric: perRun, value: Math.max(...ratios), unit: 'x' })
    }
    rows.push({ name: names.raw, metric: cpu, value: rawCpu, unit: 'µs' })
    for (const variant of ['alone', 'noop', 'concord'] as const) {
      const v = median(results[variant].map((x) => x.cpu))
      rows.push({ name: names[variant], metric: cpu, value: v, unit: 'µs', baseline: names.raw, ratio: v / rawCpu })
    }
    for (const variant of VARIANTS) rows.push({ name: names[variant], metric: `main thread busy (${transport})`, value: median(results[variant].map((x) => x.busy)), unit: '%' })
    if (profileRuns === 0) return
    const profiles = { raw: [] as CpuProfile[], alone: [] as CpuProfile[], noop: [] as CpuProfile[], concord: [] as CpuProfile[] }
    for (let i = 0; i < profileRuns; i++) {
      progress(`${transport.toLowerCase()} profiled run ${i + 1}/${profileRuns}`)
      const r = round(newPrefix())
      for (const v of VARIANTS) await r[v](profiles[v])
      await r.cleanup()
    }
    for (const variant of VARIANTS) {
      const total = new Map<string, number>()
      for (const p of profiles[variant]) for (const [component, us] of byComponent(p)) total.set(component, (total.get(component) ?? 0) + us)
      const perEnvelope = (us: number): number => us / (3 * envelopes * profileRuns)
      for (const [component, us] of [...total].sort((a, b) => b[1] - a[1])) {
        rows.push({ name: component, metric: `CPU by component, ${names[variant]} (${transport})`, value: perEnvelope(us), unit: 'µs' })
      }
    }
  }
  if (only.includes('redis')) {
    await compare('Redis', { raw: 'raw XADD + XREADGROUP', alone: 'RedisTransport alone (no engine)', noop: 'RegionNode + RedisTransport, no-op replica (no CRDT work)', concord: 'Concord RegionNode + RedisTransport' }, 0.5, (prefix) => ({
      raw: (profiles) => rawRedisRun(prefix, envelopes, batch, size, profiles),
      alone: (profiles) => transportRun(() => new RedisTransport({ redis: redisUrl(), keyPrefix: `${prefix}t` }), envelopes, batch, size, profiles),
      noop: (profiles) => concordRun(() => new RedisTransport({ redis: redisUrl(), keyPrefix: `${prefix}n` }), envelopes, batch, 'noop', profiles),
      concord: (profiles) => concordRun(() => new RedisTransport({ redis: redisUrl(), keyPrefix: prefix }), envelopes, batch, 'pn-counter', profiles),
      cleanup: async () => {
        const admin = new Redis(redisUrl())
        const keys = await admin.keys(`${prefix}*`)
        if (keys.length > 0) await admin.del(...keys)
        await admin.quit()
      },
    }))
  }
  if (only.includes('kafka')) {
    const kafka = new Kafka({ clientId: 'bench', brokers: kafkaBrokers(), logLevel: logLevel.NOTHING })
    await compare('Kafka', { raw: 'raw kafkajs produce + consume', alone: 'KafkaTransport alone (no engine)', noop: 'RegionNode + KafkaTransport, no-op replica (no CRDT work)', concord: 'Concord RegionNode + KafkaTransport' }, 0.7, (prefix) => ({
      raw: (profiles) => rawKafkaRun(prefix, envelopes, batch, size, profiles),
      alone: (profiles) => transportRun(() => new KafkaTransport({ kafka, topicPrefix: `${prefix}-t`, groupPrefix: `${prefix}-t`, fetchMaxWaitMs: 100 }), envelopes, batch, size, profiles),
      noop: (profiles) => concordRun(() => new KafkaTransport({ kafka, topicPrefix: `${prefix}-n`, groupPrefix: `${prefix}-n`, fetchMaxWaitMs: 100 }), envelopes, batch, 'noop', profiles),
      concord: (profiles) => concordRun(() => new KafkaTransport({ kafka, topicPrefix: prefix, groupPrefix: prefix, fetchMaxWaitMs: 100 }), envelopes, batch, 'pn-counter', profiles),
      cleanup: async () => {
        const admin = kafka.admin()
        await admin.connect()
        const topics = (await admin.listTopics()).filter((t) => t.startsWith(`${prefix}.`) || t.startsWith(`${prefix}-t.`) || t.startsWith(`${prefix}-n.`))
        if (topics.length > 0) await admin.deleteTopics({ topics })
        await admin.disconnect()
      },
    }))
  }
  return finishReport('transport-throughput', COMMAND, notes, rows, 'transport')
}

/** The options given on the command line (also read by `npm run bench -- transport`). */
export function cliOptions(): TransportBenchOptions {
  const envelopes = cliInt('envelopes', flagDefault('transport', 'envelopes'))
  const batch = cliInt('batch', flagDefault('transport', 'batch'))
  checkWholeBatches(envelopes, batch)
  return {
    repeats: cliInt('repeats', flagDefault('transport', 'repeats')),
    warmup: cliInt('warmup', flagDefault('transport', 'warmup'), 0),
    envelopes,
    batch,
    profile: cliInt('profile', flagDefault('transport', 'profile'), 0),
    ...cliOnly(),
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await cliMain(async () => {
    checkFlags(['transport'])
    return run(cliOptions())
  })
  process.exit(0)
}
