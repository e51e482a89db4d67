import { Cluster } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { ConfigError, DecodeError } from '@concord/core'
import { hasHashTag, resolveOptions, REDIS_TRANSPORT_DEFAULTS } from './options.js'
import { RedisStore } from './redisStore.js'
import { RedisTransport } from './redisTransport.js'

describe('RedisTransport options', () => {
  it('applies the documented defaults', () => {
    const o = resolveOptions({})
    expect(o.keyPrefix).toBe(REDIS_TRANSPORT_DEFAULTS.keyPrefix)
    expect(o.claimMinIdleMs).toBe(60_000)
    expect(o.consumer).toBe('concord')
  })

  it('requires a Redis Cluster hash tag in the prefix', () => {
    expect(hasHashTag('{concord}')).toBe(true)
    expect(hasHashTag('app:{eu}:x')).toBe(true)
    expect(hasHashTag('concord')).toBe(false)
    expect(hasHashTag('{}concord')).toBe(false)
    expect(hasHashTag('concord}{')).toBe(false)
    expect(() => resolveOptions({ keyPrefix: 'concord' })).toThrow(ConfigError)
    expect(() => resolveOptions({ claimMinIdleMs: -1 })).toThrow(ConfigError)
    // Past what the server takes (review finding: accepted, then every poll or every append failed
    // with a non-retriable error), or so large that claiming never ran.
    expect(() => resolveOptions({ claimMinIdleMs: 1e21 })).toThrow(/claimMinIdleMs must be an integer number of ms from 0 to 1073741824/)
    expect(() => resolveOptions({ claimIntervalMs: 1e300 })).toThrow(/claimIntervalMs must be/)
    expect(() => resolveOptions({ waitReplicas: 1e21 })).toThrow(/waitReplicas must be an integer from 0 to 2147483647/)
    expect(resolveOptions({ claimMinIdleMs: 0, claimIntervalMs: 0, waitReplicas: 2 }).waitReplicas).toBe(2)
    expect(() => resolveOptions({ consumer: '' })).toThrow(ConfigError)
    // A misspelt option is refused, not ignored with its default silently in force.
    expect(() => resolveOptions({ keyprefix: '{x}' } as never)).toThrow(/unknown option "keyprefix" \(did you mean "keyPrefix"\?\)/)
  })

  it('refuses ioredis\'s keyPrefix given in a URL\'s query too (review finding: accepted, then every poll failed with NOGROUP)', () => {
    expect(resolveOptions({ redis: 'redis://127.0.0.1:6379/?lazyConnect=true' }).redis).toBe('redis://127.0.0.1:6379/?lazyConnect=true')
    // Also the forms ioredis reads and the WHATWG URL parser does not (review finding: they got through).
    for (const url of ['redis://127.0.0.1:6379/?keyPrefix=oops:&lazyConnect=true', '//127.0.0.1:6379/?keyPrefix=oops:&lazyConnect=true', '127.0.0.1:6379/?keyPrefix=oops:&lazyConnect=true']) {
      expect(() => new RedisTransport({ redis: url })).toThrow(/ioredis's keyPrefix \("oops:"\) is not supported/)
    }
  })

  it('refuses a redis target ioredis would misread, for the transport and the store (review finding: localhost, database 0, a crash, or retriable failures for ever)', async () => {
    const cases: Array<[unknown, RegExp]> = [
      // An unset environment variable, and objects ioredis took for "localhost:6379".
      ['', /redis is an empty string/],
      [[], /redis must be a redis:\/\/ or rediss:\/\/ URL/],
      [new Date(), /not a Date/],
      // Another scheme became a unix socket path.
      ['http://127.0.0.1:6379', /scheme "http:\/\/" is not one of redis:\/\/ and rediss:\/\//],
      // SELECT NaN: its error reply was unhandled and ended the process.
      ['redis://127.0.0.1:6379/abc', /database "NaN" is not a non-negative integer/],
      [{ port: 'abc' }, /port "NaN" is not one of 1\.\.65535/],
    ]
    for (const [redis, message] of cases) {
      expect(() => new RedisTransport({ redis: redis as string }), String(redis)).toThrow(message)
      expect(() => new RedisTransport({ redis: redis as string }), String(redis)).toThrow(ConfigError)
      expect(() => new RedisStore({ redis: redis as string, keyPrefix: '{s}' }), String(redis)).toThrow(ConfigError)
    }
    // What it still takes: URLs with a database, host:port, a unix socket path, plain options.
    for (const redis of ['redis://127.0.0.1:6379/3?lazyConnect=true', '127.0.0.1:6379?lazyConnect=true', '/tmp/no-such-redis.sock?lazyConnect=true', { lazyConnect: true, db: 2 }]) {
      const t = new RedisTransport({ redis })
      await t.close()
    }
  })

  it('refuses reader and origin names with NUL (review finding: two pairs shared one session and read each other\'s streams)', async () => {
    const t = new RedisTransport({ redis: { lazyConnect: true } })
    await expect(t.poll('a\u0000b', 'c')).rejects.toThrow(/reader "a\\u0000b" must not contain NUL/)
    await expect(t.append('b\u0000c', [Uint8Array.of(1)])).rejects.toBeInstanceOf(ConfigError)
    await t.close()
  })

  it('creates its client with one retry per command (fail fast while a server is down), unless told otherwise', async () => {
    const retries = (t: RedisTransport): unknown => (t as unknown as { client: { options: { maxRetriesPerRequest: unknown } } }).client.options.maxRetriesPerRequest
    const fromUrl = new RedisTransport({ redis: 'redis://127.0.0.1:1?lazyConnect=true' })
    const fromOptions = new RedisTransport({ redis: { lazyConnect: true } })
    const given = new RedisTransport({ redis: { lazyConnect: true, maxRetriesPerRequest: 5 } })
    expect(retries(fromUrl)).toBe(1)
    expect(retries(fromOptions)).toBe(1)
    expect(retries(given)).toBe(5)
    for (const t of [fromUrl, fromOptions, given]) await t.close()
  })
})

describe('RedisTransport.comparePositions', () => {
  // Positions are compared without a server; lazyConnect keeps this test offline.
  const t = new RedisTransport({ redis: { lazyConnect: true } })

  it('orders stream ids numerically, not as strings', () => {
    expect(t.comparePositions('9-0', '10-0')).toBe(-1)
    expect(t.comparePositions('10-2', '10-10')).toBe(-1)
    expect(t.comparePositions('10-10', '10-10')).toBe(0)
    expect(t.comparePositions('18446744073709551615-1', '18446744073709551615-0')).toBe(1)
  })

  it('rejects malformed positions', () => {
    expect(() => t.comparePositions('abc', '1-0')).toThrow(DecodeError)
    expect(() => t.comparePositions('1', '1-0')).toThrow(DecodeError)
  })
})

describe('waitReplicas on a Redis Cluster client', () => {
  it('is refused: WAIT has no key, so it would reach a random master', () => {
    const cluster = new Cluster([{ host: '127.0.0.1', port: 1 }], { lazyConnect: true })
    try {
      expect(() => new RedisTransport({ redis: cluster, waitReplicas: 1 })).toThrow(/waitReplicas needs a single Redis server/)
      expect(() => new RedisStore({ redis: cluster, keyPrefix: '{s}', waitReplicas: 1 })).toThrow(/waitReplicas needs a single Redis server/)
      expect(() => new RedisTransport({ redis: cluster })).not.toThrow()
    } finally {
      cluster.disconnect()
    }
  })
})

describe('RedisStore options', () => {
  it('are checked before any connection is made', () => {
    expect(() => new RedisStore({ keyPrefix: '{store}', waitReplica: 1 } as never)).toThrow(/redis store: unknown option "waitReplica" \(did you mean "waitReplicas"\?\)/)
    expect(() => new RedisStore({ keyPrefix: 'no-tag' })).toThrow(ConfigError)
    expect(() => new RedisStore(undefined as never)).toThrow(/options must be an object/)
    // WAIT n 0 waits for ever.
    expect(() => new RedisStore({ keyPrefix: '{store}', waitReplicas: 1, waitTimeoutMs: 0 })).toThrow(/waitTimeoutMs must be at least 1/)
    expect(() => new RedisStore({ keyPrefix: '{store}', redis: 6390 as never })).toThrow(ConfigError)
    expect(() => new RedisStore({ keyPrefix: '{store}', waitReplicas: 1e21 })).toThrow(/redis store: waitReplicas must be an integer from 0/)
    // A URL ioredis cannot parse (review finding: a bare TypeError from inside ioredis), without its password in the message.
    expect(() => new RedisStore({ keyPrefix: '{store}', redis: 'localhost:6379x' })).toThrow(/redis store: ioredis refused "localhost:6379x": Invalid URL/)
    expect(() => new RedisTransport({ redis: 'localhost:6379x' })).toThrow(ConfigError)
    let secret: unknown
    try {
      new RedisTransport({ redis: 'redis://user:s3cret@127.0.0.1:99999' })
    } catch (e) {
      secret = e
    }
    expect(secret).toBeInstanceOf(ConfigError)
    expect((secret as Error).message).toContain('redis://***@127.0.0.1:99999')
    expect((secret as Error).message).not.toContain('s3cret')
    // One store's keys inside another's (review finding): '{p}:kv:n' indexes its keys at
    // '{p}:kv:n:keys', the value key of key 'n:keys' of the store '{p}'.
    for (const bad of ['{p}:kv:n', '{p}:kv', 'x:kv:{p}']) expect(() => new RedisStore({ keyPrefix: bad }), bad).toThrow(/must not contain ':kv:' or end with ':kv'/)
    expect(() => new RedisStore({ keyPrefix: '{p}:kvs' }).close()).not.toThrow()
  })

  it('transport options of the wrong type are refused (a number for redis connected to the default server)', () => {
    for (const bad of [{ redis: 6390 }, { consumer: 42 }, { storeKeys: 'no' }, { now: 'Date.now' }, { keyPrefix: 5 }, { waitReplicas: 1, waitTimeoutMs: 0 }]) {
      expect(() => resolveOptions(bad as never), JSON.stringify(bad)).toThrow(ConfigError)
    }
  })
})
