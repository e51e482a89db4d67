/**
 * Document backends benchmark: replays a sequential editing trace (default automerge-paper,
 * 259,778 edits) through raw Yjs, the Concord Yjs replica, raw Automerge and the Concord Automerge
 * replica, in the same run, one transaction (one delta) per trace transaction, as an editor would.
 * Reports the median replay time and the bytes per update, and Concord/raw ratios against the
 * targets (time ≤ 1.10, bytes within 5%).
 *
 *   node --conditions=@concord/source --import tsx benchmarks/src/docs-bench.ts [--repeats=3] [--trace=automerge-paper] [--types=yjs|automerge]
 */
import { pathToFileURL } from 'node:url'
import * as Y from 'yjs'
import * as A from '@automerge/automerge'
import { hasTrace, loadSequentialTrace, patchToUtf16, tracesDir, type SequentialTrace, type TracePatch } from '@concord/testing'
import { YjsReplica } from '@concord/yjs'
import { AutomergeReplica } from '@concord/automerge'
import { checkFlags, cliArg, cliChoice, cliInt, cliMain, machine, median, progress, saveReport, UsageError, type BenchReport, type BenchRow } from './report.js'

/** Options of {@link runDocsBench}. */
export interface DocsBenchOptions {
  /** Trace to replay. @default 'automerge-paper' */
  readonly trace?: string
  /** Measured runs per variant (medians are reported). @default 5 for Yjs, 3 for Automerge */
  readonly repeats?: number
  /** Backends to measure. @default ['yjs', 'automerge'] */
  readonly backends?: readonly ('yjs' | 'automerge')[]
}

interface Run {
  readonly ms: number
  readonly updates: number
  readonly bytes: number
}

type Variant = (trace: SequentialTrace) => Run

function yText(text: Y.Text, patches: readonly TracePatch[], bmpOnly: boolean): void {
  for (const p of patches) {
    const { index, del, ins } = bmpOnly ? { index: p[0], del: p[1], ins: p[2] } : patchToUtf16(text.toString(), p)
    if (del > 0) text.delete(index, del)
    if (ins !== '') text.insert(index, ins)
  }
}

interface TextDoc {
  text: string
}

function amText(d: TextDoc, patches: readonly TracePatch[], bmpOnly: boolean): void {
  for (const p of patches) {
    const { index, del, ins } = bmpOnly ? { index: p[0], del: p[1], ins: p[2] } : patchToUtf16(d.text, p)
    A.splice(d, ['text'], index, del, ins)
  }
}

function check(name: string, got: string, trace: SequentialTrace): void {
  // Warm-up runs replay a prefix (endContent '' marks them) and have nothing to compare with.
  if (trace.endContent === '' && trace.name.endsWith('(warm-up)')) return
  if (got !== trace.endContent) throw new Error(`${name}: replay of ${trace.name} did not reach endContent`)
}

/** The first `n` transactions of `trace`, for warming up the JIT before measuring. */
function prefix(trace: SequentialTrace, n: number): SequentialTrace {
  return { ...trace, name: `${trace.name} (warm-up)`, endContent: '', txns: trace.txns.slice(0, n) }
}

const rawYjs: Variant = (trace) => {
  const doc = new Y.Doc()
  const text = doc.getText('text')
  let updates = 0
  let bytes = 0
  doc.on('update', (u: Uint8Array) => {
    updates++
    bytes += u.length
  })
  const t0 = performance.now()
  if (trace.startContent !== '') doc.transact(() => text.insert(0, trace.startContent))
  for (const txn of trace.txns) doc.transact(() => yText(text, txn.patches, trace.bmpOnly))
  const ms = performance.now() - t0
  check('raw yjs', text.toString(), trace)
  doc.destroy()
  return { ms, updates, bytes }
}

const concordYjs: Variant = (trace) => {
  const replica = new YjsReplica('bench')
  const text = replica.text('text')
  let updates = 0
  let bytes = 0
  replica.onDelta((d) => {
    updates++
    bytes += d.length
  })
  const t0 = performance.now()
  if (trace.startContent !== '') replica.transact(() => text.insert(0, trace.startContent))
  for (const txn of trace.txns) replica.transact(() => yText(text, txn.patches, trace.bmpOnly))
  const ms = performance.now() - t0
  check('concord yjs', text.toString(), trace)
  replica.close()
  replica.doc.destroy()
  return { ms, updates, bytes }
}

// Both Automerge variants start from the same saved root so the text object is created once.
const ROOT = A.save(A.change(A.init<TextDoc>({ actor: '00' }), (d) => (d.text = '')))

const rawAutomerge: Variant = (trace) => {
  // Built exactly as AutomergeReplica builds its document from `initial`, so both start alike.
  let doc = A.clone(A.load<TextDoc>(ROOT), { actor: 'aa' })
  let updates = 0
  let bytes = 0
  const send = (c: Uint8Array | undefined): void => {
    if (c === undefined) return
    updates++
    bytes += c.length
  }
  const t0 = performance.now()
  if (trace.startContent !== '') {
    doc = A.change(doc, (d) => A.splice(d, ['text'], 0, 0, trace.startContent))
    send(A.getLastLocalChange(doc))
  }
  for (const txn of trace.txns) {
    doc = A.change(doc, (d) => amText(d, txn.patches, trace.bmpOnly))
    send(A.getLastLocalChange(doc))
  }
  const ms = performance.now() - t0
  check('raw automerge', doc.text, trace)
  return { ms, updates, bytes }
}

const concordAutomerge: Variant = (trace) => {
  const replica = new AutomergeReplica<TextDoc>('bench', { actor: 'aa', initial: A.load<TextDoc>(ROOT) })
  let updates = 0
  let bytes = 0
  replica.onDelta((d) => {
    updates++
    bytes += d.length
  })
  const t0 = performance.now()
  if (trace.startContent !== '') replica.change((d) => A.splice(d, ['text'], 0, 0, trace.startContent))
  for (const txn of trace.txns) replica.change((d) => amText(d, txn.patches, trace.bmpOnly))
  const ms = performance.now() - t0
  check('concord automerge', replica.doc.text, trace)
  return { ms, updates, bytes }
}

function collect(): void {
  const g = (globalThis as { gc?: () => void }).gc
  if (g !== undefined) g()
}

/** Runs raw and Concord variants alternately (ABBA order) `repeats` times; returns each side's runs. */
function measure(label: string, trace: SequentialTrace, raw: Variant, concord: Variant, repeats: number): { raw: Run[]; concord: Run[] } {
  const out = { raw: [] as Run[], concord: [] as Run[] }
  const warm = prefix(trace, Math.min(trace.txns.length, 20_000))
  raw(warm)
  concord(warm)
  for (let i = 0; i < repeats; i++) {
    const order: Array<['raw' | 'concord', Variant]> = i % 2 === 0 ? [['raw', raw], ['concord', concord]] : [['concord', concord], ['raw', raw]]
    for (const [side, fn] of order) {
      collect()
      const run = fn(trace)
      out[side].push(run)
      progress(`${label} ${side} run ${i + 1}/${repeats}: ${run.ms.toFixed(0)} ms, ${run.updates} updates, ${(run.bytes / run.updates).toFixed(2)} B/update`)
    }
  }
  return out
}

function rows(backend: string, runs: { raw: Run[]; concord: Run[] }): BenchRow[] {
  const rawMs = median(runs.raw.map((r) => r.ms))
  const conMs = median(runs.concord.map((r) => r.ms))
  // The time ratio is the median of per-repeat ratios: the two runs of a repeat are adjacent, so a
  // burst of load from other processes on the machine skews one repeat, not the comparison.
  const timeRatio = median(runs.concord.map((r, i) => r.ms / (runs.raw[i] as Run).ms))
  const rawBytes = median(runs.raw.map((r) => r.bytes / r.updates))
  const conBytes = median(runs.concord.map((r) => r.bytes / r.updates))
  const rawName = `${backend} raw`
  const conName = `${backend} concord`
  return [
    { name: rawName, metric: 'replay time (median)', value: rawMs, unit: 'ms' },
    { name: conName, metric: 'replay time (median)', value: conMs, unit: 'ms', baseline: rawName, ratio: timeRatio, target: '<= 1.10', pass: timeRatio <= 1.1 },
    { name: rawName, metric: 'bytes per update', value: rawBytes, unit: 'B' },
    { name: conName, metric: 'bytes per update', value: conBytes, unit: 'B', baseline: rawName, ratio: conBytes / rawBytes, target: '<= 1.05', pass: conBytes / rawBytes <= 1.05 },
    { name: conName, metric: 'updates emitted', value: median(runs.concord.map((r) => r.updates)), unit: 'updates' },
  ]
}

/** Runs the benchmark and returns its report (also printed and saved by {@link main}). */
export async function runDocsBench(options: DocsBenchOptions = {}): Promise<BenchReport> {
  const traceName = options.trace ?? 'automerge-paper'
  const backends = options.backends ?? ['yjs', 'automerge']
  const trace = loadSequentialTrace(traceName)
  const out: BenchRow[] = []
  const yjsRepeats = options.repeats ?? 5
  const amRepeats = options.repeats ?? 3
  if (backends.includes('yjs')) out.push(...rows('yjs', measure('yjs', trace, rawYjs, concordYjs, yjsRepeats)))
  if (backends.includes('automerge')) out.push(...rows('automerge', measure('automerge', trace, rawAutomerge, concordAutomerge, amRepeats)))
  return {
    suite: 'docs',
    command: `node --conditions=@concord/source --import tsx benchmarks/src/docs-bench.ts --trace=${traceName}${options.repeats === undefined ? '' : ` --repeats=${options.repeats}`}${backends.length === 1 ? ` --types=${backends[0] as string}` : ''}`,
    machine: await machine(),
    date: new Date().toISOString(),
    notes: [
      `trace ${traceName}: ${trace.txns.length} transactions, one transaction and one delta per trace transaction`,
      `${yjsRepeats} (yjs) / ${amRepeats} (automerge) runs per variant after a 20k-edit warm-up, raw and Concord alternating (ABBA); medians reported, time ratio = median of per-repeat ratios`,
      'bytes per Yjs update depend on the varuint size of the client id (raw Yjs: random 32-bit; Concord: 32-bit hash of the replica id)',
      'yjs: V1 updates from doc.on("update") vs YjsReplica.onDelta; automerge: getLastLocalChange after each change vs AutomergeReplica.onDelta',
      'traces: josephg/editing-traces, CC BY 4.0 (automerge-paper by Martin Kleppmann)',
    ],
    rows: out,
  }
}

/**
 * The command line's options for this suite, checked: `--types`, `--repeats`, and a `--trace` that
 * names a trace file in the traces folder. @throws UsageError
 */
export function checkCli(): { only: 'yjs' | 'automerge' | undefined; trace: string | undefined; repeats: number | undefined } {
  const only = cliChoice('types', ['yjs', 'automerge'] as const)
  const repeats = cliArg('repeats') === undefined ? undefined : cliInt('repeats', 1)
  const trace = cliArg('trace')
  const name = trace ?? 'automerge-paper'
  if (!/^[A-Za-z0-9_-]+$/.test(name) || !hasTrace(name)) {
    throw new UsageError(`--trace: no editing trace ${JSON.stringify(name)} in ${tracesDir()} (a file <name>.json.gz; set CONCORD_TRACES to another folder)`)
  }
  return { only, trace, repeats }
}

/** CLI entry (also `npm run bench -- docs`): parses `--trace`, `--repeats`, `--types`, prints the table, writes results/docs.json. */
export async function main(): Promise<BenchReport> {
  const { only, trace, repeats } = checkCli()
  const report = await runDocsBench({
    ...(trace === undefined ? {} : { trace }),
    ...(repeats === undefined ? {} : { repeats }),
    ...(only === undefined ? {} : { backends: [only] }),
  })
  saveReport(report)
  return report
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  cliMain(async () => {
    checkFlags(['docs'])
    return main()
  }).catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
    process.exitCode = 1
  })
}
