/**
 * Faults on a real Kafka broker, with three RegionNodes replicating native CRDTs (a PnCounter whose
 * sum checks that no acknowledged update is lost, and an OrSet): the broker stopped and restarted
 * mid-stream, a consumer crashing before its commit, and 10,000 corrupted envelopes produced
 * straight into a topic. The tests run on a private broker (own ports and data directory, started
 * with scripts/kafka.sh), so stopping it never disturbs the shared broker on 9092.
 */
import { Kafka, logLevel } from 'kafkajs'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { bytesEqual, encodeEnvelope, isConcordError, type Envelope, type Store, type StoreOp } from '@concord/core'
import { crdtFactory, type OrSet, type PnCounter } from '@concord/crdt'
import { MemoryStore, RegionNode } from '@concord/replication'
import { KafkaTransport } from './kafkaTransport.js'
import { PrivateKafka, canRunKafka } from './testServer.js'

const REGIONS = ['eu', 'us', 'ap'] as const
type Region = (typeof REGIONS)[number]
const KEYS: Record<Region, Uint8Array> = {
  eu: new Uint8Array(32).fill(1),
  us: new Uint8Array(32).fill(2),
  ap: new Uint8Array(32).fill(3),
}
const factories = { 'pn-counter': crdtFactory('pn-counter'), 'or-set': crdtFactory('or-set') }
/** Store wrapper: remembers the node's applied counts at each durable write, and can freeze (a crash). */
class WatchedStore implements Store {
  readonly name = 'watched'
  onWritten: () => void = () => undefined
  /** When set, the next write containing a consumer position never completes: the process "died". */
  freezeOnConsume = false
  frozen = false
  constructor(readonly inner: MemoryStore) {}
  get(key: string): Promise<Uint8Array | undefined> {
    return this.inner.get(key)
  }
  put(key: string, value: Uint8Array): Promise<void> {
    return this.write([{ op: 'put', key, value }])
  }
  delete(key: string): Promise<void> {
    return this.write([{ op: 'delete', key }])
  }
  async write(batch: readonly StoreOp[]): Promise<void> {
    if (this.frozen || (this.freezeOnConsume && batch.some((op) => op.key.startsWith('pos/')))) {
      this.frozen = true
      return new Promise<void>(() => undefined)
    }
    await this.inner.write(batch)
    this.onWritten()
  }
  keys(prefix: string): Promise<readonly string[]> {
    return this.inner.keys(prefix)
  }
  close(): Promise<void> {
    return this.inner.close()
  }
}

interface Member {
  readonly region: Region
  node: RegionNode
  transport: KafkaTransport
  store: WatchedStore
  /** Envelopes applied per origin region and durably stored, summed over this region's incarnations. */
  readonly applied: Map<string, number>
  /** The same for the running incarnation, as of its last durable write. */
  current: Map<string, number>
}

/** Three regions over one Kafka broker, driven by pump() rounds. */
class Cluster {
  readonly members = new Map<Region, Member>()
  expected = 0
  readonly tags = new Set<string>()
  constructor(
    private readonly brokers: readonly string[],
    readonly prefix: string,
  ) {}

  transport(): KafkaTransport {
    return new KafkaTransport({
      kafka: { clientId: 'concord-faults', brokers: [...this.brokers], logLevel: logLevel.NOTHING, retry: { initialRetryTime: 100, retries: 3 } },
      topicPrefix: this.prefix,
      groupPrefix: this.prefix,
      sessionTimeoutMs: 6_000,
      heartbeatIntervalMs: 500,
      fetchMaxWaitMs: 100,
    })
  }

  start(region: Region, store = new MemoryStore()): Member {
    const prev = this.members.get(region)
    const transport = this.transport()
    const watched = new WatchedStore(store)
    const node = new RegionNode({
      region,
      instance: 'i1',
      regions: [...REGIONS],
      transport,
      store: watched,
      factories,
      keys: KEYS,
      heartbeatIntervalMs: 100,
      repairTimeoutMs: 500,
      deadLetterLimit: 20_000,
    })
    const applied = new Map<string, number>()
    if (prev !== undefined) for (const r of REGIONS) applied.set(r, (prev.applied.get(r) ?? 0) + (prev.current.get(r) ?? 0))
    const m: Member = { region, node, transport, store: watched, applied, current: new Map() }
    watched.onWritten = () => {
      for (const p of node.metrics().peers) m.current.set(p.region, p.applied)
    }
    this.members.set(region, m)
    return m
  }

  member(region: Region): Member {
    return this.members.get(region) as Member
  }

  async counter(region: Region): Promise<PnCounter> {
    return (await this.member(region).node.open('hits', 'pn-counter')) as unknown as PnCounter
  }

  async set(region: Region): Promise<OrSet<string>> {
    return (await this.member(region).node.open('tags', 'or-set')) as unknown as OrSet<string>
  }

  /** `n` local updates in `region`, then a flush (retried through transport faults). */
  async write(region: Region, n: number, tag: string, tolerate = false): Promise<void> {
    const c = await this.counter(region)
    const s = await this.set(region)
    for (let i = 0; i < n; i++) {
      const by = (i % 7) + 1
      c.increment(by)
      this.expected += by
      if (i % 10 === 0) {
        s.add(`${tag}-${i}`)
        this.tags.add(`${tag}-${i}`)
      }
    }
    // The updates are durable in the node's store once flush has persisted them; while the broker
    // is down the append fails and the outbox sends them on a later round.
    if (tolerate) await this.member(region).node.flush().catch(() => undefined)
    else await retrying(() => this.member(region).node.flush())
  }

  async pumpAll(): Promise<number> {
    let records = 0
    for (const m of this.members.values()) {
      try {
        records += (await m.node.pump()).records
      } catch (e) {
        if (!(isConcordError(e) && e.retriable)) throw e
      }
    }
    return records
  }

  /** Pumps until every region holds every update (or `deadlineMs` passes). */
  async settle(deadlineMs = 60_000): Promise<void> {
    const until = Date.now() + deadlineMs
    while (Date.now() < until) {
      const busy = await this.pumpAll()
      if (busy === 0 && (await this.converged())) return
      if (busy === 0) await new Promise((r) => setTimeout(r, 20))
    }
  }

  /** Waits, without pumping, until every region holds every update (or `deadlineMs` passes): for started nodes. */
  async waitConverged(deadlineMs = 60_000): Promise<void> {
    const until = Date.now() + deadlineMs
    while (Date.now() < until && !(await this.converged())) await new Promise((r) => setTimeout(r, 50))
  }

  async converged(): Promise<boolean> {
    const states: Uint8Array[] = []
    for (const r of REGIONS) {
      const c = await this.counter(r)
      const s = await this.set(r)
      if (c.value() !== this.expected || s.value().length !== this.tags.size) return false
      states.push(c.state(), s.state())
    }
    for (let i = 2; i < states.length; i++) if (!bytesEqual(states[i] as Uint8Array, states[i % 2] as Uint8Array)) return false
    return true
  }

  /**
   * What each node's transport holds per reader and origin, and what each node applied: printed when
   * a test did not converge, so that a failure in CI can be told apart (a stuck or paused consumer,
   * records dropped as already delivered, a node that stopped applying).
   */
  describeState(): string {
    const lines: string[] = []
    for (const m of this.members.values()) {
      const t = m.transport as unknown as {
        sessions: Map<string, { restarting: boolean; failure: unknown; origins: Map<string, { topic: string; buffer: unknown[]; paused: boolean; next: bigint | undefined; committed: bigint | undefined; polledAt: number }> }>
      }
      for (const [reader, s] of t.sessions) {
        lines.push(`${m.region} reader ${reader}: restarting ${s.restarting}, failure ${String(s.failure)}`)
        for (const o of s.origins.values()) {
          lines.push(`  ${o.topic}: buffered ${o.buffer.length}, paused ${o.paused}, next ${String(o.next)}, committed ${String(o.committed)}, polled ${Date.now() - o.polledAt} ms ago`)
        }
      }
      const metrics = m.node.metrics()
      lines.push(`  ${m.region} node: seq ${metrics.seq}, peers ${JSON.stringify(metrics.peers.map((p) => ({ region: p.region, applied: p.applied, rejected: p.rejected, repairsRequested: p.repairsRequested, repairsApplied: p.repairsApplied })))}`)
    }
    return lines.join('\n')
  }

  /** Every region converged: exact sums, equal values and equal state bytes. */
  async expectConverged(): Promise<void> {
    if (!(await this.converged())) console.error(`not converged:\n${this.describeState()}`)
    const values = []
    for (const r of REGIONS) {
      const c = await this.counter(r)
      const s = await this.set(r)
      values.push({ region: r, counter: c.value(), tags: [...s.value()].sort(), counterState: [...c.state()], setState: [...s.state()] })
    }
    const first = values[0] as (typeof values)[number]
    for (const v of values) {
      expect(v.counter, `${v.region}: no acknowledged update lost`).toBe(this.expected)
      expect(v.tags).toEqual([...this.tags].sort())
      expect(v.counterState).toEqual(first.counterState)
      expect(v.setState).toEqual(first.setState)
    }
  }

  /**
   * Each region applied each other region's envelopes at most once (`exact`: exactly once), counted
   * over its incarnations as of their last durable write: redelivered envelopes were dropped.
   */
  expectAppliedOnce(exact: boolean): void {
    for (const reader of this.members.values()) {
      for (const origin of REGIONS) {
        if (origin === reader.region) continue
        const written = this.member(origin).node.metrics().seq
        const applied = (reader.applied.get(origin) ?? 0) + (reader.current.get(origin) ?? 0)
        if (exact) expect(applied, `${reader.region} applied ${origin}'s envelopes once`).toBe(written)
        else expect(applied, `${reader.region} applied ${origin}'s envelopes at most once`).toBeLessThanOrEqual(written)
      }
    }
  }

  async close(): Promise<void> {
    for (const m of this.members.values()) {
      if (!m.store.frozen) await m.node.close().catch(() => undefined)
      await m.transport.close()
    }
  }
}

async function retrying<T>(fn: () => Promise<T>, attempts = 200): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn()
    } catch (e) {
      if (!(isConcordError(e) && e.retriable) || i >= attempts) throw e
      await new Promise((r) => setTimeout(r, 25))
    }
  }
}

const available = await canRunKafka()

describe.skipIf(!available)('RegionNodes over a real Kafka broker, with faults', () => {
  let server: PrivateKafka
  let cluster: Cluster | undefined
  let n = 0

  beforeAll(async () => {
    server = await PrivateKafka.start()
  })
  afterEach(async () => {
    await cluster?.close()
    cluster = undefined
    // A test that failed between down() and up() must not leave the next ones without a broker.
    await server?.up()
  })
  afterAll(async () => {
    await server?.stop()
  })

  function newCluster(): Cluster {
    n++
    cluster = new Cluster(server.brokers, `faults-${n}`)
    for (const r of REGIONS) cluster.start(r)
    return cluster
  }

  it('the broker stopped and restarted mid-stream: nothing lost, nothing applied twice, all converge', async () => {
    const c = newCluster()
    for (const r of REGIONS) await c.write(r, 40, `${r}a`)
    await c.pumpAll()
    // Some of these are consumed before the stop, the rest after the restart.
    for (const r of REGIONS) await c.write(r, 40, `${r}b`)
    await c.pumpAll()
    await server.down()
    // Writes while the broker is down are durable in the nodes' stores and wait in their outboxes.
    for (const r of REGIONS) await c.write(r, 40, `${r}c`, true)
    await c.pumpAll()
    await server.up()
    for (const r of REGIONS) await c.write(r, 40, `${r}d`)
    await c.settle()
    await c.expectConverged()
    // At most once: while a consumer is still rejoining after the restart (kafkajs backs off for
    // seconds), a reader may learn of the missing updates from the others' heartbeats and repair
    // them (repairTimeoutMs is 500 ms here) before the envelopes arrive; those then count as
    // duplicates, not as applied. Nothing is lost (exact sums above) or applied twice.
    c.expectAppliedOnce(false)
  })

  it('started nodes (start(), no pump calls) carry on through a broker restart', async () => {
    const c = newCluster()
    for (const r of REGIONS) await c.member(r).node.start()
    for (const r of REGIONS) await c.write(r, 40, `${r}a`)
    await server.down()
    for (const r of REGIONS) await c.write(r, 40, `${r}b`, true)
    await server.up()
    for (const r of REGIONS) await c.write(r, 40, `${r}c`)
    await c.waitConverged()
    await c.expectConverged()
    // At most once, as above: repair may beat a rejoining consumer.
    c.expectAppliedOnce(false)
  })

  it('a consumer crashing before its commit gets the batch again and applies it once', async () => {
    const c = newCluster()
    for (const r of REGIONS) await c.write(r, 40, `${r}a`)
    await c.settle()
    for (const r of REGIONS) await c.write(r, 40, `${r}b`)
    const us = c.member('us')
    us.store.freezeOnConsume = true
    // us dies while persisting a consumed batch: applied in memory, never stored, never committed.
    // A pump returns at once when the consumer has fetched nothing yet (polls do not wait), so the
    // loop is bounded by time, not by a count of pumps (CI once ran 500 empty pumps in under a second).
    const until = Date.now() + 30_000
    while (!us.store.frozen && Date.now() < until) {
      await Promise.race([us.node.pump().catch(() => undefined), new Promise((r) => setTimeout(r, 20))])
      if (!us.store.frozen) await new Promise((r) => setTimeout(r, 10))
    }
    expect(us.store.frozen).toBe(true)
    await us.transport.close()
    // The crash left a start registration without a stop: wait out the liveness window, then restart.
    await new Promise((r) => setTimeout(r, 400))
    c.start('us', us.store.inner.reopen())
    for (const r of REGIONS) await c.write(r, 40, `${r}c`)
    await c.settle()
    await c.expectConverged()
    c.expectAppliedOnce(true)
  })

  it('10,000 corrupted envelopes produced straight into a topic are each dead-lettered; the next valid one is applied', async () => {
    const c = newCluster()
    for (const r of REGIONS) await c.write(r, 10, `${r}a`)
    await c.settle()
    const us = c.member('us')
    const before = { counter: (await c.counter('us')).state(), set: (await c.set('us')).state() }
    const rejectedBefore = us.node.metrics().peers.find((p) => p.region === 'eu')?.rejected ?? 0
    const bad = corruptEnvelopes(10_000)
    const producer = new Kafka({ clientId: 'raw', brokers: [...server.brokers], logLevel: logLevel.NOTHING }).producer()
    await producer.connect()
    for (let i = 0; i < bad.length; i += 1000) {
      await producer.send({ topic: `${c.prefix}.eu`, acks: -1, messages: bad.slice(i, i + 1000).map((b) => ({ value: Buffer.from(b) })) })
    }
    await producer.disconnect()
    const rejected = (): number => (us.node.metrics().peers.find((p) => p.region === 'eu')?.rejected ?? 0) - rejectedBefore
    const until = Date.now() + 60_000
    while (rejected() < bad.length && Date.now() < until) {
      if ((await retrying(() => us.node.pump())).records === 0) await new Promise((r) => setTimeout(r, 20))
    }
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

/**
 * `count` records that must all be rejected: random bytes, truncations and single-byte flips of a
 * signed envelope (the HMAC fails), an envelope signed with another region's key, one of region us
 * placed in eu's log, and an empty record.
 */
function corruptEnvelopes(count: number): Uint8Array[] {
  let seed = 12345
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed
  }
  const env = (region: Region, seq: number): Envelope => ({
    docId: 'hits',
    typeName: 'pn-counter',
    region,
    writer: `${region}/i1`,
    seq,
    time: { wall: Date.now(), logical: 0, node: `${region}/i1` },
    deps: new Uint8Array(0),
    payload: new Uint8Array([1, 2, 3, 4]),
  })
  const good = encodeEnvelope(env('eu', 1_000_000), KEYS.eu)
  const out: Uint8Array[] = []
  for (let i = 0; out.length < count; i++) {
    switch (i % 6) {
      case 0:
        out.push(Uint8Array.from({ length: rnd() % 200 }, () => rnd() & 0xff))
        break
      case 1:
        out.push(good.slice(0, rnd() % good.length))
        break
      case 2: {
        const flipped = good.slice()
        const at = rnd() % flipped.length
        flipped[at] = (flipped[at] as number) ^ (1 + (rnd() % 255))
        out.push(flipped)
        break
      }
      case 3:
        out.push(encodeEnvelope(env('eu', 2_000_000 + i), KEYS.us))
        break
      case 4:
        out.push(encodeEnvelope(env('us', 3_000_000 + i), KEYS.us))
        break
      default:
        out.push(new Uint8Array(0))
    }
  }
  return out
}
