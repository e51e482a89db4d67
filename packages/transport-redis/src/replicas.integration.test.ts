/**
 * waitReplicas on real servers: a private primary with a private replica (`--replicaof`). An
 * append or store write returns once the replica acknowledged it (WAIT); with the replica gone it
 * fails retriably after waitTimeoutMs, and what it wrote is in the log (a retry appends it again:
 * at-least-once). Also through ioredis's stringNumbers, under which WAIT answers with a string
 * (review finding: every append failed after it landed, and every retry appended it again).
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TransportError } from '@concord/core'
import { RedisStore } from './redisStore.js'
import { RedisTransport } from './redisTransport.js'
import { PrivateRedis, hasRedisServer } from './testServer.js'

const available = await hasRedisServer()

describe.skipIf(!available)('waitReplicas with a real replica', () => {
  let primary: PrivateRedis
  let replica: PrivateRedis

  beforeAll(async () => {
    primary = await PrivateRedis.start()
    replica = await PrivateRedis.start(['--replicaof', '127.0.0.1', String(primary.port)])
    // Until the replica's initial sync is done it acknowledges nothing.
    const c = new Redis(replica.url)
    try {
      for (let i = 0; !/master_link_status:up/.test(await c.info('replication')); i++) {
        if (i > 400) throw new Error('the replica did not sync with its primary')
        await new Promise((r) => setTimeout(r, 25))
      }
    } finally {
      c.disconnect()
    }
  })
  afterAll(async () => {
    await replica?.stop()
    await primary?.stop()
  })

  it('appends and store writes return once the replica has them, also under stringNumbers (a URL parameter here)', async () => {
    for (const url of [primary.url, `${primary.url}/?stringNumbers=true`]) {
      const keyPrefix = `{replicas-${randomUUID()}}`
      const t = new RedisTransport({ redis: url, keyPrefix, waitReplicas: 1, waitTimeoutMs: 2_000 })
      const s = new RedisStore({ redis: url, keyPrefix: `${keyPrefix}s`, waitReplicas: 1, waitTimeoutMs: 2_000 })
      const onReplica = new Redis(replica.url)
      try {
        const [position] = await t.append('o', [Uint8Array.of(7)])
        await s.put('k', Uint8Array.of(8))
        // Acknowledged by the replica: readable there at once.
        expect(await onReplica.xlen(`${keyPrefix}:log:o`)).toBe(1)
        expect([...((await onReplica.getBuffer(`${keyPrefix}s:kv:k`)) ?? [])]).toEqual([8])
        expect(await t.latest('o')).toBe(position)
      } finally {
        onReplica.disconnect()
        await t.close()
        await s.close()
      }
    }
  })

  it('with the replica gone, an append fails retriably after waitTimeoutMs, and its record is in the log (at-least-once)', async () => {
    const keyPrefix = `{replicas-${randomUUID()}}`
    const t = new RedisTransport({ redis: primary.url, keyPrefix, waitReplicas: 1, waitTimeoutMs: 300 })
    try {
      await replica.down()
      const e = await t.append('o', [Uint8Array.of(1)]).then(
        () => undefined,
        (err: unknown) => err,
      )
      expect(e).toBeInstanceOf(TransportError)
      expect((e as TransportError).retriable).toBe(true)
      expect((e as Error).message).toMatch(/append \(WAIT\) failed: only 0 of 1 replicas acknowledged/)
      const records = await t.poll('r', 'o')
      expect(records.map((r) => [...r.bytes])).toEqual([[1]])
    } finally {
      await t.close()
    }
  })
})
