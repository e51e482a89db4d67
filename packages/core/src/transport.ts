/**
 * The Transport contract: a durable log per origin, ordered per origin, read by every other
 * region with a committed position. MemoryTransport, Redis Streams and Kafka implement it, and one
 * contract suite in `@concord/testing` checks all of them.
 */

import { ConfigError } from './errors.js'
import { callListeners } from './replica.js'

/** Position of a record in one origin's log. Opaque; order with {@link Transport.comparePositions}. */
export type LogPosition = string

/** One record read from a log. */
export interface LogRecord {
  /** The log (origin region) it was read from. */
  readonly origin: string
  readonly position: LogPosition
  readonly bytes: Uint8Array
  /**
   * Set on a record that stands for a run of records left out — under
   * {@link PollOptions.skipAppendsOf}, or positions of the log that hold nothing to deliver (Kafka's
   * transaction markers and aborted records): `bytes` is empty and `position` is the run's last, so
   * the reader can reach the log's latest position and commit past the run.
   */
  readonly skipped?: true
  /**
   * Set by a transport on a record that cannot be one of Concord's whatever its bytes (a Redis
   * stream entry without the record field, a Kafka record without a value): why, for the
   * reader's DecodeError and dead letter. `bytes` is then empty.
   */
  readonly invalid?: string
}

/** Options for {@link Transport.poll}. */
export interface PollOptions {
  /** Most records returned. @default 256 */
  readonly max?: number
  /** How long to wait for a record when none is ready. @default 0 */
  readonly waitMs?: number
  /** Aborts a waiting poll. */
  readonly signal?: AbortSignal
  /**
   * A hint: records this transport object appended with this `source` ({@link AppendOptions.source})
   * need not be delivered — the reader has them already (a node reading its own region's log). A
   * transport that honours it delivers each run of them as one record marked `skipped`, and may
   * not fetch them at all (Kafka seeks past them); others ignore it. Records of other appenders,
   * and of other transport objects, are always delivered.
   */
  readonly skipAppendsOf?: string
}

/** Options for {@link Transport.append}. */
export interface AppendOptions {
  /**
   * A key per record, parallel to `records` (usually the document id). Transports that key their
   * messages use it (Kafka message key, a Redis entry field); others ignore it. @default no keys
   */
  readonly keys?: readonly (string | undefined)[]
  /** Who appends (a node passes its writer id), for {@link PollOptions.skipAppendsOf}. @default none */
  readonly source?: string
}

/** A durable, per-origin ordered log between regions. */
export interface Transport {
  /** Transport name, for metrics and errors: `memory`, `redis`, `kafka`. */
  readonly name: string
  /**
   * Optional. The largest record (bytes) the log takes; a larger one is refused by `append` with a
   * TooLargeError, appending nothing. RegionNode sends no envelope past it (nor past its own
   * maxEnvelopeBytes). Kafka has one (its brokers' `message.max.bytes`); absent, no limit but
   * memory's.
   */
  readonly maxRecordBytes?: number
  /** Appends records to `origin`'s log; resolves with their positions once durable. */
  append(origin: string, records: readonly Uint8Array[], options?: AppendOptions): Promise<readonly LogPosition[]>
  /**
   * Reads `origin`'s log for consumer `reader`, after the last record delivered to it (initially
   * after its committed position). Redelivers uncommitted records after {@link Transport.rewind}.
   */
  poll(reader: string, origin: string, options?: PollOptions): Promise<readonly LogRecord[]>
  /**
   * Optional. Announces every origin `reader` is going to poll, before its first poll. Transports
   * that read several origins through one consumer (Kafka: one consumer group per reading region)
   * subscribe to all of them at once instead of re-subscribing as each origin is first polled.
   * Polling an origin that was not announced still works.
   */
  subscribe?(reader: string, origins: readonly string[]): Promise<void>
  /**
   * Optional. Calls `listener` when records may have become ready for `reader` on an origin it
   * polls: a hint to poll now, never a delivery (a call may find nothing, and records appended
   * elsewhere may arrive without one). Lets a reading loop sleep until then instead of waking on a
   * timer only. Returns a function that removes the listener. Memory, Redis and Kafka implement
   * it; a transport need not (RegionNode then reads on its poll timer).
   */
  watch?(reader: string, listener: () => void): () => void
  /** Records that `reader` has durably applied everything up to and including `position`. */
  commit(reader: string, origin: string, position: LogPosition): Promise<void>
  /** The committed position of `reader` on `origin`, if any. */
  committed(reader: string, origin: string): Promise<LogPosition | undefined>
  /** Moves `reader`'s delivery cursor back to its committed position (after a crash or a failed apply). */
  rewind(reader: string, origin: string): Promise<void>
  /** First position still held by `origin`'s log (earlier ones were trimmed), if any. */
  earliest(origin: string): Promise<LogPosition | undefined>
  /**
   * Optional. Position of the last record in `origin`'s log now, if it holds any. A reader that
   * must read everything written before some point (RegionNode's start-up catch-up with its own
   * log) reads until it has passed this position. Without it, such a reader stops at the first
   * poll that comes back empty — which is the end of the log only for a transport whose polls
   * return what the log holds. A transport that reads ahead in the background (Kafka: records are
   * fetched beside the polls, so the first polls after a subscribe find nothing yet) must have it.
   */
  latest?(origin: string): Promise<LogPosition | undefined>
  /** Removes records of `origin` strictly before `position`. Only call below the stability frontier. */
  trim(origin: string, before: LogPosition): Promise<void>
  /** Orders two positions of the same log: negative, zero or positive. */
  comparePositions(a: LogPosition, b: LogPosition): number
  /** Releases connections. Further calls throw ClosedError. */
  close(): Promise<void>
}

/**
 * The listeners of {@link Transport.watch}, by reader: for transports that implement it. Each
 * `add` registers its own entry, so the same listener added twice is removed once per removal.
 */
export class WatchListeners {
  private readonly byReader = new Map<string, Set<() => void>>()

  /** Adds `listener` for `reader`; returns its removal, which runs `onLast` if it was the reader's last. */
  add(reader: string, listener: () => void, onLast?: () => void): () => void {
    let set = this.byReader.get(reader)
    if (set === undefined) {
      set = new Set()
      this.byReader.set(reader, set)
    }
    const entry = (): void => listener()
    set.add(entry)
    return () => {
      const current = this.byReader.get(reader)
      if (current === undefined || !current.delete(entry) || current.size > 0) return
      this.byReader.delete(reader)
      onLast?.()
    }
  }

  /** Whether `reader` has a listener. */
  has(reader: string): boolean {
    return this.byReader.has(reader)
  }

  /** Calls every listener of `reader`. */
  notify(reader: string): void {
    const set = this.byReader.get(reader)
    if (set !== undefined) callListeners(`watch ${reader}`, [...set], undefined, undefined)
  }

  /** Removes every listener (a closed transport). */
  clear(): void {
    this.byReader.clear()
  }
}

/** Longest `waitMs` a poll takes: Node's timers hold at most 2^31 - 1 ms (about 24.8 days). */
export const MAX_POLL_WAIT_MS = 2_147_483_647
/** Largest `max` a poll accepts (a record count every transport can pass to its server). */
export const MAX_POLL_MAX = 2_147_483_647

/**
 * Checks {@link Transport.append}'s arguments before anything is appended: every record a
 * Uint8Array; `keys`, when given, an array with one string or undefined per record; `source`, when
 * given, a non-empty string. For transport implementations: a bad call fails whole, with a
 * ConfigError (the caller's mistake: retrying cannot help), instead of failing part-way or inside
 * the client library with an error that looks like the server's.
 * @throws ConfigError
 */
export function checkAppendArgs(transport: string, records: readonly Uint8Array[], options: AppendOptions | undefined): void {
  if (!Array.isArray(records)) throw new ConfigError(`${transport} transport: append takes an array of records`)
  for (let i = 0; i < records.length; i++) {
    if (!(records[i] instanceof Uint8Array)) throw new ConfigError(`${transport} transport: record ${i} is not a Uint8Array`)
  }
  if (options === undefined) return
  if (typeof options !== 'object' || options === null) throw new ConfigError(`${transport} transport: append options must be an object`)
  const { keys, source } = options
  if (keys !== undefined) {
    if (!Array.isArray(keys) || keys.length !== records.length) throw new ConfigError(`${transport} transport: keys must be an array with one key per record (${records.length})`)
    for (let i = 0; i < keys.length; i++) {
      const k: unknown = keys[i]
      if (k !== undefined && typeof k !== 'string') throw new ConfigError(`${transport} transport: key ${i} is neither a string nor undefined`)
    }
  }
  if (source !== undefined && (typeof source !== 'string' || source.length === 0)) throw new ConfigError(`${transport} transport: source must be a non-empty string`)
}

/**
 * Checks {@link Transport.poll}'s options and applies the defaults: `max` a positive integer,
 * `waitMs` a finite number of ms from 0 to {@link MAX_POLL_WAIT_MS}, `skipAppendsOf` a non-empty
 * string. For transport implementations.
 * @throws ConfigError
 */
export function checkPollOptions(transport: string, options: PollOptions | undefined, defaultMax: number): { max: number; waitMs: number } {
  if (options === undefined) return { max: defaultMax, waitMs: 0 }
  if (typeof options !== 'object' || options === null) throw new ConfigError(`${transport} transport: poll options must be an object`)
  const max = options.max ?? defaultMax
  if (!Number.isInteger(max) || max < 1 || max > MAX_POLL_MAX) throw new ConfigError(`${transport} transport: poll max must be an integer from 1 to ${MAX_POLL_MAX}, got ${String(max)}`)
  const waitMs = options.waitMs ?? 0
  if (typeof waitMs !== 'number' || !(waitMs >= 0 && waitMs <= MAX_POLL_WAIT_MS)) {
    throw new ConfigError(`${transport} transport: poll waitMs must be a number of ms from 0 to ${MAX_POLL_WAIT_MS}, got ${String(waitMs)}`)
  }
  const signal: unknown = options.signal
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new ConfigError(`${transport} transport: poll signal must be an AbortSignal`)
  const skip = options.skipAppendsOf
  if (skip !== undefined && (typeof skip !== 'string' || skip.length === 0)) throw new ConfigError(`${transport} transport: skipAppendsOf must be a non-empty string`)
  return { max, waitMs }
}
