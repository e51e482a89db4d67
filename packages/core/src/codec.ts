/**
 * Binary encoding helpers over lib0's varint encoder (the codec Yjs uses). Decoding untrusted
 * bytes goes through {@link decodeWith}, which turns every failure into a {@link DecodeError}
 * and enforces limits, so a hostile length prefix cannot allocate gigabytes.
 */
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { ConfigError, DecodeError, describeThrown, isConcordError } from './errors.js'

export type Encoder = encoding.Encoder
export type Decoder = decoding.Decoder

/** Largest string or byte array a decoder accepts in one field (16 MiB). */
export const MAX_FIELD_BYTES = 16 * 1024 * 1024
/** Largest element count a decoder accepts for one collection. */
export const MAX_COLLECTION = 10_000_000

// Idle encoders for reuse: a fresh lib0 Encoder allocates a 100-byte ArrayBuffer, which showed as
// the top self-time entry on the replication hot path. A stack (not a single encoder) because
// encodeWith nests (an envelope body encodes a version inside it).
const idleEncoders: Encoder[] = []
const MAX_IDLE_ENCODERS = 8
// An encoder that grew past this is dropped rather than pooled, so a rare huge state does not pin memory.
const MAX_POOLED_BUFFER = 64 * 1024

/** Encodes with `fn` and returns the bytes (a fresh array the caller owns). */
export function encodeWith(fn: (e: Encoder) => void): Uint8Array {
  const e = takeEncoder()
  try {
    fn(e)
    return encoderBytes(e)
  } finally {
    releaseEncoder(e)
  }
}

/**
 * An empty encoder from the pool, for hot paths that would otherwise allocate a closure for
 * {@link encodeWith}: take, write, {@link encoderBytes}, and {@link releaseEncoder} in a `finally`.
 */
export function takeEncoder(): Encoder {
  return idleEncoders.pop() ?? encoding.createEncoder()
}

/** What `e` holds, as a fresh array the caller owns. */
export function encoderBytes(e: Encoder): Uint8Array {
  // The common case (everything in the current buffer) copies once, without lib0's extra view.
  return e.bufs.length === 0 ? e.cbuf.slice(0, e.cpos) : encoding.toUint8Array(e)
}

/**
 * {@link encoderBytes} for a result its caller hands on and drops (an envelope on its way to the
 * log): past 64 bytes (ON_HEAP_MAX) and up to 1 KiB, copied into a shared slab ({@link slabCopy}),
 * which saves a backing-store allocation per result; one kept alive keeps its slab. Results that
 * may be kept long (states, versions, deltas handed to listeners, store values) take
 * {@link encoderBytes}: a slab pinned by one kept result is memory lost.
 */
export function encoderSlabBytes(e: Encoder): Uint8Array {
  const n = e.cpos
  return e.bufs.length === 0 && n > ON_HEAP_MAX && n <= SLAB_COPY_MAX ? slabCopy(e.cbuf, n) : encoderBytes(e)
}

/** V8 keeps typed arrays up to this size inside the JS heap: allocating one is cheap. */
const ON_HEAP_MAX = 64
/** Copies up to this size are carved out of shared slabs by {@link slabCopy}; larger ones sliced. */
const SLAB_COPY_MAX = 1024
const SLAB_BYTES = 8 * 1024
let slab: ArrayBuffer | undefined
let slabUsed = 0

/**
 * A copy of the first `n` bytes of `src` (all by default), in a shared 8 KiB slab when at most
 * 1 KiB, as Node's Buffer pool does. Any other small array costs a backing store of its own, an
 * allocation that takes many times longer than copying a few hundred bytes: a typed array past 64
 * bytes (ON_HEAP_MAX) gets one outside the JS heap when made; one of at most 64 bytes lives inside
 * the heap and gets one the first time anyone takes a view of it (`subarray`, `.buffer`). A slab
 * pays that once for many copies. The copy is the caller's to keep; one kept alive keeps its slab.
 */
export function slabCopy(src: Uint8Array, n: number = src.byteLength): Uint8Array {
  // A count that is not a whole number within src is refused: NaN made the slab's fill level NaN,
  // so every later copy (every envelope) was carved at offset 0 of one slab, over the others; past
  // src's end, the copy held whatever the slab held there (another copy's bytes).
  if (!(Number.isInteger(n) && n >= 0 && n <= src.byteLength)) throw new ConfigError(`slabCopy: n must be a whole number of bytes from 0 to ${src.byteLength}, got ${String(n)}`)
  if (n > SLAB_COPY_MAX) return src.slice(0, n)
  if (slab === undefined || slabUsed + n > SLAB_BYTES) {
    slab = new ArrayBuffer(SLAB_BYTES)
    slabUsed = 0
  }
  const out = new Uint8Array(slab, slabUsed, n)
  out.set(n === src.byteLength ? src : src.subarray(0, n))
  slabUsed += n
  return out
}

/** Arrays up to this size are copied by {@link toBuffer}, larger ones wrapped. */
const COPY_TO_BUFFER_MAX = 512

/**
 * `bytes` as a Node Buffer for a client library (kafkajs, ioredis). A small array is copied into
 * Node's pooled slab: V8 keeps small typed arrays (an envelope, a delta) inside the JS heap, and
 * wrapping one (`bytes.buffer`) would first move it to a separately allocated backing store, which
 * costs far more than the copy. A larger array is wrapped without copying.
 */
export function toBuffer(bytes: Uint8Array): Buffer {
  if (Buffer.isBuffer(bytes)) return bytes
  return bytes.byteLength <= COPY_TO_BUFFER_MAX ? Buffer.from(bytes) : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

/** Gives a {@link takeEncoder} encoder back (emptied) to the pool. */
export function releaseEncoder(e: Encoder): void {
  e.cpos = 0
  if (e.bufs.length > 0) e.bufs = []
  if (e.cbuf.length <= MAX_POOLED_BUFFER && idleEncoders.length < MAX_IDLE_ENCODERS) idleEncoders.push(e)
}

/**
 * Decodes `bytes` with `fn`; any error becomes a DecodeError naming `what`. Trailing bytes are
 * rejected: a valid message is consumed exactly.
 */
export function decodeWith<T>(what: string, bytes: Uint8Array, fn: (d: Decoder) => T): T {
  if (!(bytes instanceof Uint8Array)) throw new DecodeError(`${what}: expected a Uint8Array`)
  const d = decoding.createDecoder(bytes)
  let out: T
  try {
    out = fn(d)
  } catch (e) {
    if (isConcordError(e)) throw e
    throw new DecodeError(`${what}: ${e instanceof Error ? e.message : describeThrown(e)}`, { cause: e })
  }
  if (d.pos !== bytes.length) throw new DecodeError(`${what}: ${bytes.length - d.pos} trailing bytes`)
  return out
}

/**
 * @throws ConfigError for a number that is not a safe integer >= 0: lib0 would write another one
 *   (-1 as 127, 1.5 as 1, NaN as 0) or, for Infinity, loop forever.
 */
export function writeUint(e: Encoder, n: number): void {
  if (!(Number.isSafeInteger(n) && n >= 0)) throw new ConfigError(`writeUint: ${String(n)} is not a safe integer >= 0`)
  encoding.writeVarUint(e, n)
}
/** @throws ConfigError for a number that is not a safe integer (see {@link writeUint}). */
export function writeInt(e: Encoder, n: number): void {
  if (!Number.isSafeInteger(n)) throw new ConfigError(`writeInt: ${String(n)} is not a safe integer`)
  encoding.writeVarInt(e, n)
}
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/**
 * Whether `s` is well-formed UTF-16 (no lone surrogate). A lone surrogate has no UTF-8 form: the
 * encoder writes U+FFFD instead, so the string another region decodes is not the one written.
 */
export function isWellFormed(s: string): boolean {
  return !LONE_SURROGATE.test(s)
}

/** @throws TypeError for a string that is not well-formed UTF-16 (see {@link isWellFormed}): it would arrive changed. */
export function writeString(e: Encoder, s: string): void {
  const n = s.length
  // Short ASCII (ids, type names) fitting the current buffer: copy the char codes, skipping the
  // native UTF-8 encoder call. Same bytes as lib0's writeVarString (length < 128 is one byte).
  if (n <= SHORT_STRING && e.cbuf.length - e.cpos > n) {
    let i = 0
    while (i < n && s.charCodeAt(i) < 0x80) i++
    if (i === n) {
      const buf = e.cbuf
      let pos = e.cpos
      buf[pos++] = n
      for (let j = 0; j < n; j++) buf[pos++] = s.charCodeAt(j)
      e.cpos = pos
      return
    }
  }
  if (!isWellFormed(s)) throw new TypeError(`string ${JSON.stringify(s.slice(0, 40))} is not well-formed UTF-16 (a lone surrogate): it has no UTF-8 form and would arrive changed`)
  encoding.writeVarString(e, s)
}
export function writeBytes(e: Encoder, b: Uint8Array): void {
  encoding.writeVarUint(e, b.length)
  // Fast path when the bytes fit the current buffer: lib0 would allocate a subarray view first.
  if (e.cbuf.length - e.cpos >= b.length) {
    e.cbuf.set(b, e.cpos)
    e.cpos += b.length
  } else encoding.writeUint8Array(e, b)
}
export function writeFloat(e: Encoder, n: number): void {
  encoding.writeFloat64(e, n)
}
export function writeByte(e: Encoder, n: number): void {
  encoding.writeUint8(e, n)
}

function fail(msg: string): never {
  throw new DecodeError(msg)
}

/**
 * Reads a varuint that must be a safe integer no larger than `max`, in its shortest form: a last
 * byte 0 after others (`81 00` for 1) is refused, so that one number has one encoding and two
 * byte strings never decode to the same message.
 */
export function readUint(d: Decoder, max = Number.MAX_SAFE_INTEGER): number {
  const at = d.pos
  if (at >= d.arr.length) fail('unexpected end of data')
  const n = decoding.readVarUint(d)
  if (!Number.isSafeInteger(n) || n < 0 || n > max) fail(`integer ${n} out of range (max ${max})`)
  if (d.pos - at > 1 && d.arr[d.pos - 1] === 0) fail('integer not in its shortest form')
  return n
}
/** Reads a signed varint, in its shortest form (as {@link readUint}). */
export function readInt(d: Decoder): number {
  const at = d.pos
  if (at >= d.arr.length) fail('unexpected end of data')
  const n = decoding.readVarInt(d)
  if (!Number.isSafeInteger(n)) fail(`integer ${n} out of range`)
  if (d.pos - at > 1 && d.arr[d.pos - 1] === 0) fail('integer not in its shortest form')
  return n
}
export function readByte(d: Decoder): number {
  if (d.pos >= d.arr.length) fail('unexpected end of data')
  return decoding.readUint8(d)
}
export function readFloat(d: Decoder): number {
  if (d.pos + 8 > d.arr.length) fail('unexpected end of data')
  return decoding.readFloat64(d)
}
/** Reads a length, checking it against both `max` and the bytes actually left. */
export function readLength(d: Decoder, max: number, minBytesPerItem = 1): number {
  const n = readUint(d, max)
  if (n * minBytesPerItem > d.arr.length - d.pos) fail(`length ${n} exceeds remaining ${d.arr.length - d.pos} bytes`)
  return n
}
/** The zero-length result of {@link readBytes}: shared, as nothing can be written into it. */
const NO_BYTES = new Uint8Array(0)
export function readBytes(d: Decoder, max = MAX_FIELD_BYTES): Uint8Array {
  const n = readLength(d, max)
  if (n === 0) return NO_BYTES
  const out = d.arr.subarray(d.pos, d.pos + n)
  d.pos += n
  return out
}
// One decoder for all reads: non-streaming decode() keeps no state between calls.
// ignoreBOM: a leading U+FEFF is part of the string (the default strips it: "\uFEFFa" came back "a").
const utf8Fatal = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })
/** Strings up to this many bytes take the ASCII fast paths of readString and writeString. */
const SHORT_STRING = 64
// Recently decoded short ASCII strings by a hash of their bytes: the same writer ids, region and
// type names and document ids come back in every envelope, and a hit allocates nothing. A slot
// is checked byte by byte before use, so a collision only costs a miss.
const INTERN_SLOTS = 4096
const interned: (string | undefined)[] = new Array<string | undefined>(INTERN_SLOTS).fill(undefined)
export function readString(d: Decoder, max = MAX_FIELD_BYTES): string {
  const n = readLength(d, max)
  const arr = d.arr
  const start = d.pos
  const end = start + n
  if (n <= SHORT_STRING) {
    let h = n
    let i = start
    for (; i < end; i++) {
      const c = arr[i] as number
      if (c >= 0x80) break
      h = Math.imul(h ^ c, 16777619)
    }
    // ASCII is valid UTF-8: the result is the same as the fatal decoder's.
    if (i === end) {
      const slot = (h >>> 0) & (INTERN_SLOTS - 1)
      const hit = interned[slot]
      d.pos = end
      if (hit !== undefined && hit.length === n) {
        let j = 0
        while (j < n && hit.charCodeAt(j) === arr[start + j]) j++
        if (j === n) return hit
      }
      const s = String.fromCharCode.apply(null, arr.subarray(start, end) as unknown as number[])
      interned[slot] = s
      return s
    }
  }
  const b = arr.subarray(start, end)
  d.pos = end
  try {
    return utf8Fatal.decode(b)
  } catch (e) {
    throw new DecodeError('invalid UTF-8 in string', { cause: e })
  }
}

/** JSON-compatible value: what native CRDTs store as values and set elements. */
export type Json = null | boolean | number | string | readonly Json[] | { readonly [key: string]: Json }

const J_NULL = 0, J_FALSE = 1, J_TRUE = 2, J_INT = 3, J_FLOAT = 4, J_STRING = 5, J_ARRAY = 6, J_OBJECT = 7
const MAX_JSON_DEPTH = 64

/** Writes a JSON value in a compact tagged binary form. */
export function writeJson(e: Encoder, v: Json, depth = 0): void {
  if (depth > MAX_JSON_DEPTH) throw new DecodeError('value nests too deeply')
  if (v === null) return writeByte(e, J_NULL)
  switch (typeof v) {
    case 'boolean':
      return writeByte(e, v ? J_TRUE : J_FALSE)
    case 'number':
      if (Number.isSafeInteger(v) && !Object.is(v, -0)) {
        writeByte(e, J_INT)
        return writeInt(e, v)
      }
      writeByte(e, J_FLOAT)
      return writeFloat(e, v)
    case 'string':
      writeByte(e, J_STRING)
      return writeString(e, v)
    case 'object':
      if (Array.isArray(v)) {
        writeByte(e, J_ARRAY)
        writeUint(e, v.length)
        for (const x of v as readonly Json[]) writeJson(e, x, depth + 1)
        return
      } else {
        const keys = Object.keys(v)
        writeByte(e, J_OBJECT)
        writeUint(e, keys.length)
        for (const k of keys) {
          writeString(e, k)
          writeJson(e, (v as { [key: string]: Json })[k] as Json, depth + 1)
        }
        return
      }
    default:
      throw new TypeError(`not a JSON value: ${typeof v}`)
  }
}

/** Reads a value written by {@link writeJson}. */
export function readJson(d: Decoder, depth = 0): Json {
  if (depth > MAX_JSON_DEPTH) fail('value nests too deeply')
  const tag = readByte(d)
  switch (tag) {
    case J_NULL:
      return null
    case J_FALSE:
      return false
    case J_TRUE:
      return true
    case J_INT:
      return readInt(d)
    case J_FLOAT: {
      // NaN and the infinities are no JSON value (assertJson refuses them on write), and
      // canonicalJson writes them as null: a NaN element took the place of a null one.
      const x = readFloat(d)
      if (!Number.isFinite(x)) fail(`non-finite number ${x}`)
      return x
    }
    case J_STRING:
      return readString(d)
    case J_ARRAY: {
      const n = readLength(d, MAX_COLLECTION)
      const out: Json[] = []
      for (let i = 0; i < n; i++) out.push(readJson(d, depth + 1))
      return out
    }
    case J_OBJECT: {
      const n = readLength(d, MAX_COLLECTION, 2)
      const out: { [key: string]: Json } = Object.create(null) as { [key: string]: Json }
      for (let i = 0; i < n; i++) {
        const k = readString(d)
        out[k] = readJson(d, depth + 1)
      }
      return { ...out }
    }
    default:
      return fail(`unknown value tag ${tag}`)
  }
}

/**
 * Canonical string for a JSON value (object keys sorted), used as a map key so that equal
 * values compare equal regardless of key order.
 */
export function canonicalJson(v: Json): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v)
  if (Array.isArray(v)) return `[${(v as readonly Json[]).map(canonicalJson).join(',')}]`
  const o = v as { readonly [key: string]: Json }
  return `{${Object.keys(o)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k] as Json)}`)
    .join(',')}}`
}

/** Throws a TypeError unless `v` is a finite JSON value (no undefined, functions, NaN, cycles). */
export function assertJson(v: unknown, path = 'value', seen: Set<object> = new Set()): asserts v is Json {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new TypeError(`${path} is not a finite number`)
    return
  }
  if (typeof v === 'object') {
    if (seen.has(v)) throw new TypeError(`${path} is cyclic`)
    seen.add(v)
    if (Array.isArray(v)) v.forEach((x, i) => assertJson(x, `${path}[${i}]`, seen))
    else {
      const proto = Object.getPrototypeOf(v) as unknown
      if (proto !== Object.prototype && proto !== null) throw new TypeError(`${path} is not a plain object`)
      for (const [k, x] of Object.entries(v)) assertJson(x, `${path}.${k}`, seen)
    }
    seen.delete(v)
    return
  }
  throw new TypeError(`${path} is not a JSON value (${typeof v})`)
}

/** Byte-wise equality of two arrays. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
