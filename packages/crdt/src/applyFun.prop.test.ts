/**
 * Registers and counters apply deltas through a direct join (CausalReplica.applyFun) rather than
 * the generic decode-then-joinStore path. Both must agree on everything: the state after each
 * delta, whether a delta changed anything (the 'remote' delta event) and the conflicts reported,
 * whatever the deltas' order, duplicates and staleness.
 */
import { describe, expect, test } from 'vitest'
import fc from 'fast-check'
import { bytesEqual, type ConflictEvent } from '@concord/core'
import { LwwRegister, MvRegister, PnCounter, type CausalReplica } from './index.js'
import { joinStore, newJoinOut, type ConflictSink } from './store.js'
import { decodeDelta } from './wire.js'

/** The generic path: decode into a store and a context, then joinStore. Returns whether the state changed. */
function genericApply(r: CausalReplica<unknown>, delta: Uint8Array, events: ConflictEvent[]): boolean {
  const dec = decodeDelta(r.typeName, r.schema, delta)
  const sink: ConflictSink = { typeName: r.typeName, events: [] }
  const out = newJoinOut()
  const grows = !r.ctx.includes(dec.ctx)
  joinStore(r.schema, r.root, r.ctx, dec.store, dec.ctx, [], sink, out)
  r.ctx.union(dec.ctx)
  for (const t of out.times) r.clock.observe(t)
  if (!grows && out.added.length === 0 && out.removed.length === 0) return false
  events.push(...sink.events)
  return true
}

type FunType = 'pn-counter' | 'lww-register' | 'mv-register'

function make(type: FunType, replicaId: string, now: () => number): PnCounter | LwwRegister | MvRegister {
  const o = { replicaId, now }
  return type === 'pn-counter' ? new PnCounter(o) : type === 'lww-register' ? new LwwRegister(o) : new MvRegister(o)
}

/** Three writers on one clock, each with the log of the local deltas it emitted. */
function writersWithLogs(type: FunType, now: () => number): { writers: Array<PnCounter | LwwRegister | MvRegister>; logs: Uint8Array[][] } {
  const writers = ['a/1', 'b/1', 'c/1'].map((id) => make(type, id, now))
  const logs: Uint8Array[][] = writers.map(() => [])
  writers.forEach((w, i) => w.onDelta((d, origin) => origin === 'local' && (logs[i] as Uint8Array[]).push(d)))
  return { writers, logs }
}

/** One step: writer `w` writes (`op` 0/1) or one of its past deltas (`pick`) is delivered. */
const step = fc.tuple(fc.nat(2), fc.nat(3), fc.integer({ min: 0, max: 5 }), fc.nat(50))

const runs = process.env.CONCORD_SOAK === undefined ? 300 : 5_000

describe.each(['pn-counter', 'lww-register', 'mv-register'] as const)('%s: direct apply', (type) => {
  test('agrees with the generic join on state, change events and conflicts', () => {
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 60 }), (steps) => {
        let clock = 1_000
        const now = (): number => clock
        const { writers, logs } = writersWithLogs(type, now)
        const direct = make(type, 'z/1', now)
        const generic = make(type, 'z/2', now)
        const directEvents: ConflictEvent[] = []
        const genericEvents: ConflictEvent[] = []
        direct.onConflict((e) => directEvents.push(e))
        let directChanges = 0
        let genericChanges = 0
        direct.onDelta((_, origin) => origin === 'remote' && directChanges++)
        for (const [w, op, n, pick] of steps) {
          clock += 1
          const writer = writers[w] as PnCounter | LwwRegister | MvRegister
          if (op < 2) {
            if (writer instanceof PnCounter) {
              if (op === 0) writer.increment(n)
              else writer.decrement(n)
            } else writer.set(n)
            continue
          }
          const log = logs[w] as Uint8Array[]
          if (log.length === 0) continue
          // Any past delta of the writer: in order, late, or again.
          const d = log[pick % log.length] as Uint8Array
          direct.apply(d)
          if (genericApply(generic, d, genericEvents)) genericChanges++
          // Writers learn from each other too, so later deltas remove and supersede earlier dots.
          ;(writers[(w + 1) % 3] as CausalReplica<unknown>).apply(d)
          expect(bytesEqual(direct.state(), generic.state())).toBe(true)
          expect(directChanges).toBe(genericChanges)
        }
        expect(directEvents).toEqual(genericEvents)
      }),
      { numRuns: runs },
    )
  })
})

/** One step: `w` 0–2 a writer, 3 the replica under test; op 0/1 a write, else a delivery of one of writer `w % 3`'s past deltas (`pick`). */
const localStep = fc.tuple(fc.nat(3), fc.nat(3), fc.integer({ min: 0, max: 5 }), fc.nat(50))

describe.each(['pn-counter', 'lww-register', 'mv-register'] as const)('%s: direct local write', (type) => {
  test('emits the delta bytes and reaches the state of the generic commit', () => {
    fc.assert(
      fc.property(fc.array(localStep, { minLength: 1, maxLength: 60 }), (steps) => {
        let clock = 1_000
        const now = (): number => clock
        const { writers, logs } = writersWithLogs(type, now)
        // Same id, same clock: one writes at the root directly (commitRootWrite), the other inside
        // a batch of that one write, which takes the generic joinStore + encodeDelta path.
        const direct = make(type, 'z/1', now)
        const generic = make(type, 'z/1', now)
        const emitted: Uint8Array[][] = [[], []]
        direct.onDelta((d, origin) => origin === 'local' && (emitted[0] as Uint8Array[]).push(d))
        generic.onDelta((d, origin) => origin === 'local' && (emitted[1] as Uint8Array[]).push(d))
        const write = (r: PnCounter | LwwRegister | MvRegister, op: number, n: number): void => {
          if (r instanceof PnCounter) {
            if (op === 0) r.increment(n)
            else r.decrement(n)
          } else r.set(n)
        }
        for (const [w, op, n, pick] of steps) {
          clock += 1
          if (op < 2) {
            if (w === 3) {
              write(direct, op, n)
              ;(generic as CausalReplica<unknown>).batch(() => write(generic, op, n))
              const [a, b] = emitted as [Uint8Array[], Uint8Array[]]
              expect(a.length).toBe(b.length)
              if (a.length > 0) expect(bytesEqual(a[a.length - 1] as Uint8Array, b[b.length - 1] as Uint8Array)).toBe(true)
            } else write(writers[w] as PnCounter | LwwRegister | MvRegister, op, n)
            continue
          }
          const log = logs[w % 3] as Uint8Array[]
          if (log.length === 0) continue
          const d = log[pick % log.length] as Uint8Array
          direct.apply(d)
          generic.apply(d)
          ;(writers[(w + 1) % 3] as CausalReplica<unknown>).apply(d)
          // The replica's own deltas reach the writers too, so theirs overwrite its dots.
          const own = emitted[0] as Uint8Array[]
          if (own.length > 0) (writers[w % 3] as CausalReplica<unknown>).apply(own[pick % own.length] as Uint8Array)
        }
        expect(bytesEqual(direct.state(), generic.state())).toBe(true)
        expect(direct.value()).toEqual(generic.value())
      }),
      { numRuns: runs },
    )
  })
})
