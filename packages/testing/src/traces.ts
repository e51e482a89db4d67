/**
 * Loader for the real-world text editing traces (josephg/editing-traces, CC BY 4.0) kept outside
 * the repository in `../shared/traces` beside the project root, or in the folder named by the
 * `CONCORD_TRACES` environment variable. The traces are data, never copied into the repo.
 */
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gunzipSync } from 'node:zlib'
import { ConfigError, DecodeError } from '@concord/core'
import type { Replica } from '@concord/core'
import { isCI } from './ci.js'

/** One edit: at code-point position `pos`, delete `del` code points, then insert `ins`. */
export type TracePatch = readonly [pos: number, del: number, ins: string]

/** A transaction of a sequential trace; its patches apply one after another. */
export interface SequentialTxn {
  readonly time: string
  readonly patches: readonly TracePatch[]
}

/** A transaction of a concurrent trace, made by `agent` on the merged state of `parents`. */
export interface ConcurrentTxn extends SequentialTxn {
  /** Indices of earlier transactions whose merged result the patches apply to (`[]`: empty doc). */
  readonly parents: readonly number[]
  readonly agent: number
}

/** A single-author editing history. */
export interface SequentialTrace {
  readonly kind: 'sequential'
  readonly name: string
  readonly startContent: string
  readonly endContent: string
  readonly txns: readonly SequentialTxn[]
  /** True when no text contains a character outside the BMP, so code-point and UTF-16 positions agree. */
  readonly bmpOnly: boolean
}

/** A multi-agent editing history with causal parents. */
export interface ConcurrentTrace {
  readonly kind: 'concurrent'
  readonly name: string
  readonly numAgents: number
  readonly endContent: string
  readonly txns: readonly ConcurrentTxn[]
  /** True when no text contains a character outside the BMP, so code-point and UTF-16 positions agree. */
  readonly bmpOnly: boolean
}

/** Either kind of trace. */
export type Trace = SequentialTrace | ConcurrentTrace

/** Names of the sequential traces, smallest first. */
export const SEQUENTIAL_TRACES = ['sveltecomponent', 'rustcode', 'seph-blog1', 'automerge-paper'] as const
/** Names of the concurrent traces. */
export const CONCURRENT_TRACES = ['friendsforever', 'clownschool'] as const

/** The traces folder: `$CONCORD_TRACES`, else `../shared/traces` beside the project root. */
export function tracesDir(): string {
  const env = process.env['CONCORD_TRACES']
  if (env !== undefined && env !== '') return resolve(env)
  // This file lives in packages/testing/{src,dist}/, three levels below the project root.
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
  return join(root, '..', 'shared', 'traces')
}

/** Path of the gzipped trace `name` (whether or not it exists). */
export function tracePath(name: string): string {
  return join(tracesDir(), `${name}.json.gz`)
}

/** True when the trace file `name` is present. */
export function hasTrace(name: string): boolean {
  return existsSync(tracePath(name))
}

/**
 * Decides whether trace tests run. Returns `true` when every named trace is present. When one is
 * missing it returns `false` after printing a notice, except under `CI=true`, where a missing trace
 * is a configuration error and this throws {@link ConfigError}.
 */
export function tracesAvailable(names: readonly string[]): boolean {
  const missing = names.filter((n) => !hasTrace(n))
  if (missing.length === 0) return true
  const msg = `editing traces not found in ${tracesDir()} (missing: ${missing.join(', ')}); set CONCORD_TRACES`
  if (isCI()) throw new ConfigError(msg)
  process.stderr.write(`[concord] skipping trace tests: ${msg}\n`)
  return false
}

function fail(name: string, what: string): never {
  throw new DecodeError(`trace ${name}: ${what}`)
}

const SURROGATE = /[\uD800-\uDFFF]/

function readPatches(name: string, raw: unknown, i: number): TracePatch[] {
  if (!Array.isArray(raw)) fail(name, `txn ${i}: patches is not an array`)
  return raw.map((p: unknown) => {
    if (!Array.isArray(p) || p.length !== 3) fail(name, `txn ${i}: malformed patch`)
    const [pos, del, ins] = p as unknown[]
    if (!Number.isSafeInteger(pos) || (pos as number) < 0 || !Number.isSafeInteger(del) || (del as number) < 0 || typeof ins !== 'string') {
      fail(name, `txn ${i}: malformed patch`)
    }
    return [pos as number, del as number, ins] as const
  })
}

/** Loads and validates the trace `name` from {@link tracesDir}. Throws DecodeError on a malformed file. */
export function loadTrace(name: string): Trace {
  let json: unknown
  try {
    json = JSON.parse(gunzipSync(readFileSync(tracePath(name))).toString('utf8'))
  } catch (e) {
    throw new DecodeError(`trace ${name}: cannot read ${tracePath(name)}`, { cause: e })
  }
  if (typeof json !== 'object' || json === null) fail(name, 'not an object')
  const o = json as Record<string, unknown>
  if (typeof o['endContent'] !== 'string' || !Array.isArray(o['txns'])) fail(name, 'missing endContent or txns')
  const endContent = o['endContent']
  const rawTxns = o['txns'] as unknown[]
  let bmpOnly = true
  const check = (s: string): void => {
    if (bmpOnly && SURROGATE.test(s)) bmpOnly = false
  }
  if (o['kind'] === 'concurrent') {
    const numAgents = o['numAgents']
    if (!Number.isSafeInteger(numAgents) || (numAgents as number) < 1) fail(name, 'bad numAgents')
    const txns = rawTxns.map((t, i): ConcurrentTxn => {
      if (typeof t !== 'object' || t === null) fail(name, `txn ${i} is not an object`)
      const r = t as Record<string, unknown>
      const parents = r['parents']
      const agent = r['agent']
      if (!Array.isArray(parents) || !parents.every((p) => Number.isSafeInteger(p) && (p as number) >= 0 && (p as number) < i)) {
        fail(name, `txn ${i}: parents must be earlier txn indices`)
      }
      if (!Number.isSafeInteger(agent) || (agent as number) < 0 || (agent as number) >= (numAgents as number)) fail(name, `txn ${i}: bad agent`)
      const patches = readPatches(name, r['patches'], i)
      for (const p of patches) check(p[2])
      return { time: String(r['time']), parents: parents as number[], agent: agent as number, patches }
    })
    return { kind: 'concurrent', name, numAgents: numAgents as number, endContent, txns, bmpOnly }
  }
  if (typeof o['startContent'] !== 'string') fail(name, 'missing startContent')
  const startContent = o['startContent']
  check(startContent)
  const txns = rawTxns.map((t, i): SequentialTxn => {
    if (typeof t !== 'object' || t === null) fail(name, `txn ${i} is not an object`)
    const r = t as Record<string, unknown>
    const patches = readPatches(name, r['patches'], i)
    for (const p of patches) check(p[2])
    return { time: String(r['time']), patches }
  })
  return { kind: 'sequential', name, startContent, endContent, txns, bmpOnly }
}

/** Loads a trace that must be sequential. */
export function loadSequentialTrace(name: string): SequentialTrace {
  const t = loadTrace(name)
  if (t.kind !== 'sequential') throw new ConfigError(`trace ${name} is not sequential`)
  return t
}

/** Loads a trace that must be concurrent. */
export function loadConcurrentTrace(name: string): ConcurrentTrace {
  const t = loadTrace(name)
  if (t.kind !== 'concurrent') throw new ConfigError(`trace ${name} is not concurrent`)
  return t
}

/** UTF-16 index of code-point position `cp` in `text` (positions past the end clamp to its length). */
export function codePointToUtf16(text: string, cp: number): number {
  let i = 0
  for (let n = 0; n < cp && i < text.length; n++) {
    const c = text.charCodeAt(i)
    i += c >= 0xd800 && c <= 0xdbff && i + 1 < text.length ? 2 : 1
  }
  return i
}

/**
 * Converts a code-point patch to UTF-16 offsets against the current `text`, for text types that
 * index by UTF-16 unit (Y.Text, Automerge strings in JavaScript).
 */
export function patchToUtf16(text: string, patch: TracePatch): { index: number; del: number; ins: string } {
  const index = codePointToUtf16(text, patch[0])
  const end = index + codePointToUtf16(text.slice(index), patch[1])
  return { index, del: end - index, ins: patch[2] }
}

/**
 * Applies patches to a plain string (the reference replay): the oracle for sequential traces.
 * Pass `bmpOnly` (from the trace) to skip the code-point scan when positions are already UTF-16.
 */
export function applyPatches(text: string, patches: readonly TracePatch[], bmpOnly = false): string {
  let out = text
  for (const p of patches) {
    const { index, del, ins } = bmpOnly ? { index: p[0], del: p[1], ins: p[2] } : patchToUtf16(out, p)
    out = out.slice(0, index) + ins + out.slice(index + del)
  }
  return out
}

/**
 * Replays a concurrent trace through real replicas, one per agent. Before each transaction the
 * agent's replica receives exactly the transactions in the causal past of the transaction's parents
 * (as the local deltas those transactions emitted, applied in trace order), then `edit` performs the
 * patches as one local mutation. Afterwards every pair of replicas syncs through
 * `version()`/`deltaSince()` until all have seen everything. Returns the replicas, one per agent.
 * `batch`, when given, joins the deltas one agent catches up on into a single delta (one `apply`
 * per catch-up instead of one per transaction, for backends where each apply has a fixed cost).
 */
export function replayConcurrentTrace<R extends Replica<unknown>>(
  trace: ConcurrentTrace,
  create: (agent: number) => R,
  edit: (replica: R, txn: ConcurrentTxn) => void,
  batch?: (deltas: readonly Uint8Array[]) => Uint8Array,
): R[] {
  const replicas = Array.from({ length: trace.numAgents }, (_, a) => create(a))
  const deltas: Uint8Array[][] = []
  const seen = replicas.map(() => new Set<number>())
  let current: Uint8Array[] = []
  const offs = replicas.map((r) =>
    r.onDelta((d, origin) => {
      if (origin === 'local') current.push(d)
    }),
  )
  trace.txns.forEach((txn, i) => {
    const replica = replicas[txn.agent] as R
    const have = seen[txn.agent] as Set<number>
    // Everything in the parents' causal past that this agent has not seen yet (its past is closed).
    const need: number[] = []
    const stack = [...txn.parents]
    while (stack.length > 0) {
      const p = stack.pop() as number
      if (have.has(p)) continue
      have.add(p)
      need.push(p)
      for (const q of (trace.txns[p] as ConcurrentTxn).parents) stack.push(q)
    }
    need.sort((a, b) => a - b)
    const incoming = need.flatMap((p) => deltas[p] as Uint8Array[])
    if (batch !== undefined && incoming.length > 1) replica.apply(batch(incoming))
    else for (const d of incoming) replica.apply(d)
    current = []
    edit(replica, txn)
    deltas[i] = current
    have.add(i)
  })
  for (const off of offs) off()
  syncReplicas(replicas)
  return replicas
}

/** Brings every replica up to date with every other through `version()` and `deltaSince()`. */
export function syncReplicas(replicas: readonly Replica<unknown>[]): void {
  for (let round = 0; round < 2; round++) {
    for (const a of replicas) for (const b of replicas) if (a !== b) b.apply(a.deltaSince(b.version()))
  }
}
