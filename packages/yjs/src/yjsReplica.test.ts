import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import { ConfigError, DecodeError, bytesEqual, seededRandom, type DeltaOrigin } from '@concord/core'
import { YjsReplica, clientIdFor } from './yjsReplica.js'
import { yjsFactory } from './factory.js'

function record(r: YjsReplica): Array<[number, DeltaOrigin]> {
  const out: Array<[number, DeltaOrigin]> = []
  r.onDelta((d, o) => out.push([d.length, o]))
  return out
}

/** Three replicas making random text and map edits, with every local delta logged. */
function randomHistory(seed: number, steps = 40): { replicas: YjsReplica[]; deltas: Uint8Array[] } {
  const rnd = seededRandom(seed)
  const replicas = ['a', 'b', 'c'].map((id) => new YjsReplica(id))
  const deltas: Uint8Array[] = []
  for (const r of replicas) r.onDelta((d, o) => o === 'local' && deltas.push(d))
  for (let s = 0; s < steps; s++) {
    const r = replicas[Math.floor(rnd() * 3)] as YjsReplica
    const t = r.text('t')
    const op = rnd()
    if (op < 0.2) r.map('m').set(`k${Math.floor(rnd() * 3)}`, s)
    else if (op < 0.45 && t.length > 0) t.delete(Math.floor(rnd() * t.length), 1 + Math.floor(rnd() * Math.min(3, t.length - 1)))
    else t.insert(Math.floor(rnd() * (t.length + 1)), 'xyz'.slice(0, 1 + Math.floor(rnd() * 3)))
    if (rnd() < 0.35) {
      const other = replicas[Math.floor(rnd() * 3)] as YjsReplica
      other.apply(r.deltaSince(other.version()))
    }
  }
  return { replicas, deltas }
}

function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const rnd = seededRandom(seed)
  const out = [...xs]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1))
    ;[out[i], out[j]] = [out[j] as T, out[i] as T]
  }
  return out
}

describe('YjsReplica', () => {
  it('speaks V1 updates: for single keystrokes (inserts and deletes at random places) no V1 update is larger than its V2 twin', () => {
    const doc = new Y.Doc()
    const text = doc.getText('t')
    const v1: number[] = []
    const v2: number[] = []
    doc.on('update', (u: Uint8Array) => v1.push(u.length))
    doc.on('updateV2', (u: Uint8Array) => v2.push(u.length))
    const rnd = seededRandom(7)
    for (let i = 0; i < 2_000; i++) {
      if (text.length > 0 && rnd() < 0.3) text.delete(Math.floor(rnd() * text.length), 1)
      else text.insert(Math.floor(rnd() * (text.length + 1)), 'x')
    }
    expect(v1.length).toBe(2_000)
    expect(v2.length).toBe(2_000)
    expect(v1.filter((n, i) => n > (v2[i] as number))).toEqual([])
  })

  it('emits one local delta per transaction and marks applied updates remote', () => {
    const a = new YjsReplica('a')
    const b = new YjsReplica('b')
    const seenA = record(a)
    const seenB = record(b)
    a.transact((doc) => {
      doc.getText('t').insert(0, 'hello')
      doc.getMap('m').set('k', 1)
    })
    a.text('t').insert(5, '!')
    expect(seenA.map(([, o]) => o)).toEqual(['local', 'local'])
    b.apply(a.deltaSince(b.version()))
    expect(seenB.map(([, o]) => o)).toEqual(['remote'])
    expect(b.value()).toEqual({ t: 'hello!', m: { k: 1 } })
    // Applying the same bytes again changes nothing and emits nothing.
    b.apply(a.deltaSince())
    expect(seenB).toHaveLength(1)
    expect(a.typeName).toBe('yjs')
    expect(a.onConflict(() => {})).toBeTypeOf('function')
  })

  it('refuses an update whose client id Yjs decodes but cannot encode again (past 2^53), leaving the document as it was (review finding: state() and deltaSince() threw for good after it)', () => {
    // A real update (text, array, map, a deletion) whose client id varint was replaced by one past 2^53.
    const forged = Buffer.from('0105a3fbb088ffffff7f000401047465787402686581a3fbb0880f010384a3fbb0880f040620776f726c64080103617272037d01770178760101617d012801036d6170016b0177017601a3fbb0880f010203', 'hex')
    expect(() => Y.decodeUpdate(forged)).not.toThrow()
    const r = new YjsReplica('r', { roots: { text: 'text', arr: 'array', map: 'map' } })
    r.text('text').insert(0, 'kept')
    const before = r.state()
    expect(() => r.apply(forged)).toThrow(DecodeError)
    expect(() => r.apply(forged)).toThrow(/client id .* not a safe integer/)
    expect(bytesEqual(r.state(), before)).toBe(true)
    expect(r.deltaSince().length).toBeGreaterThan(0)
    expect(r.value()).toEqual({ text: 'kept', arr: [], map: {} })
  })

  it('derives distinct, stable client ids from replica ids', () => {
    expect(clientIdFor('region-a/1')).toBe(clientIdFor('region-a/1'))
    expect(clientIdFor('region-a/1')).not.toBe(clientIdFor('region-a/2'))
    expect(Number.isSafeInteger(clientIdFor('x'.repeat(100)))).toBe(true)
    expect(new YjsReplica('r1').doc.clientID).toBe(clientIdFor('r1'))
    expect(new YjsReplica('r1', { clientId: 7 }).doc.clientID).toBe(7)
    expect(() => new YjsReplica('')).toThrow(ConfigError)
    expect(() => new YjsReplica('x', { clientId: -1 })).toThrow(ConfigError)
    expect(() => new YjsReplica('x', { clientID: 7 } as never)).toThrow(/YjsReplica: unknown option "clientID" \(did you mean "clientId"\?\)/)
  })

  it('sends a holder of a version exactly what it lacks', () => {
    const a = new YjsReplica('a')
    const b = new YjsReplica('b')
    a.text('t').insert(0, 'abc'.repeat(100))
    b.apply(a.deltaSince())
    const v = b.version()
    a.text('t').insert(300, 'def')
    const delta = a.deltaSince(v)
    expect(delta.length).toBeLessThan(a.deltaSince().length)
    b.apply(delta)
    expect(b.value()).toEqual({ t: 'abc'.repeat(100) + 'def' })
    expect(bytesEqual(a.version(), b.version())).toBe(true)
    expect(() => a.deltaSince(new Uint8Array([5, 1]))).toThrow(DecodeError)
  })

  it.each([1, 2, 3, 4, 5, 6, 7, 8])('state() is canonical whatever the delivery order (seed %i)', (seed) => {
    const { replicas, deltas } = randomHistory(seed)
    const x = new YjsReplica('x')
    const y = new YjsReplica('y')
    for (const d of deltas) x.apply(d)
    for (const d of shuffled(deltas, seed * 31)) y.apply(d)
    for (const r of replicas) for (const d of shuffled(deltas, seed)) r.apply(d)
    const states = [x, y, ...replicas].map((r) => r.state())
    for (const s of states) expect(bytesEqual(s, states[0] as Uint8Array)).toBe(true)
    expect(y.value()).toEqual(x.value())
    // state() is also a snapshot: an empty replica restores from it.
    const z = new YjsReplica('z')
    z.apply(x.state())
    expect(z.value()).toEqual(x.value())
    expect(bytesEqual(z.state(), x.state())).toBe(true)
  })

  it('buffers updates with missing dependencies as pending until the gap is filled', () => {
    const a = new YjsReplica('a')
    const deltas: Uint8Array[] = []
    a.onDelta((d) => deltas.push(d))
    a.text('t').insert(0, 'one ')
    a.text('t').insert(4, 'two')
    const b = new YjsReplica('b', { roots: { t: 'text' } })
    b.apply(deltas[1] as Uint8Array)
    expect(b.hasPending).toBe(true)
    expect(b.value()).toEqual({ t: '' })
    expect(b.version()).toEqual(new YjsReplica('e').version())
    b.apply(deltas[0] as Uint8Array)
    expect(b.hasPending).toBe(false)
    expect(b.value()).toEqual({ t: 'one two' })
  })

  it('shows declared roots when empty and infers undeclared ones without claiming them', () => {
    const a = new YjsReplica('a')
    a.text('notes').insert(0, 'hi')
    a.map('meta').set('owner', 'eu')
    a.array('list').push([1, 'two'])
    const nested = new Y.Map<number>()
    a.map('meta').set('nested', nested)
    nested.set('n', 3)
    const b = new YjsReplica('b', { roots: { todo: 'array', title: 'text' } })
    expect(b.value()).toEqual({ todo: [], title: '' })
    b.apply(a.state())
    const expected = { notes: 'hi', meta: { owner: 'eu', nested: { n: 3 } }, list: [1, 'two'], todo: [], title: '' }
    expect(b.value()).toEqual(expected)
    // Inference did not instantiate the roots, so the application can still declare them.
    expect(b.text('notes').toString()).toBe('hi')
    expect(b.value()).toEqual(expected)
  })

  it('rejects a non-state-vector version and non-bytes', () => {
    const a = new YjsReplica('a')
    expect(() => a.apply('nope' as unknown as Uint8Array)).toThrow(DecodeError)
    expect(() => a.apply(new Uint8Array([1, 2, 3]))).toThrow(DecodeError)
  })

  it.each(['strict', 'decode'] as const)('%s: truncated and corrupted updates throw DecodeError and change nothing', (validation) => {
    const src = new YjsReplica('src')
    src.text('t').insert(0, 'hello world')
    src.map('m').set('a', { x: 1 })
    src.text('t').delete(2, 3)
    src.array('arr').insert(0, [1, 'two', new Uint8Array([3])])
    const full = src.deltaSince()
    const rnd = seededRandom(11)
    const target = new YjsReplica('t', { validation })
    target.text('t').insert(0, 'X')
    let rejected = 0
    for (let i = 0; i < 3000; i++) {
      const bad = Uint8Array.from(full)
      let input: Uint8Array
      if (rnd() < 0.3) input = bad.slice(0, Math.floor(rnd() * bad.length))
      else {
        for (let k = 0; k < 1 + Math.floor(rnd() * 3); k++) bad[Math.floor(rnd() * bad.length)] = Math.floor(rnd() * 256)
        input = bad
      }
      const before = target.state()
      const probe = new YjsReplica('probe', { validation })
      probe.apply(before)
      try {
        probe.apply(input)
      } catch (e) {
        expect(e).toBeInstanceOf(DecodeError)
        rejected++
        // Strict mode guarantees the document is untouched; decode mode only for framing errors
        // (an update that does not decode), not for one that decodes but does not integrate.
        if (validation === 'strict' || /does not decode/.test((e as Error).message)) expect(bytesEqual(probe.state(), before)).toBe(true)
      }
    }
    expect(rejected).toBeGreaterThan(2000)
  })

  it.each(['strict', 'decode'] as const)('%s: an update with bytes after its end is refused, the document untouched', (validation) => {
    const src = new YjsReplica('src')
    const updates: Uint8Array[] = []
    src.onDelta((d) => updates.push(d))
    src.text('t').insert(0, 'hello')
    src.map('m').set('k', 1)
    src.text('t').delete(0, 1)
    const target = new YjsReplica('t', { validation })
    for (const u of [...updates, src.state(), new Uint8Array([0, 0])]) {
      const before = target.state()
      for (const extra of [[0x2a], [0], [0x80, 0x01]]) {
        const framed = new Uint8Array([...u, ...extra])
        expect(() => target.apply(framed)).toThrow(/bytes after its end/)
        expect(bytesEqual(target.state(), before)).toBe(true)
      }
      target.apply(u)
    }
    expect(target.text('t').toString()).toBe('ello')
  })

  it('strict: an update that decodes but does not integrate is refused without touching the document', () => {
    // Found by the fuzz test above: corrupted bytes that Y.decodeUpdate accepts but applyUpdate throws on.
    const src = new YjsReplica('src', { clientId: 1 })
    src.text('t').insert(0, 'hello world')
    const full = src.deltaSince()
    const rnd = seededRandom(5)
    let found: Uint8Array | undefined
    for (let i = 0; i < 20_000 && found === undefined; i++) {
      const bad = Uint8Array.from(full)
      bad[Math.floor(rnd() * bad.length)] = Math.floor(rnd() * 256)
      try {
        Y.decodeUpdate(bad)
      } catch {
        continue
      }
      const scratch = new Y.Doc()
      Y.applyUpdate(scratch, Y.encodeStateAsUpdate(new YjsReplica('t', { clientId: 2 }).doc))
      try {
        Y.applyUpdate(scratch, bad)
      } catch {
        found = bad
      }
    }
    expect(found).toBeDefined()
    const target = new YjsReplica('t', { clientId: 2 })
    target.text('t').insert(0, 'mine')
    const before = target.state()
    expect(() => target.apply(found as Uint8Array)).toThrow(DecodeError)
    expect(bytesEqual(target.state(), before)).toBe(true)
    // The replica keeps working: the shadow is rebuilt and good updates still apply.
    target.apply(src.deltaSince())
    expect(new Set(Object.keys(target.value()))).toEqual(new Set(['t']))
    expect((target.value()['t'] as string).length).toBe('mine'.length + 'hello world'.length)
  })

  it('strict: the shadow follows local edits between remote updates', () => {
    const a = new YjsReplica('a')
    const b = new YjsReplica('b')
    a.text('t').insert(0, 'a')
    b.apply(a.deltaSince())
    for (let i = 0; i < 5000; i++) b.text('t').insert(b.text('t').length, 'b')
    a.text('t').insert(0, '<')
    b.apply(a.deltaSince(b.version()))
    a.apply(b.deltaSince(a.version()))
    expect(a.value()).toEqual(b.value())
    expect((b.value()['t'] as string).length).toBe(5002)
  })

  it('lone surrogates do not survive encoding (pinned from convergence/none, seed -1679167913)', () => {
    // Yjs encodes strings as UTF-8, so half a surrogate pair becomes U+FFFD on the wire while the
    // writer keeps it: the writer diverges from everyone else. Edit Y.Text by whole code points.
    const a = new YjsReplica('a')
    a.text('t').insert(0, '\ud83d')
    const b = new YjsReplica('b')
    b.apply(a.deltaSince())
    expect(b.text('t').toString()).toBe('\ufffd')
    expect(a.text('t').toString()).toBe('\ud83d')
    const c = new YjsReplica('c')
    c.text('t').insert(0, '😀')
    b.apply(c.deltaSince())
    expect(b.text('t').toString()).toContain('😀')
  })

  it('close() stops emitting', () => {
    const a = new YjsReplica('a')
    const seen = record(a)
    a.close()
    a.text('t').insert(0, 'x')
    expect(seen).toEqual([])
  })

  it('factory creates empty replicas with shared options', () => {
    const f = yjsFactory({ roots: { t: 'text' } })
    expect(f.typeName).toBe('yjs')
    expect(f.create('r').value()).toEqual({ t: '' })
  })
})

describe('interop with a plain Y.Doc over y-protocols/sync', () => {
  /** Concord's side of the y-protocols sync protocol, written only against the Replica contract. */
  function concordHandle(replica: YjsReplica, message: Uint8Array): Uint8Array | undefined {
    const d = decoding.createDecoder(message)
    const type = decoding.readVarUint(d)
    const payload = decoding.readVarUint8Array(d)
    if (type === syncProtocol.messageYjsSyncStep1) {
      const e = encoding.createEncoder()
      encoding.writeVarUint(e, syncProtocol.messageYjsSyncStep2)
      encoding.writeVarUint8Array(e, replica.deltaSince(payload))
      return encoding.toUint8Array(e)
    }
    replica.apply(payload)
    return undefined
  }

  function concordStep1(replica: YjsReplica): Uint8Array {
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, syncProtocol.messageYjsSyncStep1)
    encoding.writeVarUint8Array(e, replica.version())
    return encoding.toUint8Array(e)
  }

  function plainHandle(doc: Y.Doc, message: Uint8Array): Uint8Array | undefined {
    const reply = encoding.createEncoder()
    syncProtocol.readSyncMessage(decoding.createDecoder(message), reply, doc, 'peer')
    return encoding.length(reply) > 0 ? encoding.toUint8Array(reply) : undefined
  }

  it('syncs both ways and keeps converging on live updates', () => {
    const plain = new Y.Doc()
    plain.getText('t').insert(0, 'from plain ')
    plain.getMap('m').set('who', 'plain')
    const replica = new YjsReplica('concord')
    replica.text('t').insert(0, 'from concord ')
    replica.map('m').set('who', 'concord')

    // Handshake: each side sends step 1, the other answers with step 2.
    const e = encoding.createEncoder()
    syncProtocol.writeSyncStep1(e, plain)
    const toPlain = concordHandle(replica, encoding.toUint8Array(e))
    expect(toPlain).toBeDefined()
    plainHandle(plain, toPlain as Uint8Array)
    const toConcord = plainHandle(plain, concordStep1(replica))
    expect(toConcord).toBeDefined()
    concordHandle(replica, toConcord as Uint8Array)

    expect(replica.value()['t']).toBe(plain.getText('t').toString())
    expect(replica.value()['m']).toEqual(plain.getMap('m').toJSON())

    // Live updates in both directions.
    plain.on('update', (u: Uint8Array, origin: unknown) => {
      if (origin === 'peer') return
      const m = encoding.createEncoder()
      syncProtocol.writeUpdate(m, u)
      concordHandle(replica, encoding.toUint8Array(m))
    })
    replica.onDelta((u, origin) => {
      if (origin !== 'local') return
      const m = encoding.createEncoder()
      syncProtocol.writeUpdate(m, u)
      plainHandle(plain, encoding.toUint8Array(m))
    })
    plain.getText('t').insert(0, '[')
    replica.text('t').insert(replica.text('t').length, ']')
    replica.map('m').delete('who')
    expect(replica.value()['t']).toBe(plain.getText('t').toString())
    expect(plain.getText('t').toString()).toMatch(/^\[.*\]$/)
    expect(plain.getMap('m').toJSON()).toEqual({})
    expect(bytesEqual(Y.encodeStateVector(plain), replica.version())).toBe(true)
    const snapshot = new YjsReplica('check')
    snapshot.apply(Y.encodeStateAsUpdate(plain))
    expect(bytesEqual(snapshot.state(), replica.state())).toBe(true)
  })
})

describe('YjsReplica: findings of a review', () => {
  it('a listener that unsubscribes itself during a call does not make the next one miss the delta', () => {
    const r = new YjsReplica('a')
    const called: string[] = []
    const off = r.onDelta(() => {
      called.push('once')
      off()
    })
    r.onDelta((_, origin) => called.push(`second:${origin}`))
    r.text('t').insert(0, 'x')
    r.text('t').insert(1, 'y')
    expect(called).toEqual(['once', 'second:local', 'second:local'])
  })

  it('value() is the same on the writer and a receiver holding the same state, also for undeclared roots', () => {
    const cases: Array<(r: YjsReplica) => void> = [
      (r) => {
        r.text('t').insert(0, 'x')
        r.text('t').delete(0, 1)
      },
      (r) => r.doc.getXmlFragment('x').insert(0, [new Y.XmlElement('p')]),
      (r) => r.text('t').insertEmbed(0, { img: 1 }),
      (r) => r.text('t').insert(0, 'hello'),
      (r) => r.map('m').set('k', 1),
    ]
    for (const write of cases) {
      const a = new YjsReplica('a')
      write(a)
      const b = new YjsReplica('b')
      b.apply(a.deltaSince())
      expect(bytesEqual(a.state(), b.state())).toBe(true)
      expect(b.value()).toEqual(a.value())
    }
    // Declared roots are typed as declared, on both sides.
    const a = new YjsReplica('a', { roots: { t: 'text' } })
    a.text('t').insertEmbed(0, { img: 1 })
    const b = new YjsReplica('b', { roots: { t: 'text' } })
    b.apply(a.deltaSince())
    expect(b.value()).toEqual(a.value())
  })

  it('refuses contradictory or wrong options with a ConfigError, leaving a given doc untouched', () => {
    expect(() => new YjsReplica('r', { doc: new Y.Doc(), clientId: 42 })).toThrow(ConfigError)
    const withMap = new Y.Doc()
    withMap.getMap('a')
    expect(() => new YjsReplica('r', { doc: withMap, roots: { a: 'text' } })).toThrow(ConfigError)
    const fresh = new Y.Doc()
    expect(() => new YjsReplica('r', { doc: fresh, roots: { ok: 'text', bad: 'txt' as never } })).toThrow(/unknown root kind txt/)
    expect([...fresh.share.keys()]).toEqual([])
    expect(() => yjsFactory({ validaton: 'decode' } as never)).toThrow(/unknown option "validaton"/)
    expect(() => yjsFactory({ doc: new Y.Doc() } as never)).toThrow(ConfigError)
    expect(() => yjsFactory({ roots: { t: 'txt' as never } })).toThrow(ConfigError)
  })
})

describe('YjsReplica.value() on equal states (review findings: each differed, or lost a key, before its fix)', () => {
  it("roots named like Object.prototype members ('constructor', 'toString') are undeclared like any other", () => {
    const w = new YjsReplica('w')
    const r = new YjsReplica('r')
    w.text('constructor').insert(0, 'hello')
    w.map('toString').set('k', 1)
    r.apply(w.state())
    expect(bytesEqual(w.state(), r.state())).toBe(true)
    expect(r.value()).toEqual(w.value())
    expect(r.value()).toEqual({ constructor: 'hello', toString: { k: 1 } })
  })

  it("an undeclared root's kind is read from its live items: a writer keeping deleted text (UndoManager, gc: false) and a receiver agree", () => {
    for (const makeWriter of [
      () => {
        const w = new YjsReplica('w')
        new Y.UndoManager(w.text('notes'), { captureTimeout: 0 })
        return w
      },
      () => new YjsReplica('w', { doc: new Y.Doc({ gc: false }) }),
    ]) {
      const w = makeWriter()
      const rx = new YjsReplica('rx')
      w.onDelta((d) => rx.apply(d))
      const t = w.text('notes')
      t.insert(0, 'hello')
      w.transact(() => t.insertEmbed(5, { img: 1 }))
      t.delete(0, 5)
      expect(rx.value()).toEqual(w.value())
    }
  })

  it("a map key '__proto__' is an own key of the value, declared root or not (it vanished and became the prototype)", () => {
    for (const roots of [undefined, { m: 'map' as const }]) {
      const a = new YjsReplica('a', roots === undefined ? {} : { roots })
      const b = new YjsReplica('b', roots === undefined ? {} : { roots })
      a.map('m').set('__proto__', { polluted: true })
      a.map('m').set('k', 1)
      b.apply(a.state())
      const m = (b.value() as Record<string, Record<string, unknown>>).m as Record<string, unknown>
      expect(Object.hasOwn(m, '__proto__')).toBe(true)
      expect(Object.getPrototypeOf(m)).toBe(Object.prototype)
      expect((m as { polluted?: unknown }).polluted).toBeUndefined()
      expect(Object.keys(m).sort()).toEqual(['__proto__', 'k'])
    }
  })
})

describe('YjsReplica.value() and a received __proto__ key', () => {
  it("a plain object's __proto__ key is an own key on every replica, not the receiver's prototype (the receiver's value differed from the sender's and leaked its fields)", () => {
    const a = new YjsReplica('a', { roots: { m: 'map' } })
    const b = new YjsReplica('b', { roots: { m: 'map' } })
    a.onDelta((d, o) => o === 'local' && b.apply(d))
    a.map('m').set('user', JSON.parse('{"name":"eve","__proto__":{"isAdmin":true}}'))
    const ub = (b.value() as { m: { user: Record<string, unknown> } }).m.user
    expect(Object.getPrototypeOf(ub)).toBe(Object.prototype)
    expect(ub.isAdmin).toBeUndefined()
    expect(JSON.stringify(b.value())).toBe(JSON.stringify(a.value()))
    // Also when the data holds a `constructor` key (it passed for a class's prototype and was kept).
    a.map('m').set('other', JSON.parse('{"name":"eve","__proto__":{"constructor":1,"isAdmin":true}}'))
    const ob = (b.value() as { m: { other: Record<string, unknown> } }).m.other
    expect(Object.getPrototypeOf(ob)).toBe(Object.prototype)
    expect(ob.isAdmin).toBeUndefined()
    expect(JSON.stringify(b.value())).toBe(JSON.stringify(a.value()))
  })
})

describe('YjsReplica: untrusted updates and careless use (review findings: each failed before its fix)', () => {
  /** A 27-byte update found by fuzzing (its delete set cut off): it decodes, waits as pending for client 1's first update, and throws inside Yjs once that arrives. */
  const poison = Buffer.from('010201052823016d0161017d01c40101010205776f726c6400', 'hex')

  function source(): { src: YjsReplica; first: Uint8Array } {
    const src = new YjsReplica('src', { clientId: 1 })
    const ds: Uint8Array[] = []
    src.onDelta((d) => ds.push(d))
    src.text('t').insert(0, 'hello')
    src.map('m').set('a', 1)
    return { src, first: ds[0] as Uint8Array }
  }

  it('a pending update that fails once its dependencies arrive is dropped, not kept to refuse every later update of that writer (the fill and even a whole state were refused for good)', async () => {
    const { src, first } = source()
    const r = new YjsReplica('r', { clientId: 2 })
    r.apply(poison)
    expect(r.hasPending).toBe(true)
    expect(r.version()).toEqual(new YjsReplica('empty').version())
    const warnings: string[] = []
    const onWarning = (w: Error & { code?: string }): void => void warnings.push(String(w.code))
    process.on('warning', onWarning)
    try {
      r.apply(first)
      expect(r.hasPending).toBe(false)
      r.apply(src.deltaSince(r.version()))
      await new Promise((resolve) => setImmediate(resolve))
    } finally {
      process.off('warning', onWarning)
    }
    expect(warnings.filter((w) => w === 'CONCORD_YJS_PENDING_DROPPED')).toHaveLength(1)
    expect(r.value()).toEqual(src.value())
    expect(bytesEqual(r.state(), src.state())).toBe(true)
  })

  it('a pending update that would fail is dropped also when local edits complete it (state() threw, and so did the next apply of any update)', () => {
    // The poison waits for client 1; this replica is client 1 (client ids derive from replica ids,
    // anyone can compute them), so its own edits fill the gap — and Yjs retries pending structs
    // only when an update is applied, not after local edits.
    const r = new YjsReplica('r', { clientId: 1 })
    r.apply(poison)
    r.text('x').insert(0, 'local')
    const other = new YjsReplica('o', { clientId: 3 })
    other.apply(r.state())
    expect(other.value()).toEqual({ x: 'local' })
    const q = new YjsReplica('q', { clientId: 4 })
    q.text('y').insert(0, 'remote')
    r.apply(q.deltaSince())
    expect(r.hasPending).toBe(false)
    expect(r.value()).toEqual({ x: 'local', y: 'remote' })
  })

  it.each(['strict', 'decode'] as const)('%s: an observer that throws during apply does not turn an applied update into a DecodeError (the caller was told it was refused; it was applied)', async (validation) => {
    const warnings: string[] = []
    const onWarning = (w: Error & { code?: string }): void => void warnings.push(`${String(w.code)} ${w.message}`)
    process.on('warning', onWarning)
    const a = new YjsReplica('a')
    a.text('t').insert(0, 'abc')
    const r = new YjsReplica('r', { validation })
    r.text('t').observe(() => {
      throw new Error('observer bug')
    })
    const seen: DeltaOrigin[] = []
    r.onDelta((_, o) => seen.push(o))
    try {
      expect(() => r.apply(a.deltaSince())).not.toThrow()
      await new Promise((resolve) => setImmediate(resolve))
    } finally {
      process.off('warning', onWarning)
    }
    expect(r.value()).toEqual({ t: 'abc' })
    expect(seen).toEqual(['remote'])
    // (A warning of an earlier test may arrive here: only this one's code counts.)
    expect(warnings.filter((w) => w.startsWith('CONCORD_LISTENER_THREW'))).toEqual(['CONCORD_LISTENER_THREW yjs: an observer threw Error: observer bug'])
  })

  it.each(['strict', 'decode'] as const)('%s: a value nested deeper than the limit is refused with a DecodeError, the document untouched (3,000 levels made value() throw RangeError on every replica)', (validation) => {
    let v: unknown = 1
    for (let i = 0; i < 3000; i++) v = [v]
    const w = new Y.Doc()
    w.getMap('m').set('k', v)
    const r = new YjsReplica('r', { validation })
    r.map('m').set('ok', 1)
    const before = r.state()
    expect(() => r.apply(Y.encodeStateAsUpdate(w))).toThrow(/nested deeper than 512/)
    expect(() => r.apply(Y.encodeStateAsUpdate(w))).toThrow(DecodeError)
    expect(bytesEqual(r.state(), before)).toBe(true)
    expect(r.value()).toEqual({ m: { ok: 1 } })
    // 512 levels still pass.
    let ok: unknown = 1
    for (let i = 0; i < 511; i++) ok = [ok]
    const w2 = new Y.Doc()
    w2.getMap('m').set('deep', ok)
    r.apply(Y.encodeStateAsUpdate(w2))
    expect(JSON.stringify(r.value()).length).toBeGreaterThan(1000)
  })

  it('strict: shared types nested deeper than the limit are refused, the document untouched (3,000 nested maps, 36 KB, made value() throw for good and every later delete of them fail)', () => {
    const w = new Y.Doc()
    w.transact(() => {
      let m = w.getMap('m') as Y.Map<unknown>
      for (let i = 0; i < 3000; i++) {
        const n = new Y.Map<unknown>()
        m.set('k', n)
        m = n
      }
    })
    const r = new YjsReplica('r')
    const before = r.state()
    expect(() => r.apply(Y.encodeStateAsUpdate(w))).toThrow(/nested deeper than 512/)
    expect(bytesEqual(r.state(), before)).toBe(true)
    expect(r.value()).toEqual({})
    // Also when the nesting is built over several updates: the depth counts the parents already held.
    const w2 = new Y.Doc()
    const r2 = new YjsReplica('r2')
    let m = w2.getMap('m') as Y.Map<unknown>
    let refused: unknown
    for (let i = 0; i < 600 && refused === undefined; i++) {
      const sv = Y.encodeStateVector(w2)
      const n = new Y.Map<unknown>()
      m.set('k', n)
      m = n
      try {
        r2.apply(Y.encodeStateAsUpdate(w2, sv))
      } catch (e) {
        refused = e
      }
    }
    expect(refused).toBeInstanceOf(DecodeError)
    expect(() => r2.value()).not.toThrow()
  })

  it('a subdocument shows as its guid in value(), equal on every replica (value() held the live Y.Doc, different on each replica)', () => {
    const a = new YjsReplica('a')
    const sub = new Y.Doc({ guid: 'sub-1' })
    a.map('m').set('sub', sub)
    sub.getText('x').insert(0, 'inner')
    const b = new YjsReplica('b')
    b.apply(a.deltaSince())
    expect(a.value()).toEqual({ m: { sub: { guid: 'sub-1' } } })
    expect(b.value()).toEqual(a.value())
  })

  it("value() copies binary content: changing a returned Uint8Array does not change the document (it was the document's own array, edited without an update)", () => {
    const a = new YjsReplica('a', { roots: { m: 'map', arr: 'array' } })
    a.map('m').set('bin', new Uint8Array([1, 2, 3]))
    a.array('arr').push([new Uint8Array([4])])
    a.map('m').set('obj', { inner: new Uint8Array([5]) })
    const v = a.value() as { m: { bin: Uint8Array; obj: { inner: Uint8Array } }; arr: Uint8Array[] }
    v.m.bin[0] = 99
    ;(v.arr[0] as Uint8Array)[0] = 99
    v.m.obj.inner[0] = 99
    expect(a.value()).toEqual({ m: { bin: new Uint8Array([1, 2, 3]), obj: { inner: new Uint8Array([5]) } }, arr: [new Uint8Array([4])] })
    const b = new YjsReplica('b', { roots: { m: 'map', arr: 'array' } })
    b.apply(a.state())
    expect(b.value()).toEqual(a.value())
  })

  it('a V2 update is refused with a DecodeError that says so, the document untouched', () => {
    const d = new Y.Doc()
    d.getText('t').insert(0, 'hello')
    const r = new YjsReplica('r')
    expect(() => r.apply(Y.encodeStateAsUpdateV2(d))).toThrow(/V2 update/)
    expect(r.value()).toEqual({})
    r.apply(Y.convertUpdateFormatV2ToV1(Y.encodeStateAsUpdateV2(d)))
    expect(r.value()).toEqual({ t: 'hello' })
  })

  it('a 28-byte forged V2 update claiming 2^40 structs is a DecodeError at once (review finding: wording its error decoded it as V2, and the process died of heap exhaustion)', () => {
    const bomb = Uint8Array.from(Buffer.from('0000010100000100010000000741feffffffff1f0180808080802000', 'hex'))
    const r = new YjsReplica('r')
    r.doc.getText('t').insert(0, 'kept')
    const before = r.state()
    // The old code never returned: its worker died of heap exhaustion.
    expect(() => r.apply(bomb)).toThrow(DecodeError)
    expect(r.state()).toEqual(before)
    expect(r.value()).toEqual({ t: 'kept' })
  })
})
