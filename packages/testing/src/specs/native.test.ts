// Scripted scenarios for the native oracles: the real replicas, the oracle and the value a person
// would expect must all agree on the classic concurrent cases.
import { describe, expect, it } from 'vitest'
import type { Replica } from '@concord/core'
import { Simulation } from '../simulation.js'
import type { ReplicaSpec } from '../spec.js'
import { lwwMapSpec, lwwRegisterSpec, mvRegisterSpec, orMapSpec, orSetSpec, pnCounterSpec } from './native.js'

function scenario<V, Op, R extends Replica<V>>(spec: ReplicaSpec<V, Op, R>) {
  const sim = new Simulation({ spec, regions: ['us', 'eu', 'ap'], latency: 'three-continents', seed: 11 })
  const finish = (): V => {
    sim.heal()
    sim.converge()
    const value = sim.region('us').replica.value()
    expect(spec.oracle?.(sim.survivingOps(), sim.ops())).toEqual(value)
    return value
  }
  return { sim, finish }
}

describe('native oracles', () => {
  it('PnCounter sums increments and decrements', () => {
    const { sim, finish } = scenario(pnCounterSpec)
    sim.perform('us', { type: 'inc', n: 5 })
    sim.perform('eu', { type: 'dec', n: 2 })
    expect(finish()).toBe(3)
  })

  it('OrSet: a concurrent add beats a remove; an observed add does not', () => {
    const { sim, finish } = scenario(orSetSpec)
    sim.perform('us', { type: 'add', e: 'a' })
    sim.perform('us', { type: 'add', e: 'b' })
    sim.advance(500)
    sim.isolate('eu')
    sim.perform('eu', { type: 'remove', e: 'a' }) // saw us's add
    sim.perform('eu', { type: 'remove', e: 'b' })
    sim.perform('ap', { type: 'add', e: 'b' }) // concurrent with eu's remove
    expect(finish()).toEqual(['b'])
  })

  it('MvRegister keeps concurrent writes as siblings, sorted', () => {
    const { sim, finish } = scenario(mvRegisterSpec)
    sim.partition(['us'], ['eu', 'ap'])
    sim.perform('us', { type: 'set', value: 7 })
    sim.perform('eu', { type: 'set', value: 3 })
    expect(finish()).toEqual([3, 7])
  })

  it('LwwRegister: the greatest HLC wins, even from a region whose clock runs ahead', () => {
    const { sim, finish } = scenario(lwwRegisterSpec)
    sim.setSkew('ap', 60_000)
    sim.partition(['us'], ['eu', 'ap'])
    sim.perform('ap', { type: 'set', value: 1 })
    sim.advance(1_000)
    sim.perform('us', { type: 'set', value: 2 }) // later in real time, earlier by the skewed clock
    expect(finish()).toBe(1)
  })

  it('LwwMap: a later delete wins over an earlier set', () => {
    const { sim, finish } = scenario(lwwMapSpec)
    sim.perform('us', { type: 'set', key: 'k1', value: 1 })
    sim.perform('eu', { type: 'set', key: 'k2', value: 2 })
    sim.advance(1_000)
    sim.perform('ap', { type: 'delete', key: 'k1' })
    expect(finish()).toEqual({ k2: 2 })
  })

  it('OrMap: a field removal resets what it saw; a concurrent counter bump survives with its running total', () => {
    const { sim, finish } = scenario(orMapSpec)
    sim.perform('us', { type: 'update', field: 'count', op: { type: 'inc', n: 1 } })
    sim.perform('us', { type: 'update', field: 'tags', op: { type: 'add', e: 'x' } })
    sim.advance(1_000)
    sim.isolate('us')
    sim.perform('eu', { type: 'remove', field: 'count' })
    sim.perform('eu', { type: 'remove', field: 'tags' })
    sim.perform('us', { type: 'update', field: 'count', op: { type: 'inc', n: 2 } }) // concurrent with the removal
    // us's bump carries its total (1 + 2): the reset cannot subtract what it did not see separately.
    expect(finish()).toEqual({ count: 3 })
  })
})

describe('carries: the ops a delta restates', () => {
  const rec = <O>(id: number, replica: string, op: O, deps: number[]) => ({ id, replica, op, deps: new Set(deps), meta: undefined })

  it('a counter bump carries every earlier bump of its writer it had seen, none of other writers', () => {
    const history = [rec(0, 'a', { type: 'inc', n: 1 } as const, []), rec(1, 'b', { type: 'inc', n: 1 } as const, []), rec(2, 'a', { type: 'dec', n: 1 } as const, [0])]
    const op = rec(3, 'a', { type: 'inc', n: 2 } as const, [0, 1, 2])
    expect([...(pnCounterSpec.carries?.(op, history) ?? [])].sort()).toEqual([0, 2])
    // A bump that had not seen the writer's earlier bump (its own delta replayed elsewhere) carries nothing.
    expect([...(pnCounterSpec.carries?.(rec(4, 'c', { type: 'inc', n: 1 } as const, [0]), history) ?? [])]).toEqual([])
  })

  it('an OrMap count bump stops at a removal of the field that had seen the earlier bump; other fields carry nothing', () => {
    const bump = { type: 'update', field: 'count', op: { type: 'inc', n: 1 } } as const
    const history = [rec(0, 'a', bump, []), rec(1, 'b', { type: 'remove', field: 'count' } as const, [0]), rec(2, 'a', bump, [0, 1]), rec(3, 'a', { type: 'update', field: 'title', op: { type: 'set', value: 1 } } as const, [0, 1, 2])]
    expect([...(orMapSpec.carries?.(rec(4, 'a', bump, [0, 1, 2, 3]), history) ?? [])]).toEqual([2])
    expect([...(orMapSpec.carries?.(rec(4, 'a', { type: 'update', field: 'title', op: { type: 'set', value: 2 } } as const, [0, 1, 2, 3]), history) ?? [])]).toEqual([])
    // The chain follows what each bump had seen: bump 2 saw the removal, so it restarted from zero
    // even for a later bump that did not see the removal itself...
    expect([...(orMapSpec.carries?.(rec(4, 'a', bump, [0, 2]), history) ?? [])]).toEqual([2])
    // ...and without any removal it goes back to the first bump.
    const plain = [rec(0, 'a', bump, []), rec(1, 'a', bump, [0])]
    expect([...(orMapSpec.carries?.(rec(2, 'a', bump, [0, 1]), plain) ?? [])]).toEqual([1, 0])
  })
})
