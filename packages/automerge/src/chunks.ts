/**
 * Framing of Automerge's binary chunks, checked before any byte reaches the document.
 * Every chunk starts with the magic bytes 85 6f 4a 83, a 4-byte checksum, a type byte
 * (0 document, 1 change, 2 compressed change) and a LEB128 body length; chunks concatenate.
 * The checksum is the first 4 bytes of the SHA-256 of everything after it (type, length, body).
 */
import { createHash } from 'node:crypto'
import { inflateRawSync } from 'node:zlib'
import { DecodeError } from '@concord/core'

/** Chunk type of a whole saved document (`Automerge.save`). */
export const CHUNK_DOCUMENT = 0
/** Chunk type of one change. */
export const CHUNK_CHANGE = 1
/** Chunk type of one deflate-compressed change. */
export const CHUNK_COMPRESSED_CHANGE = 2

const MAGIC = [0x85, 0x6f, 0x4a, 0x83] as const
const HEADER_FIXED = 9

/** One chunk: its type and its bytes (header included). */
export interface Chunk {
  readonly type: number
  readonly bytes: Uint8Array
  /** The bytes after the header. */
  readonly body: Uint8Array
}

/** The LEB128 number at `data[at]` and the position after it; undefined when truncated or longer than 8 bytes. */
function readUleb(data: Uint8Array, at: number): [value: number, next: number] | undefined {
  let p = at
  let value = 0
  let mult = 1
  for (;;) {
    if (p >= data.length) return undefined
    const b = data[p++] as number
    value += (b & 0x7f) * mult
    if (b < 0x80) return [value, p]
    mult *= 128
    if (mult > 2 ** 49) return undefined
  }
}

/** Splits concatenated chunks; throws DecodeError on a bad magic, an unknown type or truncation. */
export function splitChunks(data: Uint8Array): Chunk[] {
  const out: Chunk[] = []
  let pos = 0
  while (pos < data.length) {
    if (data.length - pos < HEADER_FIXED + 1) throw new DecodeError(`automerge: truncated chunk header at byte ${pos}`)
    for (let i = 0; i < 4; i++) if (data[pos + i] !== MAGIC[i]) throw new DecodeError(`automerge: bad magic at byte ${pos}`)
    const type = data[pos + 8] as number
    if (type !== CHUNK_DOCUMENT && type !== CHUNK_CHANGE && type !== CHUNK_COMPRESSED_CHANGE) {
      throw new DecodeError(`automerge: unknown chunk type ${type}`)
    }
    const read = readUleb(data, pos + HEADER_FIXED)
    if (read === undefined) throw new DecodeError('automerge: chunk length truncated or out of range')
    const [len, p] = read
    const end = p + len
    if (end > data.length) throw new DecodeError(`automerge: chunk of ${len} bytes exceeds the ${data.length - p} left`)
    // Automerge applies a change whose checksum is wrong: a damaged chunk is refused here.
    const sum = createHash('sha256').update(data.subarray(pos + 8, end)).digest()
    for (let i = 0; i < 4; i++) if (sum[i] !== data[pos + 4 + i]) throw new DecodeError(`automerge: chunk checksum mismatch at byte ${pos}`)
    out.push({ type, bytes: data.subarray(pos, end), body: data.subarray(p, end) })
    pos = end
  }
  return out
}

/** The signed LEB128 number at `data[at]` and the position after it; undefined when truncated or longer than 7 bytes. */
function readSleb(data: Uint8Array, at: number): [value: number, next: number] | undefined {
  let p = at
  let value = 0
  let mult = 1
  for (;;) {
    if (p >= data.length || mult > 2 ** 42) return undefined
    const b = data[p++] as number
    value += (b & 0x7f) * mult
    mult *= 128
    if (b < 0x80) return [b & 0x40 ? value - mult : value, p]
  }
}

/** Column spec of a change's op actions (column 4, unsigned LEB128 run-length encoded, not deflated). */
const ACTION_COLUMN = 0x42
/** Automerge's action numbers of makeMap, makeList, makeText and makeTable. */
const MAKE_ACTIONS: ReadonlySet<number> = new Set([0, 2, 4, 6])

/**
 * Whether the change chunk `change` (one chunk of type 1, checked) may create objects: false only
 * when its action column, read from the bytes, holds no make action. Decoding a change costs a
 * quarter of a small edit, and only a change that creates objects can nest them deeper (see
 * checkNesting): the edits of a text editing trace are not decoded. True whenever the layout is
 * not the one expected (deps, actor, seq, start op, time, message, other actors, column metadata,
 * column data).
 */
export function mayMakeObjects(change: Uint8Array): boolean {
  const layout = changeLayout(change)
  if (layout === undefined) return true
  let dataAt = 0
  let action: [start: number, end: number] | undefined
  for (const { spec, len } of layout.specs) {
    if ((spec & ~0x08) === ACTION_COLUMN) {
      if (spec !== ACTION_COLUMN) return true
      action = [dataAt, dataAt + len]
    }
    dataAt += len
  }
  if (action === undefined) return true
  // Within the chunk: changeLayout checked that the columns fit.
  let q = layout.dataAt + action[0]
  const end = layout.dataAt + action[1]
  while (q < end) {
    const run = readSleb(change, q)
    if (run === undefined) return true
    q = run[1]
    const count = run[0]
    // A run: count > 0 repeats one value, count < 0 gives -count values, 0 is a run of nulls.
    for (let i = 0; i < (count > 0 ? 1 : count < 0 ? -count : 1); i++) {
      const v = readUleb(change, q)
      if (v === undefined) return true
      q = v[1]
      if (count !== 0 && MAKE_ACTIONS.has(v[0])) return true
    }
  }
  return q !== end
}

/**
 * Most op rows one change may hold (2^18 = 262,144). Automerge's columns are run-length encoded: a
 * 53-byte change whose columns each held one run of 2^20 rows took 6 s and 660 MB to apply (and
 * was applied), one of 2^23 rows 49 s and 5 GB before Automerge gave up (review finding). An
 * honest change of this many ops is a paste or a deletion of more than 262,144 characters in one
 * change (deleting 200,000 took 2.2 s to apply): refused as a received change, and refused to the
 * local writer alike (AutomergeReplica.change), so no region holds what the others refuse.
 */
export const MAX_CHANGE_OPS = 2 ** 18

/** Rows of a column's run-length encoded data (`values` reads one value); undefined when it does not read as such. */
function rleRows(data: Uint8Array, from: number, to: number, values: (at: number) => number | undefined): number | undefined {
  let rows = 0
  let q = from
  while (q < to) {
    const run = readSleb(data, q)
    if (run === undefined) return undefined
    q = run[1]
    const count = run[0]
    if (count === 0) {
      // A run of nulls: its length.
      const nulls = readUleb(data, q)
      if (nulls === undefined) return undefined
      q = nulls[1]
      rows += nulls[0]
    } else {
      for (let i = 0; i < (count > 0 ? 1 : -count); i++) {
        const next = values(q)
        if (next === undefined || next > to) return undefined
        q = next
      }
      rows += Math.abs(count)
    }
  }
  return q === to ? rows : undefined
}

/** Where a change chunk's columns are: the position of their count, their specs and lengths, and where their data starts. */
interface ChangeLayout {
  readonly columnsAt: number
  readonly specs: ReadonlyArray<{ readonly spec: number; readonly len: number }>
  readonly dataAt: number
  /** The chunk's end (its header's length field). */
  readonly end: number
}

/**
 * The columns of the change chunk `change` (type 1): after deps, actor, seq, start op, time,
 * message and other actors; undefined when the layout is not the one expected.
 */
function changeLayout(change: Uint8Array): ChangeLayout | undefined {
  if (change[8] !== CHUNK_CHANGE) return undefined
  const length = readUleb(change, HEADER_FIXED)
  if (length === undefined) return undefined
  let p = length[1]
  const end = p + length[0]
  const uleb = (): number | undefined => {
    const read = readUleb(change, p)
    if (read === undefined) return undefined
    p = read[1]
    return read[0]
  }
  const deps = uleb()
  if (deps === undefined) return undefined
  p += 32 * deps
  const actorLen = uleb()
  if (actorLen === undefined) return undefined
  p += actorLen
  for (let i = 0; i < 3; i++) if (uleb() === undefined) return undefined
  const messageLen = uleb()
  if (messageLen === undefined) return undefined
  p += messageLen
  const others = uleb()
  if (others === undefined || others > change.length) return undefined
  for (let i = 0; i < others; i++) {
    const len = uleb()
    if (len === undefined) return undefined
    p += len
  }
  const columnsAt = p
  const count = uleb()
  if (count === undefined || count > change.length) return undefined
  const specs: Array<{ spec: number; len: number }> = []
  let total = 0
  for (let i = 0; i < count; i++) {
    const spec = uleb()
    const len = uleb()
    if (spec === undefined || len === undefined) return undefined
    specs.push({ spec, len })
    total += len
  }
  if (p + total > end || end > change.length) return undefined
  return { columnsAt, specs, dataAt: p, end }
}

/** Column specs of a change's value metadata and raw values (column 5, types 6 and 7). */
const VALUE_META_COLUMN = 0x56
const VALUE_RAW_COLUMN = 0x57

/**
 * The change chunk `change` with every op's value made null (its value columns replaced), else the
 * same: what Automerge's JS change form can read when the values are what it cannot (integers past
 * 2^53...), for the structure checks (see checkNesting). Undefined when the layout is not the one
 * expected.
 */
export function withNullValues(change: Uint8Array): Uint8Array | undefined {
  const layout = changeLayout(change)
  if (layout === undefined) return undefined
  let at = layout.dataAt
  let actions: number | undefined
  for (const { spec, len } of layout.specs) {
    if (spec === ACTION_COLUMN) actions = rleRows(change, at, at + len, (q) => readUleb(change, q)?.[1])
    at += len
  }
  if (actions === undefined) return undefined
  // One run of `actions` metadata values 0 (null, no bytes): a signed run length, then the value.
  const nullMeta = actions === 0 ? [] : [...sleb(actions), 0]
  const specs: number[] = []
  const data: Uint8Array[] = []
  at = layout.dataAt
  for (const { spec, len } of layout.specs) {
    const column = spec === VALUE_META_COLUMN ? Uint8Array.from(nullMeta) : spec === VALUE_RAW_COLUMN ? new Uint8Array(0) : change.subarray(at, at + len)
    specs.push(...uleb(spec), ...uleb(column.length))
    data.push(column)
    at += len
  }
  const head = readUleb(change, HEADER_FIXED) as [number, number]
  return changeChunk(concatBytes([change.subarray(head[1], layout.columnsAt), Uint8Array.from([...uleb(layout.specs.length), ...specs]), ...data, change.subarray(at, layout.end)]))
}

function sleb(n: number): number[] {
  const out: number[] = []
  for (;;) {
    const b = n & 0x7f
    n = Math.floor(n / 128)
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b)
      return out
    }
    out.push(b | 0x80)
  }
}

/**
 * The most rows any column of the change chunk `change` (type 1) holds, read from its column data
 * without expanding a run: the ops (and their nested pred entries) Automerge would materialize.
 * Undefined when the layout is not the one expected (left to Automerge's own parser).
 */
export function changeRows(change: Uint8Array): number | undefined {
  const layout = changeLayout(change)
  if (layout === undefined) return undefined
  let p = layout.dataAt
  const uValue = (at: number): number | undefined => readUleb(change, at)?.[1]
  const sValue = (at: number): number | undefined => readSleb(change, at)?.[1]
  const strValue = (at: number): number | undefined => {
    const n = readUleb(change, at)
    return n === undefined ? undefined : n[1] + n[0]
  }
  let most = 0
  for (const { spec, len } of layout.specs) {
    const from = p
    const to = p + len
    p = to
    // Deflated columns in a change Automerge refuses itself.
    if ((spec & 0x08) !== 0) return undefined
    const type = spec & 0x07
    let rows: number | undefined
    if (type === 7) continue
    if (type === 4) {
      // Booleans: run lengths, alternately false and true.
      rows = 0
      for (let q = from; q < to; ) {
        const run = readUleb(change, q)
        if (run === undefined) return undefined
        q = run[1]
        rows += run[0]
      }
    } else rows = rleRows(change, from, to, type === 3 ? sValue : type === 5 ? strValue : uValue)
    if (rows === undefined) return undefined
    if (rows > most) most = rows
  }
  return most
}

/** Throws DecodeError when the change chunk `change` holds more than {@link MAX_CHANGE_OPS} op rows (see changeRows). */
export function checkChangeRows(change: Uint8Array): void {
  const rows = changeRows(change)
  if (rows !== undefined && rows > MAX_CHANGE_OPS) throw new DecodeError(`automerge: a change of ${rows} ops (more than ${MAX_CHANGE_OPS} in one change; its columns run-length encode them in ${change.length} bytes)`)
}

/**
 * Largest change a compressed change chunk may inflate to (8 MiB, an envelope's largest payload).
 * Automerge inflates such a chunk without a bound, and deflate shrinks a run of one byte about
 * 1000 times: a chunk of a few hundred KB made a change of gigabytes, and the process died.
 * Automerge itself writes changes uncompressed; another implementation's compressed change of this
 * size is large for any log.
 */
export const MAX_INFLATED_CHANGE_BYTES = 8 * 1024 * 1024

/**
 * Checks that a compressed change chunk's body (raw deflate) inflates to at most
 * {@link MAX_INFLATED_CHANGE_BYTES}; throws DecodeError otherwise. A body that does not inflate is
 * left to Automerge's own parser.
 */
export function checkInflatedSize(chunk: Chunk): void {
  if (inflatedLength(chunk.body, MAX_INFLATED_CHANGE_BYTES) === 'past') {
    throw new DecodeError(`automerge: a compressed change inflates past ${MAX_INFLATED_CHANGE_BYTES} bytes`)
  }
}

/** Bytes raw-deflated `data` inflates to, inflating at most `max`: 'past' beyond that, undefined when it does not inflate. */
function inflatedLength(data: Uint8Array, max: number): number | 'past' | undefined {
  try {
    return inflateRawSync(data, { maxOutputLength: max }).length
  } catch (e) {
    return (e as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE' ? 'past' : undefined
  }
}

/**
 * Largest total a document chunk's compressed columns may inflate to (128 MiB). Automerge's save()
 * deflates each column past 256 bytes, and load() inflates them without a bound: a hostile
 * document chunk (a delta any peer may send) could make gigabytes of a few hundred KB.
 */
export const MAX_INFLATED_DOCUMENT_BYTES = 128 * 1024 * 1024

/**
 * Checks that a document chunk's compressed columns inflate to at most
 * {@link MAX_INFLATED_DOCUMENT_BYTES} together; throws DecodeError otherwise. A body whose layout
 * does not read as a document's (or a column that does not inflate) is left to Automerge's parser.
 */
export function checkDocumentInflatedSize(chunk: Chunk): void {
  const columns = compressedColumns(chunk.body)
  if (columns === undefined) return
  let left = MAX_INFLATED_DOCUMENT_BYTES
  for (const column of columns) {
    const n = inflatedLength(column, Math.max(1, left))
    if (n === 'past') throw new DecodeError(`automerge: a document chunk's columns inflate past ${MAX_INFLATED_DOCUMENT_BYTES} bytes`)
    if (n === undefined) return
    left -= n
  }
}

/**
 * The deflated column data of a document chunk's body (actors, heads, change and op column
 * metadata, then the column data; a column spec with bit 3 set is deflated), or undefined when
 * the body does not read that way.
 */
function compressedColumns(body: Uint8Array): Uint8Array[] | undefined {
  let p = 0
  const uleb = (): number | undefined => {
    const read = readUleb(body, p)
    if (read === undefined) return undefined
    p = read[1]
    return read[0]
  }
  const actors = uleb()
  if (actors === undefined) return undefined
  for (let i = 0; i < actors; i++) {
    const len = uleb()
    if (len === undefined || p + len > body.length) return undefined
    p += len
  }
  const heads = uleb()
  if (heads === undefined || p + 32 * heads > body.length) return undefined
  p += 32 * heads
  const specs: Array<{ deflated: boolean; len: number }> = []
  for (let group = 0; group < 2; group++) {
    const n = uleb()
    if (n === undefined || n > body.length) return undefined
    for (let i = 0; i < n; i++) {
      const spec = uleb()
      const len = uleb()
      if (spec === undefined || len === undefined) return undefined
      specs.push({ deflated: (spec & 0x08) !== 0, len })
    }
  }
  const out: Uint8Array[] = []
  for (const s of specs) {
    if (p + s.len > body.length) return undefined
    if (s.deflated) out.push(body.subarray(p, p + s.len))
    p += s.len
  }
  return out
}

/** Concatenates byte arrays. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0] as Uint8Array
  let n = 0
  for (const p of parts) n += p.length
  const out = new Uint8Array(n)
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

/**
 * The hash Automerge gives a change chunk (type 1): the SHA-256 of everything after its checksum
 * (type, length, body), in hex. Read from the bytes: `Automerge.decodeChange(c).hash` needs the
 * change's JS form, which fails on values it cannot hold (integers past 2^53...).
 */
export function changeHash(change: Uint8Array): string {
  return createHash('sha256').update(change.subarray(8)).digest('hex')
}

function uleb(n: number): number[] {
  const out: number[] = []
  for (;;) {
    const b = n % 128
    n = Math.floor(n / 128)
    if (n === 0) {
      out.push(b)
      return out
    }
    out.push(b | 0x80)
  }
}

/**
 * The change chunk (type 1) a compressed change chunk (type 2, checked by {@link checkInflatedSize})
 * stands for: its body inflated, framed with its own checksum. Its hash is the change's.
 */
export function uncompressedChange(chunk: Chunk): Uint8Array {
  let body: Buffer
  try {
    body = inflateRawSync(chunk.body, { maxOutputLength: MAX_INFLATED_CHANGE_BYTES })
  } catch (e) {
    throw new DecodeError('automerge: a compressed change does not inflate', { cause: e })
  }
  return changeChunk(body)
}

/** A change chunk (type 1) of `body`: magic, checksum (of type, length and body), type, length, body. */
function changeChunk(body: Uint8Array): Uint8Array {
  const hashed = Uint8Array.from([CHUNK_CHANGE, ...uleb(body.length)])
  const sum = createHash('sha256').update(hashed).update(body).digest()
  return concatBytes([Uint8Array.from(MAGIC), sum.subarray(0, 4), hashed, body])
}
