/**
 * A real Redis Cluster (three masters on private ports, `redis-cli --cluster create`): the shared
 * transport contract through an ioredis `Cluster` client, RedisStore on it, and three RegionNodes
 * replicating through it. The hash tag in the key prefix keeps an origin's stream and its committed
 * positions in one slot, which the commit script needs; different prefixes land on different masters.
 */
import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { promisify } from 'node:util'
import { Cluster } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bytesEqual } from '@concord/core'
import { crdtFactory, type OrSet } from '@concord/crdt'
import { RegionNode } from '@concord/replication'
import { runTransportContract } from '@concord/testing'
import { RedisStore } from './redisStore.js'
import { RedisTransport } from './redisTransport.js'
import { PrivateRedis, hasRedisServer } from './testServer.js'

const run = promisify(execFile)
const available = await hasRedisServer()

/** Three cluster-enabled servers joined into one cluster (no replicas), all slots covered. */
async function startCluster(): Promise<PrivateRedis[]> {
  const nodes: PrivateRedis[] = []
  for (let i = 0; i < 3; i++) nodes.push(await PrivateRedis.start(['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${i}.conf`]))
  await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'])
  // Wait until every node reports the cluster healthy (slots assigned and agreed).
  for (let i = 0; ; i++) {
    const states = await Promise.all(nodes.map(async (n) => (await run('redis-cli', ['-p', String(n.port), 'cluster', 'info'])).stdout))
    if (states.every((s) => s.includes('cluster_state:ok'))) return nodes
    if (i > 200) throw new Error(`redis cluster did not become healthy: ${states.join(' | ')}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe.skipIf(!available)('Redis Cluster', () => {
  let nodes: PrivateRedis[] = []
  const clients: Cluster[] = []
  const client = (): Cluster => {
    const c = new Cluster(nodes.slice(0, 1).map((n) => ({ host: '127.0.0.1', port: n.port })))
    c.on('error', () => undefined)
    clients.push(c)
    return c
  }

  beforeAll(async () => {
    nodes = await startCluster()
  })
  afterAll(async () => {
    for (const c of clients) c.disconnect()
    for (const n of nodes) await n.stop()
  })

  // The shared contract, each test on its own hash tag (so tests spread over the masters).
  runTransportContract('redis cluster', () => {
    const keyPrefix = `{contract-${randomUUID()}}`
    return { open: async () => new RedisTransport({ redis: client(), keyPrefix }) }
  })

  it('spreads key prefixes over the masters, each origin in one slot', async () => {
    const c = client()
    const owners = new Set<string>()
    for (let i = 0; i < 12; i++) {
      const t = new RedisTransport({ redis: c, keyPrefix: `{spread-${i}}` })
      await t.append('eu', [new Uint8Array([i])])
      const [rec] = await t.poll('us', 'eu')
      await t.commit('us', 'eu', (rec as { position: string }).position)
      expect(await t.committed('us', 'eu')).toBe((rec as { position: string }).position)
      owners.add(String(await c.call('CLUSTER', 'KEYSLOT', `{spread-${i}}:log:eu`)))
      await t.close()
    }
    // Twelve hash tags over 16,384 slots: not all in one slot (so not all on one master).
    expect(owners.size).toBeGreaterThan(1)
  })

  it('reads through a Cluster client made with enableOfflineQueue off (review finding: every poll failed, "Cluster isn\'t ready")', async () => {
    const c = new Cluster(nodes.slice(0, 1).map((n) => ({ host: '127.0.0.1', port: n.port })), { enableOfflineQueue: false })
    c.on('error', () => undefined)
    clients.push(c)
    await new Promise<void>((resolve) => (c.status === 'ready' ? resolve() : c.once('ready', () => resolve())))
    const t = new RedisTransport({ redis: c, keyPrefix: `{offline-${randomUUID()}}` })
    await t.append('eu', [new Uint8Array([7])])
    const got = await t.poll('us', 'eu', { waitMs: 1000 })
    expect(got.map((r) => r.bytes[0])).toEqual([7])
    await t.close()
  })

  it('carries three RegionNodes, each with its own RedisStore in the cluster', async () => {
    const regions = ['eu', 'us', 'ap']
    const prefix = `{nodes-${randomUUID()}}`
    const made = regions.map(
      (region) =>
        new RegionNode({
          region,
          instance: 'i1',
          regions,
          transport: new RedisTransport({ redis: client(), keyPrefix: prefix }),
          store: new RedisStore({ redis: client(), keyPrefix: `{store-${region}-${randomUUID()}}` }),
          factories: { 'or-set': crdtFactory('or-set') },
        }),
    )
    for (const [i, node] of made.entries()) {
      const set = (await node.open('tags', 'or-set')) as unknown as OrSet<string>
      for (let k = 0; k < 20; k++) set.add(`${regions[i] as string}-${k}`)
      await node.flush()
    }
    const full = async (): Promise<boolean> => (await Promise.all(made.map(async (n) => (await n.open<string[]>('tags', 'or-set')).value().length))).every((len) => len === 60)
    for (let round = 0; round < 50 && !(await full()); round++) for (const node of made) await node.pump()
    const states = await Promise.all(made.map(async (n) => (await n.open('tags', 'or-set')).state()))
    expect(await full()).toBe(true)
    expect(states.every((s) => bytesEqual(s, states[0] as Uint8Array))).toBe(true)
    for (const node of made) await node.close()
  })
})
