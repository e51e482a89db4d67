/**
 * RedisStore: the Store contract (a region node's durable local state) in Redis.
 *
 * Each value is a string key `<prefix>:kv:<key>`; a sorted set `<prefix>:keys` (all scores 0, so
 * ordered by bytes) indexes the keys for prefix listings. Both share the prefix's hash tag, so on
 * Redis Cluster they live in one slot and a batch is one script call.
 */
import { createHash } from 'node:crypto'
import { Cluster, Redis, type RedisOptions } from 'ioredis'
import { ClosedError, ConfigError, checkKnownOptions, checkStoreBatch, checkStoreKey, toBuffer, type Store, type StoreOp } from '@concord/core'
import { BulkLimit, Commands, LastConnectionError, TimeoutReconnect, newClient, quitWithin, runScript, translateError, waitAcked } from './errors.js'
import { WAIT_ON_CLUSTER, checkRedisTarget, hasHashTag, replicaCount, timeoutMs } from './options.js'

type Client = Redis | Cluster

/** Options for {@link RedisStore}. */
export interface RedisStoreOptions {
  /**
   * How to reach Redis: a URL, ioredis options, or an existing `Redis`/`Cluster` client (borrowed:
   * `close()` leaves it open).
   * @default 'redis://127.0.0.1:6379'
   */
  readonly redis?: string | RedisOptions | Redis | Cluster
  /**
   * Prefix of every key, with a Redis Cluster hash tag (`{...}`) so that a batch stays in one slot.
   * Give each region node its own prefix, e.g. `{concord-store:eu/i1}`.
   */
  readonly keyPrefix: string
  /**
   * After each batch, WAIT until this many replicas acknowledged it; fewer within
   * {@link RedisStoreOptions.waitTimeoutMs} fails the write with a retriable TransportError (the
   * batch may still be applied on the primary: writes of a region node are idempotent).
   * @default 0
   */
  readonly waitReplicas?: number
  /** Timeout of that WAIT. @default 1_000 */
  readonly waitTimeoutMs?: number
  /**
   * On a client the store creates, a command without an answer after this fails (ioredis
   * `commandTimeout`; WAIT gets `waitTimeoutMs` more), and close() waits no longer for the server:
   * a server that stops answering without closing its connections would otherwise hold a node's
   * store writes — and the node — for ever.
   * @default 5_000
   */
  readonly commandTimeoutMs?: number
}

/**
 * Writes a batch: KEYS[1] is the index, KEYS[i + 1] the value key of op i; ARGV holds, per op, 'p'
 * or 'd', its key (the index member), and its value ('' for a delete). The index's type is checked
 * before anything is written: a command failing half-way through a MULTI/EXEC (a foreign key of
 * another type at the index's name) left the batch half applied, since Redis rolls nothing back.
 * After the check nothing can fail: SET and DEL take a key of any type.
 */
const WRITE_SCRIPT = `
local index = KEYS[1]
local t = redis.call('TYPE', index)['ok']
if t ~= 'zset' and t ~= 'none' then
  return redis.error_reply('WRONGTYPE the store index ' .. index .. ' holds a ' .. t .. ', not a sorted set (another program writes under this keyPrefix); nothing was written')
end
for i = 2, #KEYS do
  local j = 3 * (i - 2)
  if ARGV[j + 1] == 'p' then
    redis.call('SET', KEYS[i], ARGV[j + 3])
    redis.call('ZADD', index, 0, ARGV[j + 2])
  else
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', index, ARGV[j + 2])
  end
end
return #KEYS - 1
`
const WRITE_SHA = createHash('sha1').update(WRITE_SCRIPT).digest('hex')

/**
 * Lists index members between ARGV[1] and ARGV[2] (ZRANGEBYLEX bounds). ZRANGEBYLEX is defined
 * only when every member has the same score: one another program added with another score made it
 * return nothing at all (review finding). Then the whole index is returned; keys() filters it.
 */
const KEYS_SCRIPT = `
local index = KEYS[1]
if redis.call('ZCOUNT', index, 0, 0) == redis.call('ZCARD', index) then
  return redis.call('ZRANGEBYLEX', index, ARGV[1], ARGV[2])
end
return redis.call('ZRANGE', index, 0, -1)
`
const KEYS_SHA = createHash('sha1').update(KEYS_SCRIPT).digest('hex')
const EMPTY = Buffer.alloc(0)

/**
 * The lengths of a batch's values, for {@link BulkLimit}. Keys are not measured: one past 1 MiB the
 * server refuses, which translateError reports as a TooLargeError too (the batch is one call: nothing written).
 */
function* valueSizes(batch: readonly StoreOp[]): Generator<{ readonly size: number; readonly what: () => string }> {
  for (const op of batch) if (op.op === 'put') yield { size: op.value.byteLength, what: () => `the value of ${JSON.stringify(op.key.slice(0, 100))}` }
}

/** The defaults, as documented on {@link RedisStoreOptions}. */
export const REDIS_STORE_DEFAULTS = { redis: 'redis://127.0.0.1:6379', waitReplicas: 0, waitTimeoutMs: 1_000, commandTimeoutMs: 5_000 } as const

/**
 * The Store contract over Redis. Batches are atomic (one script call: other clients never see half
 * of one, a batch that fails writes nothing, and an AOF replay restores all or none of it). Durability is Redis's: with
 * `appendonly yes` + `appendfsync always` a resolved write survives a server crash; with
 * replication, {@link RedisStoreOptions.waitReplicas} also waits for replicas.
 */
export class RedisStore implements Store {
  readonly name = 'redis'
  private readonly client: Client
  private readonly ownsClient: boolean
  /** The client's commands, bounded in time when the client was passed in (see Commands). */
  private readonly commands: Commands
  /** The last error the store's own connection reported (see {@link translateError}). */
  private readonly connectionErrors = new LastConnectionError()
  private readonly prefix: string
  private readonly index: string
  private readonly waitReplicas: number
  private readonly waitTimeoutMs: number
  private readonly commandTimeoutMs: number
  private closed = false
  /** Reconnects the client after a command timed out (a client this store made). */
  private readonly reconnects: TimeoutReconnect | undefined
  /** The server's longest argument: a batch is checked against it before it is sent. */
  private readonly bulkLimit: BulkLimit

  constructor(options: RedisStoreOptions) {
    if (typeof options !== 'object' || options === null) throw new ConfigError('redis store: options must be an object with a keyPrefix')
    checkKnownOptions('redis store', options, ['redis', 'keyPrefix', 'waitReplicas', 'waitTimeoutMs', 'commandTimeoutMs'])
    if (options.keyPrefix === undefined) throw new ConfigError("redis store: keyPrefix is required (a prefix with a hash tag, such as '{concord-store:eu}'; one per node)")
    if (typeof options.keyPrefix !== 'string' || !hasHashTag(options.keyPrefix)) {
      throw new ConfigError(`redis store: keyPrefix ${JSON.stringify(options.keyPrefix)} needs a hash tag such as '{concord-store:eu}'`)
    }
    // Values live at `<prefix>:kv:<key>`: a prefix with ':kv:' in it, or ending with ':kv', can name
    // another store's keys ('{p}:kv:n' indexes at '{p}:kv:n:keys', the value of key 'n:keys' of the
    // store '{p}'). Without either, two stores' keys never meet unless their prefixes are equal.
    if (options.keyPrefix.includes(':kv:') || options.keyPrefix.endsWith(':kv')) {
      throw new ConfigError(`redis store: keyPrefix ${JSON.stringify(options.keyPrefix)} must not contain ':kv:' or end with ':kv' (the store's value keys are '<keyPrefix>:kv:<key>', and such a prefix overlaps another store's keys)`)
    }
    this.prefix = `${options.keyPrefix}:kv:`
    this.index = `${options.keyPrefix}:keys`
    this.waitReplicas = replicaCount('redis store', options.waitReplicas ?? REDIS_STORE_DEFAULTS.waitReplicas)
    this.waitTimeoutMs = timeoutMs('redis store', 'waitTimeoutMs', options.waitTimeoutMs ?? REDIS_STORE_DEFAULTS.waitTimeoutMs, 0)
    // WAIT n 0 blocks until n replicas acknowledge, for ever.
    if (this.waitReplicas > 0 && this.waitTimeoutMs < 1) throw new ConfigError('redis store: waitTimeoutMs must be at least 1 with waitReplicas (WAIT with 0 waits for ever)')
    this.commandTimeoutMs = timeoutMs('redis store', 'commandTimeoutMs', options.commandTimeoutMs ?? REDIS_STORE_DEFAULTS.commandTimeoutMs, 1)
    const redis = options.redis ?? REDIS_STORE_DEFAULTS.redis
    checkRedisTarget('redis store', redis)
    if (redis instanceof Redis || redis instanceof Cluster) {
      if (redis instanceof Cluster && this.waitReplicas > 0) {
        throw new ConfigError(`redis store: ${WAIT_ON_CLUSTER}`)
      }
      this.client = redis
      this.ownsClient = false
    } else {
      // ioredis's own retries (unlike the transport's clients, which retry once): a call waits
      // through a short restart of the server instead of failing open(), start() or close() — a
      // close() that failed would leave no stop record. A server that stays down fails each call
      // after commandTimeoutMs.
      const defaults = { commandTimeout: this.commandTimeoutMs + (this.waitReplicas > 0 ? this.waitTimeoutMs : 0) }
      this.client = newClient('redis store', redis, defaults)
      this.ownsClient = true
      this.reconnects = new TimeoutReconnect(this.client, this.commandTimeoutMs)
      // Errors surface through the failing commands (the last one kept for their messages);
      // without a listener ioredis also logs them.
      this.connectionErrors.watch(this.client)
    }
    this.commands = new Commands(this.client, this.ownsClient ? undefined : this.commandTimeoutMs, 'redis store')
    this.bulkLimit = new BulkLimit(this.commands)
  }

  private check(): void {
    if (this.closed) throw new ClosedError('redis store is closed')
    if (this.connectionErrors.fatal !== undefined) throw this.connectionErrors.fatal
  }

  private fail(e: unknown, what: string): Error {
    if (this.closed) return new ClosedError(`redis store was closed during ${what}`, { cause: e })
    // A half-open socket failed every store call for ~15 minutes (review finding): as RedisTransport.
    this.reconnects?.failed(e)
    return translateError(e, what, { component: 'redis store', connectionError: this.connectionErrors.error })
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    this.check()
    checkStoreKey('redis store', key)
    try {
      const v = (await this.commands.callBuffer('GET', [this.prefix + key])) as Buffer | null
      return v === null ? undefined : new Uint8Array(v)
    } catch (e) {
      throw this.fail(e, 'get')
    }
  }

  async put(key: string, value: Uint8Array): Promise<void> {
    await this.write([{ op: 'put', key, value }])
  }

  async delete(key: string): Promise<void> {
    await this.write([{ op: 'delete', key }])
  }

  async write(batch: readonly StoreOp[]): Promise<void> {
    this.check()
    checkStoreBatch('redis store', batch)
    if (batch.length === 0) return
    const keys: string[] = [this.index]
    const args: (string | Buffer)[] = []
    for (const op of batch) {
      keys.push(this.prefix + op.key)
      if (op.op === 'put') args.push('p', op.key, toBuffer(op.value))
      else args.push('d', op.key, EMPTY)
    }
    try {
      // A value past the server's proto-max-bulk-len: refused here, naming it (the server's
      // refusal named nothing, and closed the connection under every other call on it).
      await this.bulkLimit.check('redis store', "nothing was written (raise the server's proto-max-bulk-len, or keep values below it)", valueSizes(batch))
      await runScript(this.commands, WRITE_SHA, WRITE_SCRIPT, [keys.length, ...keys, ...args])
    } catch (e) {
      throw this.fail(e, 'write')
    }
    if (this.waitReplicas > 0) {
      let acked: unknown
      try {
        acked = await this.commands.call('WAIT', [this.waitReplicas, this.waitTimeoutMs], this.waitTimeoutMs)
      } catch (e) {
        throw this.fail(e, 'write (WAIT)')
      }
      try {
        waitAcked(acked, this.waitReplicas)
      } catch (e) {
        throw this.fail(e, 'write (WAIT)')
      }
    }
  }

  async keys(prefix: string): Promise<readonly string[]> {
    this.check()
    if (typeof prefix !== 'string') throw new ConfigError('redis store: keys() takes a string prefix')
    // Members with this prefix sort between `[prefix` and `[prefix` + 0xff (no UTF-8 byte is 0xff).
    const min = prefix.length === 0 ? '-' : Buffer.from(`[${prefix}`)
    const max = prefix.length === 0 ? '+' : Buffer.concat([Buffer.from(`[${prefix}`), Buffer.from([0xff])])
    let raw: string[]
    try {
      const reply = await runScript(this.commands, KEYS_SHA, KEYS_SCRIPT, [1, this.index, min, max])
      raw = Array.isArray(reply) ? reply.map(String) : []
    } catch (e) {
      throw this.fail(e, 'keys')
    }
    // Redis orders by UTF-8 bytes; the contract orders by UTF-16 code units (they differ above U+FFFF).
    return raw.filter((k) => k.startsWith(prefix)).sort()
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.ownsClient) {
      await quitWithin(this.client, this.commandTimeoutMs)
    }
  }
}
