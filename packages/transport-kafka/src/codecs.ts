/**
 * The compression codecs kafkajs leaves out — Snappy, LZ4 and ZSTD; it has GZIP only — registered
 * with kafkajs so that a reader can fetch record batches compressed with them. Concord's own
 * producer never compresses, but the batches a reader fetches need not be its producer's: a topic
 * (or a broker) with `compression.type` snappy, lz4 or zstd recompresses everything it stores, and
 * MirrorMaker 2 and Cluster Linking copies are commonly compressed. Without a codec, kafkajs's
 * consumer crashed on such a batch at every fetch, and the reader's other origins starved with it.
 *
 * Pure JavaScript (snappyjs, lz4js, fzstd): no native build. Every codec refuses, before inflating,
 * a batch that would inflate past {@link MAX_INFLATED_BATCH_BYTES}, and all batches inflated in
 * one turn of the event loop (one fetch response) together past {@link MAX_INFLATED_TURN_BYTES}:
 * decompression bombs are refused instead of allocated. ZSTD frames with a window past 8 MiB, or
 * whose blocks would make fzstd move more than 256 MiB of window, are refused too (fzstd shifts its
 * whole window once per block: a few KB of 1-byte blocks under a 128 MiB window took seconds).
 * A batch of a fetch that a codec refuses or cannot decompress comes out as dead letters for its
 * records (see deadLetters), not as an error that crashed the reader's consumer.
 * Compressing is supported for Snappy only (lz4js writes frames brokers refuse; fzstd has no
 * compressor): a producer configured with LZ4 or ZSTD gets a not-implemented error, as before.
 *
 * GZIP replaces kafkajs's own codec (zlib, as before), which inflated a batch without any limit: a
 * 1 MB gzip batch can hold a gigabyte of zeros, all of it allocated by the reader. It inflates under
 * the same limits as the others.
 */
import { createRequire } from 'node:module'
import { promisify } from 'node:util'
import { gzip as zlibGzip, unzip as zlibUnzip } from 'node:zlib'
import { Decompress as ZstdStream } from 'fzstd'
import { decompress as lz4Decompress } from 'lz4js'
import { compress as snappyCompress, uncompress as snappyUncompress } from 'snappyjs'

/**
 * Largest batch a codec inflates (16 MiB): a Kafka producer's batches are at most its request size
 * (1 MB by default; Concord's at most maxBatchBytes) before compression.
 */
export const MAX_INFLATED_BATCH_BYTES = 16 * 1024 * 1024

/**
 * Most the codecs inflate in one turn of the event loop (256 MiB): kafkajs decodes a whole fetch
 * response (at most 10 MB compressed by default) in one. Room for a 25-fold compression ratio of
 * legitimate records; a bomb's is a thousandfold.
 */
export const MAX_INFLATED_TURN_BYTES = 256 * 1024 * 1024

let turnBytes = 0
let turnReset = false

/** The refusal of {@link charge}. */
class TurnBudgetError extends RangeError {}

/** Charges `bytes` of output to the current turn's budget; throws past it. */
function charge(codec: string, bytes: number): void {
  if (!turnReset) {
    turnReset = true
    setImmediate(() => {
      turnBytes = 0
      turnReset = false
    })
  }
  turnBytes += bytes
  if (turnBytes > MAX_INFLATED_TURN_BYTES) throw new TurnBudgetError(`${codec}: record batches of one fetch inflate past ${MAX_INFLATED_TURN_BYTES} bytes together; refused`)
}

/**
 * The header of the records that stand for a record batch a codec could not decompress (see
 * {@link deadLetters}); its value says why.
 */
export const UNDECODABLE_HEADER = 'concord-undecodable'

/** A record batch's header before its records: base offset to record count (Kafka's magic v2). */
const BATCH_HEADER_BYTES = 61
/** The header's bytes from partitionLeaderEpoch on, which a batch's length counts (the base offset and length fields do not). */
const BATCH_LENGTH_BASE = BATCH_HEADER_BYTES - 12
/** The codecs' ids in a batch's attributes (Kafka's protocol; kafkajs's CompressionTypes). */
const GZIP = 1
const SNAPPY = 2
const LZ4 = 3
const ZSTD = 4
/** A reason in the dead letters' headers is cut to this many characters. */
const MAX_REASON_CHARS = 120

function writeVarint(out: number[], value: number): void {
  // Zigzag, then LEB128: Kafka's signed varints.
  let v = value >= 0 ? value * 2 : -value * 2 - 1
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80)
    v = Math.floor(v / 0x80)
  }
  out.push(v)
}

/** Whether `records` is `count` length-prefixed records, nothing more nor less (what kafkajs goes on to read). */
function framed(records: Buffer, count: number): boolean {
  let at = 0
  for (let i = 0; i < count; i++) {
    let v = 0
    let scale = 1
    for (;;) {
      if (at >= records.length || scale > 2 ** 28) return false
      const b = records[at++] as number
      v += (b & 0x7f) * scale
      scale *= 0x80
      if (b < 0x80) break
    }
    const size = v % 2 === 0 ? v / 2 : -(v + 1) / 2
    if (size < 0 || at + size > records.length) return false
    at += size
  }
  return at === records.length
}

/**
 * The count and last offset delta of the record batch whose compressed records are `payload`, from
 * its header, which lies just before them in the fetch response kafkajs slices `payload` from;
 * undefined when the bytes there are not that batch's header (a length that does not match,
 * another magic or codec, no records): a buffer not from a fetch.
 */
function batchHeader(type: number, payload: Buffer): { count: number; lastOffsetDelta: number } | undefined {
  if (payload.byteOffset < BATCH_HEADER_BYTES) return undefined
  const header = Buffer.from(payload.buffer, payload.byteOffset - BATCH_HEADER_BYTES, BATCH_HEADER_BYTES)
  const lastOffsetDelta = header.readInt32BE(23)
  const count = header.readInt32BE(57)
  if (header.readInt32BE(8) !== BATCH_LENGTH_BASE + payload.length || header.readInt8(16) !== 2 || (header.readInt16BE(21) & 0x7) !== type) return undefined
  if (count < 1 || lastOffsetDelta < count - 1) return undefined
  return { count, lastOffsetDelta }
}

/**
 * What a codec gives kafkajs for a batch it could not decompress (corrupt, or refused as a bomb),
 * or whose records did not come out framed: as many records as the batch holds, at its offsets,
 * each without key or value and with an {@link UNDECODABLE_HEADER} header saying why. kafkajs
 * threw the error out of the whole fetch response instead: the consumer crashed, was started
 * again, fetched the same batch and crashed again, for good, and every other origin of that
 * reader stopped with it (review finding). The transport delivers such records as dead letters
 * (`invalid`) and reads on past them. Undefined when they would not fit the inflated-batch bound.
 */
function deadLetters(batch: { count: number; lastOffsetDelta: number }, reason: string): Buffer | undefined {
  const key = Buffer.from(UNDECODABLE_HEADER)
  const value = Buffer.from(reason.slice(0, MAX_REASON_CHARS))
  const out: number[] = []
  for (let i = 0; i < batch.count; i++) {
    // Attributes, timestamp delta; the offset delta as in a batch of `count` records ending at
    // lastOffsetDelta (a compacted batch's gaps are not known); no key, no value; one header.
    const body: number[] = [0, 0]
    writeVarint(body, i === batch.count - 1 ? batch.lastOffsetDelta : i)
    writeVarint(body, -1)
    writeVarint(body, -1)
    writeVarint(body, 1)
    writeVarint(body, key.length)
    body.push(...key)
    writeVarint(body, value.length)
    body.push(...value)
    writeVarint(out, body.length)
    out.push(...body)
    if (out.length > MAX_INFLATED_BATCH_BYTES) return undefined
  }
  return Buffer.from(out)
}

/**
 * `inflate`d, checked to hold the records the batch's header counts; else the batch's dead
 * letters (see {@link deadLetters}), or the error as before for a buffer not from a fetch. The
 * budget of one turn is not the batch's fault: that refusal stands (the batch may be valid).
 */
async function orDeadLetters(type: number, name: string, payload: Buffer, inflate: () => Buffer | Promise<Buffer>): Promise<Buffer> {
  let out: Buffer
  try {
    out = await inflate()
  } catch (e) {
    const batch = e instanceof TurnBudgetError ? undefined : batchHeader(type, payload)
    const message = e instanceof Error ? e.message : String(e)
    const letters = batch === undefined ? undefined : deadLetters(batch, message.startsWith(name) ? message : `${name}: ${message}`)
    if (letters === undefined) throw e
    return letters
  }
  const batch = batchHeader(type, payload)
  if (batch === undefined || framed(out, batch.count)) return out
  return deadLetters(batch, `${name}: the batch inflated to bytes that are not its ${batch.count} records`) ?? out
}

/** kafkajs's codec interface: `compress` takes its Encoder (`.buffer`), both resolve with a Buffer. */
interface Codec {
  compress(encoder: { buffer: Buffer }): Promise<Buffer>
  decompress(buffer: Buffer): Promise<Buffer>
}

function tooLarge(codec: string): Error {
  return new RangeError(`${codec}: a record batch inflates past ${MAX_INFLATED_BATCH_BYTES} bytes; refused`)
}

/** A codec that only decompresses: producing with it fails as kafkajs's own missing codecs do. */
async function compressUnsupported(name: string): Promise<Buffer> {
  throw new Error(`${name} compression is not implemented by Concord (it decompresses ${name} batches only)`)
}

/** Xerial framing (Java's snappy-java, which Kafka's Java clients and brokers write): magic, version, compat, then length-prefixed blocks. */
const XERIAL_MAGIC = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00])
const XERIAL_HEADER_BYTES = 16

export const snappyCodec: Codec = {
  async compress(encoder) {
    return Buffer.from(snappyCompress(new Uint8Array(encoder.buffer)))
  },
  decompress: (buffer) => orDeadLetters(SNAPPY, 'snappy', buffer, () => inflateSnappy(buffer)),
}

function inflateSnappy(buffer: Buffer): Buffer {
  if (buffer.length < XERIAL_HEADER_BYTES || !buffer.subarray(0, XERIAL_MAGIC.length).equals(XERIAL_MAGIC)) {
    checkSnappy(buffer)
    const out = Buffer.from(snappyUncompress(new Uint8Array(buffer), MAX_INFLATED_BATCH_BYTES))
    charge('snappy', out.length)
    return out
  }
  const parts: Uint8Array[] = []
  let total = 0
  let at = XERIAL_HEADER_BYTES
  while (at < buffer.length) {
    if (at + 4 > buffer.length) throw new RangeError('snappy: a xerial block length is cut short')
    const size = buffer.readUInt32BE(at)
    at += 4
    if (at + size > buffer.length) throw new RangeError('snappy: a xerial block runs past the batch')
    checkSnappy(buffer.subarray(at, at + size))
    const part = snappyUncompress(new Uint8Array(buffer.subarray(at, at + size)), MAX_INFLATED_BATCH_BYTES - total)
    charge('snappy', part.length)
    total += part.length
    parts.push(part)
    at += size
  }
  return Buffer.concat(parts, total)
}

/** The unsigned little-endian number of `n` (1..4) bytes at `at`. */
function readLE(b: Uint8Array, at: number, n: number): number {
  let v = 0
  for (let k = 0; k < n; k++) v += (b[at + k] as number) * 2 ** (8 * k)
  return v
}

/**
 * Walks a raw Snappy stream's elements without copying anything, and refuses one snappyjs would
 * mishandle: snappyjs reads a 4-byte literal length as a signed number, and a negative one moved
 * its read position back by up to 2 GiB, which it then walked a byte at a time (a corrupt 200-byte
 * batch held the thread for 18 s; review finding). A literal must fit in the stream, a copy must
 * reach back into what came before it, and the elements must add up to the declared length.
 * @throws RangeError
 */
function checkSnappy(b: Uint8Array): void {
  let i = 0
  let declared = 0
  for (let shift = 0; ; shift += 7) {
    if (i >= b.length || shift > 28) throw new RangeError('snappy: bad uncompressed length')
    const x = b[i++] as number
    declared += (x & 0x7f) * 2 ** shift
    if (x < 0x80) break
  }
  if (declared > MAX_INFLATED_BATCH_BYTES) throw tooLarge('snappy')
  let out = 0
  while (i < b.length) {
    const tag = b[i++] as number
    let len: number
    if ((tag & 3) === 0) {
      len = (tag >>> 2) + 1
      if (len > 60) {
        const n = len - 60
        if (i + n > b.length) throw new RangeError('snappy: a literal length runs past the stream')
        len = readLE(b, i, n) + 1
        i += n
      }
      if (i + len > b.length) throw new RangeError('snappy: a literal runs past the stream')
      i += len
    } else {
      let offset: number
      if ((tag & 3) === 1) {
        if (i + 1 > b.length) throw new RangeError('snappy: a copy runs past the stream')
        len = ((tag >>> 2) & 7) + 4
        offset = ((tag >>> 5) << 8) + (b[i] as number)
        i += 1
      } else {
        const n = (tag & 3) === 2 ? 2 : 4
        if (i + n > b.length) throw new RangeError('snappy: a copy runs past the stream')
        len = (tag >>> 2) + 1
        offset = readLE(b, i, n)
        i += n
      }
      if (offset === 0 || offset > out) throw new RangeError('snappy: a copy reaches before the start of the output')
    }
    out += len
    if (out > declared) throw new RangeError(`snappy: the stream inflates past its declared length of ${declared}`)
  }
  if (out !== declared) throw new RangeError(`snappy: the stream inflates to ${out} bytes, not its declared ${declared}`)
}

const LZ4_MAGIC = 0x184d2204
/** A frame's largest block by its BD byte's index (4..7). */
const LZ4_BLOCK_MAX = [0, 0, 0, 0, 64 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024]

/**
 * The most an LZ4 frame inflates to, from its block headers (each compressed block at most the
 * frame's block size, a stored one its own size), known before inflating. Not the header's
 * declared content size: lz4js reads that 64-bit field with 32-bit arithmetic, and a frame could
 * declare anything there.
 *
 * Every block is checked first, because lz4js trusts the frame: a block size past the end of the
 * batch made it decode the missing bytes as zeros, one sequence at a time, up to the declared size
 * — a corrupt 207-byte batch whose first block claimed ~1.9 GB held the thread for 99 s (review
 * finding) — and a compressed block's match lengths are copied to the last byte even past its
 * output buffer. So a block must fit in the batch and in the frame's block size, the frame must end
 * with its end mark, and each compressed block's sequences ({@link checkLz4Block}) must stay within
 * the block size: lz4js's work is then bounded by the batch's bound.
 */
function lz4FrameBound(b: Buffer): number {
  if (b.length < 7 || b.readUInt32LE(0) !== LZ4_MAGIC) throw new RangeError('lz4: not an LZ4 frame')
  const flags = b[4] as number
  const maxBlock = LZ4_BLOCK_MAX[((b[5] as number) >> 4) & 7] as number
  if (maxBlock === 0) throw new RangeError('lz4: invalid block size')
  const blockChecksum = (flags & 0x10) !== 0
  let at = 6 + ((flags & 0x08) !== 0 ? 8 : 0) + 1
  let bound = 0
  for (;;) {
    if (at + 4 > b.length) throw new RangeError('lz4: the frame ends without its end mark (a truncated batch)')
    const word = b.readUInt32LE(at)
    at += 4
    if (word === 0) break
    const size = word & 0x7fffffff
    if (size > maxBlock) throw new RangeError(`lz4: a block of ${size} bytes, past the frame's block size of ${maxBlock}`)
    if (at + size + (blockChecksum ? 4 : 0) > b.length) throw new RangeError(`lz4: a block of ${size} bytes runs past the end of the batch`)
    if (word < 0x80000000) checkLz4Block(b, at, at + size, maxBlock)
    bound += word >= 0x80000000 ? size : maxBlock
    if (bound > MAX_INFLATED_BATCH_BYTES) throw tooLarge('lz4')
    at += size + (blockChecksum ? 4 : 0)
  }
  return bound
}

/**
 * Walks the sequences of an LZ4 compressed block (`b[from..to)`) without copying anything: each a
 * token, literals, and (but the last) a match offset and length.
 * @throws RangeError when a sequence runs past the block, an offset is 0, or the output would pass `max`.
 */
function checkLz4Block(b: Buffer, from: number, to: number, max: number): void {
  const at = { i: from }
  let out = 0
  while (at.i < to) {
    const token = b[at.i++] as number
    const literals = lz4Length(b, at, to, token >> 4, 'literal')
    at.i += literals
    out += literals
    if (at.i > to) throw new RangeError('lz4: literals run past their block')
    if (out > max) throw new RangeError(`lz4: a block inflates past the frame's block size of ${max}`)
    // The last sequence ends with its literals.
    if (at.i === to) break
    if (at.i + 2 > to) throw new RangeError('lz4: a match offset runs past its block')
    if ((b[at.i] as number) === 0 && (b[at.i + 1] as number) === 0) throw new RangeError('lz4: a match offset of 0')
    at.i += 2
    out += lz4Length(b, at, to, token & 15, 'match') + 4
    if (out > max) throw new RangeError(`lz4: a block inflates past the frame's block size of ${max}`)
  }
}

/** A sequence's literal or match length: `nibble`, and past 15 the bytes at `at.i` added up to the first under 255. */
function lz4Length(b: Buffer, at: { i: number }, to: number, nibble: number, what: string): number {
  let n = nibble
  if (nibble !== 15) return n
  let x: number
  do {
    if (at.i >= to) throw new RangeError(`lz4: a ${what} length runs past its block`)
    x = b[at.i++] as number
    n += x
  } while (x === 255)
  return n
}

/**
 * `b` without its blocks' checksums (FLG bit 4): lz4js reads a block's checksum before its data,
 * the LZ4 format puts it after, and lz4js inflated such frames to wrong bytes without a word.
 */
function withoutBlockChecksums(b: Buffer): Buffer {
  const flags = b[4] as number
  if ((flags & 0x10) === 0) return b
  const headerEnd = 6 + ((flags & 0x08) !== 0 ? 8 : 0) + 1
  const parts: Buffer[] = [Buffer.from(b.subarray(0, headerEnd))]
  ;(parts[0] as Buffer)[4] = flags & ~0x10
  let at = headerEnd
  while (at + 4 <= b.length) {
    const word = b.readUInt32LE(at)
    if (word === 0) break
    const size = word & 0x7fffffff
    parts.push(b.subarray(at, at + 4 + size))
    at += 4 + size + 4
  }
  parts.push(b.subarray(at))
  return Buffer.concat(parts)
}

export const lz4Codec: Codec = {
  compress: () => compressUnsupported('LZ4'),
  decompress: (buffer) =>
    orDeadLetters(LZ4, 'lz4', buffer, () => {
      const bound = lz4FrameBound(buffer)
      const out = Buffer.from(lz4Decompress(withoutBlockChecksums(buffer), bound))
      // What it gave, not its bound: a fetch of many small batches is charged what they hold (review
      // finding: charged 64 KiB each, 4,096 heartbeat-sized batches filled the budget, for good).
      charge('lz4', out.length)
      return out
    }),
}

const ZSTD_MAGIC = 0xfd2fb528
/** Largest ZSTD window taken (8 MiB; Kafka's producers use 2-4 MiB). */
const MAX_ZSTD_WINDOW = 8 * 1024 * 1024
/** Most window fzstd may shift over a batch's blocks (one window per block). */
const MAX_ZSTD_WINDOW_WORK = 256 * 1024 * 1024
const ZSTD_BLOCK_MAX = 128 * 1024

/**
 * Walks the frames and block headers of a ZSTD batch without inflating it: refuses windows past
 * {@link MAX_ZSTD_WINDOW}, window work past {@link MAX_ZSTD_WINDOW_WORK}, and output past
 * {@link MAX_INFLATED_BATCH_BYTES}; returns the output's bound. A layout it cannot walk is left to
 * fzstd (which then refuses it).
 */
function zstdBound(b: Buffer): number {
  let at = 0
  let bound = 0
  let work = 0
  while (at + 4 <= b.length) {
    const magic = b.readUInt32LE(at)
    at += 4
    if ((magic & 0xfffffff0) === 0x184d2a50) {
      // A skippable frame: its length, then nothing to inflate.
      if (at + 4 > b.length) return bound
      at += 4 + b.readUInt32LE(at)
      continue
    }
    if (magic !== ZSTD_MAGIC || at >= b.length) return bound
    const fhd = b[at++] as number
    const single = (fhd & 0x20) !== 0
    const fcsBytes = [single ? 1 : 0, 2, 4, 8][fhd >> 6] as number
    const didBytes = [0, 1, 2, 4][fhd & 3] as number
    let window = 0
    if (!single) {
      const wd = b[at++] as number
      const base = 2 ** (10 + (wd >> 3))
      window = base + (base / 8) * (wd & 7)
    }
    at += didBytes
    if (single) {
      if (at + fcsBytes > b.length) return bound
      let fcs = 0
      for (let i = fcsBytes - 1; i >= 0; i--) fcs = fcs * 256 + (b[at + i] as number)
      window = fcsBytes === 2 ? fcs + 256 : fcs
    }
    at += fcsBytes
    if (window > MAX_ZSTD_WINDOW) throw new RangeError(`zstd: a frame's window of ${window} bytes is past ${MAX_ZSTD_WINDOW}; refused`)
    const blockMax = Math.min(window, ZSTD_BLOCK_MAX)
    for (;;) {
      if (at + 3 > b.length) return bound
      const h = (b[at] as number) | ((b[at + 1] as number) << 8) | ((b[at + 2] as number) << 16)
      at += 3
      const type = (h >> 1) & 3
      const size = h >>> 3
      const out = type === 2 ? blockMax : size
      bound += out
      at += type === 1 ? 1 : type === 2 || type === 0 ? size : 0
      // fzstd moves its window once per block: cheap for full blocks (a legitimate stream's), ruinous
      // for thousands of tiny ones. Only blocks well under the largest count (review finding: every
      // block counting refused legitimate batches past 4 MiB made with an 8 MiB window).
      if (out < ZSTD_BLOCK_MAX / 4) work += window
      if (bound > MAX_INFLATED_BATCH_BYTES) throw tooLarge('zstd')
      if (work > MAX_ZSTD_WINDOW_WORK) throw new RangeError(`zstd: a record batch of many small blocks under a ${window}-byte window; refused`)
      if ((h & 1) !== 0) break
    }
    if ((fhd & 0x04) !== 0) at += 4
  }
  return bound
}

export const zstdCodec: Codec = {
  compress: () => compressUnsupported('ZSTD'),
  decompress: (buffer) =>
    orDeadLetters(ZSTD, 'zstd', buffer, () => {
      zstdBound(buffer)
      const parts: Uint8Array[] = []
      let total = 0
      const stream = new ZstdStream((chunk) => {
        total += chunk.length
        if (total > MAX_INFLATED_BATCH_BYTES) throw tooLarge('zstd')
        charge('zstd', chunk.length)
        parts.push(chunk)
      })
      stream.push(new Uint8Array(buffer), true)
      return Buffer.concat(parts, total)
    }),
}

const gzipAsync = promisify(zlibGzip)
const unzipAsync = promisify(zlibUnzip)

/** kafkajs's GZIP codec (zlib, off the main thread) with the limits of the others. */
export const gzipCodec: Codec = {
  compress: (encoder) => gzipAsync(encoder.buffer),
  decompress: (buffer) =>
    orDeadLetters(GZIP, 'gzip', buffer, async () => {
      let out: Buffer
      try {
        out = await unzipAsync(buffer, { maxOutputLength: MAX_INFLATED_BATCH_BYTES })
      } catch (e) {
        if ((e as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge('gzip')
        throw e
      }
      charge('gzip', out.length)
      return out
    }),
}

type CodecTable = Record<number, () => unknown>

/**
 * Registers the codecs with `codecs` (kafkajs's `CompressionCodecs`) where none is registered
 * yet: a slot whose factory throws (kafkajs's "not implemented") gets Concord's; one the
 * application filled (a native codec, say) stays. The GZIP slot (`types.GZIP`) gets Concord's
 * only while it holds `kafkajsGzip`, kafkajs's own codec of that copy (unlimited: see above).
 * Idempotent.
 */
export function registerCodecs(codecs: CodecTable, types: { GZIP?: number; Snappy: number; LZ4: number; ZSTD: number }, kafkajsGzip?: unknown): void {
  // A slot is filled when empty or not implemented, or when it holds `replaces`.
  const fill = (type: number, codec: Codec, replaces?: unknown): void => {
    let current: unknown
    try {
      current = codecs[type]?.()
    } catch {
      // Not implemented: ours goes in.
      current = undefined
    }
    if (current != null && (replaces === undefined || current !== replaces)) return
    codecs[type] = () => codec
  }
  fill(types.Snappy, snappyCodec)
  fill(types.LZ4, lz4Codec)
  fill(types.ZSTD, zstdCodec)
  if (types.GZIP !== undefined && kafkajsGzip !== undefined) fill(types.GZIP, gzipCodec, kafkajsGzip)
}

/**
 * Registers the codecs with the kafkajs this package imports. A client from another copy of
 * kafkajs (an application's own, another version) has its own table: call
 * {@link registerCodecs} with that copy's `CompressionCodecs` and `CompressionTypes`.
 */
export function registerDefaultCodecs(): void {
  const require = createRequire(import.meta.url)
  const kafkajs = require('kafkajs') as { CompressionCodecs: CodecTable; CompressionTypes: { GZIP: number; Snappy: number; LZ4: number; ZSTD: number } }
  // kafkajs's own GZIP codec, from the same copy (its factory returns this module).
  const kafkajsGzip: unknown = createRequire(require.resolve('kafkajs'))('./src/protocol/message/compression/gzip')
  registerCodecs(kafkajs.CompressionCodecs, kafkajs.CompressionTypes, kafkajsGzip)
}
