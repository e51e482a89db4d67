import { describe, expect, it } from 'vitest'
import { isConcordError } from '@concord/core'
import { Simulation } from './simulation.js'
import { gCounterSpec, firstDeliveredSpec, type GCounter } from './fixtures.js'

const names = ['us', 'eu', 'ap']

function busy(seed: number, recordTrace = false): Simulation<number, number, GCounter> {
  const sim = new Simulation({ spec: gCounterSpec, regions: ['us', 'eu', 'ap', 'sa', 'af'], latency: 'three-continents', seed, recordTrace })
  sim.setNetwork({ loss: 0.3, duplicate: 0.2, reorder: 0.5 })
  sim.setSkew('ap', 90_000)
  for (let i = 0; i < 20; i++) {
    sim.perform(sim.regionNames[i % 5] as string, 1 + (i % 3))
    if (i === 5) sim.partition(['us', 'eu'], ['ap', 'sa', 'af'])
    if (i === 8) sim.crash('sa')
    if (i === 12) sim.swizzle(50)
    sim.advance(70)
  }
  sim.heal()
  sim.converge()
  return sim
}

describe('Simulation', () => {
  it('delivers local deltas to every region with latency', () => {
    const sim = new Simulation({ spec: gCounterSpec, regions: names, latency: 'three-continents', seed: 3 })
    sim.perform('us', 2)
    expect(sim.region('eu').replica.value()).toBe(0)
    sim.advance(5)
    expect(sim.region('eu').replica.value()).toBe(0) // ~40 ms away
    sim.advance(60)
    expect(sim.region('eu').replica.value()).toBe(2)
    expect(sim.region('ap').replica.value()).toBe(0) // ~110 ms from us
    sim.advance(100)
    expect(sim.values()).toEqual({ us: 2, eu: 2, ap: 2 })
    expect(sim.region('ap').known.has(0)).toBe(true)
  })

  it('counts the bytes it carries', () => {
    const sim = new Simulation({ spec: gCounterSpec, regions: names, seed: 3, antiEntropyIntervalMs: 10_000 })
    const sent: Uint8Array[] = []
    sim.region('us').replica.onDelta((d, origin) => origin === 'local' && sent.push(d))
    sim.perform('us', 2)
    sim.advance(5)
    expect(sent).toHaveLength(1)
    // one delta to each of the two peers, no anti-entropy yet
    expect(sim.stats().bytes).toBe(2 * (sent[0] as Uint8Array).length)
  })

  it('records causal deps from what the issuer had seen', () => {
    const sim = new Simulation({ spec: gCounterSpec, regions: names, latency: 'lan', seed: 1 })
    const a = sim.perform('us', 1)
    const b = sim.perform('eu', 1) // concurrent with a
    sim.advance(10)
    const c = sim.perform('ap', 1)
    expect(a?.deps.size).toBe(0)
    expect(b?.deps.size).toBe(0)
    expect([...(c?.deps ?? [])].sort()).toEqual([0, 1])
  })

  it('repairs loss with anti-entropy', () => {
    const sim = new Simulation({ spec: gCounterSpec, regions: names, seed: 9 })
    sim.setNetwork({ loss: 1 })
    sim.perform('us', 5)
    sim.advance(2_000)
    expect(sim.region('eu').replica.value()).toBe(0)
    sim.heal()
    const rounds = sim.converge()
    expect(rounds).toBeGreaterThan(0)
    expect(sim.values()).toEqual({ us: 5, eu: 5, ap: 5 })
  })

  it('asymmetric cut: one direction only', () => {
    const sim = new Simulation({ spec: gCounterSpec, regions: ['a', 'b'], seed: 2 })
    sim.cut('a', 'b')
    sim.perform('a', 1)
    sim.perform('b', 10)
    sim.advance(3_000)
    expect(sim.region('a').replica.value()).toBe(11)
    expect(sim.region('b').replica.value()).toBe(10)
  })

  it('full partition, then heal converges within a few rounds', () => {
    const sim = new Simulation({ spec: gCounterSpec, regions: names, latency: 'three-continents', seed: 4 })
    sim.partition(['us'], ['eu', 'ap'])
    sim.perform('us', 1)
    sim.perform('eu', 2)
    sim.advance(5_000)
    expect(sim.region('us').replica.value()).toBe(1)
    expect(sim.region('ap').replica.value()).toBe(2)
    sim.heal()
    expect(sim.converge()).toBeLessThanOrEqual(names.length + 2)
    expect(sim.values()).toEqual({ us: 3, eu: 3, ap: 3 })
  })

  it('clogged links hold messages and deliver them on unclog', () => {
    const sim = new Simulation({ spec: gCounterSpec, regions: ['a', 'b'], seed: 2, antiEntropyIntervalMs: 1e9 })
    sim.clog('a', 'b')
    sim.perform('a', 4)
    sim.advance(1_000)
    expect(sim.region('b').replica.value()).toBe(0)
    sim.unclog('a', 'b')
    sim.advance(10)
    expect(sim.region('b').replica.value()).toBe(4)
  })

  it('a crashed region loses unpersisted writes, restarts under a new id, and catches up', () => {
    const sim = new Simulation({ spec: gCounterSpec, regions: names, seed: 5, snapshotIntervalMs: 1e9 })
    sim.isolate('eu')
    sim.perform('eu', 7) // never persisted, never sent
    sim.perform('us', 1)
    sim.advance(100)
    sim.crash('eu')
    expect(sim.region('eu').up).toBe(false)
    expect(() => sim.region('eu').replica).toThrow(/down/)
    expect(sim.perform('eu', 1)).toBeUndefined()
    sim.heal()
    expect(sim.region('eu').replicaId).toBe('eu~1')
    sim.converge()
    expect(sim.values()).toEqual({ us: 1, eu: 1, ap: 1 })
    expect(sim.survivingOps().map((o) => o.id)).toEqual([1])
  })

  it('restores a persisted snapshot on restart', () => {
    const sim = new Simulation({ spec: gCounterSpec, regions: names, seed: 5, snapshotIntervalMs: 50 })
    sim.isolate('eu')
    sim.perform('eu', 7)
    sim.advance(100)
    sim.crash('eu')
    sim.restart('eu')
    expect(sim.region('eu').replica.value()).toBe(7)
    expect(sim.region('eu').known.has(0)).toBe(true)
  })

  it('refuses misspelt options instead of running with the defaults (review finding)', () => {
    expect(() => new Simulation({ spec: gCounterSpec, latancy: 'three-continents' } as never)).toThrow(/Simulation: unknown option "latancy" \(did you mean "latency"\?\)/)
    expect(() => new Simulation({ spec: gCounterSpec, antiEntropyIntervalMS: 10 } as never)).toThrow(/did you mean "antiEntropyIntervalMs"/)
    const sim = new Simulation({ spec: gCounterSpec, regions: ['a', 'b'] })
    expect(() => sim.setNetwork({ lossPct: 20 } as never)).toThrow(/setNetwork: unknown option "lossPct" \(did you mean "loss \(a fraction, 0..1\)"\?\)/)
    sim.setNetwork({ loss: 0.2 })
  })

  it('hands each replica its region clock with skew', () => {
    let seen = 0
    const sim = new Simulation({
      spec: { ...gCounterSpec, create: (id, env) => { seen = env.now(); return gCounterSpec.create(id, env) } },
      regions: ['a'],
      seed: 1,
      startTime: 1_000_000,
    })
    expect(seen).toBe(1_000_000)
    sim.setSkew('a', -60_000)
    sim.advance(500)
    sim.crash('a')
    sim.restart('a')
    expect(seen).toBe(1_000_000 + 500 - 60_000)
  })

  it('same seed, same run; another seed, another run', () => {
    const a = busy(42, true)
    const b = busy(42)
    const c = busy(43)
    expect(a.traceHash()).toBe(b.traceHash())
    expect(a.traceHash()).not.toBe(c.traceHash())
    expect(a.stats()).toEqual(b.stats())
    expect(a.trace().length).toBeGreaterThan(100)
    expect(b.trace()).toEqual([])
    expect(a.region('us').replica.value()).toBe(a.survivingOps().reduce((s, o) => s + o.op, 0))
  })

  it('throws NotConvergedError when a type diverges', () => {
    const sim = new Simulation({ spec: firstDeliveredSpec, regions: ['a', 'b', 'c'], latency: 'three-continents', seed: 1 })
    sim.perform('a', 'x')
    sim.perform('c', 'y')
    let err: unknown
    try {
      sim.converge(20)
    } catch (e) {
      err = e
    }
    expect(isConcordError(err) && err.code).toBe('NOT_CONVERGED')
  })

  it('rejects bad configuration', () => {
    expect(() => new Simulation({ spec: gCounterSpec, regions: [] })).toThrow(/region/)
    expect(() => new Simulation({ spec: gCounterSpec, regions: ['a', 'a'] })).toThrow(/unique/)
    const sim = new Simulation({ spec: gCounterSpec, regions: ['a'] })
    expect(() => sim.region('zz')).toThrow(/unknown region/)
    expect(() => sim.setNetwork({ loss: 2 })).toThrow(/loss/)
  })
})

describe('Simulation options', () => {
  it('refuses a latency profile with a negative or NaN latency (the clock would run backwards)', () => {
    for (const baseMs of [-1000, Number.NaN]) {
      expect(() => new Simulation({ spec: gCounterSpec, regions: ['a', 'b'], latency: { name: 'bad', link: () => ({ baseMs, jitterMs: 0 }) } })).toThrow(
        expect.objectContaining({ code: 'CONFIG', message: expect.stringMatching(/finite baseMs and jitterMs >= 0/) }),
      )
    }
  })
})
