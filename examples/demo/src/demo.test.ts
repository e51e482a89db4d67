import { describe, expect, it } from 'vitest'
import { runDemo } from './demo.js'

describe('demo', () => {
  it('diverges during the partition and converges to the merged cart after it heals', () => {
    const lines: string[] = []
    const r = runDemo((l) => lines.push(l))
    expect(r.divergedDuringPartition).toBe(true)
    expect(r.converged).toBe(true)
    for (const v of Object.values(r.values)) {
      expect(v).toEqual({ items: ['book', 'socks'], qty: 8, note: 'leave at the door' })
    }
    // no false conflict: removing one set element is not a conflict with the elements kept beside it
    expect(r.conflicts.some((c) => c.kind === 'update-wins')).toBe(false)
    expect(r.conflicts.some((c) => c.kind === 'lww-overwrite')).toBe(true)
  })
})
