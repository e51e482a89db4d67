/**
 * KafkaTransport: the Transport contract over Kafka.
 *
 * One single-partition topic per origin region (one partition keeps the whole origin in order and
 * makes a position one offset). One consumer group per reader (reading region), subscribed to
 * every origin topic it reads: one fetch request covers all origins, and the commits of one round
 * go out as one OffsetCommit request. The topics are known up front through subscribe() (a
 * RegionNode announces its regions); an origin first seen in poll() re-subscribes the consumer.
 *
 * kafkajs consumers push batches (`eachBatch`); poll() pulls. The consumer fills a bounded buffer
 * per origin and pauses that topic when its buffer is full; poll() drains it and resumes the topic.
 * Offsets are committed only by commit(), never automatically.
 */
import { Kafka, Partitioners, logLevel, type Admin, type Consumer, type KafkaConfig, type Producer } from 'kafkajs'
import {
  ClosedError,
  ConfigError,
  DecodeError,
  TooLargeError,
  TransportError,
  WatchListeners,
  checkAppendArgs,
  checkPollOptions,
  isConcordError,
  isWellFormed as isWellFormedString,
  type LogPosition,
  type LogRecord,
  type PollOptions,
  type Transport,
  toBuffer,
} from '@concord/core'
import { UNDECODABLE_HEADER, registerDefaultCodecs } from './codecs.js'
import { isAuthorizationError, isProducerStateError, isTooLargeError, isUnknownTopicError, translateError } from './errors.js'
import { RECORD_ROOM_BYTES, resolveOptions, topicName, type KafkaTransportOptions, type ResolvedKafkaTransportOptions } from './options.js'

type AppendOptions = NonNullable<Parameters<Transport['append']>[2]>

const DEFAULT_POLL_MAX = 256
const POSITION = /^(0|[1-9][0-9]{0,18})$/
const PARTITION = 0
/** Kafka's longest string (a group id is one): an INT16 length. */
const MAX_GROUP_ID_BYTES = 32_767
const EMPTY = new Uint8Array(0)
/** A record's framing in a produce request beside its value and key (length, attributes, deltas). */
const RECORD_FRAMING_BYTES = 32
/** Longest record key (a document id, at most 1 KiB as RegionNode checks them): room is kept for it beside maxRecordBytes. */
const MAX_KEY_BYTES = RECORD_ROOM_BYTES - 2 * RECORD_FRAMING_BYTES - 128
/**
 * kafkajs's ConfigResourceTypes.TOPIC. Not imported by name: Node's ESM loader finds only some of
 * kafkajs's (CommonJS) exports, and not that one — the module failed to load outside vitest.
 */
const TOPIC_RESOURCE = 2
/** What {@link KafkaTransport.unlessClosed} gets when close() begins first. */
const CLOSED: unique symbol = Symbol('closed')
/**
 * Longest close() waits for its clients to disconnect: a consumer leaving during a group join
 * waits for the join (a crashed member's session), a client still connecting to a silent broker
 * for its request timeout. Their disconnects go on in the background.
 */
const CLOSE_WAIT_MS = 5_000
/** An origin not polled for this long stops being fetched once it has records buffered. */
const IDLE_PAUSE_MS = 100

/** Offset runs one source appended to a topic, ascending and disjoint (see skipAppendsOf). */
interface OffsetRange {
  readonly first: bigint
  last: bigint
}
const MAX_APPENDED_RANGES = 4096

function findRange(ranges: readonly OffsetRange[], offset: bigint): OffsetRange | undefined {
  let lo = 0
  let hi = ranges.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    const r = ranges[mid] as OffsetRange
    if (offset < r.first) hi = mid - 1
    else if (offset > r.last) lo = mid + 1
    else return r
  }
  return undefined
}

/**
 * Runs a steering call on a kafkajs consumer (seek, resume). While kafkajs restarts a consumer (after
 * a crash such as a lost broker, or a re-subscription) it has no group, and such a call throws
 * "Consumer group was not initialized"; it is moot then: the new run starts at the committed
 * offsets with nothing paused, and a record before the origin's `next` is dropped when fetched.
 */
function steer(call: () => void): void {
  try {
    call()
  } catch (e) {
    if (e instanceof Error && e.name === 'KafkaJSNonRetriableError' && e.message.includes('was not initialized')) return
    throw e
  }
}

/** Offsets are signed 64-bit, and a commit stores the next one: past this no record can be. */
const MAX_OFFSET = 2n ** 63n - 2n

/** `position` checked to be an offset: a canonical decimal (no sign, no leading zeros). */
function checkedPosition(position: LogPosition): string {
  if (typeof position !== 'string' || !POSITION.test(position)) throw new DecodeError(`kafka transport: malformed position ${JSON.stringify(position)}`)
  if (position.length === 19 && BigInt(position) > MAX_OFFSET) throw new DecodeError(`kafka transport: position ${position} is out of range`)
  return position
}

function offsetOf(position: LogPosition): bigint {
  return BigInt(checkedPosition(position))
}

/** What one reader's consumer holds for one origin. */
interface OriginState {
  readonly topic: string
  readonly origin: string
  readonly buffer: LogRecord[]
  /** Next offset to accept: a refetch after a rebalance or restart must not deliver a record twice. */
  next: bigint | undefined
  paused: boolean
  /** When poll() last drained this origin (ms, Date.now). */
  polledAt: number
  /** The highest offset committed through this session (Kafka's meaning: next to read). */
  committed: bigint | undefined
  /**
   * The topic was found deleted (and created again): positions from before are meaningless on it,
   * and a commit of one past what this topic delivered is dropped (see commit).
   */
  reset?: boolean
  /** The `skipAppendsOf` of the last poll: runs of that source's appends are left out. */
  skipSource: string | undefined
  readonly waiters: Set<() => void>
}

/** One reader's consumer (its consumer group), over every origin it reads. */
interface Session {
  readonly reader: string
  readonly consumer: Consumer
  /** By topic. */
  readonly origins: Map<string, OriginState>
  /** Topics the running consumer is subscribed to. */
  readonly subscribed: Set<string>
  /** Connected, subscribed to every topic in `origins`, running. */
  started: Promise<void>
  /** `started` once a poll saw it fulfilled: later polls need not wait on it (see startedWithin). */
  startedOk: Promise<void> | undefined
  /** Resolves once the consumer was assigned every subscribed topic. */
  joined: Promise<void>
  onJoin: () => void
  /** kafkajs is restarting the consumer after a retriable crash (it has no group until it rejoins). */
  restarting: boolean
  /** A crash kafkajs does not restart from. */
  failure: unknown
  /** Commits waiting for the next OffsetCommit request (topic → next offset), and its promise. */
  readonly commitQueue: Map<string, bigint>
  commitBatch: Promise<void> | undefined
  /** The last OffsetCommit request sent (or being sent): the next one waits for it. */
  commitsSent: Promise<void>
  /** A join that left a subscribed topic unassigned is followed by another one (see onGroupJoin). */
  rejoinTimer: ReturnType<typeof setTimeout> | undefined
  /** A consumer crashed for good is replaced by a new one (see renewLater). */
  renewTimer: ReturnType<typeof setTimeout> | undefined
  /** How long renewLater waits: doubled for each renewal in a row without a complete join. */
  renewDelayMs: number
  /** Dropped (a failed start, a crash) or its transport closed: a (re)start still under way stops and disconnects. */
  dropped: boolean
  /** A run of recreateMissing, while one is on. */
  recreating: Promise<void> | undefined
}

/** How long after a join without every subscribed topic the consumer joins again. */
const REJOIN_DELAY_MS = 1_000

/** How long after its consumer crashed for good a reader gets a new one (see renewLater)... */
const RENEW_DELAY_MS = 1_000
/** ...doubled for each renewal in a row without a complete join, up to this. */
const MAX_RENEW_DELAY_MS = 60_000

/**
 * The Transport contract over Kafka (kafkajs). Positions are partition offsets as decimal strings.
 *
 * Guarantees: acks from all in-sync replicas before append resolves (acks=-1, idempotent
 * producer); records of one origin delivered in offset order; at-least-once delivery (a new
 * client, a rewind or a rebalance redelivers what was not committed); commits never move backwards.
 */
export class KafkaTransport implements Transport {
  readonly name = 'kafka'
  /** The largest record (its value; its key has room beside it) an append takes: maxBatchBytes less RECORD_ROOM_BYTES. */
  readonly maxRecordBytes: number
  private readonly options: ResolvedKafkaTransportOptions
  private readonly kafka: Kafka
  private readonly sessions = new Map<string, Session>()
  /** Offsets appended with a `source`, by topic and source (for skipAppendsOf). */
  private readonly appended = new Map<string, OffsetRange[]>()
  private readonly topics = new Map<string, Promise<void>>()
  private readonly watchers = new WatchListeners()
  private producer: Promise<Producer> | undefined
  private admin: Promise<Admin> | undefined
  private closed = false
  /** Calls waiting for a consumer's start (see unlessClosed): close() releases them. */
  private readonly closeWaiters = new Set<() => void>()

  constructor(options: KafkaTransportOptions = {}) {
    this.options = resolveOptions(options)
    // Snappy, LZ4 and ZSTD batches (a recompressing topic or broker, a compressed mirror) readable.
    registerDefaultCodecs()
    this.maxRecordBytes = this.options.maxBatchBytes - RECORD_ROOM_BYTES
    const kafka = this.options.kafka
    // A client by its shape, as resolveOptions tells it from options (one made by another copy of
    // kafkajs is no instance of this copy's class).
    this.kafka = typeof (kafka as { producer?: unknown }).producer === 'function' ? (kafka as Kafka) : new Kafka({ logLevel: logLevel.WARN, ...(kafka as KafkaConfig) })
  }

  private check(): void {
    if (this.closed) throw new ClosedError('kafka transport is closed')
  }

  /**
   * The error of a call that found its consumer crashed for good (kafkajs did not restart it: a
   * non-retriable error, which includes kafkajs's own internal failures, such as a TypeError in
   * its offset manager seen after a broker restart). The session is dropped and the next poll
   * starts a new consumer, so this is retriable — unless the cause is the configuration
   * (credentials, authorization), which a new consumer would meet again.
   */
  private sessionLost(e: unknown, what: string): Error {
    const err = this.fail(e, what)
    if (!(err instanceof TransportError) || err.retriable) return err
    return new TransportError(`${err.message} (its consumer stopped; a new one starts within a second, or at the next poll)`, { cause: e, retriable: true })
  }

  private fail(e: unknown, what: string): Error {
    if (this.closed) return new ClosedError(`kafka transport was closed during ${what}`, { cause: e })
    return translateError(e, what)
  }

  async append(origin: string, records: readonly Uint8Array[], options: AppendOptions = {}): Promise<readonly LogPosition[]> {
    this.check()
    const topic = topicName(this.options.topicPrefix, origin)
    checkAppendArgs('kafka', records, options)
    if (records.length === 0) return []
    const keys = options.keys
    const chunks = this.chunks(records, keys)
    let connected: Promise<Producer> | undefined
    try {
      // Each step ends at once with ClosedError when close() begins (review finding: a broker
      // that went away kept an append retrying for ~18 s after close() had returned).
      await this.unlessClosed(this.ensureTopic(topic))
      // close() may have run meanwhile: no producer is made (or used) after it.
      this.check()
      connected = this.connectProducer()
      const producer = await this.unlessClosed(connected)
      // One produce request per chunk, in order (one request in flight: the log keeps the order).
      // When a later chunk fails, the earlier ones are in the log: a retry appends them again
      // (at-least-once, as the contract allows).
      const positions: LogPosition[] = []
      // In order; a chunk the broker finds too large is sent again in halves, first half first.
      const todo = chunks.reverse()
      for (let chunk = todo.pop(); chunk !== undefined; chunk = todo.pop()) {
        const [from, to] = chunk
        this.check()
        let metadata: Awaited<ReturnType<Producer['send']>>
        try {
          metadata = await this.unlessClosed(producer.send({
            topic,
            acks: -1,
            // The topic's one partition, named: kafkajs then skips its partitioner (a murmur2 hash of
            // every key). The key still goes with the record (log compaction, mirroring, tooling).
            messages: records.slice(from, to).map((bytes, i) => ({
              key: keys?.[from + i] ?? null,
              value: toBuffer(bytes),
              partition: PARTITION,
            })),
          }))
        } catch (e) {
          // Past the topic's max.message.bytes (or the broker's message.max.bytes), which may be
          // below maxBatchBytes: the broker wrote none of it. Halves go again; a record alone that
          // is too large cannot go at all.
          if (!isTooLargeError(e)) throw e
          if (to - from === 1) {
            throw new TransportError(
              `kafka transport: the broker refused record ${from} (${(records[from] as Uint8Array).byteLength} bytes) as too large for topic ${topic}: its max.message.bytes (or the broker's message.max.bytes) is below this transport's maxBatchBytes (${this.options.maxBatchBytes}); lower maxBatchBytes or raise the limit`,
              { cause: e, retriable: false },
            )
          }
          const mid = from + Math.floor((to - from) / 2)
          todo.push([mid, to], [from, mid])
          continue
        }
        const meta = metadata.find((m) => m.partition === PARTITION)
        if (meta?.baseOffset === undefined || metadata.length !== 1) {
          throw new TransportError(`kafka transport: unexpected produce response ${JSON.stringify(metadata)}`, { retriable: false })
        }
        // One send to one partition is one record batch: its offsets are contiguous.
        const n = to - from
        const base = BigInt(meta.baseOffset)
        if (options.source !== undefined) this.noteAppended(topic, options.source, base, base + BigInt(n - 1))
        // Number arithmetic while offsets stay exact as doubles (always, in practice): a BigInt
        // addition per record cost more than the rest of this bookkeeping.
        const first = Number(base)
        if (Number.isSafeInteger(first + n)) for (let i = 0; i < n; i++) positions.push(String(first + i))
        else for (let i = 0; i < n; i++) positions.push(String(base + BigInt(i)))
      }
      return positions
    } catch (e) {
      // The topic is gone (deleted by an operator, or a cluster rebuilt empty): the next append
      // creates it again, instead of failing for good on the remembered creation. A new admin
      // client too: kafkajs keeps refreshing the metadata of every topic a client has asked about,
      // and that refresh fails on a deleted one, so the old client could no longer create it.
      // What the topic held is repaired by the readers' anti-entropy, as after any lost log.
      if (!this.closed && isUnknownTopicError(e)) this.forgetTopic(topic)
      if (!this.closed && connected !== undefined && isProducerStateError(e)) {
        // The idempotent producer's sequence numbers no longer match the broker's (a broker
        // restart that lost a produce answer leaves kafkajs at OUT_OF_ORDER_SEQUENCE_NUMBER for
        // good): a new producer, with a new producer id, sends the batch again. Readers drop a
        // copy the broker already held (RegionNode de-duplicates by writer and sequence).
        if (this.producer === connected) this.producer = undefined
        connected.then((p) => p.disconnect()).catch(() => undefined)
        throw new TransportError(`kafka transport: append failed: ${e instanceof Error ? e.message : String(e)}; the next append uses a new producer`, { cause: e, retriable: true })
      }
      throw this.fail(e, 'append')
    }
  }

  async poll(reader: string, origin: string, options: PollOptions = {}): Promise<readonly LogRecord[]> {
    this.check()
    const { max, waitMs } = checkPollOptions('kafka', options, DEFAULT_POLL_MAX)
    const until = Date.now() + waitMs
    await this.admitOrigins('poll', reader, [origin])
    const s = this.session(reader, [origin])
    let started: boolean
    try {
      // Within waitMs (and the signal): a start lasts as long as its group join, which waits out
      // a crashed member's session (30 s and more). A poll that waited for it held the node's
      // round — its flushes, heartbeats and other logs — that long (review finding).
      started = await this.startedWithin(s, waitMs, options.signal)
    } catch (e) {
      this.dropSession(s)
      throw this.fail(e, 'poll')
    }
    if (s.failure !== undefined) {
      const failure = s.failure
      this.dropSession(s)
      throw this.sessionLost(failure, 'poll')
    }
    this.check()
    const o = s.origins.get(topicName(this.options.topicPrefix, origin)) as OriginState
    o.skipSource = options.skipAppendsOf
    // Still starting (a first join, or a rejoin after a re-subscription): what was fetched before
    // it, without waiting for more (review finding: buffered records waited for the whole join).
    // Records fetched again after the rejoin are dropped by offset (eachBatch).
    if (!started) {
      const out = o.buffer.splice(0, max)
      o.polledAt = Date.now()
      return out
    }
    const left = until - Date.now()
    if (o.buffer.length === 0 && left > 0 && options.signal?.aborted !== true) {
      await this.waitForRecords(o, left, options.signal)
      this.check()
    }
    const out = o.buffer.splice(0, max)
    o.polledAt = Date.now()
    if (o.skipSource !== undefined && o.buffer.length === 0 && out.length < max) this.skipOwnRun(s, o, out)
    if (o.paused && o.buffer.length <= this.options.bufferRecords / 2) {
      o.paused = false
      steer(() => s.consumer.resume([{ topic: o.topic }]))
    }
    return out
  }

  async commit(reader: string, origin: string, position: LogPosition): Promise<void> {
    this.check()
    // Kafka commits the next offset to read; the contract commits the last one applied.
    const next = offsetOf(position) + 1n
    await this.admitOrigins('commit', reader, [origin])
    const s = this.session(reader, [origin])
    try {
      await this.joinedWithin(s)
      // Closed while waiting (close() releases the wait): ClosedError, not a late commit or seek.
      this.check()
      if (s.failure !== undefined) throw s.failure
      if (s.restarting) throw rejoining()
      const o = s.origins.get(topicName(this.options.topicPrefix, origin)) as OriginState
      o.committed ??= await this.fetchCommitted(reader, origin)
      if (o.committed !== undefined && next <= o.committed) return
      // A position of the deleted topic, past what the new one delivered (a reader that saved it
      // before the deletion commits it now): Kafka would take it, and the new topic's records
      // below it would never be read (review finding). Dropped; the reader commits again later.
      if (o.reset === true && (o.next === undefined || next > o.next)) return
      await this.queueCommit(s, o.topic, next)
    } catch (e) {
      // Crashed during the commit: kafkajs has dropped the group until the restarted consumer
      // rejoins. Not waited for (one origin's broker must not stall a round): a later commit,
      // of this or a later position, succeeds after the rejoin; the store keeps the position.
      if (s.restarting && s.failure === undefined && !this.closed && !isConcordError(e)) throw rejoining(e)
      if (s.failure !== undefined && e === s.failure) throw this.sessionLost(e, 'commit')
      throw this.fail(e, 'commit')
    }
  }

  async committed(reader: string, origin: string): Promise<LogPosition | undefined> {
    this.check()
    try {
      const next = await this.fetchCommitted(reader, origin)
      return next === undefined || next === 0n ? undefined : String(next - 1n)
    } catch (e) {
      // No topic yet (nobody appended to the origin): nothing was committed on it.
      if (isUnknownTopicError(e)) return undefined
      throw this.fail(e, 'committed')
    }
  }

  async rewind(reader: string, origin: string): Promise<void> {
    this.check()
    const s = this.sessions.get(reader)
    const topic = topicName(this.options.topicPrefix, origin)
    // Without a session there is no cursor: a new consumer starts at the committed offset anyway.
    if (s === undefined || !s.origins.has(topic)) return
    try {
      await this.joinedWithin(s)
      // Closed while waiting (close() releases the wait): ClosedError, not a late commit or seek.
      this.check()
      const o = s.origins.get(topic) as OriginState
      const committed = await this.fetchCommitted(reader, origin)
      const target = committed ?? (await this.lowWatermark(topic)) ?? 0n
      o.buffer.length = 0
      o.next = target
      // Batches fetched before the seek are stale (kafkajs reports it) and dropped by eachBatch.
      steer(() => s.consumer.seek({ topic, partition: PARTITION, offset: String(target) }))
      if (o.paused) {
        o.paused = false
        steer(() => s.consumer.resume([{ topic }]))
      }
    } catch (e) {
      throw this.fail(e, 'rewind')
    }
  }

  async earliest(origin: string): Promise<LogPosition | undefined> {
    const w = await this.watermarks(origin, 'earliest')
    return w === undefined ? undefined : String(w.low)
  }

  async latest(origin: string): Promise<LogPosition | undefined> {
    // The high watermark is the next offset to be written (committed by every in-sync replica).
    const w = await this.watermarks(origin, 'latest')
    return w === undefined ? undefined : String(w.high - 1n)
  }

  /** The low and high watermarks of `origin`'s partition; undefined when the topic is missing or holds no record. */
  private async watermarks(origin: string, what: string): Promise<{ low: bigint; high: bigint } | undefined> {
    this.check()
    const topic = topicName(this.options.topicPrefix, origin)
    try {
      const admin = await this.connectAdmin()
      if (!(await admin.listTopics()).includes(topic)) return undefined
      const offsets = await admin.fetchTopicOffsets(topic)
      const p = offsets.find((o) => o.partition === PARTITION)
      if (p === undefined || BigInt(p.low) >= BigInt(p.high)) return undefined
      return { low: BigInt(p.low), high: BigInt(p.high) }
    } catch (e) {
      throw this.fail(e, what)
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
    checkedPosition(a)
    checkedPosition(b)
    // Canonical decimals: the longer is larger, equal lengths compare as strings. No BigInt per
    // comparison.
    if (a.length !== b.length) return a.length < b.length ? -1 : 1
    return a < b ? -1 : a > b ? 1 : 0
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const release of [...this.closeWaiters]) release()
    this.watchers.clear()
    const sessions = [...this.sessions.values()]
    this.sessions.clear()
    for (const s of sessions) {
      s.dropped = true
      clearTimeout(s.rejoinTimer)
      clearTimeout(s.renewTimer)
      // A commit or rewind waiting for the group join goes on (and fails with ClosedError) now.
      s.onJoin()
      for (const o of s.origins.values()) for (const wake of [...o.waiters]) wake()
    }
    const closing: Promise<unknown>[] = sessions.map((s) => s.consumer.disconnect())
    if (this.producer !== undefined) closing.push(this.producer.then((p) => p.disconnect()))
    if (this.admin !== undefined) closing.push(this.admin.then((a) => a.disconnect()))
    // Bounded (review finding: 27 s against a silent broker, 26 s during a group join).
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.allSettled(closing),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_WAIT_MS)
        timer.unref()
      }),
    ])
    clearTimeout(timer)
  }

  /**
   * `records` cut into runs `[from, to)` whose values and keys fit one produce request
   * (maxBatchBytes). @throws TooLargeError when a record cannot fit one (nothing is appended).
   */
  private chunks(records: readonly Uint8Array[], keys: readonly (string | undefined)[] | undefined): Array<[number, number]> {
    const budget = this.options.maxBatchBytes
    const out: Array<[number, number]> = []
    let from = 0
    let bytes = 0
    for (let i = 0; i < records.length; i++) {
      const key = keys?.[i]
      const value = (records[i] as Uint8Array).byteLength
      const keyBytes = key === undefined ? 0 : Buffer.byteLength(key)
      // The record up to maxRecordBytes (what RegionNode sizes its envelopes by), its key within
      // the room kept beside it: together they fit one request.
      if (value > this.maxRecordBytes) {
        throw new TooLargeError(`kafka transport: record ${i} is ${value} bytes, more than the ${this.maxRecordBytes} one produce request holds (maxBatchBytes; brokers' message.max.bytes)`)
      }
      if (keyBytes > MAX_KEY_BYTES) throw new ConfigError(`kafka transport: key ${i} is ${keyBytes} bytes; keys hold at most ${MAX_KEY_BYTES}`)
      const size = value + keyBytes
      if (i > from && bytes + size + RECORD_FRAMING_BYTES > budget) {
        out.push([from, i])
        from = i
        bytes = 0
      }
      bytes += size + RECORD_FRAMING_BYTES
    }
    out.push([from, records.length])
    return out
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
      // Closed while connecting: close() did not see this producer, so it goes here.
      if (this.closed) {
        await producer.disconnect().catch(() => undefined)
        throw new ClosedError('kafka transport was closed while its producer connected')
      }
      return producer
    })()
    this.producer.catch(() => {
      this.producer = undefined
    })
    return this.producer
  }

  /**
   * Creates again, empty, each topic `s` consumes that no longer exists (as an append to it would),
   * so that the restarted consumer fetches its other origins again; and forgets what the reader
   * took from the old one: its offsets start over, and records below the old position would
   * otherwise be skipped as delivered. What the deleted topic held is repaired by the readers'
   * anti-entropy, as after any lost log. One run at a time per session.
   */
  private async recreateMissing(s: Session): Promise<void> {
    if (s.recreating !== undefined || this.closed || s.dropped) return
    s.recreating = (async () => {
      const existing = new Set(await (await this.connectAdmin()).listTopics())
      for (const topic of s.subscribed) {
        if (existing.has(topic) || this.closed || s.dropped) continue
        const o = s.origins.get(topic)
        if (o !== undefined) {
          o.next = undefined
          o.committed = undefined
          o.reset = true
        }
        this.forgetTopic(topic)
        await this.ensureTopic(topic)
      }
    })()
    try {
      await s.recreating
    } finally {
      s.recreating = undefined
    }
  }

  /** Forgets that `topic` exists and drops the admin client that knew it (see append). */
  private forgetTopic(topic: string): void {
    this.topics.delete(topic)
    // A topic created again numbers its offsets from 0: runs remembered from the old one would
    // pass another appender's new records off as ours (skipAppendsOf).
    this.forgetAppended(topic)
    const admin = this.admin
    this.admin = undefined
    admin?.then((a) => a.disconnect()).catch(() => undefined)
  }

  private connectAdmin(): Promise<Admin> {
    this.admin ??= (async () => {
      const admin = this.kafka.admin()
      await admin.connect()
      if (this.closed) {
        await admin.disconnect().catch(() => undefined)
        throw new ClosedError('kafka transport was closed while its admin client connected')
      }
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
        if ((await admin.listTopics()).includes(topic)) return this.checkTopic(admin, topic)
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

  /**
   * Refuses a topic made elsewhere (by hand, by an earlier configuration) with compaction: records
   * are keyed by document, so compaction keeps only each document's last record, and a reader
   * behind loses the rest — the transport refuses `cleanup.policy` other than `delete` for the
   * topics it creates, and used such a topic without a word (review finding). Without the right to
   * describe topic configs (an ACL), the topic is used unchecked.
   */
  private async checkTopic(admin: Admin, topic: string): Promise<void> {
    // One partition: an origin's log is partition 0, in one order. Records appended to a topic
    // made elsewhere with two went to partition 0 while the reader took both partitions' offsets
    // for one log: some acknowledged records were never delivered, positions went back (review
    // finding).
    let partitions: number | undefined
    try {
      partitions = (await admin.fetchTopicMetadata({ topics: [topic] })).topics.find((t) => t.name === topic)?.partitions.length
    } catch (e) {
      if (!isAuthorizationError(e)) throw e
    }
    if (partitions !== undefined && partitions !== 1) {
      throw new ConfigError(`kafka transport: topic ${topic} exists with ${partitions} partitions; Concord needs 1 (an origin's log is one ordered partition). Recreate it with one partition (its records would be read again from the start by every reader), or use another topicPrefix`)
    }
    let policy: string | undefined
    try {
      const described = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: TOPIC_RESOURCE, name: topic, configNames: ['cleanup.policy'] }] })
      policy = described.resources[0]?.configEntries.find((c) => c.configName === 'cleanup.policy')?.configValue
    } catch (e) {
      if (isAuthorizationError(e)) return
      throw e
    }
    if (policy !== undefined && policy.split(',').some((p) => p.trim() === 'compact')) {
      throw new ConfigError(`kafka transport: topic ${topic} exists with cleanup.policy=${policy}; Concord needs "delete" (records are keyed by document: compaction would keep only each document's last record, and a reader behind would lose the rest). Change it with kafka-configs.sh --alter --entity-type topics --entity-name ${topic} --add-config cleanup.policy=delete`)
    }
  }

  private async fetchCommitted(reader: string, origin: string): Promise<bigint | undefined> {
    const topic = topicName(this.options.topicPrefix, origin)
    const admin = await this.connectAdmin()
    const result = await admin.fetchOffsets({ groupId: this.groupId(reader), topics: [topic] })
    const offset = result.find((t) => t.topic === topic)?.partitions.find((p) => p.partition === PARTITION)?.offset
    // -1: none; other negative values are kafkajs's sentinels (it commits -2, "earliest", when it
    // resets an out-of-range position): nothing this reader committed either.
    if (offset === undefined || offset.startsWith('-')) return undefined
    return BigInt(offset)
  }

  private async lowWatermark(topic: string): Promise<bigint | undefined> {
    const admin = await this.connectAdmin()
    const p = (await admin.fetchTopicOffsets(topic)).find((o) => o.partition === PARTITION)
    return p === undefined ? undefined : BigInt(p.low)
  }

  private groupId(reader: string): string {
    if (typeof reader !== 'string' || reader.length === 0) throw new ConfigError('kafka transport: reader must be a non-empty string')
    // A lone surrogate made encodeURIComponent throw a raw URIError; an id past Kafka's string
    // limit failed every call as retriable, for ever (review finding).
    if (!isWellFormedString(reader)) throw new ConfigError('kafka transport: reader is not well-formed UTF-16 (a lone surrogate)')
    const id = `${this.options.groupPrefix}/${encodeURIComponent(reader)}`
    if (Buffer.byteLength(id) > MAX_GROUP_ID_BYTES) throw new ConfigError(`kafka transport: the consumer group id of reader ${JSON.stringify(reader.slice(0, 64))} is ${Buffer.byteLength(id)} bytes; Kafka takes at most ${MAX_GROUP_ID_BYTES}`)
    return id
  }

  /**
   * The session of `reader`, covering at least `origins`. Origins it does not cover yet are added
   * with one re-subscription (stop, subscribe, run: the consumer rejoins its group and resumes from
   * the committed offsets; records buffered meanwhile stay, and `next` drops refetched ones).
   */
  private session(reader: string, origins: readonly string[]): Session {
    const groupId = this.groupId(reader)
    let s = this.sessions.get(reader)
    if (s === undefined) {
      const consumer = this.kafka.consumer({
        groupId,
        sessionTimeout: this.options.sessionTimeoutMs,
        heartbeatInterval: this.options.heartbeatIntervalMs,
        rebalanceTimeout: this.options.rebalanceTimeoutMs,
        maxWaitTimeInMs: this.options.fetchMaxWaitMs,
        allowAutoTopicCreation: false,
      })
      const session: Session = {
        reader,
        consumer,
        origins: new Map(),
        subscribed: new Set(),
        started: Promise.resolve(),
        joined: Promise.resolve(),
        onJoin: () => undefined,
        restarting: false,
        failure: undefined,
        commitQueue: new Map(),
        commitBatch: undefined,
        commitsSent: Promise.resolve(),
        rejoinTimer: undefined,
        renewTimer: undefined,
        renewDelayMs: RENEW_DELAY_MS,
        dropped: false,
        recreating: undefined,
        startedOk: undefined,
      }
      s = session
      consumer.on(consumer.events.GROUP_JOIN, (event) => this.onGroupJoin(session, event.payload.memberAssignment))
      // A crash stops the consumer (kafkajs drops its group) and, when retriable (a broker restart),
      // restarts it: until it has rejoined, commits fail fast as retriable (see commit).
      consumer.on(consumer.events.STOP, () => {
        session.restarting = true
      })
      // A fetched batch of nothing but a transaction's markers and aborted records never reaches
      // eachBatch: kafkajs moves its fetch position past it and only reports it (batchSize 0).
      consumer.on(consumer.events.START_BATCH_PROCESS, (event) => {
        const { topic, partition, batchSize, firstOffset, lastOffset, highWatermark } = event.payload
        const o = session.origins.get(topic)
        if (o === undefined || batchSize !== 0 || partition !== PARTITION || firstOffset == null) return
        // Only a run that starts where the reader is (a batch fetched before a rewind's seek lies
        // past the seek's target, and must not move `next` over the records between them), on the
        // topic the reader knows (eachBatch finds one deleted and created again).
        if (o.next !== undefined && (BigInt(firstOffset) > o.next || BigInt(lastOffset) < o.next || BigInt(highWatermark) < o.next)) return
        this.skipUndelivered(o, BigInt(lastOffset))
      })
      consumer.on(consumer.events.CRASH, (event) => {
        // Restarted: kafkajs's new run forgets the pauses (eachBatch pauses again when a buffer
        // fills; a stale paused flag would keep it from doing so, and the buffer would grow).
        if (event.payload.restart) for (const o of session.origins.values()) o.paused = false
        // Not restarted: the session is dead; release whoever waits for a join or for records.
        if (!event.payload.restart) {
          session.failure = event.payload.error
          session.onJoin()
          for (const o of session.origins.values()) for (const wake of [...o.waiters]) wake()
          this.renewLater(session)
        }
        // An origin's topic deleted under the consumer (an operator, a region rebuilt or
        // decommissioned): kafkajs restarts it every 300 ms into the same error, and every other
        // origin of this reader stopped flowing with it. See recreateMissing.
        if (isUnknownTopicError(event.payload.error)) this.recreateMissing(session).catch(() => undefined)
      })
      this.sessions.set(reader, s)
    }
    const added: string[] = []
    for (const origin of origins) {
      const topic = topicName(this.options.topicPrefix, origin)
      if (s.origins.has(topic)) continue
      s.origins.set(topic, { topic, origin, buffer: [], next: undefined, paused: false, polledAt: Date.now(), committed: undefined, skipSource: undefined, waiters: new Set() })
      added.push(topic)
    }
    if (added.length > 0) {
      const session = s
      // Chained: concurrent additions re-subscribe one after the other, each taking every topic
      // still missing (so the later ones find nothing left to do).
      const started = session.started.catch(() => undefined).then(() => this.resubscribe(session))
      // Observed here so an unawaited failure is not an unhandled rejection; poll() reports it.
      started.catch(() => undefined)
      session.started = started
    }
    return s
  }

  /**
   * A consumer kafkajs did not restart (its crash was not retriable in kafkajs's terms: after a
   * broker restart, "Failed to find group coordinator" while the group's log loads, seen in CI; or
   * kafkajs's own internal failures) is replaced RENEW_DELAY_MS later by a new one over the same
   * origins, unless the cause is the configuration (credentials, authorization), which a new one
   * would meet again. Each renewal in a row without a complete join waits twice as long, up to
   * MAX_RENEW_DELAY_MS: some lasting causes look transient (kafkajs reports a group the client may
   * not use, GROUP_AUTHORIZATION_FAILED, as a bare "Failed to find group coordinator"; review
   * finding: renewed every second for ever). Before, only the reader's next poll did that: a reader that was not polling
   * (a node between rounds, a `watch`er) stayed out of its group, its watchers never called, and a
   * polling one lost that poll to the error. A poll meanwhile still drops the dead session and
   * reports the failure (then this does nothing). Records the dead consumer had fetched but the
   * reader had not committed are delivered again (at least once), as after any new consumer.
   */
  private renewLater(s: Session): void {
    if (this.closed || s.dropped || s.renewTimer !== undefined) return
    if (!(this.fail(s.failure, 'consume') instanceof TransportError)) return
    s.renewTimer = setTimeout(() => {
      s.renewTimer = undefined
      if (this.closed || s.dropped || this.sessions.get(s.reader) !== s) return
      const origins = [...s.origins.values()].map((o) => o.origin)
      this.dropSession(s)
      const next = this.session(s.reader, origins)
      next.renewDelayMs = Math.min(2 * s.renewDelayMs, MAX_RENEW_DELAY_MS)
      // A topic found created again keeps refusing positions from before it (see commit).
      for (const [topic, o] of s.origins) if (o.reset === true) (next.origins.get(topic) as OriginState).reset = true
      // A start that fails too (the broker still down) is tried again the same way: nobody polls
      // to notice it.
      next.started.catch((e: unknown) => {
        next.failure ??= e
        this.renewLater(next)
      })
    }, s.renewDelayMs)
  }

  /**
   * A join: complete when every subscribed topic's partition came with it. A join can leave one out
   * (after a broker restart, a topic whose metadata is not back yet gets no partition from the
   * assignor); a lone member never sees another rebalance, so that topic would never be fetched
   * again. The consumer then joins again, REJOIN_DELAY_MS later, until every topic is assigned.
   */
  private onGroupJoin(s: Session, assignment: Record<string, number[] | undefined>): void {
    // A (re)joined consumer has forgotten its pauses (kafkajs restarted it, or a pause was refused
    // while it had no group): the origins whose buffers are full or idle stay paused from its first fetch.
    for (const o of s.origins.values()) if (o.paused) steer(() => s.consumer.pause([{ topic: o.topic }]))
    if ([...s.subscribed].every((t) => assignment[t]?.includes(PARTITION) === true)) {
      clearTimeout(s.rejoinTimer)
      s.rejoinTimer = undefined
      s.restarting = false
      s.renewDelayMs = RENEW_DELAY_MS
      s.onJoin()
      return
    }
    if (s.rejoinTimer !== undefined || this.closed) return
    s.rejoinTimer = setTimeout(() => {
      s.rejoinTimer = undefined
      if (this.closed || this.sessions.get(s.reader) !== s || s.failure !== undefined) return
      const started = s.started.catch(() => undefined).then(() => this.resubscribe(s, true))
      // Observed here so an unawaited failure is not an unhandled rejection; poll() reports it.
      started.catch(() => undefined)
      s.started = started
    }, REJOIN_DELAY_MS)
  }

  /**
   * Subscribes the consumer to every origin topic not subscribed yet and (re)starts it; with
   * `rejoin`, restarts it even when nothing is missing, so that it joins its group again.
   */
  private async resubscribe(s: Session, rejoin = false): Promise<void> {
    const missing = [...s.origins.keys()].filter((t) => !s.subscribed.has(t))
    if (missing.length === 0 && (!rejoin || s.subscribed.size === 0)) return
    if (this.closed || s.dropped) return
    for (const topic of missing) await this.ensureTopic(topic)
    if (await this.abandoned(s)) return
    const consumer = s.consumer
    if (s.subscribed.size === 0) await consumer.connect()
    else {
      await consumer.stop()
      // kafkajs forgets pauses across a restart; eachBatch pauses again when a buffer fills.
      for (const o of s.origins.values()) o.paused = false
    }
    if (await this.abandoned(s)) return
    // No committed offset yet: start at the beginning of what the log still holds.
    if (missing.length > 0) await consumer.subscribe({ topics: missing, fromBeginning: true })
    if (await this.abandoned(s)) return
    for (const t of missing) s.subscribed.add(t)
    s.joined = new Promise<void>((resolve) => {
      s.onJoin = resolve
    })
    s.restarting = false
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      eachBatch: async ({ batch, resolveOffset, isStale, isRunning, heartbeat }) => {
        const o = s.origins.get(batch.topic)
        // Another partition (one added to the topic later, see checkTopic): not this origin's log.
        if (o === undefined || batch.partition !== PARTITION) return
        // Asked once: the loop below does not yield, so neither can change during it (each call
        // is a lookup keyed by a JSON string in kafkajs, a cost per record otherwise).
        if (!isRunning() || isStale()) return
        const messages = batch.messages
        const first = messages[0]
        const last = messages[messages.length - 1]?.offset
        // The log ends below what this reader already took: the topic was deleted and created
        // again (an operator, or a cluster rebuilt empty). Its offsets start over: without this
        // every record below the old position would be skipped as already delivered.
        if (o.next !== undefined && BigInt(batch.highWatermark) < o.next) {
          o.next = undefined
          o.committed = undefined
          o.reset = true
          // The runs this transport appended to the old topic: another appender's records at
          // those offsets of the new one must not pass for ours.
          this.forgetAppended(o.topic)
        }
        // Offsets grow within a batch: when the first is new, all are (no BigInt per record).
        const allNew = first !== undefined && (o.next === undefined || BigInt(first.offset) >= o.next)
        const own = o.skipSource === undefined ? undefined : this.appended.get(`${o.topic}\u0000${o.skipSource}`)
        let run: string | undefined
        // Records other than the reader's own appends: only those are worth a watch call.
        let fresh = false
        for (const message of messages) {
          if (!allNew && BigInt(message.offset) < (o.next as bigint)) continue
          if (own !== undefined && findRange(own, BigInt(message.offset)) !== undefined) {
            // The reader's own append (fetched before a seek could skip it): one placeholder per run.
            run = message.offset
            if (!allNew) o.next = BigInt(message.offset) + 1n
            continue
          }
          if (run !== undefined) {
            o.buffer.push({ origin: o.origin, position: run, bytes: EMPTY, skipped: true })
            run = undefined
          }
          // A view into the fetch response, no copy (records are read, never written). A plain
          // Uint8Array, not the Buffer: its slice() copies, so whoever keeps a piece (a dead
          // letter) does not pin the whole response.
          const v = message.value
          if (v === null) {
            // One of a batch the codecs could not decompress (see codecs.ts: deadLetters), or a
            // tombstone (another producer's record without a value): not one of ours.
            const undecodable = message.headers?.[UNDECODABLE_HEADER]
            const why =
              undecodable === undefined
                ? 'has no value (a tombstone): not written by a Concord transport'
                : `is in a record batch that could not be decompressed (${String(undecodable)})`
            o.buffer.push({ origin: o.origin, position: message.offset, bytes: EMPTY, invalid: `kafka record at offset ${message.offset} of ${o.topic} ${why}` })
          } else {
            o.buffer.push({ origin: o.origin, position: message.offset, bytes: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) })
          }
          fresh = true
          if (!allNew) o.next = BigInt(message.offset) + 1n
        }
        if (run !== undefined) o.buffer.push({ origin: o.origin, position: run, bytes: EMPTY, skipped: true })
        if (allNew && last !== undefined) o.next = BigInt(last) + 1n
        // The batch ends in records kafkajs leaves out (a transaction's markers, aborted records):
        // every offset from `next` to its end is one of them (see skipUndelivered).
        const end = BigInt(batch.lastOffset())
        if (o.next !== undefined && end >= o.next) this.skipUndelivered(o, end)
        // Resolving moves the fetch position only (autoCommit is off); the last offset covers the
        // batch's earlier ones.
        if (last !== undefined) resolveOffset(last)
        for (const wake of [...o.waiters]) wake()
        if (fresh) this.watchers.notify(s.reader)
        // Pause when the buffer is full, or when it holds records its reader has not asked for
        // lately (an origin polled now and then, like a node's own log while it is alone in its
        // region): no fetching for a reader that is not reading. poll() resumes it.
        // An origin read with skipAppendsOf (a node's own log) is fetched once per poll: the poll
        // seeks past the reader's own appends first, so they are mostly never fetched.
        // Asked of kafkajs whether or not the flag says paused already: a consumer kafkajs restarted
        // (a crash, a rejoin) has forgotten its pauses, and batches of the old run can still come
        // after the flag was reset — a flag taken on trust would let the buffer grow unbounded.
        if (o.skipSource !== undefined || o.buffer.length >= this.options.bufferRecords || (o.buffer.length > 0 && o.waiters.size === 0 && Date.now() - o.polledAt > IDLE_PAUSE_MS)) {
          o.paused = true
          steer(() => consumer.pause([{ topic: o.topic }]))
        }
        await heartbeat()
      },
    })
    // Dropped or closed while joining: kafkajs would keep this consumer running, a member nobody reads.
    await this.abandoned(s)
  }

  /**
   * Whether a (re)start of `s` must stop: the session was dropped or the transport closed meanwhile.
   * Then the consumer is disconnected (again: close() or dropSession() may have run before this
   * start connected or ran it, and kafkajs's stop() does nothing for a consumer still joining).
   */
  private async abandoned(s: Session): Promise<boolean> {
    if (!this.closed && !s.dropped) return false
    await s.consumer.disconnect().catch(() => undefined)
    return true
  }

  /**
   * Calls `listener` whenever the consumer of `reader` has fetched records of an origin it polls
   * (they wait in its buffer for poll()). Works before the reader's first poll: it takes effect
   * once its consumer runs.
   */
  watch(reader: string, listener: () => void): () => void {
    this.check()
    return this.watchers.add(reader, listener)
  }

  /** Forgets the runs appended to `topic` (see skipAppendsOf): the topic was deleted or created again. */
  private forgetAppended(topic: string): void {
    for (const key of [...this.appended.keys()]) if (key.startsWith(`${topic}\u0000`)) this.appended.delete(key)
  }

  /** Remembers offsets `first..last` of `topic` as appended by `source` (for skipAppendsOf). */
  private noteAppended(topic: string, source: string, first: bigint, last: bigint): void {
    const key = `${topic}\u0000${source}`
    let ranges = this.appended.get(key)
    if (ranges === undefined) {
      ranges = []
      this.appended.set(key, ranges)
    }
    const prev = ranges[ranges.length - 1]
    if (prev !== undefined && prev.last + 1n === first) prev.last = last
    else ranges.push({ first, last })
    // Bounded: a forgotten range is only fetched and delivered like any other record.
    if (ranges.length > MAX_APPENDED_RANGES) ranges.splice(0, ranges.length - MAX_APPENDED_RANGES)
  }

  /**
   * Offsets of `o`'s topic up to `last`, from its `next`, that hold nothing a poll delivers: a
   * transactional producer's commit and abort markers, and the records of aborted transactions
   * (kafkajs's default isolation is read-committed: its batches leave them out). They go out as one
   * `skipped` placeholder at `last`, as a run of the reader's own appends does: latest() (the high
   * watermark, less one) can be such a marker's offset, and a reader that reads until it has passed
   * latest() (a node's start-up catch-up, trimStable's indexing) waited for it for ever (review
   * finding); the reader can also commit past them. A placeholder still buffered is replaced (it
   * stands for nothing but skipped offsets either way): a producer that only aborts does not grow
   * the buffer of a reader that is not polling.
   */
  private skipUndelivered(o: OriginState, last: bigint): void {
    if (o.buffer[o.buffer.length - 1]?.skipped === true) o.buffer.pop()
    o.buffer.push({ origin: o.origin, position: String(last), bytes: EMPTY, skipped: true })
    o.next = last + 1n
    for (const wake of [...o.waiters]) wake()
  }

  /**
   * At the end of a poll with skipAppendsOf: when the next offset to read starts a run of the
   * source's appends, delivers one `skipped` record for the run and seeks the consumer past it.
   */
  private skipOwnRun(s: Session, o: OriginState, out: LogRecord[]): void {
    const ranges = this.appended.get(`${o.topic}\u0000${o.skipSource as string}`)
    if (ranges === undefined || o.next === undefined) return
    const r = findRange(ranges, o.next)
    if (r === undefined) return
    out.push({ origin: o.origin, position: String(r.last), bytes: EMPTY, skipped: true })
    o.next = r.last + 1n
    steer(() => s.consumer.seek({ topic: o.topic, partition: PARTITION, offset: String(o.next) }))
  }

  /**
   * Commits `next` for `topic` with the other commits of this reader made in the same turn of the
   * event loop: one OffsetCommit request for all of them (a RegionNode commits every origin of a
   * round together). Each caller learns the outcome of the request that carried its offset.
   */
  private queueCommit(s: Session, topic: string, next: bigint): Promise<void> {
    const queued = s.commitQueue.get(topic)
    if (queued === undefined || next > queued) s.commitQueue.set(topic, next)
    s.commitBatch ??= new Promise<void>((resolve, reject) => {
      setImmediate(() => {
        // One OffsetCommit request of a reader at a time, in order: two in flight could land in
        // the other order, and the committed offset would move backwards.
        const run = s.commitsSent.catch(() => undefined).then(() => this.sendCommits(s))
        s.commitsSent = run
        run.then(resolve, reject)
      })
    })
    return s.commitBatch
  }

  /** Sends the queued commits of `s` (those past what was committed already) as one OffsetCommit request. */
  private sendCommits(s: Session): Promise<void> {
    const entries = [...s.commitQueue].filter(([t, offset]) => {
      const committed = s.origins.get(t)?.committed
      return committed === undefined || offset > committed
    })
    s.commitQueue.clear()
    s.commitBatch = undefined
    if (entries.length === 0) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      // kafkajs resolves commitOffsets without sending anything while its runner stops (a crash
      // being handled, a restart): only offsets it reports committed (its COMMIT_OFFSETS event,
      // emitted once the broker answered) count.
      const sent = new Map<string, string>()
      const stopListening = s.consumer.on(s.consumer.events.COMMIT_OFFSETS, (event) => {
        // The offsets arrive as kafkajs Long objects: compared as decimal strings.
        for (const t of event.payload.topics) for (const p of t.partitions) if (p.partition === PARTITION) sent.set(t.topic, String(p.offset))
      })
      s.consumer.commitOffsets(entries.map(([t, offset]) => ({ topic: t, partition: PARTITION, offset: String(offset) }))).then(
        () => {
          stopListening()
          if (entries.some(([t, offset]) => sent.get(t) !== String(offset))) return reject(rejoining())
          for (const [t, offset] of entries) {
            const o = s.origins.get(t)
            if (o !== undefined && (o.committed === undefined || offset > o.committed)) o.committed = offset
          }
          resolve()
        },
        (e: unknown) => {
          stopListening()
          reject(e)
        },
      )
    })
  }


  /**
   * Announces every origin `reader` will poll: its consumer subscribes to all of their topics at
   * once (one group join) instead of re-subscribing as each origin is first polled.
   */
  async subscribe(reader: string, origins: readonly string[]): Promise<void> {
    this.check()
    // A string is iterable too: 'eu-west' subscribed one topic per character (review finding).
    if (!Array.isArray(origins) || origins.some((o) => typeof o !== 'string')) throw new ConfigError('kafka transport: subscribe takes an array of origin names')
    await this.admitOrigins('subscribe', reader, origins)
    const s = this.session(reader, origins)
    try {
      await this.unlessClosed(s.started)
    } catch (e) {
      this.dropSession(s)
      throw this.fail(e, 'subscribe')
    }
  }

  /**
   * Makes sure the topics of `origins` not yet in `reader`'s session exist and are usable
   * (ensureTopic) before the session takes them: a topic refused there (a compacted one made
   * elsewhere) failed the session's shared start, and the call dropped the consumer of every
   * other origin with it — one such origin polled every round restarted the reader's consumer
   * every round (review finding). Throws without touching the session.
   */
  private async admitOrigins(what: string, reader: string, origins: readonly string[]): Promise<void> {
    const s = this.sessions.get(reader)
    for (const origin of origins) {
      const topic = topicName(this.options.topicPrefix, origin)
      if (s?.origins.has(topic) === true) continue
      try {
        await this.unlessClosed(this.ensureTopic(topic))
      } catch (e) {
        throw this.fail(e, what)
      }
    }
    this.check()
  }

  private dropSession(s: Session): void {
    s.dropped = true
    clearTimeout(s.rejoinTimer)
    clearTimeout(s.renewTimer)
    if (this.sessions.get(s.reader) === s) this.sessions.delete(s.reader)
    s.consumer.disconnect().catch(() => undefined)
  }

  private waitForRecords(s: OriginState, waitMs: number, signal: AbortSignal | undefined): Promise<void> {
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

  /**
   * Waits for `s`'s start for at most `waitMs`, or until `signal` aborts: true once it is done,
   * false while it still runs (it goes on: a later call finds it done). ClosedError when close()
   * begins first; the start's own failure is thrown.
   */
  private async startedWithin(s: Session, waitMs: number, signal: AbortSignal | undefined): Promise<boolean> {
    const p = s.started
    // The usual case, every poll after the first: no timer, no promise (a poll is on the hot path).
    if (s.startedOk === p) return true
    let done = false
    const started = p.then(() => {
      done = true
      s.startedOk = p
    })
    let timer: NodeJS.Timeout | undefined
    let onAbort: (() => void) | undefined
    try {
      await this.unlessClosed(
        Promise.race([
          started,
          new Promise<void>((resolve) => {
            timer = setTimeout(resolve, waitMs)
            onAbort = () => resolve()
            if (signal?.aborted === true) resolve()
            else signal?.addEventListener('abort', onAbort, { once: true })
          }),
        ]),
      )
    } finally {
      clearTimeout(timer)
      if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort)
    }
    // A start that failed after the wait ended is reported by the next call.
    started.catch(() => undefined)
    return done
  }

  /**
   * Waits for `s`'s start and group join, joinTimeoutMs at most in all (then a retriable
   * TransportError; the join goes on). A start that failed drops the session, so that the next
   * call starts a new consumer: its error is retriable, and a session kept gave every later commit
   * and rewind the same stale failure, though the broker was back (review finding).
   */
  private async joinedWithin(s: Session): Promise<void> {
    const until = Date.now() + this.options.joinTimeoutMs
    let started = false
    try {
      await this.withTimeout(
        this.unlessClosed(s.started).then(() => {
          started = true
        }),
        this.options.joinTimeoutMs,
        'joining the consumer group',
      )
    } catch (e) {
      // Not a timeout (the start still runs) nor a close: the start itself failed.
      if (!started && !this.closed && !(e instanceof JoinTimeout)) this.dropSession(s)
      throw e
    }
    await this.withTimeout(s.joined, Math.max(1, until - Date.now()), 'joining the consumer group')
  }

  /**
   * Waits for `p` — a consumer's start, which lasts as long as its group join (a join can wait out
   * a crashed member's session) — unless close() begins first: then ClosedError at once.
   */
  private async unlessClosed<T>(p: Promise<T>): Promise<T> {
    let release: (() => void) | undefined
    // A promise per call, dropped after it (one kept for the transport's life would collect a
    // reaction per poll).
    const closed = new Promise<typeof CLOSED>((resolve) => {
      release = () => resolve(CLOSED)
      this.closeWaiters.add(release)
    })
    let out: T | typeof CLOSED
    try {
      out = await Promise.race([p, closed])
    } finally {
      this.closeWaiters.delete(release as () => void)
    }
    this.check()
    return out as T
  }

  private async withTimeout(p: Promise<void>, ms: number, what: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        p,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new JoinTimeout(`kafka transport: timed out after ${ms} ms ${what}`)), ms)
        }),
      ])
    } finally {
      clearTimeout(timer)
    }
  }
}

/** What {@link KafkaTransport.withTimeout} throws: a TransportError (retriable) the transport tells from others. */
class JoinTimeout extends TransportError {
  constructor(message: string) {
    super(message)
    this.name = 'TransportError'
  }
}

/** A commit refused while kafkajs restarts a crashed consumer: retriable, the rejoin is not waited for. */
function rejoining(cause?: unknown): TransportError {
  return new TransportError('kafka transport: commit failed: the consumer is rejoining its group after a crash', { cause, retriable: true })
}

