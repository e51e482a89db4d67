import { describe, expect, it } from 'vitest'
import { runTransportContract } from '@concord/testing'
import { MemoryBroker, MemoryTransport } from './memoryTransport.js'

runTransportContract('memory', () => {
  const broker = new MemoryBroker()
  return { open: async () => new MemoryTransport({ broker }) }
})

describe('MemoryTransport fault hooks', () => {
  const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)

  it('drops and duplicates on delivery only; the log and a clean client are unaffected', async () => {
    const broker = new MemoryBroker()
    const faulty = new MemoryTransport({
      broker,
      faults: { drop: (r) => r.position === '1', duplicate: (r) => r.position === '2' },
    })
    await faulty.append('a', ['x', 'y', 'z'].map(bytes))
    const got = await faulty.poll('r', 'a')
    expect(got.map((r) => r.position)).toEqual(['0', '2', '2'])
    const clean = new MemoryTransport({ broker })
    expect((await clean.poll('r', 'a')).map((r) => r.position)).toEqual(['0', '1', '2'])
  })

  it('rejects malformed positions', async () => {
    const t = new MemoryTransport()
    await expect(t.commit('r', 'a', 'x1')).rejects.toMatchObject({ code: 'TRANSPORT' })
    expect(() => t.comparePositions('01', '1')).toThrow()
  })

  it('a pending poll ends with ClosedError when the client closes', async () => {
    const t = new MemoryTransport()
    const waiting = t.poll('r', 'a', { waitMs: 60_000 })
    await t.close()
    await expect(waiting).rejects.toMatchObject({ code: 'CLOSED' })
  })
})
