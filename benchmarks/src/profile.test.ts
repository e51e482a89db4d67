import { describe, expect, it } from 'vitest'
import { GC, RUNTIME, byComponent, componentOf, startProfiler, type CpuProfile } from './profile.js'

const frame = (id: number, functionName: string, url: string, children: number[] = []): CpuProfile['nodes'][number] => ({ id, callFrame: { functionName, url }, children })

describe('CPU by component', () => {
  it('names the component of a script by its path, source or built, and none for Node itself', () => {
    expect(componentOf('file:///repo/packages/replication/src/regionNode.ts')).toBe('Concord engine (replication)')
    expect(componentOf('file:///repo/packages/replication/dist/regionNode.js')).toBe('Concord engine (replication)')
    expect(componentOf('file:///repo/packages/crdt/src/base.ts')).toBe('Concord CRDTs')
    expect(componentOf('file:///repo/packages/yjs/src/yjsReplica.ts')).toBe('Concord CRDTs')
    expect(componentOf('file:///repo/packages/core/dist/codec.js')).toBe('Concord core (codecs, envelopes, dot sets)')
    expect(componentOf('file:///repo/packages/transport-kafka/src/kafkaTransport.ts')).toBe('Concord transport')
    expect(componentOf('file:///repo/node_modules/kafkajs/src/protocol/encoder.js')).toBe('kafkajs')
    expect(componentOf('file:///repo/node_modules/redis-parser/lib/parser.js')).toBe('ioredis')
    expect(componentOf('node:internal/buffer')).toBeUndefined()
    expect(componentOf('')).toBeUndefined()
  })

  it('counts native and Node frames for their nearest caller with a component, leaves idle out', () => {
    // root → runMicrotasks → kafkajs encode → (native) writeBuffer; root → engine → core; GC; idle.
    const profile: CpuProfile = {
      nodes: [
        frame(1, '(root)', '', [2, 6, 7, 8]),
        frame(2, 'runMicrotasks', '', [3, 5]),
        frame(3, 'encode', 'file:///r/node_modules/kafkajs/src/protocol/encoder.js', [4]),
        frame(4, 'writeBuffer', ''),
        frame(5, 'persist', 'file:///r/packages/replication/src/regionNode.ts', [9]),
        frame(6, '(garbage collector)', ''),
        frame(7, '(idle)', ''),
        frame(8, '(program)', ''),
        frame(9, 'encodeEnvelope', 'file:///r/packages/core/src/envelope.ts'),
      ],
      samples: [3, 4, 4, 5, 9, 6, 7, 7, 2, 8],
      timeDeltas: [10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
    }
    const got = byComponent(profile)
    expect(Object.fromEntries(got)).toEqual({
      kafkajs: 10 + 20 + 30,
      'Concord engine (replication)': 40,
      'Concord core (codecs, envelopes, dot sets)': 50,
      [GC]: 60,
      [RUNTIME]: 90 + 100,
    })
  })

  it('profiles this thread: the components of a real profile add up to its busy time', async () => {
    const profiler = await startProfiler(100)
    const until = performance.now() + 50
    let x = 0
    while (performance.now() < until) x += Math.sqrt(x + 1)
    const profile = await profiler.stop()
    expect(x).toBeGreaterThan(0)
    const got = byComponent(profile)
    const busy = [...got.values()].reduce((a, b) => a + b, 0)
    expect(busy).toBeGreaterThan(20_000)
    // The loop above is the benchmark harness's own code (this file is under benchmarks/).
    expect(got.get('benchmark harness') ?? 0).toBeGreaterThan(0)
  })
})
