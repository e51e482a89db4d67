// Yjs and Automerge documents replicated by RegionNodes under the same faults as the native types
// (see replication.prop.test.ts): no oracle for these, but convergence (equal value and state
// bytes everywhere), no loss of acknowledged writes and liveness after heal must hold.
import * as A from '@automerge/automerge'
import * as fc from 'fast-check'
import { describe, it } from 'vitest'
import { AutomergeReplica } from '@concord/automerge'
import { assertAsyncProperty, checkReplication, runReplicationSchedule, type ReplicaSpec, type ReplicationBackend, type ReplicationSchedule } from '@concord/testing'
import { YjsReplica, type YjsValue } from '@concord/yjs'
import { MemoryBroker, MemoryTransport } from './memoryTransport.js'
import { MemoryStore } from './memoryStore.js'
import { RegionNode } from './regionNode.js'

function memoryBackend(): ReplicationBackend {
  const broker = new MemoryBroker()
  return { connect: () => new MemoryTransport({ broker }), store: () => new MemoryStore(), node: (o) => new RegionNode(o) }
}

const key = fc.constantFrom('a', 'b', 'c')
const small = fc.integer({ min: 0, max: 9 })

type YjsOp =
  | { readonly type: 'set'; readonly key: string; readonly value: number }
  | { readonly type: 'delete'; readonly key: string }
  | { readonly type: 'insert'; readonly at: number; readonly text: string }
  | { readonly type: 'cut'; readonly at: number; readonly length: number }

/** Y.Map set/delete and Y.Text insert/delete. */
const yjsSpec: ReplicaSpec<YjsValue, YjsOp, YjsReplica> = {
  name: 'Yjs',
  create: (id) => new YjsReplica(id, { roots: { m: 'map', t: 'text' } }),
  op: fc.oneof(
    fc.record({ type: fc.constant('set' as const), key, value: small }),
    fc.record({ type: fc.constant('delete' as const), key }),
    fc.record({ type: fc.constant('insert' as const), at: fc.nat({ max: 8 }), text: fc.constantFrom('x', 'yz', 'w') }),
    fc.record({ type: fc.constant('cut' as const), at: fc.nat({ max: 8 }), length: fc.integer({ min: 1, max: 3 }) }),
  ),
  perform: (r, op) => {
    const t = r.text('t')
    switch (op.type) {
      case 'set':
        return r.map('m').set(op.key, op.value)
      case 'delete':
        return r.map('m').delete(op.key)
      case 'insert':
        return t.insert(op.at % (t.length + 1), op.text)
      case 'cut':
        if (t.length > 0) t.delete(op.at % t.length, Math.min(op.length, t.length - (op.at % t.length)))
    }
  },
}

type AmDoc = { [key: string]: number | A.Counter | undefined }
type AmOp = { readonly type: 'set'; readonly key: string; readonly value: number } | { readonly type: 'delete'; readonly key: string } | { readonly type: 'inc'; readonly n: number }

/** Automerge map set/delete and a counter. */
const automergeSpec: ReplicaSpec<AmDoc, AmOp, AutomergeReplica<AmDoc>> = {
  name: 'Automerge',
  create: (id) => new AutomergeReplica<AmDoc>(id),
  op: fc.oneof(
    fc.record({ type: fc.constant('set' as const), key, value: small }),
    fc.record({ type: fc.constant('delete' as const), key }),
    fc.record({ type: fc.constant('inc' as const), n: fc.integer({ min: 1, max: 3 }) }),
  ),
  perform: (r, op) =>
    r.change((d) => {
      if (op.type === 'set') d[op.key] = op.value
      else if (op.type === 'delete') delete d[op.key]
      else {
        const c = d['n']
        if (c instanceof A.Counter) c.increment(op.n)
        else d['n'] = new A.Counter(op.n)
      }
    }),
}

describe('replication: Yjs and Automerge documents under faults', () => {
  it('Yjs: converges, no loss, liveness', async () => {
    await assertAsyncProperty('Yjs replication/mixed', checkReplication(yjsSpec, memoryBackend, { regions: 3, twin: true, maxDocs: 1, maxOps: 6, maxSteps: 10 }))
  })
  it('Automerge: converges, no loss, liveness', async () => {
    // Automerge is the slowest backend: 3 regions plus a second instance, one document, up to 6 ops.
    // Map set/delete only, as when the twin-instance failure below was found.
    const spec: ReplicaSpec<AmDoc, AmOp, AutomergeReplica<AmDoc>> = { ...automergeSpec, op: automergeSpec.op.filter((o) => o.type !== 'inc') }
    await assertAsyncProperty('Automerge replication/mixed', checkReplication(spec, memoryBackend, { regions: 3, twin: true, maxDocs: 1, maxOps: 6, maxSteps: 10 }))
  })
})

// Pinned: found by Yjs replication/mixed (seed -1710269017). r2/a crashed; its restart's catch-up
// on its own log ended on an empty poll while the old incarnation's last records were still delayed
// (60% delayed deliveries, as a Kafka fetch still on its way); read in a later round, they made the
// running node stop for good with "duplicate instance id". A record logged before the node's own
// registration is history now; a live twin is still caught by what it writes after.
const yjsLateOwnHistory: ReplicationSchedule<YjsOp> = {
  seed: 1851039301,
  regions: 3,
  twin: true,
  docs: 1,
  steps: [
    { delayMs: 100, action: { type: 'round' } },
    { delayMs: 0, action: { type: 'network', dropPct: 60, duplicatePct: 0, delayPct: 60, smallBatches: true } },
    { delayMs: 100, action: { type: 'pump', node: 0 } },
    { delayMs: 1, action: { type: 'pump', node: 3 } },
    { delayMs: 1, action: { type: 'op', node: 0, doc: 0, op: { type: 'set', key: 'a', value: 0 } } },
    { delayMs: 100, action: { type: 'op', node: 1, doc: 0, op: { type: 'delete', key: 'a' } } },
    { delayMs: 100, action: { type: 'crash', node: 2, at: 4 } },
    { delayMs: 100, action: { type: 'round' } },
    { delayMs: 0, action: { type: 'pump', node: 2 } },
    { delayMs: 1, action: { type: 'round' } },
    { delayMs: 100, action: { type: 'restart', node: 2 } },
    { delayMs: 1, action: { type: 'op', node: 0, doc: 0, op: { type: 'cut', at: 0, length: 1 } } },
  ],
}

describe('replication: Yjs regressions', () => {
  it('a restarted node reading its old incarnation\'s records late does not take them for a live twin', async () => {
    await runReplicationSchedule(yjsSpec, memoryBackend(), yjsLateOwnHistory)
  })
})

// Found by this property and not fixed here (it is in @concord/automerge, or in how its deltas
// travel): with 5 regions, r1 applied every envelope yet misses r0's counter increment (its doc has
// 4 of the 5 changes, no pending ones) while every other node has all 5.
const automergeLostIncrement = {
  seed: 0,
  regions: 5,
  twin: false,
  docs: 1,
  steps: [
    { delayMs: 100, action: { type: 'op', node: 4, doc: 0, op: { type: 'inc', n: 1 } } },
    { delayMs: 100, action: { type: 'heal' } },
    { delayMs: 0, action: { type: 'partition', shape: { kind: 'split', side: [0] }, swizzle: false } },
    { delayMs: 1, action: { type: 'op', node: 1, doc: 0, op: { type: 'set', key: 'a', value: 0 } } },
    { delayMs: 0, action: { type: 'restart', node: 0 } },
    { delayMs: 1, action: { type: 'skew', region: 0, ms: 0 } },
    { delayMs: 0, action: { type: 'op', node: 2, doc: 0, op: { type: 'inc', n: 1 } } },
    { delayMs: 0, action: { type: 'partition', shape: { kind: 'one-way', origin: 0, reader: 0 }, swizzle: true } },
    { delayMs: 100, action: { type: 'op', node: 0, doc: 0, op: { type: 'set', key: 'a', value: 0 } } },
    { delayMs: 100, action: { type: 'round' } },
    { delayMs: 0, action: { type: 'op', node: 0, doc: 0, op: { type: 'inc', n: 1 } } },
  ],
} as const satisfies ReplicationSchedule<AmOp>

// Also found: map set/delete only, 3 regions + r0/b. r0/a crashes (after its write
// was durable and appended) and restarts under the same actor; after heal r0/a never gets r0/b's
// changes (its state lacks actor r0/b) while r1/a has them.
const automergeMissesTwin = {
  seed: 17,
  regions: 3,
  twin: true,
  docs: 1,
  steps: [
    { delayMs: 1, action: { type: 'round' } },
    { delayMs: 1, action: { type: 'round' } },
    { delayMs: 1, action: { type: 'op', node: 1, doc: 0, op: { type: 'set', key: 'c', value: 0 } } },
    { delayMs: 1, action: { type: 'pump', node: 0 } },
    { delayMs: 100, action: { type: 'op', node: 0, doc: 0, op: { type: 'set', key: 'a', value: 0 } } },
    { delayMs: 0, action: { type: 'crash', node: 0, at: 2 } },
    { delayMs: 100, action: { type: 'round' } },
    { delayMs: 100, action: { type: 'op', node: 0, doc: 0, op: { type: 'set', key: 'a', value: 0 } } },
    { delayMs: 0, action: { type: 'op', node: 1, doc: 0, op: { type: 'set', key: 'a', value: 0 } } },
    { delayMs: 0, action: { type: 'round' } },
    { delayMs: 0, action: { type: 'partition', shape: { kind: 'split', side: [0] }, swizzle: false } },
    { delayMs: 0, action: { type: 'op', node: 3, doc: 0, op: { type: 'delete', key: 'a' } } },
    { delayMs: 1, action: { type: 'pump', node: 1 } },
    { delayMs: 100, action: { type: 'op', node: 0, doc: 0, op: { type: 'set', key: 'a', value: 0 } } },
  ],
} as const satisfies ReplicationSchedule<AmOp>

// Found by Automerge replication/mixed (seed -488911627, in the fresh-clone CI run of this round):
// r0/b received r2's second change before the r0 change it depends on (r0/b reads its own region's
// log only every ownLogPollMs); Automerge queued it; the node then saved the document, and
// AutomergeReplica.state() rebuilt the history in canonical order into a new document whose queue
// was empty; when the dependency arrived, nothing was queued to apply and the held copy was
// cleared: r0/b never converged. state() now queues the held changes again in the rebuilt
// document. (This fits the symptoms of the two earlier cases above too; that it was their cause is
// not established.)
const automergeQueuedChangeDropped = {
  seed: 1796387727,
  regions: 3,
  twin: true,
  docs: 1,
  steps: [
    { delayMs: 100, action: { type: 'op', node: 1, doc: 0, op: { type: 'set', key: 'a', value: 0 } } },
    { delayMs: 100, action: { type: 'restart', node: 0 } },
    { delayMs: 100, action: { type: 'op', node: 0, doc: 0, op: { type: 'delete', key: 'a' } } },
    { delayMs: 100, action: { type: 'op', node: 0, doc: 0, op: { type: 'set', key: 'a', value: 0 } } },
    { delayMs: 0, action: { type: 'pump', node: 3 } },
    { delayMs: 0, action: { type: 'op', node: 2, doc: 0, op: { type: 'set', key: 'a', value: 0 } } },
    { delayMs: 0, action: { type: 'round' } },
    { delayMs: 0, action: { type: 'op', node: 2, doc: 0, op: { type: 'set', key: 'a', value: 0 } } },
    { delayMs: 1, action: { type: 'pump', node: 0 } },
  ],
} as const satisfies ReplicationSchedule<AmOp>

describe('replication: Automerge regressions', () => {
  // No longer reproduces after the RegionNode restart fixes (the run takes another path now); kept as a regression.
  it('counter increments reach every node (first failing case, now passing)', async () => {
    await runReplicationSchedule(automergeSpec, memoryBackend(), automergeLostIncrement)
  })
  // Passes since RegionNode reads a whole round before committing in the background; whether that
  // fixed the cause or moved the crash point past it is not established, so it stays pinned.
  it('a restarted node gets its twin instance\'s changes', async () => {
    await runReplicationSchedule(automergeSpec, memoryBackend(), automergeMissesTwin)
  })
  it('a change queued for a missing dependency survives the document being saved (canonical rebuild)', async () => {
    await runReplicationSchedule(automergeSpec, memoryBackend(), automergeQueuedChangeDropped)
  })
})
