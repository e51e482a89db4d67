/**
 * Replication throughput over the real transports, end to end: three RegionNodes, each writing
 * small PnCounter deltas (one envelope per document per flush, `batch` documents per flush), until
 * every region's envelopes are applied in the other two. Measured beside a raw client doing the
 * same traffic with the same batching on the same server, in the same run:
 *
 *   - Redis: pipelined XADD of `batch` entries per region and round; each region reads the other
 *     two streams with XREADGROUP COUNT 256 and XACKs what it read.
 *   - Kafka: one kafkajs send of `batch` messages per region and round (acks=-1); each region has a
 *     consumer group per other region's topic and counts the messages it receives.
 *
 * Raw entries have the byte size of a Concord envelope. Reports envelopes/s (written envelopes
 * delivered to both other regions, per second) and Concord/raw ratios (targets: Redis ≥ 0.5,
 * Kafka ≥ 0.7). Needs Redis on REDIS_URL (default 127.0.0.1:6379) and Kafka on KAFKA_BROKERS
 * (default 127.0.0.1:9092).
 *
 *   node --conditions=@concord/source --import tsx benchmarks/src/transport-bench.ts [--repeats=3] [--warmup=1] [--envelopes=3000] [--batch=100] [--only=redis|kafka]
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
import { machine, median, progress, saveReport, type BenchReport, type BenchRow } from './report.js'

const REGIONS = ['eu', 'us', 'ap'] as const
const COMMAND = 'node --conditions=@concord/source --import tsx benchmarks/src/transport-bench.ts'

/** Elapsed time of the measured part of a run, and the CPU time this process spent in it (µs, all threads). */
export interface Timing {
  readonly ms: number
  readonly cpuUs: number
}

/** Options of {@link run}. */
export interface TransportBenchOptions {
  /** Measured runs per variant (medians are reported). @default 3 */
  readonly repeats?: number
  /** Unmeasured runs per variant first (JIT warm-up, connections, server caches). @default 1 */
  readonly warmup?: number
  /** Envelopes written per region and run. @default 3000 */
  readonly envelopes?: number
  /** Envelopes per flush / per raw append. @default 100 */
  readonly batch?: number
  /** Transports to measure. @default ['redis', 'kafka'] */
  readonly only?: readonly ('redis' | 'kafka')[]
}

const redisUrl = (): string => process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const kafkaBrokers = (): string[] => (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',').map((b) => b.trim())

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

/** Concord: three RegionNodes over `open()` transports; resolves with the elapsed ms. */
export async function concordRun(open: () => Transport, envelopes: number, batch: number): Promise<Timing> {
  const transports: Transport[] = []
  const nodes = REGIONS.map((region) => {
    const transport = open()
    transports.push(transport)
    return new RegionNode({ region, instance: 'i1', regions: [...REGIONS], transport, store: new MemoryStore(), factories: { 'pn-counter': crdtFactory('pn-counter') }, heartbeatIntervalMs: 60_000 })
  })
  const counters: PnCounter[][] = []
  for (const node of nodes) {
    const cs: PnCounter[] = []
    for (let d = 0; d < batch; d++) cs.push((await node.open(`d${d}`, 'pn-counter')) as unknown as PnCounter)
    counters.push(cs)
  }
  // Warm up: connections, consumer groups, the first records.
  for (let i = 0; i < 3; i++) for (const node of nodes) await node.pump()
  const base = nodes.map((n) => n.metrics().peers.reduce((s, p) => s + p.applied, 0))
  const target = 2 * envelopes
  const applied = (i: number): number => (nodes[i] as RegionNode).metrics().peers.reduce((s, p) => s + p.applied, 0) - (base[i] as number)
  const start = performance.now()
  const cpu0 = process.cpuUsage()
  let written = 0
  while (written < envelopes || nodes.some((_, i) => applied(i) < target)) {
    if (written < envelopes) {
      for (let r = 0; r < nodes.length; r++) {
        for (const c of counters[r] as PnCounter[]) c.increment(1)
        await (nodes[r] as RegionNode).flush()
      }
      written += batch
    }
    let records = 0
    for (const node of nodes) records += (await node.pump()).records
    if (records === 0 && written >= envelopes) await new Promise((r) => setTimeout(r, 1))
  }
  const ms = performance.now() - start
  const cpu = process.cpuUsage(cpu0)
  for (const node of nodes) await node.close()
  for (const t of transports) await t.close()
  return { ms, cpuUs: cpu.user + cpu.system }
}

/** Raw Redis: pipelined XADD + XREADGROUP/XACK with the same batching. */
export async function rawRedisRun(prefix: string, envelopes: number, batch: number, size: number): Promise<Timing> {
  const writers = REGIONS.map(() => new Redis(redisUrl()))
  const readers = REGIONS.map(() => new Redis(redisUrl()))
  const stream = (o: string): string => `${prefix}:raw:${o}`
  for (const o of REGIONS) for (const r of REGIONS) if (r !== o) await (writers[0] as Redis).xgroup('CREATE', stream(o), r, '0', 'MKSTREAM')
  const got = new Map<string, number>(REGIONS.map((r) => [r, 0]))
  const payload = randomBytes(size)
  const start = performance.now()
  const cpu0 = process.cpuUsage()
  let written = 0
  while (written < envelopes || REGIONS.some((r) => (got.get(r) as number) < 2 * envelopes)) {
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
  const ms = performance.now() - start
  const cpu = process.cpuUsage(cpu0)
  await (writers[0] as Redis).del(...REGIONS.map(stream))
  for (const c of [...writers, ...readers]) await c.quit()
  return { ms, cpuUs: cpu.user + cpu.system }
}

/** Raw kafkajs: one send of `batch` messages per region and round; a consumer group per (reader, origin). */
export async function rawKafkaRun(prefix: string, envelopes: number, batch: number, size: number): Promise<Timing> {
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
  for (const reader of REGIONS) {
    for (const origin of REGIONS) {
      if (origin === reader) continue
      const consumer = kafka.consumer({ groupId: `${prefix}-raw/${reader}/${origin}`, maxWaitTimeInMs: 100 })
      joins.push(new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve())))
      await consumer.connect()
      await consumer.subscribe({ topics: [topic(origin)], fromBeginning: true })
      await consumer.run({
        autoCommit: false,
        eachBatch: async ({ batch: b }) => {
          got.set(reader, (got.get(reader) as number) + b.messages.length)
          await consumer.commitOffsets([{ topic: b.topic, partition: b.partition, offset: String(BigInt(b.lastOffset()) + 1n) }])
        },
      })
      consumers.push(consumer)
    }
  }
  await Promise.all(joins)
  const payload = randomBytes(size)
  const start = performance.now()
  const cpu0 = process.cpuUsage()
  for (let written = 0; written < envelopes; written += batch) {
    for (const origin of REGIONS) await producer.send({ topic: topic(origin), acks: -1, messages: Array.from({ length: batch }, () => ({ value: payload })) })
  }
  while (REGIONS.some((r) => (got.get(r) as number) < 2 * envelopes)) await new Promise((r) => setTimeout(r, 1))
  const ms = performance.now() - start
  const cpu = process.cpuUsage(cpu0)
  await Promise.all(consumers.map((c) => c.disconnect()))
  await producer.disconnect()
  await admin.deleteTopics({ topics: REGIONS.map(topic) }).catch(() => undefined)
  await admin.disconnect()
  return { ms, cpuUs: cpu.user + cpu.system }
}

/** Runs the benchmark and saves results/transport-throughput.{json,svg}. */
export async function run(options: TransportBenchOptions = {}): Promise<BenchReport> {
  const repeats = options.repeats ?? 3
  const warmup = options.warmup ?? 1
  const envelopes = options.envelopes ?? 3000
  const batch = options.batch ?? 100
  const only = options.only ?? ['redis', 'kafka']
  const size = await envelopeSize()
  const rows: BenchRow[] = []
  const notes = [
    `3 regions, ${envelopes} envelopes written per region (${size} B each, one PnCounter increment), ${batch} per flush/append; throughput = 3 x ${envelopes} envelopes, each applied in both other regions, / elapsed; median of ${repeats} after ${warmup} unmeasured warm-up run(s) of each variant, raw and Concord alternating`,
    'client CPU = CPU time of this Node process (all threads: JavaScript, GC, I/O) during the measured part of a run / written envelopes; the Redis server and the Kafka broker run in their own processes',
  ]
  const rate = (ms: number): number => (3 * envelopes) / (ms / 1000)
  // CPU of this process (every thread: JS, GC, I/O) per written envelope, in µs, during the measured part.
  const withCpu = async (run: () => Promise<Timing>): Promise<{ rate: number; cpu: number }> => {
    const t = await run()
    return { rate: rate(t.ms), cpu: t.cpuUs / (3 * envelopes) }
  }
  const cpuRows = (transport: string, rawName: string, concordName: string, raw: number[], concord: number[]): BenchRow[] => {
    const r = median(raw)
    const c = median(concord)
    const metric = `client CPU per envelope (${transport})`
    return [
      { name: rawName, metric, value: r, unit: 'µs' },
      { name: concordName, metric, value: c, unit: 'µs', baseline: rawName, ratio: c / r },
    ]
  }
  if (only.includes('redis')) {
    const concord: number[] = []
    const raw: number[] = []
    const rawCpu: number[] = []
    const concordCpu: number[] = []
    for (let i = 0; i < warmup + repeats; i++) {
      const prefix = `{bench-${randomUUID()}}`
      progress(i < warmup ? `redis warm-up ${i + 1}/${warmup}` : `redis run ${i - warmup + 1}/${repeats}`)
      const r = await withCpu(() => rawRedisRun(prefix, envelopes, batch, size))
      const c = await withCpu(() => concordRun(() => new RedisTransport({ redis: redisUrl(), keyPrefix: prefix }), envelopes, batch))
      if (i >= warmup) {
        raw.push(r.rate)
        concord.push(c.rate)
        rawCpu.push(r.cpu)
        concordCpu.push(c.cpu)
      }
      const admin = new Redis(redisUrl())
      const keys = await admin.keys(`${prefix}*`)
      if (keys.length > 0) await admin.del(...keys)
      await admin.quit()
    }
    const r = median(raw)
    const c = median(concord)
    rows.push({ name: 'raw XADD + XREADGROUP', metric: 'replication throughput (Redis)', value: r, unit: 'envelopes/s' })
    rows.push({ name: 'Concord RegionNode + RedisTransport', metric: 'replication throughput (Redis)', value: c, unit: 'envelopes/s', baseline: 'raw XADD + XREADGROUP', ratio: c / r, target: '>= 0.50', pass: c / r >= 0.5 })
    rows.push(...cpuRows('Redis', 'raw XADD + XREADGROUP', 'Concord RegionNode + RedisTransport', rawCpu, concordCpu))
  }
  if (only.includes('kafka')) {
    const concord: number[] = []
    const raw: number[] = []
    const rawCpu: number[] = []
    const concordCpu: number[] = []
    const kafka = new Kafka({ clientId: 'bench', brokers: kafkaBrokers(), logLevel: logLevel.NOTHING })
    for (let i = 0; i < warmup + repeats; i++) {
      const prefix = `bench-${randomUUID().slice(0, 8)}`
      progress(i < warmup ? `kafka warm-up ${i + 1}/${warmup}` : `kafka run ${i - warmup + 1}/${repeats}`)
      const r = await withCpu(() => rawKafkaRun(prefix, envelopes, batch, size))
      const c = await withCpu(() => concordRun(() => new KafkaTransport({ kafka, topicPrefix: prefix, groupPrefix: prefix, fetchMaxWaitMs: 100 }), envelopes, batch))
      if (i >= warmup) {
        raw.push(r.rate)
        concord.push(c.rate)
        rawCpu.push(r.cpu)
        concordCpu.push(c.cpu)
      }
      const admin = kafka.admin()
      await admin.connect()
      const topics = (await admin.listTopics()).filter((t) => t.startsWith(`${prefix}.`))
      if (topics.length > 0) await admin.deleteTopics({ topics })
      await admin.disconnect()
    }
    const r = median(raw)
    const c = median(concord)
    rows.push({ name: 'raw kafkajs produce + consume', metric: 'replication throughput (Kafka)', value: r, unit: 'envelopes/s' })
    rows.push({ name: 'Concord RegionNode + KafkaTransport', metric: 'replication throughput (Kafka)', value: c, unit: 'envelopes/s', baseline: 'raw kafkajs produce + consume', ratio: c / r, target: '>= 0.70', pass: c / r >= 0.7 })
    rows.push(...cpuRows('Kafka', 'raw kafkajs produce + consume', 'Concord RegionNode + KafkaTransport', rawCpu, concordCpu))
  }
  const report: BenchReport = { suite: 'transport-throughput', command: COMMAND, machine: await machine(), date: new Date().toISOString(), notes, rows }
  saveReport(report)
  return report
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const arg = (name: string): string | undefined => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
  const onlyArg = arg('only')
  await run({
    repeats: Number(arg('repeats') ?? 3),
    warmup: Number(arg('warmup') ?? 1),
    envelopes: Number(arg('envelopes') ?? 3000),
    batch: Number(arg('batch') ?? 100),
    ...(onlyArg === 'redis' || onlyArg === 'kafka' ? { only: [onlyArg] } : {}),
  })
  process.exit(0)
}
