/**
 * A partition that heals only for new connections: a TCP proxy in front of a private Redis first
 * black-holes every connection (nothing answers, nothing closes), then lets new connections
 * through while the ones opened before stay dead — what a NAT or load balancer that lost its flow
 * state, or a failover behind one address, leaves. The kernel gives up on such a socket only after
 * about 15 minutes of retransmissions; the transport must not wait for that.
 */
import net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RedisStore } from './redisStore.js'
import { RedisTransport } from './redisTransport.js'
import { PrivateRedis, hasRedisServer } from './testServer.js'

const available = await hasRedisServer()

describe.skipIf(!available)('RedisTransport through a partition that heals for new connections only', () => {
  let server: PrivateRedis
  let proxy: net.Server
  let port = 0
  let blackholeAll = false
  let deadBefore = 0
  let deadAfter = Number.POSITIVE_INFINITY
  const sockets = new Set<net.Socket>()

  beforeAll(async () => {
    server = await PrivateRedis.start()
    proxy = net.createServer((client) => {
      const born = Date.now()
      const upstream = net.connect(server.port, '127.0.0.1')
      sockets.add(client)
      sockets.add(upstream)
      const dead = (): boolean => blackholeAll || born < deadBefore || born > deadAfter
      client.on('data', (d) => void (dead() || upstream.write(d)))
      upstream.on('data', (d) => void (dead() || client.write(d)))
      const end = (): void => {
        client.destroy()
        upstream.destroy()
      }
      for (const s of [client, upstream]) {
        s.on('close', end)
        s.on('error', end)
      }
    })
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
    port = (proxy.address() as net.AddressInfo).port
  })

  afterAll(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => proxy.close(() => resolve()))
    await server.stop()
  })

  it('polls fail at once while the server is silent, and reading, appending and committing resume once new connections get through (review findings)', async () => {
    const t = new RedisTransport({ redis: `redis://127.0.0.1:${port}`, keyPrefix: '{partition}', commandTimeoutMs: 500 })
    const writer = new RedisTransport({ redis: server.url, keyPrefix: '{partition}' })
    try {
      await writer.append('o', [Uint8Array.of(1)])
      expect(await t.poll('r', 'o')).toHaveLength(1)
      blackholeAll = true
      await expect(t.poll('r', 'o')).rejects.toThrow(/poll had no answer within 500 ms/)
      // Silent still: the next poll fails at once instead of waiting again.
      await expect(t.poll('r', 'o')).rejects.toThrow(/polls fail at once until it does/)
      // Healed, for new connections only; the main client's socket stays dead.
      blackholeAll = false
      deadBefore = Date.now()
      await writer.append('o', [Uint8Array.of(2)])
      // The probe used new connections and saw the server answer (it had pinged the main client's
      // dead socket, and every poll failed for good).
      let got: number[] = []
      let lastPosition = ''
      for (let i = 0; i < 100 && got.length === 0; i++) {
        const records = await t.poll('r', 'o').catch(() => [])
        got = records.map((r) => r.bytes[0] as number)
        if (records.length > 0) lastPosition = (records[records.length - 1] as { position: string }).position
        if (got.length === 0) await new Promise((r) => setTimeout(r, 100))
      }
      expect(got).toContain(2)
      // Commits and appends go through the main client: after a timeout it is reconnected (they
      // had timed out until the kernel dropped the socket).
      let committed = false
      for (let i = 0; i < 100 && !committed; i++) {
        committed = await t.commit('r', 'o', lastPosition).then(
          () => true,
          () => false,
        )
        if (!committed) await new Promise((r) => setTimeout(r, 100))
      }
      expect(committed).toBe(true)
      expect(await t.committed('r', 'o')).toBe(lastPosition)
      expect(await t.append('o', [Uint8Array.of(3)])).toHaveLength(1)
    } finally {
      await t.close()
      await writer.close()
    }
  })
  it('close() ends the probe of a silent server at once: no connection of the transport is left (review finding: the probe kept its connection, and the process, alive up to commandTimeoutMs after close)', async () => {
    blackholeAll = false
    deadBefore = 0
    const t = new RedisTransport({ redis: `redis://127.0.0.1:${port}`, keyPrefix: '{partition-close}', commandTimeoutMs: 3_000 })
    const open = (): number => [...sockets].filter((x) => !x.destroyed).length
    try {
      await t.append('o', [Uint8Array.of(1)])
      // Connections made from now on are silent; the main client's stays healthy (so close() need
      // not wait out its QUIT).
      deadAfter = Date.now()
      await expect(t.poll('r', 'o', { waitMs: 0 })).rejects.toThrow(/poll had no answer within/)
      // The probe is on: its connection waits on the silent server for up to 3 s.
      await new Promise((r) => setTimeout(r, 300))
    } finally {
      await t.close()
      deadAfter = Number.POSITIVE_INFINITY
    }
    await new Promise((r) => setTimeout(r, 300))
    expect(open(), 'proxy connections still open 300 ms after close()').toBe(0)
  })

  it('a poll whose answer is still arriving over a slow link is not timed out: it waits while bytes come (review finding: 16 records of 1 MiB at 2 MB/s failed every poll at 5 s, and each retry read them again)', async () => {
    // A proxy passing the server's answers on at about 1 MB/s, 16 KiB every 16 ms.
    const links = new Set<net.Socket>()
    const slow = net.createServer((client) => {
      const upstream = net.connect(server.port, '127.0.0.1')
      links.add(client)
      links.add(upstream)
      const queue: Buffer[] = []
      const timer = setInterval(() => {
        let budget = 16 * 1024
        while (budget > 0 && queue.length > 0) {
          const head = queue[0] as Buffer
          const part = head.subarray(0, budget)
          client.write(part)
          budget -= part.length
          if (part.length === head.length) queue.shift()
          else queue[0] = head.subarray(part.length)
        }
      }, 16)
      client.on('data', (d) => void upstream.write(d))
      upstream.on('data', (d) => void queue.push(d))
      const end = (): void => {
        clearInterval(timer)
        client.destroy()
        upstream.destroy()
      }
      for (const x of [client, upstream]) {
        x.on('close', end)
        x.on('error', end)
      }
    })
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve))
    const t = new RedisTransport({ redis: `redis://127.0.0.1:${(slow.address() as net.AddressInfo).port}`, keyPrefix: '{partition-slow}', commandTimeoutMs: 500 })
    const writer = new RedisTransport({ redis: server.url, keyPrefix: '{partition-slow}' })
    try {
      const records = Array.from({ length: 8 }, (_, i) => new Uint8Array(256 * 1024).fill(i + 1))
      await writer.append('o', records)
      // 2 MiB at ~1 MB/s: about 2 s, four times commandTimeoutMs.
      const started = Date.now()
      const got = await t.poll('r', 'o', { waitMs: 0 })
      expect(got.map((r) => r.bytes[0])).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
      expect(Date.now() - started, 'the answer took longer than commandTimeoutMs (else this tests nothing)').toBeGreaterThan(1_000)
    } finally {
      await t.close()
      await writer.close()
      for (const x of links) x.destroy()
      await new Promise<void>((resolve) => slow.close(() => resolve()))
    }
  })

  it('RedisStore: its calls time out while the server is silent, and succeed once new connections get through (review finding: they timed out until the kernel dropped the socket)', async () => {
    blackholeAll = false
    deadBefore = 0
    const store = new RedisStore({ redis: `redis://127.0.0.1:${port}`, keyPrefix: '{partition-store}', commandTimeoutMs: 500 })
    try {
      await store.put('a', Uint8Array.of(1))
      blackholeAll = true
      await expect(store.get('a')).rejects.toMatchObject({ code: 'TRANSPORT', message: expect.stringMatching(/Command timed out/) })
      // Healed, for new connections only; the store's socket stays dead.
      blackholeAll = false
      deadBefore = Date.now()
      let value: Uint8Array | undefined
      const until = Date.now() + 20_000
      while (value === undefined && Date.now() < until) {
        value = await store.get('a').catch(() => undefined)
        if (value === undefined) await new Promise((r) => setTimeout(r, 100))
      }
      expect([...(value ?? [])]).toEqual([1])
      await store.put('b', Uint8Array.of(2))
      expect(await store.keys('')).toEqual(['a', 'b'])
    } finally {
      await store.close()
    }
  })
})
