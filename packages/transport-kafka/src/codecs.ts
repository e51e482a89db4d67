/**
 * The compression codecs kafkajs leaves out — Snappy, LZ4 and ZSTD; it has GZIP only — registered
 * with kafkajs so that a reader can fetch record batches compressed with them. Concord's own
 * producer never compresses, but the batches a reader fetches need not be its producer's: a topic
 * (or a broker) with `compression.type` snappy, lz4 or zstd recompresses everything it stores, and
 * MirrorMaker 2 and Cluster Linking copies are commonly compressed. Without a codec, kafkajs's
 * consumer crashed on such a batch at every fetch, and the reader's other origins starved with it.
 *
 * Pure JavaScript (snappyjs, lz4js, fzstd): no native build. Every codec refuses a batch that would
 * inflate past {@link MAX_INFLATED_BATCH_BYTES} (a decompression bomb) instead of allocating it.
 * Compressing is supported for Snappy and LZ4; fzstd only decompresses, so a producer configured
 * with ZSTD gets kafkajs's not-implemented error as before.
 */
import { createRequire } from 'node:module'
import { Decompress as ZstdStream } from 'fzstd'
import { compress as lz4Compress, decompress as lz4Decompress } from 'lz4js'
import { compress as snappyCompress, uncompress as snappyUncompress } from 'snappyjs'

/** Largest batch a codec inflates (64 MiB): 64 times kafkajs's default fetch size per partition. */
export const MAX_INFLATED_BATCH_BYTES = 64 * 1024 * 1024

/** kafkajs's codec interface: `compress` takes its Encoder (`.buffer`), both resolve with a Buffer. */
interface Codec {
  compress(encoder: { buffer: Buffer }): Promise<Buffer>
  decompress(buffer: Buffer): Promise<Buffer>
}

function tooLarge(codec: string): Error {
  return new RangeError(`${codec}: a record batch inflates past ${MAX_INFLATED_BATCH_BYTES} bytes; refused`)
}

/** Xerial framing (Java's snappy-java, which Kafka's Java clients and brokers write): magic, version, compat, then length-prefixed blocks. */
const XERIAL_MAGIC = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00])
const XERIAL_HEADER_BYTES = 16

export const snappyCodec: Codec = {
  async compress(encoder) {
    return Buffer.from(snappyCompress(new Uint8Array(encoder.buffer)))
  },
  async decompress(buffer) {
    if (buffer.length < XERIAL_HEADER_BYTES || !buffer.subarray(0, XERIAL_MAGIC.length).equals(XERIAL_MAGIC)) {
      return Buffer.from(snappyUncompress(new Uint8Array(buffer), MAX_INFLATED_BATCH_BYTES))
    }
    const parts: Uint8Array[] = []
    let total = 0
    let at = XERIAL_HEADER_BYTES
    while (at < buffer.length) {
      if (at + 4 > buffer.length) throw new RangeError('snappy: a xerial block length is cut short')
      const size = buffer.readUInt32BE(at)
      at += 4
      if (at + size > buffer.length) throw new RangeError('snappy: a xerial block runs past the batch')
      const part = snappyUncompress(new Uint8Array(buffer.subarray(at, at + size)), MAX_INFLATED_BATCH_BYTES - total)
      total += part.length
      parts.push(part)
      at += size
    }
    return Buffer.concat(parts, total)
  },
}

const LZ4_MAGIC = 0x184d2204
/** A frame's largest block by its BD byte's index (4..7). */
const LZ4_BLOCK_MAX = [0, 0, 0, 0, 64 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024]

/**
 * The most an LZ4 frame inflates to, from its block headers (each compressed block at most the
 * frame's block size, a stored one its own size), known before inflating. Not the header's
 * declared content size: lz4js reads that 64-bit field with 32-bit arithmetic, and a frame could
 * declare anything there.
 */
function lz4FrameBound(b: Buffer): number {
  if (b.length < 7 || b.readUInt32LE(0) !== LZ4_MAGIC) throw new RangeError('lz4: not an LZ4 frame')
  const flags = b[4] as number
  const maxBlock = LZ4_BLOCK_MAX[((b[5] as number) >> 4) & 7] as number
  if (maxBlock === 0) throw new RangeError('lz4: invalid block size')
  const blockChecksum = (flags & 0x10) !== 0
  let at = 6 + ((flags & 0x08) !== 0 ? 8 : 0) + 1
  let bound = 0
  while (at + 4 <= b.length) {
    const word = b.readUInt32LE(at)
    at += 4
    if (word === 0) break
    const size = word & 0x7fffffff
    bound += word >= 0x80000000 ? size : maxBlock
    if (bound > MAX_INFLATED_BATCH_BYTES) throw tooLarge('lz4')
    at += size + (blockChecksum ? 4 : 0)
  }
  return bound
}

export const lz4Codec: Codec = {
  async compress(encoder) {
    return Buffer.from(lz4Compress(encoder.buffer))
  },
  async decompress(buffer) {
    return Buffer.from(lz4Decompress(buffer, lz4FrameBound(buffer)))
  },
}

export const zstdCodec: Codec = {
  async compress() {
    throw new Error('ZSTD compression is not implemented by Concord (it decompresses ZSTD batches only)')
  },
  async decompress(buffer) {
    const parts: Uint8Array[] = []
    let total = 0
    const stream = new ZstdStream((chunk) => {
      total += chunk.length
      if (total > MAX_INFLATED_BATCH_BYTES) throw tooLarge('zstd')
      parts.push(chunk)
    })
    stream.push(new Uint8Array(buffer), true)
    return Buffer.concat(parts, total)
  },
}

type CodecTable = Record<number, () => unknown>

/**
 * Registers the codecs with `codecs` (kafkajs's `CompressionCodecs`) where none is registered
 * yet: a slot whose factory throws (kafkajs's "not implemented") gets Concord's; one the
 * application filled (a native codec, say) stays. Idempotent.
 */
export function registerCodecs(codecs: CodecTable, types: { Snappy: number; LZ4: number; ZSTD: number }): void {
  const fill = (type: number, codec: Codec): void => {
    try {
      if (codecs[type]?.() != null) return
    } catch {
      // Not implemented: ours goes in.
    }
    codecs[type] = () => codec
  }
  fill(types.Snappy, snappyCodec)
  fill(types.LZ4, lz4Codec)
  fill(types.ZSTD, zstdCodec)
}

/**
 * Registers the codecs with the kafkajs this package imports. A client from another copy of
 * kafkajs (an application's own, another version) has its own table: call
 * {@link registerCodecs} with that copy's `CompressionCodecs` and `CompressionTypes`.
 */
export function registerDefaultCodecs(): void {
  const kafkajs = createRequire(import.meta.url)('kafkajs') as { CompressionCodecs: CodecTable; CompressionTypes: { Snappy: number; LZ4: number; ZSTD: number } }
  registerCodecs(kafkajs.CompressionCodecs, kafkajs.CompressionTypes)
}
