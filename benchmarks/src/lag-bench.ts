/**
 * Replication lag: how long after a write another region holds it, with nothing else going on.
 * Two regions, `eu` writes one PnCounter increment and flushes it (the write is durable in eu's log
 * when flush() resolves); `us` runs `start()`, the loop a service runs, and the time is taken when
 * its replica applies the increment. Beside it, in the same run, the raw client on the same server:
 *
 *   - Kafka: one kafkajs send (acks=-1, idempotent) of a record of the envelope's size; a consumer
 *     of the topic (kafkajs's own fetch loop, maxWaitTimeInMs 100; the transport keeps its default
 *     fetchMaxWaitMs of 1,000 — a fetch returns as soon as a record arrives either way) timestamps it.
 *   - Redis: one XADD; a reader blocked in XREADGROUP ... BLOCK on its own connection timestamps it.
 *
 * Writes are spaced 10–30 ms apart at random (no phase lock with any timer). Reports the median and
 * the 99th percentile of the lag, and Concord/raw ratios (lower is better).
 *
 *   node --conditions=@concord/source --import tsx benchmarks/src/lag-bench.ts [--samples=300] [--only=redis|kafka]
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
import { envelopeSize } from './transport-bench.js'
import { kafkaBrokers, redisUrl, requireServers } from './servers.js'
import { checkFlags, cliInt, cliMain, cliOnly, finishReport, flagDefault, progress, type BenchReport, type BenchRow } from './report.js'

const COMMAND = 'node --conditions=@concord/source --import tsx benchmarks/src/lag-bench.ts'

/** Options of {@link run}. */
export interface LagBenchOptions {
  /** Measured writes per variant. @default 300 */
  readonly samples?: number
  /** Unmeasured writes first (connections, JIT). @default 30 */
  readonly warmup?: number
  /** Transports to measure. @default ['redis', 'kafka'] */
  readonly only?: readonly ('redis' | 'kafka')[]
}

/** Lags in ms, one per measured write. */
type Lags = number[]

const SAMPLE_DEADLINE_MS = 30_000
const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const gap = (): Promise<void> => pause(10 + Math.random() * 20)

/**
 * Runs `write(i)` for each sample and waits until `arrived(i)` has been called for it; returns the
 * lags (arrival minus the start of the write), warm-up left out.
 */
async function sample(total: number, warmup: number, write: (i: number) => Promise<void>, arrivals: Map<number, number>): Promise<Lags> {
  const lags: Lags = []
  for (let i = 0; i < total; i++) {
    const t0 = performance.now()
    await write(i)
    const until = Date.now() + SAMPLE_DEADLINE_MS
    while (!arrivals.has(i)) {
      if (Date.now() > until) throw new Error(`write ${i} did not arrive within ${SAMPLE_DEADLINE_MS / 1000} s`)
      await pause(0)
    }
    if (i >= warmup) lags.push((arrivals.get(i) as number) - t0)
    await gap()
  }
  return lags
}

/** Concord: `eu` writes and flushes, `us` runs start() and is timed when its replica applies the write. */
export async function concordLag(open: () => Transport, total: number, warmup: number): Promise<Lags> {
  const regions = ['eu', 'us']
  const transports = regions.map(() => open())
  const nodes = regions.map((region, i) => new RegionNode({ region, instance: 'i1', regions, transport: transports[i] as Transport, store: new MemoryStore(), factories: { 'pn-counter': crdtFactory('pn-counter') } }))
  const [eu, us] = nodes as [RegionNode, RegionNode]
  const mine = (await eu.open('lag', 'pn-counter')) as unknown as PnCounter
  const theirs = (await us.open('lag', 'pn-counter')) as unknown as PnCounter
  await us.start()
  const arrivals = new Map<number, number>()
  // Write i makes the counter i + 1: the apply that gets it there is write i's arrival.
  theirs.onDelta((_, origin) => {
    if (origin === 'remote') arrivals.set(theirs.value() - 1, performance.now())
  })
  try {
    return await sample(
      total,
      warmup,
      async () => {
        mine.increment(1)
        await eu.flush()
      },
      arrivals,
    )
  } finally {
    for (const n of nodes) await n.close()
    for (const t of transports) await t.close()
  }
}

/** Raw kafkajs: one send per write; a consumer of the topic timestamps each record. */
export async function rawKafkaLag(prefix: string, size: number, total: number, warmup: number): Promise<Lags> {
  const kafka = new Kafka({ clientId: 'lag-raw', brokers: kafkaBrokers(), logLevel: logLevel.NOTHING })
  const admin = kafka.admin()
  await admin.connect()
  const topic = `${prefix}-raw`
  await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 1 }] })
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  const consumer = kafka.consumer({ groupId: `${prefix}-raw`, maxWaitTimeInMs: 100 })
  const joined = new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve()))
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  const arrivals = new Map<number, number>()
  await consumer.run({
    eachBatch: async ({ batch }) => {
      const at = performance.now()
      for (const m of batch.messages) arrivals.set(Number(m.key?.toString()), at)
    },
  })
  await joined
  const payload = randomBytes(size)
  try {
    return await sample(total, warmup, async (i) => void (await producer.send({ topic, acks: -1, messages: [{ key: String(i), value: payload, partition: 0 }] })), arrivals)
  } finally {
    await consumer.disconnect()
    await producer.disconnect()
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined)
    await admin.disconnect()
  }
}

/** Raw Redis: one XADD per write; a reader blocked in XREADGROUP on its own connection timestamps each entry. */
export async function rawRedisLag(prefix: string, size: number, total: number, warmup: number): Promise<Lags> {
  const writer = new Redis(redisUrl())
  const reader = new Redis(redisUrl())
  const stream = `${prefix}:raw`
  await writer.xgroup('CREATE', stream, 'us', '0', 'MKSTREAM')
  const arrivals = new Map<number, number>()
  let reading = true
  const loop = (async () => {
    while (reading) {
      const res = (await reader.callBuffer('XREADGROUP', 'GROUP', 'us', 'c', 'COUNT', 256, 'BLOCK', 200, 'STREAMS', stream, '>')) as [Buffer, [Buffer, Buffer[]][]][] | null
      const at = performance.now()
      const entries = res?.[0]?.[1] ?? []
      if (entries.length === 0) continue
      for (const [, fields] of entries) arrivals.set(Number(fields[1]?.toString()), at)
      await reader.xack(stream, 'us', ...entries.map((e) => e[0]))
    }
  })()
  const payload = randomBytes(size)
  try {
    return await sample(total, warmup, async (i) => void (await writer.xadd(stream, '*', 'i', String(i), 'b', payload)), arrivals)
  } finally {
    reading = false
    await loop
    await writer.del(stream)
    await writer.quit()
    await reader.quit()
  }
}

function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number
}

/** Runs the benchmark and saves results/replication-lag.{json,svg}. */
export async function run(options: LagBenchOptions = {}): Promise<BenchReport> {
  const samples = options.samples ?? flagDefault('lag', 'samples')
  const warmup = options.warmup ?? 30
  const only = options.only ?? ['redis', 'kafka']
  await requireServers('lag benchmark', only)
  const size = await envelopeSize()
  const total = samples + warmup
  const rows: BenchRow[] = []
  const notes = [
    `2 regions; ${samples} writes per variant (after ${warmup} unmeasured), each one PnCounter increment (Concord) or one ${size} B record (raw), spaced 10–30 ms apart at random; lag = from the write to its arrival in the other region`,
    'Concord: eu increments and awaits flush() (durable in its log); us runs start() with default options and is timed when its replica applies the increment (read, verified and applied; its round saves it to the store right after)',
    'raw: the client alone on the same server — Kafka: a kafkajs send (acks=-1) and a consumer (maxWaitTimeInMs 100) timestamping the record in eachBatch; Redis: XADD and a reader blocked in XREADGROUP BLOCK on its own connection',
  ]
  const record = (transport: string, raw: Lags, concord: Lags, rawName: string, concordName: string): void => {
    for (const [p, label] of [
      [50, 'median'],
      [99, 'p99'],
    ] as const) {
      const metric = `replication lag, ${label} (${transport})`
      const base = percentile(raw, p)
      const v = percentile(concord, p)
      rows.push({ name: rawName, metric, value: base, unit: 'ms' })
      rows.push({ name: concordName, metric, value: v, unit: 'ms', baseline: rawName, ratio: v / base })
    }
  }
  if (only.includes('redis')) {
    const prefix = `{lag-${randomUUID()}}`
    progress('redis: raw XADD + XREADGROUP BLOCK')
    const raw = await rawRedisLag(prefix, size, total, warmup)
    progress('redis: Concord')
    const concord = await concordLag(() => new RedisTransport({ redis: redisUrl(), keyPrefix: prefix }), total, warmup)
    const admin = new Redis(redisUrl())
    const keys = await admin.keys(`${prefix}*`)
    if (keys.length > 0) await admin.del(...keys)
    await admin.quit()
    record('Redis', raw, concord, 'raw XADD + XREADGROUP BLOCK', 'Concord RegionNode + RedisTransport (start())')
  }
  if (only.includes('kafka')) {
    const prefix = `lag-${randomUUID().slice(0, 8)}`
    const kafka = new Kafka({ clientId: 'lag', brokers: kafkaBrokers(), logLevel: logLevel.NOTHING })
    progress('kafka: raw kafkajs send + consumer')
    const raw = await rawKafkaLag(prefix, size, total, warmup)
    progress('kafka: Concord')
    const concord = await concordLag(() => new KafkaTransport({ kafka, topicPrefix: prefix, groupPrefix: prefix }), total, warmup)
    const admin = kafka.admin()
    await admin.connect()
    const topics = (await admin.listTopics()).filter((t) => t.startsWith(`${prefix}.`))
    if (topics.length > 0) await admin.deleteTopics({ topics })
    await admin.disconnect()
    record('Kafka', raw, concord, 'raw kafkajs send + consumer', 'Concord RegionNode + KafkaTransport (start())')
  }
  return finishReport('replication-lag', COMMAND, notes, rows, 'lag')
}

/** The options given on the command line (also read by `npm run bench -- lag`). */
export function cliOptions(): LagBenchOptions {
  return { samples: cliInt('samples', flagDefault('lag', 'samples')), ...cliOnly() }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await cliMain(async () => {
    checkFlags(['lag'])
    return run(cliOptions())
  })
  process.exit(0)
}
