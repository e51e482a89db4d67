/**
 * Wire format of native CRDT deltas and states (docs/semantics.md, "Encoding"):
 *
 * ```
 * byte    tag: format version (high nibble, 1) | type code (low nibble)
 * uint    n, then n strings: replica ids (and HLC nodes), strictly sorted — the string table
 * ctx     for each table entry: uint range count, then (gap, length) pairs as in DotSet.write
 * store   fun: uint n, n × (uint replica index, uint counter, value)   sorted by dot
 *         map: uint n, n × (key, store)                                sorted by key
 * ```
 * Decoding validates everything (sorted, unique, every store dot inside the context, no empty
 * nested store, known keys and types, limits) before the caller touches any state.
 * Internal module.
 */
import {
  DecodeError,
  MAX_DOT_COUNTER,
  MAX_COLLECTION,
  MAX_REPLICA_ID_BYTES,
  DotSet,
  compareDots,
  compareStrings,
  rangeIndexIn,
  decodeWith,
  encoderBytes,
  releaseEncoder,
  takeEncoder,
  isConcordError,
  dotKey,
  encodeWith,
  readByte,
  readLength,
  readString,
  readUint,
  sortInPlace,
  sortedStrings,
  writeByte,
  writeString,
  writeUint,
  type Decoder,
  type Dot,
  type Encoder,
} from '@concord/core'
import { createDecoder } from 'lib0/decoding'
import { MAX_MAP_DEPTH, TYPE_CODES, type CausalTypeName, type FunSchema, type Schema, type StringIndex } from './schema.js'
import { FunStore, MapStore, forEachEntry, type CausalDelta, type Entry, type Store } from './store.js'

const FORMAT = 1
const byDot = (a: Entry, b: Entry): number => compareDots(a.dot, b.dot)

function tagOf(type: CausalTypeName): number {
  return (FORMAT << 4) | TYPE_CODES[type]
}

/** Encodes `(store, ctx)` canonically: equal states give equal bytes. */
export function encodeDelta(type: CausalTypeName, schema: Schema, store: Store | undefined, ctx: DotSet): Uint8Array {
  const table = stringTable(schema, store, ctx)
  const idx = tableIndex(table)
  return encodeWith((e) => {
    writeByte(e, tagOf(type))
    writeUint(e, table.length)
    for (const s of table) writeString(e, s)
    for (const s of table) {
      const r = ctx.flatRanges(s)
      writeUint(e, r.length / 2)
      let prev = 0
      for (let i = 0; i < r.length; i += 2) {
        const a = r[i] as number
        const b = r[i + 1] as number
        writeUint(e, a - prev)
        writeUint(e, b - a)
        prev = b
      }
    }
    writeStore(e, schema, store, idx)
  })
}

/** Positions in a small table by a scan (no Map to build for the one or two strings of a typical delta). */
class ScanIndex implements StringIndex {
  constructor(private readonly table: readonly string[]) {}
  get(s: string): number | undefined {
    const i = this.table.indexOf(s)
    return i < 0 ? undefined : i
  }
}

function tableIndex(table: readonly string[]): StringIndex {
  if (table.length <= 8) return new ScanIndex(table)
  const idx = new Map<string, number>()
  for (let i = 0; i < table.length; i++) idx.set(table[i] as string, i)
  return idx
}

/**
 * The bytes {@link encodeDelta} gives for a write at a fun-store root: a store of the one entry
 * (`dot`, `value`) and the context `old` + `dot` (`old`: the live dots it overwrites, other than
 * `dot`), without building that store and DotSet. For the local write path of registers and counters.
 * With `restatesOwn` the context covers every dot of `dot`'s replica up to `dot` (a standalone
 * counter's running total restates all of its replica's earlier dots, live or not).
 */
export function encodeFunWrite(type: CausalTypeName, schema: FunSchema, dot: Dot, value: unknown, old: readonly Dot[], restatesOwn = false): Uint8Array {
  const dots = old.length === 0 ? [dot] : sortInPlace([...old, dot], compareDots)
  // Usually every dot is one replica's and no other string is named: a one-element table.
  const table: string[] = [(dots[0] as Dot).replica]
  for (const d of dots) if (!table.includes(d.replica)) table.push(d.replica)
  if (schema.strings !== undefined) {
    const t = schema.strings(value)
    if (!table.includes(t)) table.push(t)
  }
  sortInPlace(table, compareStrings)
  const idx = tableIndex(table)
  // No encodeWith closure: every local write of a register or counter comes through here.
  const e = takeEncoder()
  try {
    writeByte(e, tagOf(type))
    writeUint(e, table.length)
    for (const s of table) writeString(e, s)
    for (const s of table) {
      if (restatesOwn && s === dot.replica) {
        // One range, 1..dot.counter: `dot` is fresh, so every other dot of its replica is below it.
        writeUint(e, 1)
        writeUint(e, 1)
        writeUint(e, dot.counter - 1)
        continue
      }
      // The sorted dots of `s`, as DotSet ranges: adjacent counters merge, duplicates collapse.
      let count = 0
      let end = -1
      for (const d of dots) {
        if (d.replica !== s) continue
        if (count === 0 || d.counter > end + 1) count++
        end = Math.max(end, d.counter)
      }
      writeUint(e, count)
      let prev = 0
      let start = -1
      end = -1
      for (const d of dots) {
        if (d.replica !== s) continue
        if (start >= 0 && d.counter <= end + 1) {
          end = Math.max(end, d.counter)
          continue
        }
        if (start >= 0) {
          writeUint(e, start - prev)
          writeUint(e, end - start)
          prev = end
        }
        start = d.counter
        end = d.counter
      }
      if (start >= 0) {
        writeUint(e, start - prev)
        writeUint(e, end - start)
      }
    }
    writeUint(e, 1)
    writeUint(e, idx.get(dot.replica) as number)
    writeUint(e, dot.counter)
    schema.write(e, value, idx)
    return encoderBytes(e)
  } finally {
    releaseEncoder(e)
  }
}

/** The sorted replica ids (and HLC nodes) a delta names: its string table. */
function stringTable(schema: Schema, store: Store | undefined, ctx: DotSet): string[] {
  // A fun-store root (registers, counters) holds a few entries: a linear scan of a small array
  // beats a Set and a closure per entry on this hot path (every local change is encoded here).
  const table: string[] = [...ctx.replicas()]
  if (store?.kind === 'fun' && schema.kind === 'fun' && store.entries.size <= 16 && table.length <= 16) {
    for (const en of store.entries.values()) {
      if (!table.includes(en.dot.replica)) table.push(en.dot.replica)
      if (schema.strings !== undefined) {
        const t = schema.strings(en.value)
        if (!table.includes(t)) table.push(t)
      }
    }
    return sortInPlace(table, compareStrings)
  }
  const strings = new Set<string>(table)
  forEachEntry(schema, store, (e, leaf) => {
    strings.add(e.dot.replica)
    if (leaf.strings !== undefined) strings.add(leaf.strings(e.value))
  })
  return sortedStrings(strings)
}

function writeStore(e: Encoder, schema: Schema, s: Store | undefined, idx: StringIndex): void {
  if (s === undefined) return writeUint(e, 0)
  if (s.kind === 'fun') {
    if (schema.kind !== 'fun') throw new Error('store/schema mismatch')
    if (s.entries.size === 1) {
      // One entry (a register, a counter bump): nothing to sort.
      for (const en of s.entries.values()) {
        writeUint(e, 1)
        writeUint(e, idx.get(en.dot.replica) as number)
        writeUint(e, en.dot.counter)
        schema.write(e, en.value, idx)
      }
      return
    }
    const entries = sortInPlace([...s.entries.values()], byDot)
    writeUint(e, entries.length)
    for (const en of entries) {
      writeUint(e, idx.get(en.dot.replica) as number)
      writeUint(e, en.dot.counter)
      schema.write(e, en.value, idx)
    }
    return
  }
  if (schema.kind !== 'map') throw new Error('store/schema mismatch')
  const keys = sortedStrings(s.entries.keys())
  writeUint(e, keys.length)
  for (const k of keys) {
    schema.writeKey(e, k)
    writeStore(e, schema.child(k) as Schema, s.entries.get(k), idx)
  }
}

interface ReadState {
  readonly table: readonly string[]
  readonly ctx: DotSet
  /** Dots met so far, to reject one dot under two map keys; absent when the root is a fun store (its dots are strictly sorted, so unique). */
  readonly seen: Set<string> | undefined
}

/** Decodes and validates a delta of `type`. Throws DecodeError, never anything else. */
export function decodeDelta(type: CausalTypeName, schema: Schema, bytes: Uint8Array): CausalDelta {
  return decodeWith(`${type} delta`, bytes, (d) => {
    const fd = takeFunDelta()
    try {
      readHeader(d, type, fd)
      const { table, rangeAt, ranges } = fd
      // The context adopts per-replica copies of the flat ranges (the scratch is reused).
      const ctx = DotSet.fromRanges(
        table,
        table.map((_, i) => ranges.slice(rangeAt[i], rangeAt[i + 1])),
      )
      const store = readStore(d, schema, { table, ctx, seen: schema.kind === 'map' ? new Set() : undefined }, 0)
      return { store, ctx }
    } finally {
      fd.release()
    }
  })
}

/**
 * A decoded delta of a type whose root is a dot-to-value store (registers, counters), kept flat for
 * {@link CausalReplica.apply}'s direct join: no DotSet, no store map, no entry objects for dots the
 * receiver has seen. One object is reused from decode to decode (its arrays only grow, counts say
 * how much is valid), so a decode allocates the string table and little else.
 */
/** Entries a released {@link FunDelta}'s arrays may keep for the next decode. */
const SHRINK_PAST = 65_536

export class FunDelta {
  /** Replica ids (and HLC nodes), sorted: exact length, fresh per decode (value readers index it). */
  table: readonly string[] = []
  /** Table entry i's context: the flat sorted disjoint pairs `[start, end, ...]` in `ranges[rangeAt[i] .. rangeAt[i + 1])`. */
  readonly rangeAt: number[] = [0]
  readonly ranges: number[] = []
  /** Dot j is (table[dots[2j]], dots[2j + 1]); strictly sorted. */
  readonly dots: number[] = []
  /** The value of dot j. */
  readonly values: unknown[] = []
  /** Number of dots. */
  size = 0
  /** Held by a reader: a decode meanwhile (re-entrant) takes a fresh object. */
  busy = false

  /** Ends a reader's use: drops the values it referenced. */
  release(): void {
    for (let i = 0; i < this.size; i++) this.values[i] = undefined
    this.size = 0
    this.busy = false
    // Past SHRINK_PAST entries (a large delta, or a hostile one refused after its header), the
    // arrays are emptied: kept, they pinned their peak (~80 MB after one refused 8 MB delta) for
    // the life of the process (review finding).
    if (this.ranges.length > SHRINK_PAST) this.ranges.length = 0
    if (this.dots.length > SHRINK_PAST) this.dots.length = 0
    if (this.values.length > SHRINK_PAST) this.values.length = 0
    if (this.rangeAt.length > SHRINK_PAST) this.rangeAt.length = 1
  }
}

const sharedFunDelta = new FunDelta()

/** The shared {@link FunDelta}, marked busy, or a fresh one when it is held. Give it back with `release()`. */
export function takeFunDelta(): FunDelta {
  const fd = sharedFunDelta.busy ? new FunDelta() : sharedFunDelta
  fd.busy = true
  return fd
}

/**
 * Reads a delta's tag, string table and context ranges into `out` (`table`, `rangeAt`, `ranges`),
 * validated: the header every delta shares.
 */
function readHeader(d: Decoder, type: CausalTypeName, out: FunDelta): void {
  const tag = readByte(d)
  if (tag !== tagOf(type)) throw new DecodeError(`${type} delta: unexpected tag 0x${tag.toString(16)} (format ${tag >> 4}, type ${tag & 15})`)
  const n = readLength(d, 1_000_000, 2)
  const table = new Array<string>(n)
  for (let i = 0; i < n; i++) {
    const s = readString(d, MAX_REPLICA_ID_BYTES)
    if (s.length === 0) throw new DecodeError('empty replica id')
    if (i > 0 && s <= (table[i - 1] as string)) throw new DecodeError('string table not strictly sorted')
    table[i] = s
  }
  out.table = table
  const { rangeAt, ranges } = out
  let at = 0
  for (let i = 0; i < n; i++) {
    rangeAt[i] = at
    const k = readLength(d, MAX_COLLECTION, 2)
    let prev = 0
    for (let j = 0; j < k; j++) {
      const gap = readUint(d)
      const len = readUint(d)
      if (gap < (j === 0 ? 1 : 2)) throw new DecodeError('context: overlapping or adjacent ranges')
      const start = prev + gap
      const end = start + len
      if (!(end <= MAX_DOT_COUNTER)) throw new DecodeError(`context: counter past ${MAX_DOT_COUNTER}`)
      ranges[at++] = start
      ranges[at++] = end
      prev = end
    }
  }
  rangeAt[n] = at
}

/**
 * Decodes and validates a fun-rooted delta exactly as {@link decodeDelta} does (same checks, same
 * errors), into `out`. Throws DecodeError, never anything else.
 */
export function decodeFunDelta(type: CausalTypeName, schema: FunSchema, bytes: Uint8Array, out: FunDelta): FunDelta {
  if (!(bytes instanceof Uint8Array)) throw new DecodeError(`${type} delta: expected a Uint8Array`)
  const d = createDecoder(bytes)
  out.size = 0
  try {
    readHeader(d, type, out)
    const { table, rangeAt, ranges, dots, values } = out
    const n = table.length
    const m = readLength(d, MAX_COLLECTION, 2)
    let pi = -1
    let pc = 0
    for (let i = 0; i < m; i++) {
      const ri = readUint(d, n - 1)
      const counter = readUint(d)
      if (counter === 0) throw new DecodeError('dot counter 0')
      if (ri < pi || (ri === pi && counter <= pc)) throw new DecodeError('dots not strictly sorted')
      pi = ri
      pc = counter
      if (rangeIndexIn(ranges, rangeAt[ri] as number, rangeAt[ri + 1] as number, counter) < 0) throw new DecodeError('store dot outside the delta context')
      dots[2 * i] = ri
      dots[2 * i + 1] = counter
      values[i] = schema.read(d, table)
      out.size = i + 1
    }
  } catch (e) {
    if (isConcordError(e)) throw e
    throw new DecodeError(`${type} delta: ${e instanceof Error ? e.message : String(e)}`, { cause: e })
  }
  if (d.pos !== bytes.length) throw new DecodeError(`${type} delta: ${bytes.length - d.pos} trailing bytes`)
  return out
}

function readStore(d: Decoder, schema: Schema, rs: ReadState, depth: number): Store {
  if (depth > MAX_MAP_DEPTH) throw new DecodeError('maps nest too deeply')
  if (schema.kind === 'fun') {
    const f = new FunStore()
    const n = readLength(d, MAX_COLLECTION, 2)
    let pi = -1
    let pc = 0
    for (let i = 0; i < n; i++) {
      const ri = readUint(d, rs.table.length - 1)
      const counter = readUint(d)
      if (counter === 0) throw new DecodeError('dot counter 0')
      if (ri < pi || (ri === pi && counter <= pc)) throw new DecodeError('dots not strictly sorted')
      pi = ri
      pc = counter
      const dot = { replica: rs.table[ri] as string, counter }
      if (!rs.ctx.has(dot)) throw new DecodeError('store dot outside the delta context')
      const k = dotKey(dot)
      if (rs.seen !== undefined) {
        if (rs.seen.has(k)) throw new DecodeError('dot appears twice')
        rs.seen.add(k)
      }
      f.entries.set(k, { dot, value: schema.read(d, rs.table) })
    }
    return f
  }
  const m = new MapStore()
  const n = readLength(d, MAX_COLLECTION, 2)
  let prev: string | undefined
  for (let i = 0; i < n; i++) {
    const k = schema.readKey(d)
    if (prev !== undefined && k <= prev) throw new DecodeError('map keys not strictly sorted')
    prev = k
    const cs = schema.child(k)
    if (cs === undefined) throw new DecodeError('unknown map key type')
    const child = readStore(d, cs, rs, depth + 1)
    if (child.entries.size === 0) throw new DecodeError('empty nested store')
    m.entries.set(k, child)
  }
  return m
}
