import { describe, expect, test } from 'vitest'
import { DecodeError, bytesEqual, seededRandom, type Random } from '@concord/core'
import { LwwMap, LwwRegister, MvRegister, OrMap, OrSet, PnCounter, type CausalReplica, type CausalTypeName } from './index.js'

const CASES = 10_000

function make(type: CausalTypeName, id: string): CausalReplica<unknown> {
  const o = { replicaId: id, now: () => 1_000 }
  switch (type) {
    case 'or-set':
      return new OrSet(o)
    case 'mv-register':
      return new MvRegister(o)
    case 'lww-register':
      return new LwwRegister(o)
    case 'pn-counter':
      return new PnCounter(o)
    case 'lww-map':
      return new LwwMap(o)
    case 'or-map':
      return new OrMap(o)
  }
}

/** A few valid deltas and states of `type`, from three writers. */
function validSamples(type: CausalTypeName, rnd: Random): Uint8Array[] {
  const out: Uint8Array[] = []
  const rs = ['alpha', 'beta', 'gamma'].map((id) => make(type, id))
  rs.forEach((r) => r.onDelta((d) => out.push(d)))
  for (let i = 0; i < 40; i++) {
    const r = rs[Math.floor(rnd() * 3)] as CausalReplica<unknown>
    const n = Math.floor(rnd() * 4)
    if (r instanceof OrSet) {
      if (rnd() < 0.7) r.add({ n, s: 'x' })
      else r.remove({ n, s: 'x' })
    } else if (r instanceof MvRegister || r instanceof LwwRegister) r.set([n, 'v', 1.5])
    else if (r instanceof PnCounter) {
      if (rnd() < 0.5) r.increment(n * 300)
      else r.decrement(n)
    } else if (r instanceof LwwMap) {
      if (rnd() < 0.7) r.set(`k${n}`, { n })
      else r.delete(`k${n}`)
    }
    else if (r instanceof OrMap) {
      if (rnd() < 0.2) r.remove(`f${n % 2}`)
      else
        r.update(`f${n % 2}`, 'or-map', (m) => {
          m.update('c', 'pn-counter', (c) => c.increment(n))
          m.update('s', 'or-set', (s) => s.add(n))
          m.update('l', 'lww-register', (l) => l.set(n))
          m.update('v', 'mv-register', (v) => v.set(n))
          m.update('m', 'lww-map', (x) => x.set(`k${n}`, n))
        })
    }
    if (rnd() < 0.3) (rs[Math.floor(rnd() * 3)] as CausalReplica<unknown>).apply(r.state())
  }
  for (const r of rs) out.push(r.state())
  return out
}

function corrupt(valid: Uint8Array, rnd: Random, tag: number): Uint8Array {
  const mode = Math.floor(rnd() * 3)
  if (mode === 0) {
    // random bytes, usually behind the right tag so decoding goes past the first byte
    const b = new Uint8Array(Math.floor(rnd() * 48))
    for (let i = 0; i < b.length; i++) b[i] = Math.floor(rnd() * 256)
    if (b.length > 0 && rnd() < 0.8) b[0] = tag
    return b
  }
  if (mode === 1) return valid.slice(0, Math.floor(rnd() * valid.length))
  const b = valid.slice()
  const flips = 1 + Math.floor(rnd() * 3)
  for (let i = 0; i < flips && b.length > 0; i++) {
    const at = Math.floor(rnd() * b.length)
    b[at] = (b[at] as number) ^ (1 << Math.floor(rnd() * 8))
  }
  return b
}

const TYPES: CausalTypeName[] = ['or-set', 'mv-register', 'lww-register', 'pn-counter', 'lww-map', 'or-map']

describe.each(TYPES)('%s: apply of corrupted bytes', (type) => {
  test(`${CASES} corrupted inputs: a valid join or DecodeError with the state unchanged`, () => {
    const seed = 0x5eed + type.length * 7919
    const rnd = seededRandom(seed)
    const samples = validSamples(type, rnd)
    const tag = samples[0]?.[0] as number
    let target = make(type, 'target')
    let refused = 0
    for (let i = 0; i < CASES; i++) {
      if (i % 50 === 0) {
        // a fresh target now and then keeps states (and the test) small
        target = make(type, 'target')
        target.apply(samples[Math.floor(rnd() * samples.length)] as Uint8Array)
      }
      const input = corrupt(samples[Math.floor(rnd() * samples.length)] as Uint8Array, rnd, tag)
      const before = target.state()
      try {
        target.apply(input)
      } catch (e) {
        if (!(e instanceof DecodeError)) throw new Error(`seed ${seed} case ${i}: threw ${String(e)}`, { cause: e })
        refused++
        if (!bytesEqual(target.state(), before)) throw new Error(`seed ${seed} case ${i}: state changed by refused input`)
        continue
      }
      // accepted: it must have been a join — idempotent, and the result must round-trip
      const after = target.state()
      target.apply(input)
      if (!bytesEqual(target.state(), after)) throw new Error(`seed ${seed} case ${i}: re-applying an accepted input changed the state`)
      const copy = make(type, 'copy')
      copy.apply(after)
      if (!bytesEqual(copy.state(), after)) throw new Error(`seed ${seed} case ${i}: accepted state does not round-trip`)
      expect(copy.value(), `seed ${seed} case ${i}`).toEqual(target.value())
    }
    expect(refused).toBeGreaterThan(CASES / 2)
  })
})
