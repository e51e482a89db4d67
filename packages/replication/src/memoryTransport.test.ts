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
    // The dropped record's place: a skipped placeholder, without its bytes.
    expect(got.map((r) => [r.position, r.skipped === true, r.bytes.length > 0])).toEqual([
      ['0', false, true],
      ['1', true, false],
      ['2', false, true],
      ['2', false, true],
    ])
    const clean = new MemoryTransport({ broker })
    expect((await clean.poll('r', 'a')).map((r) => r.position)).toEqual(['0', '1', '2'])
  })

  it('refuses bad options with ConfigError', () => {
    expect(() => new MemoryTransport({ brokr: new MemoryBroker() } as never)).toThrow(/unknown option "brokr" \(did you mean "broker"\?\)/)
    expect(() => new MemoryTransport({ broker: {} as MemoryBroker })).toThrow(/broker must be a MemoryBroker/)
    expect(() => new MemoryTransport({ faults: { drop: true } as never })).toThrow(/faults.drop must be a function/)
    expect(() => new MemoryTransport({ faults: { dropp: () => true } as never })).toThrow(/unknown option "dropp"/)
    expect(() => new MemoryTransport(null as never)).toThrow(/options must be an object/)
  })

  it('rejects malformed positions', async () => {
    const t = new MemoryTransport()
    await expect(t.commit('r', 'a', 'x1')).rejects.toMatchObject({ code: 'TRANSPORT' })
    // Past 2^53 a position would come back as another number.
    await expect(t.commit('r', 'a', '9999999999999999')).rejects.toMatchObject({ code: 'TRANSPORT' })
    expect(() => t.comparePositions('01', '1')).toThrow()
  })

  it('refuses a poll signal that is not an AbortSignal, leaving no waiter or timer behind', async () => {
    const t = new MemoryTransport()
    await expect(t.poll('r', 'a', { waitMs: 20, signal: {} as AbortSignal })).rejects.toMatchObject({ code: 'CONFIG' })
    // The timer of a waiter left behind threw, uncaught, when it fired.
    await new Promise((r) => setTimeout(r, 40))
    await t.close()
  })

  it('a pending poll ends with ClosedError when the client closes', async () => {
    const t = new MemoryTransport()
    const waiting = t.poll('r', 'a', { waitMs: 60_000 })
    await t.close()
    await expect(waiting).rejects.toMatchObject({ code: 'CLOSED' })
  })
})

describe('MemoryTransport record copies', () => {
  it('keeps copies: a caller reusing its arrays changes nothing in the log, and records do not overlap', async () => {
    const t = new MemoryTransport()
    // Small records share slabs, large ones (over 1 KiB) are sliced; a slab fills and a new one starts.
    const sizes = [1, 59, 64, 65, 1024, 1025, 5000, ...Array.from({ length: 400 }, (_, i) => 1 + ((i * 37) % 200))]
    const sent = sizes.map((n, i) => new Uint8Array(n).fill(i % 251))
    await t.append('a', sent)
    for (const s of sent) s.fill(255)
    const got = await t.poll('r', 'a', { max: sizes.length })
    expect(got.map((r) => r.bytes.length)).toEqual(sizes)
    got.forEach((r, i) => expect(r.bytes.every((b) => b === i % 251)).toBe(true))
    // Writing into one delivered record (which a reader must not do) does not reach its neighbours.
    got[1]?.bytes.fill(7)
    expect(got[0]?.bytes.every((b) => b === 0)).toBe(true)
    expect(got[2]?.bytes.every((b) => b === 2)).toBe(true)
  })
})
