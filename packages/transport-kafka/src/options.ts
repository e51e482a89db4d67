/**
 * Options of {@link KafkaTransport}, with their defaults beside them.
 */
import type { Kafka, KafkaConfig } from 'kafkajs'
import { ConfigError, MAX_POLL_WAIT_MS, checkKnownOptions } from '@concord/core'

/** Options for {@link KafkaTransport}. Every field is optional. */
export interface KafkaTransportOptions {
  /**
   * How to reach Kafka: a kafkajs client config (brokers, `ssl`, `sasl`, clientId, retry... pass
   * through unchanged) or an existing kafkajs `Kafka` instance.
   * @default { clientId: 'concord', brokers: ['127.0.0.1:9092'] }
   */
  readonly kafka?: KafkaConfig | Kafka
  /** Topics are `<topicPrefix>.<origin>`, one partition each. @default 'concord' */
  readonly topicPrefix?: string
  /** One consumer group per reader, `<groupPrefix>/<reader>` (reader URI-encoded). @default 'concord' */
  readonly groupPrefix?: string
  /** Replication factor of topics the transport creates; -1 takes the broker's default. @default -1 */
  readonly replicationFactor?: number
  /**
   * Extra configs of topics the transport creates. Time and size retention are off by default:
   * records leave the log only through {@link KafkaTransport.trim}, below the stability frontier.
   * @default { 'retention.ms': '-1', 'retention.bytes': '-1' }
   */
  readonly topicConfig?: Readonly<Record<string, string>>
  /** Records buffered per reader and origin before the consumer pauses fetching. @default 1024 */
  readonly bufferRecords?: number
  /** Consumer group session timeout. @default 30_000 */
  readonly sessionTimeoutMs?: number
  /** Consumer heartbeat interval. @default 3_000 */
  readonly heartbeatIntervalMs?: number
  /**
   * Consumer group rebalance timeout: how long a join waits for the group's other members to
   * rejoin. A reader's group has one live member; a member left behind by a process that crashed
   * (or by a broker restart, after which kafkajs rejoins as a new member) holds every join back
   * until this passes, or its session times out if that comes first: with kafkajs's 60 s default,
   * 30 s without replication into the region after each restart. At least heartbeatIntervalMs +
   * fetchMaxWaitMs + 1 s (the time a live member takes to notice a rebalance and rejoin).
   * @default 10_000
   */
  readonly rebalanceTimeoutMs?: number
  /** How long commit() waits for the consumer to join its group. @default 30_000 */
  readonly joinTimeoutMs?: number
  /**
   * Longest time the broker holds an idle fetch. Records are returned as soon as they arrive; this
   * bounds how long closing a consumer waits for its outstanding fetch.
   * @default 1_000
   */
  readonly fetchMaxWaitMs?: number
  /**
   * Most bytes (record values and keys) in one produce request. A broker refuses a record batch
   * past its `message.max.bytes` (default 1,048,588; a topic's `max.message.bytes` can lower it),
   * so an append past this goes out as several requests, and a single record that does not fit
   * one is refused with a TooLargeError (`maxRecordBytes` = this minus room for a key and the
   * batch's framing). Raise it only together with those broker and topic settings.
   * @default 1_000_000
   */
  readonly maxBatchBytes?: number
}

/** Options with every default applied. */
export interface ResolvedKafkaTransportOptions {
  readonly kafka: KafkaConfig | Kafka
  readonly topicPrefix: string
  readonly groupPrefix: string
  readonly replicationFactor: number
  readonly topicConfig: Readonly<Record<string, string>>
  readonly bufferRecords: number
  readonly sessionTimeoutMs: number
  readonly heartbeatIntervalMs: number
  readonly rebalanceTimeoutMs: number
  readonly joinTimeoutMs: number
  readonly fetchMaxWaitMs: number
  readonly maxBatchBytes: number
}

/** The defaults, as documented on {@link KafkaTransportOptions}. */
export const KAFKA_TRANSPORT_DEFAULTS = {
  kafka: { clientId: 'concord', brokers: ['127.0.0.1:9092'] },
  topicPrefix: 'concord',
  groupPrefix: 'concord',
  replicationFactor: -1,
  topicConfig: { 'retention.ms': '-1', 'retention.bytes': '-1' },
  bufferRecords: 1024,
  sessionTimeoutMs: 30_000,
  heartbeatIntervalMs: 3_000,
  rebalanceTimeoutMs: 10_000,
  joinTimeoutMs: 30_000,
  fetchMaxWaitMs: 1_000,
  maxBatchBytes: 1_000_000,
} as const

const TOPIC_CHARS = /^[a-zA-Z0-9._-]+$/
/** Kafka's limit on a topic name's length. */
const MAX_TOPIC_CHARS = 249

/**
 * Room a record needs in a produce request beside its value: its key (a document id, at most 1 KiB
 * as RegionNode checks them) and framing (the record's varints and attributes, the batch header).
 */
export const RECORD_ROOM_BYTES = 2048

function atLeast(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) throw new ConfigError(`kafka transport: ${name} must be an integer >= ${min}, got ${value}`)
  return value
}

function positiveInteger(name: string, value: number): number {
  return atLeast(name, value, 1)
}

/** Every option (the compiler keeps this in step with the interface). */
const OPTION_KEYS: Record<keyof KafkaTransportOptions, true> = {
  kafka: true,
  topicPrefix: true,
  groupPrefix: true,
  replicationFactor: true,
  topicConfig: true,
  bufferRecords: true,
  sessionTimeoutMs: true,
  heartbeatIntervalMs: true,
  rebalanceTimeoutMs: true,
  joinTimeoutMs: true,
  fetchMaxWaitMs: true,
  maxBatchBytes: true,
}

/** Applies defaults and validates; throws ConfigError on bad options. */
export function resolveOptions(options: KafkaTransportOptions): ResolvedKafkaTransportOptions {
  if (typeof options !== 'object' || options === null) throw new ConfigError('kafka transport: options must be an object')
  checkKnownOptions('kafka transport', options, Object.keys(OPTION_KEYS))
  const d = KAFKA_TRANSPORT_DEFAULTS
  const topicPrefix = options.topicPrefix ?? d.topicPrefix
  if (typeof topicPrefix !== 'string' || !TOPIC_CHARS.test(topicPrefix)) throw new ConfigError(`kafka transport: topicPrefix ${JSON.stringify(topicPrefix)} may only hold [a-zA-Z0-9._-]`)
  // A topic is `<prefix>.<origin>`, at most 249 characters: room for one character of origin at least.
  if (topicPrefix.length > MAX_TOPIC_CHARS - 2) throw new ConfigError(`kafka transport: topicPrefix is ${topicPrefix.length} characters; topic names hold at most ${MAX_TOPIC_CHARS}, prefix and origin together`)
  const groupPrefix = options.groupPrefix ?? d.groupPrefix
  if (typeof groupPrefix !== 'string' || groupPrefix.length === 0) throw new ConfigError('kafka transport: groupPrefix must be a non-empty string')
  const topicConfig: unknown = options.topicConfig ?? {}
  if (typeof topicConfig !== 'object' || topicConfig === null || Array.isArray(topicConfig) || !Object.values(topicConfig).every((v) => typeof v === 'string')) {
    throw new ConfigError('kafka transport: topicConfig must be an object of topic settings to string values')
  }
  // Records are keyed by document: a compacted topic would keep only each document's last record
  // (the log must keep every one until readers committed past it) and refuses unkeyed control records.
  const policy = (topicConfig as Record<string, string>)['cleanup.policy']
  if (policy !== undefined && policy !== 'delete') throw new ConfigError(`kafka transport: topicConfig cleanup.policy must be "delete" (Concord trims below what every reader committed), got ${JSON.stringify(policy)}`)
  const kafka: unknown = options.kafka
  if (kafka !== undefined && !(typeof kafka === 'object' && kafka !== null)) throw new ConfigError('kafka transport: kafka must be a Kafka client or kafkajs options')
  // kafkajs options (not a client): the brokers, checked here, or the first connection fails with a
  // retriable-looking error much later (a missing port makes kafkajs try port NaN).
  if (kafka !== undefined && typeof (kafka as { producer?: unknown }).producer !== 'function') {
    const brokers = (kafka as { brokers?: unknown }).brokers
    // A port past 65535 passed the pattern, then every call failed with a retriable error (review finding).
    const port = (b: string): number => Number(b.slice(b.lastIndexOf(':') + 1))
    const ok =
      typeof brokers === 'function' ||
      (Array.isArray(brokers) && brokers.length > 0 && brokers.every((b) => typeof b === 'string' && /^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:.]+\]:\d{1,5}$/.test(b) && port(b) >= 1 && port(b) <= 65535))
    if (!ok) throw new ConfigError(`kafka transport: kafka.brokers must be a non-empty array of "host:port" strings (or a function returning one), got ${JSON.stringify(brokers)}`)
  }
  const replicationFactor = options.replicationFactor ?? d.replicationFactor
  if (!Number.isInteger(replicationFactor) || (replicationFactor < 1 && replicationFactor !== -1) || replicationFactor > 32_767) {
    throw new ConfigError(`kafka transport: replicationFactor must be -1 or an integer from 1 to 32767, got ${replicationFactor}`)
  }
  const sessionTimeoutMs = timerMs('sessionTimeoutMs', options.sessionTimeoutMs ?? d.sessionTimeoutMs)
  const heartbeatIntervalMs = timerMs('heartbeatIntervalMs', options.heartbeatIntervalMs ?? d.heartbeatIntervalMs)
  // kafkajs refuses a consumer otherwise, at its first use (a poll), with an untyped error.
  if (heartbeatIntervalMs >= sessionTimeoutMs) throw new ConfigError(`kafka transport: heartbeatIntervalMs (${heartbeatIntervalMs}) must be lower than sessionTimeoutMs (${sessionTimeoutMs})`)
  const fetchMaxWaitMs = timerMs('fetchMaxWaitMs', options.fetchMaxWaitMs ?? d.fetchMaxWaitMs)
  const rebalanceTimeoutMs = timerMs('rebalanceTimeoutMs', options.rebalanceTimeoutMs ?? d.rebalanceTimeoutMs)
  // A live member must notice a rebalance (a heartbeat), end its fetch and rejoin within it, or it
  // is put out of its own group and the join starts again.
  const leastRebalance = heartbeatIntervalMs + fetchMaxWaitMs + 1000
  if (rebalanceTimeoutMs < leastRebalance) {
    throw new ConfigError(`kafka transport: rebalanceTimeoutMs (${rebalanceTimeoutMs}) must be at least heartbeatIntervalMs + fetchMaxWaitMs + 1000 (${leastRebalance})`)
  }
  // A topic created with a smaller record-batch limit than the batches this transport sends would
  // refuse them (and a record near maxBatchBytes for good): the batches follow the topic's limit.
  const topicMax = (topicConfig as Record<string, string>)['max.message.bytes']
  let maxBatchBytes = options.maxBatchBytes ?? d.maxBatchBytes
  if (topicMax !== undefined) {
    const limit = /^[1-9][0-9]{0,9}$/.test(topicMax) ? Number(topicMax) : Number.NaN
    if (!Number.isSafeInteger(limit)) throw new ConfigError(`kafka transport: topicConfig max.message.bytes must be a positive integer, got ${JSON.stringify(topicMax)}`)
    if (options.maxBatchBytes === undefined) {
      // Named as the user gave it (review finding: the error named maxBatchBytes, which they never set).
      if (limit < 2 * RECORD_ROOM_BYTES) throw new ConfigError(`kafka transport: topicConfig max.message.bytes must be at least ${2 * RECORD_ROOM_BYTES} (a produce request must hold a record of an envelope's size), got ${limit}`)
      maxBatchBytes = Math.min(maxBatchBytes, limit)
    } else if (options.maxBatchBytes > limit) {
      throw new ConfigError(`kafka transport: maxBatchBytes (${options.maxBatchBytes}) is past topicConfig max.message.bytes (${limit}): the topics would refuse such batches`)
    }
  }
  return {
    kafka: options.kafka ?? { clientId: d.kafka.clientId, brokers: [...d.kafka.brokers] },
    topicPrefix,
    groupPrefix,
    replicationFactor,
    topicConfig: { ...d.topicConfig, ...(topicConfig as Record<string, string>) },
    bufferRecords: positiveInteger('bufferRecords', options.bufferRecords ?? d.bufferRecords),
    sessionTimeoutMs,
    heartbeatIntervalMs,
    rebalanceTimeoutMs,
    joinTimeoutMs: timerMs('joinTimeoutMs', options.joinTimeoutMs ?? d.joinTimeoutMs),
    fetchMaxWaitMs,
    maxBatchBytes: atLeast('maxBatchBytes', maxBatchBytes, 2 * RECORD_ROOM_BYTES),
  }
}

/**
 * {@link positiveInteger} for a time used as a timer or a broker wait: at most the longest timer
 * Node keeps (2^31 - 1 ms, core's MAX_POLL_WAIT_MS): a longer one fires at once, and kafkajs refuses such waits.
 */
function timerMs(name: string, value: number): number {
  const v = positiveInteger(name, value)
  if (v > MAX_POLL_WAIT_MS) throw new ConfigError(`kafka transport: ${name} must be at most ${MAX_POLL_WAIT_MS} ms, got ${v}`)
  return v
}

/** The topic of `origin`; throws ConfigError when the name is not a valid Kafka topic. */
export function topicName(prefix: string, origin: string): string {
  const topic = `${prefix}.${origin}`
  if (origin.length === 0 || !TOPIC_CHARS.test(origin) || topic.length > MAX_TOPIC_CHARS) {
    throw new ConfigError(`kafka transport: origin ${JSON.stringify(origin)} does not make a valid topic name ([a-zA-Z0-9._-], at most ${MAX_TOPIC_CHARS} chars in all)`)
  }
  return topic
}
