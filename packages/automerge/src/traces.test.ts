import { describe, expect, it } from 'vitest'
import * as A from '@automerge/automerge'
import { bytesEqual } from '@concord/core'
import {
  CONCURRENT_TRACES,
  loadConcurrentTrace,
  loadSequentialTrace,
  patchToUtf16,
  replayConcurrentTrace,
  tracesAvailable,
  type TracePatch,
} from '@concord/testing'
import { AutomergeReplica } from './automergeReplica.js'

interface TextDoc {
  text: string
}

/** Applies trace patches to the `text` field inside a change (UTF-16 positions, as Automerge JS uses). */
function edit(d: TextDoc, patches: readonly TracePatch[], bmpOnly: boolean): void {
  for (const p of patches) {
    const { index, del, ins } = bmpOnly ? { index: p[0], del: p[1], ins: p[2] } : patchToUtf16(d.text, p)
    A.splice(d, ['text'], index, del, ins)
  }
}

function textReplica(id: string): AutomergeReplica<TextDoc> {
  // Every replica starts from the same root change, so the text field is one object everywhere.
  return new AutomergeReplica<TextDoc>(id, { initial: ROOT })
}
const ROOT = A.load<TextDoc>(A.save(A.change(A.init<TextDoc>({ actor: '00' }), (d) => (d.text = ''))))

// Automerge JS takes ~0.1-1 ms per change on these documents: automerge-paper (~35 s) runs in
// benchmarks/src/docs-bench.ts, rustcode (~30 s) only in soak runs (CONCORD_SOAK=1).
const SEQUENTIAL = process.env['CONCORD_SOAK'] === '1' ? ['sveltecomponent', 'rustcode', 'seph-blog1'] : ['sveltecomponent']

describe.skipIf(!tracesAvailable([...SEQUENTIAL, ...CONCURRENT_TRACES]))('editing traces through AutomergeReplica', () => {
  it.each(SEQUENTIAL)('%s replays to its endContent, and a peer fed its deltas matches', (name) => {
    const trace = loadSequentialTrace(name)
    const r = textReplica('author')
    const deltas: Uint8Array[] = []
    r.onDelta((d) => deltas.push(d))
    if (trace.startContent !== '') r.change((d) => A.splice(d, ['text'], 0, 0, trace.startContent))
    for (const txn of trace.txns) r.change((d) => edit(d, txn.patches, trace.bmpOnly))
    expect(r.value().text).toBe(trace.endContent)
    expect(deltas.length).toBe(trace.txns.length + (trace.startContent === '' ? 0 : 1))
    const peer = textReplica('peer')
    for (let i = 0; i < deltas.length; i += 1000) peer.apply(concat(deltas.slice(i, i + 1000)))
    expect(peer.value()).toEqual({ text: trace.endContent })
    expect(bytesEqual(peer.state(), r.state())).toBe(true)
  })

  it.each(CONCURRENT_TRACES)('%s: agents on separate replicas converge to endContent', (name) => {
    const trace = loadConcurrentTrace(name)
    const replicas = replayConcurrentTrace(
      trace,
      (agent) => textReplica(`agent-${agent}`),
      (r, txn) => r.change((d) => edit(d, txn.patches, trace.bmpOnly)),
      concat, // Automerge chunks concatenate; each applyChanges call costs O(document) in Automerge JS
    )
    const first = replicas[0] as AutomergeReplica<TextDoc>
    for (const r of replicas) {
      expect(r.value().text).toBe(trace.endContent)
      expect(bytesEqual(r.state(), first.state())).toBe(true)
    }
  })
})

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}
