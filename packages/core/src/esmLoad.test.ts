// Every package loads under Node's own ESM loader, as an application (or `tsx`) loads it. Vitest's
// module interop is more lenient: a named import that Node does not find in a CommonJS dependency
// (kafkajs's ConfigResourceTypes) passed every test and failed to load anywhere else (review finding).
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'

const PACKAGES = ['core', 'crdt', 'replication', 'testing', 'yjs', 'automerge', 'transport-redis', 'transport-kafka'].map((p) => `@concord/${p}`)

describe('packages under Node ESM', () => {
  it('each one imports, with its exports', async () => {
    const script = `for (const p of ${JSON.stringify(PACKAGES)}) { const m = await import(p); console.log(p, Object.keys(m).length) }`
    const { stdout } = await promisify(execFile)(process.execPath, ['--conditions=@concord/source', '--import', 'tsx', '--input-type=module', '-e', script], { timeout: 60_000 })
    const loaded = stdout
      .trim()
      .split('\n')
      .map((line) => line.split(' '))
    expect(loaded.map(([p]) => p)).toEqual(PACKAGES)
    for (const [p, n] of loaded) expect(Number(n), p).toBeGreaterThan(0)
  }, 90_000)
})
