import * as fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { FAULT_CLASSES, faultSchedule, opSequence, runSchedule, type FaultAction } from './arbitraries.js'
import { Simulation } from './simulation.js'
import { gCounterSpec } from './fixtures.js'

const op = fc.integer({ min: 1, max: 3 })

const allowed: Record<string, ReadonlyArray<FaultAction<number>['type']>> = {
  none: ['op'],
  loss: ['op', 'network'],
  duplication: ['op', 'network'],
  reordering: ['op', 'network'],
  'partition-full': ['op', 'partition', 'heal'],
  'partition-asymmetric': ['op', 'cut', 'heal'],
  'partition-isolated': ['op', 'isolate', 'heal'],
  swizzle: ['op', 'swizzle', 'heal'],
  'crash-restart': ['op', 'crash', 'restart'],
  'clock-skew': ['op', 'skew'],
}

describe('faultSchedule', () => {
  for (const cls of FAULT_CLASSES) {
    it(`${cls}: opens with a fault of the class, 1..maxOps ops, regions in range`, () => {
      fc.assert(
        fc.property(faultSchedule(op, { faults: cls, regions: 5, maxOps: 12 }), (s) => {
          const ops = s.steps.filter((x) => x.action.type === 'op')
          expect(ops.length).toBeGreaterThanOrEqual(1)
          expect(ops.length).toBeLessThanOrEqual(12)
          const types = new Set(s.steps.map((x) => x.action.type))
          const ok = allowed[cls]
          if (ok !== undefined) for (const t of types) expect(ok).toContain(t)
          if (cls !== 'none') expect(s.steps[0]?.action.type).not.toBe('op')
          for (const x of s.steps) {
            const a = x.action
            if ('region' in a) expect(a.region).toBeLessThan(5)
            if (a.type === 'cut') expect(a.from).not.toBe(a.to)
            if (a.type === 'partition') expect(a.side.length).toBeLessThan(5)
            if (a.type === 'skew') expect(Math.abs(a.ms)).toBeLessThanOrEqual(120_000)
          }
          if (cls === 'loss') expect(s.steps[0]?.action).toMatchObject({ type: 'network', duplicatePct: 0 })
        }),
        { numRuns: 200 },
      )
    })
  }

  it('runs on a simulation deterministically', () => {
    fc.assert(
      fc.property(faultSchedule(op, { faults: 'mixed', regions: 5 }), (s) => {
        const hash = (): string => {
          const sim = new Simulation({ spec: gCounterSpec, seed: s.seed, latency: s.latency })
          runSchedule(sim, s)
          sim.heal()
          sim.converge()
          return sim.traceHash()
        }
        expect(hash()).toBe(hash())
      }),
      { numRuns: 100 },
    )
  })
})

describe('opSequence', () => {
  it('stays within its writers and size', () => {
    fc.assert(
      fc.property(opSequence(op, { writers: 2, maxSteps: 7 }), (s) => {
        expect(s.steps.length).toBeGreaterThanOrEqual(1)
        expect(s.steps.length).toBeLessThanOrEqual(7)
        for (const x of s.steps) {
          expect(x.writer).toBeLessThan(2)
          if (x.type === 'sync') expect(x.from).toBeLessThan(2)
        }
      }),
      { numRuns: 200 },
    )
  })
})
