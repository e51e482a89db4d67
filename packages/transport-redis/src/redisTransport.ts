/**
 * RedisTransport: the Transport contract over Redis Streams.
 *
 * One stream per origin region; one consumer group per reading region (the group name is the
 * reader). The group's last-delivered id is the delivery cursor, a hash beside the stream holds
 * the committed positions, and the group's pending entries list (PEL) holds what was delivered but
 * not committed yet, so nothing delivered is lost when a consumer or a connection dies.
 */
import { createHash } from 'node:crypto'
import { Cluster, Redis } from 'ioredis'
import {
  ClosedError,
  ConfigError,
  MAX_POLL_WAIT_MS,
  DecodeError,
  WatchListeners,
  checkAppendArgs,
  checkPollOptions,
  TransportError,
  type LogPosition,
  type LogRecord,
  type PollOptions,
  type Transport,
  toBuffer,
} from '@concord/core'
import { BulkLimit, Commands, LastConnectionError, TimeoutReconnect, newClient, quitWithin, replyCode, runScript, translateError, waitAcked } from './errors.js'
import { WAIT_ON_CLUSTER, checkNoClientKeyPrefix, resolveOptions, type RedisTransportOptions, type ResolvedRedisTransportOptions } from './options.js'

type Client = Redis | Cluster
type AppendOptions = NonNullable<Parameters<Transport['append']>[2]>

const DEFAULT_POLL_MAX = 256
/** Pause between probes of a server that stopped answering (see RedisTransport.unanswered). */
const PROBE_INTERVAL_MS = 250
const POSITION = /^(\d{1,20})-(\d{1,20})$/
/** Entry field holding the record's bytes (the append script also writes the record key as field `k`). */
const BYTES_FIELD = 'b'
const BYTES_FIELD_BYTE = BYTES_FIELD.charCodeAt(0)

// Acknowledges every pending entry up to the position, then raises the committed position (never
// lowers it). One script, so the acks and the stored position cannot disagree after a crash.
// Ids are compared as digit strings (length, then lexically): Lua numbers are doubles, and past
// 2^53 tonumber() made different ids equal, so a commit could move back.
const COMMIT_SCRIPT = `
local function digits(s)
  return (string.gsub(s, '^0+(%d)', '%1'))
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return digits(ms), digits(seq)
end
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local stream, committed = KEYS[1], KEYS[2]
local group, pos = ARGV[1], ARGV[2]
while true do
  local pending = redis.call('XPENDING', stream, group, '-', pos, 500)
  local n = #pending
  if n == 0 then break end
  local ids = {}
  for i = 1, n do ids[i] = pending[i][1] end
  redis.call('XACK', stream, group, unpack(ids))
  if n < 500 then break end
end
local current = redis.call('HGET', committed, group)
local raise = true
-- A stored value that is no stream id (written by someone else) is replaced, not compared.
if current and string.match(current, '^%d+-%d+$') then
  local cm, cs = parse(current)
  local pm, ps = parse(pos)
  raise = less(cm, pm) or (cm == pm and less(cs, ps))
end
if raise then redis.call('HSET', committed, group, pos) end
return 1
`
const COMMIT_SHA = createHash('sha1').update(COMMIT_SCRIPT).digest('hex')

// Appends a batch of entries with one command: ARGV[1] is '1' when every record is followed by its
// key ('k' + key, or '' for none). Far less client work than one pipelined XADD per record, and a
// batch is appended whole (a script runs without interleaving).
const APPEND_SCRIPT = `
local stream = KEYS[1]
local ids = {}
if ARGV[1] == '1' then
  for i = 2, #ARGV, 2 do
    local k = ARGV[i + 1]
    if #k > 0 then
      ids[#ids + 1] = redis.call('XADD', stream, '*', 'b', ARGV[i], 'k', string.sub(k, 2))
    else
      ids[#ids + 1] = redis.call('XADD', stream, '*', 'b', ARGV[i])
    end
  end
else
  for i = 2, #ARGV do ids[#ids + 1] = redis.call('XADD', stream, '*', 'b', ARGV[i]) end
end
return ids
`
const APPEND_SHA = createHash('sha1').update(APPEND_SCRIPT).digest('hex')
/** Records per append script call (larger batches are split into several, sent together). */
const APPEND_CHUNK_RECORDS = 512
/** Bytes per append script call, roughly. */
const APPEND_CHUNK_BYTES = 1 << 20

interface StreamEntry {
  readonly id: string
  /** Null when the entry was deleted (trimmed) while pending. */
  readonly fields: readonly Buffer[] | null
}

/** Delivery state of one reader on one origin, in this client. */
interface Session {
  readonly reader: string
  readonly origin: string
  readonly stream: string
  /** The cursor was reset to the committed position (done once per client, like a process start). */
  started: boolean
  /** Re-read this consumer's own pending entries before new ones (a reply may have been lost). */
  replay: boolean
  replayCursor: string
  /** The group's last-delivered id when the replay began: pending entries past it come again through '>'. */
  replayUntil: string | undefined
  claimCursor: string
  /** Where the running claim sweep stops: the group's last-delivered id when it began (see claim). */
  claimUntil: string
  nextClaimAt: number
  /**
   * The group's last-delivered id as this session moved it: the id a reset set (the committed
   * position), then the newest entry read through '>'. A claim sweep stops here when the server
   * does not report the group's own.
   */
  cursor: string
  /** Dedicated connection for this session's reads (blocking reads hold a connection). */
  conn: Client | undefined
  /** Id of the newest entry delivered to this reader through '>' (what it has been given so far). */
  lastId: string | undefined
  /** Resolves the watcher's wait for this reader's next poll (see watchLoop). */
  polled: (() => void) | undefined
  /** Identifies the running {@link RedisTransport.watch} loop of this session, while its reader is watched. */
  watchToken: object | undefined
  /** The watcher's blocking connection. */
  watchConn: Client | undefined
}

/** How long one blocking XREAD of a watcher waits before it is issued again. */
const WATCH_BLOCK_MS = 5_000
/** A watcher that told its reader of entries waits this long at most for the reader's poll. */
const WATCH_POLL_WAIT_MS = 1_000
/** Pause of a watcher after a failed read (the server is down): it tries again after it. */
const WATCH_RETRY_MS = 500

const MAX_ID_PART = 2n ** 64n - 1n

function parsePosition(position: LogPosition): readonly [bigint, bigint] {
  const m = typeof position === 'string' ? POSITION.exec(position) : null
  if (m === null) throw new DecodeError(`redis transport: malformed position ${JSON.stringify(position)}`)
  const ms = BigInt(m[1] as string)
  const seq = BigInt(m[2] as string)
  // Stream ids are two unsigned 64-bit numbers: a larger one is no position of any stream.
  if (ms > MAX_ID_PART || seq > MAX_ID_PART) throw new DecodeError(`redis transport: position ${JSON.stringify(position)} is out of range`)
  return [ms, seq]
}

/** Whether `v` (read back from the server, where anyone may have written it) is a position. */
function isPosition(v: string): boolean {
  try {
    parsePosition(v)
    return true
  } catch {
    return false
  }
}

function asString(v: unknown): string {
  if (typeof v === 'string') return v
  if (Buffer.isBuffer(v)) return v.toString('utf8')
  throw new DecodeError(`redis transport: unexpected reply element ${typeof v}`)
}

/** Parses `[[id, [field, value, ...] | null], ...]`. */
function parseEntries(raw: unknown): StreamEntry[] {
  if (!Array.isArray(raw)) return []
  const out: StreamEntry[] = []
  for (const e of raw as unknown[]) {
    if (!Array.isArray(e)) continue
    const [id, fields] = e as [unknown, unknown]
    out.push({ id: asString(id), fields: Array.isArray(fields) ? (fields as Buffer[]) : null })
  }
  return out
}

/** Parses an XREADGROUP reply `[[stream, entries]]` or null. */
function parseRead(raw: unknown): StreamEntry[] {
  if (!Array.isArray(raw) || raw.length === 0) return []
  const first = raw[0] as unknown
  return Array.isArray(first) ? parseEntries(first[1]) : []
}

function recordOf(origin: string, entry: StreamEntry): LogRecord | undefined {
  const fields = entry.fields
  // Deleted since it was delivered (a replay of pending entries meets trimmed ones): nothing left.
  if (fields === null) return undefined
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = fields[i]
    // The field name compared as bytes (no string per entry); replies are Buffers (callBuffer).
    if (Buffer.isBuffer(name) ? name.length === 1 && name[0] === BYTES_FIELD_BYTE : asString(name) === BYTES_FIELD) {
      // Copy: the parser's buffers may share memory with other replies.
      return { origin, position: entry.id, bytes: new Uint8Array(fields[i + 1] as Buffer) }
    }
  }
  // Not one of ours (another client wrote it without the record field): delivered empty, with
  // the reason, so the reader rejects and dead-letters it saying what it was.
  return { origin, position: entry.id, bytes: new Uint8Array(0), invalid: `redis stream entry ${entry.id} has no '${BYTES_FIELD}' field (${fieldNames(fields)}): not written by a Concord transport` }
}

/** The field names of a foreign entry, for its dead letter: a few, each cut short (they are anyone's). */
function fieldNames(fields: readonly unknown[]): string {
  const names: string[] = []
  for (let i = 0; i < fields.length && names.length < 5; i += 2) {
    const name = fields[i]
    const s = Buffer.isBuffer(name) ? name.toString('utf8') : String(name)
    names.push(JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s))
  }
  const n = Math.floor(fields.length / 2)
  if (n === 0) return 'no fields'
  return `fields ${names.join(', ')}${n > names.length ? ` and ${n - names.length} more` : ''}`
}

/** The lengths of an append's arguments, for {@link BulkLimit}: each record and each stored key (`k` + key). */
function* argumentSizes(records: readonly Uint8Array[], keys: readonly (string | undefined)[] | undefined): Generator<{ readonly size: number; readonly what: () => string }> {
  for (let i = 0; i < records.length; i++) {
    yield { size: (records[i] as Uint8Array).byteLength, what: () => `record ${i}` }
    const key = keys?.[i]
    // A key of fewer than 1 MiB / 3 code units has fewer than 1 MiB of UTF-8: not measured.
    if (key !== undefined && key.length >= 1024 * 1024 / 3) yield { size: 1 + Buffer.byteLength(key), what: () => `the key of record ${i}` }
  }
}

function checkName(kind: string, name: string): void {
  if (typeof name !== 'string' || name.length === 0) throw new ConfigError(`redis transport: ${kind} must be a non-empty string`)
  // NUL separates a reader from an origin in the transport's own maps: 'a\0b' + 'c' and 'a' + 'b\0c'
  // were one session, which read one origin's stream under the other's name.
  if (name.includes('\u0000')) throw new ConfigError(`redis transport: ${kind} ${JSON.stringify(name)} must not contain NUL`)
}

/** ioredis `maxRetriesPerRequest` of the clients the transport creates (see the constructor). */
const DEFAULT_MAX_RETRIES_PER_REQUEST = 1

/**
 * Bytes the sockets of a poll's connection (a Cluster's: all its nodes') have received so far: a
 * poll whose answer is still arriving is not stuck.
 */
function bytesReceived(conn: Client | undefined): number {
  if (conn === undefined) return 0
  let n = 0
  for (const c of conn instanceof Cluster ? conn.nodes() : [conn]) n += (c.stream as { bytesRead?: number } | undefined)?.bytesRead ?? 0
  return n
}

/**
 * The Transport contract over Redis Streams (works on a single server, with replicas, Sentinel or
 * Cluster). Positions are stream ids (`<ms>-<seq>`).
 *
 * Guarantees: records of one origin are delivered in append order; delivery is at-least-once
 * (after {@link RedisTransport.rewind}, a new client, a lost connection or a claim, uncommitted
 * records come again); commits never move backwards.
 */
export class RedisTransport implements Transport {
  readonly name = 'redis'
  private readonly options: ResolvedRedisTransportOptions
  private readonly client: Client
  private readonly ownsClient: boolean
  /** The client's commands, bounded in time when the client was passed in (see Commands). */
  private readonly commands: Commands
  /** The last error a connection this transport made reported: error messages name the server and the cause. */
  private readonly connectionErrors = new LastConnectionError()
  private readonly sessions = new Map<string, Session>()
  private readonly groups = new Set<string>()
  private readonly watchers = new WatchListeners()
  private closed = false
  /**
   * Set while the server has not answered since a poll timed out on it (it stopped answering
   * without closing its connections: a partition, a paused VM): a probe pings it until it answers,
   * and meanwhile polls fail at once instead of each waiting waitMs + commandTimeoutMs. A node's
   * round waits for every origin's poll, so over a RoutedTransport one silent region's Redis had
   * slowed replication between the healthy regions to one round per commandTimeoutMs.
   */
  private unanswered: Promise<void> | undefined
  /** Ends the probe that {@link unanswered} waits for (close() calls it). */
  private stopProbe: (() => void) | undefined
  /** Reconnects the main client after a command timed out (a client this transport made). */
  private readonly reconnects: TimeoutReconnect | undefined
  /** The server's longest argument: an append checks its records against it before sending any. */
  private readonly bulkLimit: BulkLimit

  constructor(options: RedisTransportOptions = {}) {
    this.options = resolveOptions(options)
    const redis = this.options.redis
    if (redis instanceof Redis || redis instanceof Cluster) {
      if (redis instanceof Cluster && this.options.waitReplicas > 0) {
        throw new ConfigError(`redis transport: ${WAIT_ON_CLUSTER}`)
      }
      this.client = redis
      this.ownsClient = false
    } else {
      // Auto-pipelining: the commands of one event-loop turn (a round's commits, say) go out in
      // one write. One retry per command (ioredis's default is 20 reconnect attempts): while the
      // server is down a command fails fast with a retriable error, and the node retries on its
      // next round, instead of one vanished region's Redis holding every call through them all. The connection keeps reconnecting in the background. Options given
      // explicitly win.
      // commandTimeout: a server that stops answering fails commands instead of holding them for
      // ever (see commandTimeoutMs); WAIT asks for waitTimeoutMs more.
      const commandTimeout = this.options.commandTimeoutMs + (this.options.waitReplicas > 0 ? this.options.waitTimeoutMs : 0)
      const defaults = { enableAutoPipelining: true, maxRetriesPerRequest: DEFAULT_MAX_RETRIES_PER_REQUEST, commandTimeout }
      this.client = newClient('redis transport', redis, defaults)
      this.ownsClient = true
      this.reconnects = new TimeoutReconnect(this.client, this.options.commandTimeoutMs)
      // Errors surface through the failing commands (with the last one kept for their messages);
      // without a listener ioredis also logs them.
      this.connectionErrors.watch(this.client)
      // As ioredis read the URL: a URL's query parameters become ioredis options too
      // (`redis://host/?keyPrefix=x:`, also protocol-relative and host:port forms).
      try {
        checkNoClientKeyPrefix('redis transport', this.client)
      } catch (e) {
        this.client.disconnect()
        throw e
      }
    }
    this.commands = new Commands(this.client, this.ownsClient ? undefined : this.options.commandTimeoutMs, 'redis transport')
    this.bulkLimit = new BulkLimit(this.commands)
  }

  private check(): void {
    if (this.closed) throw new ClosedError('redis transport is closed')
    if (this.connectionErrors.fatal !== undefined) throw this.connectionErrors.fatal
  }

  private streamKey(origin: string): string {
    return `${this.options.keyPrefix}:log:${origin}`
  }

  private committedKey(origin: string): string {
    return `${this.options.keyPrefix}:committed:${origin}`
  }

  async append(origin: string, records: readonly Uint8Array[], options: AppendOptions = {}): Promise<readonly LogPosition[]> {
    this.check()
    checkName('origin', origin)
    checkAppendArgs('redis', records, options)
    if (records.length === 0) return []
    const key = this.streamKey(origin)
    const keys = options.keys
    const keyed = this.options.storeKeys && keys !== undefined && keys.some((k) => k !== undefined)
    // Before any chunk is sent: a record past the server's proto-max-bulk-len failed its chunk
    // after the earlier chunks were appended, and the server closed the connection under every
    // other call on it (see BulkLimit).
    try {
      await this.bulkLimit.check('redis transport', 'nothing was appended (raise the server\'s proto-max-bulk-len, or keep records below it: RegionNode maxEnvelopeBytes)', argumentSizes(records, keyed ? keys : undefined))
    } catch (e) {
      throw this.fail(e, 'append')
    }
    // Chunks of at most APPEND_CHUNK_RECORDS records / ~APPEND_CHUNK_BYTES, one script call each.
    const chunks: (string | Buffer)[][] = []
    let args: (string | Buffer)[] = []
    let bytesInChunk = 0
    records.forEach((bytes, i) => {
      const n = keyed ? (args.length - 1) / 2 : args.length - 1
      if (args.length === 0 || n >= APPEND_CHUNK_RECORDS || bytesInChunk + bytes.byteLength > APPEND_CHUNK_BYTES) {
        args = [keyed ? '1' : '0']
        chunks.push(args)
        bytesInChunk = 0
      }
      args.push(toBuffer(bytes))
      bytesInChunk += bytes.byteLength
      if (keyed) {
        const recordKey = keys[i]
        args.push(recordKey === undefined ? '' : `k${recordKey}`)
      }
    })
    const positions: LogPosition[] = []
    try {
      // One chunk after the other: sent together, a chunk that met NOSCRIPT (an empty script cache
      // after a restart) and fell back to EVAL could land after the next one, out of order.
      // Earlier chunks of the batch may be in the log when a later one fails: a retry appends
      // them again (at-least-once).
      const replies: unknown[] = []
      for (const c of chunks) replies.push(await runScript(this.commands, APPEND_SHA, APPEND_SCRIPT, [1, key, ...c]))
      for (const ids of replies) {
        if (!Array.isArray(ids)) throw new DecodeError('redis transport: append script returned no ids')
        for (const id of ids as unknown[]) positions.push(asString(id))
      }
    } catch (e) {
      throw this.fail(e, 'append')
    }
    if (positions.length !== records.length) throw this.fail(new DecodeError(`append returned ${positions.length} ids for ${records.length} records`), 'append')
    // The server refused the database in the same reply stream, before this append's answer: the
    // records went to database 0. Not acknowledged (the caller keeps them and fails from now on).
    if (this.connectionErrors.fatal !== undefined) throw this.connectionErrors.fatal
    if (this.options.waitReplicas > 0) {
      let acked: unknown
      try {
        acked = await this.commands.call('WAIT', [this.options.waitReplicas, this.options.waitTimeoutMs], this.options.waitTimeoutMs)
      } catch (e) {
        throw this.fail(e, 'append (WAIT)')
      }
      try {
        waitAcked(acked, this.options.waitReplicas)
      } catch (e) {
        throw this.fail(e, 'append (WAIT)')
      }
    }
    return positions
  }

  async poll(reader: string, origin: string, options: PollOptions = {}): Promise<readonly LogRecord[]> {
    this.check()
    checkName('reader', reader)
    checkName('origin', origin)
    const checked = checkPollOptions('redis', options, DEFAULT_POLL_MAX)
    const max = checked.max
    const signal = options.signal
    const waitMs = signal?.aborted === true ? 0 : checked.waitMs
    if (this.unanswered !== undefined) {
      throw new TransportError(`redis transport: the server did not answer a poll within waitMs + commandTimeoutMs (${this.options.commandTimeoutMs} ms) and has not answered a probe since; polls fail at once until it does`, { retriable: true })
    }
    const s = this.session(reader, origin)
    const out: LogRecord[] = []
    let onAbort: (() => void) | undefined
    // A server that stops answering (without closing its connections) fails the poll after waitMs
    // plus commandTimeoutMs: the read connection is dropped and the poll gives up waiting for it.
    // At most a timer's longest (a longer one would fire after 1 ms); waitMs may be up to that alone.
    // An answer still arriving is no silence: while bytes came in since the last look, the poll
    // waits commandTimeoutMs more (review finding: over a 2 MB/s link, a poll of 16 records of
    // 1 MiB failed at 5 s every time, and each retry read the same pending records again: the
    // reader never got past them).
    const limitMs = Math.min(waitMs + this.options.commandTimeoutMs, MAX_POLL_WAIT_MS)
    let received = bytesReceived(s.conn)
    let timedOut = false
    let deadline: ReturnType<typeof setTimeout> | undefined
    const read = async (): Promise<void> => {
      if (!s.started) await this.reset(s)
      // Given up meanwhile: no read on behalf of a poll that failed.
      if (timedOut) return
      const conn = this.connection(s)
      // The whole replay before anything newer: a page of entries trimmed meanwhile (their fields
      // are gone) yields no record, and reading '>' or claiming before the next page would deliver
      // newer records ahead of older ones (a reader may rely on log order: RegionNode.trimStable).
      while (s.replay && out.length < max) await this.replayOwn(s, conn, max - out.length, out)
      if (out.length < max && this.options.now() >= s.nextClaimAt) await this.claim(s, conn, max - out.length, out)
      if (out.length < max) {
        const args: (string | number)[] = ['GROUP', reader, this.options.consumer, 'COUNT', max - out.length]
        // Not when the signal fired meanwhile (during the reset, replay or claim above): its
        // listener would come too late to end the wait.
        const block = out.length === 0 && waitMs > 0 && signal?.aborted !== true
        if (block) {
          // BLOCK takes whole milliseconds.
          args.push('BLOCK', Math.ceil(waitMs))
          // A blocked read cannot be cancelled on its connection: drop the connection. Entries the
          // server delivered meanwhile stay pending and are replayed by the next poll.
          onAbort = () => this.dropConnection(s)
          signal?.addEventListener('abort', onAbort, { once: true })
        }
        args.push('STREAMS', s.stream, '>')
        const raw = await conn.callBuffer('XREADGROUP', args)
        const entries = parseRead(raw)
        for (const entry of entries) {
          const record = recordOf(origin, entry)
          if (record !== undefined) out.push(record)
        }
        const newest = entries[entries.length - 1]
        if (newest !== undefined) {
          s.lastId = newest.id
          s.cursor = newest.id
        }
      }
    }
    try {
      const reading = read()
      await Promise.race([
        reading,
        new Promise<never>((_, reject) => {
          const expire = (): void => {
            const now = bytesReceived(s.conn)
            if (now > received) {
              received = now
              deadline = setTimeout(expire, this.options.commandTimeoutMs)
              return
            }
            timedOut = true
            this.dropConnection(s)
            // The read fails (or ends) later, unheard: what it delivered stays pending and is
            // replayed by the next poll.
            reading.catch(() => undefined)
            reject(new Error('no answer'))
          }
          deadline = setTimeout(expire, limitMs)
        }),
      ])
      s.polled?.()
      return out
    } catch (e) {
      s.replay = true
      s.replayCursor = '0'
      this.dropConnection(s)
      if (this.closed) throw new ClosedError('redis transport was closed during poll', { cause: e })
      if (signal?.aborted === true) return out
      if (timedOut) {
        this.probe(s.stream)
        throw new TransportError(`redis transport: poll had no answer within ${limitMs} ms (waitMs + commandTimeoutMs), nor any byte of one for ${this.options.commandTimeoutMs} ms since; its connection was dropped`, { cause: e, retriable: true })
      }
      if (replyCode(e) === 'NOGROUP' || replyCode(e) === 'UNBLOCKED') {
        // The stream or the group is gone (deleted, or a server restarted without its data; a
        // blocked read hears UNBLOCKED): the next poll recreates the group and restarts from the
        // committed position, else the start.
        this.groups.delete(`${s.stream}\u0000${reader}`)
        s.started = false
      }
      throw translateError(e, 'poll', { connectionError: this.connectionErrors.error })
    } finally {
      clearTimeout(deadline)
      if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort)
    }
  }

  async commit(reader: string, origin: string, position: LogPosition): Promise<void> {
    this.check()
    checkName('reader', reader)
    checkName('origin', origin)
    parsePosition(position)
    const stream = this.streamKey(origin)
    const args = [2, stream, this.committedKey(origin), reader, position]
    try {
      await this.ensureGroup(stream, reader)
      await runScript(this.commands, COMMIT_SHA, COMMIT_SCRIPT, args)
    } catch (e) {
      if (replyCode(e) === 'NOGROUP') {
        this.groups.delete(`${stream}\u0000${reader}`)
        // The group is gone (destroyed, or the stream deleted): the next commit makes it anew at
        // the stream's start, and the next poll must move its cursor back to the committed
        // position, as after a poll's NOGROUP (review finding: it read the whole stream again).
        const s = this.sessions.get(`${reader}\u0000${origin}`)
        if (s !== undefined) s.started = false
      }
      throw this.fail(e, 'commit')
    }
  }

  async committed(reader: string, origin: string): Promise<LogPosition | undefined> {
    this.check()
    checkName('reader', reader)
    checkName('origin', origin)
    try {
      return await this.storedPosition(origin, reader)
    } catch (e) {
      throw this.fail(e, 'committed')
    }
  }

  async rewind(reader: string, origin: string): Promise<void> {
    this.check()
    checkName('reader', reader)
    checkName('origin', origin)
    const s = this.session(reader, origin)
    try {
      await this.reset(s)
    } catch (e) {
      throw this.fail(e, 'rewind')
    }
  }

  earliest(origin: string): Promise<LogPosition | undefined> {
    return this.endId(origin, 'XRANGE', 'earliest')
  }

  latest(origin: string): Promise<LogPosition | undefined> {
    return this.endId(origin, 'XREVRANGE', 'latest')
  }

  /** The id of the first (XRANGE) or last (XREVRANGE) entry of `origin`'s stream, if any. */
  private async endId(origin: string, command: 'XRANGE' | 'XREVRANGE', what: string): Promise<LogPosition | undefined> {
    this.check()
    checkName('origin', origin)
    const range = command === 'XRANGE' ? ['-', '+'] : ['+', '-']
    try {
      const entries = parseEntries(await this.commands.call(command, [this.streamKey(origin), ...range, 'COUNT', 1]))
      return entries[0]?.id
    } catch (e) {
      throw this.fail(e, what)
    }
  }

  async trim(origin: string, before: LogPosition): Promise<void> {
    this.check()
    checkName('origin', origin)
    parsePosition(before)
    try {
      // Exact trimming (no `~`): earliest() must report `before` afterwards.
      await this.commands.call('XTRIM', [this.streamKey(origin), 'MINID', before])
    } catch (e) {
      throw this.fail(e, 'trim')
    }
  }

  comparePositions(a: LogPosition, b: LogPosition): number {
    const [am, as] = parsePosition(a)
    const [bm, bs] = parsePosition(b)
    if (am !== bm) return am < bm ? -1 : 1
    return as < bs ? -1 : as > bs ? 1 : 0
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.watchers.clear()
    this.stopProbe?.()
    for (const s of this.sessions.values()) {
      this.dropConnection(s)
      this.stopWatcher(s)
    }
    if (this.ownsClient) {
      await quitWithin(this.client, this.options.commandTimeoutMs)
    }
  }

  /**
   * Asks the server about `stream` until it answers (or the transport closes); see
   * {@link unanswered}. Each try on a new connection of its own, as the next poll's read would be
   * (the main client's socket may stay dead after the path heals: a NAT or load balancer that lost
   * the flow, a DNS failover), with a command keyed by the stream (on a Cluster, the master of its
   * slot answers, not a random one), dropped after commandTimeoutMs (no pings pile up on it).
   */
  private probe(stream: string): void {
    if (this.unanswered !== undefined || this.closed) return
    // close() ends the probe at once: its connection dropped, its wait cut short (review finding:
    // a probe of a silent server kept its connection, and the process, alive for seconds after close).
    let stop: () => void = () => undefined
    const stopped = new Promise<boolean>((resolve) => {
      stop = () => resolve(true)
    })
    this.stopProbe = stop
    const run = async (): Promise<void> => {
      while (!this.closed) {
        const conn = this.duplicateForReads()
        let timer: ReturnType<typeof setTimeout> | undefined
        const answered = await Promise.race([
          conn.exists(stream).then(
            () => true,
            () => false,
          ),
          new Promise<boolean>((resolve) => {
            timer = setTimeout(() => resolve(false), this.options.commandTimeoutMs)
          }),
          stopped,
        ])
        clearTimeout(timer)
        conn.disconnect()
        if (answered) return
        await Promise.race([new Promise((r) => (timer = setTimeout(r, PROBE_INTERVAL_MS))), stopped])
        clearTimeout(timer)
      }
    }
    this.unanswered = run().finally(() => {
      this.unanswered = undefined
      this.stopProbe = undefined
    })
  }

  private fail(e: unknown, what: string): Error {
    if (this.closed) return new ClosedError(`redis transport was closed during ${what}`, { cause: e })
    this.reconnects?.failed(e)
    return translateError(e, what, { connectionError: this.connectionErrors.error })
  }

  private session(reader: string, origin: string): Session {
    const id = `${reader}\u0000${origin}`
    let s = this.sessions.get(id)
    if (s === undefined) {
      s = {
        reader,
        origin,
        stream: this.streamKey(origin),
        started: false,
        replay: false,
        replayCursor: '0',
        replayUntil: undefined,
        claimCursor: '-',
        claimUntil: '0-0',
        cursor: '0-0',
        nextClaimAt: this.options.now() + this.options.claimIntervalMs,
        conn: undefined,
        lastId: undefined,
        polled: undefined,
        watchToken: undefined,
        watchConn: undefined,
      }
      this.sessions.set(id, s)
      if (this.watchers.has(reader)) this.startWatcher(s)
    }
    return s
  }

  /**
   * Calls `listener` when entries newer than the last one delivered to `reader` appear in a stream
   * it polls (from its first poll of that origin on). One blocking XREAD per origin on a
   * connection of its own; after a call it waits for the reader's next poll (or a second) before
   * watching again, so a reader that is behind is told again, and a busy stream costs one read per
   * poll at most.
   */
  watch(reader: string, listener: () => void): () => void {
    this.check()
    checkName('reader', reader)
    if (!this.watchers.has(reader)) for (const s of this.sessions.values()) if (s.reader === reader) this.startWatcher(s)
    return this.watchers.add(reader, listener, () => {
      for (const s of this.sessions.values()) if (s.reader === reader) this.stopWatcher(s)
    })
  }

  private startWatcher(s: Session): void {
    if (s.watchToken !== undefined || this.closed) return
    const token = {}
    s.watchToken = token
    void this.watchLoop(s, token).finally(() => {
      if (s.watchToken === token) s.watchToken = undefined
    })
  }

  private stopWatcher(s: Session): void {
    s.watchToken = undefined
    const conn = s.watchConn
    s.watchConn = undefined
    conn?.disconnect()
    s.polled?.()
  }

  /** Whether the loop of `token` is still the session's watcher. */
  private watching(s: Session, token: object): boolean {
    return !this.closed && s.watchToken === token
  }

  /** Never rejects: a failed read is followed by another after WATCH_RETRY_MS. */
  private async watchLoop(s: Session, token: object): Promise<void> {
    while (this.watching(s, token)) {
      try {
        s.watchConn ??= this.duplicateForReads()
        const conn = s.watchConn
        // Nothing delivered yet: entries up to the stream's newest now are what its first polls get.
        const from = s.lastId ?? (await this.newestId(conn, s.stream))
        const raw = await conn.callBuffer('XREAD', ['COUNT', 1, 'BLOCK', WATCH_BLOCK_MS, 'STREAMS', s.stream, from])
        if (!this.watching(s, token)) return
        const entries = parseRead(raw)
        if (entries.length === 0) continue
        // Told: wait for the reader to poll before looking again (its lastId moves on then).
        const polled = new Promise<void>((resolve) => (s.polled = resolve))
        s.lastId ??= from
        this.watchers.notify(s.reader)
        let timer: ReturnType<typeof setTimeout> | undefined
        await Promise.race([polled, new Promise<void>((resolve) => (timer = setTimeout(resolve, WATCH_POLL_WAIT_MS)))])
        clearTimeout(timer)
        s.polled = undefined
      } catch {
        // The server is gone or the connection was dropped: a new one after a pause.
        const conn = s.watchConn
        s.watchConn = undefined
        conn?.disconnect()
        if (!this.watching(s, token)) return
        await new Promise((resolve) => setTimeout(resolve, WATCH_RETRY_MS))
      }
    }
  }

  /** Id of the newest entry of `stream`, or 0-0 for an empty or missing stream. */
  private async newestId(conn: Client, stream: string): Promise<string> {
    const raw = await conn.callBuffer('XREVRANGE', [stream, '+', '-', 'COUNT', 1])
    const [newest] = parseEntries(raw)
    return newest?.id ?? '0-0'
  }

  private connection(s: Session): Client {
    if (s.conn !== undefined) return s.conn
    // A poll that was waiting (on reset) while close() ran must not open a connection nobody closes.
    this.check()
    // No reconnect on this connection: a read whose reply was lost may have delivered entries,
    // and resending it would skip them (ioredis without resend leaves the promise unsettled). The
    // failed poll drops the connection instead; the next poll opens a new one and replays the PEL.
    const conn = this.duplicateForReads()
    s.conn = conn
    return conn
  }

  /** A connection of its own for blocking reads, that does not reconnect nor resend. */
  private duplicateForReads(): Client {
    // The offline queue on (a poll's first command goes out before the connection is up: without
    // the queue ioredis refuses it, and every poll would fail), and no commandTimeout (a blocking
    // read waits its waitMs; poll bounds it itself).
    const override = { retryStrategy: () => null, autoResendUnfulfilledCommands: false, lazyConnect: false, enableAutoPipelining: false, enableOfflineQueue: true, commandTimeout: undefined }
    const conn =
      this.client instanceof Cluster
        ? // retryDelayOnFailover 0: a Cluster client otherwise sends a command again when its
          // connection closed before the reply — and a resent XREADGROUP '>' (or XCLAIM) skips
          // what the lost one delivered, which the next commit would then acknowledge unread.
          // The Cluster's own offline queue on too: one created with it off refused each new read
          // connection's first command ("Cluster isn't ready"), every poll.
          this.client.duplicate([], { clusterRetryStrategy: () => null, retryDelayOnFailover: 0, enableOfflineQueue: true, redisOptions: { ...this.client.options.redisOptions, ...override } })
        : this.client.duplicate(override)
    this.connectionErrors.watch(conn)
    return conn
  }

  private dropConnection(s: Session): void {
    const conn = s.conn
    s.conn = undefined
    conn?.disconnect()
  }

  private async ensureGroup(stream: string, group: string): Promise<void> {
    const id = `${stream}\u0000${group}`
    if (this.groups.has(id)) return
    try {
      await this.commands.call('XGROUP', ['CREATE', stream, group, '0', 'MKSTREAM'])
    } catch (e) {
      if (replyCode(e) !== 'BUSYGROUP') throw e
    }
    this.groups.add(id)
  }

  /**
   * The position committed for `reader` on `origin`. A stored value that is no position (written by
   * someone else) counts as none: the reader reads from the start again, at least once, and the
   * next commit replaces it (every commit and every SETID with it failed, for good).
   */
  private async storedPosition(origin: string, reader: string): Promise<LogPosition | undefined> {
    const v = (await this.commands.call('HGET', [this.committedKey(origin), reader])) as string | null
    return v !== null && isPosition(v) ? v : undefined
  }

  /** Moves the group's cursor back to the committed position (or the start of the stream). */
  private async reset(s: Session): Promise<void> {
    await this.ensureGroup(s.stream, s.reader)
    const committed = await this.storedPosition(s.origin, s.reader)
    await this.commands.call('XGROUP', ['SETID', s.stream, s.reader, committed ?? '0'])
    s.cursor = committed ?? '0-0'
    // Everything after the committed position comes again through '>', pending entries included.
    s.started = true
    s.replay = false
    s.replayCursor = '0'
  }

  /**
   * Re-reads this consumer's pending entries (history, oldest first), a page per call, up to the
   * group's last-delivered id as it was when the replay began: pending entries past it (delivered
   * before a rewind moved the cursor back) come again through '>' — replayed too, they would come
   * twice in one poll, out of order.
   */
  private async replayOwn(s: Session, conn: Client, max: number, out: LogRecord[]): Promise<void> {
    if (s.replayCursor === '0') s.replayUntil = await this.lastDeliveredId(conn, s)
    const until = s.replayUntil
    const raw = await conn.callBuffer('XREADGROUP', ['GROUP', s.reader, this.options.consumer, 'COUNT', max, 'STREAMS', s.stream, s.replayCursor])
    let entries = parseRead(raw)
    // A short page is the last of what was pending: replaying stops here. (Left on, it would
    // replay what this poll's own '>' read adds to the pending list next, on every later poll.)
    if (entries.length < max) s.replay = false
    if (until !== undefined) {
      const past = entries.findIndex((e) => this.comparePositions(e.id, until) > 0)
      if (past >= 0) {
        entries = entries.slice(0, past)
        s.replay = false
      }
    }
    if (entries.length === 0) return
    s.replayCursor = (entries[entries.length - 1] as StreamEntry).id
    this.collect(s, entries, out)
  }

  /** The last-delivered id of `s`'s group (XINFO GROUPS), undefined when the server does not say. */
  private async lastDeliveredId(conn: Client, s: Session): Promise<string | undefined> {
    let raw: unknown
    try {
      raw = await conn.call('XINFO', ['GROUPS', s.stream])
    } catch (e) {
      // No stream (deleted, or a restarted server without its data): the replay's read meets
      // NOGROUP next, which starts the session over.
      if (e instanceof Error && /no such key/i.test(e.message)) return undefined
      throw e
    }
    if (!Array.isArray(raw)) return undefined
    for (const g of raw as unknown[]) {
      if (!Array.isArray(g)) continue
      const fields = new Map<string, unknown>()
      for (let i = 0; i + 1 < g.length; i += 2) fields.set(asString(g[i]), g[i + 1])
      if (asString(fields.get('name') ?? '') !== s.reader) continue
      const id = fields.get('last-delivered-id')
      return id === undefined ? undefined : asString(id)
    }
    return undefined
  }

  /**
   * Claims entries pending for claimMinIdleMs or longer on the group's other consumers (presumed
   * dead), one page of the group's pending list per call. Not this consumer's own: XAUTOCLAIM took
   * those too, so a live reader whose entries stayed uncommitted (a node's trim reader commits only
   * at a trim) was handed all of them again on every sweep, after newer ones (review finding).
   * Its own come back by {@link replayOwn} after a lost connection or a restart.
   */
  private async claim(s: Session, conn: Client, count: number, out: LogRecord[]): Promise<void> {
    const minIdle = this.options.claimMinIdleMs
    // Up to the group's last-delivered id, asked once per sweep: entries past it were never
    // delivered (nothing to claim), and right after a reset it is the committed position, so a
    // dead consumer's entries past that come again through '>' — claimed as well, they came twice,
    // the claimed ones ahead of older entries (review finding: a new process under another
    // consumer name, claiming at once). Not up to this consumer's own cursor, as it was: entries
    // a dead consumer read past it (the log's last ones, when this consumer read nothing newer)
    // were claimed only once newer traffic reached this consumer — never, on a quiet log (found by
    // switching the claim off: its tests still passed).
    if (s.claimCursor === '-') s.claimUntil = (await this.lastDeliveredId(conn, s)) ?? s.cursor
    const raw = await conn.call('XPENDING', [s.stream, s.reader, 'IDLE', minIdle, s.claimCursor, s.claimUntil, count])
    const rows = Array.isArray(raw) ? (raw as unknown[]) : []
    const ids: string[] = []
    let last: string | undefined
    for (const row of rows) {
      if (!Array.isArray(row)) continue
      last = asString(row[0])
      if (asString(row[1]) !== this.options.consumer) ids.push(last)
    }
    // A finished sweep waits for the next interval; an unfinished one continues on the next poll.
    if (rows.length < count || last === undefined) {
      s.claimCursor = '-'
      s.nextClaimAt = this.options.now() + this.options.claimIntervalMs
    } else s.claimCursor = `(${last}`
    if (ids.length === 0) return
    // XCLAIM takes only those still idle that long (another reader may have claimed one meanwhile).
    this.collect(s, parseEntries(await conn.callBuffer('XCLAIM', [s.stream, s.reader, this.options.consumer, minIdle, ...ids])), out)
  }

  private collect(s: Session, entries: readonly StreamEntry[], out: LogRecord[]): void {
    for (const entry of entries) {
      const record = recordOf(s.origin, entry)
      if (record !== undefined) out.push(record)
    }
  }
}
