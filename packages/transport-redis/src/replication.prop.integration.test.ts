/**
 * The replication property (packages/replication/src/replication.prop.test.ts) on a real Redis:
 * RegionNodes over RedisTransport, one stream per region, under the harness's generated faults —
 * lost, duplicated and reordered deliveries, partitions, crashes at any append or commit with a
 * restart from the node's store (a new RedisTransport, its consumer's pending entries left in the
 * group), clock skew — must converge, lose no acknowledged write, apply none twice and agree with
 * the type's oracle. Every run is a fresh deployment under its own key prefix, deleted afterwards.
 *
 * Fewer cases than over MemoryTransport (each round is real round trips): CONCORD_SERVER_RUNS sets
 * them (default 40 per property; 400 under `npm run soak`); the schedules found failing before
 * (replicationRegressions) are replayed first. A failure prints its seed and path.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Transport } from '@concord/core'
import { MemoryStore, RegionNode } from '@concord/replication'
import { assertAsyncProperty, checkReplication, nativeSpecs, replicationRegressions, serverRuns, pnCounterSpec, type ReplicationBackend } from '@concord/testing'
import { RedisTransport } from './redisTransport.js'
import { requireRedis } from './testServer.js'

const server = await requireRedis()

describe.skipIf(!server.available)('replication property on a real Redis', () => {
  let admin: Redis
  /** Every transport of the current run (one per node incarnation): closed, and its keys deleted, after it. */
  const open: Transport[] = []
  let prefix = ''

  beforeAll(() => {
    admin = new Redis(server.url)
    admin.on('error', () => undefined)
  })
  afterAll(() => {
    admin.disconnect()
  })

  /** A fresh deployment: its own key prefix (hash-tagged: one slot, as on a cluster). */
  function backend(): ReplicationBackend {
    prefix = `{prop-${randomUUID()}}:`
    return {
      connect: () => {
        const t = new RedisTransport({ redis: server.url, keyPrefix: prefix })
        open.push(t)
        return t
      },
      store: () => new MemoryStore(),
      node: (o) => new RegionNode(o),
    }
  }

  /**
   * Runs that wrote no stream (they did not run on Redis), checked once the property has passed:
   * thrown from the afterEach hook, this error would replace the failure of a run that failed
   * before its nodes appended anything, and fast-check would print neither that failure nor its seed.
   */
  let unreplicated: string[] = []

  /** Closes the run's transports and deletes its keys; notes a run that wrote no stream. */
  async function cleanup(): Promise<void> {
    await Promise.all(open.splice(0).map((t) => t.close().catch(() => undefined)))
    let cursor = '0'
    let streams = 0
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      for (const k of keys) if ((await admin.type(k)) === 'stream') streams++
      if (keys.length > 0) await admin.del(...keys)
      cursor = next
    } while (cursor !== '0')
    if (streams === 0) unreplicated.push(prefix)
  }

  for (const spec of nativeSpecs) {
    it(`${spec.name}: converges, no loss, exactly-once, oracle, liveness, availability`, async () => {
      const property = checkReplication(spec, backend).afterEach(async (previous) => {
        await previous()
        await cleanup()
      })
      unreplicated = []
      await assertAsyncProperty(`${spec.name} replication/redis`, property, { numRuns: serverRuns(40, 400), examples: replicationRegressions[spec.name] ?? [] })
      expect(unreplicated, 'runs that left no stream: they did not replicate through Redis').toEqual([])
    }, 600_000)
  }

  it('PnCounter: envelopes refused for clock skew past maxDriftMs are repaired once the clocks agree, each increment counted once', async () => {
    const property = checkReplication(pnCounterSpec, backend, { overDrift: true }).afterEach(async (previous) => {
      await previous()
      await cleanup()
    })
    unreplicated = []
    await assertAsyncProperty('PnCounter replication/redis/over-drift', property, { numRuns: serverRuns(40, 400) })
    expect(unreplicated, 'runs that left no stream: they did not replicate through Redis').toEqual([])
  }, 600_000)
})
