/**
 * A review as an attacker and as a careless user would go at it, each case against a real server:
 * records and store values past the server's proto-max-bulk-len, ACL users lacking commands, a
 * store index another program wrote, a consumer group destroyed under a reader, a second consumer
 * of one reader taking over. Server settings are changed on private servers only. Each test failed
 * before its fix.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, TooLargeError, type LogRecord } from '@concord/core'
import { RedisStore } from './redisStore.js'
import { RedisTransport } from './redisTransport.js'
import { PrivateRedis, hasRedisServer, requireRedis } from './testServer.js'

const server = await requireRedis()
const canStartServers = await hasRedisServer()

const enc = new TextEncoder()
const dec = new TextDecoder()
const bytes = (s: string): Uint8Array => enc.encode(s)
const text = (r: LogRecord): string => dec.decode(r.bytes)
const MiB = 1024 * 1024

describe.skipIf(!canStartServers)('RedisTransport and RedisStore against a hostile server configuration', () => {
  let priv: PrivateRedis
  let admin: Redis
  beforeAll(async () => {
    priv = await PrivateRedis.start()
    admin = new Redis(priv.url)
    admin.on('error', () => undefined)
    // The least Redis takes: one argument (a record, a store value) of at most 1 MiB.
    await admin.config('SET', 'proto-max-bulk-len', String(MiB))
  })
  afterAll(async () => {
    admin.disconnect()
    await priv.stop()
  })

  it('a record past proto-max-bulk-len: a TooLargeError, nothing of the batch appended, other calls unharmed (a non-retriable "Protocol error", the batch\'s first records appended, and every call in flight on the connection failed with it)', async () => {
    const t = new RedisTransport({ redis: priv.url, keyPrefix: '{big}' })
    try {
      const [first] = await t.append('eu', [bytes('before')])
      const big = new Uint8Array(MiB + 1)
      const results = await Promise.allSettled([t.append('eu', [bytes('small'), big]), t.committed('us', 'eu'), t.earliest('eu')])
      expect(results[0]).toMatchObject({ status: 'rejected', reason: expect.any(TooLargeError) })
      const e = (results[0] as PromiseRejectedResult).reason as TooLargeError
      expect(e.retriable).toBe(false)
      expect(e.message).toMatch(/record 1 is 1048577 bytes.*proto-max-bulk-len.*1048576.*nothing was appended/)
      // The calls beside it were answered (the server had closed the shared connection on them).
      expect(results.slice(1).map((r) => r.status)).toEqual(['fulfilled', 'fulfilled'])
      expect(await admin.xlen('{big}:log:eu')).toBe(1)
      // A record key past it too (storeKeys), and records up to the limit go through.
      const keyed = new RedisTransport({ redis: priv.url, keyPrefix: '{big}', storeKeys: true })
      await expect(keyed.append('eu', [bytes('k')], { keys: ['x'.repeat(MiB)] })).rejects.toBeInstanceOf(TooLargeError)
      await keyed.close()
      expect(await admin.xlen('{big}:log:eu')).toBe(1)
      await t.append('eu', [new Uint8Array(MiB)])
      expect((await t.poll('us', 'eu')).map((r) => r.bytes.byteLength)).toEqual([6, MiB])
      // The server's limit raised: the transport takes what it now takes.
      await admin.config('SET', 'proto-max-bulk-len', String(2 * MiB))
      await t.append('eu', [big])
      expect(await admin.xlen('{big}:log:eu')).toBe(3)
      expect(first).toBeDefined()
    } finally {
      await admin.config('SET', 'proto-max-bulk-len', String(MiB))
      await t.close()
    }
  })

  it('a store value past proto-max-bulk-len: a TooLargeError, nothing of the batch written (a non-retriable "Protocol error" that named no value)', async () => {
    const store = new RedisStore({ redis: priv.url, keyPrefix: '{big-store}' })
    try {
      const write = store.write([
        { op: 'put', key: 'a', value: bytes('small') },
        { op: 'put', key: 'b', value: new Uint8Array(MiB + 1) },
      ])
      await expect(write).rejects.toBeInstanceOf(TooLargeError)
      await expect(write).rejects.toThrow(/value of "b" is 1048577 bytes.*proto-max-bulk-len.*nothing was written/)
      expect(await store.get('a')).toBeUndefined()
      await store.put('a', new Uint8Array(MiB))
      expect((await store.get('a'))?.byteLength).toBe(MiB)
    } finally {
      await store.close()
    }
  })

  it('an ACL user lacking a command the scripts run: a ConfigError saying so (a non-retriable TransportError: "ERR The user executing the script can\'t run this command")', async () => {
    await admin.call('ACL', 'SETUSER', 'no-xadd', 'on', '>pw', '~*', '+@all', '-xadd')
    await admin.call('ACL', 'SETUSER', 'no-set', 'on', '>pw', '~*', '+@all', '-set')
    const t = new RedisTransport({ redis: `redis://no-xadd:pw@127.0.0.1:${priv.port}`, keyPrefix: '{acl}' })
    const store = new RedisStore({ redis: `redis://no-set:pw@127.0.0.1:${priv.port}`, keyPrefix: '{acl-store}' })
    try {
      const append = t.append('eu', [bytes('x')])
      await expect(append).rejects.toBeInstanceOf(ConfigError)
      await expect(append).rejects.toThrow(/permission/)
      await expect(store.put('k', bytes('v'))).rejects.toBeInstanceOf(ConfigError)
      expect(await admin.exists('{acl}:log:eu', '{acl-store}:kv:k')).toBe(0)
    } finally {
      await t.close()
      await store.close()
    }
  })

  it('maxmemory reached (noeviction): appends fail retriable, and every position acknowledged is in the log (held before the review)', async () => {
    const t = new RedisTransport({ redis: priv.url, keyPrefix: '{oom}' })
    const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1])
    await admin.config('SET', 'maxmemory-policy', 'noeviction')
    await admin.config('SET', 'maxmemory', String(used + 2 * MiB))
    try {
      const acknowledged: string[] = []
      let failure: unknown
      for (let i = 0; i < 500 && failure === undefined; i++) {
        await t.append('eu', Array.from({ length: 10 }, () => new Uint8Array(20_000))).then(
          (p) => acknowledged.push(...p),
          (e: unknown) => (failure = e),
        )
      }
      expect(failure).toMatchObject({ code: 'TRANSPORT', retriable: true, message: expect.stringMatching(/OOM/) })
      // A script is refused at its first write or runs whole: no batch half in the log.
      const ids = (await admin.xrange('{oom}:log:eu', '-', '+')).map(([id]) => id)
      expect(ids).toEqual(acknowledged)
    } finally {
      await admin.config('SET', 'maxmemory', '0')
      await t.close()
    }
  })

  it('a user without CONFIG still appends records past 1 MiB up to the limit, and one past it is a TooLargeError', async () => {
    await admin.call('ACL', 'SETUSER', 'no-config', 'on', '>pw', '~*', '+@all', '-config')
    const t = new RedisTransport({ redis: `redis://no-config:pw@127.0.0.1:${priv.port}`, keyPrefix: '{nocfg}' })
    try {
      await t.append('eu', [new Uint8Array(MiB)])
      await expect(t.append('eu', [new Uint8Array(MiB + 1)])).rejects.toBeInstanceOf(TooLargeError)
      await t.append('eu', [bytes('after')])
      expect(await admin.xlen('{nocfg}:log:eu')).toBe(2)
    } finally {
      await t.close()
    }
  })
})

describe.skipIf(!server.available)('RedisTransport and RedisStore meeting other programs\' writes', () => {
  const keyPrefix = `{concord-hostile-${randomUUID()}}`
  let admin: Redis
  beforeAll(() => {
    admin = new Redis(server.url)
  })
  afterAll(async () => {
    const keys = await admin.keys(`${keyPrefix}*`)
    if (keys.length > 0) await admin.del(...keys)
    await admin.quit()
  })

  it("lists the store's keys when another program added an index member with another score (keys() returned nothing: ZRANGEBYLEX needs equal scores)", async () => {
    const store = new RedisStore({ redis: server.url, keyPrefix: `${keyPrefix}s` })
    try {
      await store.put('doc/a', bytes('1'))
      await store.put('doc/b', bytes('2'))
      await admin.zadd(`${keyPrefix}s:keys`, 5, 'a-foreign')
      expect(await store.keys('doc/')).toEqual(['doc/a', 'doc/b'])
      expect(await store.keys('')).toEqual(['a-foreign', 'doc/a', 'doc/b'])
    } finally {
      await store.close()
    }
  })

  it('a stream key of another type is a ConfigError for every call; a stream deleted or a group destroyed under a blocked poll fails it retriable, and the next poll goes on (held before the review)', async () => {
    const t = new RedisTransport({ redis: server.url, keyPrefix })
    try {
      await admin.set(`${keyPrefix}:log:str`, 'x')
      await admin.hset(`${keyPrefix}:log:hash`, 'f', 'v')
      for (const origin of ['str', 'hash']) {
        for (const call of [() => t.append(origin, [bytes('a')]), () => t.poll('us', origin), () => t.commit('us', origin, '1-0'), () => t.earliest(origin), () => t.trim(origin, '1-0')]) {
          await expect(call()).rejects.toBeInstanceOf(ConfigError)
        }
      }
      expect(await admin.type(`${keyPrefix}:log:str`)).toBe('string')
      await t.append('del', [bytes('a')])
      expect((await t.poll('us', 'del')).map(text)).toEqual(['a'])
      for (const hostile of [() => admin.xgroup('DESTROY', `${keyPrefix}:log:del`, 'us'), () => admin.del(`${keyPrefix}:log:del`)]) {
        const blocked = t.poll('us', 'del', { waitMs: 5_000 }).then(
          () => undefined,
          (e: unknown) => e,
        )
        await new Promise((r) => setTimeout(r, 100))
        await hostile()
        expect(await blocked).toMatchObject({ code: 'TRANSPORT', retriable: true })
        await t.append('del', [bytes('b')])
        expect((await t.poll('us', 'del')).map(text).at(-1)).toBe('b')
      }
    } finally {
      await t.close()
    }
  })

  it('a consumer group destroyed under a reader, then a commit: the next poll resumes after the committed position (it gave the whole stream again)', async () => {
    const t = new RedisTransport({ redis: server.url, keyPrefix })
    try {
      await t.append('gd', ['a', 'b', 'c'].map(bytes))
      const got = await t.poll('us', 'gd')
      expect(got.map(text)).toEqual(['a', 'b', 'c'])
      await admin.xgroup('DESTROY', `${keyPrefix}:log:gd`, 'us')
      const last = (got[2] as LogRecord).position
      // The first commit meets NOGROUP (retriable); its retry recreates the group.
      await t.commit('us', 'gd', last).catch(() => undefined)
      await t.commit('us', 'gd', last)
      await t.append('gd', [bytes('d')])
      expect((await t.poll('us', 'gd')).map(text)).toEqual(['d'])
      expect(await t.committed('us', 'gd')).toBe(last)
    } finally {
      await t.close()
    }
  })

  it("a new process reading as a reader under another consumer name gets the dead one's uncommitted records once, in log order (a claim sweep gave them ahead of the read, and again after it)", async () => {
    const dead = new RedisTransport({ redis: server.url, keyPrefix, consumer: 'dead' })
    const fresh = new RedisTransport({ redis: server.url, keyPrefix, consumer: 'fresh', claimMinIdleMs: 0, claimIntervalMs: 0 })
    try {
      await dead.append('tk', ['1', '2', '3', '4', '5', '6'].map(bytes))
      expect((await dead.poll('us', 'tk')).map(text)).toEqual(['1', '2', '3', '4', '5', '6'])
      await dead.close()
      const got: string[] = []
      for (let i = 0; i < 6; i++) got.push(...(await fresh.poll('us', 'tk', { max: 2 })).map(text))
      expect(got).toEqual(['1', '2', '3', '4', '5', '6'])
    } finally {
      await dead.close()
      await fresh.close()
    }
  })
})
