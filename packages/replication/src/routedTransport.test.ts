import { describe, expect, it } from 'vitest'
import { bytesEqual, ConfigError, type Transport } from '@concord/core'
import { crdtFactory, type PnCounter } from '@concord/crdt'
import { runTransportContract } from '@concord/testing'
import { MemoryBroker, MemoryTransport } from './memoryTransport.js'
import { MemoryStore } from './memoryStore.js'
import { RegionNode } from './regionNode.js'
import { RoutedTransport } from './routedTransport.js'

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)

// Every contract case through the router (its origins are made up per test: the fallback holds them).
runTransportContract('routed', () => {
  const broker = new MemoryBroker()
  const other = new MemoryBroker()
  return { open: async () => new RoutedTransport({ routes: { elsewhere: new MemoryTransport({ broker: other }) }, fallback: new MemoryTransport({ broker }) }) }
})

describe('RoutedTransport', () => {
  it('closes every route when one close() throws instead of rejecting, and stops the watches it started when one route refuses to watch (review findings: the routes after it were left open, the watches running)', async () => {
    const a = new MemoryTransport()
    const b = new MemoryTransport()
    const c = new MemoryTransport()
    b.close = () => {
      throw new Error('sync boom')
    }
    const router = new RoutedTransport({ routes: { a, b, c } })
    await expect(router.close()).rejects.toThrow('sync boom')
    await expect(a.append('a', [bytes('x')])).rejects.toMatchObject({ code: 'CLOSED' })
    await expect(c.append('c', [bytes('x')])).rejects.toMatchObject({ code: 'CLOSED' })

    const d = new MemoryTransport()
    const e = new MemoryTransport()
    let stopped = 0
    const watch = d.watch.bind(d)
    d.watch = (reader, listener) => {
      const stop = watch(reader, listener)
      return () => {
        stopped++
        stop()
      }
    }
    e.watch = () => {
      throw new Error('refused')
    }
    const router2 = new RoutedTransport({ routes: { d, e } })
    expect(() => router2.watch('r', () => undefined)).toThrow('refused')
    expect(stopped).toBe(1)
  })

  it('refuses routes given as an array, or under Map keys that are not strings (they could never match an origin)', () => {
    const t = new MemoryTransport()
    expect(() => new RoutedTransport({ routes: [t] as never })).toThrow(ConfigError)
    expect(() => new RoutedTransport({ routes: new Map([[1, t]]) as never })).toThrow(/origin name must be a string, got number 1/)
  })

  it('after close() every call throws ClosedError, routed or not, and a second close() closes nothing again', async () => {
    let closes = 0
    const inner = new MemoryTransport()
    const close = inner.close.bind(inner)
    inner.close = async () => {
      closes++
      await close()
    }
    const router = new RoutedTransport({ routes: { eu: inner } })
    await router.close()
    await router.close()
    expect(closes).toBe(1)
    await expect(router.append('eu', [bytes('x')])).rejects.toMatchObject({ code: 'CLOSED' })
    await expect(router.append('nowhere', [bytes('x')])).rejects.toMatchObject({ code: 'CLOSED' })
    await expect(router.subscribe('r', ['eu'])).rejects.toMatchObject({ code: 'CLOSED' })
    expect(() => router.watch('r', () => undefined)).toThrow(expect.objectContaining({ code: 'CLOSED' }))
  })

  it('keeps each origin in its own transport: appends, polls, commits, rewinds, trims and earliest go there', async () => {
    const euBroker = new MemoryBroker()
    const usBroker = new MemoryBroker()
    const router = new RoutedTransport({ routes: { eu: new MemoryTransport({ broker: euBroker }), us: new MemoryTransport({ broker: usBroker }) } })
    expect(router.name).toBe('routed(memory)')
    const [e0, e1] = await router.append('eu', [bytes('e0'), bytes('e1')])
    await router.append('us', [bytes('u0')])
    // Each log lives in its route's broker only.
    const euDirect = new MemoryTransport({ broker: euBroker })
    const usDirect = new MemoryTransport({ broker: usBroker })
    expect((await euDirect.poll('x', 'eu')).map((r) => new TextDecoder().decode(r.bytes))).toEqual(['e0', 'e1'])
    expect(await euDirect.poll('x', 'us')).toEqual([])
    expect((await usDirect.poll('x', 'us')).map((r) => new TextDecoder().decode(r.bytes))).toEqual(['u0'])
    const got = await router.poll('r', 'eu')
    expect(got.map((r) => r.position)).toEqual([e0, e1])
    await router.commit('r', 'eu', e0 as string)
    expect(await router.committed('r', 'eu')).toBe(e0)
    expect(await euDirect.committed('r', 'eu')).toBe(e0)
    expect(await usDirect.committed('r', 'eu')).toBeUndefined()
    await router.rewind('r', 'eu')
    expect((await router.poll('r', 'eu')).map((r) => r.position)).toEqual([e1])
    await router.trim('eu', e1 as string)
    expect(await router.earliest('eu')).toBe(e1)
    expect(await router.earliest('us')).toBe(await usDirect.earliest('us'))
    await router.close()
    // Closing the router closed its clients, not the logs: another client still reads what is left.
    await expect(euDirect.poll('y', 'eu')).resolves.toHaveLength(1)
  })

  it('takes the smallest largest-record of its routes, or none', () => {
    const limited = (n: number): MemoryTransport => Object.assign(new MemoryTransport(), { maxRecordBytes: n })
    expect(new RoutedTransport({ routes: { eu: limited(5000), us: limited(3000), ap: new MemoryTransport() } }).maxRecordBytes).toBe(3000)
    expect(new RoutedTransport({ routes: { eu: new MemoryTransport() } }).maxRecordBytes).toBeUndefined()
  })

  it('announces to each transport only its own origins', async () => {
    const calls: Array<[string, string, readonly string[]]> = []
    const spied = (label: string): Transport => {
      const t = new MemoryTransport()
      return Object.assign(t, { subscribe: async (reader: string, origins: readonly string[]) => void calls.push([label, reader, origins]) })
    }
    const router = new RoutedTransport({ routes: { eu: spied('A'), us: spied('B') }, fallback: spied('C') })
    await router.subscribe('ap/i1', ['eu', 'us', 'ap', 'sa'])
    expect(calls.sort()).toEqual([
      ['A', 'ap/i1', ['eu']],
      ['B', 'ap/i1', ['us']],
      ['C', 'ap/i1', ['ap', 'sa']],
    ])
  })

  it('rejects bad options and unknown origins with ConfigError; closes every transport once, reporting a failure', async () => {
    expect(() => new RoutedTransport({ routes: {} })).toThrow(ConfigError)
    expect(() => new RoutedTransport(undefined as never)).toThrow(ConfigError)
    expect(() => new RoutedTransport({ routes: { eu: {} as Transport } })).toThrow(/not a Transport/)
    expect(() => new RoutedTransport({ routes: { '': new MemoryTransport() } })).toThrow(/empty/)
    // A misspelt fallback is refused, not silently left out.
    expect(() => new RoutedTransport({ routes: { eu: new MemoryTransport() }, fallbak: new MemoryTransport() } as never)).toThrow(/unknown option "fallbak" \(did you mean "fallback"\?\)/)
    const other = Object.assign(new MemoryTransport(), { name: 'redis' })
    expect(() => new RoutedTransport({ routes: { eu: new MemoryTransport(), us: other } })).toThrow(/one kind/)
    const shared = new MemoryTransport()
    let closes = 0
    const close = shared.close.bind(shared)
    shared.close = async () => {
      closes++
      await close()
    }
    const broken = Object.assign(new MemoryTransport(), { close: async () => Promise.reject(new Error('close failed')) })
    const router = new RoutedTransport({ routes: new Map([['eu', shared], ['us', shared], ['ap', broken]]) })
    await expect(router.append('sa', [bytes('x')])).rejects.toBeInstanceOf(ConfigError)
    await expect(router.poll('r', 'sa')).rejects.toThrow(/no route for origin "sa"/)
    expect(() => router.route('sa')).toThrow(ConfigError)
    await expect(router.close()).rejects.toThrow('close failed')
    expect(closes).toBe(1)
  })

  it('carries three RegionNodes whose logs each live in their own transport', async () => {
    const regions = ['eu', 'us', 'ap']
    const brokers = new Map(regions.map((r) => [r, new MemoryBroker()]))
    const factories = { 'pn-counter': crdtFactory('pn-counter') }
    // Each node has its own router over its own clients of every region's log, as with one Redis per region.
    const nodes = regions.map(
      (region) =>
        new RegionNode({
          region,
          instance: 'i1',
          regions,
          transport: new RoutedTransport({ routes: Object.fromEntries(regions.map((r) => [r, new MemoryTransport({ broker: brokers.get(r) as MemoryBroker })])) }),
          store: new MemoryStore(),
          factories,
        }),
    )
    for (const [i, node] of nodes.entries()) {
      const c = (await node.open('hits', 'pn-counter')) as unknown as PnCounter
      c.increment(i + 1)
      await node.flush()
    }
    for (let round = 0; round < 3; round++) for (const node of nodes) await node.pump()
    const states = await Promise.all(nodes.map(async (n) => (await n.open('hits', 'pn-counter')).state()))
    for (const node of nodes) expect((await node.open<number>('hits', 'pn-counter')).value()).toBe(6)
    expect(states.every((s) => bytesEqual(s, states[0] as Uint8Array))).toBe(true)
    // eu's envelopes went to eu's log only.
    const euLog = await new MemoryTransport({ broker: brokers.get('eu') as MemoryBroker }).poll('probe', 'eu', { max: 1000 })
    expect(euLog.length).toBeGreaterThan(0)
    expect(await new MemoryTransport({ broker: brokers.get('us') as MemoryBroker }).poll('probe', 'eu')).toEqual([])
    for (const node of nodes) await node.close()
  })
})
