/**
 * Faults on a real Redis, with three RegionNodes replicating native CRDTs (a PnCounter whose sum
 * checks that no acknowledged update is lost, and an OrSet): connections killed mid-stream, a
 * consumer crashing mid-batch, the server restarting without its data, and 10,000 corrupted
 * envelopes written straight into a stream. Each test runs on a private redis-server (its own
 * port), so killing clients or restarting it never disturbs the shared server on 6379.
 */
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { crdtFactory } from '@concord/crdt'
import { MemoryStore, RegionNode } from '@concord/replication'
import { FAULT_KEYS, FAULT_REGIONS as REGIONS, FaultCluster, corruptEnvelopes, retrying, trimsOnlyStable, type FaultRegion } from '@concord/testing'
import { RedisTransport } from './redisTransport.js'
import { PrivateRedis, hasRedisServer } from './testServer.js'

const factories = { 'pn-counter': crdtFactory('pn-counter'), 'or-set': crdtFactory('or-set') }

type Cluster = FaultCluster<RedisTransport, RegionNode, MemoryStore> & { readonly keyPrefix: string; readonly connectionName: string }

/** Three regions over the private server; keys under `keyPrefix`, connections named `connectionName` (for CLIENT KILL). */
function redisCluster(url: string, keyPrefix: string, connectionName: string): Cluster {
  const u = new URL(url)
  const cluster = new FaultCluster<RedisTransport, RegionNode, MemoryStore>({
    transport: () => new RedisTransport({ redis: { host: u.hostname, port: Number(u.port), connectionName, maxRetriesPerRequest: 3 }, keyPrefix }),
    node: (region: FaultRegion, transport, store) =>
      new RegionNode({ region, instance: 'i1', regions: [...REGIONS], transport, store, factories, keys: FAULT_KEYS, heartbeatIntervalMs: 100, repairTimeoutMs: 500, deadLetterLimit: 20_000 }),
    store: () => new MemoryStore(),
  })
  return Object.assign(cluster, { keyPrefix, connectionName })
}

const available = await hasRedisServer()

describe.skipIf(!available)('RegionNodes over a real Redis, with faults', () => {
  let server: PrivateRedis
  let admin: Redis
  let cluster: Cluster | undefined
  let n = 0

  beforeAll(async () => {
    server = await PrivateRedis.start()
    admin = new Redis(server.url)
    admin.on('error', () => undefined)
  })
  afterEach(async () => {
    await cluster?.close()
    cluster = undefined
  })
  afterAll(async () => {
    admin.disconnect()
    await server.stop()
  })

  function newCluster(): Cluster {
    n++
    cluster = redisCluster(server.url, `{faults-${n}}`, `concord-faults-${n}`)
    for (const r of REGIONS) cluster.start(r)
    return cluster
  }

  it('CLIENT KILL of every client connection mid-stream: nothing lost, nothing applied twice, all converge', async () => {
    const c = newCluster()
    let kills = 0
    for (let round = 0; round < 6; round++) {
      for (const r of REGIONS) await c.write(r, 50, `${r}${round}`)
      await c.pumpAll()
      // Kill by type (every normal client but the caller) and by name (the nodes' connections).
      kills += round % 2 === 0 ? Number(await admin.client('KILL', 'TYPE', 'normal')) : await killByName(admin, c.connectionName)
      await c.pumpAll()
    }
    await c.settle()
    expect(kills).toBeGreaterThan(6)
    await c.expectConverged()
    c.expectAppliedOnce(true)
  })

  it('started nodes (start(), no pump calls) carry on through CLIENT KILL and a server restart without its data', async () => {
    const c = newCluster()
    for (const r of REGIONS) await c.member(r).node.start()
    for (let round = 0; round < 4; round++) {
      for (const r of REGIONS) await c.write(r, 30, `${r}${round}`)
      if (round === 1) expect(Number(await admin.client('KILL', 'TYPE', 'normal'))).toBeGreaterThan(0)
      await new Promise((r) => setTimeout(r, 20))
    }
    // eu's next writes are appended while nobody reads, and lost with the server.
    for (const r of REGIONS) await c.member(r).node.stop()
    await c.write('eu', 60, 'eu-lost')
    await server.down()
    await server.up()
    for (const r of REGIONS) await c.member(r).node.start()
    for (const r of REGIONS) await c.write(r, 30, `${r}-after`)
    await c.waitConverged()
    await c.expectConverged()
    c.expectAppliedOnce(false)
    // The lost writes were repaired. Their effect may arrive before the repair completes (the later
    // writes' counter deltas restate eu's running totals), so the values converge first: wait.
    const repairs = (): number => c.member('us').node.metrics().peers.find((p) => p.region === 'eu')?.repairsApplied ?? 0
    await vitestWaitFor(() => repairs() > 0, 30_000)
    expect(repairs()).toBeGreaterThan(0)
  })

  it('a consumer crashing mid-batch (before its commit) restarts, gets the batch again and applies it once', async () => {
    const c = newCluster()
    for (const r of REGIONS) await c.write(r, 40, `${r}a`)
    await c.settle()
    // us dies while persisting a consumed batch: applied in memory, never stored, never committed.
    for (const r of REGIONS) await c.write(r, 40, `${r}b`)
    const us = c.member('us')
    us.store.freezeOnConsume = true
    void us.node.pump().catch(() => undefined)
    await vitestWaitFor(() => us.store.frozen)
    await us.transport.close()
    // The crash left a start registration without a stop: wait out the liveness window, then restart.
    await new Promise((r) => setTimeout(r, 400))
    c.start('us', us.store.inner.reopen())
    for (const r of REGIONS) await c.write(r, 40, `${r}c`)
    await c.settle()
    await c.expectConverged()
    c.expectAppliedOnce(true)
    // The pending entries the dead incarnation left were redelivered and de-duplicated or applied.
    // Closed first: a running node commits at most once per commitIntervalMs, so what it read in
    // its last second (a heartbeat, say) is still pending until close() commits it.
    await c.member('us').node.close()
    expect(Number((await admin.xpending(`${c.keyPrefix}:log:eu`, 'us/i1'))[0])).toBe(0)
  })

  it('the Redis server restarting without its data: nodes detect the lost log and repair by anti-entropy', async () => {
    const c = newCluster()
    for (const r of REGIONS) await c.write(r, 30, `${r}a`)
    await c.settle()
    // eu's next writes are acknowledged by Redis but nobody has read them when the server dies.
    await c.write('eu', 60, 'eu-lost')
    await c.write('us', 20, 'us-lost')
    await server.down()
    await server.up()
    // Writes go on against the empty server; the earlier ones exist only in the writers' stores.
    for (const r of REGIONS) await c.write(r, 30, `${r}b`)
    await c.settle()
    await c.expectConverged()
    // Lost envelopes came back as repair responses, not as envelopes: at most once each.
    c.expectAppliedOnce(false)
    const repaired = c.member('ap').node.metrics().peers.find((p) => p.region === 'eu')
    expect(repaired?.repairsApplied ?? 0).toBeGreaterThan(0)
  })

  it('a region trims its log while another lags: only what every region applied goes, and the laggard reads the rest from the log, with no repair (trimStable on the real log)', async () => {
    const c = newCluster()
    await trimsOnlyStable(c, 100)
  })

  it('10,000 corrupted envelopes written with XADD are each dead-lettered; the next valid one is applied', async () => {
    const c = newCluster()
    for (const r of REGIONS) await c.write(r, 10, `${r}a`)
    await c.settle()
    const us = c.member('us')
    const before = { counter: (await c.counter('us')).state(), set: (await c.set('us')).state() }
    const rejectedBefore = us.node.metrics().peers.find((p) => p.region === 'eu')?.rejected ?? 0
    const bad = corruptEnvelopes(10_000)
    const raw = new Redis(server.url)
    for (let i = 0; i < bad.length; i += 1000) {
      const p = raw.pipeline()
      for (const b of bad.slice(i, i + 1000)) p.xadd(`{faults-${n}}:log:eu`, '*', 'b', Buffer.from(b))
      await p.exec()
    }
    await raw.quit()
    const rejected = (): number => (us.node.metrics().peers.find((p) => p.region === 'eu')?.rejected ?? 0) - rejectedBefore
    for (let i = 0; i < 200 && rejected() < bad.length; i++) await retrying(() => us.node.pump())
    expect(rejected()).toBe(bad.length)
    expect(us.node.deadLetters().filter((d) => d.origin === 'eu')).toHaveLength(bad.length)
    expect((await c.counter('us')).state()).toEqual(before.counter)
    expect((await c.set('us')).state()).toEqual(before.set)
    // The consumer kept going: a valid envelope after the garbage is applied.
    await c.write('eu', 5, 'eu-after')
    await c.settle()
    await c.expectConverged()
    c.expectAppliedOnce(true)
  })
})

/** CLIENT KILL ID of every connection named `name` (Redis has no kill-by-name filter). */
async function killByName(admin: Redis, name: string): Promise<number> {
  const ids = String(await admin.client('LIST'))
    .split('\n')
    .filter((line) => line.includes(` name=${name} `))
    .map((line) => /(?:^|\s)id=(\d+)/.exec(line)?.[1])
    .filter((id): id is string => id !== undefined)
  for (const id of ids) await admin.client('KILL', 'ID', id).catch(() => undefined)
  return ids.length
}

/** Waits until `cond` holds (polling), failing after `ms` (by the clock, not a count of polls: a loaded machine polls less often). */
async function vitestWaitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  for (const until = Date.now() + ms; !cond() && Date.now() < until; ) await new Promise((r) => setTimeout(r, 10))
  expect(cond()).toBe(true)
}
