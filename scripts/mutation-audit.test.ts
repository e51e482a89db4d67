// The audit's mutations still apply to the code (npm run mutation-audit refuses a stale one, but
// only when someone runs it): each snippet occurs exactly once in its file, the mutation changes
// it, and the suites it runs exist.
import { existsSync, readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
// @ts-expect-error -- a plain ES module script, no declarations
import { MUTATIONS } from './mutation-audit.mjs'

interface Mutation {
  readonly name: string
  readonly breaks: string
  readonly file: string
  readonly from: string
  readonly to: string
  readonly suites: readonly string[]
}

describe('mutation audit', () => {
  const mutations = MUTATIONS as readonly Mutation[]

  it('has uniquely named mutations', () => {
    expect(mutations.length).toBeGreaterThan(0)
    expect(new Set(mutations.map((m) => m.name)).size).toBe(mutations.length)
  })

  it.each(mutations.map((m) => [m.name, m] as const))('%s: its snippet occurs once, changes the code, and its suites exist', (_, m) => {
    const source = readFileSync(m.file, 'utf8')
    expect(source.split(m.from).length - 1, `${m.file} holds the snippet once`).toBe(1)
    expect(m.to).not.toBe(m.from)
    expect(m.suites.length).toBeGreaterThan(0)
    for (const s of m.suites) expect(existsSync(s), s).toBe(true)
  })
})
