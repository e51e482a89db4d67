/**
 * Control records: heartbeats, registrations, repair requests and repair responses travel in the
 * same logs as deltas, inside ordinary envelopes (so they are signed and verified the same way)
 * whose type name starts with `$`. Their payloads are specified in docs/wire-format.md.
 */
import {
  DecodeError,
  MAX_DOT_COUNTER,
  VersionVector,
  decodeWith,
  encodeWith,
  readByte,
  readBytes,
  readLength,
  readString,
  readUint,
  writeByte,
  writeBytes,
  writeString,
  writeUint,
  MAX_COLLECTION,
  MAX_REPLICA_ID_BYTES,
  type Decoder,
} from '@concord/core'

/** Type name of a heartbeat record. */
export const HEARTBEAT = '$heartbeat'
/** Type name of a registration record (a node starting or stopping). */
export const REGISTER = '$register'
/** Type name of a repair request. */
export const REPAIR_REQUEST = '$repair-request'
/** Type name of a repair response. */
export const REPAIR_RESPONSE = '$repair-response'
/** docId used by records that concern no document. */
export const NO_DOC = '$'
/** Repair request responder meaning "any node that has seen enough". */
export const ANY_RESPONDER = '*'

const MAX_ID = 1024

/**
 * A string of 1..`max` bytes: a request id, writer id, document id or type name. Empty, none is
 * one an envelope carries, and some go into one: an answer's envelope has the request id as its
 * docId, which encodeEnvelope refuses empty — a request with an empty id threw a ConfigError out
 * of its responder's round (dropping the answers queued behind it) instead of being dead-lettered.
 */
function readId(d: Decoder, max: number, what: string): string {
  const s = readString(d, max)
  if (s.length === 0) throw new DecodeError(`${what} is empty`)
  return s
}

/** Heartbeat payload: who is alive, and what it has applied. */
export interface Heartbeat {
  /** Random id of the node's current run; a different one under the same writer id is another process. */
  readonly incarnation: string
  /** Per writer, the contiguous prefix of sequence numbers this node has applied. */
  readonly seen: VersionVector
}

export function encodeHeartbeat(h: Heartbeat): Uint8Array {
  return encodeWith((e) => {
    writeString(e, h.incarnation)
    h.seen.write(e)
  })
}

export function decodeHeartbeat(bytes: Uint8Array): Heartbeat {
  return decodeWith('heartbeat', bytes, (d) => ({ incarnation: readString(d, MAX_ID), seen: VersionVector.read(d) }))
}

/** Registration payload. */
export interface Registration {
  readonly incarnation: string
  /** `start` when a node comes up, `stop` after a clean shutdown. */
  readonly event: 'start' | 'stop'
}

export function encodeRegistration(r: Registration): Uint8Array {
  return encodeWith((e) => {
    writeString(e, r.incarnation)
    writeByte(e, r.event === 'start' ? 1 : 2)
  })
}

export function decodeRegistration(bytes: Uint8Array): Registration {
  return decodeWith('registration', bytes, (d) => {
    const incarnation = readString(d, MAX_ID)
    const ev = readByte(d)
    if (ev !== 1 && ev !== 2) throw new DecodeError(`registration: unknown event ${ev}`)
    return { incarnation, event: ev === 1 ? 'start' : 'stop' }
  })
}

/** Repair request payload: "send me what `target` wrote after sequence `from`". */
export interface RepairRequest {
  readonly requestId: string
  /** Writer whose updates are missing. */
  readonly target: string
  /** The requester holds every update of `target` up to and including this sequence number. */
  readonly from: number
  /** Who should answer: the target writer itself, or {@link ANY_RESPONDER}. */
  readonly responder: string
}

export function encodeRepairRequest(r: RepairRequest): Uint8Array {
  return encodeWith((e) => {
    writeString(e, r.requestId)
    writeString(e, r.target)
    writeUint(e, r.from)
    writeString(e, r.responder)
  })
}

export function decodeRepairRequest(bytes: Uint8Array): RepairRequest {
  return decodeWith('repair request', bytes, (d) => ({
    requestId: readId(d, MAX_ID, 'repair request: requestId'),
    target: readId(d, MAX_REPLICA_ID_BYTES, 'repair request: target'),
    from: readUint(d),
    responder: readId(d, MAX_REPLICA_ID_BYTES, 'repair request: responder'),
  }))
}

/** One document's state in a repair response. */
export interface RepairDoc {
  readonly docId: string
  readonly typeName: string
  /** `deltaSince()` of the responder's replica: its whole state. */
  readonly state: Uint8Array
}

/** Repair response payload, possibly split in parts. */
export interface RepairResponse {
  readonly requestId: string
  /** Writer that asked. */
  readonly requester: string
  /** Writer whose updates this repairs. */
  readonly target: string
  /** Same as the request's `from`. */
  readonly from: number
  /** The states include every update of `target` up to this sequence number. */
  readonly upTo: number
  /** 0-based part index and part count. */
  readonly part: number
  readonly parts: number
  readonly docs: readonly RepairDoc[]
}

export function encodeRepairResponse(r: RepairResponse): Uint8Array {
  return encodeWith((e) => {
    writeString(e, r.requestId)
    writeString(e, r.requester)
    writeString(e, r.target)
    writeUint(e, r.from)
    writeUint(e, r.upTo)
    writeUint(e, r.part)
    writeUint(e, r.parts)
    writeUint(e, r.docs.length)
    for (const doc of r.docs) {
      writeString(e, doc.docId)
      writeString(e, doc.typeName)
      writeBytes(e, doc.state)
    }
  })
}

export function decodeRepairResponse(bytes: Uint8Array): RepairResponse {
  return decodeWith('repair response', bytes, (d) => {
    const requestId = readId(d, MAX_ID, 'repair response: requestId')
    const requester = readId(d, MAX_REPLICA_ID_BYTES, 'repair response: requester')
    const target = readId(d, MAX_REPLICA_ID_BYTES, 'repair response: target')
    const from = readUint(d)
    const upTo = readUint(d)
    const part = readUint(d)
    const parts = readUint(d)
    if (parts === 0 || part >= parts) throw new DecodeError(`repair response: part ${part} of ${parts}`)
    if (upTo < from) throw new DecodeError(`repair response: upTo ${upTo} < from ${from}`)
    // upTo goes into the receiver's applied set, stored with counters up to MAX_DOT_COUNTER.
    if (upTo > MAX_DOT_COUNTER) throw new DecodeError(`repair response: upTo ${upTo} past ${MAX_DOT_COUNTER}`)
    const n = readLength(d, 1_000_000, 3)
    const docs: RepairDoc[] = []
    for (let i = 0; i < n; i++) {
      docs.push({ docId: readId(d, 1024, 'repair response: docId'), typeName: readId(d, 128, 'repair response: typeName'), state: readBytes(d).slice() })
    }
    return { requestId, requester, target, from, upTo, part, parts, docs }
  })
}

/** A persisted document: its type name and state snapshot. */
export function encodeDocRecord(typeName: string, state: Uint8Array): Uint8Array {
  return encodeWith((e) => {
    writeString(e, typeName)
    writeBytes(e, state)
  })
}

export function decodeDocRecord(bytes: Uint8Array): { typeName: string; state: Uint8Array } {
  return decodeWith('document record', bytes, (d) => ({ typeName: readString(d, 128), state: readLocalBytes(d).slice() }))
}

/**
 * A `bytes` field of a record of the node's own store: as long as the record holds. The wire's
 * per-field limit (MAX_FIELD_BYTES, 16 MiB) is not theirs: a document's state grows past it (each
 * change within every limit), and its record was written, then refused at every read — the
 * document lost after a restart. The length is still checked against the bytes present.
 */
function readLocalBytes(d: Decoder): Uint8Array {
  return readBytes(d, d.arr.length)
}

/** One document's part of a write-ahead-log entry: the deltas one store batch applied to it, in order. */
export interface WalItem {
  readonly docId: string
  readonly typeName: string
  readonly deltas: readonly Uint8Array[]
}

/**
 * A write-ahead-log entry: what one store batch applied, per document
 * (`uint n`, n × (`string` docId, `string` typeName, `uint k`, k × `bytes` delta)).
 */
export function encodeWalEntry(items: readonly WalItem[]): Uint8Array {
  return encodeWith((e) => {
    writeUint(e, items.length)
    for (const it of items) {
      writeString(e, it.docId)
      writeString(e, it.typeName)
      writeUint(e, it.deltas.length)
      for (const d of it.deltas) writeBytes(e, d)
    }
  })
}

/** Decodes a write-ahead-log entry; the deltas are views into `bytes`. */
export function decodeWalEntry(bytes: Uint8Array): WalItem[] {
  return decodeWith('wal entry', bytes, (d) => {
    const n = readLength(d, MAX_COLLECTION)
    const out: WalItem[] = []
    for (let i = 0; i < n; i++) {
      const docId = readString(d, 1024)
      const typeName = readString(d, 128)
      const k = readLength(d, MAX_COLLECTION)
      const deltas: Uint8Array[] = []
      for (let j = 0; j < k; j++) deltas.push(readLocalBytes(d))
      out.push({ docId, typeName, deltas })
    }
    return out
  })
}

/** An outbox batch (`obx/<seq>`): the envelopes one store batch persisted, in order (`uint n`, n × `bytes`); those of `envelopes` from index `from`. */
export function encodeOutboxBatch(envelopes: readonly Uint8Array[], from = 0): Uint8Array {
  return encodeWith((e) => {
    writeUint(e, envelopes.length - from)
    for (let i = from; i < envelopes.length; i++) writeBytes(e, envelopes[i] as Uint8Array)
  })
}

/** Decodes an outbox batch; the envelopes are views into `bytes`. */
export function decodeOutboxBatch(bytes: Uint8Array): Uint8Array[] {
  return decodeBytesList('outbox batch', bytes)
}

/**
 * A per-document journal entry of earlier versions (`jrn/<doc>/<n>`: `uint n`, n × `bytes`), read
 * once at start and folded into the document's record.
 */
export function decodeJournalEntry(bytes: Uint8Array): Uint8Array[] {
  return decodeBytesList('journal entry', bytes)
}

/** `uint n`, n × `bytes` (an outbox batch, a journal entry); the arrays are views into `bytes`. */
function decodeBytesList(what: string, bytes: Uint8Array): Uint8Array[] {
  return decodeWith(what, bytes, (d) => {
    const n = readLength(d, MAX_COLLECTION)
    const out: Uint8Array[] = []
    for (let i = 0; i < n; i++) out.push(readLocalBytes(d))
    return out
  })
}

/** One dead-lettered record. */
export interface DeadLetter {
  /** Log it was read from. */
  readonly origin: string
  readonly position: string
  /** Error code (`DECODE`, `SIGNATURE`, `TYPE_MISMATCH`, `CLOCK_DRIFT`, ...). */
  readonly code: string
  /** Error class name. */
  readonly error: string
  readonly message: string
  /** Local time (ms) it was rejected. */
  readonly at: number
  /** The record's bytes, truncated to 4 KiB, for diagnosis. */
  readonly bytes: Uint8Array
}

/** Longest text field of a dead letter, in UTF-16 code units (as the bytes: 4 Ki). */
const MAX_DEAD_LETTER_TEXT = 4096

/**
 * `s` fit for a dead letter: at most 4,096 code units, every lone surrogate replaced by U+FFFD.
 * An error's message is anybody's text (a replica's apply() may quote the record, or cut a string
 * inside a surrogate pair): a lone surrogate made writeString throw at every round, so the log
 * stalled at that record; a message past 16 MiB was stored, then refused at every start.
 */
export function deadLetterText(s: string): string {
  const cut = s.length > MAX_DEAD_LETTER_TEXT ? s.slice(0, MAX_DEAD_LETTER_TEXT) : s
  return cut.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD')
}

export function encodeDeadLetter(x: DeadLetter): Uint8Array {
  return encodeWith((e) => {
    writeString(e, deadLetterText(x.origin))
    writeString(e, deadLetterText(x.position))
    writeString(e, deadLetterText(x.code))
    writeString(e, deadLetterText(x.error))
    writeString(e, deadLetterText(x.message))
    writeUint(e, x.at)
    writeBytes(e, x.bytes)
  })
}

export function decodeDeadLetter(bytes: Uint8Array): DeadLetter {
  return decodeWith('dead letter', bytes, (d) => ({
    origin: readString(d),
    position: readString(d),
    code: readString(d),
    error: readString(d),
    message: readString(d),
    at: readUint(d),
    bytes: readBytes(d).slice(),
  }))
}
