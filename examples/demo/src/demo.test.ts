import { describe, expect, it } from 'vitest'
import { assertProperty, checkConvergence } from '@concord/testing'
import { cartSpec, runDemo } from './demo.js'

describe('demo', () => {
  it('diverges during the partition and converges to the merged cart after it heals', () => {
    const lines: string[] = []
    const r = runDemo((l) => lines.push(l))
    expect(r.divergedDuringPartition).toBe(true)
    expect(r.converged).toBe(true)
    expect(r.correct).toBe(true)
    expect(lines.join('\n')).toMatch(/1 \+ 2 \+ 5 = 8/)
    for (const v of Object.values(r.values)) {
      expect(v).toEqual({ items: ['book', 'socks'], qty: 8, note: 'leave at the door' })
    }
    // no false conflict: removing one set element is not a conflict with the elements kept beside it
    expect(r.conflicts.some((c) => c.kind === 'update-wins')).toBe(false)
    expect(r.conflicts.some((c) => c.kind === 'lww-overwrite')).toBe(true)
  })
})

describe('the demo cart under the property suites', () => {
  it('converges under mixed faults (partitions, loss, duplication, crashes, skew)', () => {
    assertProperty('cart convergence/mixed', checkConvergence(cartSpec, 'mixed'), { numRuns: 200 })
  })
})
