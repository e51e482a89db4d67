// The replication harness itself: it drives real RegionNodes deterministically, its fault
// injection takes effect, and its checks fail on a replica that loses writes.
import * as fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { MemoryBroker, MemoryStore, MemoryTransport, RegionNode } from '@concord/replication'
import { PnCounter } from '@concord/crdt'
import { crashUnderAppendInFlight, replicationSchedule, runReplicationSchedule, type ReplicationBackend, type ReplicationSchedule } from './replicationSim.js'
import { lwwMapSpec, pnCounterSpec, type CounterOp } from './specs/native.js'
import { ClosedError } from '@concord/core'
import type { ReplicaSpec } from './spec.js'

function memoryBackend(): ReplicationBackend {
  const broker = new MemoryBroker()
  return { connect: () => new MemoryTransport({ broker }), store: () => new MemoryStore(), node: (o) => new RegionNode(o) }
}

const inc = (node: number, n = 1): { delayMs: number; action: { type: 'op'; node: number; doc: number; op: CounterOp } } => ({ delayMs: 1, action: { type: 'op', node, doc: 0, op: { type: 'inc', n } } })

describe('replication harness', () => {
  it('replicates and acknowledges writes, and reports a deterministic run', async () => {
    const schedule: ReplicationSchedule<CounterOp> = { seed: 7, regions: 3, twin: true, docs: 1, steps: [inc(0, 2), inc(3, 3), { delayMs: 5, action: { type: 'round' } }, inc(1, 4)] }
    const a = await runReplicationSchedule(pnCounterSpec, memoryBackend(), schedule)
    const b = await runReplicationSchedule(pnCounterSpec, memoryBackend(), schedule)
    expect(a.values).toEqual({ 'doc-a': 9 })
    expect(a.acknowledged).toBe(3)
    expect(b).toEqual(a)
  })

  it('loses an unflushed write at a crash, keeps one made durable before the log append failed', async () => {
    const lost: ReplicationSchedule<CounterOp> = { seed: 1, regions: 3, twin: false, docs: 1, steps: [inc(0, 5), { delayMs: 0, action: { type: 'crash', node: 0, at: 0 } }] }
    const r1 = await runReplicationSchedule(pnCounterSpec, memoryBackend(), lost)
    expect(r1.values).toEqual({ 'doc-a': 0 })
    expect(r1.crashes).toBe(1)
    expect(r1.restarts).toBe(1)
    // Crash at the first transport call of the next pump: the outbox append, after the store write.
    const durable: ReplicationSchedule<CounterOp> = {
      seed: 1,
      regions: 3,
      twin: false,
      docs: 1,
      steps: [inc(0, 5), { delayMs: 0, action: { type: 'crash', node: 0, at: 1 } }, { delayMs: 0, action: { type: 'pump', node: 0 } }],
    }
    const r2 = await runReplicationSchedule(pnCounterSpec, memoryBackend(), durable)
    expect(r2.values).toEqual({ 'doc-a': 5 })
    expect(r2.crashes).toBe(1)
    expect(r2.acknowledged).toBe(0)
  })

  it('a crash that closes the transport under an append still in flight is the crash, not a failure of the run (found on Kafka: seed -2038020032)', async () => {
    // KafkaTransport (and RedisTransport) fail an append in flight with ClosedError when close()
    // begins; MemoryTransport's append is done before close() can run. This backend's appends wait
    // a few ticks first, as a server's round trip does, and fail the same way.
    const broker = new MemoryBroker()
    const slow: ReplicationBackend = {
      connect: () => {
        const inner = new MemoryTransport({ broker })
        let closed = false
        return Object.assign(Object.create(inner) as MemoryTransport, {
          append: async (...args: Parameters<MemoryTransport['append']>) => {
            for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r))
            if (closed) throw new ClosedError('transport was closed during append')
            return inner.append(...args)
          },
          close: async () => {
            closed = true
            await inner.close()
          },
        })
      },
      store: () => new MemoryStore(),
      node: (o) => new RegionNode(o),
    }
    const r = await runReplicationSchedule(lwwMapSpec, slow, crashUnderAppendInFlight)
    expect(r.crashes).toBe(1)
    expect(r.values).toEqual({ 'doc-a': { k1: 0 } })
  })

  it('partitions make pumps fail on the unreachable log, and heal repairs everything', async () => {
    const schedule: ReplicationSchedule<CounterOp> = {
      seed: 3,
      regions: 3,
      twin: false,
      docs: 1,
      steps: [{ delayMs: 0, action: { type: 'partition', shape: { kind: 'isolate', region: 2 }, swizzle: false } }, inc(2, 1), inc(0, 1), { delayMs: 10, action: { type: 'round' } }],
    }
    const r = await runReplicationSchedule(pnCounterSpec, memoryBackend(), schedule)
    expect(r.unreachable).toBeGreaterThan(0)
    expect(r.values).toEqual({ 'doc-a': 2 })
  })

  it('fails on a replica that drops remote deltas', async () => {
    // A counter whose apply ignores deltas carrying an odd increment of another writer: lossy.
    const lossy: ReplicaSpec<number, CounterOp, PnCounter> = {
      ...pnCounterSpec,
      name: 'LossyCounter',
      create: (id, env) => {
        const c = new PnCounter({ replicaId: id, now: env.now })
        const apply = c.apply.bind(c)
        let n = 0
        c.apply = (d: Uint8Array): void => {
          if (n++ === 1) return
          apply(d)
        }
        return c
      },
    }
    const schedule: ReplicationSchedule<CounterOp> = { seed: 2, regions: 3, twin: false, docs: 1, steps: [inc(0), inc(1), inc(2)] }
    await expect(runReplicationSchedule(lossy, memoryBackend(), schedule)).rejects.toThrow()
  })

  it('counts a lost write that the restarted node reissued with the same bytes once', async () => {
    // r1 increments, dies before the delta leaves the process, restarts from a store without it and
    // increments again: the node reissues the dot (the first never left), byte-identical deltas.
    // (The value and the oracle are checked at r0, which applies those bytes.)
    const redo: ReplicationSchedule<CounterOp> = {
      seed: 1,
      regions: 3,
      twin: false,
      docs: 1,
      steps: [inc(1, 3), { delayMs: 0, action: { type: 'crash', node: 1, at: 0 } }, { delayMs: 300, action: { type: 'restart', node: 1 } }, inc(1, 3), inc(0, 1)],
    }
    const r = await runReplicationSchedule(pnCounterSpec, memoryBackend(), redo)
    expect(r.values).toEqual({ 'doc-a': 4 })
    expect(r.crashes).toBe(1)
  })

  it('still fails when a node reissues the dot of an acknowledged write', async () => {
    // The restarted r0 forgets its own history (its replica drops every delta it applies), so it
    // reissues an acknowledged write's dot with the same bytes: the second write is lost.
    const created = new Map<string, number>()
    const forgetful: ReplicaSpec<number, CounterOp, PnCounter> = {
      ...pnCounterSpec,
      name: 'ForgetfulCounter',
      create: (id, env) => {
        const c = new PnCounter({ replicaId: id, now: env.now })
        const n = (created.get(id) ?? 0) + 1
        created.set(id, n)
        if (id.startsWith('r0') && n > 1) c.apply = (): void => undefined
        return c
      },
    }
    const schedule: ReplicationSchedule<CounterOp> = {
      seed: 1,
      regions: 3,
      twin: false,
      docs: 1,
      steps: [inc(0, 3), { delayMs: 1, action: { type: 'round' } }, { delayMs: 0, action: { type: 'crash', node: 0, at: 0 } }, { delayMs: 300, action: { type: 'restart', node: 0 } }, inc(0, 3)],
    }
    await expect(runReplicationSchedule(forgetful, memoryBackend(), schedule)).rejects.toThrow(/wrong value/)
  })

  it('generates schedules with at least 3 regions, 1..maxOps ops and in-range skews', () => {
    fc.assert(
      fc.property(replicationSchedule(pnCounterSpec.op, { regions: 4, maxOps: 5 }), (s) => {
        const ops = s.steps.filter((x) => x.action.type === 'op').length
        expect(ops).toBeGreaterThanOrEqual(1)
        expect(ops).toBeLessThanOrEqual(5)
        for (const x of s.steps) if (x.action.type === 'skew') expect(Math.abs(x.action.ms)).toBeLessThanOrEqual(400)
      }),
      { numRuns: 200 },
    )
    expect(() => replicationSchedule(pnCounterSpec.op, { regions: 2 })).toThrow(/at least 3/)
  })
})
