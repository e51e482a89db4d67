/**
 * MemoryTransport: the embedded, in-process Transport. A {@link MemoryBroker} holds the logs and
 * the committed positions (what a Redis server or Kafka cluster would hold); each
 * {@link MemoryTransport} is one client of it with its own delivery cursors (what a connection
 * holds), so closing a client and opening another over the same broker behaves like a process
 * restart: delivery resumes from the committed position.
 */
import { ClosedError, ConfigError, TransportError, callListeners, checkKnownOptions, checkAppendArgs, checkPollOptions, slabCopy, type AppendOptions, type LogPosition, type LogRecord, type PollOptions, type Transport } from '@concord/core'

interface OriginLog {
  /** Absolute offset of `records[0]`. */
  base: number
  records: Uint8Array[]
  waiters: Set<() => void>
}

/** Shared state behind one or more {@link MemoryTransport} clients. */
export class MemoryBroker {
  private readonly logs = new Map<string, OriginLog>()
  // reader -> origin -> committed offset (inclusive)
  private readonly committedOffsets = new Map<string, Map<string, number>>()
  /** @internal Listeners of {@link MemoryTransport.watch}, of every client: told of every append. */
  readonly watchers = new Set<() => void>()

  /** @internal */
  log(origin: string): OriginLog {
    let l = this.logs.get(origin)
    if (l === undefined) {
      l = { base: 0, records: [], waiters: new Set() }
      this.logs.set(origin, l)
    }
    return l
  }

  /** @internal */
  getCommitted(reader: string, origin: string): number | undefined {
    return this.committedOffsets.get(reader)?.get(origin)
  }

  /** @internal */
  setCommitted(reader: string, origin: string, offset: number): void {
    let m = this.committedOffsets.get(reader)
    if (m === undefined) {
      m = new Map()
      this.committedOffsets.set(reader, m)
    }
    const prev = m.get(origin)
    // Commits never move backwards: a late commit from a slower path must not cause redelivery of
    // records a newer commit already covered.
    if (prev === undefined || offset > prev) m.set(origin, offset)
  }

  /** Origins with a log (for tests and tools). */
  origins(): readonly string[] {
    return [...this.logs.keys()]
  }

  /** Number of records currently held in `origin`'s log. */
  size(origin: string): number {
    return this.logs.get(origin)?.records.length ?? 0
  }
}

/**
 * Test-only fault hooks, applied when a record is delivered by {@link MemoryTransport.poll}.
 * Without them the transport keeps the contract exactly.
 */
export interface MemoryTransportFaults {
  /**
   * Lose this record for this reader (not delivered again unless rewound): in its place the reader
   * gets a `skipped` placeholder (one per run of them), as for records it need not read — it learns
   * how far the log goes (RegionNode's start-up catch-up reads to Transport.latest), not what they held.
   */
  readonly drop?: (record: LogRecord, reader: string) => boolean
  /** Deliver this record twice in a row. */
  readonly duplicate?: (record: LogRecord, reader: string) => boolean
}

/** Options for {@link MemoryTransport}. */
export interface MemoryTransportOptions {
  /**
   * Shared logs; pass the same broker to several clients to connect them.
   * @default a new broker private to this client
   */
  readonly broker?: MemoryBroker
  /** Fault injection for tests. @default none */
  readonly faults?: MemoryTransportFaults
}

const EMPTY = new Uint8Array(0)
const DEFAULT_POLL_MAX = 256

function toPosition(offset: number): LogPosition {
  return String(offset)
}

/**
 * Refuses an origin or reader that is not a non-empty string, as the other transports do: the logs
 * are a Map, so origin 7 was a log of its own, never read from "7" (records appended there lost
 * to every reader), and an empty name was taken too.
 * @throws ConfigError
 */
function checkName(kind: 'origin' | 'reader', name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) throw new ConfigError(`memory transport: ${kind} must be a non-empty string, got ${typeof name === 'string' ? '""' : String(name)}`)
}

function toOffset(position: LogPosition): number {
  // At most 2^53 - 1: past it a position would not survive the round trip through a number.
  if (typeof position !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(position) || !Number.isSafeInteger(Number(position))) {
    throw new TransportError(`memory transport: malformed position ${JSON.stringify(position)}`, { retriable: false })
  }
  return Number(position)
}

/** The embedded Transport. Positions are decimal offsets, starting at "0". */
export class MemoryTransport implements Transport {
  readonly name = 'memory'
  /** The broker this client talks to. */
  readonly broker: MemoryBroker
  private readonly faults: MemoryTransportFaults
  // reader -> origin -> next offset to deliver
  private readonly cursors = new Map<string, Map<string, number>>()
  private closed = false
  private readonly closeWaiters = new Set<() => void>()
  /** This client's watch listeners (removed from the broker on close). */
  private readonly watching = new Set<() => void>()

  constructor(options: MemoryTransportOptions = {}) {
    if (typeof options !== 'object' || options === null) throw new ConfigError('memory transport: options must be an object')
    checkKnownOptions('memory transport', options, ['broker', 'faults'])
    // By shape, not instanceof: a broker from a second installed copy of this package still works.
    const b = options.broker as Partial<MemoryBroker> | undefined
    if (b !== undefined && (typeof b !== 'object' || b === null || typeof b.log !== 'function' || typeof b.getCommitted !== 'function' || typeof b.setCommitted !== 'function')) {
      throw new ConfigError('memory transport: broker must be a MemoryBroker')
    }
    if (options.faults !== undefined) {
      if (typeof options.faults !== 'object' || options.faults === null) throw new ConfigError('memory transport: faults must be an object')
      checkKnownOptions('memory transport faults', options.faults, ['drop', 'duplicate'])
      for (const [k, fn] of Object.entries(options.faults)) if (fn !== undefined && typeof fn !== 'function') throw new ConfigError(`memory transport: faults.${k} must be a function`)
    }
    this.broker = options.broker ?? new MemoryBroker()
    this.faults = options.faults ?? {}
  }

  /** A new client over the same broker (as if another process connected). */
  reopen(options: Omit<MemoryTransportOptions, 'broker'> = {}): MemoryTransport {
    return new MemoryTransport({ ...options, broker: this.broker })
  }

  private check(): void {
    if (this.closed) throw new ClosedError('memory transport is closed')
  }

  async append(origin: string, records: readonly Uint8Array[], options?: AppendOptions): Promise<readonly LogPosition[]> {
    this.check()
    checkName('origin', origin)
    checkAppendArgs('memory', records, options)
    const log = this.broker.log(origin)
    const out: LogPosition[] = []
    for (const r of records) {
      out.push(toPosition(log.base + log.records.length))
      // Copy: the caller may reuse its buffer; the log must be immutable. Small records share slabs
      // (slabCopy): a reader takes views of them (a decoder's payload), cheap only then.
      log.records.push(slabCopy(r))
    }
    if (records.length > 0) {
      const waiters = [...log.waiters]
      log.waiters.clear()
      for (const w of waiters) w()
      // Listeners of any client: one that throws must not fail this append (its records are in the
      // log: a caller told it failed appends them again) nor keep the others from being told.
      callListeners('memory transport watch', [...this.broker.watchers], undefined, undefined)
    }
    return out
  }

  /** Calls `listener` after every append to any log of the broker, by any client (a hint to poll). */
  watch(reader: string, listener: () => void): () => void {
    this.check()
    checkName('reader', reader)
    // Checked now: called on every append of every client of the broker, a non-function threw there.
    if (typeof listener !== 'function') throw new ConfigError('memory transport: watch takes a listener function')
    // A wrapper per call: the same listener watched twice is removed once per unwatch.
    const w = (): void => listener()
    this.broker.watchers.add(w)
    this.watching.add(w)
    return () => {
      this.broker.watchers.delete(w)
      this.watching.delete(w)
    }
  }

  private cursor(reader: string, origin: string): number {
    let m = this.cursors.get(reader)
    if (m === undefined) {
      m = new Map()
      this.cursors.set(reader, m)
    }
    let c = m.get(origin)
    if (c === undefined) {
      const committed = this.broker.getCommitted(reader, origin)
      c = committed === undefined ? 0 : committed + 1
      m.set(origin, c)
    }
    return c
  }

  private setCursor(reader: string, origin: string, offset: number): void {
    this.cursor(reader, origin)
    ;(this.cursors.get(reader) as Map<string, number>).set(origin, offset)
  }

  async poll(reader: string, origin: string, options: PollOptions = {}): Promise<readonly LogRecord[]> {
    this.check()
    checkName('reader', reader)
    checkName('origin', origin)
    const { max, waitMs } = checkPollOptions('memory', options, DEFAULT_POLL_MAX)
    const log = this.broker.log(origin)
    if (this.cursor(reader, origin) >= log.base + log.records.length && waitMs > 0 && options.signal?.aborted !== true) {
      await this.waitForAppend(log, waitMs, options.signal)
      this.check()
    }
    return this.take(reader, origin, log, max)
  }

  private take(reader: string, origin: string, log: OriginLog, max: number): LogRecord[] {
    // A cursor below the trimmed base skips to the earliest record still held; the consumer
    // notices the loss through sequence gaps and earliest().
    let c = Math.max(this.cursor(reader, origin), log.base)
    const out: LogRecord[] = []
    while (out.length < max && c < log.base + log.records.length) {
      const rec: LogRecord = { origin, position: toPosition(c), bytes: log.records[c - log.base] as Uint8Array }
      c++
      if (this.faults.drop?.(rec, reader) === true) {
        const placeholder: LogRecord = { origin, position: rec.position, bytes: EMPTY, skipped: true }
        if (out[out.length - 1]?.skipped === true) out[out.length - 1] = placeholder
        else out.push(placeholder)
        continue
      }
      out.push(rec)
      if (out.length < max && this.faults.duplicate?.(rec, reader) === true) out.push(rec)
    }
    this.setCursor(reader, origin, c)
    return out
  }

  private waitForAppend(log: OriginLog, waitMs: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        log.waiters.delete(done)
        this.closeWaiters.delete(done)
        signal?.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, waitMs)
      log.waiters.add(done)
      this.closeWaiters.add(done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  async commit(reader: string, origin: string, position: LogPosition): Promise<void> {
    this.check()
    checkName('reader', reader)
    checkName('origin', origin)
    this.broker.setCommitted(reader, origin, toOffset(position))
  }

  async committed(reader: string, origin: string): Promise<LogPosition | undefined> {
    this.check()
    checkName('reader', reader)
    checkName('origin', origin)
    const c = this.broker.getCommitted(reader, origin)
    return c === undefined ? undefined : toPosition(c)
  }

  async rewind(reader: string, origin: string): Promise<void> {
    this.check()
    checkName('reader', reader)
    checkName('origin', origin)
    const c = this.broker.getCommitted(reader, origin)
    this.setCursor(reader, origin, c === undefined ? 0 : c + 1)
  }

  async earliest(origin: string): Promise<LogPosition | undefined> {
    this.check()
    checkName('origin', origin)
    const log = this.broker.log(origin)
    return log.records.length === 0 ? undefined : toPosition(log.base)
  }

  async latest(origin: string): Promise<LogPosition | undefined> {
    this.check()
    checkName('origin', origin)
    const log = this.broker.log(origin)
    return log.records.length === 0 ? undefined : toPosition(log.base + log.records.length - 1)
  }

  async trim(origin: string, before: LogPosition): Promise<void> {
    this.check()
    checkName('origin', origin)
    const log = this.broker.log(origin)
    const end = log.base + log.records.length
    const to = Math.min(toOffset(before), end)
    if (to <= log.base) return
    log.records.splice(0, to - log.base)
    log.base = to
  }

  comparePositions(a: LogPosition, b: LogPosition): number {
    return Math.sign(toOffset(a) - toOffset(b))
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const w of this.watching) this.broker.watchers.delete(w)
    this.watching.clear()
    // Pending polls wake up and reject with ClosedError.
    for (const w of [...this.closeWaiters]) w()
  }
}
