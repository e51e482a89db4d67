import { describe, expect, test } from 'vitest'
import fc from 'fast-check'
import { bytesEqual } from '@concord/core'
import { LwwMap, LwwRegister, MvRegister, OrMap, OrSet, PnCounter, type CausalReplica, type CausalTypeName } from './index.js'

/** One generated step: which replica acts, what it does (interpreted per type), what it receives. */
interface Step {
  readonly r: number
  readonly kind: number
  readonly a: number
  readonly b: number
  readonly deliver: number
}

const step: fc.Arbitrary<Step> = fc.record({ r: fc.nat(2), kind: fc.nat(9), a: fc.nat(3), b: fc.nat(3), deliver: fc.nat(1_000) })

const TYPES: CausalTypeName[] = ['or-set', 'mv-register', 'lww-register', 'pn-counter', 'lww-map', 'or-map']

function make(type: CausalTypeName, id: string, now: () => number): CausalReplica<unknown> {
  const o = { replicaId: id, now }
  switch (type) {
    case 'or-set':
      return new OrSet(o)
    case 'mv-register':
      return new MvRegister(o)
    case 'lww-register':
      return new LwwRegister(o)
    case 'pn-counter':
      return new PnCounter(o)
    case 'lww-map':
      return new LwwMap(o)
    case 'or-map':
      return new OrMap(o)
  }
}

/** Performs the step's operation on `r` (deterministic in the step's numbers). */
function perform(r: CausalReplica<unknown>, s: Step): void {
  if (r instanceof OrSet) {
    if (s.kind < 6) r.add(s.a)
    else r.remove(s.a)
  } else if (r instanceof MvRegister || r instanceof LwwRegister) r.set(s.a * 10 + s.b)
  else if (r instanceof PnCounter) {
    if (s.kind < 6) r.increment(s.a)
    else r.decrement(s.b)
  } else if (r instanceof LwwMap) {
    if (s.kind < 7) r.set(`k${s.a}`, s.b)
    else r.delete(`k${s.a}`)
  } else if (r instanceof OrMap) {
    const name = `f${s.a % 2}`
    switch (s.kind) {
      case 0:
      case 1:
        r.update(name, 'pn-counter', (c) => c.increment(s.b + 1))
        break
      case 2:
      case 3:
        r.update(name, 'or-set', (x) => (s.b < 2 ? x.add(s.b) : x.remove(s.b - 2)))
        break
      case 4:
        r.update(name, 'lww-register', (x) => x.set(s.b))
        break
      case 5:
        r.update(name, 'mv-register', (x) => x.set(s.b))
        break
      case 6:
        r.update(name, 'or-map', (m) => m.update(`g${s.b % 2}`, 'or-set', (x) => x.add(s.b)))
        break
      default:
        r.remove(name)
    }
  }
}

/** Runs the steps on three replicas with partial random delivery; returns replicas, every local delta, and mid-run snapshots. */
function run(type: CausalTypeName, steps: readonly Step[]): { replicas: CausalReplica<unknown>[]; pool: Uint8Array[]; snaps: Array<{ r: number; state: Uint8Array }> } {
  let tick = 0
  const replicas = [0, 1, 2].map((i) => make(type, `r${i}`, () => tick + i * 3))
  const pool: Uint8Array[] = []
  const snaps: Array<{ r: number; state: Uint8Array }> = []
  replicas.forEach((r) => r.onDelta((d, o) => (o === 'local' ? pool.push(d) : undefined)))
  for (const s of steps) {
    tick += s.deliver % 3
    const r = replicas[s.r] as CausalReplica<unknown>
    perform(r, s)
    if (pool.length > 0 && s.deliver % 2 === 0) {
      const other = replicas[(s.r + 1 + (s.deliver % 2)) % 3] as CausalReplica<unknown>
      other.apply(pool[s.deliver % pool.length] as Uint8Array)
    }
    if (s.deliver % 5 === 0) snaps.push({ r: s.r, state: r.state() })
  }
  return { replicas, pool, snaps }
}

function fresh(type: CausalTypeName, id: string, deltas: readonly Uint8Array[]): CausalReplica<unknown> {
  const r = make(type, id, () => 0)
  for (const d of deltas) r.apply(d)
  return r
}

function sameState(a: CausalReplica<unknown>, b: CausalReplica<unknown>): boolean {
  return bytesEqual(a.state(), b.state())
}

const runs = process.env.CONCORD_SOAK === undefined ? 150 : 2_000

describe.each(TYPES)('%s: apply laws', (type) => {
  test('apply on deltas is idempotent, commutative and associative', () => {
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 25 }), fc.nat(), fc.nat(), fc.nat(), (steps, i, j, k) => {
        const { pool, replicas } = run(type, steps)
        const all = [...pool, ...replicas.map((r) => r.state())]
        const d1 = all[i % all.length] as Uint8Array
        const d2 = all[j % all.length] as Uint8Array
        const d3 = all[k % all.length] as Uint8Array
        // idempotence
        expect(sameState(fresh(type, 'x', [d1, d1]), fresh(type, 'y', [d1]))).toBe(true)
        // commutativity
        expect(sameState(fresh(type, 'x', [d1, d2]), fresh(type, 'y', [d2, d1]))).toBe(true)
        // associativity: (d1 ⊔ d2) ⊔ d3 = d1 ⊔ (d2 ⊔ d3)
        const right = fresh(type, 'z', [d2, d3]).state()
        const left = fresh(type, 'x', [d1, d2, d3])
        expect(sameState(left, fresh(type, 'y', [d1, right]))).toBe(true)
        expect(left.value()).toEqual(fresh(type, 'w', [right, d1]).value())
      }),
      { numRuns: runs },
    )
  })

  test('three replicas converge whatever the delivery order, with duplicates', () => {
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 30 }), fc.array(fc.nat(), { minLength: 3, maxLength: 3 }), (steps, seeds) => {
        const { replicas, pool } = run(type, steps)
        replicas.forEach((r, i) => {
          // deliver everything in a replica-specific shuffled order, some twice
          const order = pool.map((_, n) => n)
          let x = (seeds[i] as number) + 1
          for (let n = order.length - 1; n > 0; n--) {
            x = (x * 1_103_515_245 + 12_345) % 2_147_483_648
            const m = x % (n + 1)
            ;[order[n], order[m]] = [order[m] as number, order[n] as number]
          }
          for (const n of [...order, ...order.slice(0, 3)]) r.apply(pool[n] as Uint8Array)
        })
        const [a, b, c] = replicas as [CausalReplica<unknown>, CausalReplica<unknown>, CausalReplica<unknown>]
        expect(a.value()).toEqual(b.value())
        expect(b.value()).toEqual(c.value())
        expect(sameState(a, b) && sameState(b, c)).toBe(true)
        expect(sameState(a, fresh(type, 'q', [...pool].reverse()))).toBe(true)
      }),
      { numRuns: runs },
    )
  })

  test('deltaSince(version) brings an earlier snapshot up to date', () => {
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 30 }), fc.nat(), (steps, pick) => {
        const { replicas, snaps } = run(type, steps)
        if (snaps.length === 0) return
        const snap = snaps[pick % snaps.length] as { r: number; state: Uint8Array }
        const src = replicas[snap.r] as CausalReplica<unknown>
        const old = fresh(type, 'old', [snap.state])
        const since = src.deltaSince(old.version())
        old.apply(since)
        expect(sameState(old, src)).toBe(true)
        expect(old.value()).toEqual(src.value())
        expect(since.length).toBeLessThanOrEqual(src.state().length)
        // a full state restores an empty replica
        expect(sameState(fresh(type, 'new', [src.deltaSince()]), src)).toBe(true)
      }),
      { numRuns: runs },
    )
  })
})
