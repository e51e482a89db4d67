/**
 * Options of {@link RedisTransport}, with their defaults beside them.
 */
import { Cluster, Redis, type RedisOptions } from 'ioredis'
import { ConfigError, checkKnownOptions } from '@concord/core'

/** Options for {@link RedisTransport}. Every field is optional. */
export interface RedisTransportOptions {
  /**
   * How to reach Redis: a URL, ioredis options (TLS, auth, retryStrategy, sentinels... pass through
   * unchanged), or an existing `Redis`/`Cluster` client. A client passed in is borrowed: `close()`
   * leaves it open. Blocking reads always use dedicated connections duplicated from it.
   * @default 'redis://127.0.0.1:6379'
   */
  readonly redis?: string | RedisOptions | Redis | Cluster
  /**
   * Prefix of every key. It must contain a Redis Cluster hash tag (`{...}`) so that an origin's
   * stream and its committed positions live in the same slot (commit updates both in one script).
   * Keys: `<prefix>:log:<origin>` (the stream), `<prefix>:committed:<origin>` (hash reader → position).
   * @default '{concord}'
   */
  readonly keyPrefix?: string
  /**
   * Consumer name inside each reader's consumer group. A reader is read by one process at a time
   * (a RegionNode's reader is its writer id, one per process): a commit acknowledges every entry
   * of the reader's group up to its position, whichever consumer it was delivered to, so two
   * processes reading as one reader would acknowledge each other's unapplied entries.
   * @default 'concord'
   */
  readonly consumer?: string
  /**
   * Entries pending (delivered, not committed) on another consumer of the reader's group for at
   * least this long are claimed (XPENDING IDLE, then XCLAIM) and delivered again: their consumer
   * is presumed dead. A consumer's own pending entries are never claimed back by itself.
   * @default 60_000
   */
  readonly claimMinIdleMs?: number
  /** Least time between two claim sweeps of one reader's origin. @default 5_000 */
  readonly claimIntervalMs?: number
  /**
   * After each append, WAIT until this many replicas acknowledged the writes; fewer within
   * {@link RedisTransportOptions.waitTimeoutMs} fails the append with a retriable TransportError.
   * @default 0
   */
  readonly waitReplicas?: number
  /** Timeout of that WAIT. @default 1_000 */
  readonly waitTimeoutMs?: number
  /** Clock in ms, used to schedule claim sweeps. @default Date.now */
  readonly now?: () => number
  /**
   * Store each record's key (`append(..., { keys })`, the document id for a RegionNode) as entry
   * field `k` beside the bytes, for tools reading the stream. Off by default: nothing in Concord
   * reads it (a stream is one ordered log, keys do not route), and every reader would parse it.
   * @default false
   */
  readonly storeKeys?: boolean
  /**
   * Longest wait for a server's answer beyond what a command itself asks for: a poll fails (with a
   * retriable TransportError, its connection dropped) after its `waitMs` plus this, and on a client
   * the transport creates, every other command after this (ioredis `commandTimeout`; WAIT gets
   * `waitTimeoutMs` more). Without it a server that stops answering without closing its
   * connections (a paused VM, a partition) would hold polls, commits and close() for ever — and a
   * RegionNode reads every region's log together, so one such region would stall the others.
   * @default 5_000
   */
  readonly commandTimeoutMs?: number
}

/** Options with every default applied. */
export interface ResolvedRedisTransportOptions {
  readonly redis: string | RedisOptions | Redis | Cluster
  readonly keyPrefix: string
  readonly consumer: string
  readonly claimMinIdleMs: number
  readonly claimIntervalMs: number
  readonly waitReplicas: number
  readonly waitTimeoutMs: number
  readonly now: () => number
  readonly storeKeys: boolean
  readonly commandTimeoutMs: number
}

/** The defaults, as documented on {@link RedisTransportOptions}. */
export const REDIS_TRANSPORT_DEFAULTS = {
  redis: 'redis://127.0.0.1:6379',
  keyPrefix: '{concord}',
  consumer: 'concord',
  claimMinIdleMs: 60_000,
  claimIntervalMs: 5_000,
  waitReplicas: 0,
  waitTimeoutMs: 1_000,
  commandTimeoutMs: 5_000,
} as const

/**
 * Longest timeout option (ms, about 12 days). Node runs a timer of more than 2^31 - 1 ms after
 * 1 ms instead, and these timeouts are added to others (a poll's waitMs, WAIT's timeout) before
 * they become one: each is kept at half of that.
 */
export const MAX_TIMEOUT_MS = 2 ** 30

/** `value` as a timeout option: an integer of ms from `min` to {@link MAX_TIMEOUT_MS}. */
export function timeoutMs(what: string, name: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_TIMEOUT_MS) {
    throw new ConfigError(`${what}: ${name} must be an integer number of ms from ${min} to ${MAX_TIMEOUT_MS}, got ${String(value)}`)
  }
  return value
}

/** Most replicas `waitReplicas` may name: WAIT refuses a count past a signed 32-bit integer (after the write). */
export const MAX_WAIT_REPLICAS = 2 ** 31 - 1

/** `value` as a `waitReplicas` option: an integer from 0 to {@link MAX_WAIT_REPLICAS}. */
export function replicaCount(what: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_WAIT_REPLICAS) {
    throw new ConfigError(`${what}: waitReplicas must be an integer from 0 to ${MAX_WAIT_REPLICAS}, got ${String(value)}`)
  }
  return value
}

/** True when `prefix` holds a Redis Cluster hash tag: a `{`, then a non-empty run up to the next `}`. */
export function hasHashTag(prefix: string): boolean {
  const open = prefix.indexOf('{')
  if (open < 0) return false
  const close = prefix.indexOf('}', open + 1)
  return close > open + 1
}

/** Every option (the compiler keeps this in step with the interface). */
const OPTION_KEYS: Record<keyof RedisTransportOptions, true> = {
  redis: true,
  keyPrefix: true,
  consumer: true,
  claimMinIdleMs: true,
  claimIntervalMs: true,
  waitReplicas: true,
  waitTimeoutMs: true,
  now: true,
  storeKeys: true,
  commandTimeoutMs: true,
}

/** Applies defaults and validates; throws ConfigError on bad options. */
export function resolveOptions(options: RedisTransportOptions): ResolvedRedisTransportOptions {
  if (typeof options !== 'object' || options === null) throw new ConfigError('redis transport: options must be an object')
  checkKnownOptions('redis transport', options, Object.keys(OPTION_KEYS))
  const d = REDIS_TRANSPORT_DEFAULTS
  const keyPrefix = options.keyPrefix ?? d.keyPrefix
  if (typeof keyPrefix !== 'string' || !hasHashTag(keyPrefix)) {
    throw new ConfigError(`redis transport: keyPrefix ${JSON.stringify(keyPrefix)} needs a hash tag such as '{concord}'`)
  }
  const consumer = options.consumer ?? d.consumer
  if (typeof consumer !== 'string' || consumer.length === 0) throw new ConfigError('redis transport: consumer must be a non-empty string')
  const redis: unknown = options.redis ?? d.redis
  checkRedisTarget('redis transport', redis)
  checkNoClientKeyPrefix('redis transport', redis)
  if (options.now !== undefined && typeof options.now !== 'function') throw new ConfigError('redis transport: now must be a function')
  if (options.storeKeys !== undefined && typeof options.storeKeys !== 'boolean') throw new ConfigError('redis transport: storeKeys must be a boolean')
  const waitReplicas = replicaCount('redis transport', options.waitReplicas ?? d.waitReplicas)
  const waitTimeoutMs = timeoutMs('redis transport', 'waitTimeoutMs', options.waitTimeoutMs ?? d.waitTimeoutMs, 0)
  // WAIT n 0 blocks until n replicas acknowledge, for ever.
  if (waitReplicas > 0 && waitTimeoutMs < 1) throw new ConfigError('redis transport: waitTimeoutMs must be at least 1 with waitReplicas (WAIT with 0 waits for ever)')
  return {
    redis: options.redis ?? d.redis,
    keyPrefix,
    consumer,
    // Bounded as timeouts: XPENDING and XCLAIM refuse an idle time past 2^63 - 1 (every poll failed, for
    // good), and an interval of 1e300 ms turned claiming off without a word.
    claimMinIdleMs: timeoutMs('redis transport', 'claimMinIdleMs', options.claimMinIdleMs ?? d.claimMinIdleMs, 0),
    claimIntervalMs: timeoutMs('redis transport', 'claimIntervalMs', options.claimIntervalMs ?? d.claimIntervalMs, 0),
    waitReplicas,
    waitTimeoutMs,
    now: options.now ?? Date.now,
    storeKeys: options.storeKeys ?? false,
    commandTimeoutMs: timeoutMs('redis transport', 'commandTimeoutMs', options.commandTimeoutMs ?? d.commandTimeoutMs, 1),
  }
}

/**
 * Refuses ioredis's own `keyPrefix` (in options or on a client passed in): ioredis prefixes only the
 * keys of commands whose key positions it knows, and XGROUP is not one of them — the consumer
 * groups would be made on other keys than the streams, and every read would fail with NOGROUP.
 * Concord's `keyPrefix` option prefixes every key. @throws ConfigError
 */
export function checkNoClientKeyPrefix(what: string, redis: unknown): void {
  const o = redis as { keyPrefix?: unknown; options?: { keyPrefix?: unknown; redisOptions?: { keyPrefix?: unknown } } }
  const prefix = o.keyPrefix ?? o.options?.keyPrefix ?? o.options?.redisOptions?.keyPrefix
  if (typeof prefix === 'string' && prefix.length > 0) {
    throw new ConfigError(`${what}: ioredis's keyPrefix (${JSON.stringify(prefix)}) is not supported — it leaves some commands' keys unprefixed; use Concord's keyPrefix option instead`)
  }
}

/**
 * The `redis` option: a URL (redis:// or rediss://, a host:port, a unix socket path), ioredis
 * options (a plain object), or a Redis/Cluster client. Refused (review finding): an empty string
 * (an unset environment variable), an array or any other object, each of which ioredis took for
 * "localhost:6379"; a URL of another scheme (`http://host:6379` became a unix socket path, failing
 * every call as retriable for ever). @throws ConfigError
 */
export function checkRedisTarget(what: string, redis: unknown): void {
  const expected = 'a redis:// or rediss:// URL, ioredis options or a Redis/Cluster client'
  if (typeof redis === 'string') {
    if (redis.trim().length === 0) throw new ConfigError(`${what}: redis is an empty string; expected ${expected}`)
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(redis)?.[1]
    if (scheme !== undefined && !/^rediss?$/i.test(scheme)) throw new ConfigError(`${what}: redis URL scheme ${JSON.stringify(`${scheme}://`)} is not one of redis:// and rediss://`)
    return
  }
  if (typeof redis !== 'object' || redis === null || Array.isArray(redis)) throw new ConfigError(`${what}: redis must be ${expected}`)
  if (redis instanceof Redis || redis instanceof Cluster) return
  const proto: unknown = Object.getPrototypeOf(redis)
  if (proto !== Object.prototype && proto !== null) {
    throw new ConfigError(`${what}: redis must be ${expected}, not a ${(redis as object).constructor?.name ?? 'class instance'} (a client made by another copy of ioredis is not this copy's: pass its options instead)`)
  }
}

/** Why `waitReplicas` is refused with a Cluster client (RedisTransport, RedisStore). */
export const WAIT_ON_CLUSTER =
  'waitReplicas needs a single Redis server (with its replicas), not a Cluster client: WAIT has no key, so ioredis sends it to a random master, which cannot vouch for writes made on another'
