import { describe, expect, it } from 'vitest'
import type * as Y from 'yjs'
import { bytesEqual } from '@concord/core'
import {
  CONCURRENT_TRACES,
  SEQUENTIAL_TRACES,
  loadConcurrentTrace,
  loadSequentialTrace,
  patchToUtf16,
  replayConcurrentTrace,
  tracesAvailable,
  type TracePatch,
} from '@concord/testing'
import { YjsReplica } from './yjsReplica.js'

/** Applies trace patches to a Y.Text (positions converted to UTF-16 unless the trace is BMP-only). */
function edit(text: Y.Text, patches: readonly TracePatch[], bmpOnly: boolean): void {
  for (const p of patches) {
    const { index, del, ins } = bmpOnly ? { index: p[0], del: p[1], ins: p[2] } : patchToUtf16(text.toString(), p)
    if (del > 0) text.delete(index, del)
    if (ins !== '') text.insert(index, ins)
  }
}

describe.skipIf(!tracesAvailable([...SEQUENTIAL_TRACES, ...CONCURRENT_TRACES]))('editing traces through YjsReplica', () => {
  it.each(SEQUENTIAL_TRACES)('%s replays to its endContent, and a peer fed its deltas matches', (name) => {
    const trace = loadSequentialTrace(name)
    const r = new YjsReplica('author', { roots: { text: 'text' } })
    const deltas: Uint8Array[] = []
    r.onDelta((d) => deltas.push(d))
    const text = r.text('text')
    if (trace.startContent !== '') r.transact(() => text.insert(0, trace.startContent))
    for (const txn of trace.txns) r.transact(() => edit(text, txn.patches, trace.bmpOnly))
    expect(text.toString()).toBe(trace.endContent)
    expect(deltas.length).toBe(trace.txns.length + (trace.startContent === '' ? 0 : 1))
    const peer = new YjsReplica('peer', { roots: { text: 'text' } })
    // Per-delta delivery for the smaller traces; the big ones catch up in one delta (keeps the run short).
    if (trace.txns.length < 50_000) for (const d of deltas) peer.apply(d)
    else peer.apply(r.deltaSince(peer.version()))
    expect(peer.value()).toEqual({ text: trace.endContent })
    expect(bytesEqual(peer.state(), r.state())).toBe(true)
  })

  it.each(CONCURRENT_TRACES)('%s: agents on separate replicas converge to endContent', (name) => {
    const trace = loadConcurrentTrace(name)
    const replicas = replayConcurrentTrace(
      trace,
      // The traces' endContent orders concurrent inserts at one position by agent number; Yjs orders
      // them by client id, so the agents get client ids in agent order (as the recording editor did).
      (agent) => new YjsReplica(`agent-${agent}`, { roots: { text: 'text' }, clientId: agent + 1 }),
      (r, txn) => r.transact(() => edit(r.text('text'), txn.patches, trace.bmpOnly)),
    )
    const first = replicas[0] as YjsReplica
    for (const r of replicas) {
      expect(r.text('text').toString()).toBe(trace.endContent)
      expect(bytesEqual(r.state(), first.state())).toBe(true)
    }
  })
})
