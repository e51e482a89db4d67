/**
 * KafkaTransport: the Transport contract over Kafka.
 *
 * One single-partition topic per origin region (one partition keeps the whole origin in order and
 * makes a position one offset). Each (reader, origin) pair has its own consumer group: kafkajs's
 * assigners expect every member of a group to subscribe to the same topics, and separate groups
 * keep one origin's rebalance or stall from pausing the others.
 *
 * kafkajs consumers push batches (`eachBatch`); poll() pulls. Each pair's consumer fills a bounded
 * buffer and pauses its topic when the buffer is full; poll() drains the buffer and resumes it.
 * Offsets are committed only by commit(), never automatically.
 */
import { Kafka, Partitioners, logLevel, type Admin, type Consumer, type Producer } from 'kafkajs'
import {
  ClosedError,
  ConfigError,
  DecodeError,
  TransportError,
  isConcordError,
  type LogPosition,
  type LogRecord,
  type PollOptions,
  type Transport,
} from '@concord/core'
import { translateError } from './errors.js'
import { resolveOptions, topicName, type KafkaTransportOptions, type ResolvedKafkaTransportOptions } from './options.js'

type AppendOptions = NonNullable<Parameters<Transport['append']>[2]>

const DEFAULT_POLL_MAX = 256
const POSITION = /^(0|[1-9][0-9]{0,18})$/
const PARTITION = 0

function offsetOf(position: LogPosition): bigint {
  if (typeof position !== 'string' || !POSITION.test(position)) throw new DecodeError(`kafka transport: malformed position ${JSON.stringify(position)}`)
  return BigInt(position)
}

/** One reader's consumer of one origin. */
interface Session {
  readonly topic: string
  readonly origin: string
  readonly consumer: Consumer
  /** Connected, subscribed, running. */
  started: Promise<void>
  /** Resolves once the consumer was assigned the partition. */
  readonly joined: Promise<void>
  /** kafkajs is restarting the consumer after a retriable crash (it has no group until it rejoins). */
  restarting: boolean
  readonly buffer: LogRecord[]
  /** Next offset to accept: a refetch after a rebalance must not deliver a record twice. */
  next: bigint | undefined
  paused: boolean
  /** The highest offset committed through this session (Kafka's meaning: next to read). */
  committed: bigint | undefined
  readonly waiters: Set<() => void>
  /** A crash kafkajs does not restart from. */
  failure: unknown
}

/**
 * The Transport contract over Kafka (kafkajs). Positions are partition offsets as decimal strings.
 *
 * Guarantees: acks from all in-sync replicas before append resolves (acks=-1, idempotent
 * producer); records of one origin delivered in offset order; at-least-once delivery (a new
 * client, a rewind or a rebalance redelivers what was not committed); commits never move backwards.
 */
export class KafkaTransport implements Transport {
  readonly name = 'kafka'
  private readonly options: ResolvedKafkaTransportOptions
  private readonly kafka: Kafka
  private readonly sessions = new Map<string, Session>()
  private readonly topics = new Map<string, Promise<void>>()
  private producer: Promise<Producer> | undefined
  private admin: Promise<Admin> | undefined
  private closed = false

  constructor(options: KafkaTransportOptions = {}) {
    this.options = resolveOptions(options)
    const kafka = this.options.kafka
    this.kafka = kafka instanceof Kafka ? kafka : new Kafka({ logLevel: logLevel.WARN, ...kafka })
  }

  private check(): void {
    if (this.closed) throw new ClosedError('kafka transport is closed')
  }

  private fail(e: unknown, what: string): Error {
    if (this.closed) return new ClosedError(`kafka transport was closed during ${what}`, { cause: e })
    return translateError(e, what)
  }

  async append(origin: string, records: readonly Uint8Array[], options: AppendOptions = {}): Promise<readonly LogPosition[]> {
    this.check()
    const topic = topicName(this.options.topicPrefix, origin)
    if (records.length === 0) return []
    const keys = options.keys
    try {
      await this.ensureTopic(topic)
      const producer = await this.connectProducer()
      const metadata = await producer.send({
        topic,
        acks: -1,
        messages: records.map((bytes, i) => ({
          key: keys?.[i] ?? null,
          value: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
        })),
      })
      const meta = metadata.find((m) => m.partition === PARTITION)
      if (meta?.baseOffset === undefined || metadata.length !== 1) {
        throw new TransportError(`kafka transport: unexpected produce response ${JSON.stringify(metadata)}`, { retriable: false })
      }
      // One send to one partition is one record batch: its offsets are contiguous.
      const base = BigInt(meta.baseOffset)
      return records.map((_, i) => String(base + BigInt(i)))
    } catch (e) {
      throw this.fail(e, 'append')
    }
  }

  async poll(reader: string, origin: string, options: PollOptions = {}): Promise<readonly LogRecord[]> {
    this.check()
    const max = options.max ?? DEFAULT_POLL_MAX
    if (!Number.isInteger(max) || max < 1) throw new ConfigError(`kafka transport: poll max must be a positive integer, got ${max}`)
    const s = this.session(reader, origin)
    try {
      await s.started
    } catch (e) {
      this.dropSession(reader, origin, s)
      throw this.fail(e, 'poll')
    }
    if (s.failure !== undefined) {
      const failure = s.failure
      this.dropSession(reader, origin, s)
      throw this.fail(failure, 'poll')
    }
    this.check()
    const waitMs = options.waitMs ?? 0
    if (s.buffer.length === 0 && waitMs > 0 && options.signal?.aborted !== true) {
      await this.waitForRecords(s, waitMs, options.signal)
      this.check()
    }
    const out = s.buffer.splice(0, max)
    if (s.paused && s.buffer.length <= this.options.bufferRecords / 2) {
      s.paused = false
      s.consumer.resume([{ topic: s.topic }])
    }
    return out
  }

  async commit(reader: string, origin: string, position: LogPosition): Promise<void> {
    this.check()
    // Kafka commits the next offset to read; the contract commits the last one applied.
    const next = offsetOf(position) + 1n
    const s = this.session(reader, origin)
    try {
      await s.started
      await this.withTimeout(s.joined, this.options.joinTimeoutMs, 'joining the consumer group')
      if (s.failure !== undefined) throw s.failure
      if (s.restarting) throw rejoining()
      s.committed ??= await this.fetchCommitted(reader, origin)
      if (s.committed !== undefined && next <= s.committed) return
      await s.consumer.commitOffsets([{ topic: s.topic, partition: PARTITION, offset: String(next) }])
      s.committed = next
    } catch (e) {
      // Crashed during the commit: kafkajs has dropped the group until the restarted consumer
      // rejoins. Not waited for (one origin's broker must not stall a round): a later commit,
      // of this or a later position, succeeds after the rejoin; the store keeps the position.
      if (s.restarting && s.failure === undefined && !this.closed && !isConcordError(e)) throw rejoining(e)
      throw this.fail(e, 'commit')
    }
  }

  async committed(reader: string, origin: string): Promise<LogPosition | undefined> {
    this.check()
    try {
      const next = await this.fetchCommitted(reader, origin)
      return next === undefined || next === 0n ? undefined : String(next - 1n)
    } catch (e) {
      throw this.fail(e, 'committed')
    }
  }

  async rewind(reader: string, origin: string): Promise<void> {
    this.check()
    const s = this.sessions.get(sessionId(reader, origin))
    // Without a session there is no cursor: a new consumer starts at the committed offset anyway.
    if (s === undefined) return
    try {
      await s.started
      await this.withTimeout(s.joined, this.options.joinTimeoutMs, 'joining the consumer group')
      const committed = await this.fetchCommitted(reader, origin)
      const target = committed ?? (await this.lowWatermark(s.topic)) ?? 0n
      s.buffer.length = 0
      s.next = target
      // Batches fetched before the seek are stale (kafkajs reports it) and dropped by eachBatch.
      s.consumer.seek({ topic: s.topic, partition: PARTITION, offset: String(target) })
      if (s.paused) {
        s.paused = false
        s.consumer.resume([{ topic: s.topic }])
      }
    } catch (e) {
      throw this.fail(e, 'rewind')
    }
  }

  async earliest(origin: string): Promise<LogPosition | undefined> {
    this.check()
    const topic = topicName(this.options.topicPrefix, origin)
    try {
      const admin = await this.connectAdmin()
      if (!(await admin.listTopics()).includes(topic)) return undefined
      const offsets = await admin.fetchTopicOffsets(topic)
      const p = offsets.find((o) => o.partition === PARTITION)
      if (p === undefined || BigInt(p.low) >= BigInt(p.high)) return undefined
      return String(BigInt(p.low))
    } catch (e) {
      throw this.fail(e, 'earliest')
    }
  }

  async trim(origin: string, before: LogPosition): Promise<void> {
    this.check()
    const topic = topicName(this.options.topicPrefix, origin)
    const target = offsetOf(before)
    try {
      const admin = await this.connectAdmin()
      const offsets = await admin.fetchTopicOffsets(topic)
      const p = offsets.find((o) => o.partition === PARTITION)
      if (p === undefined) return
      // Deleting past the high watermark is an error in Kafka; the contract clamps instead.
      const high = BigInt(p.high)
      const to = target > high ? high : target
      if (to <= BigInt(p.low)) return
      await admin.deleteTopicRecords({ topic, partitions: [{ partition: PARTITION, offset: String(to) }] })
    } catch (e) {
      throw this.fail(e, 'trim')
    }
  }

  comparePositions(a: LogPosition, b: LogPosition): number {
    const x = offsetOf(a)
    const y = offsetOf(b)
    return x < y ? -1 : x > y ? 1 : 0
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    const sessions = [...this.sessions.values()]
    this.sessions.clear()
    for (const s of sessions) for (const wake of [...s.waiters]) wake()
    const closing: Promise<unknown>[] = sessions.map((s) => s.consumer.disconnect())
    if (this.producer !== undefined) closing.push(this.producer.then((p) => p.disconnect()))
    if (this.admin !== undefined) closing.push(this.admin.then((a) => a.disconnect()))
    await Promise.allSettled(closing)
  }

  private connectProducer(): Promise<Producer> {
    this.producer ??= (async () => {
      // Idempotent + one request in flight: no duplicates from producer retries, append order kept.
      const producer = this.kafka.producer({
        idempotent: true,
        maxInFlightRequests: 1,
        allowAutoTopicCreation: false,
        createPartitioner: Partitioners.DefaultPartitioner,
      })
      await producer.connect()
      return producer
    })()
    this.producer.catch(() => {
      this.producer = undefined
    })
    return this.producer
  }

  private connectAdmin(): Promise<Admin> {
    this.admin ??= (async () => {
      const admin = this.kafka.admin()
      await admin.connect()
      return admin
    })()
    this.admin.catch(() => {
      this.admin = undefined
    })
    return this.admin
  }

  private ensureTopic(topic: string): Promise<void> {
    let created = this.topics.get(topic)
    if (created === undefined) {
      created = (async () => {
        const admin = await this.connectAdmin()
        if ((await admin.listTopics()).includes(topic)) return
        // Resolves false (no error) when the topic exists already, e.g. created by another region.
        await admin.createTopics({
          waitForLeaders: true,
          topics: [
            {
              topic,
              numPartitions: 1,
              replicationFactor: this.options.replicationFactor,
              configEntries: Object.entries(this.options.topicConfig).map(([name, value]) => ({ name, value })),
            },
          ],
        })
      })()
      created.catch(() => this.topics.delete(topic))
      this.topics.set(topic, created)
    }
    return created
  }

  private async fetchCommitted(reader: string, origin: string): Promise<bigint | undefined> {
    const topic = topicName(this.options.topicPrefix, origin)
    const admin = await this.connectAdmin()
    const result = await admin.fetchOffsets({ groupId: this.groupId(reader, origin), topics: [topic] })
    const offset = result.find((t) => t.topic === topic)?.partitions.find((p) => p.partition === PARTITION)?.offset
    if (offset === undefined || offset === '-1') return undefined
    return BigInt(offset)
  }

  private async lowWatermark(topic: string): Promise<bigint | undefined> {
    const admin = await this.connectAdmin()
    const p = (await admin.fetchTopicOffsets(topic)).find((o) => o.partition === PARTITION)
    return p === undefined ? undefined : BigInt(p.low)
  }

  private groupId(reader: string, origin: string): string {
    if (reader.length === 0) throw new ConfigError('kafka transport: reader must not be empty')
    return `${this.options.groupPrefix}/${encodeURIComponent(reader)}/${encodeURIComponent(origin)}`
  }

  private session(reader: string, origin: string): Session {
    const id = sessionId(reader, origin)
    const existing = this.sessions.get(id)
    if (existing !== undefined) return existing
    const topic = topicName(this.options.topicPrefix, origin)
    const consumer = this.kafka.consumer({
      groupId: this.groupId(reader, origin),
      sessionTimeout: this.options.sessionTimeoutMs,
      heartbeatInterval: this.options.heartbeatIntervalMs,
      maxWaitTimeInMs: this.options.fetchMaxWaitMs,
      allowAutoTopicCreation: false,
    })
    let onJoin: () => void = () => undefined
    const joined = new Promise<void>((resolve) => {
      onJoin = resolve
    })
    const s: Session = {
      topic,
      origin,
      consumer,
      started: Promise.resolve(),
      joined,
      restarting: false,
      buffer: [],
      next: undefined,
      paused: false,
      committed: undefined,
      waiters: new Set(),
      failure: undefined,
    }
    consumer.on(consumer.events.GROUP_JOIN, (event) => {
      const assigned = event.payload.memberAssignment[topic]
      if (assigned?.includes(PARTITION) === true) {
        s.restarting = false
        onJoin()
      }
    })
    // A crash stops the consumer (kafkajs drops its group) and, when retriable (a broker restart),
    // restarts it: until it has rejoined, commits fail fast as retriable (see commit).
    consumer.on(consumer.events.STOP, () => {
      s.restarting = true
    })
    consumer.on(consumer.events.CRASH, (event) => {
      // Not restarted: the session is dead; release whoever waits for a join or for records.
      if (!event.payload.restart) {
        s.failure = event.payload.error
        onJoin()
        for (const wake of [...s.waiters]) wake()
      }
    })
    const started = (async () => {
      await this.ensureTopic(topic)
      await consumer.connect()
      // No committed offset yet: start at the beginning of what the log still holds.
      await consumer.subscribe({ topics: [topic], fromBeginning: true })
      await consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        eachBatch: async ({ batch, resolveOffset, isStale, isRunning, heartbeat }) => {
          for (const message of batch.messages) {
            if (!isRunning() || isStale()) break
            const offset = BigInt(message.offset)
            if (s.next === undefined || offset >= s.next) {
              // Copy: the decoder's buffer may be shared with other messages of the fetch.
              const bytes = message.value === null ? new Uint8Array(0) : new Uint8Array(message.value)
              s.buffer.push({ origin, position: message.offset, bytes })
              s.next = offset + 1n
            }
            // Resolving moves the fetch position only: autoCommit is off.
            resolveOffset(message.offset)
          }
          for (const wake of [...s.waiters]) wake()
          if (!s.paused && s.buffer.length >= this.options.bufferRecords) {
            s.paused = true
            consumer.pause([{ topic }])
          }
          await heartbeat()
        },
      })
    })()
    // Observed here so an unawaited failure is not an unhandled rejection; poll() reports it.
    started.catch(() => undefined)
    s.started = started
    this.sessions.set(id, s)
    return s
  }

  private dropSession(reader: string, origin: string, s: Session): void {
    if (this.sessions.get(sessionId(reader, origin)) === s) this.sessions.delete(sessionId(reader, origin))
    s.consumer.disconnect().catch(() => undefined)
  }

  private waitForRecords(s: Session, waitMs: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        s.waiters.delete(done)
        signal?.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, waitMs)
      s.waiters.add(done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  private async withTimeout(p: Promise<void>, ms: number, what: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        p,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new TransportError(`kafka transport: timed out after ${ms} ms ${what}`)), ms)
        }),
      ])
    } finally {
      clearTimeout(timer)
    }
  }
}

/** A commit refused while kafkajs restarts a crashed consumer: retriable, the rejoin is not waited for. */
function rejoining(cause?: unknown): TransportError {
  return new TransportError('kafka transport: commit failed: the consumer is rejoining its group after a crash', { cause, retriable: true })
}

function sessionId(reader: string, origin: string): string {
  return `${reader}\u0000${origin}`
}
