import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { crdtFactory, type OrSet, type PnCounter } from '@concord/crdt'
import { MemoryTransport, RegionNode } from '@concord/replication'
import { RedisStore } from './redisStore.js'
import { requireRedis } from './testServer.js'

const server = await requireRedis()

const b = (s: string): Uint8Array => new TextEncoder().encode(s)
const s = (x: Uint8Array | undefined): string | undefined => (x === undefined ? undefined : new TextDecoder().decode(x))

describe.skipIf(!server.available)('RedisStore against a real Redis', () => {
  const base = `concord-store-test-${randomUUID()}`
  let admin: Redis
  let n = 0
  const prefix = (): string => `{${base}-${++n}}`

  beforeAll(() => {
    admin = new Redis(server.url)
  })
  afterAll(async () => {
    const keys = await admin.keys(`{${base}*`)
    if (keys.length > 0) await admin.del(...keys)
    await admin.quit()
  })

  it('gets, puts, deletes, lists by prefix in code-unit order and applies batches in order', async () => {
    const st = new RedisStore({ redis: server.url, keyPrefix: prefix() })
    await st.put('doc/a', b('1'))
    await st.write([
      { op: 'put', key: 'doc/b', value: b('2') },
      { op: 'put', key: 'pos/x', value: b('9') },
      { op: 'delete', key: 'doc/a' },
      { op: 'put', key: 'doc/b', value: b('3') },
    ])
    expect(s(await st.get('doc/a'))).toBeUndefined()
    expect(s(await st.get('doc/b'))).toBe('3')
    expect(await st.keys('doc/')).toEqual(['doc/b'])
    await st.delete('doc/b')
    await st.delete('missing')
    expect(await st.keys('')).toEqual(['pos/x'])
    // Binary values and keys outside ASCII; U+FFFD sorts after U+1F600 in UTF-16, before it in UTF-8.
    await st.write([
      { op: 'put', key: 'u/\u{1F600}', value: new Uint8Array([0, 255, 0]) },
      { op: 'put', key: 'u/\uFFFD', value: new Uint8Array(0) },
      { op: 'put', key: 'u/a', value: b('a') },
      { op: 'put', key: 'u', value: b('not under u/') },
    ])
    expect(await st.keys('u/')).toEqual(['u/a', 'u/\u{1F600}', 'u/\uFFFD'])
    expect([...((await st.get('u/\u{1F600}')) ?? [])]).toEqual([0, 255, 0])
    expect((await st.get('u/\uFFFD'))?.length).toBe(0)
    await expect(st.write([{ op: 'put', key: '', value: b('x') }])).rejects.toMatchObject({ code: 'CONFIG' })
    // A rejected batch applies nothing, even its valid operations.
    await expect(st.write([{ op: 'put', key: 'ok', value: b('x') }, { op: 'delete', key: '' }])).rejects.toMatchObject({ code: 'CONFIG' })
    expect(await st.get('ok')).toBeUndefined()
    await st.close()
    await expect(st.get('pos/x')).rejects.toMatchObject({ code: 'CLOSED' })
    await st.close()
  })

  it('rejects a prefix without a hash tag', () => {
    expect(() => new RedisStore({ redis: server.url, keyPrefix: 'no-tag' })).toThrow(expect.objectContaining({ code: 'CONFIG' }))
  })

  it('a second client over the same prefix sees every write (durable across processes)', async () => {
    const p = prefix()
    const st = new RedisStore({ redis: server.url, keyPrefix: p })
    for (let i = 0; i < 50; i++) await st.write([{ op: 'put', key: `k/${i}`, value: b(`v${i}`) }, { op: 'put', key: 'last', value: b(String(i)) }])
    await st.close()
    const again = new RedisStore({ redis: server.url, keyPrefix: p })
    expect(await again.keys('k/')).toHaveLength(50)
    expect(s(await again.get('last'))).toBe('49')
    await again.close()
    // Every key shares the prefix's hash tag (one Cluster slot).
    const keys = await admin.keys(`${p}*`)
    expect(keys.length).toBe(52) // 51 values and the index
    expect(new Set(keys.map((k) => k.slice(0, p.length))).size).toBe(1)
  })

  it('batches are atomic: a concurrent reader never sees half of one', async () => {
    const p = prefix()
    const writer = new RedisStore({ redis: server.url, keyPrefix: p })
    const reader = new Redis(server.url)
    let torn = 0
    let done = false
    // The reader fetches both keys in one MULTI; a non-atomic write would show them different.
    const watch = (async () => {
      while (!done) {
        const r = await reader.multi().get(`${p}:kv:a`).get(`${p}:kv:b`).exec()
        const a = r?.[0]?.[1]
        const bb = r?.[1]?.[1]
        if (a !== bb) torn++
      }
    })()
    for (let i = 0; i < 300; i++) {
      await writer.write([
        { op: 'put', key: 'a', value: b(String(i)) },
        { op: 'put', key: 'b', value: b(String(i)) },
      ])
    }
    done = true
    await watch
    expect(torn).toBe(0)
    await reader.quit()
    await writer.close()
  })

  it('a batch that fails writes nothing: a foreign key of another type at the index (review finding: half applied)', async () => {
    const p = prefix()
    const st = new RedisStore({ redis: server.url, keyPrefix: p })
    await st.put('x', b('1'))
    // Another program writes a string where the store keeps its index.
    await admin.set(`${p}:keys`, 'not a sorted set')
    await expect(st.write([{ op: 'put', key: 'y', value: b('5') }, { op: 'delete', key: 'x' }])).rejects.toMatchObject({ code: 'CONFIG', message: expect.stringMatching(/not a sorted set.*nothing was written/) })
    expect(await admin.get(`${p}:kv:y`)).toBeNull()
    expect(await admin.get(`${p}:kv:x`)).toBe('1')
    // Put right, the store writes again.
    await admin.del(`${p}:keys`)
    await st.write([{ op: 'put', key: 'y', value: b('5') }, { op: 'delete', key: 'x' }])
    expect(s(await st.get('y'))).toBe('5')
    expect(await st.keys('')).toEqual(['y'])
    await st.close()
  })

  it('loads its script again on a server that lost it (SCRIPT FLUSH, a restart)', async () => {
    const st = new RedisStore({ redis: server.url, keyPrefix: prefix() })
    await st.put('a', b('1'))
    await admin.script('FLUSH')
    await st.put('b', b('2'))
    expect(await st.keys('')).toEqual(['a', 'b'])
    await st.close()
  })

  it('borrows a client passed in and leaves it open on close', async () => {
    const client = new Redis(server.url)
    const st = new RedisStore({ redis: client, keyPrefix: prefix() })
    await st.put('x', b('1'))
    await st.close()
    expect(await client.ping()).toBe('PONG')
    await client.quit()
  })

  it('holds a region node: a restarted node resumes from the Redis store with nothing lost or applied twice', async () => {
    const transport = new MemoryTransport()
    const regions = ['eu', 'us']
    const factories = { 'pn-counter': crdtFactory('pn-counter'), 'or-set': crdtFactory('or-set') }
    const storePrefix = { eu: prefix(), us: prefix() }
    const make = (region: 'eu' | 'us'): { node: RegionNode; store: RedisStore } => {
      const store = new RedisStore({ redis: server.url, keyPrefix: storePrefix[region] })
      return { node: new RegionNode({ region, instance: 'i1', regions, transport, store, factories }), store }
    }
    const eu = make('eu')
    let us = make('us')
    const c = await eu.node.open<number>('hits', 'pn-counter')
    const set = await eu.node.open<readonly string[]>('tags', 'or-set')
    for (let i = 1; i <= 20; i++) (c as unknown as PnCounter).increment(i)
    ;(set as unknown as OrSet<string>).add('red')
    await eu.node.pump()
    await us.node.pump()
    // us restarts over the same Redis store (a process restart): state and positions come back.
    await us.node.close()
    await us.store.close()
    us = make('us')
    ;(c as unknown as PnCounter).increment(1000)
    await eu.node.pump()
    for (let i = 0; i < 3; i++) await us.node.pump()
    const usCounter = await us.node.open<number>('hits', 'pn-counter')
    const usSet = await us.node.open<readonly string[]>('tags', 'or-set')
    expect(usCounter.value()).toBe(210 + 1000)
    expect(usSet.value()).toEqual(['red'])
    await eu.node.close()
    await us.node.close()
    await eu.store.close()
    await us.store.close()
  })
})
