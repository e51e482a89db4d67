/**
 * The replication envelope: the unit written to a region's log. Versioned binary, specified byte
 * by byte in docs/wire-format.md, optionally signed with HMAC-SHA256.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import { decodeWith, encoderSlabBytes, readByte, releaseEncoder, takeEncoder, readBytes, readString, readUint, writeByte, writeBytes, writeString, writeUint, type Decoder } from './codec.js'
import { ConfigError, DecodeError, SignatureError } from './errors.js'
import { readHlc, writeHlc, type HlcTimestamp } from './hlc.js'
import { MAX_DOT_COUNTER, MAX_REPLICA_ID_BYTES } from './dots.js'

/** First two bytes of every envelope: ASCII "CE". */
export const ENVELOPE_MAGIC = [0x43, 0x45] as const
/** Current envelope format version. */
export const ENVELOPE_VERSION = 1
/** Largest payload accepted by {@link decodeEnvelope} (8 MiB). */
export const MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
const FLAG_SIGNED = 0x01
const HMAC_BYTES = 32
/** Field limits, in UTF-8 bytes (strings) or bytes: docs/wire-format.md. */
const MAX_DOC_ID_BYTES = 1024
const MAX_TYPE_NAME_BYTES = 128
const MAX_DEPS_BYTES = 1024 * 1024
/**
 * Shortest signing key taken (as RegionNode's options require): under an empty key the MAC is
 * public, and anyone could sign for the region.
 */
const MIN_KEY_BYTES = 16

/** One replicated delta with its routing and causality metadata. */
export interface Envelope {
  /** Document (entity) id. */
  readonly docId: string
  /** Replica type name; the receiver refuses a mismatch. */
  readonly typeName: string
  /** Region whose log carries it. */
  readonly region: string
  /** Writer (region + instance) that produced it; sequence numbers count per writer. */
  readonly writer: string
  /** Per-writer sequence number, from 1, without gaps. */
  readonly seq: number
  /** HLC time of the batch. */
  readonly time: HlcTimestamp
  /** Encoded version of the document at the writer before this delta (causal dependencies). */
  readonly deps: Uint8Array
  /** The delta. */
  readonly payload: Uint8Array
}

/** Signing keys: region → secret. An envelope from a region without a key is rejected. */
export type EnvelopeKeys = ReadonlyMap<string, Uint8Array>

/**
 * Encodes an envelope, signing it with `key` when given. An envelope is on its way to a log: the
 * result may share an 8 KiB slab with other envelopes (see encoderSlabBytes) — slice() it to
 * keep it long on its own.
 */
export function encodeEnvelope(env: Envelope, key?: Uint8Array): Uint8Array {
  checkEnvelope(env)
  if (key !== undefined && !(key.length >= MIN_KEY_BYTES)) throw new ConfigError(`encodeEnvelope: a signing key must be at least ${MIN_KEY_BYTES} bytes`)
  // No encodeWith closure: one envelope per replicated delta goes through here.
  const e = takeEncoder()
  let body: Uint8Array
  try {
    writeByte(e, ENVELOPE_MAGIC[0])
    writeByte(e, ENVELOPE_MAGIC[1])
    writeByte(e, ENVELOPE_VERSION)
    writeByte(e, key === undefined ? 0 : FLAG_SIGNED)
    writeString(e, env.docId)
    writeString(e, env.typeName)
    writeString(e, env.region)
    writeString(e, env.writer)
    writeUint(e, env.seq)
    writeHlc(e, env.time)
    writeBytes(e, env.deps)
    writeBytes(e, env.payload)
    body = encoderSlabBytes(e)
  } finally {
    releaseEncoder(e)
  }
  if (key === undefined) return body
  const mac = createHmac('sha256', key).update(body).digest()
  const out = new Uint8Array(body.length + HMAC_BYTES)
  out.set(body)
  out.set(mac, body.length)
  return out
}

function bad(what: string): never {
  throw new ConfigError(`encodeEnvelope: ${what}`)
}

/** Whether `s` is a string of 1..`max` UTF-8 bytes (counted only when it may be longer). */
function idFits(s: unknown, max: number): boolean {
  return typeof s === 'string' && s.length > 0 && (s.length * 3 <= max || Buffer.byteLength(s) <= max)
}

/**
 * Refuses an envelope that {@link decodeEnvelope} would refuse or read as another: lib0 wrote seq
 * -1 as 127 and 1.5 as 1 (signed, so a receiver took the other number as the writer's word), and
 * a seq of 0 or past 2^48, an empty or overlong id or oversize deps went out signed and were
 * dead-lettered by every receiver. (The time is checked by writeHlc.)
 * @throws ConfigError
 */
function checkEnvelope(env: Envelope): void {
  if (typeof env !== 'object' || env === null) bad('not an envelope object')
  if (!idFits(env.docId, MAX_DOC_ID_BYTES)) bad(`docId must be 1..${MAX_DOC_ID_BYTES} UTF-8 bytes`)
  if (!idFits(env.typeName, MAX_TYPE_NAME_BYTES)) bad(`typeName must be 1..${MAX_TYPE_NAME_BYTES} UTF-8 bytes`)
  if (!idFits(env.region, MAX_REPLICA_ID_BYTES)) bad(`region must be 1..${MAX_REPLICA_ID_BYTES} UTF-8 bytes`)
  if (!idFits(env.writer, MAX_REPLICA_ID_BYTES)) bad(`writer must be 1..${MAX_REPLICA_ID_BYTES} UTF-8 bytes`)
  const seq = env.seq
  if (!(Number.isSafeInteger(seq) && seq >= 1 && seq <= MAX_DOT_COUNTER)) bad(`seq must be an integer from 1 to ${MAX_DOT_COUNTER}, got ${String(seq)}`)
  if (!(env.deps instanceof Uint8Array) || env.deps.length > MAX_DEPS_BYTES) bad(`deps must be a Uint8Array of at most ${MAX_DEPS_BYTES} bytes`)
  if (!(env.payload instanceof Uint8Array) || env.payload.length > MAX_PAYLOAD_BYTES) bad(`payload must be a Uint8Array of at most ${MAX_PAYLOAD_BYTES} bytes`)
}

// The type, region and writer fields (contiguous, after the document id) and the time are the
// same in every envelope of a flushed batch. The bytes of the last ones decoded are kept: when the
// next envelope holds the same bytes there, the same strings and timestamp come out (the bytes
// determine the parse), so they are reused instead of decoded again. Length 0: nothing kept.
interface LastSpan {
  readonly bytes: Uint8Array
  length: number
}
const MAX_KEPT_SPAN = 256
const lastIds: LastSpan = { bytes: new Uint8Array(MAX_KEPT_SPAN), length: 0 }
let lastTypeName = ''
let lastRegion = ''
let lastWriter = ''
const lastTimeBytes: LastSpan = { bytes: new Uint8Array(MAX_KEPT_SPAN), length: 0 }
let lastTime: HlcTimestamp = { wall: 0, logical: 0, node: '' }

/** Whether the bytes at `d`'s position start with `last`'s; if so, moves past them. */
function sameAsLast(d: Decoder, last: LastSpan): boolean {
  const n = last.length
  const arr = d.arr
  const at = d.pos
  if (n === 0 || at + n > arr.length) return false
  const kept = last.bytes
  for (let i = 0; i < n; i++) if (arr[at + i] !== kept[i]) return false
  d.pos = at + n
  return true
}

/** Keeps the bytes `d` just read from `from` in `last`, when they fit. */
function remember(d: Decoder, from: number, last: LastSpan): boolean {
  const n = d.pos - from
  if (n > MAX_KEPT_SPAN) {
    last.length = 0
    return false
  }
  last.bytes.set(d.arr.subarray(from, d.pos))
  last.length = n
  return true
}

function readBody(d: Decoder): Envelope {
  if (readByte(d) !== ENVELOPE_MAGIC[0] || readByte(d) !== ENVELOPE_MAGIC[1]) throw new DecodeError('envelope: bad magic')
  const version = readByte(d)
  if (version !== ENVELOPE_VERSION) throw new DecodeError(`envelope: unsupported version ${version}`)
  const flags = readByte(d)
  if ((flags & ~FLAG_SIGNED) !== 0) throw new DecodeError(`envelope: unknown flags ${flags}`)
  const docId = readString(d, MAX_DOC_ID_BYTES)
  let typeName: string
  let region: string
  let writer: string
  const idsAt = d.pos
  if (sameAsLast(d, lastIds)) {
    typeName = lastTypeName
    region = lastRegion
    writer = lastWriter
  } else {
    typeName = readString(d, MAX_TYPE_NAME_BYTES)
    region = readString(d, MAX_REPLICA_ID_BYTES)
    writer = readString(d, MAX_REPLICA_ID_BYTES)
    if (remember(d, idsAt, lastIds)) {
      lastTypeName = typeName
      lastRegion = region
      lastWriter = writer
    }
  }
  if (docId.length === 0 || typeName.length === 0 || region.length === 0 || writer.length === 0) throw new DecodeError('envelope: empty id field')
  const seq = readUint(d)
  if (seq === 0) throw new DecodeError('envelope: sequence 0')
  // A receiver keeps it in its applied set, whose stored form holds counters up to MAX_DOT_COUNTER.
  if (seq > MAX_DOT_COUNTER) throw new DecodeError(`envelope: sequence ${seq} past ${MAX_DOT_COUNTER}`)
  let time: HlcTimestamp
  const timeAt = d.pos
  if (sameAsLast(d, lastTimeBytes)) time = lastTime
  else {
    // Frozen: the one object is handed to every envelope whose time bytes are the same, and one
    // receiver changing it changed the others' (review finding).
    time = Object.freeze(readHlc(d))
    if (remember(d, timeAt, lastTimeBytes)) lastTime = time
  }
  const deps = readBytes(d, MAX_DEPS_BYTES)
  const payload = readBytes(d, MAX_PAYLOAD_BYTES)
  return { docId, typeName, region, writer, seq, time, deps, payload }
}

/**
 * Decodes and, when `keys` is given, verifies an envelope. `deps` and `payload` are views into
 * `bytes`, not copies (a receiver applies them and moves on): copy them before changing `bytes`.
 * @throws DecodeError for bytes that do not decode; SignatureError when keys are configured and the
 *   envelope is unsigned, signed by an unknown region, or the MAC does not match.
 */
export function decodeEnvelope(bytes: Uint8Array, keys?: EnvelopeKeys): Envelope {
  if (!(bytes instanceof Uint8Array)) throw new DecodeError('envelope: expected a Uint8Array')
  let bodyEnd = bytes.length
  // The flags byte says whether a MAC trails the body; read it before decoding the body.
  const signed = bytes.length > 3 && ((bytes[3] as number) & FLAG_SIGNED) !== 0
  if (signed) {
    if (bytes.length < 4 + HMAC_BYTES) throw new DecodeError('envelope: too short for a signature')
    bodyEnd = bytes.length - HMAC_BYTES
  }
  const body = signed ? bytes.subarray(0, bodyEnd) : bytes
  const env = decodeWith('envelope', body, readBody)
  if (keys !== undefined) {
    if (!signed) throw new SignatureError(`envelope from ${env.region} is unsigned`)
    const key = keys.get(env.region)
    if (key === undefined) throw new SignatureError(`no key for region ${env.region}`)
    if (!(key.length >= MIN_KEY_BYTES)) throw new SignatureError(`key for region ${env.region} is shorter than ${MIN_KEY_BYTES} bytes: anyone could sign for it`)
    const expected = createHmac('sha256', key).update(body).digest()
    const got = bytes.subarray(bodyEnd)
    if (!timingSafeEqual(expected, got)) throw new SignatureError(`bad signature on envelope from ${env.region}`)
  }
  return env
}
