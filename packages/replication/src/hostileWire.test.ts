/**
 * Hostile review of the engine's own encodings (wire.ts), the in-memory transport and store, the
 * routed transport and RegionNode option checking: each test shows a defect found by the review.
 */
import { describe, expect, it, vi } from 'vitest'
import { encodeEnvelope, isConcordError, type Replica, type ReplicaFactory } from '@concord/core'
import { crdtFactory, type OrSet, type PnCounter } from '@concord/crdt'
import { MemoryBroker, MemoryTransport } from './memoryTransport.js'
import { MemoryStore } from './memoryStore.js'
import { RegionNode } from './regionNode.js'
import type { RegionNodeOptions } from './options.js'
import { decodeRepairRequest, decodeRepairResponse, encodeRepairRequest, encodeRepairResponse } from './wire.js'

function node(broker: MemoryBroker, store: MemoryStore, extra: Partial<RegionNodeOptions> = {}): RegionNode {
  return new RegionNode({
    region: 'eu',
    instance: 'i1',
    regions: ['eu', 'us'],
    transport: new MemoryTransport({ broker }),
    store,
    factories: { 'or-set': crdtFactory('or-set') },
    ...extra,
  })
}

const MiB = 1024 * 1024

describe('local changes past the envelope payload limit (8 MiB)', () => {
  it('a single change past 8 MiB is kept locally and reported as a TooLargeError; the node goes on (encodeEnvelope threw a ConfigError at every flush)', async () => {
    const broker = new MemoryBroker()
    const store = new MemoryStore()
    const a = node(broker, store)
    const set = (await a.open('big', 'or-set')) as unknown as OrSet<string>
    set.add('x'.repeat(9 * MiB))
    await expect(a.pump()).rejects.toMatchObject({ code: 'TOO_LARGE' })
    expect(a.metrics().tooLarge).toBe(1)
    // The next change still goes out, and the big one was saved with the document.
    set.add('small')
    await a.pump()
    await a.close()
    const b = node(broker, store.reopen())
    const again = (await b.open('big', 'or-set')) as unknown as OrSet<string>
    expect((again.value() as unknown as string[]).map((s) => s.length).sort((p, q) => p - q)).toEqual([5, 9 * MiB])
    await b.close()
  }, 60_000)

  it('changes merging past 8 MiB in one flush go out as several envelopes (the merged envelope threw a ConfigError at every flush)', async () => {
    const broker = new MemoryBroker()
    const a = node(broker, new MemoryStore())
    const set = (await a.open('big', 'or-set')) as unknown as OrSet<string>
    for (let i = 0; i < 10; i++) set.add(String.fromCharCode(97 + i).repeat(MiB))
    await a.pump()
    const us = new RegionNode({ region: 'us', instance: 'i1', regions: ['eu', 'us'], transport: new MemoryTransport({ broker }), store: new MemoryStore(), factories: { 'or-set': crdtFactory('or-set') } })
    await us.pump()
    const got = (await us.open('big', 'or-set')) as unknown as OrSet<string>
    expect((got.value() as unknown as string[]).length).toBe(10)
    await a.close()
    await us.close()
  }, 60_000)
})

describe('stored state records', () => {
  it('a document whose state grew past 16 MiB is read back after a restart (its record was written, then refused as an oversize field)', async () => {
    const broker = new MemoryBroker()
    const store = new MemoryStore()
    const a = node(broker, store)
    const set = (await a.open('big', 'or-set')) as unknown as OrSet<string>
    // 18 elements of 1 MiB: every change is within every limit, the document's state is not.
    for (let i = 0; i < 18; i++) set.add(String.fromCharCode(97 + i).repeat(MiB))
    await a.pump()
    await a.close()
    expect((await store.get('doc/big'))?.length).toBeGreaterThan(16 * MiB)
    const b = node(broker, store.reopen())
    const again = (await b.open('big', 'or-set')) as unknown as OrSet<string>
    expect((again.value() as unknown as string[]).length).toBe(18)
    await b.close()
  }, 60_000)
})

describe('MemoryTransport', () => {
  const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)
  const errorOf = async (call: () => Promise<unknown>): Promise<unknown> =>
    call().then(
      () => undefined,
      (e: unknown) => e,
    )

  it('a watch listener that throws does not fail appends (the append rejected with its error though the records were in the log, and later listeners were not told)', async () => {
    const broker = new MemoryBroker()
    const a = new MemoryTransport({ broker })
    const b = new MemoryTransport({ broker })
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined)
    try {
      a.watch('r', () => {
        throw new Error('listener bug')
      })
      let told = 0
      b.watch('r', () => told++)
      // Another client's append: it must not fail for a listener it knows nothing of.
      const positions = await b.append('o', [bytes('x')])
      expect(positions).toEqual(['0'])
      expect(told).toBe(1)
      expect((await b.poll('r', 'o')).map((r) => r.position)).toEqual(['0'])
    } finally {
      warn.mockRestore()
    }
  })

  it('watch refuses a listener that is not a function (every later append of every client on the broker then failed)', async () => {
    const t = new MemoryTransport()
    expect(() => t.watch('r', 'not a function' as unknown as () => void)).toThrow(expect.objectContaining({ code: 'CONFIG' }))
    expect(await t.append('o', [bytes('x')])).toEqual(['0'])
  })

  it('refuses origin and reader names that are not non-empty strings with a ConfigError (a record appended to origin 7 was never delivered from "7")', async () => {
    const t = new MemoryTransport()
    const bad: unknown[] = [7, undefined, null, '', {}]
    for (const name of bad) {
      const n = name as string
      const calls: Array<() => Promise<unknown>> = [
        () => t.append(n, [bytes('x')]),
        () => t.poll(n, 'o'),
        () => t.poll('r', n),
        () => t.commit(n, 'o', '0'),
        () => t.commit('r', n, '0'),
        () => t.committed('r', n),
        () => t.rewind(n, 'o'),
        () => t.earliest(n),
        () => t.latest(n),
        () => t.trim(n, '0'),
      ]
      for (const call of calls) {
        const err = await errorOf(call)
        expect(isConcordError(err) && err.code === 'CONFIG', `${String(name)}: ${String(err)}`).toBe(true)
      }
      expect(() => t.watch(n, () => undefined)).toThrow(expect.objectContaining({ code: 'CONFIG' }))
    }
    // Nothing was appended anywhere.
    expect(t.broker.origins()).toEqual([])
  })
})

describe('MemoryStore', () => {
  it('refuses a key or prefix that is not a string with a ConfigError, as other stores do (keys() without a prefix answered [] and get(5) undefined, as if the store were empty)', async () => {
    const s = new MemoryStore()
    await s.put('a', new Uint8Array([1]))
    await expect(s.keys(undefined as unknown as string)).rejects.toMatchObject({ code: 'CONFIG' })
    await expect(s.keys(7 as unknown as string)).rejects.toMatchObject({ code: 'CONFIG' })
    await expect(s.get(undefined as unknown as string)).rejects.toMatchObject({ code: 'CONFIG' })
    await expect(s.get(5 as unknown as string)).rejects.toMatchObject({ code: 'CONFIG' })
    expect(await s.keys('')).toEqual(['a'])
  })
})

describe('repair payloads', () => {
  /** A control record in us's log, as anyone able to write there could make it (no keys). */
  const forged = (typeName: string, docId: string, payload: Uint8Array): Uint8Array =>
    encodeEnvelope({ docId, typeName, region: 'us', writer: 'us/x', seq: 1, time: { wall: Date.now(), logical: 0, node: 'us/x' }, deps: new Uint8Array(0), payload })

  it('a repair request with an empty request id is dead-lettered as a DecodeError (its answer, an envelope with an empty docId, threw a ConfigError out of pump() and dropped the answers queued after it)', async () => {
    const broker = new MemoryBroker()
    const mk = (region: string): RegionNode =>
      new RegionNode({ region, instance: 'i1', regions: ['eu', 'us'], transport: new MemoryTransport({ broker }), store: new MemoryStore(), factories: { 'pn-counter': crdtFactory('pn-counter') } })
    const eu = mk('eu')
    const us = mk('us')
    ;((await eu.open('c', 'pn-counter')) as unknown as PnCounter).increment(1)
    await eu.pump()
    await us.pump()
    const bad = encodeRepairRequest({ requestId: '', target: 'eu/i1', from: 0, responder: 'eu/i1' })
    await new MemoryTransport({ broker }).append('us', [forged('$repair-request', 'eu/i1', bad)])
    await eu.pump()
    expect(eu.deadLetters().map((d) => d.code)).toEqual(['DECODE'])
    await eu.close()
    await us.close()
  })

  it('decoders refuse the empty ids no envelope carries: request id, target and responder of a request, request id and document id and type of an answer', () => {
    const request = { requestId: 'r', target: 'eu/i1', from: 0, responder: '*' }
    for (const field of ['requestId', 'target', 'responder'] as const) {
      expect(() => decodeRepairRequest(encodeRepairRequest({ ...request, [field]: '' })), field).toThrow(expect.objectContaining({ code: 'DECODE' }))
    }
    const answer = { requestId: 'r', requester: 'us/i1', target: 'eu/i1', from: 0, upTo: 1, part: 0, parts: 1, docs: [{ docId: 'd', typeName: 'pn-counter', state: new Uint8Array([0]) }] }
    expect(decodeRepairResponse(encodeRepairResponse(answer))).toEqual(answer)
    for (const field of ['requestId', 'requester', 'target'] as const) {
      expect(() => decodeRepairResponse(encodeRepairResponse({ ...answer, [field]: '' })), field).toThrow(expect.objectContaining({ code: 'DECODE' }))
    }
    for (const field of ['docId', 'typeName'] as const) {
      const docs = [{ ...answer.docs[0], [field]: '' }] as typeof answer.docs
      expect(() => decodeRepairResponse(encodeRepairResponse({ ...answer, docs })), field).toThrow(expect.objectContaining({ code: 'DECODE' }))
    }
  })
})

describe('dead letters', () => {
  /** pn-counter replicas whose apply() of a remote delta throws `thrown(delta)` in region us. */
  function refusingCluster(thrown: (delta: Uint8Array) => unknown) {
    const broker = new MemoryBroker()
    const base = crdtFactory('pn-counter')
    const refusing = {
      typeName: 'pn-counter',
      create: (id: string) => {
        const r = base.create(id) as unknown as Replica<unknown>
        const apply = r.apply.bind(r)
        ;(r as { apply: (d: Uint8Array) => void }).apply = (d) => {
          if (d.length > 0) throw thrown(d)
          apply(d)
        }
        return r
      },
    } as unknown as ReplicaFactory<unknown, Replica<unknown>>
    const usStore = new MemoryStore()
    const eu = new RegionNode({ region: 'eu', instance: 'i1', regions: ['eu', 'us'], transport: new MemoryTransport({ broker }), store: new MemoryStore(), factories: { 'pn-counter': base } as never })
    const us = (store: MemoryStore): RegionNode => new RegionNode({ region: 'us', instance: 'i1', regions: ['eu', 'us'], transport: new MemoryTransport({ broker }), store, factories: { 'pn-counter': refusing } })
    return { eu, us, usStore }
  }

  it('a record refused with a message holding a lone surrogate is dead-lettered, and the node goes on (encoding the dead letter threw a TypeError at every round: the log stalled there)', async () => {
    const { eu, us, usStore } = refusingCluster(() => new Error('refused: half an emoji \uD83D'))
    const node = us(usStore)
    ;((await eu.open('c', 'pn-counter')) as unknown as PnCounter).increment(1)
    await eu.pump()
    await node.pump()
    expect(node.deadLetters()).toHaveLength(1)
    expect(node.deadLetters()[0]?.message).toMatch(/half an emoji/)
    await node.close()
    // Read back from the store as it was kept.
    const again = us(usStore.reopen())
    await again.pump()
    expect(again.deadLetters().map((d) => d.message)).toEqual(node.deadLetters().map((d) => d.message))
    await again.close()
    await eu.close()
  })

  it('a dead letter with a huge message (an error quoting the record) is kept short: the node restarts (its 16 MiB-plus message was stored, then refused at every start)', async () => {
    const { eu, us, usStore } = refusingCluster((d) => new Error(`refused delta ${'x'.repeat(17 * MiB)} ${d.length}`))
    const node = us(usStore)
    ;((await eu.open('c', 'pn-counter')) as unknown as PnCounter).increment(1)
    await eu.pump()
    await node.pump()
    expect(node.deadLetters()).toHaveLength(1)
    expect(node.deadLetters()[0]?.message.length).toBeLessThanOrEqual(4096)
    await node.close()
    const again = us(usStore.reopen())
    await again.pump()
    expect(again.deadLetters()).toHaveLength(1)
    await again.close()
    await eu.close()
  }, 60_000)
})

describe('RegionNode options', () => {
  it('a clock giving a time the HLC refuses (negative, past 2^53) is a ConfigError at construction (it was accepted, then every write and round threw)', () => {
    for (const now of [() => -1, () => 2 ** 60, () => Number.MAX_SAFE_INTEGER]) {
      expect(() => node(new MemoryBroker(), new MemoryStore(), { now }), String(now())).toThrow(expect.objectContaining({ code: 'CONFIG', message: expect.stringMatching(/now\(\) must return/) as unknown }))
    }
    // 0 and a fractional time are fine.
    for (const now of [() => 0, () => 1_700_000_000_000.5]) expect(() => node(new MemoryBroker(), new MemoryStore(), { now })).not.toThrow()
  })
})
