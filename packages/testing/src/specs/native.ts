/**
 * ReplicaSpecs, with sequential-spec oracles, for the native CRDTs of `@concord/crdt`.
 *
 * Every oracle reasons over dots: an op that writes (an add, a register write, a counter bump, a
 * map-key write) creates a dot; the dot is *live* unless some surviving op removed it — a later
 * write of the same register or key, a `remove(e)`/`clear()` for set adds (and a later add of the
 * same element), the same writer's next bump for counters, and `remove(field)` for anything inside
 * an OrMap field. Such an op removes a dot only where it is still live when the op is issued: it had
 * seen the dot (`dot ∈ op.deps`) and no op it had seen had removed the dot already, a lost op
 * included (see {@link Removals}). The value is then read off the live dots, as the type's semantics say:
 * - PnCounter: sum of increments minus decrements;
 * - OrSet (add-wins): `e` present iff some `add(e)` was not removed by a `remove(e)`/`clear()` or
 *   by a later `add(e)` (which overwrites it, so a remove that saw only the later add removes both);
 * - MvRegister: the values of writes no other write removed (sorted, duplicates kept);
 * - LwwRegister: among those, the write with the greatest HLC timestamp (`perform` returns it);
 * - LwwMap: per key likewise, a winning delete meaning absent;
 * - OrMap: per field, the nested type's oracle over the field's ops minus those removed by a
 *   `remove(field)` (observed-remove reset; a concurrent update survives on top of the reset).
 */
import * as fc from 'fast-check'
import { canonicalJson, compareHlc, type HlcTimestamp, type Json, type Replica } from '@concord/core'
import { LwwMap, LwwRegister, MvRegister, OrMap, OrSet, PnCounter } from '@concord/crdt'
import type { OpRecord, ReplicaSpec } from '../spec.js'

/** Counter operation: add or subtract `n` (≥ 1). */
export type CounterOp = { readonly type: 'inc'; readonly n: number } | { readonly type: 'dec'; readonly n: number }
/** Set operation. */
export type SetOp = { readonly type: 'add'; readonly e: string } | { readonly type: 'remove'; readonly e: string } | { readonly type: 'clear' }
/** Register write. */
export interface RegisterOp {
  readonly type: 'set'
  readonly value: number
}
/** LWW map operation. */
export type LwwMapOp = { readonly type: 'set'; readonly key: string; readonly value: number } | { readonly type: 'delete'; readonly key: string }
/** The fields of the OrMap spec, each with a fixed nested type. */
export type OrMapField = 'tags' | 'count' | 'title' | 'note' | 'prefs'
/** OrMap operation: one nested op on a field, or a field removal. */
export type OrMapOp =
  | { readonly type: 'update'; readonly field: 'tags'; readonly op: SetOp }
  | { readonly type: 'update'; readonly field: 'count'; readonly op: CounterOp }
  | { readonly type: 'update'; readonly field: 'title'; readonly op: RegisterOp }
  | { readonly type: 'update'; readonly field: 'note'; readonly op: RegisterOp }
  | { readonly type: 'update'; readonly field: 'prefs'; readonly op: LwwMapOp }
  | { readonly type: 'remove'; readonly field: OrMapField }

/** An op as the oracles see it: its record, narrowed to one nested op. */
interface Rec<O> {
  readonly id: number
  readonly replica: string
  readonly deps: ReadonlySet<number>
  readonly op: O
  readonly meta: unknown
}

/**
 * Which ops removed the dots of one scope (one register, one set element, one map key, one OrMap
 * field's resets). An op that overwrites or removes such dots removes only those still live where it
 * is issued: `k` removed `d` when k had seen d and no op of the scope that k had seen had removed d
 * already — that earlier remover's delta carried the removal, k's does not. The earlier remover may
 * be an op lost since (dropped on its way, its region crashed before persisting it), so `removers`
 * are drawn from every op performed, not only the surviving ones.
 */
class Removals {
  private readonly memo = new Map<number, Map<number, boolean>>()

  /** @param removers every op performed (lost ones too) that removes this scope's live dots. */
  constructor(private readonly removers: readonly Rec<unknown>[]) {}

  /** Whether `k`'s own delta removed `d`'s dot. */
  removes(k: Rec<unknown>, d: Rec<unknown>): boolean {
    if (k.id === d.id || !k.deps.has(d.id)) return false
    let byK = this.memo.get(d.id)
    if (byK === undefined) this.memo.set(d.id, (byK = new Map()))
    const known = byK.get(k.id)
    if (known !== undefined) return known
    // Every op in k.deps was issued before k, so this recursion goes strictly back in time.
    let live = true
    for (const j of this.removers) {
      if (j.id !== k.id && k.deps.has(j.id) && this.removes(j, d)) {
        live = false
        break
      }
    }
    byK.set(k.id, live)
    return live
  }

  /** True when some op in `killers` (surviving removers) removed `d`. */
  removedBy(d: Rec<unknown>, killers: readonly Rec<unknown>[]): boolean {
    for (const k of killers) if (this.removes(k, d)) return true
    return false
  }
}

/** A scoped oracle's input: the surviving ops of a scope, and every op of it performed (lost ones too). */
interface Ops<O> {
  readonly surviving: readonly Rec<O>[]
  readonly all: readonly Rec<O>[]
}

const byCanonical = (a: Json, b: Json): number => {
  const x = canonicalJson(a)
  const y = canonicalJson(b)
  return x < y ? -1 : x > y ? 1 : 0
}

/** Nested value, or absent when no dot is live. */
type Scoped<V> = { readonly present: false } | { readonly present: true; readonly value: V }

function counterOracle(ops: Ops<CounterOp>, resets: Ops<unknown>): Scoped<number> {
  // Each bump replaces its writer's live dot (if a reset it had seen had not removed it already)
  // with a new one holding the running total: the amount plus that dot's total, else from zero.
  // A writer's dots are removed by its later bumps and by resets, each only where still live.
  const total = new Map<number, number>()
  const removals = new Map<string, Removals>()
  const removalsOf = (writer: string): Removals => {
    let r = removals.get(writer)
    if (r === undefined) removals.set(writer, (r = new Removals([...ops.all.filter((o) => o.replica === writer), ...resets.all])))
    return r
  }
  for (const x of ops.all) {
    const amount = x.op.type === 'inc' ? x.op.n : -x.op.n
    // The writer's latest earlier bump that x had seen: not merely its latest one, since a writer
    // id can outlive a crash (the replication harness keeps it) that lost a bump unsent.
    let prev: Rec<CounterOp> | undefined
    for (const o of ops.all) if (o.id < x.id && o.replica === x.replica && x.deps.has(o.id)) prev = o
    const seen = resets.all.filter((r) => x.deps.has(r.id))
    const base = prev !== undefined && !removalsOf(x.replica).removedBy(prev, seen) ? (total.get(prev.id) as number) : 0
    total.set(x.id, amount + base)
  }
  let sum = 0
  let present = false
  for (const x of ops.surviving) {
    if (removalsOf(x.replica).removedBy(x, [...ops.surviving.filter((o) => o.replica === x.replica), ...resets.surviving])) continue
    present = true
    sum += total.get(x.id) as number
  }
  return present ? { present, value: sum } : { present: false }
}

/**
 * The earlier ops whose amounts a counter bump's delta restates: walking back through the same
 * writer's earlier bumps it had seen, while the earlier one's dot was still live where the later one
 * was issued (a reset that removed it restarted the total from zero).
 */
function runningChain<O>(op: OpRecord<O>, history: readonly OpRecord<O>[], isBump: (o: O) => boolean, isReset: (o: O) => boolean): number[] {
  if (!isBump(op.op)) return []
  const resets = history.filter((r) => isReset(r.op))
  const removals = new Removals([...history.filter((o) => o.replica === op.replica && isBump(o.op)), ...resets])
  const out: number[] = []
  let cur: OpRecord<O> = op
  for (let i = history.length - 1; i >= 0; i--) {
    const prev = history[i] as OpRecord<O>
    if (prev.replica !== op.replica || !isBump(prev.op) || !cur.deps.has(prev.id)) continue
    const at = cur
    if (removals.removedBy(prev, resets.filter((r) => at.deps.has(r.id)))) break
    out.push(prev.id)
    cur = prev
  }
  return out
}

function setOracle(ops: Ops<SetOp>, resets: Ops<unknown>): Scoped<string[]> {
  const out = new Set<string>()
  const removals = new Map<string, Removals>()
  // A remove or clear removes the element's live dots; so does a later add of it, which overwrites
  // them (a remove that saw only the later add removes the element even where the earlier add has
  // not arrived yet).
  const removesE = (e: string) => (k: Rec<SetOp>) => k.op.type === 'clear' || k.op.e === e
  for (const a of ops.surviving) {
    if (a.op.type !== 'add') continue
    const e = a.op.e
    let r = removals.get(e)
    if (r === undefined) removals.set(e, (r = new Removals([...ops.all.filter(removesE(e)), ...resets.all])))
    if (!r.removedBy(a, [...ops.surviving.filter(removesE(e)), ...resets.surviving])) out.add(e)
  }
  return out.size > 0 ? { present: true, value: [...out].sort(byCanonical) } : { present: false }
}

/** The writes of one register (or map key) whose dots are live: no surviving write or reset removed them. */
function liveWrites<O>(ops: Ops<O>, resets: Ops<unknown>): Rec<O>[] {
  const removals = new Removals([...ops.all, ...resets.all])
  const killers = [...ops.surviving, ...resets.surviving]
  return ops.surviving.filter((w) => !removals.removedBy(w, killers))
}

function mvOracle(ops: Ops<RegisterOp>, resets: Ops<unknown>): Scoped<number[]> {
  const live = liveWrites(ops, resets)
  return live.length > 0 ? { present: true, value: live.map((w) => w.op.value).sort(byCanonical) } : { present: false }
}

function lwwWinner<O>(ops: Ops<O>, resets: Ops<unknown>): Rec<O> | undefined {
  let best: Rec<O> | undefined
  for (const w of liveWrites(ops, resets)) {
    if (best === undefined || compareHlc(w.meta as HlcTimestamp, best.meta as HlcTimestamp) > 0) best = w
  }
  return best
}

function lwwOracle(ops: Ops<RegisterOp>, resets: Ops<unknown>): Scoped<number> {
  const w = lwwWinner(ops, resets)
  return w === undefined ? { present: false } : { present: true, value: w.op.value }
}

function lwwMapOracle(ops: Ops<LwwMapOp>, resets: Ops<unknown>): Scoped<Record<string, number>> {
  const keys = [...new Set(ops.surviving.map((o) => o.op.key))].sort()
  const out: Record<string, number> = {}
  let present = false
  for (const key of keys) {
    const ofKey = (o: Rec<LwwMapOp>): boolean => o.op.key === key
    const w = lwwWinner({ surviving: ops.surviving.filter(ofKey), all: ops.all.filter(ofKey) }, resets)
    if (w === undefined) continue
    present = true // a live delete marker keeps the map's dot alive
    if (w.op.type === 'set') out[key] = w.op.value
  }
  return present ? { present, value: out } : { present: false }
}

function narrow<O, P>(ops: readonly OpRecord<O>[], f: (op: O) => P | undefined): Rec<P>[] {
  const out: Rec<P>[] = []
  for (const o of ops) {
    const p = f(o.op)
    if (p !== undefined) out.push({ id: o.id, replica: o.replica, deps: o.deps, op: p, meta: o.meta })
  }
  return out
}

/** The surviving ops and every op performed, narrowed alike. */
function scoped<O, P>(ops: readonly OpRecord<O>[], history: readonly OpRecord<O>[], f: (op: O) => P | undefined): Ops<P> {
  return { surviving: narrow(ops, f), all: narrow(history, f) }
}

const same = <O>(o: O): O => o
const NONE: Ops<unknown> = { surviving: [], all: [] }

// ---- arbitraries ---------------------------------------------------------------------------

const counterOp: fc.Arbitrary<CounterOp> = fc.record({ type: fc.constantFrom('inc' as const, 'dec' as const), n: fc.integer({ min: 1, max: 5 }) })
const element = fc.constantFrom('a', 'b', 'c', 'd')
const setOp: fc.Arbitrary<SetOp> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ type: fc.constant('add' as const), e: element }) },
  { weight: 4, arbitrary: fc.record({ type: fc.constant('remove' as const), e: element }) },
  { weight: 1, arbitrary: fc.constant({ type: 'clear' as const }) },
)
const registerOp: fc.Arbitrary<RegisterOp> = fc.record({ type: fc.constant('set' as const), value: fc.integer({ min: 0, max: 9 }) })
const key = fc.constantFrom('k1', 'k2', 'k3')
const lwwMapOp: fc.Arbitrary<LwwMapOp> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ type: fc.constant('set' as const), key, value: fc.integer({ min: 0, max: 9 }) }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constant('delete' as const), key }) },
)
const orMapOp: fc.Arbitrary<OrMapOp> = fc.oneof(
  { weight: 2, arbitrary: setOp.map((op): OrMapOp => ({ type: 'update', field: 'tags', op })) },
  { weight: 2, arbitrary: counterOp.map((op): OrMapOp => ({ type: 'update', field: 'count', op })) },
  { weight: 1, arbitrary: registerOp.map((op): OrMapOp => ({ type: 'update', field: 'title', op })) },
  { weight: 1, arbitrary: registerOp.map((op): OrMapOp => ({ type: 'update', field: 'note', op })) },
  { weight: 1, arbitrary: lwwMapOp.map((op): OrMapOp => ({ type: 'update', field: 'prefs', op })) },
  { weight: 2, arbitrary: fc.constantFrom<OrMapField>('tags', 'count', 'title', 'note', 'prefs').map((field): OrMapOp => ({ type: 'remove', field })) },
)

// ---- specs ---------------------------------------------------------------------------------

/** PnCounter: the value is the sum of increments minus decrements. */
export const pnCounterSpec: ReplicaSpec<number, CounterOp, PnCounter> = {
  name: 'PnCounter',
  create: (replicaId, env) => new PnCounter({ replicaId, now: env.now }),
  op: counterOp,
  perform: (r, op) => (op.type === 'inc' ? r.increment(op.n) : r.decrement(op.n)),
  oracle: (ops) => ops.reduce((s, o) => s + (o.op.type === 'inc' ? o.op.n : -o.op.n), 0),
  // A bump's delta restates its writer's running total: every earlier bump of that writer it has seen.
  carries: (op, history) => runningChain(op, history, () => true, () => false),
}

function applySet(r: { add(e: string): void; remove(e: string): boolean; clear(): void }, op: SetOp): unknown {
  if (op.type === 'add') return r.add(op.e)
  if (op.type === 'remove') return r.remove(op.e)
  return r.clear()
}

/** OrSet (add-wins): present iff some add is not in the deps of a remove of it (or a clear). */
export const orSetSpec: ReplicaSpec<Json[], SetOp, OrSet> = {
  name: 'OrSet',
  create: (replicaId, env) => new OrSet({ replicaId, now: env.now }),
  op: setOp,
  perform: (r, op) => applySet(r, op),
  oracle: (ops, history) => {
    const s = setOracle(scoped(ops, history, same), NONE)
    return s.present ? s.value : []
  },
}

/** MvRegister: the values of the writes no other write had seen. */
export const mvRegisterSpec: ReplicaSpec<Json[], RegisterOp, MvRegister> = {
  name: 'MvRegister',
  create: (replicaId, env) => new MvRegister({ replicaId, now: env.now }),
  op: registerOp,
  perform: (r, op) => r.set(op.value),
  oracle: (ops, history) => {
    const s = mvOracle(scoped(ops, history, same), NONE)
    return s.present ? s.value : []
  },
}

/** LwwRegister: the value of the write with the greatest HLC timestamp (returned by `set`, kept as meta). */
export const lwwRegisterSpec: ReplicaSpec<Json | undefined, RegisterOp, LwwRegister> = {
  name: 'LwwRegister',
  create: (replicaId, env) => new LwwRegister({ replicaId, now: env.now }),
  op: registerOp,
  perform: (r, op) => r.set(op.value),
  oracle: (ops, history) => {
    const s = lwwOracle(scoped(ops, history, same), NONE)
    return s.present ? s.value : undefined
  },
}

function applyLwwMap(r: { set(k: string, v: number): HlcTimestamp; delete(k: string): HlcTimestamp }, op: LwwMapOp): HlcTimestamp {
  return op.type === 'set' ? r.set(op.key, op.value) : r.delete(op.key)
}

/** LwwMap: per key, the greatest-HLC write; a winning delete means absent. */
export const lwwMapSpec: ReplicaSpec<Record<string, Json>, LwwMapOp, LwwMap> = {
  name: 'LwwMap',
  create: (replicaId, env) => new LwwMap({ replicaId, now: env.now }),
  op: lwwMapOp,
  perform: (r, op) => applyLwwMap(r, op),
  oracle: (ops, history) => {
    const s = lwwMapOracle(scoped(ops, history, same), NONE)
    return s.present ? s.value : {}
  },
}

/** OrMap with five fields (or-set, pn-counter, lww-register, mv-register, lww-map), observed-remove per field. */
export const orMapSpec: ReplicaSpec<Record<string, unknown>, OrMapOp, OrMap> = {
  name: 'OrMap',
  create: (replicaId, env) => new OrMap({ replicaId, now: env.now }),
  op: orMapOp,
  perform: (r, op) => {
    if (op.type === 'remove') return r.remove(op.field)
    switch (op.field) {
      case 'tags':
        return r.update('tags', 'or-set', (s) => applySet(s, op.op))
      case 'count':
        return r.update('count', 'pn-counter', (c) => (op.op.type === 'inc' ? c.increment(op.op.n) : c.decrement(op.op.n)))
      case 'title':
        return r.update('title', 'lww-register', (v) => v.set(op.op.value))
      case 'note':
        return r.update('note', 'mv-register', (v) => v.set(op.op.value))
      case 'prefs':
        return r.update('prefs', 'lww-map', (m) => applyLwwMap(m, op.op))
    }
  },
  oracle: (ops, history) => {
    const out: Record<string, unknown> = {}
    const resetsOf = (field: OrMapField): Ops<unknown> => scoped(ops, history, (o) => (o.type === 'remove' && o.field === field ? o : undefined))
    const put = (field: OrMapField, s: Scoped<unknown>): void => {
      if (s.present) out[field] = s.value
    }
    put('tags', setOracle(scoped(ops, history, (o) => (o.type === 'update' && o.field === 'tags' ? o.op : undefined)), resetsOf('tags')))
    put('count', counterOracle(scoped(ops, history, (o) => (o.type === 'update' && o.field === 'count' ? o.op : undefined)), resetsOf('count')))
    put('title', lwwOracle(scoped(ops, history, (o) => (o.type === 'update' && o.field === 'title' ? o.op : undefined)), resetsOf('title')))
    put('note', mvOracle(scoped(ops, history, (o) => (o.type === 'update' && o.field === 'note' ? o.op : undefined)), resetsOf('note')))
    put('prefs', lwwMapOracle(scoped(ops, history, (o) => (o.type === 'update' && o.field === 'prefs' ? o.op : undefined)), resetsOf('prefs')))
    return out
  },
  // A count bump restates its writer's running total for the field (see runningChain).
  carries: (op, history) =>
    runningChain(
      op,
      history,
      (o) => o.type === 'update' && o.field === 'count',
      (o) => o.type === 'remove' && o.field === 'count',
    ),
}

/** A spec of any value, op and replica type, as held in {@link nativeSpecs}. */
export type AnyReplicaSpec = ReplicaSpec<unknown, unknown, Replica<unknown>>

/** Every native spec, for suites that run over all of them. */
export const nativeSpecs: readonly AnyReplicaSpec[] = [pnCounterSpec, orSetSpec, mvRegisterSpec, lwwRegisterSpec, lwwMapSpec, orMapSpec]
