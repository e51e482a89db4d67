/**
 * Where a benchmark's client CPU goes: a V8 CPU profile of the measured part of a run (taken in
 * this process through node:inspector), its self time summed by component — the Kafka or Redis
 * client library, Concord's engine, its core and CRDT code, its transport, the garbage collector,
 * and the Node.js runtime. Native calls and Node internals count for the code that made them (a
 * socket write by kafkajs is kafkajs's time), so the components add up to the profiled CPU. The
 * engine's own code is split between the replication package and core (its envelope, codec and
 * dot-set code), so the no-op-replica variant shows core time too.
 *
 * Profiling slows a run down (the sampler interrupts it), so profiled runs are extra runs whose
 * throughput is not reported; what they give is the split of the CPU, in µs per envelope.
 */
import { Session } from 'node:inspector/promises'

/** The parts of a V8 CPU profile (Profiler.stop) read here. */
export interface CpuProfile {
  readonly nodes: ReadonlyArray<{ readonly id: number; readonly callFrame: { readonly functionName: string; readonly url: string }; readonly children?: readonly number[] }>
  readonly samples: readonly number[]
  /** µs before each sample (the first: since the profile started). */
  readonly timeDeltas: readonly number[]
}

export const GC = 'garbage collector'
export const RUNTIME = 'Node.js runtime'

/** The component a script belongs to, by its URL; undefined for Node internals and native code. */
export function componentOf(url: string): string | undefined {
  if (/\/packages\/replication\//.test(url)) return 'Concord engine (replication)'
  if (/\/packages\/core\//.test(url)) return 'Concord core (codecs, envelopes, dot sets)'
  if (/\/packages\/(crdt|yjs|automerge)\//.test(url)) return 'Concord CRDTs'
  if (/\/packages\/transport-(kafka|redis)\//.test(url)) return 'Concord transport'
  if (/\/node_modules\/kafkajs\//.test(url)) return 'kafkajs'
  if (/\/node_modules\/(ioredis|redis-parser|redis-errors|denque|cluster-key-slot|standard-as-callback)\//.test(url)) return 'ioredis'
  if (/\/benchmarks\//.test(url)) return 'benchmark harness'
  return undefined
}

/**
 * Self time (µs) of `profile` by component. A frame of no component (a native function, Node's
 * own JavaScript) counts for its nearest caller that has one, else for the runtime; idle time is
 * left out.
 */
export function byComponent(profile: CpuProfile): Map<string, number> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const self = new Map<number, number>()
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i] as number
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
  }
  const owner = new Map<number, string>()
  const ownerOf = (id: number): string => {
    const known = owner.get(id)
    if (known !== undefined) return known
    const frame = byId.get(id)
    const name = frame?.callFrame.functionName
    let c: string
    if (frame === undefined) c = RUNTIME
    else if (name === '(garbage collector)') c = GC
    else {
      const up = parent.get(id)
      c = componentOf(frame.callFrame.url) ?? (up === undefined ? RUNTIME : ownerOf(up))
    }
    owner.set(id, c)
    return c
  }
  const out = new Map<string, number>()
  for (const [id, us] of self) {
    if (byId.get(id)?.callFrame.functionName === '(idle)') continue
    const c = ownerOf(id)
    out.set(c, (out.get(c) ?? 0) + us)
  }
  return out
}

/** A started profiler; stop() ends it and returns the profile. */
export interface Profiler {
  stop(): Promise<CpuProfile>
}

/** Starts profiling this thread, sampling every `intervalUs` µs. */
export async function startProfiler(intervalUs = 250): Promise<Profiler> {
  const session = new Session()
  session.connect()
  try {
    await session.post('Profiler.enable')
    await session.post('Profiler.setSamplingInterval', { interval: intervalUs })
    await session.post('Profiler.start')
  } catch (e) {
    session.disconnect()
    throw e
  }
  return {
    async stop() {
      try {
        const { profile } = await session.post('Profiler.stop')
        return profile as unknown as CpuProfile
      } finally {
        session.disconnect()
      }
    },
  }
}
