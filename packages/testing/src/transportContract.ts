/**
 * The Transport contract suite: one set of vitest tests every Transport (memory, Redis Streams,
 * Kafka) must pass. A transport package's test file is a few lines:
 *
 * ```ts
 * runTransportContract('redis', async () => ({ open: async () => new RedisTransport({ prefix }) }))
 * ```
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import { isConcordError, type LogRecord, type Transport } from '@concord/core'

/** A fresh, isolated backend namespace for one test. */
export interface TransportHarness {
  /**
   * Opens a new client over this namespace. Called several times per test: a second client over
   * the same namespace must see the same logs and committed positions (like another process).
   */
  open(): Promise<Transport>
  /** Removes whatever the namespace left behind (streams, topics). */
  cleanup?(): Promise<void>
}

/** Options for {@link runTransportContract}. */
export interface TransportContractOptions {
  /** Per-test timeout in ms. @default 60_000 */
  readonly timeoutMs?: number
  /** Records appended by the concurrency and volume tests. @default 200 */
  readonly volume?: number
  /**
   * Whether the transport implements the optional Transport.watch (its test runs only then, and
   * requires it). @default true
   */
  readonly watch?: boolean
}

const enc = new TextEncoder()
const dec = new TextDecoder()
const bytes = (s: string): Uint8Array => enc.encode(s)
const text = (r: LogRecord): string => dec.decode(r.bytes)

let counter = 0
/** Origin and reader names unique within the run, so namespaces shared across runs do not collide. */
function unique(kind: string): string {
  counter++
  return `${kind}-${process.pid}-${Date.now().toString(36)}-${counter}`
}

/** Polls until `n` records arrived (or a poll returns nothing `maxEmpty` times in a row). */
async function pollN(t: Transport, reader: string, origin: string, n: number, maxEmpty = 50): Promise<LogRecord[]> {
  const out: LogRecord[] = []
  let empty = 0
  while (out.length < n && empty < maxEmpty) {
    const got = await t.poll(reader, origin, { max: n - out.length, waitMs: 100 })
    if (got.length === 0) empty++
    else empty = 0
    out.push(...got)
  }
  return out
}

/**
 * Registers the Transport contract tests under `describe(name)`.
 * @param setup creates a fresh namespace per test.
 */
export function runTransportContract(
  name: string,
  setup: () => Promise<TransportHarness> | TransportHarness,
  options: TransportContractOptions = {},
): void {
  const timeout = options.timeoutMs ?? 60_000
  const volume = options.volume ?? 200

  describe(`Transport contract: ${name}`, () => {
    let harness: TransportHarness | undefined
    const opened: Transport[] = []

    async function open(): Promise<Transport> {
      harness ??= await setup()
      const t = await harness.open()
      opened.push(t)
      return t
    }

    afterEach(async () => {
      for (const t of opened.splice(0)) await t.close().catch(() => undefined)
      await harness?.cleanup?.()
      harness = undefined
    })

    it('append returns increasing positions and poll delivers the records in order', async () => {
      const t = await open()
      const origin = unique('o')
      const positions = await t.append(origin, [bytes('a'), bytes('b'), bytes('c')])
      expect(positions).toHaveLength(3)
      expect(t.comparePositions(positions[0] as string, positions[1] as string)).toBeLessThan(0)
      expect(t.comparePositions(positions[1] as string, positions[2] as string)).toBeLessThan(0)
      expect(t.comparePositions(positions[2] as string, positions[2] as string)).toBe(0)
      const more = await t.append(origin, [bytes('d')])
      expect(t.comparePositions(positions[2] as string, more[0] as string)).toBeLessThan(0)
      const got = await pollN(t, unique('r'), origin, 4)
      expect(got.map(text)).toEqual(['a', 'b', 'c', 'd'])
      expect(got.map((r) => r.position)).toEqual([...positions, ...more])
      expect(got.every((r) => r.origin === origin)).toBe(true)
    }, timeout)

    it('keeps bytes exactly, including empty and binary records', async () => {
      const t = await open()
      const origin = unique('o')
      const records = [new Uint8Array([0, 255, 1, 0]), new Uint8Array(0), new Uint8Array(4096).map((_, i) => i % 251)]
      await t.append(origin, records)
      const got = await pollN(t, unique('r'), origin, 3)
      expect(got.map((r) => [...r.bytes])).toEqual(records.map((r) => [...r]))
    }, timeout)

    it('continues after the last delivered record and respects max', async () => {
      const t = await open()
      const origin = unique('o')
      const reader = unique('r')
      await t.append(origin, Array.from({ length: 10 }, (_, i) => bytes(`m${i}`)))
      // Returns as soon as records arrive; the window covers a first fetch after a consumer group join.
      const first = await t.poll(reader, origin, { max: 4, waitMs: 10_000 })
      expect(first.length).toBeGreaterThan(0)
      expect(first.length).toBeLessThanOrEqual(4)
      const rest = await pollN(t, reader, origin, 10 - first.length)
      expect([...first, ...rest].map(text)).toEqual(Array.from({ length: 10 }, (_, i) => `m${i}`))
      expect(await t.poll(reader, origin, { waitMs: 0 })).toEqual([])
    }, timeout)

    it('skipAppendsOf: every record of other appenders arrives in order; a skipped record stands for a run of the source\'s own', async () => {
      const t = await open()
      const twin = await open()
      const origin = unique('o')
      const reader = unique('r')
      const mine = new Set<string>()
      const theirs: string[] = []
      for (let i = 0; i < 4; i++) {
        for (const p of await t.append(origin, [bytes(`m${i}a`), bytes(`m${i}b`)], { source: 'me' })) mine.add(p)
        theirs.push(...(await twin.append(origin, [bytes(`t${i}`)], { source: 'me' })))
        // Same transport object, another source: delivered too.
        theirs.push(...(await t.append(origin, [bytes(`x${i}`)], { source: 'other' })))
      }
      const got: LogRecord[] = []
      for (let empty = 0; empty < 30 && !theirs.every((p) => got.some((r) => r.position === p)); ) {
        const batch = await t.poll(reader, origin, { max: 3, waitMs: 100, skipAppendsOf: 'me' })
        empty = batch.length === 0 ? empty + 1 : 0
        got.push(...batch)
      }
      const delivered = got.filter((r) => r.skipped !== true)
      expect(delivered.filter((r) => !mine.has(r.position)).map(text)).toEqual(['t0', 'x0', 't1', 'x1', 't2', 'x2', 't3', 'x3'])
      for (const r of got) {
        if (r.skipped === true) {
          expect(mine.has(r.position)).toBe(true)
          expect(r.bytes.length).toBe(0)
        }
      }
      for (let i = 1; i < got.length; i++) expect(t.comparePositions((got[i - 1] as LogRecord).position, (got[i] as LogRecord).position)).toBeLessThan(0)
      // Committing past a skipped run works like any other position.
      const last = got[got.length - 1] as LogRecord
      await t.commit(reader, origin, last.position)
      expect(await t.committed(reader, origin)).toBe(last.position)
    }, timeout)

    it('committed() of an origin nobody appended to is undefined, not an error (a RegionNode asks at init)', async () => {
      const t = await open()
      expect(await t.committed(unique('r'), unique('o'))).toBeUndefined()
    }, timeout)

    it('keeps origins and readers independent', async () => {
      const t = await open()
      const o1 = unique('o')
      const o2 = unique('o')
      const r1 = unique('r')
      const r2 = unique('r')
      await t.append(o1, [bytes('x1'), bytes('x2')])
      await t.append(o2, [bytes('y1')])
      expect((await pollN(t, r1, o1, 2)).map(text)).toEqual(['x1', 'x2'])
      expect((await pollN(t, r1, o2, 1)).map(text)).toEqual(['y1'])
      expect((await pollN(t, r2, o1, 2)).map(text)).toEqual(['x1', 'x2'])
      expect(await t.committed(r1, o1)).toBeUndefined()
      // A commit is of one (reader, origin): it moves neither the reader's other origins nor other readers.
      const [, x2] = await t.append(o1, [bytes('x3')]).then(async () => pollN(await open(), unique('r'), o1, 2))
      await t.commit(r1, o1, (x2 as LogRecord).position)
      expect(await t.committed(r1, o1)).toBe((x2 as LogRecord).position)
      expect(await t.committed(r1, o2)).toBeUndefined()
      expect(await t.committed(r2, o1)).toBeUndefined()
      // Another client resumes r1 on o2 from the start (nothing committed there) and on o1 after x2.
      // (The first one closed: a reader is one process; two at once would share the reader's logs.)
      await t.close()
      const t2 = await open()
      expect((await pollN(t2, r1, o2, 1)).map(text)).toEqual(['y1'])
      expect((await pollN(t2, r1, o1, 1)).map(text)).toEqual(['x3'])
    }, timeout)

    it('rewind redelivers everything after the committed position (at-least-once)', async () => {
      const t = await open()
      const origin = unique('o')
      const reader = unique('r')
      await t.append(origin, ['a', 'b', 'c', 'd'].map(bytes))
      const got = await pollN(t, reader, origin, 4)
      await t.commit(reader, origin, (got[1] as LogRecord).position)
      expect(await t.committed(reader, origin)).toBe((got[1] as LogRecord).position)
      await t.rewind(reader, origin)
      expect((await pollN(t, reader, origin, 2)).map(text)).toEqual(['c', 'd'])
      // Nothing committed at all: rewind goes back to the beginning.
      const other = unique('r')
      await pollN(t, other, origin, 4)
      await t.rewind(other, origin)
      expect((await pollN(t, other, origin, 4)).map(text)).toEqual(['a', 'b', 'c', 'd'])
    }, timeout)

    it('a new client resumes after the committed position; uncommitted records are redelivered', async () => {
      const t1 = await open()
      const origin = unique('o')
      const reader = unique('r')
      await t1.append(origin, ['a', 'b', 'c', 'd', 'e'].map(bytes))
      const got = await pollN(t1, reader, origin, 5)
      await t1.commit(reader, origin, (got[2] as LogRecord).position)
      await t1.close()
      const t2 = await open()
      expect(await t2.committed(reader, origin)).toBe((got[2] as LogRecord).position)
      expect((await pollN(t2, reader, origin, 2)).map(text)).toEqual(['d', 'e'])
      // And records appended by the old client are there for new readers.
      expect((await pollN(t2, unique('r'), origin, 5)).map(text)).toEqual(['a', 'b', 'c', 'd', 'e'])
    }, timeout)

    it('concurrent publishers: every record arrives once, each publisher in its own order', async () => {
      const p1 = await open()
      const p2 = await open()
      const origin = unique('o')
      const n = volume
      const publish = async (t: Transport, tag: string): Promise<void> => {
        for (let i = 0; i < n; i += 10) {
          await t.append(origin, Array.from({ length: Math.min(10, n - i) }, (_, j) => bytes(`${tag}:${i + j}`)))
        }
      }
      await Promise.all([publish(p1, 'p'), publish(p2, 'q')])
      const got = await pollN(p1, unique('r'), origin, 2 * n)
      expect(got).toHaveLength(2 * n)
      for (const tag of ['p', 'q']) {
        const seq = got.map(text).filter((s) => s.startsWith(`${tag}:`)).map((s) => Number(s.slice(2)))
        expect(seq).toEqual(Array.from({ length: n }, (_, i) => i))
      }
      for (let i = 1; i < got.length; i++) {
        expect(p1.comparePositions((got[i - 1] as LogRecord).position, (got[i] as LogRecord).position)).toBeLessThan(0)
      }
    }, timeout)

    it('poll with waitMs wakes up when a record is appended', async () => {
      const reader = await open()
      const writer = await open()
      const origin = unique('o')
      const r = unique('r')
      // Create the log so consumers that need it to exist can subscribe.
      await writer.append(origin, [bytes('first')])
      expect((await pollN(reader, r, origin, 1)).map(text)).toEqual(['first'])
      const started = Date.now()
      const waiting = reader.poll(r, origin, { waitMs: 30_000 })
      await writer.append(origin, [bytes('second')])
      const got = await waiting
      // Woken by the append, not at the end of waitMs (a transport that slept it out passed).
      expect(Date.now() - started, 'the waiting poll returned only at the end of its waitMs').toBeLessThan(15_000)
      const all = got.length > 0 ? got : await pollN(reader, r, origin, 1)
      expect(all.map(text)).toEqual(['second'])
    }, timeout)

    it.runIf(options.watch !== false)('watch tells a reader that records arrived, until unwatched', async () => {
      const reader = await open()
      const writer = await open()
      expect(typeof reader.watch, 'Transport.watch (pass watch: false to the suite for a transport without it)').toBe('function')
      const origin = unique('o')
      const r = unique('r')
      await writer.append(origin, [bytes('first')])
      expect((await pollN(reader, r, origin, 1)).map(text)).toEqual(['first'])
      let calls = 0
      const stop = reader.watch?.(r, () => calls++) as () => void
      await writer.append(origin, [bytes('second')])
      await vi.waitFor(() => expect(calls, 'no watch call after an append the reader polls').toBeGreaterThan(0), { timeout: 30_000, interval: 20 })
      expect((await pollN(reader, r, origin, 1)).map(text)).toEqual(['second'])
      stop()
      const before = calls
      await writer.append(origin, [bytes('third')])
      expect((await pollN(reader, r, origin, 1)).map(text)).toEqual(['third'])
      expect(calls, 'a watch call after unwatch').toBe(before)
    }, timeout)

    it('poll with waitMs on an idle log returns an empty batch', async () => {
      const t = await open()
      const origin = unique('o')
      await t.append(origin, [bytes('only')])
      const r = unique('r')
      await pollN(t, r, origin, 1)
      expect(await t.poll(r, origin, { waitMs: 50 })).toEqual([])
    }, timeout)

    it('an aborted signal ends a waiting poll', async () => {
      const t = await open()
      const origin = unique('o')
      await t.append(origin, [bytes('only')])
      const r = unique('r')
      await pollN(t, r, origin, 1)
      const ac = new AbortController()
      const waiting = t.poll(r, origin, { waitMs: 60_000, signal: ac.signal })
      ac.abort()
      const got = await waiting.catch((e: unknown) => e)
      expect(Array.isArray(got) ? got : [], 'an aborted poll resolves (with no records) or rejects').toEqual([])
    }, timeout)

    it('latest, where a transport has it, reports the last position held (undefined for an empty log)', async () => {
      const t = await open()
      if (t.latest === undefined) return
      const origin = unique('o')
      expect(await t.latest(origin)).toBeUndefined()
      const positions = await t.append(origin, ['a', 'b', 'c'].map(bytes))
      expect(await t.latest(origin)).toBe(positions[2])
      await t.trim(origin, positions[2] as string)
      expect(await t.latest(origin)).toBe(positions[2])
    }, timeout)

    it('trim removes records strictly before the position; earliest reports the first one held', async () => {
      const t = await open()
      const origin = unique('o')
      expect(await t.earliest(origin)).toBeUndefined()
      const positions = await t.append(origin, ['a', 'b', 'c', 'd', 'e'].map(bytes))
      expect(await t.earliest(origin)).toBe(positions[0])
      await t.trim(origin, positions[2] as string)
      expect(await t.earliest(origin)).toBe(positions[2])
      expect((await pollN(t, unique('r'), origin, 3)).map(text)).toEqual(['c', 'd', 'e'])
      // Trimming below the earliest position is a no-op.
      await t.trim(origin, positions[0] as string)
      expect(await t.earliest(origin)).toBe(positions[2])
      // A reader committed before the trimmed range continues with what is still held.
      const r = unique('r')
      const t2 = await open()
      await t2.commit(r, origin, positions[0] as string)
      expect((await pollN(t2, r, origin, 3)).map(text)).toEqual(['c', 'd', 'e'])
    }, timeout)

    it('refuses bad arguments with a ConfigError, appending nothing', async () => {
      const t = await open()
      const origin = unique('o')
      const reader = unique('r')
      const refused = async (what: string, call: () => Promise<unknown>): Promise<void> => {
        const err = await call().then(
          () => undefined,
          (e: unknown) => e,
        )
        expect(isConcordError(err) && err.code === 'CONFIG' && !err.retriable, `${what}: expected a ConfigError, got ${String(err)}`).toBe(true)
      }
      // A bad record after good ones: the whole append is refused, not its first part appended.
      await refused('a record that is not bytes', () => t.append(origin, [bytes('a'), 'b' as unknown as Uint8Array]))
      await refused('a null record', () => t.append(origin, [null as unknown as Uint8Array]))
      await refused('keys not one per record', () => t.append(origin, [bytes('a'), bytes('b')], { keys: ['k'] }))
      await refused('a key that is not a string', () => t.append(origin, [bytes('a')], { keys: [7 as unknown as string] }))
      await refused('an empty source', () => t.append(origin, [bytes('a')], { source: '' }))
      for (const max of [0, -1, 1.5, Number.NaN]) await refused(`poll max ${max}`, () => t.poll(reader, origin, { max }))
      for (const waitMs of [-1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 31]) await refused(`poll waitMs ${waitMs}`, () => t.poll(reader, origin, { waitMs }))
      // Nothing of the refused appends reached the log; the transport still works.
      const [p] = await t.append(origin, [bytes('ok')], { keys: ['k'] })
      const got = await pollN(t, reader, origin, 1)
      expect(got.map(text)).toEqual(['ok'])
      expect(got[0]?.position).toBe(p)
      expect(await pollN(t, reader, origin, 1, 3)).toEqual([])
    }, timeout)

    it('a record past maxRecordBytes (when the transport has one) is refused with a TooLargeError, appending nothing', async () => {
      const t = await open()
      const limit = t.maxRecordBytes
      if (limit === undefined) return
      const origin = unique('o')
      const err = await t.append(origin, [bytes('before'), new Uint8Array(limit + 1)]).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isConcordError(err) && err.code === 'TOO_LARGE', `expected a TooLargeError, got ${String(err)}`).toBe(true)
      await t.append(origin, [bytes('ok')])
      expect((await pollN(t, unique('r'), origin, 2, 3)).map(text)).toEqual(['ok'])
    }, timeout)

    it('close makes further calls fail with ClosedError', async () => {
      const t = await open()
      const origin = unique('o')
      await t.append(origin, [bytes('x')])
      await t.close()
      const calls: Array<() => Promise<unknown>> = [
        () => t.append(origin, [bytes('y')]),
        () => t.poll(unique('r'), origin),
        () => t.commit(unique('r'), origin, '0'),
        () => t.committed(unique('r'), origin),
        () => t.rewind(unique('r'), origin),
        () => t.earliest(origin),
        () => t.trim(origin, '0'),
      ]
      for (const call of calls) {
        const err = await call().then(
          () => undefined,
          (e: unknown) => e,
        )
        expect(isConcordError(err) && err.code === 'CLOSED', `expected ClosedError, got ${String(err)}`).toBe(true)
      }
      // Closing twice is harmless.
      await t.close()
    }, timeout)
  })
}
