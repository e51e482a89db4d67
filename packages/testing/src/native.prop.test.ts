// Every suite on every native type of @concord/crdt: merge laws, convergence under each fault
// class, liveness after heal, and the sequential-spec oracle.
import type { FaultSchedule, Regression } from './index.js'
import { describeReplicaSuites } from './suites.js'
import { mvRegisterSpec, nativeSpecs, orMapSpec, orSetSpec, pnCounterSpec, type CounterOp, type OrMapOp, type RegisterOp, type SetOp } from './specs/native.js'

// Pinned: PnCounter under 48% loss. A region got bump #3 and bump #1 of one writer but lost #2;
// #3's context does not cover #1, so #1 came back alive under a version equal to everyone else's.
// It diverged for good while the simulator skipped deltaSince between equal versions.
const equalVersionsDifferentStates: FaultSchedule<CounterOp> = {
  seed: 0,
  regions: 5,
  latency: 'lan',
  steps: [
    { delayMs: 0, action: { type: 'network', lossPct: 48, duplicatePct: 0, reorderPct: 0 } },
    { delayMs: 0, action: { type: 'op', region: 2, op: { type: 'inc', n: 1 } } },
    { delayMs: 0, action: { type: 'op', region: 2, op: { type: 'inc', n: 1 } } },
    { delayMs: 0, action: { type: 'op', region: 2, op: { type: 'inc', n: 1 } } },
  ],
}
// Pinned: a tracking bug in the simulator, found by convergence/mixed (seed -2017944825). r0 bumped
// twice and crashed before persisting; the first bump's deltas were lost, the second's arrived.
// That delta restates r0's running total (2), but only the second op was counted as seen, so the
// oracle expected 1. Specs now name the ops a delta carries (ReplicaSpec.carries).
const runningTotalCarriesEarlierBump: FaultSchedule<CounterOp> = {
  seed: -1183711173,
  regions: 5,
  latency: 'lan',
  steps: [
    { delayMs: 0, action: { type: 'network', lossPct: 47, duplicatePct: 33, reorderPct: 0 } },
    { delayMs: 177, action: { type: 'op', region: 0, op: { type: 'inc', n: 1 } } },
    { delayMs: 0, action: { type: 'op', region: 0, op: { type: 'inc', n: 1 } } },
    { delayMs: 1, action: { type: 'crash', region: 0 } },
  ],
}
const pnCounterRegressions: Regression<CounterOp>[] = [
  { property: 'convergence/loss', schedule: equalVersionsDifferentStates },
  { property: 'liveness', schedule: equalVersionsDifferentStates },
  { property: 'convergence/mixed', schedule: runningTotalCarriesEarlierBump },
]

// Pinned: an oracle bug. r0's first add(b) was cut off by a partition; its second add(b)
// overwrote the first; r1 removed b having seen only the second. b is gone everywhere — the
// oracle must count the later add as having removed the earlier one.
const overwrittenAdd: FaultSchedule<SetOp> = {
  seed: 0,
  regions: 5,
  latency: 'lan',
  steps: [
    { delayMs: 0, action: { type: 'partition', side: [0] } },
    { delayMs: 0, action: { type: 'op', region: 0, op: { type: 'add', e: 'b' } } },
    { delayMs: 0, action: { type: 'heal' } },
    { delayMs: 0, action: { type: 'op', region: 0, op: { type: 'add', e: 'b' } } },
    { delayMs: 1, action: { type: 'op', region: 1, op: { type: 'remove', e: 'b' } } },
  ],
}

// The next four are oracle bugs of one kind, found by a review (they fail on most seeds; random
// schedules reach them rarely): an op removes only the dots still live where it is issued. The
// oracles took "had seen the dot" for "removed it", so a dot an earlier, since-lost op had removed
// at the writer counted dead, though the later op's delta never removed it and it stayed alive.
const op = <O>(region: number, o: O, delayMs = 0): FaultSchedule<O>['steps'][number] => ({ delayMs, action: { type: 'op', region, op: o } })
const lostAt = <O>(first: O, lost: O, then: readonly O[]): FaultSchedule<O> => ({
  seed: 7,
  regions: 5,
  latency: 'lan',
  steps: [
    op(0, first),
    { delayMs: 20, action: { type: 'partition', side: [0] } },
    op(0, lost),
    { delayMs: 0, action: { type: 'heal' } },
    ...then.map((o) => op(0, o)),
    { delayMs: 0, action: { type: 'crash', region: 0 } },
  ],
})
// OrSet: r0 adds b (everyone gets it), removes it while cut off (dropped), adds and removes b again,
// and crashes before persisting the first remove. The last remove removed only the second add's dot.
const lostRemove = lostAt<SetOp>({ type: 'add', e: 'b' }, { type: 'remove', e: 'b' }, [
  { type: 'add', e: 'b' },
  { type: 'remove', e: 'b' },
])
// MvRegister: r0 writes 1, overwrites it with 2 while cut off, writes 3 and crashes: 3 overwrote
// only 2's dot, so 1 and 3 are both live where 2 never arrived.
const lostOverwrite = lostAt<RegisterOp>({ type: 'set', value: 1 }, { type: 'set', value: 2 }, [{ type: 'set', value: 3 }])
// OrMap, a register field: the same through a field removal.
const title = (value: number): OrMapOp => ({ type: 'update', field: 'title', op: { type: 'set', value } })
const lostTitleOverwrite = lostAt<OrMapOp>(title(1), title(2), [title(3), { type: 'remove', field: 'title' }])
// OrMap, the counter field, no crash: r1 removes count while r0 is cut off, bumps and removes it
// again; r0's own dot from its first bump was never removed (the second removal had seen it, but
// it was already dead at r1), so r0's next bump restates 1 + 1.
const countBump: OrMapOp = { type: 'update', field: 'count', op: { type: 'inc', n: 1 } }
const staleReset: FaultSchedule<OrMapOp> = {
  seed: 7,
  regions: 5,
  latency: 'lan',
  steps: [
    op(0, countBump),
    { delayMs: 20, action: { type: 'partition', side: [0] } },
    op(1, { type: 'remove', field: 'count' }),
    { delayMs: 0, action: { type: 'heal' } },
    op(1, countBump),
    op(1, { type: 'remove', field: 'count' }),
    op(0, countBump, 5),
  ],
}
// PnCounter (an implementation bug, the known limit docs/semantics.md described): r0 bumps (everyone
// gets it), bumps while cut off (dropped) and bumps again, then crashes before persisting the second
// bump. The third bump's delta restates all three, but removed only the second's dot: where the
// second never arrived, the first's dot stayed alive beside the third's and counted twice (4, not 3).
const lostBump = lostAt<CounterOp>({ type: 'inc', n: 1 }, { type: 'inc', n: 1 }, [{ type: 'inc', n: 1 }])
pnCounterRegressions.push({ schedule: lostBump })
const orSetRegressions: Regression<SetOp>[] = [{ schedule: overwrittenAdd }, { schedule: lostRemove }]

describeReplicaSuites(pnCounterSpec, { regressions: pnCounterRegressions })
describeReplicaSuites(orSetSpec, { regressions: orSetRegressions })
describeReplicaSuites(mvRegisterSpec, { regressions: [{ schedule: lostOverwrite }] })
describeReplicaSuites(orMapSpec, { regressions: [{ schedule: lostTitleOverwrite }, { schedule: staleReset }] })
const pinned: readonly unknown[] = [pnCounterSpec, orSetSpec, mvRegisterSpec, orMapSpec]
for (const spec of nativeSpecs) if (!pinned.includes(spec)) describeReplicaSuites(spec)
