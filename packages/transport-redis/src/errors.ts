/**
 * Translates ioredis errors into Concord errors: server replies by their error code, everything
 * else (connection lost, retries exhausted) as a retriable TransportError.
 */
import { Redis, type Cluster, type RedisOptions } from 'ioredis'
import { ConfigError, TooLargeError, TransportError, isConcordError, type ConcordError } from '@concord/core'

// Replies that mean "try again later": the server is loading, failing over, or out of memory.
// MISCONF: the server cannot save to disk (a full or broken disk) and refuses writes until it can.
// UNBLOCKED: a blocked read whose stream was deleted (the next poll recreates the group, as after NOGROUP).
const RETRIABLE_REPLIES = new Set(['LOADING', 'BUSY', 'TRYAGAIN', 'CLUSTERDOWN', 'MASTERDOWN', 'READONLY', 'NOREPLICAS', 'OOM', 'MISCONF', 'UNBLOCKED'])
// MOVED and ASK reach a caller only from a client that is no Cluster client (an ioredis Cluster
// follows them itself, and reports running out of redirections in words, with no reply code): a
// URL or a Redis client pointed at one node of a Redis Cluster. Each call failed as retriable for
// ever, or worked, depending on which slot the key prefix hashed to (review finding).
const CLUSTER_REDIRECTS = new Set(['MOVED', 'ASK'])
// Replies that mean the configuration is wrong: retrying cannot help.
const CONFIG_REPLIES = new Set(['NOAUTH', 'WRONGPASS', 'NOPERM', 'WRONGTYPE'])

/** The error code of a Redis error reply (`NOGROUP`, `BUSYGROUP`, `ERR`...), if `e` is one. */
export function replyCode(e: unknown): string | undefined {
  if (!(e instanceof Error) || e.name !== 'ReplyError') return undefined
  return e.message.split(' ', 1)[0]
}

/** Wraps `e` (from an ioredis call doing `what`) into a ConcordError. */
export function translateError(e: unknown, what: string, context: ErrorContext = {}): ConcordError {
  if (isConcordError(e)) return e
  let code = replyCode(e)
  // Not a server's reply (ioredis's "Reached the max retries per request limit", "Connection is
  // closed", a timeout): the connection's own last error says which server and why.
  const connection = code === undefined && context.connectionError !== undefined ? ` (last connection error: ${context.connectionError.message})` : ''
  const message = `${context.component ?? 'redis transport'}: ${what} failed: ${e instanceof Error ? e.message : String(e)}${connection}`
  // A MULTI whose queued command the server refused (NOREPLICAS, OOM, READONLY...) fails at EXEC
  // with EXECABORT; ioredis keeps the refusals in previousErrors: the first one says what happened.
  if (code === 'EXECABORT') {
    const previous = (e as { previousErrors?: unknown }).previousErrors
    const first = Array.isArray(previous) ? previous.map(replyCode).find((c) => c !== undefined) : undefined
    code = first ?? 'TRYAGAIN'
  }
  if (code === undefined) {
    // A client the application passed in that it had put in subscriber mode (SUBSCRIBE) takes
    // no other command for as long as it stays there: not something a retry mends.
    if (e instanceof Error && /Connection in subscriber mode/i.test(e.message)) {
      return new ConfigError(`${message} (the ioredis client passed in is subscribed to channels: give Concord a client of its own, or client.duplicate())`, { cause: e })
    }
    return new TransportError(message, { cause: e })
  }
  if (CLUSTER_REDIRECTS.has(code)) {
    return new ConfigError(`${message} (the server is a node of a Redis Cluster: pass an ioredis Cluster client as the redis option, with a key prefix in braces, a hash tag)`, { cause: e })
  }
  // An argument (a record, a store value) past the server's proto-max-bulk-len: the server refuses
  // it and closes the connection. Retrying the same call cannot help (review finding: it was a
  // TransportError naming no setting). {@link BulkLimit} refuses these before sending; this is for
  // a server whose limit was lowered since, or a user who may not read it.
  if (code === 'ERR' && /Protocol error: invalid (multi)?bulk length/i.test(e instanceof Error ? e.message : '')) {
    return new TooLargeError(`${message} (an argument is longer than the server's proto-max-bulk-len; nothing of this call was written, earlier parts of a split batch may be)`, { cause: e })
  }
  // A command a script runs that the ACL user may not run (or a key it may not touch): Redis 7.0
  // reports it as ERR from inside the script, not NOPERM. A ConfigError like NOPERM (review
  // finding: a non-retriable TransportError, which a node retried for ever without saying why).
  if (code === 'ERR' && /The user executing the script can't/i.test(e instanceof Error ? e.message : '')) {
    return new ConfigError(`${message} (the Redis ACL user lacks a permission this needs: a command or a key of the script)`, { cause: e })
  }
  if (CONFIG_REPLIES.has(code)) return new ConfigError(code === 'NOPERM' ? `${message} (the Redis ACL user lacks a permission this needs)` : message, { cause: e })
  if (RETRIABLE_REPLIES.has(code) || code === 'NOGROUP') return new TransportError(message, { cause: e })
  return new TransportError(message, { cause: e, retriable: false })
}

/** The last error some connections reported, until one of them is ready again (for {@link ErrorContext.connectionError}). */
export class LastConnectionError {
  error: Error | undefined
  /**
   * Set for good when the server refused the database the URL or options name (SELECT: "DB index
   * is out of range"). ioredis only reports that as an event and goes on in database 0: the
   * transport's and store's calls fail with it from then on (review finding: appends landed in
   * database 0, beside whatever else lives there, without a word).
   */
  fatal: ConfigError | undefined

  /** Follows `conn`'s errors; as any listener does, this also keeps ioredis from logging them. */
  watch(conn: { on(event: 'error' | 'ready', fn: (e?: unknown) => void): unknown; options?: object }): void {
    conn.on('error', (e) => {
      if (e instanceof Error) this.error = e
      if (e instanceof Error && e.name === 'ReplyError' && /DB index is out of range/i.test(e.message)) {
        this.fatal ??= new ConfigError(`redis: the server has no database ${String((conn.options as { db?: unknown } | undefined)?.db)} (${e.message}); its databases are numbered from 0 to its 'databases' setting - 1`, { cause: e })
      }
    })
    conn.on('ready', () => (this.error = undefined))
  }
}

/** What {@link translateError} adds to a message: whose call it was, and its connection's last error. */
export interface ErrorContext {
  /** @default 'redis transport' */
  readonly component?: string
  /** The last error the client's connection reported (`connect ECONNREFUSED 127.0.0.1:6399`), cleared once it is ready. */
  readonly connectionError?: Error | undefined
}

/**
 * Closes a client the transport or store created: QUIT, waited for at most `ms` (a server that
 * stopped answering would hold it for ever; see commandTimeoutMs), then the connection is dropped.
 */
export async function quitWithin(client: { quit(): Promise<unknown>; disconnect(): void }, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined
  await Promise.race([client.quit().catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, ms)))])
  clearTimeout(timer)
  client.disconnect()
}

/**
 * A client the transport or store makes from a URL or ioredis options. ioredis throws a bare
 * TypeError ("Invalid URL") for a URL it cannot parse (`localhost:6379x`, a port past 65535): a
 * ConfigError naming it here (review finding: a stack trace from inside ioredis).
 */
export function newClient(what: string, redis: string | RedisOptions, defaults: RedisOptions): Redis {
  const shown = typeof redis === 'string' ? JSON.stringify(redis.replace(/\/\/[^@/]*@/, '//***@')) : 'the ioredis options'
  const hint = '(a URL looks like redis://[user:password@]host:port[/db], or rediss:// for TLS)'
  let client: Redis
  try {
    client = typeof redis === 'string' ? new Redis(redis, defaults) : new Redis({ ...defaults, ...redis })
  } catch (e) {
    throw new ConfigError(`${what}: ioredis refused ${shown}: ${e instanceof Error ? e.message : String(e)} ${hint}`, { cause: e })
  }
  // As ioredis read them (a URL's path and query become options): a database that is no number
  // made ioredis send SELECT NaN, whose error reply crashed the process (review finding); a port
  // that is none failed every call as retriable for ever.
  const { db, port, path } = client.options as { db?: unknown; port?: unknown; path?: unknown }
  const bad =
    db !== undefined && !(typeof db === 'number' && Number.isSafeInteger(db) && db >= 0)
      ? `database ${JSON.stringify(String(db))} is not a non-negative integer`
      : (path === undefined || path === null || path === '') && !(Number.isSafeInteger(Number(port)) && Number(port) >= 1 && Number(port) <= 65535)
        ? `port ${JSON.stringify(String(port))} is not one of 1..65535`
        : undefined
  if (bad !== undefined) {
    // Before its socket connected (that takes an I/O turn): nothing was sent.
    client.disconnect()
    throw new ConfigError(`${what}: ${shown}: ${bad} ${hint}`)
  }
  return client
}

/**
 * What the transport and the store send their commands through: the client, with each command
 * bounded in time when the client is one the application passed in. Such a client keeps its own
 * settings — perhaps no commandTimeout, and an offline queue that holds commands while it cannot
 * reach a server: an ioredis Cluster that never got (or lost) its slots held every command for
 * ever, whatever commandTimeout its redisOptions had (review finding: append, commit and the
 * store's calls never settled, and close() left them so). Such a command fails after `boundMs`
 * (plus `extraMs`, for WAIT) with a retriable TransportError, as a timed-out command of a client
 * the transport made does; it may still run later, when the client reconnects (an append then
 * lands twice at the most, which at-least-once delivery allows; a commit never moves back).
 */
export class Commands {
  constructor(
    private readonly client: Redis | Cluster,
    /** undefined: the client's own commandTimeout bounds its commands (a client Concord made). */
    private readonly boundMs: number | undefined,
    private readonly component: string,
  ) {
    this.checkOpen()
  }

  call(command: string, args: (string | number | Buffer)[], extraMs = 0): Promise<unknown> {
    this.checkOpen()
    return this.bounded(this.client.call(command, args), extraMs)
  }

  callBuffer(command: string, args: (string | number | Buffer)[]): Promise<unknown> {
    this.checkOpen()
    return this.bounded(this.client.callBuffer(command, args), 0)
  }

  /**
   * A client the application closed (quit(), disconnect(), or a retryStrategy that gave up) never
   * connects again: every call failed as retriable, for ever (review finding). Checked when the
   * transport or store is made, and before each command.
   */
  private checkOpen(): void {
    if (this.boundMs !== undefined && this.client.status === 'end') {
      throw new ConfigError(`${this.component}: the ioredis client passed in is closed (quit, disconnected, or its retryStrategy gave up) and will not connect again: pass an open client`)
    }
  }

  private bounded<T>(p: Promise<T>, extraMs: number): Promise<T> {
    const boundMs = this.boundMs
    if (boundMs === undefined) return p
    const ms = boundMs + extraMs
    let timer: ReturnType<typeof setTimeout> | undefined
    return Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          // Settles later, unheard.
          p.catch(() => undefined)
          reject(new Error(`no answer within ${ms} ms (commandTimeoutMs${extraMs > 0 ? ' + waitTimeoutMs' : ''}): the client passed in may be holding commands while it cannot reach a server (its offline queue; give it enableOfflineQueue: false, or a commandTimeout, to fail them sooner)`))
        }, ms)
      }),
    ]).finally(() => clearTimeout(timer))
  }
}

/** Checks a WAIT reply: how many replicas acknowledged (a number, or a string under ioredis's stringNumbers). */
export function waitAcked(reply: unknown, wanted: number): void {
  const n = typeof reply === 'string' && /^\d+$/.test(reply) ? Number(reply) : reply
  if (typeof n !== 'number' || !(n >= wanted)) throw new Error(`only ${String(reply)} of ${wanted} replicas acknowledged`)
}

/** Runs a Lua script by its SHA, loading it on NOSCRIPT (a new or restarted server, a SCRIPT FLUSH). */
export async function runScript(client: { call(command: string, args: (string | number | Buffer)[]): Promise<unknown> }, sha: string, source: string, args: (string | number | Buffer)[]): Promise<unknown> {
  try {
    return await client.call('EVALSHA', [sha, ...args])
  } catch (e) {
    if (replyCode(e) !== 'NOSCRIPT') throw e
    return await client.call('EVAL', [source, ...args])
  }
}

/**
 * Closes and opens again a client whose command timed out (ioredis's commandTimeout), at most once
 * per `everyMs`: its connection is suspect. ioredis keeps a socket whose path died without a close
 * (a NAT or load balancer that lost the flow, a failover behind one address) until the kernel gives
 * up on it, about 15 minutes on Linux: every call timed out meanwhile, though a new connection got
 * through. For clients the transport or store made (one passed in is its owner's to manage).
 */
export class TimeoutReconnect {
  private at = Number.NEGATIVE_INFINITY

  constructor(
    private readonly client: { disconnect(reconnect?: boolean): void },
    private readonly everyMs: number,
  ) {}

  /** Takes a failed command's error: reconnects when it is a timeout and none was made lately. */
  failed(e: unknown): void {
    if (!(e instanceof Error) || e.message !== 'Command timed out') return
    const now = Date.now()
    if (now - this.at < this.everyMs) return
    this.at = now
    this.client.disconnect(true)
  }
}

/** The least proto-max-bulk-len a Redis server takes (1mb): arguments up to it need no check. */
const MIN_PROTO_MAX_BULK_LEN = 1024 * 1024

/**
 * The server's proto-max-bulk-len, the longest argument it reads: a longer one it refuses with a
 * protocol error and closes the connection, failing every call in flight on it (review finding:
 * an oversize record's batch was half appended — its first chunks — as a non-retriable
 * TransportError, and the commits and reads sharing the connection failed with it). Calls check
 * their arguments first; only an argument past 1 MiB (Redis's least setting) asks the server
 * (CONFIG GET, once, and again before refusing, in case the limit was raised). A user who may not
 * run CONFIG GET sends unchecked, and translateError reports the server's refusal as a TooLargeError.
 */
export class BulkLimit {
  private known: Promise<number | undefined> | undefined

  constructor(private readonly client: { call(command: string, args: (string | number)[]): Promise<unknown> }) {}

  /**
   * Throws a TooLargeError when the longest of `args` (each its length in bytes and what it is,
   * for the message) is past the server's limit; `nothing` ends the message (what was not done).
   */
  async check(component: string, nothing: string, args: Iterable<{ readonly size: number; readonly what: () => string }>): Promise<void> {
    let largest: { readonly size: number; readonly what: () => string } | undefined
    for (const a of args) if (largest === undefined || a.size > largest.size) largest = a
    if (largest === undefined || largest.size <= MIN_PROTO_MAX_BULK_LEN) return
    let limit = await this.limit(false)
    if (limit !== undefined && largest.size > limit) limit = await this.limit(true)
    if (limit !== undefined && largest.size > limit) {
      throw new TooLargeError(`${component}: ${largest.what()} is ${largest.size} bytes, more than the server takes in one argument (its proto-max-bulk-len, ${limit}); ${nothing}`)
    }
  }

  private async limit(fresh: boolean): Promise<number | undefined> {
    if (fresh || this.known === undefined) {
      const asked = this.client.call('CONFIG', ['GET', 'proto-max-bulk-len']).then(
        (reply) => {
          const v = Array.isArray(reply) ? Number(reply[1]) : Number.NaN
          return Number.isSafeInteger(v) && v >= MIN_PROTO_MAX_BULK_LEN ? v : undefined
        },
        (e: unknown) => {
          // Not a reply (the connection is down): asked again next time. A refusal (NOPERM, a
          // renamed CONFIG): the limit stays unknown for good.
          if (replyCode(e) === undefined) this.known = undefined
          return undefined
        },
      )
      this.known = asked
      return asked
    }
    return this.known
  }
}
