import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { ConfigError, DecodeError } from '@concord/core'
import {
  CONCURRENT_TRACES,
  applyPatches,
  codePointToUtf16,
  loadConcurrentTrace,
  loadSequentialTrace,
  loadTrace,
  patchToUtf16,
  tracesAvailable,
  tracesDir,
} from './traces.js'

const saved = { traces: process.env['CONCORD_TRACES'], ci: process.env['CI'] }
afterEach(() => {
  if (saved.traces === undefined) delete process.env['CONCORD_TRACES']
  else process.env['CONCORD_TRACES'] = saved.traces
  if (saved.ci === undefined) delete process.env['CI']
  else process.env['CI'] = saved.ci
})

// Removed after the file's tests (they were left behind in the temporary folder).
const made: string[] = []
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true })
})

function fixtureDir(files: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'concord-traces-'))
  made.push(dir)
  for (const [name, content] of Object.entries(files)) {
    writeFileSync(join(dir, `${name}.json.gz`), gzipSync(typeof content === 'string' ? content : JSON.stringify(content)))
  }
  return dir
}

describe('code points', () => {
  it('maps code-point positions to UTF-16 offsets', () => {
    const s = 'a😀b😀c'
    expect([0, 1, 2, 3, 4, 5, 9].map((cp) => codePointToUtf16(s, cp))).toEqual([0, 1, 3, 4, 6, 7, 7])
    expect(patchToUtf16(s, [1, 2, 'x'])).toEqual({ index: 1, del: 3, ins: 'x' })
    expect(applyPatches(s, [[1, 2, 'x'], [3, 1, '🎉']])).toBe('ax😀🎉')
  })
})

describe('loading', () => {
  it('reads CONCORD_TRACES, validates and flags non-BMP text', () => {
    process.env['CONCORD_TRACES'] = fixtureDir({
      seq: { startContent: 'ab', endContent: 'a😀', txns: [{ time: 't', patches: [[1, 1, '😀']] }] },
      conc: { kind: 'concurrent', numAgents: 2, endContent: 'xy', txns: [{ parents: [], agent: 0, time: 't', patches: [[0, 0, 'x']] }, { parents: [0], agent: 1, time: 't', patches: [[1, 0, 'y']] }] },
      bad: { kind: 'concurrent', numAgents: 1, endContent: '', txns: [{ parents: [3], agent: 0, time: 't', patches: [] }] },
      notjson: 'nope',
      nulltxn: { startContent: '', endContent: '', txns: [null] },
    })
    const seq = loadSequentialTrace('seq')
    expect(seq.bmpOnly).toBe(false)
    expect(applyPatches(seq.startContent, seq.txns.flatMap((t) => t.patches))).toBe(seq.endContent)
    const conc = loadConcurrentTrace('conc')
    expect(conc.bmpOnly).toBe(true)
    expect(conc.txns[1]?.parents).toEqual([0])
    expect(() => loadTrace('bad')).toThrow(DecodeError)
    expect(() => loadTrace('notjson')).toThrow(DecodeError)
    // A null transaction was a TypeError.
    expect(() => loadTrace('nulltxn')).toThrow(DecodeError)
    expect(() => loadTrace('absent')).toThrow(DecodeError)
    expect(() => loadSequentialTrace('conc')).toThrow(ConfigError)
  })

  it('skips with a notice when traces are missing, but fails under CI', () => {
    process.env['CONCORD_TRACES'] = fixtureDir({})
    delete process.env['CI']
    expect(tracesAvailable(['sveltecomponent'])).toBe(false)
    process.env['CI'] = 'true'
    expect(() => tracesAvailable(['sveltecomponent'])).toThrow(ConfigError)
  })
})

describe.skipIf(!tracesAvailable(['sveltecomponent', 'rustcode', ...CONCURRENT_TRACES]))(`real traces in ${tracesDir()}`, () => {
  it.each(['sveltecomponent', 'rustcode'])('%s replays to its endContent on a plain string', (name) => {
    const t = loadSequentialTrace(name)
    let text = t.startContent
    for (const txn of t.txns) text = applyPatches(text, txn.patches, t.bmpOnly)
    expect(text).toBe(t.endContent)
  })

  it.each(CONCURRENT_TRACES)('%s is concurrent with causal parents', (name) => {
    const t = loadConcurrentTrace(name)
    expect(t.numAgents).toBeGreaterThan(1)
    expect(new Set(t.txns.map((x) => x.agent)).size).toBe(t.numAgents)
    expect(t.txns.some((x) => x.parents.length > 1)).toBe(true)
  })
})
