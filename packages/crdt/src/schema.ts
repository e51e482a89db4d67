/**
 * The shape of each causal type's store, and how its values encode, read back and report
 * conflicts. One schema per kernel, shared by the standalone type and its nested form in an OrMap.
 * Internal module.
 */
import {
  DecodeError,
  MAX_COLLECTION,
  MAX_FIELD_BYTES,
  isWellFormed,
  canonicalJson,
  compareDots,
  compareHlc,
  readByte,
  readJson,
  readString,
  readUint,
  writeByte,
  writeJson,
  writeString,
  writeUint,
  type ConflictEvent,
  type ConflictSide,
  type Decoder,
  type Encoder,
  type HlcTimestamp,
  type Dot,
  type Json,
} from '@concord/core'
import type { Entry, Store } from './store.js'

/** The causal CRDT types, by type name. */
export type CausalTypeName = 'lww-register' | 'mv-register' | 'pn-counter' | 'or-set' | 'lww-map' | 'or-map'

/** Type tag of each type in the first byte of its deltas (low nibble). */
export const TYPE_CODES: Readonly<Record<CausalTypeName, number>> = {
  'lww-register': 1,
  'mv-register': 2,
  'pn-counter': 3,
  'or-set': 4,
  'lww-map': 5,
  'or-map': 6,
}
const CODE_NAMES = new Map<number, CausalTypeName>(Object.entries(TYPE_CODES).map(([k, v]) => [v, k as CausalTypeName]))

/** Deepest OrMap nesting accepted (also the limit on decoding). */
export const MAX_MAP_DEPTH = 32
/** Deepest JSON value accepted in a value or element (matches the core codec's limit). */
export const MAX_JSON_DEPTH = 64

/** Position of each string of a message's string table (a Map, or a scan of a small table). */
export interface StringIndex {
  get(s: string): number | undefined
}

export interface FunSchema {
  readonly kind: 'fun'
  readonly type: CausalTypeName | 'element'
  write(e: Encoder, v: unknown, idx: StringIndex): void
  read(d: Decoder, table: readonly string[]): unknown
  /** Strings the value refers to (HLC node), interned in the message table. */
  readonly strings?: (v: unknown) => string
  /** Remote timestamp carried by the value, fed to the local HLC. */
  readonly time?: (v: unknown) => HlcTimestamp
  /** Conflict to report when a remote join leaves several siblings. */
  readonly siblings?: (entries: Entry[], path: readonly string[], typeName: string) => ConflictEvent | undefined
  value(s: Store | undefined): unknown
}

export interface MapSchema {
  readonly kind: 'map'
  readonly type: 'or-set' | 'lww-map' | 'or-map'
  child(key: string): Schema | undefined
  writeKey(e: Encoder, key: string): void
  /** Reads and validates a key; throws DecodeError. */
  readKey(d: Decoder): string
  /** Path component reported in conflict events. */
  label(key: string): string
  /** Conflict for a removal under `key` overridden by concurrent writes (`surviving`). */
  readonly removal?: (key: string, child: Store, surviving: Dot[], removed: Dot[], path: readonly string[], typeName: string) => ConflictEvent
  value(s: Store | undefined): unknown
}

export type Schema = FunSchema | MapSchema

/**
 * Whether receivers read `s` as a string (readString: at most MAX_FIELD_BYTES of UTF-8). A local
 * write of a longer one (a value, key, element or field name) would be kept here and refused by
 * every receiver — and with it every later state() of the object. At most 3 bytes per UTF-16 unit:
 * only a long string is encoded to count.
 */
export function fitsField(s: string): boolean {
  return s.length <= MAX_FIELD_BYTES / 3 || new TextEncoder().encode(s).length <= MAX_FIELD_BYTES
}

/**
 * Throws unless `v` is a finite JSON value no deeper than {@link MAX_JSON_DEPTH}. With `local` (a
 * value being written here), its strings and keys must also be well-formed UTF-16 (a lone surrogate
 * would arrive changed) and within the decoder's limits (a longer string or array would not
 * arrive). Decoded strings always are, so decoding skips those scans.
 */
export function checkJson(v: unknown, depth = 0, local = false): asserts v is Json {
  if (depth > MAX_JSON_DEPTH) throw new DecodeError('value nests too deeply')
  if (typeof v === 'string') {
    if (local && !isWellFormed(v)) throw new DecodeError('string is not well-formed UTF-16 (a lone surrogate)')
    if (local && !fitsField(v)) throw new DecodeError(`string longer than ${MAX_FIELD_BYTES} UTF-8 bytes`)
    return
  }
  if (v === null || typeof v === 'boolean') return
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new DecodeError('non-finite number')
    return
  }
  if (Array.isArray(v)) {
    if (local && v.length > MAX_COLLECTION) throw new DecodeError(`array longer than ${MAX_COLLECTION} items`)
    for (const x of v) checkJson(x, depth + 1, local)
    return
  }
  if (typeof v === 'object') {
    const entries = Object.entries(v)
    if (local && entries.length > MAX_COLLECTION) throw new DecodeError(`object with more than ${MAX_COLLECTION} keys`)
    for (const [k, x] of entries) {
      if (local && !isWellFormed(k)) throw new DecodeError('object key is not well-formed UTF-16 (a lone surrogate)')
      if (local && !fitsField(k)) throw new DecodeError(`object key longer than ${MAX_FIELD_BYTES} UTF-8 bytes`)
      checkJson(x, depth + 1, local)
    }
    return
  }
  throw new DecodeError('not a JSON value')
}

/**
 * A deep copy of the local value `v`, frozen: what a write stores. The caller's object would
 * otherwise be the stored value, so changing it after the write (or changing what value() hands
 * out) would change the state here behind the delta already sent: state() would no longer match
 * replicas that applied the same deltas. `v` must have passed checkJson.
 */
export function frozenCopy(v: Json): Json {
  if (typeof v !== 'object' || v === null) return v
  if (Array.isArray(v)) return Object.freeze(v.map(frozenCopy))
  const out: { [key: string]: Json } = {}
  for (const [k, x] of Object.entries(v)) {
    // An own `__proto__` key (JSON.parse makes one) stays a key: assigning it would set the prototype.
    Object.defineProperty(out, k, { value: frozenCopy(x), enumerable: true, writable: true, configurable: true })
  }
  return Object.freeze(out)
}

/** Freezes a freshly decoded value in place, for the reason of {@link frozenCopy}. */
function deepFreeze(v: Json): Json {
  if (typeof v !== 'object' || v === null) return v
  for (const x of Object.values(v)) deepFreeze(x)
  return Object.freeze(v)
}

function readCheckedJson(d: Decoder): Json {
  const v = readJson(d)
  checkJson(v)
  return deepFreeze(v)
}

function readIdx(d: Decoder, table: readonly string[]): string {
  if (table.length === 0) throw new DecodeError('string index with an empty table')
  return table[readUint(d, table.length - 1)] as string
}

/**
 * A copy of a store's dot for a conflict event: the listener gets its own, so changing it cannot
 * change the entry it came from (the state, and the dot keys the store is indexed by).
 */
function eventDot(d: Dot): Dot {
  return { replica: d.replica, counter: d.counter }
}

// ---------------------------------------------------------------- leaves

/** Value of an element dot in an OR-set (a DotSet-store): nothing. */
export const ELEMENT: FunSchema = {
  kind: 'fun',
  type: 'element',
  write() {},
  read: () => true,
  value: (s) => s !== undefined && s.entries.size > 0,
}

/** Multi-value register: dot → JSON value. */
export const MV: FunSchema = {
  kind: 'fun',
  type: 'mv-register',
  write: (e, v) => writeJson(e, v as Json),
  read: (d) => readCheckedJson(d),
  siblings: (entries, path, typeName) => ({
    kind: 'siblings',
    typeName,
    path,
    losers: entries
      .slice()
      .sort((a, b) => compareDots(a.dot, b.dot))
      .map((e) => ({ value: e.value, replica: e.dot.replica, dot: eventDot(e.dot) })),
  }),
  // Ties in canonical form (0 and -0) fall back to the dot, so every replica lists the same order.
  // Each sibling's canonical form made once, not twice per comparison (review finding: 20,000
  // siblings took ~2 s per value()).
  value: (s) => {
    if (s?.kind !== 'fun') return []
    const keyed = [...s.entries.values()].map((e) => ({ e, k: canonicalJson(e.value as Json) }))
    keyed.sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0) || compareDots(a.e.dot, b.e.dot))
    return keyed.map((x) => x.e.value as Json)
  },
}

/** LWW write: its timestamp and value; `v` undefined marks a deletion (LwwMap). */
export interface LwwValue {
  readonly t: HlcTimestamp
  readonly v: Json | undefined
}

/** Orders LWW entries: higher HLC wins, then higher dot. */
export function compareLww(a: Entry, b: Entry): number {
  return compareHlc((a.value as LwwValue).t, (b.value as LwwValue).t) || compareDots(a.dot, b.dot)
}

/** The winning entry of an LWW leaf, or undefined when empty. */
export function lwwWinner(s: Store | undefined): Entry | undefined {
  if (s === undefined || s.kind !== 'fun') return undefined
  let best: Entry | undefined
  for (const e of s.entries.values()) if (best === undefined || compareLww(e, best) > 0) best = e
  return best
}

function lwwSide(e: Entry): ConflictSide {
  const lv = e.value as LwwValue
  return { value: lv.v, replica: e.dot.replica, dot: eventDot(e.dot), time: lv.t }
}

/** Last-writer-wins register: dot → (HLC time, value). Siblings stay until overwritten. */
export const LWW: FunSchema = {
  kind: 'fun',
  type: 'lww-register',
  write(e, v, idx) {
    const lv = v as LwwValue
    writeUint(e, lv.t.wall)
    writeUint(e, lv.t.logical)
    writeUint(e, idx.get(lv.t.node) as number)
    if (lv.v === undefined) writeByte(e, 0)
    else {
      writeByte(e, 1)
      writeJson(e, lv.v)
    }
  },
  read(d, table) {
    const wall = readUint(d)
    const logical = readUint(d, 0xffff_ffff)
    const node = readIdx(d, table)
    const flag = readByte(d)
    if (flag > 1) throw new DecodeError(`bad lww flag ${flag}`)
    // Frozen: conflict events hand the stored timestamp out (see frozenCopy).
    const lv: LwwValue = { t: Object.freeze({ wall, logical, node }), v: flag === 1 ? readCheckedJson(d) : undefined }
    return lv
  },
  strings: (v) => (v as LwwValue).t.node,
  time: (v) => (v as LwwValue).t,
  siblings(entries, path, typeName) {
    const sorted = entries.slice().sort((a, b) => compareLww(b, a))
    const [winner, ...losers] = sorted
    if (winner === undefined) return undefined
    return { kind: 'lww-overwrite', typeName, path, winner: lwwSide(winner), losers: losers.map(lwwSide) }
  },
  value: (s) => (lwwWinner(s)?.value as LwwValue | undefined)?.v,
}

/** A replica's accumulated counter totals. */
export interface CounterValue {
  readonly inc: number
  readonly dec: number
}

/** Causal counter: one live dot per replica holding that replica's (increments, decrements). */
export const COUNTER: FunSchema = {
  kind: 'fun',
  type: 'pn-counter',
  write(e, v) {
    const c = v as CounterValue
    writeUint(e, c.inc)
    writeUint(e, c.dec)
  },
  read(d) {
    const c: CounterValue = { inc: readUint(d), dec: readUint(d) }
    return c
  },
  value(s) {
    if (s?.kind !== 'fun') return 0
    // Exact while every partial sum is (then the order entries arrived in cannot matter); else summed
    // as BigInt: doubles past 2^53 round differently depending on the order of the additions.
    let n = 0
    let exact = true
    for (const e of s.entries.values()) {
      n += (e.value as CounterValue).inc - (e.value as CounterValue).dec
      if (!Number.isSafeInteger(n)) exact = false
    }
    if (exact) return n
    let big = 0n
    for (const e of s.entries.values()) big += BigInt((e.value as CounterValue).inc) - BigInt((e.value as CounterValue).dec)
    return Number(big)
  },
}

// ---------------------------------------------------------------- maps

/** Reads a canonical JSON element key: must parse and re-canonicalise to itself. */
function readElementKey(d: Decoder): string {
  const k = readString(d)
  let v: unknown
  try {
    v = JSON.parse(k)
  } catch (e) {
    throw new DecodeError('or-set element is not JSON', { cause: e })
  }
  // As strict as a local add: an element holding a lone surrogate (JSON text can spell one in
  // valid UTF-8) could never be passed to has() or remove().
  checkJson(v, 0, true)
  if (canonicalJson(v) !== k) throw new DecodeError('or-set element is not canonical JSON')
  return k
}

/** Add-wins observed-remove set: canonical JSON element → DotSet-store. */
export const ORSET: MapSchema = {
  kind: 'map',
  type: 'or-set',
  child: () => ELEMENT,
  writeKey: (e, k) => writeString(e, k),
  readKey: readElementKey,
  label: (k) => k,
  removal(key, _child, surviving, removed, path, typeName) {
    const value = JSON.parse(key) as Json
    const [w] = surviving.slice().sort(compareDots)
    const dot = w as Dot
    return {
      kind: 'add-wins',
      typeName,
      path,
      winner: { value, replica: dot.replica, dot: eventDot(dot) },
      losers: removed
        .slice()
        .sort(compareDots)
        .map((r) => ({ value, replica: r.replica, dot: eventDot(r) })),
    }
  },
  value(s) {
    if (s === undefined) return []
    return [...s.entries.keys()].sort().map((k) => JSON.parse(k) as Json)
  },
}

/** Map of string keys to LWW registers; deletions are LWW writes without a value. */
export const LWWMAP: MapSchema = {
  kind: 'map',
  type: 'lww-map',
  child: () => LWW,
  writeKey: (e, k) => writeString(e, k),
  readKey: (d) => readString(d),
  label: (k) => k,
  value(s) {
    const out: Record<string, Json> = {}
    if (s === undefined || s.kind !== 'map') return out
    for (const k of [...s.entries.keys()].sort()) {
      const v = LWW.value(s.entries.get(k)) as Json | undefined
      if (v !== undefined) Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true })
    }
    return out
  },
}

/** Schema of a field type nested in an OrMap. */
export function schemaOf(type: CausalTypeName): Schema {
  switch (type) {
    case 'lww-register':
      return LWW
    case 'mv-register':
      return MV
    case 'pn-counter':
      return COUNTER
    case 'or-set':
      return ORSET
    case 'lww-map':
      return LWWMAP
    case 'or-map':
      return ORMAP
  }
}

/** Internal key of an OrMap field: the type's code digit, ':', the field name. */
export function fieldKey(type: CausalTypeName, name: string): string {
  return `${TYPE_CODES[type]}:${name}`
}

/** Splits a field key into (type, name), or undefined when malformed. */
export function parseFieldKey(key: string): { type: CausalTypeName; name: string } | undefined {
  const type = CODE_NAMES.get(key.charCodeAt(0) - 48)
  if (type === undefined || key[1] !== ':') return undefined
  return { type, name: key.slice(2) }
}

/** Nested CRDTs by (name, type), sharing the map's context; update wins over a concurrent remove. */
export const ORMAP: MapSchema = {
  kind: 'map',
  type: 'or-map',
  child(k) {
    const f = parseFieldKey(k)
    return f === undefined ? undefined : schemaOf(f.type)
  },
  writeKey(e, k) {
    const f = parseFieldKey(k) as { type: CausalTypeName; name: string }
    writeByte(e, TYPE_CODES[f.type])
    writeString(e, f.name)
  },
  readKey(d) {
    const type = CODE_NAMES.get(readByte(d))
    if (type === undefined) throw new DecodeError('or-map: unknown field type')
    return fieldKey(type, readString(d))
  },
  label: (k) => parseFieldKey(k)?.name ?? k,
  removal(key, child, surviving, removed, path, typeName) {
    const schema = ORMAP.child(key) as Schema
    const [w] = surviving.slice().sort(compareDots)
    const dot = w as Dot
    return {
      kind: 'update-wins',
      typeName,
      path,
      winner: { value: schema.value(child), replica: dot.replica, dot: eventDot(dot) },
      losers: removed
        .slice()
        .sort(compareDots)
        .map((r) => ({ value: undefined, replica: r.replica, dot: eventDot(r) })),
    }
  },
  value(s) {
    const out: Record<string, unknown> = {}
    if (s === undefined || s.kind !== 'map') return out
    const keys = [...s.entries.keys()].sort()
    const names = new Map<string, number>()
    for (const k of keys) {
      const n = parseFieldKey(k)?.name ?? k
      names.set(n, (names.get(n) ?? 0) + 1)
    }
    for (const k of keys) {
      const f = parseFieldKey(k)
      if (f === undefined) continue
      // A name used with two types (concurrently) shows both, qualified by type.
      const label = (names.get(f.name) ?? 0) > 1 ? `${f.name}:${f.type}` : f.name
      Object.defineProperty(out, label, { value: schemaOf(f.type).value(s.entries.get(k)), enumerable: true, writable: true, configurable: true })
    }
    return out
  },
}
