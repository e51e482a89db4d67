/**
 * Metrics and lag monitoring, checked in the situations operators alert on: a region cut off
 * while it writes, a silent region against a dead one, redelivery, corrupt records, a failing
 * store, restarts — and the OpenTelemetry instruments read through the real SDK.
 */
import { describe, expect, it, vi } from 'vitest'
import type { Attributes, Meter } from '@opentelemetry/api'
import { AggregationTemporality, MeterProvider, MetricReader, type MetricData } from '@opentelemetry/sdk-metrics'
import { seededRandom, TransportError, type Store } from '@concord/core'
import { crdtFactory, type PnCounter } from '@concord/crdt'
import { MemoryBroker, MemoryTransport, type MemoryTransportOptions } from './memoryTransport.js'
import { MemoryStore } from './memoryStore.js'
import { RegionNode, type NodeMetrics, type PeerMetrics } from './regionNode.js'
import type { RegionNodeOptions } from './options.js'

/** A MemoryTransport client that can be cut off from the broker: every call fails, retriably, as behind a partition. */
class CuttableTransport extends MemoryTransport {
  down = false
  private gate(): void {
    if (this.down) throw new TransportError('cut off (test partition)', { retriable: true })
  }
  override async append(...a: Parameters<MemoryTransport['append']>): ReturnType<MemoryTransport['append']> {
    this.gate()
    return super.append(...a)
  }
  override async poll(...a: Parameters<MemoryTransport['poll']>): ReturnType<MemoryTransport['poll']> {
    this.gate()
    return super.poll(...a)
  }
  override async commit(...a: Parameters<MemoryTransport['commit']>): ReturnType<MemoryTransport['commit']> {
    this.gate()
    return super.commit(...a)
  }
}

/** A MemoryStore whose writes can be held (until released) and made to fail. */
class HeldStore extends MemoryStore {
  hold: { release: (fail: boolean) => void } | undefined
  holdNext = false
  override async write(ops: Parameters<MemoryStore['write']>[0]): Promise<void> {
    if (this.holdNext) {
      this.holdNext = false
      const fail = await new Promise<boolean>((resolve) => (this.hold = { release: resolve }))
      this.hold = undefined
      if (fail) throw new TransportError('store unreachable (test)')
    }
    return super.write(ops)
  }
}

function cluster(regions: readonly string[] = ['eu', 'us', 'ap']) {
  let t = 1_700_000_000_000
  const clock = { now: () => t, advance: (ms: number) => void (t += ms) }
  const broker = new MemoryBroker()
  const factories = { 'pn-counter': crdtFactory('pn-counter', { now: clock.now }) }
  let seed = 1
  const make = (region: string, more: Partial<RegionNodeOptions> & { instance?: string; store?: Store; transport?: MemoryTransport; faults?: MemoryTransportOptions['faults'] } = {}): RegionNode => {
    const { instance = 'i1', store = new MemoryStore(), faults, transport = new CuttableTransport({ broker, ...(faults === undefined ? {} : { faults }) }), ...rest } = more
    return new RegionNode({ region, instance, regions: [...regions], transport, store, factories, now: clock.now, random: seededRandom(seed++), heartbeatIntervalMs: 1000, ...rest })
  }
  return { clock, broker, make }
}

const transportOf = (n: RegionNode): CuttableTransport => (n as unknown as { o: { transport: CuttableTransport } }).o.transport
const peer = (n: RegionNode, region: string): PeerMetrics => n.metrics().peers.find((p) => p.region === region) as PeerMetrics

/** One pump of each node; a failure (a node cut off) is left to the next round, as the start() loop does. */
async function round(nodes: readonly RegionNode[], clock: { advance: (ms: number) => void }, ms = 100): Promise<void> {
  for (const n of nodes) await n.pump().catch(() => undefined)
  clock.advance(ms)
}

class TestReader extends MetricReader {
  constructor(temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE) {
    super({ aggregationTemporalitySelector: () => temporality })
  }
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
  async metrics(): Promise<MetricData[]> {
    const { resourceMetrics, errors } = await this.collect()
    expect(errors).toEqual([])
    return resourceMetrics.scopeMetrics.flatMap((s) => s.metrics)
  }
}

function sdk(temporality?: AggregationTemporality): { reader: TestReader; meter: Meter; provider: MeterProvider } {
  const reader = new TestReader(temporality)
  const provider = new MeterProvider({ readers: [reader] })
  return { reader, meter: provider.getMeter('concord'), provider }
}

/** `name`'s data points, as `attributes → value`, the attributes as `writer` or `writer|peer_region`. */
function points(metrics: readonly MetricData[], name: string): Map<string, number> {
  const m = metrics.find((x) => x.descriptor.name === name)
  const out = new Map<string, number>()
  for (const p of m?.dataPoints ?? []) {
    const a = p.attributes as Attributes
    out.set([a['concord.writer'], a['concord.peer_region']].filter((x) => x !== undefined).join('|'), p.value as number)
  }
  return out
}

describe('RegionNode metrics in a regional outage', () => {
  it('staleness grows on both sides while a region is cut off and writing, and falls back once it heals; its writes wait in its outbox', async () => {
    const { clock, make } = cluster()
    const eu = make('eu')
    const us = make('us')
    const ap = make('ap')
    const all = [eu, us, ap]
    for (let i = 0; i < 20; i++) await round(all, clock)
    // Healthy: every other region heard within a heartbeat interval (plus a round).
    for (const n of all) for (const p of n.metrics().peers) expect(p.stalenessMs, `${n.writer} → ${p.region}`).toBeLessThanOrEqual(1100)

    transportOf(eu).down = true
    const c = (await eu.open('c', 'pn-counter')) as unknown as PnCounter
    const seen: number[] = []
    for (let i = 0; i < 100; i++) {
      c.increment(1)
      await round(all, clock)
      seen.push(peer(us, 'eu').stalenessMs as number)
    }
    // Ten seconds cut off: us and ap see eu's figure grow every round; eu sees theirs grow; eu's
    // writes wait in its outbox; nobody has applied any of them.
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1] as number)
    expect(peer(us, 'eu').stalenessMs).toBeGreaterThanOrEqual(10_000)
    expect(peer(ap, 'eu').stalenessMs).toBeGreaterThanOrEqual(10_000)
    expect(peer(eu, 'us').stalenessMs).toBeGreaterThanOrEqual(10_000)
    expect(peer(eu, 'ap').stalenessMs).toBeGreaterThanOrEqual(10_000)
    expect(peer(us, 'ap').stalenessMs).toBeLessThanOrEqual(1100)
    expect(eu.metrics().outbox).toBeGreaterThanOrEqual(100)
    expect(peer(us, 'eu').applied).toBe(0)

    transportOf(eu).down = false
    for (let i = 0; i < 20; i++) await round(all, clock)
    for (const n of all) for (const p of n.metrics().peers) expect(p.stalenessMs, `${n.writer} → ${p.region} after healing`).toBeLessThanOrEqual(1100)
    expect(eu.metrics().outbox).toBe(0)
    for (const n of [us, ap]) {
      expect(peer(n, 'eu')).toMatchObject({ applied: 100, duplicates: 0, rejected: 0, pending: 0 })
      expect((await n.open<number>('c', 'pn-counter')).value()).toBe(100)
    }
    for (const n of all) await n.close()
  })

  it("with per-region logs, a region's log unreadable from here: staleness grows though its updates come by repair, and each envelope is counted once (applied or duplicate) after healing", async () => {
    const { clock, make, broker } = cluster()
    class Unreadable extends CuttableTransport {
      readonly cut = new Set<string>()
      override async poll(...a: Parameters<MemoryTransport['poll']>): ReturnType<MemoryTransport['poll']> {
        if (this.cut.has(a[1])) throw new TransportError('unreachable (test)', { retriable: true })
        return super.poll(...a)
      }
    }
    const reader = new Unreadable({ broker })
    const eu = make('eu')
    const us = make('us', { transport: reader })
    const ap = make('ap')
    const all = [eu, us, ap]
    for (let i = 0; i < 10; i++) await round(all, clock)
    reader.cut.add('eu')
    const c = (await eu.open('c', 'pn-counter')) as unknown as PnCounter
    for (let i = 0; i < 100; i++) {
      c.increment(1)
      await round(all, clock)
    }
    // us has eu's updates from ap (repair), yet it cannot read eu's log: the alert fires.
    expect(peer(us, 'eu').stalenessMs).toBeGreaterThanOrEqual(10_000)
    expect(peer(us, 'eu').repairsApplied).toBeGreaterThan(0)
    expect((await us.open<number>('c', 'pn-counter')).value()).toBeGreaterThan(50)
    expect(peer(us, 'ap').stalenessMs).toBeLessThanOrEqual(1100)
    reader.cut.clear()
    for (let i = 0; i < 20; i++) await round(all, clock)
    expect(peer(us, 'eu').stalenessMs).toBeLessThanOrEqual(1100)
    expect(peer(us, 'eu').pending).toBe(0)
    expect(peer(us, 'eu').applied + peer(us, 'eu').duplicates).toBe(100)
    expect((await us.open<number>('c', 'pn-counter')).value()).toBe(100)
    for (const n of all) await n.close()
  })

  it('tells a silent healthy region (heartbeats only) from a dead one', async () => {
    const { clock, make } = cluster(['eu', 'us'])
    const eu = make('eu')
    const us = make('us')
    // Neither writes anything for a minute: eu stays fresh at us (its heartbeats), lagMs has nothing to say.
    for (let i = 0; i < 600; i++) {
      await round([eu, us], clock)
      expect(peer(us, 'eu').stalenessMs).toBeLessThanOrEqual(1100)
    }
    expect(peer(us, 'eu')).toMatchObject({ applied: 0, lagMs: 0 })
    // eu's process dies (no close): from here on, the figure grows with the time.
    for (let i = 0; i < 600; i++) await round([us], clock)
    expect(peer(us, 'eu').stalenessMs).toBeGreaterThanOrEqual(59_000)
    await us.close()
  })
})

describe('RegionNode counts', () => {
  it('applied, duplicates, rejected and dead letters match what was delivered: copies of envelopes and of corrupt records (review finding: a corrupt record delivered twice was rejected and dead-lettered twice)', async () => {
    const { clock, broker, make } = cluster(['eu', 'us'])
    const eu = make('eu')
    // Every record of eu's log is delivered twice to us.
    const us = make('us', { faults: { duplicate: (r) => r.origin === 'eu' } })
    const c = (await eu.open('c', 'pn-counter')) as unknown as PnCounter
    for (let i = 0; i < 5; i++) {
      c.increment(1)
      await eu.flush()
    }
    await new MemoryTransport({ broker }).append('eu', [new Uint8Array([1, 2, 3]), new Uint8Array([9, 9, 9, 9])])
    for (let i = 0; i < 5; i++) await round([eu, us], clock)
    expect(peer(us, 'eu')).toMatchObject({ applied: 5, duplicates: 5, rejected: 2, pending: 0 })
    expect(us.metrics().deadLetters).toBe(2)
    expect(new Set(us.deadLetters().map((d) => d.position)).size).toBe(2)
    expect((await us.open<number>('c', 'pn-counter')).value()).toBe(5)
    await eu.close()
    await us.close()
  })

  it('a crash replays what was read since the last commit: envelopes count as duplicates, corrupt records are not rejected nor dead-lettered again (review finding: a second dead letter per corrupt record)', async () => {
    const { clock, broker, make } = cluster(['eu', 'us'])
    const eu = make('eu')
    const store = new MemoryStore()
    const us = make('us', { store, commitIntervalMs: 60_000 })
    // The first round commits; the records below are read and saved, not committed.
    await round([eu, us], clock)
    const c = (await eu.open('c', 'pn-counter')) as unknown as PnCounter
    for (let i = 0; i < 3; i++) {
      c.increment(1)
      await eu.flush()
    }
    await new MemoryTransport({ broker }).append('eu', [new Uint8Array([1, 2, 3]), new Uint8Array([9, 9, 9, 9])])
    for (let i = 0; i < 3; i++) await round([eu, us], clock)
    expect(peer(us, 'eu')).toMatchObject({ applied: 3, duplicates: 0, rejected: 2 })
    expect(us.metrics().deadLetters).toBe(2)
    // Crash (no close) and restart on the same store, past livenessMs: the counters are this
    // process's (they start at 0 again), the dead letters the store's.
    await us.stop()
    clock.advance(10_000)
    const again = make('us', { store })
    for (let i = 0; i < 3; i++) await round([eu, again], clock)
    expect(peer(again, 'eu')).toMatchObject({ applied: 0, duplicates: 3, rejected: 0, pending: 0 })
    expect(again.metrics().deadLetters).toBe(2)
    expect((await again.open<number>('c', 'pn-counter')).value()).toBe(3)
    await eu.close()
    await again.close()
  })

  it('rejected never goes down, through a failed store write of the batch that rejected a record (an OpenTelemetry counter read 1, 0, 1: a reset, and two rejections for one)', async () => {
    const { broker, make } = cluster(['eu', 'us'])
    const { reader, meter } = sdk(AggregationTemporality.DELTA)
    const store = new HeldStore()
    const us = make('us', { store, meter })
    await us.pump()
    await new MemoryTransport({ broker }).append('eu', [new Uint8Array([1, 2, 3, 4])])
    const observed: number[] = []
    const rejected = (): number => peer(us, 'eu').rejected
    let exported = 0
    const collect = async (): Promise<void> => {
      observed.push(rejected())
      exported += points(await reader.metrics(), 'concord.replication.rejected').get('us/i1|eu') ?? 0
    }
    store.holdNext = true
    const failing = us.pump()
    await vi.waitFor(() => expect(store.hold).toBeDefined())
    await collect()
    store.hold?.release(true)
    await expect(failing).rejects.toThrow(/store unreachable/)
    await collect()
    await us.pump()
    await collect()
    for (let i = 1; i < observed.length; i++) expect(observed[i], `rejected after ${observed.slice(0, i).join(', ')}`).toBeGreaterThanOrEqual(observed[i - 1] as number)
    expect(rejected()).toBe(1)
    expect(us.deadLetters()).toHaveLength(1)
    expect(exported, 'rejections exported (sum of deltas)').toBe(1)
    await us.close()
  })
})

describe('RegionNode metrics() at any time', () => {
  it('answers before init, while init waits for the log, after a fatal start, during and after close', async () => {
    const { clock, make } = cluster(['eu', 'us'])
    const shape = (m: NodeMetrics): void => {
      expect(m.peers.map((p) => p.region)).toEqual(['eu', 'us'])
      for (const p of m.peers) for (const [k, v] of Object.entries(p)) if (k !== 'region' && v !== undefined) expect(Number.isFinite(v), `${k}`).toBe(true)
    }
    const us = make('us')
    shape(us.metrics())
    expect(peer(us, 'eu').stalenessMs).toBeUndefined()
    // The log unreachable at start: init fails, metrics() still answers (nothing started yet).
    transportOf(us).down = true
    await expect(us.pump()).rejects.toThrow(/cut off/)
    shape(us.metrics())
    expect(peer(us, 'eu').stalenessMs).toBeUndefined()
    transportOf(us).down = false
    await us.pump()
    clock.advance(3_000)
    expect(peer(us, 'eu').stalenessMs).toBe(3_000)
    // A twin with the same writer id is refused (fatal): its metrics() still answers.
    const twin = make('us')
    await expect(twin.pump()).rejects.toMatchObject({ code: 'CONFIG' })
    shape(twin.metrics())
    await twin.close()
    const closing = us.close()
    shape(us.metrics())
    await closing
    shape(us.metrics())
    clock.advance(1_000)
    expect(peer(us, 'eu').stalenessMs).toBe(4_000)
  })
})

describe('RegionNode metrics through the OpenTelemetry SDK', () => {
  const PER_PEER: Record<string, keyof PeerMetrics> = {
    'concord.replication.applied': 'applied',
    'concord.replication.duplicates': 'duplicates',
    'concord.replication.rejected': 'rejected',
    'concord.replication.pending': 'pending',
    'concord.replication.lag': 'lagMs',
    'concord.replication.staleness': 'stalenessMs',
    'concord.replication.repairs_requested': 'repairsRequested',
    'concord.replication.repairs_applied': 'repairsApplied',
  }
  const NODE_WIDE: Record<string, keyof NodeMetrics> = {
    'concord.replication.outbox': 'outbox',
    'concord.replication.dead_letters': 'deadLetters',
    'concord.replication.too_large': 'tooLarge',
  }

  it('reports every number of metrics() (the outbox of a region cut off too), with the same values, units and attributes', async () => {
    const { clock, broker, make } = cluster(['eu', 'us'])
    const { reader, meter } = sdk()
    const eu = make('eu', { meter })
    const us = make('us')
    for (let i = 0; i < 5; i++) await round([eu, us], clock)
    await new MemoryTransport({ broker }).append('us', [new Uint8Array([7, 7, 7])])
    ;((await us.open('c', 'pn-counter')) as unknown as PnCounter).increment(2)
    for (let i = 0; i < 5; i++) await round([eu, us], clock)
    // eu cut off while it writes: what it wrote waits in its outbox.
    transportOf(eu).down = true
    const c = (await eu.open('c', 'pn-counter')) as unknown as PnCounter
    for (let i = 0; i < 3; i++) {
      c.increment(1)
      await round([eu, us], clock, 1000)
    }
    const exported = await reader.metrics()
    const m = eu.metrics()
    expect(m.outbox).toBeGreaterThan(0)
    expect(peer(eu, 'us')).toMatchObject({ applied: 1, rejected: 1 })
    for (const [name, key] of Object.entries(PER_PEER)) {
      const want = new Map(m.peers.map((p) => [`eu/i1|${p.region}`, p[key] as number]))
      expect(points(exported, name), name).toEqual(want)
    }
    for (const [name, key] of Object.entries(NODE_WIDE)) expect(points(exported, name), name).toEqual(new Map([['eu/i1', m[key] as number]]))
    for (const d of exported) {
      expect(d.descriptor.unit, `${d.descriptor.name} has a unit`).not.toBe('')
      expect(d.descriptor.description, `${d.descriptor.name} has a description`).not.toBe('')
    }
    expect(exported.map((d) => d.descriptor.name).sort()).toEqual([...Object.keys(PER_PEER), ...Object.keys(NODE_WIDE)].sort())
    await us.close()
    transportOf(eu).down = false
    await eu.close()
  })

  it('reads the node once per collection, not once per instrument', async () => {
    const { clock, make } = cluster(['eu', 'us'])
    const { reader, meter } = sdk()
    const eu = make('eu', { meter })
    await eu.pump()
    clock.advance(100)
    const spy = vi.spyOn(eu, 'metrics')
    await reader.metrics()
    expect(spy).toHaveBeenCalledTimes(1)
    await eu.close()
  })

  it('stops reporting once closed, and a node started again with the writer id on the same meter reports alone', async () => {
    const { clock, make } = cluster(['eu', 'us'])
    const { reader, meter } = sdk(AggregationTemporality.DELTA)
    const store = new MemoryStore()
    const first = make('eu', { meter, store })
    await first.pump()
    clock.advance(2_000)
    expect(points(await reader.metrics(), 'concord.replication.staleness').get('eu/i1|us')).toBe(2_000)
    await first.close()
    clock.advance(5_000)
    // Delta temporality: only what was observed in this collection is exported.
    expect(await reader.metrics()).toEqual([])
    const second = make('eu', { meter, store })
    await second.pump()
    clock.advance(1_000)
    const exported = await reader.metrics()
    expect(points(exported, 'concord.replication.staleness')).toEqual(new Map([['eu/i1|eu', 0], ['eu/i1|us', 1_000]]))
    expect(points(exported, 'concord.replication.outbox')).toEqual(new Map([['eu/i1', 0]]))
    await second.close()
  })
})
