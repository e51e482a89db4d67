/**
 * Edge cases a review found, each demonstrated against a real server: a server that stops
 * answering, ioredis options that broke reads, a rewind followed by a lost connection, argument
 * checks, a replay of pending entries that were trimmed meanwhile, entries written by other
 * clients, timeouts past Node's timers. Each test failed before its fix.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, DecodeError, TransportError, type LogRecord, type Transport } from '@concord/core'
import { crdtFactory } from '@concord/crdt'
import { MemoryStore, RegionNode } from '@concord/replication'
import { RedisStore } from './redisStore.js'
import { RedisTransport } from './redisTransport.js'
import { PrivateRedis, hasRedisServer, requireRedis } from './testServer.js'

const server = await requireRedis()
const canStartServers = await hasRedisServer()

const enc = new TextEncoder()
const dec = new TextDecoder()
const bytes = (s: string): Uint8Array => enc.encode(s)
const text = (r: LogRecord): string => dec.decode(r.bytes)

describe.skipIf(!server.available)('RedisTransport and RedisStore edge cases', () => {
  const keyPrefix = `{concord-edges-${randomUUID()}}`
  let admin: Redis
  beforeAll(() => {
    admin = new Redis(server.url)
  })
  afterAll(async () => {
    const keys = await admin.keys(`${keyPrefix}*`)
    if (keys.length > 0) await admin.del(...keys)
    await admin.quit()
  })

  it('a rewind, then a lost connection: the next poll gives each record once, in order (it gave the rewound ones twice, out of order)', async () => {
    const t = new RedisTransport({ redis: { host: new URL(server.url).hostname, port: Number(new URL(server.url).port), connectionName: `edges-${randomUUID()}` }, keyPrefix })
    try {
      const positions = await t.append('eu', ['a', 'b', 'c', 'd', 'e', 'f'].map(bytes))
      expect((await t.poll('us', 'eu', { max: 10 })).map(text)).toEqual(['a', 'b', 'c', 'd', 'e', 'f'])
      await t.commit('us', 'eu', positions[1] as string)
      await t.rewind('us', 'eu')
      const name = (t as unknown as { client: Redis }).client.options.connectionName as string
      const list = String(await admin.client('LIST'))
      for (const line of list.split('\n').filter((l) => l.includes(` name=${name} `))) await admin.client('KILL', 'ID', /id=(\d+)/.exec(line)?.[1] as string)
      // The poll that finds its connection gone fails; the one after replays, then reads on.
      await t.poll('us', 'eu', { max: 10 }).catch(() => undefined)
      const got = await t.poll('us', 'eu', { max: 10 })
      expect(got.map(text)).toEqual(['c', 'd', 'e', 'f'])
    } finally {
      await t.close()
    }
  })

  it('reads with enableOfflineQueue: false and a commandTimeout shorter than waitMs in the ioredis options (every poll failed; a waiting poll timed out)', async () => {
    const u = new URL(server.url)
    const t = new RedisTransport({ redis: { host: u.hostname, port: Number(u.port), enableOfflineQueue: false, commandTimeout: 200 }, keyPrefix })
    try {
      // The main connection is up before the first command (enableOfflineQueue: false refuses commands before that).
      await (t as unknown as { client: Redis }).client.ping().catch(async () => new Promise((r) => setTimeout(r, 200)))
      await t.append('oq', [bytes('x')])
      let got: readonly LogRecord[] = []
      for (let i = 0; i < 20 && got.length === 0; i++) got = await t.poll('r', 'oq', { waitMs: 0 }).catch(() => [])
      expect(got.map(text)).toEqual(['x'])
      const started = Date.now()
      expect(await t.poll('r', 'oq', { waitMs: 600 })).toEqual([])
      expect(Date.now() - started).toBeGreaterThanOrEqual(550)
    } finally {
      await t.close()
    }
  })

  it("refuses ioredis's own keyPrefix (reads met NOGROUP for ever: XGROUP's keys were not prefixed)", () => {
    expect(() => new RedisTransport({ redis: { keyPrefix: 'app:' }, keyPrefix })).toThrow(ConfigError)
    const client = new Redis(server.url, { keyPrefix: 'app:', lazyConnect: true })
    expect(() => new RedisTransport({ redis: client, keyPrefix })).toThrow(/ioredis's keyPrefix/)
    client.disconnect()
  })

  it('takes a fractional waitMs (BLOCK refused it with a non-retriable error) and an abort during the first poll\'s setup (it blocked for the whole waitMs)', async () => {
    const t = new RedisTransport({ redis: server.url, keyPrefix })
    try {
      expect(await t.poll('r', 'frac', { waitMs: 10.5 })).toEqual([])
      const ac = new AbortController()
      const started = Date.now()
      const first = t.poll('r2', 'frac2', { waitMs: 8_000, signal: ac.signal })
      ac.abort()
      expect(await first).toEqual([])
      expect(Date.now() - started).toBeLessThan(4_000)
    } finally {
      await t.close()
    }
  })

  it('checks every name and store argument (commit to origin undefined resolved; store calls threw TypeErrors; lone-surrogate keys merged)', async () => {
    const t = new RedisTransport({ redis: server.url, keyPrefix })
    const store = new RedisStore({ redis: server.url, keyPrefix: `${keyPrefix}s` })
    try {
      const bad = undefined as unknown as string
      for (const call of [() => t.commit('r', bad, '1-0'), () => t.committed('r', bad), () => t.committed(bad, 'o'), () => t.rewind('r', bad), () => t.earliest(bad), () => t.trim(bad, '1-0')]) {
        await expect(call()).rejects.toBeInstanceOf(ConfigError)
      }
      for (const call of [
        () => store.write(null as never),
        () => store.write([null] as never),
        () => store.get(bad),
        () => store.keys(bad),
        () => store.put('doc/\uD800', bytes('hi')),
        () => store.get('doc/\uDC00'),
      ]) {
        await expect(call()).rejects.toBeInstanceOf(ConfigError)
      }
      expect(await admin.keys(`${keyPrefix}:*undefined*`)).toEqual([])
    } finally {
      await t.close()
      await store.close()
    }
  })

  it('a replay of pending entries trimmed meanwhile finishes before newer entries are read (the rest of the replay came after them: out of log order)', async () => {
    const t = new RedisTransport({ redis: server.url, keyPrefix, claimIntervalMs: 1_000_000_000 })
    try {
      const positions = await t.append('ro', ['e1', 'e2', 'e3', 'e4', 'e5', 'e6'].map(bytes))
      expect((await t.poll('r', 'ro', { max: 6 })).map(text)).toEqual(['e1', 'e2', 'e3', 'e4', 'e5', 'e6'])
      // e1..e3 go while still pending for r (delivered, not committed); a waiting poll is aborted.
      await t.trim('ro', positions[3] as string)
      const ac = new AbortController()
      setTimeout(() => ac.abort(), 100)
      await t.poll('r', 'ro', { max: 3, waitMs: 2000, signal: ac.signal })
      await t.append('ro', ['e7', 'e8', 'e9'].map(bytes))
      const got: string[] = []
      for (let i = 0; i < 4; i++) got.push(...(await t.poll('r', 'ro', { max: 3 })).map(text))
      expect(got).toEqual(['e4', 'e5', 'e6', 'e7', 'e8', 'e9'])
    } finally {
      await t.close()
    }
  })

  it('an entry another client wrote without the record field reaches the reader, which dead-letters it (it was dropped without a trace)', async () => {
    const t = new RedisTransport({ redis: server.url, keyPrefix: `${keyPrefix}nb` })
    const node = new RegionNode({ region: 'a', instance: 'i1', regions: ['a', 'b'], transport: t, store: new MemoryStore(), factories: { 'pn-counter': crdtFactory('pn-counter') } })
    try {
      await node.pump()
      for (let i = 0; i < 3; i++) await admin.xadd(`${keyPrefix}nb:log:b`, '*', 'B', Buffer.from([1, 2, 3, i]))
      await admin.xadd(`${keyPrefix}nb:log:b`, '*', 'b', Buffer.from('not an envelope'))
      // Anyone's field names: a few of them go into the message, each cut short.
      await admin.xadd(`${keyPrefix}nb:log:b`, '*', 'n'.repeat(100), '1', 'f2', '2', 'f3', '3', 'f4', '4', 'f5', '5', 'f6', '6', 'f7', '7')
      for (let i = 0; i < 3; i++) await node.pump()
      expect(node.deadLetters()).toHaveLength(5)
      expect(node.metrics().peers.find((p) => p.region === 'b')?.rejected).toBe(5)
      expect(node.deadLetters()[4]?.message).toMatch(new RegExp(`has no 'b' field \\(fields "${'n'.repeat(40)}…", "f2", "f3", "f4", "f5" and 2 more\\)`))
      // Saying what they were (it said "unexpected end of data", as for a truncated envelope).
      const letters = node.deadLetters()
      for (const d of letters.slice(0, 3)) expect(d).toMatchObject({ code: 'DECODE', message: expect.stringMatching(/^redis stream entry \d+-\d+ has no 'b' field \(fields "B"\): not written by a Concord transport$/) })
      expect(letters[3]?.message).not.toMatch(/field/)
    } finally {
      await node.close()
      await t.close()
    }
  })

  it('refuses timeouts past what a Node timer holds, poll counts past what Redis takes, and stream ids past 64 bits (every call failed after 1 ms; Redis refused them untyped)', async () => {
    for (const commandTimeoutMs of [2 ** 31, 2 ** 30 + 1, 0, 1.5]) expect(() => new RedisTransport({ keyPrefix, commandTimeoutMs })).toThrow(ConfigError)
    expect(() => new RedisTransport({ keyPrefix, waitTimeoutMs: 2 ** 31 })).toThrow(ConfigError)
    expect(() => new RedisStore({ keyPrefix, commandTimeoutMs: 2 ** 31 })).toThrow(ConfigError)
    expect(() => new RedisStore({ keyPrefix, waitTimeoutMs: 2 ** 31 })).toThrow(ConfigError)
    const t = new RedisTransport({ redis: server.url, keyPrefix })
    try {
      await expect(t.poll('r', 'big', { max: 1e21 })).rejects.toThrow(ConfigError)
      await expect(t.commit('r', 'big', '99999999999999999999-0')).rejects.toThrow(DecodeError)
      await expect(t.trim('big', '1-99999999999999999999')).rejects.toThrow(DecodeError)
      expect(() => t.comparePositions('18446744073709551616-0', '1-0')).toThrow(DecodeError)
      // The largest id is one.
      expect(t.comparePositions('18446744073709551615-18446744073709551615', '1-0')).toBe(1)
    } finally {
      await t.close()
    }
  })

  it('latest() is the id of the last entry, undefined for an empty or missing stream', async () => {
    const t = new RedisTransport({ redis: server.url, keyPrefix })
    try {
      expect(await t.latest('lt-none')).toBeUndefined()
      const positions = await t.append('lt', ['x', 'y'].map(bytes))
      expect(await t.latest('lt')).toBe(positions[1])
    } finally {
      await t.close()
    }
  })
})

describe.skipIf(!canStartServers)('RedisTransport and RedisStore against a server that stops answering', () => {
  let frozen: PrivateRedis
  beforeAll(async () => {
    frozen = await PrivateRedis.start()
  })
  afterAll(async () => {
    await frozen.stop()
  })

  it('fails polls, commits and store writes with retriable errors and closes, within waitMs + commandTimeoutMs (they waited for ever)', async () => {
    const t: Transport = new RedisTransport({ redis: frozen.url, keyPrefix: '{f}', commandTimeoutMs: 300 })
    const store = new RedisStore({ redis: frozen.url, keyPrefix: '{fs}', commandTimeoutMs: 300 })
    const [p] = await t.append('eu', [bytes('a')])
    expect((await t.poll('us', 'eu')).map(text)).toEqual(['a'])
    await store.put('k', bytes('v'))
    await frozen.freeze(true)
    try {
      const timed = async (call: () => Promise<unknown>): Promise<{ error: unknown; ms: number }> => {
        const started = Date.now()
        const error = await call().then(
          () => undefined,
          (e: unknown) => e,
        )
        return { error, ms: Date.now() - started }
      }
      // Bounded, not waiting for a server that never answers; the bounds leave room for a loaded
      // machine (a call takes about its 300 ms command timeout on a quiet one).
      for (const [what, call, within] of [
        ['poll', () => t.poll('us', 'eu', { waitMs: 0 }), 10_000],
        ['waiting poll', () => t.poll('us', 'eu', { waitMs: 500 }), 10_000],
        ['commit', () => t.commit('us', 'eu', p as string), 10_000],
        ['store write', () => store.put('k', bytes('w')), 10_000],
      ] as const) {
        const r = await timed(call)
        expect({ what, retriable: r.error instanceof TransportError && r.error.retriable }).toEqual({ what, retriable: true })
        expect(r.ms, what).toBeLessThan(within)
      }
      const closing = await timed(async () => {
        await t.close()
        await store.close()
      })
      expect(closing.ms).toBeLessThan(10_000)
    } finally {
      await frozen.freeze(false)
    }
  })
})
