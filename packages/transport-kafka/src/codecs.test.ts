import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { compress as lz4Compress } from 'lz4js'
import { compress as snappyCompress } from 'snappyjs'
import { describe, expect, it } from 'vitest'
import { gzipSync } from 'node:zlib'
import { MAX_INFLATED_BATCH_BYTES, MAX_INFLATED_TURN_BYTES, UNDECODABLE_HEADER, gzipCodec, lz4Codec, registerCodecs, registerDefaultCodecs, snappyCodec, zstdCodec } from './codecs.js'

const text = (b: Uint8Array): string => new TextDecoder().decode(b)
const bytes = (s: string): Buffer => Buffer.from(s)
const encoder = (b: Buffer): { buffer: Buffer } => ({ buffer: b })

/** Xerial framing as snappy-java writes it (magic, version 1, compat 1), one block per part. */
function xerial(parts: readonly Buffer[]): Buffer {
  const header = Buffer.alloc(16)
  Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00]).copy(header)
  header.writeInt32BE(1, 8)
  header.writeInt32BE(1, 12)
  const blocks = parts.map((p) => {
    const c = Buffer.from(snappyCompress(new Uint8Array(p)))
    const len = Buffer.alloc(4)
    len.writeUInt32BE(c.length)
    return Buffer.concat([len, c])
  })
  return Buffer.concat([header, ...blocks])
}

/** A zstd frame of `blocks` RLE blocks, each 128 KiB of one byte: a few bytes that inflate to blocks × 128 KiB. */
function zstdRleBomb(blocks: number): Buffer {
  return zstdFrame(0x58, blocks, (last) => rleBlock(128 * 1024, last))
}

/** A zstd frame with window descriptor `wd` (no checksum, no dictionary) and `blocks` blocks. */
function zstdFrame(wd: number, blocks: number, block: (last: boolean) => Buffer): Buffer {
  const out: Buffer[] = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.from([0x00, wd])]
  for (let i = 0; i < blocks; i++) out.push(block(i === blocks - 1))
  return Buffer.concat(out)
}
function blockHeader(type: number, size: number, last: boolean): Buffer {
  const h = size * 8 + type * 2 + (last ? 1 : 0)
  return Buffer.from([h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff])
}
const rleBlock = (size: number, last: boolean): Buffer => Buffer.concat([blockHeader(1, size, last), Buffer.from([0])])
const rawBlock = (last: boolean): Buffer => Buffer.concat([blockHeader(0, 1, last), Buffer.from([7])])

/** kafkajs's own decoding of one record batch (a fetch response's), through the codecs it has registered. */
const kafkajsRequire = createRequire(createRequire(import.meta.url).resolve('kafkajs'))
const KafkajsDecoder = kafkajsRequire('./src/protocol/decoder') as new (b: Buffer) => unknown
const decodeRecordBatch = kafkajsRequire('./src/protocol/recordBatch/v0/decoder') as (d: unknown) => Promise<{ records: Array<{ offset: string; value: Buffer | null; headers: Record<string, unknown> }> }>

/** A record batch as a fetch response holds it: base offset 100, `count` records, compressed with `type`, records `payload`. */
function batch(type: number, count: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(61)
  header.writeBigInt64BE(100n, 0)
  header.writeInt32BE(49 + payload.length, 8)
  header.writeInt8(2, 16)
  header.writeInt16BE(type, 21)
  header.writeInt32BE(count - 1, 23)
  header.writeBigInt64BE(-1n, 43)
  header.writeInt16BE(-1, 51)
  header.writeInt32BE(-1, 53)
  header.writeInt32BE(count, 57)
  return Buffer.concat([header, payload])
}

describe('compression codecs for kafkajs (Snappy, LZ4, ZSTD)', () => {
  const sample = bytes('concord envelope '.repeat(200))

  it('snappy: its own round trip, and the xerial framing Java clients and brokers write', async () => {
    expect(text(await snappyCodec.decompress(await snappyCodec.compress(encoder(sample))))).toBe(text(sample))
    expect(text(await snappyCodec.decompress(xerial([bytes('hello '), bytes('kafka')])))).toBe('hello kafka')
  })

  it('lz4: decompresses a frame; compressing is refused (lz4js writes frames brokers refuse)', async () => {
    expect(text(await lz4Codec.decompress(Buffer.from(lz4Compress(sample))))).toBe(text(sample))
    await expect(lz4Codec.compress(encoder(sample))).rejects.toThrow(/not implemented/)
  })

  it('zstd: decompresses a frame (made by the zstd CLI); compressing is refused', async () => {
    const frame = Buffer.from('28b52ffd0458d1000068656c6c6f20636f6e636f72642c2068656c6c6f206b61666b617d56f7b9', 'hex')
    expect(text(await zstdCodec.decompress(frame))).toBe('hello concord, hello kafka')
    await expect(zstdCodec.compress(encoder(sample))).rejects.toThrow(/not implemented/)
    // A legitimate RLE frame under the bound inflates.
    expect((await zstdCodec.decompress(zstdRleBomb(4))).length).toBe(4 * 128 * 1024)
  })

  it('refuses batches that would inflate past the bound instead of allocating them', async () => {
    // Snappy: a raw block declaring 1 GiB.
    const varint = Buffer.from([0x80, 0x80, 0x80, 0x80, 0x04])
    await expect(snappyCodec.decompress(Buffer.concat([varint, Buffer.alloc(8)]))).rejects.toThrow()
    // The same inside xerial framing.
    const framed = xerial([bytes('x')])
    const bomb = Buffer.concat([framed.subarray(0, 16), Buffer.from([0, 0, 0, 13]), varint, Buffer.alloc(8)])
    await expect(snappyCodec.decompress(bomb)).rejects.toThrow()
    // LZ4: a frame of 4 MiB blocks, 17 of them, each a few bytes (their bound is past 64 MiB).
    const block = Buffer.from([1, 0, 0, 0, 0x00])
    const lz4 = Buffer.concat([Buffer.from([0x04, 0x22, 0x4d, 0x18, 0x40, 0x70, 0x00]), ...Array.from({ length: 17 }, () => block), Buffer.alloc(4)])
    await expect(lz4Codec.decompress(lz4)).rejects.toThrow(/inflates past/)
    // A frame declaring a huge content size is bounded by its blocks, not by that field.
    const declared = Buffer.concat([Buffer.from([0x04, 0x22, 0x4d, 0x18, 0x48, 0x70, 0, 0, 0, 0, 0, 1, 0, 0, 0x00]), Buffer.alloc(4)])
    expect((await lz4Codec.decompress(declared)).length).toBe(0)
    // ZSTD: RLE blocks past the bound (a few hundred bytes of input).
    const blocks = MAX_INFLATED_BATCH_BYTES / (128 * 1024) + 1
    await expect(zstdCodec.decompress(zstdRleBomb(blocks))).rejects.toThrow(/inflates past/)
  })

  it('refuses zstd frames that would make fzstd shift a large window many times (review finding: a few KB took seconds)', async () => {
    // A 128 MiB window.
    await expect(zstdCodec.decompress(zstdFrame(0x88, 1, (last) => rawBlock(last)))).rejects.toThrow(/window of 134217728 bytes is past/)
    // An 8 MiB window (allowed) over 40 one-byte blocks: 320 MiB of window moved for 40 bytes.
    await expect(zstdCodec.decompress(zstdFrame(0x68, 40, (last) => rawBlock(last)))).rejects.toThrow(/many small blocks/)
    // The same window with a few blocks inflates.
    expect((await zstdCodec.decompress(zstdFrame(0x68, 4, (last) => rawBlock(last)))).length).toBe(4)
  })

  it('refuses what one fetch inflates past its budget together, and takes more in the next turn (review finding: 24 bombs of 60 MiB in one fetch)', async () => {
    const frame = Buffer.from(lz4Compress(Buffer.alloc(12 * 1024 * 1024)))
    await new Promise((r) => setImmediate(r))
    const calls = Array.from({ length: Math.floor(MAX_INFLATED_TURN_BYTES / (12 * 1024 * 1024)) + 1 }, () => lz4Codec.decompress(frame))
    const results = await Promise.allSettled(calls)
    expect(results.filter((r) => r.status === 'rejected').length).toBeGreaterThan(0)
    expect(String((results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason)).toMatch(/of one fetch inflate past/)
    await new Promise((r) => setImmediate(r))
    expect((await lz4Codec.decompress(frame)).length).toBe(12 * 1024 * 1024)
  })

  it('charges a fetch what its batches hold, not their bounds (review finding: 2,049 heartbeat-sized ZSTD batches, or 4,097 LZ4 ones, filled the budget, and the reader was stuck)', async () => {
    await new Promise((r) => setImmediate(r))
    const small = Buffer.from(lz4Compress(bytes('{"op":"set","doc":"d","value":"hello"}'.repeat(8))))
    const results = await Promise.all(Array.from({ length: 6000 }, () => lz4Codec.decompress(small)))
    expect(results.every((r) => r.length === 8 * 38)).toBe(true)
    const zsmall = zstdFrame(0x58, 1, (last) => rleBlock(300, last))
    expect((await Promise.all(Array.from({ length: 6000 }, () => zstdCodec.decompress(zsmall)))).every((r) => r.length === 300)).toBe(true)
  })

  it('reads LZ4 frames with block checksums (review finding: lz4js read the checksum before the data, and inflated them to wrong bytes)', async () => {
    const data = bytes('block checksum frames are legal LZ4')
    const size = Buffer.alloc(4)
    size.writeUInt32LE((0x80000000 | data.length) >>> 0)
    const frame = Buffer.concat([Buffer.from([0x04, 0x22, 0x4d, 0x18, 0x50, 0x70, 0x00]), size, data, Buffer.from([1, 2, 3, 4]), Buffer.alloc(4)])
    expect(text(await lz4Codec.decompress(frame))).toBe(text(data))
  })

  it('inflates a legitimate ZSTD batch of full blocks under the largest window (review finding: refused past 4 MiB)', async () => {
    const frame = zstdFrame(0x68, 40, (last) => rleBlock(128 * 1024, last))
    expect((await zstdCodec.decompress(frame)).length).toBe(40 * 128 * 1024)
  })

  it('fills only the slots kafkajs left unimplemented, and keeps codecs the application registered', () => {
    const own = { compress: async () => Buffer.alloc(0), decompress: async () => Buffer.alloc(0) }
    const table: Record<number, () => unknown> = {
      1: () => 'gzip',
      2: () => {
        throw new Error('Snappy compression not implemented')
      },
      3: () => own,
    }
    registerCodecs(table, { Snappy: 2, LZ4: 3, ZSTD: 4 })
    expect(table[1]?.()).toBe('gzip')
    expect(table[2]?.()).toBe(snappyCodec)
    expect(table[3]?.()).toBe(own)
    expect(table[4]?.()).toBe(zstdCodec)
  })
  // Review finding: kafkajs threw a codec's error out of the whole fetch response, and the reader's
  // consumer crashed at every fetch, for good (see the edge cases' integration test).
  it.each([
    ['snappy', 2, () => randomBytes(200)],
    ['lz4', 3, () => Buffer.concat([Buffer.from([0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x00]), randomBytes(200)])],
    ['zstd', 4, () => Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58]), randomBytes(200)])],
  ])('%s: a corrupt batch in a fetch response decodes as its records, at its offsets, without values, each saying why', async (name, type, corrupt) => {
    registerDefaultCodecs()
    const { records } = await decodeRecordBatch(new KafkajsDecoder(batch(type, 3, corrupt())))
    expect(records.map((r) => r.offset)).toEqual(['100', '101', '102'])
    expect(records.every((r) => r.value === null && String(r.headers[UNDECODABLE_HEADER]).startsWith(`${name}: `))).toBe(true)
  })

  // Review finding: lz4js trusts an LZ4 frame's block sizes — a block claiming more bytes than the
  // batch holds was inflated from zeros up to its claimed size (a corrupt 207-byte batch held the
  // thread for 99 s before it was dead-lettered), and match lengths were copied in full past the
  // output. Such frames are refused before lz4js runs, each with its reason.
  const lz4Header = Buffer.from([0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x00])
  const word = (n: number): Buffer => {
    const w = Buffer.alloc(4)
    w.writeUInt32LE(n >>> 0)
    return w
  }
  const END = word(0)
  // Literal 'a', then a match (offset 1) extended by 300 bytes of 255: 76,519 bytes, past 64 KiB.
  const matchBomb = Buffer.concat([Buffer.from([0x1f, 0x61, 0x01, 0x00]), Buffer.alloc(300, 0xff), Buffer.from([0x00, 0x10, 0x62])])
  it.each([
    ['a block that claims more bytes than the batch holds', Buffer.concat([lz4Header, word(0xffff), randomBytes(200)]), "lz4: a block of 65535 bytes runs past the end of the batch"],
    ['a block past the frame\'s block size', Buffer.concat([lz4Header, word(0x7c87c8c3), randomBytes(200)]), "lz4: a block of 2089273539 bytes, past the frame's block size of 65536"],
    ['a block whose matches inflate past the block size', Buffer.concat([lz4Header, word(matchBomb.length), matchBomb, END]), "lz4: a block inflates past the frame's block size of 65536"],
    ['a frame without its end mark', Buffer.concat([lz4Header, word(0x80000003), bytes('abc')]), 'lz4: the frame ends without its end mark (a truncated batch)'],
  ])('lz4: %s is dead-lettered before it is inflated', async (_, frame, reason) => {
    registerDefaultCodecs()
    const { records } = await decodeRecordBatch(new KafkajsDecoder(batch(3, 2, frame)))
    expect(records.map((r) => [r.offset, r.value, String(r.headers[UNDECODABLE_HEADER])])).toEqual([
      ['100', null, reason],
      ['101', null, reason],
    ])
  })

  // Review finding: snappyjs reads a 4-byte literal length as a signed number; 0x80000000 moved its
  // read position 2 GiB back, which it walked a byte at a time (18 s for a 200-byte batch).
  it('snappy: a literal length past the stream is dead-lettered before snappyjs reads it', async () => {
    registerDefaultCodecs()
    const corrupt = Buffer.concat([Buffer.from([0x0a, 0xfc, 0x00, 0x00, 0x00, 0x80]), randomBytes(100)])
    const { records } = await decodeRecordBatch(new KafkajsDecoder(batch(2, 2, corrupt)))
    expect(records.map((r) => String(r.headers[UNDECODABLE_HEADER]))).toEqual(['snappy: a literal runs past the stream', 'snappy: a literal runs past the stream'])
  })

  it('snappy: what snappyjs compresses passes the stream check and inflates back, raw and xerial-framed', async () => {
    const samples = [Buffer.alloc(0), bytes('a'), Buffer.alloc(70_000, 7), randomBytes(5000), bytes('{"op":"set","doc":"d","value":"hello"}'.repeat(500))]
    for (let n = 1; n < 3000; n = Math.ceil(n * 1.7)) samples.push(Buffer.concat([randomBytes(n), Buffer.alloc(n, n & 0xff), randomBytes(n >> 1)]))
    for (const data of samples) {
      const raw = Buffer.from(snappyCompress(new Uint8Array(data)))
      expect((await snappyCodec.decompress(raw)).equals(data)).toBe(true)
      if (data.length > 0) expect((await snappyCodec.decompress(xerial([data.subarray(0, data.length >> 1), data.subarray(data.length >> 1)]))).equals(data)).toBe(true)
    }
  })

  // Review finding: kafkajs's own GZIP codec inflated without a limit (a 1 MB batch can hold 1 GB).
  it('gzip: a batch inflating past the limit is dead-lettered; a normal one inflates; kafkajs\'s own codec is replaced, an application\'s kept', async () => {
    registerDefaultCodecs()
    const bomb = gzipSync(Buffer.alloc(MAX_INFLATED_BATCH_BYTES + 1))
    const { records } = await decodeRecordBatch(new KafkajsDecoder(batch(1, 2, bomb)))
    const reason = `gzip: a record batch inflates past ${MAX_INFLATED_BATCH_BYTES} bytes; refused`
    expect(records.map((r) => [r.offset, r.value, String(r.headers[UNDECODABLE_HEADER])])).toEqual([
      ['100', null, reason],
      ['101', null, reason],
    ])
    // A corrupt one too (kafkajs's codec threw out of the whole fetch: the consumer crashed on it for good).
    const corrupt = await decodeRecordBatch(new KafkajsDecoder(batch(1, 2, Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), randomBytes(100)]))))
    expect(corrupt.records.every((r) => r.value === null && String(r.headers[UNDECODABLE_HEADER]).startsWith('gzip: '))).toBe(true)
    const data = randomBytes(10_000)
    expect((await gzipCodec.decompress(await gzipCodec.compress(encoder(data)))).equals(data)).toBe(true)
    expect((await gzipCodec.decompress(gzipSync(data))).equals(data)).toBe(true)
    const kafkajs = kafkajsRequire('./index') as { CompressionCodecs: Record<number, () => unknown>; CompressionTypes: { GZIP: number } }
    expect(kafkajs.CompressionCodecs[kafkajs.CompressionTypes.GZIP]?.()).toBe(gzipCodec)
    const theirs = { compress: async () => Buffer.alloc(0), decompress: async () => Buffer.alloc(0) }
    const own = { ...theirs }
    const table: Record<number, () => unknown> = { 1: () => theirs }
    registerCodecs(table, { GZIP: 1, Snappy: 2, LZ4: 3, ZSTD: 4 }, theirs)
    expect(table[1]?.()).toBe(gzipCodec)
    const appTable: Record<number, () => unknown> = { 1: () => own }
    registerCodecs(appTable, { GZIP: 1, Snappy: 2, LZ4: 3, ZSTD: 4 }, theirs)
    expect(appTable[1]?.()).toBe(own)
  })

  it('a batch that inflates to bytes that are not its records decodes as dead letters too; one outside a fetch response is refused as before', async () => {
    registerDefaultCodecs()
    const garbage = Buffer.from(snappyCompress(new Uint8Array(randomBytes(300))))
    const { records } = await decodeRecordBatch(new KafkajsDecoder(batch(2, 2, garbage)))
    expect(records.map((r) => [r.offset, r.value, String(r.headers[UNDECODABLE_HEADER])])).toEqual([
      ['100', null, 'snappy: the batch inflated to bytes that are not its 2 records'],
      ['101', null, 'snappy: the batch inflated to bytes that are not its 2 records'],
    ])
    await expect(snappyCodec.decompress(Buffer.from(randomBytes(200)))).rejects.toThrow()
  })
})
