/**
 * RegionNode: one process of one region. Local deltas go to an outbox, are persisted with the
 * replica state, appended to the region's log and then dropped from the outbox; every region's log
 * (the own one included, for the region's other instances) is consumed, verified, de-duplicated by
 * (writer, seq), applied, and the replica state is saved in the same atomic store batch as the
 * consumer position before the position is committed on the transport. Gaps are repaired by
 * anti-entropy over the logs; poison records are dead-lettered.
 *
 * Drive it with {@link RegionNode.pump} (one round, no timers: the simulator's way) or
 * {@link RegionNode.start} (a loop with timers).
 */
import type { Attributes, BatchObservableCallback, ObservableCounter, ObservableGauge, ObservableResult } from '@opentelemetry/api'
import {
  ConfigError,
  isWellFormed,
  DecodeError,
  DotSet,
  Hlc,
  TooLargeError,
  TransportError,
  TypeMismatchError,
  callListeners,
  VersionVector,
  ClosedError,
  bytesEqual,
  decodeEnvelope,
  decodeWith,
  encodeEnvelope,
  encodeWith,
  isConcordError,
  MAX_DOT_COUNTER,
  MAX_PAYLOAD_BYTES,
  readUint,
  writeUint,
  type Envelope,
  type HlcTimestamp,
  type LogPosition,
  type LogRecord,
  type PollOptions,
  type Replica,
  type StoreOp,
} from '@concord/core'
import { MIN_ENVELOPE_BYTES, resolveOptions, type RegionNodeOptions, type ResolvedOptions } from './options.js'
import {
  ANY_RESPONDER,
  HEARTBEAT,
  NO_DOC,
  REGISTER,
  REPAIR_REQUEST,
  REPAIR_RESPONSE,
  decodeDeadLetter,
  deadLetterText,
  decodeDocRecord,
  decodeJournalEntry,
  decodeHeartbeat,
  decodeRegistration,
  decodeRepairRequest,
  decodeRepairResponse,
  encodeDeadLetter,
  encodeDocRecord,
  encodeOutboxBatch,
  decodeOutboxBatch,
  encodeWalEntry,
  decodeWalEntry,
  type WalItem,
  encodeHeartbeat,
  encodeRegistration,
  encodeRepairRequest,
  encodeRepairResponse,
  type DeadLetter,
  type RepairDoc,
  type RepairRequest,
} from './wire.js'

/**
 * Replication metrics for one region's log, as seen by this node. The counters (applied,
 * duplicates, rejected, repairsRequested, repairsApplied) count what this process did: they start
 * at 0 with every start and never go down.
 */
export interface PeerMetrics {
  readonly region: string
  /** Envelopes applied from this region's writers. */
  readonly applied: number
  /** Envelopes dropped because they were already applied (redelivery, replay). */
  readonly duplicates: number
  /**
   * Records rejected and dead-lettered: once per record (a copy that fails again while its dead
   * letter is kept is not counted again), counted once the batch that rejected it is saved.
   */
  readonly rejected: number
  /** Envelopes known to exist (from sequence numbers and heartbeats) but not yet applied. */
  readonly pending: number
  /**
   * How old the last applied envelope was when it was read from the log: local time then minus its
   * HLC time (ms). Taken at read time, it does not grow while nothing arrives, nor fall back once the
   * region stops writing (0 until a first envelope is applied): see stalenessMs.
   */
  readonly lagMs: number
  /**
   * How far behind this node's view of the region is (ms): the time since the newest record (data
   * envelope, heartbeat or other control record, newest by its HLC time) was read and verified
   * from the region's log, plus how old it was then (local time minus its HLC time, when positive).
   * The region's nodes heartbeat every heartbeatIntervalMs, so while they run and this node reads,
   * it stays near that interval plus the delivery time; it grows while the region is down or cut
   * off, or while this node reads nothing (stalled, or not pumping) — the figure to alert on.
   * Before a first record of the region was read, the time since this node started (a region in
   * `regions` that nobody runs, or a misspelt name, grows from there); undefined before the node has
   * started; 0 for the node's own region (its own writes are never behind).
   */
  readonly stalenessMs: number | undefined
  /** Repair requests sent for this region's writers. */
  readonly repairsRequested: number
  /** Repair responses fully applied for this region's writers. */
  readonly repairsApplied: number
}

/** Everything {@link RegionNode.metrics} reports. */
export interface NodeMetrics {
  readonly writer: string
  readonly peers: readonly PeerMetrics[]
  /** Dead letters kept (in the store: they survive restarts), at most deadLetterLimit: not a counter. */
  readonly deadLetters: number
  readonly cachedReplicas: number
  readonly evictions: number
  /** Envelopes persisted but not yet appended to the log. */
  readonly outbox: number
  /** Highest sequence number this node has issued. */
  readonly seq: number
  /**
   * Local changes not sent because their envelope alone is past the envelope limit (see
   * RegionNodeOptions.maxEnvelopeBytes): each stays in this region's replica only, and flush(),
   * pump() or onError reported a TooLargeError for it.
   */
  readonly tooLarge: number
}

/** What one {@link RegionNode.pump} round did. */
export interface PumpResult {
  /** Records read from all logs. */
  readonly records: number
  /** Envelopes appended to the own log (deltas and control records). */
  readonly appended: number
}

interface OpenDoc {
  readonly docId: string
  readonly typeName: string
  readonly replica: Replica<unknown>
  /**
   * The replica's `mergeDeltas`, when it has one: then a flush of several local deltas sends their
   * merge, and the node keeps no versions (`lastVersion` and `deps` stay empty).
   */
  readonly merge: ((deltas: readonly Uint8Array[]) => Uint8Array) | undefined
  /** Version before the first pending local delta (or the current version when none is pending). */
  lastVersion: Uint8Array
  deps: Uint8Array
  pending: Uint8Array[]
  /** Deltas applied (or sent) since the last store write, for the next batch's write-ahead-log entry. */
  unsaved: Uint8Array[]
  /**
   * Per writer, an upper bound of the highest sequence number of it applied to this document
   * (rounded up to a multiple of TOUCH_BUCKET, so it changes rarely), as saved under `dix/<doc>`.
   * Repair answers use it to find the documents a writer changed after a given sequence number.
   */
  readonly touched: VersionVector
  /** Used since the cache's last eviction sweep passed it (second-chance LRU, see evict). */
  used: boolean
  /**
   * Made here by open() for a document neither the store nor the log knew, and nothing written to
   * or applied to it since: its type is only a guess of this process (see giveWay).
   */
  blank: boolean
}

/** A local write through a handle the cache no longer holds, adopted by the next round. */
interface PendingOrphan {
  readonly docId: string
  readonly typeName: string
  readonly delta: Uint8Array
  readonly from: Replica<unknown>
}

/** A write-ahead-log entry's deltas by document. */
function deltasByDoc(items: readonly WalItem[]): Map<string, readonly Uint8Array[]> {
  const out = new Map<string, readonly Uint8Array[]>()
  for (const it of items) out.set(it.docId, it.deltas)
  return out
}

/** A live write-ahead-log entry (in the store under `keys`), with the documents not folded since it was written. */
interface WalEntry {
  readonly seq: number
  readonly keys: readonly string[]
  readonly bytes: number
  readonly docs: Set<string>
  /** Its deltas by document: decoded from `data` when a document is loaded from the store. */
  items: Map<string, readonly Uint8Array[]> | undefined
  readonly data: Uint8Array | undefined
  /** Per-document journals of an earlier version (`jrn/<doc>/<n>`): read from the store per document. */
  readonly legacy: boolean
}

interface MutablePeer {
  applied: number
  duplicates: number
  rejected: number
  lagMs: number
  repairsRequested: number
  repairsApplied: number
}

interface PendingRepair {
  readonly requestId: string
  readonly sentAt: number
  readonly attempts: number
}

interface Sighting {
  readonly incarnation: string
  readonly wall: number
  readonly stopped: boolean
}

/** Store keys. */
/** Repair request ids remembered as answered (oldest forgotten first). */
const MAX_ANSWERED = 10_000
/**
 * Repair requests a round sends, and requests it answers, at most; and requests waiting for an
 * answer at most (more are dropped: their requesters ask again after repairTimeoutMs). Unbounded,
 * one forged heartbeat naming 100,000 writers made every node append 100,000 requests a round, and
 * 1,000 forged requests (68 KB) drew 157 MB of answers in 2.6 s (security review).
 */
const MAX_REPAIR_REQUESTS_PER_ROUND = 64
const MAX_ANSWERS_PER_ROUND = 16
const MAX_REPAIR_QUEUE = 1_000
const K_SEQ = 'meta/seq'
const K_SEEN = 'meta/seen'
/** The writer id (region/instance) whose state the store holds: one store serves one node. */
const K_WRITER = 'meta/writer'
const docKey = (docId: string): string => `doc/${docId}`
/** Write-ahead-log entry `seq`: the deltas one store batch applied, per document. */
const walKey = (seq: number): string => `wal/${String(seq).padStart(16, '0')}`
/** Per-document journal entries of earlier versions: read at start, folded into records. */
const jrnKey = (docId: string, n: number): string => `jrn/${docId}/${n}`
/**
 * The write-ahead log is kept to at most this many entries and bytes: past either, the documents
 * of its oldest entries are folded into new state records and the entries no document needs any
 * more are deleted (in the same atomic store batch). So a document's state is encoded about once
 * per WAL_MAX_ENTRIES batches that change it, not once per batch.
 */
const WAL_MAX_ENTRIES = 32
const WAL_MAX_BYTES = 1024 * 1024
/** Start-up catch-up with the own log (catchUpOwnLog): each poll's wait while short of the log's end, and how long it may go without a record. */
const CATCH_UP_POLL_WAIT_MS = 100
const CATCH_UP_STALL_MS = 60_000
/** The start() loop reports a failure that repeats unchanged (same class and message) at most this often. */
const REPEAT_REPORT_MS = 10_000
/**
 * Bytes of records one round applies (64 MiB), and of local changes one store batch takes: a
 * round's store batch holds all of them (FileStore refuses batches past 512 MiB; a refused batch
 * was built again, whole, every round).
 */
const ROUND_BYTES = 64 * 1024 * 1024
const posKey = (origin: string): string => `pos/${origin}`
/** Longest close() waits for commits in flight (they only spare redelivery after a restart). */
const CLOSE_COMMIT_WAIT_MS = 5_000
/** What close()'s wait for its shutdown gets when closeTimeoutMs passes first. */
const CLOSE_TIMED_OUT: unique symbol = Symbol('close timed out')
/** The `deps` of envelopes of documents whose replica merges deltas itself (no version is kept). */
const NO_VERSION = new Uint8Array(0)
/** Outbox entries of earlier versions: one envelope per key. Read at start, deleted once sent. */
const LEGACY_OUT = 'out/'
/** An outbox batch: the envelopes of one store batch, under the sequence number of its first. */
const obxKey = (seq: number): string => `obx/${String(seq).padStart(16, '0')}`
const dixKey = (docId: string): string => `dix/${docId}`
/** Granularity of the per-document `touched` bounds: a repair answer may include documents a writer last changed up to this many sequence numbers before the gap. */
const TOUCH_BUCKET = 1024
const dlKey = (n: number): string => `dl/${String(n).padStart(16, '0')}`
/** A dead letter keeps at most this many of its record's bytes. */
const DEAD_LETTER_BYTES = 4096
const deadKey = (origin: string, position: LogPosition): string => `${origin}\u0000${position}`

const utf8 = new TextEncoder()
const utf8Decoder = new TextDecoder()
const encodeUint = (n: number): Uint8Array => encodeWith((e) => writeUint(e, n))
const decodeUint = (b: Uint8Array): number => decodeWith('counter', b, (d) => readUint(d))

/**
 * A document id in use here with another type than a record's: two regions created one id with two
 * types. No later record or repair can apply it here (the id keeps its type in this region). Named
 * as the documented TypeMismatchError it is (in messages and dead letters).
 */
class DocTypeConflict extends TypeMismatchError {
  // The class's own name too (ConcordError names an error by its class; util.inspect prints the
  // class name): "DocTypeConflict" appeared in errors and dead letters.
  static {
    Object.defineProperty(this, 'name', { value: 'TypeMismatchError' })
  }

  constructor(docId: string, has: string, wanted: string) {
    super(`document ${docId} is ${article(has)} ${has}, not ${article(wanted)} ${wanted}`)
  }
}

/** "a" or "an" before a type name ("an or-set", "a pn-counter"). */
const article = (word: string): string => (/^[aeiou]/i.test(word) ? 'an' : 'a')

/**
 * `v`, what a replica's `method` returned for `docId`, if it is bytes. @throws TypeMismatchError
 * otherwise: saved or sent as it is, it would make a record or envelope nobody can read back.
 */
/**
 * Stands in a document's pending deltas for a local delta its replica's onDelta gave that was no
 * Uint8Array (see listen): the document's changes then go out as deltaSince() of its version
 * before them. Such a delta went into the envelope as it was, every store batch failed on it, and
 * the node sent and applied nothing more, for good (review finding).
 */
const NOT_BYTES = new Uint8Array(0)

function describeValue(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v
}

/** What `call` (the replica's `method`) gives, checked. @throws TypeMismatchError naming the document when it throws (a ConcordError passes as it is) or gives no bytes. */
function replicaCall(docId: string, method: string, call: () => unknown): Uint8Array {
  let v: unknown
  try {
    v = call()
  } catch (e) {
    if (isConcordError(e)) throw e
    throw new TypeMismatchError(`document ${docId}: the replica's ${method}() threw: ${e instanceof Error ? e.message : String(e)}`, { cause: e })
  }
  return replicaBytes(v, method, docId)
}

/** `replica.version()`, checked (a raw TypeError came out of open()): see replicaCall. */
function replicaVersion(replica: Replica<unknown>, docId: string): Uint8Array {
  return replicaCall(docId, 'version', () => replica.version())
}

function replicaBytes(v: unknown, method: string, docId: string): Uint8Array {
  if (v instanceof Uint8Array) return v
  throw new TypeMismatchError(`document ${docId}: the replica's ${method}() returned ${v === null ? 'null' : typeof v}, not a Uint8Array`)
}

/** Whether `r` has the members of a Replica that the node calls. */
function isReplica(r: unknown): r is Replica<unknown> {
  if (typeof r !== 'object' || r === null) return false
  const o = r as Record<string, unknown>
  return ['apply', 'state', 'version', 'deltaSince', 'onDelta', 'value'].every((m) => typeof o[m] === 'function')
}

class InfrastructureFailure {
  constructor(readonly error: unknown) {}
}

/**
 * Milliseconds from `since` to `now` for the node's timers (heartbeats, own-log reads, commits,
 * repair retries): a clock that stepped back (NTP, a VM restored) counts as long past, so the timer
 * is due now and starts over from the new reading (review finding: they all stopped for as long as
 * the step, an hour's step an hour without heartbeats).
 */
function elapsed(now: number, since: number): number {
  return now >= since ? now - since : Number.POSITIVE_INFINITY
}

/** A region node. See the module documentation and docs/replication.md. */
export class RegionNode {
  /** This node's writer id, `region/instance`. */
  readonly writer: string
  readonly region: string
  readonly instance: string
  private readonly o: ResolvedOptions
  private readonly hlc: Hlc
  private readonly incarnation: string
  private initPromise: Promise<void> | undefined
  private fatal: Error | undefined
  private closed = false
  private lock: Promise<unknown> = Promise.resolve()

  private seq = 0
  /** The sequence number the store holds (meta/seq): a batch saves `seq` whenever it differs. */
  private savedSeq = 0
  private seen = new DotSet()
  private seenDirty = false
  private readonly knownMax = new VersionVector()
  private readonly docs = new Map<string, OpenDoc>()
  private readonly loading = new Map<string, Promise<OpenDoc>>()
  private readonly dirtyDocs = new Set<string>()
  /** Positions this process appended to its region's log and has not read back yet (from ownHead). */
  private ownAppended: LogPosition[] = []
  private ownHead = 0
  /** Position of this process's registration in its region's log. */
  private registeredAt: LogPosition | undefined
  /** The last round's transport commits, still running; see consumeAll. */
  private commitsInFlight: Promise<void> | undefined
  /** The first failure of finished commits, reported by the next round. */
  private commitFailure: { error: unknown } | undefined
  /** Positions applied and saved but not yet committed on the transport, by origin (see commitIntervalMs). */
  private readonly toCommit = new Map<string, LogPosition>()
  private lastCommitAt = Number.NEGATIVE_INFINITY
  /** Documents changed by remote records whose `lastVersion` is not yet refreshed (done in persist). */
  private readonly staleVersions = new Set<OpenDoc>()
  /** Documents whose `touched` bounds grew since the last store batch. */
  private readonly touchedDirty = new Set<OpenDoc>()
  private readonly pendingLocal = new Set<string>()
  private pendingCount = 0
  private orphans: PendingOrphan[] = []
  /**
   * Replicas the cache evicted, while the application may still hold them: reloading the document
   * takes the same object back (brought up to date) instead of a second one. Two live replica
   * objects of one writer would each issue the same next dot, and a join drops the second write.
   */
  private readonly evicted = new Map<string, WeakRef<Replica<unknown>>>()
  private readonly evictedGone = new FinalizationRegistry<{ docId: string; ref: WeakRef<Replica<unknown>> }>(({ docId, ref }) => {
    if (this.evicted.get(docId) === ref) this.evicted.delete(docId)
  })
  /** One WeakRef (and one registration above) per replica, however often it is evicted and taken back. */
  private readonly evictedRefs = new WeakMap<Replica<unknown>, WeakRef<Replica<unknown>>>()
  /** A batch of applied records failed to save (until a later batch succeeds): no repair answers meanwhile. */
  private unsavedApplies = false
  /** Envelopes persisted but not yet appended, in order, with their documents (the record keys)... */
  private outbox: Uint8Array[] = []
  /** Largest envelope sent: maxEnvelopeBytes, or the transport's largest record when smaller. */
  private readonly envelopeLimit: number
  /** Local changes not sent for their size (metrics), and the error of the latest, until reported. */
  private tooLarge = 0
  private tooLargeError: TooLargeError | undefined
  private outboxDocs: Array<string | undefined> = []
  /** ...and the store keys holding them (a batch's key, or a legacy per-envelope key). */
  private outboxKeys: string[] = []
  /**
   * Envelopes made durable in the outbox since init, and how many of them are appended: the
   * outbox's first `durableTotal - sentTotal` envelopes (and `sendableKeys` keys) may be appended.
   */
  private durableTotal = 0
  private sentTotal = 0
  private sendableKeys = 0
  /** The running append of an outbox batch (see {@link startSend}). */
  private sender: Promise<void> | undefined
  /** This node's store writes, one after the other (the sender writes beside the rounds). */
  private storeWrites: Promise<void> = Promise.resolve()
  /** Live write-ahead-log entries, oldest first (see WAL_MAX_ENTRIES); a legacy journal is one more, first. */
  private wal = new Map<number, WalEntry>()
  private walBytes = 0
  private walSeq = 0
  /** Documents with deltas in live WAL entries and not folded into their record since: type and entries. */
  private walDocs = new Map<string, { typeName: string; seqs: number[] }>()
  private deadList: Array<{ key: string; letter: DeadLetter }> = []
  private dlCounter = 0
  /**
   * The dead letters as they were before the first dead letter of a batch not saved yet, and the
   * batch's rejections per region: a failed store write rewinds the batch's records, which are
   * rejected (and dead-lettered) again when read again, so the first attempt's are taken back. The
   * rejections are counted (PeerMetrics.rejected) once the batch is saved: counted at once and
   * taken back, the count went down — an OpenTelemetry counter read 1, 0, 1 (a reset, and two
   * rejections exported for one; review finding).
   */
  private dlUndo: { list: Array<{ key: string; letter: DeadLetter }>; counter: number; rejected: Map<MutablePeer, number> } | undefined
  /**
   * The dead letters kept, by origin and position (deadKey): a record delivered again (a copy, a
   * redelivery, or the replay after a restart of what was read since the last commit) that fails
   * again is not rejected nor dead-lettered a second time (review finding: each copy was).
   */
  private readonly deadIndex = new Map<string, DeadLetter>()
  private evictions = 0
  private readonly peers = new Map<string, MutablePeer>()
  /**
   * Per origin, the highest read position this process saved in the store (or found there for its
   * own region at start). A round that reads again from a lower position — after a rewind to the
   * committed one, while a commit of a later position was still on its way — saves no lower one:
   * the store would then hold a position below the committed one, which checkStoreNotBehind takes
   * for a lost store, and a clean restart was refused.
   */
  private readonly savedPositions = new Map<string, LogPosition>()
  /** Where the next heartbeat too large for all writers starts among the others (heartbeatPayload). */
  private heartbeatRotation = 0
  /**
   * Per other region, the newest HLC wall time of a record read and verified from its log, and the
   * local time it was read at (stalenessMs).
   */
  private readonly heard = new Map<string, { wall: number; readAt: number }>()
  /** Local time init() finished: a region not heard since counts as unheard from then (stalenessMs). */
  private initializedAt: number | undefined
  private readonly nodeSeen = new Map<string, VersionVector>()
  /** Per node heard from (writer id), the latest time its heartbeats carried: see retireAfterMs. */
  private readonly nodeHeardAt = new Map<string, number>()
  /** Regions some node of which has heartbeated to this one (retired nodes' too). */
  private readonly heardRegions = new Set<string>()
  private readonly sightings: Sighting[] = []
  private initializing = false
  private readonly pendingRepairs = new Map<string, PendingRepair>()
  /**
   * The repair requests this node sent, by request id (the latest MAX_ANSWERED): an answer is taken
   * only for one of them, with its target and start, from the node it asked (anyone for `*`). A
   * forged answer naming this node marked a real writer's updates as applied up to 2^48, and every
   * later update of it was dropped as a duplicate (review finding).
   */
  private readonly myRequests = new Map<string, { readonly target: string; readonly from: number; readonly responder: string }>()
  /**
   * Parts received of each repair answer, by request id and responder: responders split their
   * answers differently (their states differ in size), so only one responder's parts make a whole.
   */
  private readonly repairParts = new Map<string, Set<number>>()
  /** Answers completed (same keys), so that a redelivered part neither counts again nor opens a new entry. Bounded. */
  private readonly repairsDone = new Set<string>()
  private readonly answered = new Set<string>()
  private repairQueue: Array<{ req: RepairRequest; requester: string }> = []
  private requestCounter = 0
  /** Where the next round's repair requests start among the writers due one (see requestRepairs). */
  private repairRotation = 0
  private readonly caughtUp = new Map<string, boolean>()
  /**
   * Per region, since when every read of its log has failed (local time; absent while reads
   * succeed). Once that is repairTimeoutMs, its writers' gaps are repaired from other nodes though
   * this node has not caught up with the log (see requestRepairs).
   */
  private readonly unreadableSince = new Map<string, number>()
  private lastHeartbeat = Number.NEGATIVE_INFINITY
  /** Bytes of deltas applied in this round (see ROUND_BYTES). */
  private roundBytes = 0
  /** Removes this node's OpenTelemetry callbacks (close()). */
  private readonly instruments: Array<() => void> = []
  /** Whether the last stage() left local changes for another batch (ROUND_BYTES). */
  private stageCut = false
  /** Per log cut by ROUND_BYTES and rewound: the last position handled (and saved) before the cut. */
  private readonly rereadUpTo = new Map<string, LogPosition>()
  /**
   * Outbox places (counted as durableTotal counts) of the last heartbeat and repair answer queued:
   * while one is not sent yet (the own log unreachable), no other is made — the outbox would grow
   * by a heartbeat a second and a full copy of the answered state per re-asked request.
   */
  private heartbeatQueuedAt = -1
  private answerQueuedAt = -1
  /** The last envelope time the clock witnessed (see witness). */
  private lastWitnessed: HlcTimestamp | undefined
  /** When the own region's log was last read, and when a record of another instance was last found in it. */
  private lastOwnPoll = Number.NEGATIVE_INFINITY
  /** When the records being applied were read (ms, options.now): one clock reading per read, not per record (lag metrics). */
  private readAt = 0
  /** Every region but this one: the logs read in a round that skips the own log. */
  private readonly otherRegions: readonly string[]
  private twinHeardAt = Number.NEGATIVE_INFINITY
  private trimIndex: Array<{ position: LogPosition; writer: string; seq: number }> = []
  /** The last own-log position the trim reader was given (or had committed); see indexOwnLog. */
  private trimReadAt: LogPosition | undefined
  /** The start() loop's last failure reported to onError, and when (see repeatsLastFailure). */
  private lastFailure: string | undefined
  private lastFailureAt = 0
  /** trimStable calls, one after the other. */
  private trimming: Promise<unknown> = Promise.resolve()
  private loop: Promise<void> | undefined
  private running = false
  /** Calls of stop() (close() included) so far: a start() still in init() when one runs does not start. */
  private stops = 0
  /** close() has begun: no new round may start. */
  private closing = false
  /** The close() under way, which later calls share. */
  private closeRun: Promise<void> | undefined
  /** Ends the start() loop's sleep, if it sleeps. */
  private wake: (() => void) | undefined
  /** Shortens the start() loop's sleep to end within `ms`, if it sleeps longer. */
  private wakeWithin: ((ms: number) => void) | undefined
  /** Records may be ready (Transport.watch): the start() loop runs another round before sleeping. */
  private signalled = false
  private unwatch: (() => void) | undefined
  private firstPendingAt: number | undefined

  /** Validates `options` (ConfigError on any problem); no I/O happens until {@link init}. */
  constructor(options: RegionNodeOptions) {
    this.o = resolveOptions(options)
    this.writer = this.o.writer
    this.region = this.o.region
    this.instance = this.o.instance
    this.hlc = new Hlc(this.writer, { now: this.o.now, maxDriftMs: this.o.maxDriftMs })
    const word = (): number => Math.floor(this.o.random() * 0x1_0000_0000) >>> 0
    const hex = (n: number): string => n.toString(16).padStart(8, '0')
    // Its second half mixes in the system's random source, whatever `random` is: two processes
    // given one seeded `random` (a simulation's, copied into a service) made the same
    // incarnation, and each took the other's records for its own — the twin check was off, and
    // one's acknowledged writes were lost (review finding). `random` is still drawn twice, as
    // before: a seeded run draws the same numbers after it.
    const first = word()
    const nonce = globalThis.crypto.getRandomValues(new Uint32Array(1))[0] as number
    this.incarnation = `${hex(first)}${hex((word() ^ nonce) >>> 0)}`
    this.otherRegions = this.o.regions.filter((r) => r !== this.region)
    const recordLimit = this.o.transport.maxRecordBytes
    if (typeof recordLimit === 'number' && recordLimit > 0 && recordLimit < MIN_ENVELOPE_BYTES) {
      throw new ConfigError(`the transport takes records of at most ${recordLimit} bytes (its maxRecordBytes); a RegionNode needs at least ${MIN_ENVELOPE_BYTES}`)
    }
    this.envelopeLimit = typeof recordLimit === 'number' && recordLimit > 0 ? Math.min(recordLimit, this.o.maxEnvelopeBytes) : this.o.maxEnvelopeBytes
    for (const r of this.o.regions) this.peers.set(r, { applied: 0, duplicates: 0, rejected: 0, lagMs: 0, repairsRequested: 0, repairsApplied: 0 })
    if (this.o.meter !== undefined) this.registerInstruments()
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Loads state from the store, re-sends the outbox, catches up with the own region's log and
   * registers. Called by {@link pump}, {@link open} and {@link start} when needed. A failure of the
   * store or the log (unreachable at start) is thrown and the next call tries again.
   * @throws ConfigError when another live node uses the same writer id (for good).
   */
  init(): Promise<void> {
    // After close(): no registration nobody would ever stop (review finding: init() then logged a
    // start without a stop, and the writer id was refused to its next node as a duplicate).
    if (this.initPromise === undefined && this.closing) return Promise.reject(new ClosedError(`RegionNode ${this.writer} is closed`))
    this.initPromise ??= this.exclusive(() => this.doInit()).catch((e: unknown) => {
      if (this.fatal === undefined) this.initPromise = undefined
      throw e
    })
    return this.initPromise
  }

  private async doInit(): Promise<void> {
    const store = this.o.store
    // From scratch each try (an earlier one may have failed halfway).
    this.outbox = []
    this.outboxDocs = []
    this.outboxKeys = []
    this.sendableKeys = 0
    this.durableTotal = 0
    this.sentTotal = 0
    this.heartbeatQueuedAt = -1
    this.answerQueuedAt = -1
    this.rereadUpTo.clear()
    this.deadList = []
    this.sightings.length = 0
    this.wal = new Map()
    this.walBytes = 0
    this.walSeq = 0
    this.walDocs = new Map()
    await this.claimStore()
    const seqBytes = await store.get(K_SEQ)
    this.seq = seqBytes === undefined ? 0 : decodeUint(seqBytes)
    this.savedSeq = this.seq
    const seenBytes = await store.get(K_SEEN)
    if (seenBytes !== undefined) this.seen = DotSet.decode(seenBytes)
    // Never behind a sequence number this writer already used: a batch whose meta/seq write failed
    // may still have saved the applied set with it (and its envelope may be in the log).
    this.seq = Math.max(this.seq, this.seen.max(this.writer))
    for (const w of this.seen.replicas()) this.knownMax.advance(w, this.seen.max(w))
    this.knownMax.advance(this.writer, this.seq)
    await this.checkStoreNotBehind()
    // An earlier version's per-envelope entries predate any batch this version wrote: sent first.
    for (const prefix of [LEGACY_OUT, 'obx/']) {
      for (const key of await store.keys(prefix)) {
        const bytes = await store.get(key)
        if (bytes === undefined) continue
        for (const env of prefix === LEGACY_OUT ? [bytes] : decodeOutboxBatch(bytes)) {
          let docId: string | undefined
          try {
            docId = decodeEnvelope(env).docId
          } catch {
            // Our own bytes; if they no longer decode, they still go out (receivers dead-letter them).
          }
          this.outbox.push(env)
          this.outboxDocs.push(docId)
        }
        this.outboxKeys.push(key)
      }
    }
    // All of it is durable (read from the store); the sender holds it until the catch-up below
    // has shown that no live process uses this writer id (see startSend).
    this.sendableKeys = this.outboxKeys.length
    this.durableTotal = this.outbox.length
    for (const key of await store.keys('dl/')) {
      const bytes = await store.get(key)
      if (bytes === undefined) continue
      this.deadList.push({ key, letter: decodeDeadLetter(bytes) })
      this.dlCounter = Math.max(this.dlCounter, Number(key.slice(3)))
    }
    this.indexDeadLetters()
    await this.loadWal()
    // One subscription for every log this node reads (where the transport multiplexes them).
    await this.o.transport.subscribe?.(this.writer, this.o.regions)
    // Catch up with the own region's log first: it holds the last words of any earlier process
    // with this writer id, which decide whether that process may still be alive.
    this.initializing = true
    try {
      await this.catchUpOwnLog()
    } finally {
      this.initializing = false
    }
    // The catch-up may have read envelopes of this writer that the store lacks (a crash before
    // its first commit, with the store lost): the next sequence number goes past them.
    this.seq = Math.max(this.seq, this.seen.max(this.writer))
    this.knownMax.advance(this.writer, this.seq)
    const last = this.sightings[this.sightings.length - 1]
    if (last !== undefined && !last.stopped && this.o.now() - last.wall < this.o.livenessMs) {
      const err = new ConfigError(
        `RegionNode: duplicate instance id: writer ${this.writer} is in use by a live process (incarnation ${last.incarnation}, ` +
          `last heard ${this.o.now() - last.wall} ms ago); give each instance its own id, or wait ${this.o.livenessMs} ms after a crash`,
      )
      this.fatal = err
      throw err
    }
    await this.sent()
    this.appendControl(REGISTER, NO_DOC, 1, encodeRegistration({ incarnation: this.incarnation, event: 'start' }))
    await this.sent()
    // The registration is the last record appended so far.
    this.registeredAt = this.ownAppended[this.ownAppended.length - 1]
    this.initializedAt = this.o.now()
  }

  /**
   * Refuses a store that holds another writer's state, and marks an unmarked one as this writer's.
   * Two nodes given one store (one Redis keyPrefix, say) shared its keys without a word: their
   * write-ahead-log entries took the same keys, one overwrote the other's, and an acknowledged
   * write was gone after a restart (review finding). A store of an earlier version, unmarked, is
   * taken as this writer's.
   */
  private async claimStore(): Promise<void> {
    const store = this.o.store
    const marked = await store.get(K_WRITER)
    if (marked === undefined) {
      await store.put(K_WRITER, utf8.encode(this.writer))
      return
    }
    const owner = utf8Decoder.decode(marked)
    if (owner !== this.writer) {
      const err = new ConfigError(
        `RegionNode: the store holds the state of writer ${JSON.stringify(owner)}, not of ${JSON.stringify(this.writer)}: each node needs a store of its own (with RedisStore, a keyPrefix of its own); a node's state cannot move to another region or instance id`,
      )
      this.fatal = err
      throw err
    }
  }

  /**
   * Reads the own region's log to its end as of now: past the position Transport.latest reports
   * (a transport that fetches in the background may come back empty before that), else until a
   * poll comes back empty (a transport may return short batches before the end): a node that
   * started without having read it could reuse its own sequence numbers, or miss a live process
   * with its writer id. A log that delivers nothing for CATCH_UP_STALL_MS before its end (longer
   * than a consumer group's rebalance after a crash) is reported to onError, and the start goes on.
   */
  private async catchUpOwnLog(): Promise<void> {
    const t = this.o.transport
    const end = t.latest === undefined ? undefined : await t.latest(this.region)
    // Already past it: what this reader committed (a fresh reader starts at the log's beginning).
    let at = end === undefined ? undefined : await t.committed(this.writer, this.region)
    const reached = (): boolean => end === undefined || (at !== undefined && t.comparePositions(at, end) >= 0)
    let progressAt = Date.now()
    for (;;) {
      const last = await this.consume(this.region, reached() ? 0 : CATCH_UP_POLL_WAIT_MS)
      if (last !== undefined) {
        at = last
        progressAt = Date.now()
        continue
      }
      if (reached()) return
      if (Date.now() - progressAt >= CATCH_UP_STALL_MS) {
        // Reported, and the start goes on: a log that never delivers its last record (a record
        // the transport does not hand out) must not keep the node from starting for good.
        this.report(
          new TransportError(
            `RegionNode ${this.writer}: reading region ${this.region}'s own log at start-up stopped at ${at ?? 'its beginning'}, before its last record ${end as string}, for ${CATCH_UP_STALL_MS} ms; started without the rest`,
            { retriable: true },
          ),
        )
        return
      }
    }
  }

  /**
   * Refuses a store that is behind this writer's own history in the log: the transport has a
   * committed position of this writer on its own region's log past the one the store saved (the
   * node saves a position before it commits it, so that only happens when the store was lost,
   * replaced by an empty one, restored from an older backup, or belongs to another process started
   * with the same writer id). Such a node would issue sequence numbers this writer already used —
   * every region drops those envelopes as duplicates — and would never learn what it wrote since.
   * @throws ConfigError (fatal) naming both positions.
   */
  private async checkStoreNotBehind(): Promise<void> {
    const committed = await this.o.transport.committed(this.writer, this.region)
    if (committed === undefined) return
    const saved = await this.o.store.get(posKey(this.region))
    const savedPosition = saved === undefined ? undefined : utf8Decoder.decode(saved)
    if (savedPosition !== undefined) this.savedPositions.set(this.region, savedPosition)
    let behind: boolean
    try {
      behind = savedPosition === undefined || this.o.transport.comparePositions(committed, savedPosition) > 0
    } catch (e) {
      // A saved position the transport cannot read is not evidence either way.
      if (e instanceof DecodeError) return
      throw e
    }
    if (!behind) return
    const err = new ConfigError(
      `RegionNode: the store of writer ${this.writer} is behind the log: this writer committed position ${committed} of region ${this.region}'s log, ` +
        `the store ${savedPosition === undefined ? 'holds no position there' : `holds ${savedPosition}`} (a lost or replaced store, a restore from an older backup, or another process with this writer id); ` +
        `start this node with a new instance id — it reads what the old one wrote from the logs — or with the store that is current`,
    )
    this.fatal = err
    throw err
  }

  /**
   * Reads the write-ahead log (and the per-document journals an earlier version wrote, as one
   * entry before it, folded by the next store batch).
   */
  private async loadWal(): Promise<void> {
    const store = this.o.store
    const legacyKeys = await store.keys('jrn/')
    if (legacyKeys.length > 0) {
      const docs = new Set<string>()
      for (const key of legacyKeys) docs.add(key.slice(4, key.lastIndexOf('/')))
      const entry: WalEntry = { seq: 0, keys: legacyKeys, bytes: 0, docs, items: undefined, data: undefined, legacy: true }
      this.wal.set(0, entry)
      for (const docId of docs) this.walDocs.set(docId, { typeName: '', seqs: [0] })
    }
    for (const key of await store.keys('wal/')) {
      const data = await store.get(key)
      if (data === undefined) continue
      const seq = Number(key.slice(4))
      let items: WalItem[]
      try {
        items = decodeWalEntry(data)
      } catch (e) {
        // A damaged local store: say which entry, start nothing (the deltas in it are not lost
        // silently; restore the entry or the store, or remove it knowingly).
        throw new DecodeError(`store entry ${key} does not decode: ${e instanceof Error ? e.message : String(e)}`, { cause: e })
      }
      const byDoc = deltasByDoc(items)
      const entry: WalEntry = { seq, keys: [key], bytes: data.length, docs: new Set(byDoc.keys()), items: byDoc, data, legacy: false }
      for (const it of items) {
        const w = this.walDocs.get(it.docId)
        if (w === undefined) this.walDocs.set(it.docId, { typeName: it.typeName, seqs: [seq] })
        else {
          if (w.typeName === '') w.typeName = it.typeName
          w.seqs.push(seq)
        }
      }
      this.wal.set(seq, entry)
      this.walBytes += data.length
      this.walSeq = Math.max(this.walSeq, seq)
    }
  }

  /** Runs {@link pump} in a loop with timers until {@link stop}. Errors go to `onError`. */
  async start(): Promise<void> {
    this.check()
    this.checkNotClosing()
    const stops = this.stops
    await this.init()
    // stop() or close() ran while this start waited for init: it does not start (nor watch) now.
    if (stops !== this.stops) return this.check()
    if (this.running) return
    // Watched first: a transport that refuses (closed) leaves the node stopped, not half started.
    this.unwatch = this.o.transport.watch?.(this.writer, () => {
      this.signalled = true
      this.wake?.()
    })
    this.running = true
    this.loop = this.runLoop()
  }

  /**
   * Whether `e` repeats the loop's last reported failure (the same class and message) within
   * REPEAT_REPORT_MS: then it is not reported again. A region whose log is down failed every round
   * with the same error, about 30 reports a second to onError (review finding).
   */
  private repeatsLastFailure(e: unknown): boolean {
    const key = e instanceof Error ? `${e.name}\u0000${e.message}` : String(e)
    const now = Date.now()
    if (key === this.lastFailure && now - this.lastFailureAt < REPEAT_REPORT_MS) return true
    this.lastFailure = key
    this.lastFailureAt = now
    return false
  }

  /**
   * Rounds until {@link stop}: one after another while they find records or records are signalled
   * (Transport.watch), else after a sleep of pollWaitMs (maxDelayMs while local writes wait). Unlike
   * {@link pump}, a round does not wait for its envelopes' append: the sender runs beside the
   * rounds, and its failures go to onError (see startSend; the next round appends again).
   */
  private async runLoop(): Promise<void> {
    while (this.running) {
      let busy = false
      this.signalled = false
      try {
        const r = await this.round()
        busy = r.records > 0
      } catch (e) {
        if (this.fatal !== undefined || this.closed || !this.repeatsLastFailure(e)) this.report(e)
        if (this.fatal !== undefined || this.closed) {
          this.running = false
          break
        }
      }
      if (!this.running || busy || this.signalled) continue
      // Local writes waiting: until maxDelayMs after the first of them; else pollWaitMs, cut short
      // by a watch call, a first local write (see notePending) or maxDeltas writes.
      const wait = this.firstPendingAt !== undefined ? Math.max(0, this.firstPendingAt + this.o.maxDelayMs - this.o.now()) : this.o.pollWaitMs
      await new Promise<void>((resolve) => {
        let until = Date.now() + wait
        const done = (): void => {
          clearTimeout(timer)
          this.wake = undefined
          this.wakeWithin = undefined
          resolve()
        }
        let timer = setTimeout(done, wait)
        this.wake = done
        this.wakeWithin = (ms) => {
          if (Date.now() + ms >= until) return
          until = Date.now() + ms
          clearTimeout(timer)
          timer = setTimeout(done, ms)
        }
      })
    }
  }

  /** Stops the {@link start} loop after its current round. */
  async stop(): Promise<void> {
    this.stops++
    this.running = false
    this.unwatch?.()
    this.unwatch = undefined
    this.wake?.()
    await this.loop
    this.loop = undefined
  }

  /**
   * Stops, flushes local writes, and records a clean shutdown (so the same writer id may start
   * again at once). Does not close the transport or the store: their owner does.
   * @throws TransportError (after closing) when the own log or the store refused the last flush or
   *   the stop record: what the store's outbox holds goes out with the next start on that store.
   */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve()
    // Calls made while one runs share it (each ran the whole shutdown: two stop records).
    this.closeRun ??= this.closeOnce()
    return this.closeRun
  }

  private async closeOnce(): Promise<void> {
    // From here on no new round (pump, start): one would append after the shutdown record below.
    this.closing = true
    // The own log (or the store) failing the last flush or the stop record does not leave the node
    // half closed — neither usable nor closed, its metrics callbacks still registered (review
    // finding): the shutdown is finished here, and the failure thrown at its end. Nor does one
    // that never answers: past closeTimeoutMs the node closes all the same (it waited for ever).
    let timer: ReturnType<typeof setTimeout> | undefined
    const timedOut = new Promise<typeof CLOSE_TIMED_OUT>((resolve) => {
      timer = setTimeout(() => resolve(CLOSE_TIMED_OUT), this.o.closeTimeoutMs)
    })
    let failure: unknown
    try {
      failure = await Promise.race([this.shutDown(), timedOut])
    } finally {
      clearTimeout(timer)
    }
    if (failure === CLOSE_TIMED_OUT) {
      // The commits would queue behind the work that hangs (one lock): not waited for.
      failure = new TransportError(`the last round, flush or stop record did not finish within closeTimeoutMs (${this.o.closeTimeoutMs} ms)`)
    } else {
      // What was applied since the last commit is committed now. Waited for at most
      // CLOSE_COMMIT_WAIT_MS (a vanished region's log must not hold up a shutdown): a commit that
      // did not make it only means redelivery after a restart, which is dropped.
      await this.exclusive(async () => {
        const until = Date.now() + CLOSE_COMMIT_WAIT_MS
        await this.commitsSettled(until)
        this.startCommits()
        await this.commitsSettled(until)
      })
    }
    for (const remove of this.instruments.splice(0)) remove()
    this.closed = true
    if (failure !== undefined) {
      const unsent = this.durableTotal - this.sentTotal
      throw new TransportError(
        `RegionNode ${this.writer} closed without its stop record: ${failure instanceof Error ? failure.message : String(failure)}. ` +
          `${unsent} record(s) written to the store's outbox but not to the log are sent by the next start with this store; ` +
          `changes the store did not take are lost, as in a crash. A new process with this writer id first waits livenessMs (${this.o.livenessMs} ms) for a live one`,
        { cause: failure, retriable: false },
      )
    }
  }

  /** close()'s stop, last flush and stop record; resolves with what failed, if anything. */
  private async shutDown(): Promise<unknown> {
    try {
      await this.stop()
      if (this.initPromise === undefined || this.fatal !== undefined) return undefined
      await this.initPromise
      try {
        await this.flush()
      } catch (e) {
        // A change too large to send stays in this region (flush sent the rest): reported, and
        // the shutdown goes on — left half done, the same id could not start again for livenessMs.
        if (!(e instanceof TooLargeError)) throw e
        this.report(e)
      }
      await this.exclusive(async () => this.appendControl(REGISTER, NO_DOC, 1, encodeRegistration({ incarnation: this.incarnation, event: 'stop' })))
      await this.sent()
      return undefined
    } catch (e) {
      return e
    }
  }

  /** @throws ClosedError once close() has begun (a new round would append after its shutdown record). */
  private checkNotClosing(): void {
    if (this.closed) throw new ClosedError(`RegionNode ${this.writer} is closed`)
    if (this.closing) throw new ClosedError(`RegionNode ${this.writer} is closing`)
  }

  private check(): void {
    if (this.closed) throw new ClosedError(`RegionNode ${this.writer} is closed`)
    if (this.fatal !== undefined) throw this.fatal
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn)
    this.lock = run.catch(() => undefined)
    return run
  }

  // ---------------------------------------------------------------- documents

  /**
   * The replica of `docId`, loaded from the store on demand. Its local mutations are replicated.
   * A handle stays usable after the cache evicts it (its writes are still replicated), but reads
   * through it may be stale until the document is opened again (or a record for it arrives): that
   * returns the same replica object, brought up to date — one replica per document and process.
   * @throws TypeMismatchError when the document exists with another type, or no factory exists.
   */
  async open<V = unknown>(docId: string, typeName: string): Promise<Replica<V>> {
    this.check()
    // The length first: a 50 MB id was encoded, and quoted whole in the error (review finding).
    if (typeof docId !== 'string' || docId.length === 0 || docId.length > 1024 || utf8.encode(docId).length > 1024 || docId.startsWith('$') || !isWellFormed(docId)) {
      const shown = typeof docId === 'string' && docId.length > 64 ? `${JSON.stringify(docId.slice(0, 64))}... (${docId.length} UTF-16 units)` : String(JSON.stringify(docId))
      throw new ConfigError(`open: docId must be 1..1024 bytes of well-formed UTF-16 and not start with $, got ${shown}`)
    }
    if (!this.o.factories.has(typeName)) throw new TypeMismatchError(`open: no factory for type ${typeName}`)
    await this.init()
    const doc = await this.loadDocUnwrapped(docId, typeName)
    return doc.replica as Replica<V>
  }

  /** The cached replica of `docId`, if any (marked most recently used). */
  private cachedDoc(docId: string, typeName: string | undefined): OpenDoc | undefined {
    const cached = this.docs.get(docId)
    if (cached === undefined) return undefined
    // A flag, not a move to the back of the map per access (that churned the map on every record).
    cached.used = true
    if (typeName !== undefined && cached.typeName !== typeName) {
      throw new DocTypeConflict(docId, cached.typeName, typeName)
    }
    return cached
  }

  /**
   * Drops the cached replica of `docId` when it is blank (opened here with another type than
   * `typeName`, never written nor applied to) and `update` is known to apply to a replica of
   * `typeName` (its factory exists here and takes it), so that the update applies: refused, it was
   * dead-lettered and lost here for good, for a type nobody wrote. An update that would not apply
   * anyway (no factory yet, bytes its type refuses) leaves the blank replica and its handle alone.
   * The handle open() gave is stale from then on (a write through it is reported and dropped, as
   * one through an evicted handle of another type).
   */
  private giveWay(docId: string, typeName: string, writer: string, update: Uint8Array): void {
    const cached = this.docs.get(docId)
    if (cached === undefined || !cached.blank || cached.typeName === typeName) return
    const factory = this.o.factories.get(typeName)
    if (factory === undefined) return
    try {
      const probe = factory.create(this.writer)
      if (!isReplica(probe)) return
      probe.apply(update)
    } catch {
      return
    }
    this.docs.delete(docId)
    this.report(new TypeMismatchError(`document ${docId} was opened here as ${cached.typeName} and never written; an update of it as ${typeName} came from ${writer}: the ${cached.typeName} handle is stale, open it as ${typeName}`))
  }


  /** loadDoc for callers outside record processing: a store failure comes out as the store's own error. */
  private async loadDocUnwrapped(docId: string, typeName: string | undefined): Promise<OpenDoc> {
    try {
      return await this.loadDoc(docId, typeName)
    } catch (e) {
      throw e instanceof InfrastructureFailure ? e.error : e
    }
  }

  private async loadDoc(docId: string, typeName: string | undefined): Promise<OpenDoc> {
    const cached = this.cachedDoc(docId, typeName)
    if (cached !== undefined) return cached
    let p = this.loading.get(docId)
    if (p === undefined) {
      p = this.readDoc(docId, typeName).finally(() => this.loading.delete(docId))
      this.loading.set(docId, p)
    }
    const doc = await p
    if (typeName !== undefined && doc.typeName !== typeName) throw new DocTypeConflict(docId, doc.typeName, typeName)
    return doc
  }

  /**
   * A document's replica as the store has it: its state record, then its deltas in the write-ahead
   * log (and in a legacy journal). `undefined` when neither the store nor the log knows it and no
   * type is given.
   */
  private async rebuild(docId: string, typeName: string | undefined): Promise<{ replica: Replica<unknown>; type: string; known: boolean } | undefined> {
    // The log's entries of the document are taken before the record is read: a round may fold the
    // document while the read is out (open() does not wait for rounds), and the fold drops them
    // from the index once the new record is written. The old record read with the index of after
    // the fold would miss what the log held. Entries are never changed; applying one that the
    // record already holds is a join, so a record read after the fold is fine too.
    const inWal = this.walDocs.get(docId)
    const walEntries = (inWal?.seqs ?? []).map((seq) => this.wal.get(seq)).filter((e): e is WalEntry => e !== undefined)
    // A legacy journal lives in the store, not in memory: read before the record too (review
    // finding: read after it, a fold in between had deleted the journal, and the old record
    // without it was cached, then written back over the folded one — the journal's writes lost).
    const legacy = walEntries.some((e) => e.legacy) ? await this.readLegacyJournal(docId) : []
    let stored: Uint8Array | undefined
    try {
      stored = await this.o.store.get(docKey(docId))
    } catch (e) {
      throw new InfrastructureFailure(e)
    }
    const record = stored === undefined ? undefined : decodeDocRecord(stored)
    const type = record?.typeName ?? (inWal?.typeName || undefined) ?? typeName
    if (type === undefined) return undefined
    const factory = this.o.factories.get(type)
    if (factory === undefined) throw new TypeMismatchError(`no factory for type ${type} (document ${docId})`)
    let replica: unknown
    try {
      replica = factory.create(this.writer)
    } catch (e) {
      if (isConcordError(e)) throw e
      throw new TypeMismatchError(`factory ${type} threw making a replica for document ${docId}: ${e instanceof Error ? e.message : String(e)}`, { cause: e })
    }
    if (!isReplica(replica)) throw new TypeMismatchError(`factory ${type} made no Replica (one has apply, state, version, deltaSince, onDelta and value)`)
    if (record !== undefined) replica.apply(record.state)
    for (const entry of walEntries) {
      if (entry.legacy) {
        for (const delta of legacy) replica.apply(delta)
        continue
      }
      entry.items ??= deltasByDoc(decodeWalEntry(entry.data as Uint8Array))
      for (const delta of entry.items.get(docId) ?? []) replica.apply(delta)
    }
    return { replica, type, known: record !== undefined || inWal !== undefined }
  }

  /** The deltas of a per-document journal of an earlier version (`jrn/<doc>/1..n`, read eight entries per round trip). */
  private async readLegacyJournal(docId: string): Promise<Uint8Array[]> {
    const deltas: Uint8Array[] = []
    for (let n = 0, done = false; !done; ) {
      let entries: (Uint8Array | undefined)[]
      try {
        entries = await Promise.all(Array.from({ length: 8 }, (_, i) => this.o.store.get(jrnKey(docId, n + 1 + i))))
      } catch (e) {
        throw new InfrastructureFailure(e)
      }
      for (const entry of entries) {
        if (entry === undefined) {
          done = true
          break
        }
        for (const d of decodeJournalEntry(entry)) deltas.push(d)
        n++
      }
    }
    return deltas
  }

  private async readDoc(docId: string, typeName: string | undefined): Promise<OpenDoc> {
    const built = await this.rebuild(docId, typeName)
    if (built === undefined) throw new TypeMismatchError(`document ${docId} does not exist`)
    const { type, known } = built
    // The replica evicted earlier, if the application still holds it: the same object again,
    // joined with what the store has now (updates applied while it was out of the cache).
    const held = this.evicted.get(docId)?.deref()
    this.evicted.delete(docId)
    const reused = held !== undefined && held.typeName === built.replica.typeName
    if (reused) held.apply(built.replica.state())
    const replica = reused ? held : built.replica
    let bytes: Uint8Array | undefined
    try {
      bytes = known ? await this.o.store.get(dixKey(docId)) : undefined
    } catch (e) {
      // Every store failure, a Concord one too (RedisStore's TransportError while its server
      // restarts): not the record's fault, so the round fails and reads the record again, instead
      // of dead-lettering it (review finding: a 300 ms Redis restart lost an update until repair).
      throw new InfrastructureFailure(e)
    }
    const touched = bytes === undefined ? new VersionVector() : VersionVector.decode(bytes)
    const merge = replica.mergeDeltas?.bind(replica)
    // The version of what the store holds: a reused replica already holds the writes made through
    // it while evicted (orphans, sent as deltaSince this version), which its own version covers.
    const v = merge !== undefined ? NO_VERSION : replicaVersion(built.replica, docId)
    const doc: OpenDoc = {
      docId,
      typeName: type,
      replica,
      merge,
      lastVersion: v,
      deps: v,
      pending: [],
      unsaved: [],
      touched,
      used: true,
      blank: !known && !reused,
    }
    // A reused replica keeps the listener it was given when first loaded.
    if (!reused) this.listen(docId, type, replica)
    this.docs.set(docId, doc)
    return doc
  }

  /** Routes `replica`'s local changes to its document's pending deltas (or, evicted, to the orphans). */
  private listen(docId: string, type: string, replica: Replica<unknown>): void {
    replica.onDelta((given, origin) => {
      if (origin !== 'local') return
      let delta = given
      if (!(given instanceof Uint8Array)) {
        this.report(new TypeMismatchError(`document ${docId}: the replica's onDelta gave ${describeValue(given)}, not a Uint8Array; its changes go out as deltaSince() instead`))
        delta = NOT_BYTES
      }
      const current = this.docs.get(docId)
      if (current?.replica !== replica) {
        // Nothing to replay from a delta that was no bytes: the write through the old handle is lost.
        if (delta === NOT_BYTES) return
        // A write through a handle the cache has evicted: replay it on the current replica.
        this.orphans.push({ docId, typeName: type, delta: delta.slice(), from: replica })
      } else {
        current.used = true
        current.blank = false
        if (current.pending.length === 0) current.deps = current.lastVersion
        // Kept as is: listeners share the array and must not change it (Replica contract).
        current.pending.push(delta)
        this.pendingLocal.add(docId)
      }
      this.notePending()
    })
  }

  private notePending(): void {
    this.pendingCount++
    if (this.firstPendingAt === undefined) {
      this.firstPendingAt = this.o.now()
      // A loop asleep for pollWaitMs flushes this write after maxDelayMs, not after its sleep.
      this.wakeWithin?.(this.o.maxDelayMs)
    }
    if (this.pendingCount >= this.o.maxDeltas) this.wake?.()
  }

  /**
   * Evicts replicas past cacheSize, least recently used first, approximately (second chance, as a
   * CLOCK cache does): the sweep goes from the map's oldest entry; one used since the sweep last
   * passed it loses the flag and moves to the back, an unused one goes. Documents with unsaved or
   * unsent changes stay.
   */
  private evict(): void {
    let budget = 2 * this.docs.size
    for (const [docId, doc] of this.docs) {
      if (this.docs.size <= this.o.cacheSize || budget-- <= 0) return
      if (this.dirtyDocs.has(docId) || this.pendingLocal.has(docId) || doc.pending.length > 0 || doc.unsaved.length > 0) continue
      this.docs.delete(docId)
      if (doc.used) {
        doc.used = false
        this.docs.set(docId, doc)
        continue
      }
      let ref = this.evictedRefs.get(doc.replica)
      if (ref === undefined) {
        ref = new WeakRef(doc.replica)
        this.evictedRefs.set(doc.replica, ref)
        // Registered once: a registration per eviction of a replica the application keeps was a
        // cell of memory per eviction, for good.
        this.evictedGone.register(doc.replica, { docId, ref })
      }
      this.evicted.set(docId, ref)
      this.evictions++
    }
  }

  // ---------------------------------------------------------------- rounds

  /**
   * Persists local writes as envelopes and appends them to the log. Resolves once they are durable
   * there. The append is awaited outside the node's round: records of other regions are applied
   * (by {@link pump} or the {@link start} loop) while it is in flight.
   */
  async flush(): Promise<void> {
    this.check()
    await this.init()
    await this.exclusive(async () => {
      await this.adoptOrphans()
      // Every local change, in several store batches when they are past ROUND_BYTES (see stage);
      // another batch only while one stopped there (writes made meanwhile wait for the next flush
      // or round: an application writing all the time would keep the loop going for ever).
      do {
        this.stageCut = false
        await this.persist([])
      } while (this.stageCut)
    })
    await this.sent()
    // The rest went out: a change too large to send is reported now, once.
    this.throwTooLarge()
  }

  /**
   * One round without timers: flush local writes, read each region's log once (up to `pollMax`
   * records), answer and send repair requests, heartbeat when due, evict cold replicas. A failure
   * reading one log (an unreachable region) does not stop the round: the other logs are read and
   * repairs and the heartbeat go out, then the first failure is thrown.
   */
  async pump(): Promise<PumpResult> {
    this.checkNotClosing()
    const result = await this.round()
    // The round's envelopes went to the sender; their append overlapped the rest of the round.
    await this.sent()
    // A local change too large to send (the round did everything else) is reported now, once.
    this.throwTooLarge()
    return result
  }

  /** {@link pump} without waiting for the round's envelopes to be appended. */
  private async round(): Promise<PumpResult> {
    this.check()
    await this.init()
    return this.exclusive(async () => {
      this.check()
      let appended = 0
      await this.adoptOrphans()
      appended += await this.persist([])
      // One unreachable log must not stall the others (nor repairs and heartbeats): read every
      // log, finish the round, then report the first failure.
      const { records, failure } = await this.consumeAll()
      appended += await this.answerRepairs()
      appended += await this.requestRepairs()
      if (elapsed(this.o.now(), this.lastHeartbeat) >= this.o.heartbeatIntervalMs) {
        if (this.heartbeat()) appended++
      }
      this.evict()
      if (failure !== undefined) throw failure.error
      // The start() loop reports a change too large to send to onError (pump() throws it).
      if (this.running) {
        const tooLarge = this.takeTooLarge()
        if (tooLarge !== undefined) this.report(tooLarge)
      }
      return { records, appended }
    })
  }

  private async adoptOrphans(): Promise<void> {
    const orphans = this.orphans
    this.orphans = []
    // Writes dropped, by document: one report per document and round, not one per write (an
    // application writing on through a stale handle flooded onError).
    const dropped = new Map<string, { typeName: string; writes: number; error: DocTypeConflict }>()
    try {
      await this.adopt(orphans, dropped)
    } finally {
      for (const [docId, { typeName, writes, error }] of dropped) {
        this.report(new TypeMismatchError(`${writes} write(s) through an evicted ${typeName} handle of document ${docId} were dropped: ${error.message}`, { cause: error }))
      }
    }
  }

  private async adopt(orphans: PendingOrphan[], dropped: Map<string, { typeName: string; writes: number; error: DocTypeConflict }>): Promise<void> {
    for (let i = 0; i < orphans.length; i++) {
      const o = orphans[i] as PendingOrphan
      let doc: OpenDoc
      try {
        doc = await this.loadDocUnwrapped(o.docId, o.typeName)
      } catch (e) {
        if (e instanceof DocTypeConflict) {
          // The id was opened with another type meanwhile (here, or by another region): a write
          // through the old handle can never be adopted. Reported and dropped — put back, it would
          // fail every round, and with it every round's other work.
          const d = dropped.get(o.docId)
          if (d === undefined) dropped.set(o.docId, { typeName: o.typeName, writes: 1, error: e })
          else d.writes++
          continue
        }
        // Not adopted (the store failed): they wait for the next round, ahead of newer ones.
        this.orphans = orphans.slice(i).concat(this.orphans)
        throw e
      }
      // deps: the version before any of these writes (what the store held; see readDoc).
      if (doc.pending.length === 0 && doc.merge === undefined) doc.deps = doc.lastVersion
      // Not into the replica it came from (the evicted one, taken back by readDoc): it holds it.
      if (o.from !== doc.replica) doc.replica.apply(o.delta)
      doc.pending.push(o.delta)
      this.pendingLocal.add(o.docId)
    }
  }

  /** Turns pending local deltas into outbox envelopes (same batch as `ops`), writes, then appends. */
  private async persist(ops: StoreOp[]): Promise<number> {
    const { items, written } = this.stage(ops)
    const seq = this.seq
    const saved = await this.walBatch(items, ops)
    if (this.seenDirty) ops.push({ op: 'put', key: K_SEEN, value: this.seen.encode() })
    for (const doc of this.touchedDirty) ops.push({ op: 'put', key: dixKey(doc.docId), value: doc.touched.encode() })
    if (ops.length > 0) {
      try {
        await this.writeStore(ops)
      } catch (e) {
        // Everything staged stays in memory and goes with the next batch (dirty sets, the outbox's
        // envelopes not yet durable, meta/seq).
        this.unsavedApplies ||= this.dirtyDocs.size > 0
        throw e
      }
    }
    this.unsavedApplies = false
    // The batch's rejections are saved (their dead letters with them): counted now.
    if (this.dlUndo !== undefined) for (const [p, n] of this.dlUndo.rejected) p.rejected += n
    this.dlUndo = undefined
    this.savedSeq = Math.max(this.savedSeq, seq)
    saved()
    // Emptied in place (the array keeps its capacity: no new one per document and batch); usually all were saved.
    for (let i = 0; i < written.length; i++) {
      const { doc, n } = written[i] as { doc: OpenDoc; n: number }
      if (n === doc.unsaved.length) clear(doc.unsaved)
      else doc.unsaved.splice(0, n)
    }
    this.dirtyDocs.clear()
    this.touchedDirty.clear()
    this.seenDirty = false
    // Durable now: the sender may append them (it runs beside the round, see startSend).
    const fresh = this.outbox.length - (this.durableTotal - this.sentTotal)
    this.sendableKeys = this.outboxKeys.length
    this.durableTotal += fresh
    this.startSend()
    return fresh
  }

  /**
   * The synchronous part of {@link persist} (kept out of the async function, whose loops V8
   * optimizes less: an iterator result per element): pending local deltas become outbox
   * envelopes (their batch's outbox entry and sequence number go to `ops`); returns the changed
   * documents' new deltas for the write-ahead log.
   */
  private stage(ops: StoreOp[]): { items: WalItem[]; written: Array<{ doc: OpenDoc; n: number }> } {
    const key = this.o.keys?.get(this.region)
    // Every envelope not yet durable, not only this batch's: those of a batch whose store write
    // failed are still in the outbox (and their sequence numbers taken), and go with this one.
    const firstOut = this.durableTotal - this.sentTotal
    // One HLC reading per batch: an envelope's time is its batch's (the deltas carry their own).
    let time: HlcTimestamp | undefined
    // Up to ROUND_BYTES of changes per store batch (the batch holds them twice: outbox and
    // write-ahead log); the documents past it wait for the next batch (flush() writes another
    // while a batch stops here: stageCut).
    let staged = 0
    for (const docId of this.pendingLocal) {
      if (staged >= ROUND_BYTES) {
        this.stageCut = true
        break
      }
      const doc = this.docs.get(docId)
      if (doc === undefined || doc.pending.length === 0) {
        this.pendingLocal.delete(docId)
        continue
      }
      if (doc.pending.includes(NOT_BYTES)) {
        const since = this.mergedPending(doc, true)
        clear(doc.pending)
        doc.pending.push(since)
      }
      for (const d of doc.pending) staged += d.length
      time ??= this.hlc.now()
      const payload = doc.pending.length === 1 ? (doc.pending[0] as Uint8Array) : this.mergedPending(doc)
      const bytes = this.localEnvelope(doc, payload, time, key)
      if (bytes !== undefined && bytes.length <= this.envelopeLimit) this.queueEnvelope(doc, payload, bytes)
      // The envelope's bytes besides the payload; a payload's length takes at most 4 bytes more than an empty one's.
      else this.queueSplit(doc, time, key, bytes !== undefined ? bytes.length - payload.length : (this.localEnvelope(doc, NO_VERSION, time, key) as Uint8Array).length + 3)
      clear(doc.pending)
      if (doc.merge === undefined) {
        doc.lastVersion = this.versionOrLast(doc)
        doc.deps = doc.lastVersion
        this.staleVersions.delete(doc)
      }
      this.dirtyDocs.add(docId)
      // Only now: a document whose changes could not be made an envelope (its replica's
      // mergeDeltas or deltaSince threw) stays pending, and every later flush tries it again.
      this.pendingLocal.delete(docId)
    }
    // Once per document and batch rather than per applied record. A local write between an apply
    // and this point takes the older version as deps: deltaSince(deps) is then a superset, still correct.
    for (const doc of this.staleVersions) if (doc.pending.length === 0) doc.lastVersion = this.versionOrLast(doc)
    this.staleVersions.clear()
    if (this.outbox.length > firstOut) {
      // One outbox key per store batch, not one per envelope.
      const k = obxKey(this.seq - (this.outbox.length - firstOut) + 1)
      ops.push({ op: 'put', key: k, value: encodeOutboxBatch(this.outbox, firstOut) })
      this.outboxKeys.push(k)
    }
    if (this.seq !== this.savedSeq) ops.push({ op: 'put', key: K_SEQ, value: encodeUint(this.seq) })
    if (this.pendingLocal.size === 0) {
      this.pendingCount = 0
      this.firstPendingAt = undefined
    }
    // The changed documents' new deltas go to one write-ahead-log entry: one store key per batch,
    // not one per document. Past the log's limits, documents are folded into state records.
    const items: WalItem[] = []
    const written: Array<{ doc: OpenDoc; n: number }> = []
    for (const docId of this.dirtyDocs) {
      const doc = this.docs.get(docId)
      if (doc === undefined || doc.unsaved.length === 0) continue
      items.push({ docId, typeName: doc.typeName, deltas: doc.unsaved })
      written.push({ doc, n: doc.unsaved.length })
    }
    return { items, written }
  }

  /**
   * `doc`'s version for its next deltas' deps; when its replica's version() fails, reported and
   * the last one kept (deltaSince of an older version is a superset: still correct), so one
   * document's replica does not fail every store batch.
   */
  private versionOrLast(doc: OpenDoc): Uint8Array {
    try {
      return replicaVersion(doc.replica, doc.docId)
    } catch (e) {
      this.report(e)
      return doc.lastVersion
    }
  }

  /** `doc`'s pending deltas as one: its replica's mergeDeltas, else (or with `since`) deltaSince of its version before them. @throws TypeMismatchError when the replica throws or returns no bytes. */
  private mergedPending(doc: OpenDoc, since = false): Uint8Array {
    const merge = since ? undefined : doc.merge
    if (merge !== undefined) return replicaCall(doc.docId, 'mergeDeltas', () => merge(doc.pending))
    // A replica with mergeDeltas has no versions kept (deps stays empty): its whole state.
    return replicaCall(doc.docId, 'deltaSince', () => doc.replica.deltaSince(doc.merge !== undefined ? undefined : doc.deps))
  }

  /** The envelope of `payload`, a local change to `doc`, with the next sequence number. */
  private envelope(doc: OpenDoc, payload: Uint8Array, time: HlcTimestamp): Envelope {
    return { docId: doc.docId, typeName: doc.typeName, region: this.region, writer: this.writer, seq: this.seq + 1, time, deps: doc.deps, payload }
  }

  /**
   * The envelope of `payload`, encoded; undefined for a payload past MAX_PAYLOAD_BYTES, which no
   * receiver takes (encodeEnvelope refuses it with a ConfigError: a flush whose merged changes, or a
   * single change, passed 8 MiB threw at every flush, and the node never saved nor sent a change again).
   */
  private localEnvelope(doc: OpenDoc, payload: Uint8Array, time: HlcTimestamp, key: Uint8Array | undefined): Uint8Array | undefined {
    return payload.length > MAX_PAYLOAD_BYTES ? undefined : encodeEnvelope(this.envelope(doc, payload, time), key)
  }

  /** Takes the next sequence number for `bytes`, the envelope of `payload`, into the outbox. */
  private queueEnvelope(doc: OpenDoc, payload: Uint8Array, bytes: Uint8Array): void {
    const seq = ++this.seq
    this.outbox.push(bytes)
    this.outboxDocs.push(doc.docId)
    this.touch(doc, this.writer, seq)
    this.seen.addRange(this.writer, seq, seq)
    this.seenDirty = true
    this.knownMax.advance(this.writer, seq)
    doc.unsaved.push(payload)
  }

  /**
   * `doc`'s pending changes, whose one envelope would be past the envelope limit, as several:
   * runs of consecutive changes that fit (merged when the replica merges), each change alone when
   * its run still does not. A change too large alone is not sent — no receiver would take it, and
   * in the outbox it would hold back every later envelope — but kept in the write-ahead log with
   * the replica's state, and reported (a TooLargeError from flush, pump or onError; metrics).
   * `room` is an envelope's bytes beside its payload.
   */
  private queueSplit(doc: OpenDoc, time: HlcTimestamp, key: Uint8Array | undefined, room: number): void {
    const budget = this.envelopeLimit - room
    const pending = doc.pending
    const send = (run: readonly Uint8Array[]): void => {
      const payload = run.length === 1 ? (run[0] as Uint8Array) : doc.merge !== undefined ? doc.merge(run) : undefined
      const bytes = payload === undefined ? undefined : this.localEnvelope(doc, payload, time, key)
      if (bytes !== undefined && bytes.length <= this.envelopeLimit) return this.queueEnvelope(doc, payload as Uint8Array, bytes)
      if (run.length > 1) {
        for (const delta of run) send([delta])
        return
      }
      this.refuseTooLarge(
        `document ${doc.docId}: a local change of ${(run[0] as Uint8Array).length} bytes makes ${bytes === undefined ? 'an envelope' : `a ${bytes.length}-byte envelope`} past the limit of ${this.envelopeLimit} (maxEnvelopeBytes, or the transport's largest record); it was not sent and stays in region ${this.region} only`,
      )
      // Durable here all the same: the replica's state holds it.
      doc.unsaved.push(run[0] as Uint8Array)
    }
    let run: Uint8Array[] = []
    let bytes = 0
    for (const delta of pending) {
      if (run.length > 0 && bytes + delta.length > budget) {
        send(run)
        run = []
        bytes = 0
      }
      run.push(delta)
      bytes += delta.length
    }
    if (run.length > 0) send(run)
  }

  /** Counts an envelope not sent for its size; the latest one's error waits to be reported. */
  private refuseTooLarge(message: string): void {
    this.tooLarge++
    this.tooLargeError = new TooLargeError(message)
  }

  /** The TooLargeError of local changes refused since the last call, if any (reported once). */
  private takeTooLarge(): TooLargeError | undefined {
    const e = this.tooLargeError
    this.tooLargeError = undefined
    return e
  }

  private throwTooLarge(): void {
    const e = this.takeTooLarge()
    if (e !== undefined) throw e
  }

  /**
   * Hands `e` to options.onError. A listener that throws does not stop the node — the start()
   * loop and the sender call it from places where a throw would end them — its error becomes a
   * process warning (callListeners).
   */
  private report(e: unknown): void {
    callListeners(`RegionNode ${this.writer} onError, handling ${e instanceof Error ? e.message : String(e)}`, [this.o.onError], e, undefined)
  }

  private writeStore(ops: readonly StoreOp[]): Promise<void> {
    const run = this.storeWrites.then(() => this.o.store.write(ops))
    this.storeWrites = run.catch(() => undefined)
    return run
  }

  /**
   * Adds to `ops` the write-ahead-log entry for `items`, and, while the log (with it) is past
   * WAL_MAX_ENTRIES or WAL_MAX_BYTES or holds a legacy journal, state records for the documents of
   * its oldest entries and the deletion of every entry left without an unfolded document. Returns
   * what to do in memory once the batch is written (nothing changes before: a failed write is retried).
   */
  private async walBatch(items: readonly WalItem[], ops: StoreOp[]): Promise<() => void> {
    const seq = this.walSeq + 1
    const data = items.length === 0 ? undefined : encodeWalEntry(items)
    const fresh: WalEntry | undefined =
      data === undefined ? undefined : { seq, keys: [walKey(seq)], bytes: data.length, docs: new Set(items.map((it) => it.docId)), items: undefined, data, legacy: false }
    const entries = fresh === undefined ? [...this.wal.values()] : [...this.wal.values(), fresh]
    // Unfolded documents left per entry, as documents get folded.
    const left = new Map<WalEntry, number>()
    let count = 0
    let bytes = 0
    for (const e of entries) {
      left.set(e, e.docs.size)
      if (e.docs.size > 0) {
        count++
        bytes += e.bytes
      }
    }
    const folded = new Set<string>()
    const fold = (docId: string): void => {
      if (folded.has(docId)) return
      folded.add(docId)
      const seqs = this.walDocs.get(docId)?.seqs ?? []
      const holding = fresh?.docs.has(docId) === true ? [...seqs, seq] : seqs
      for (const s of holding) {
        const e = s === seq && fresh !== undefined ? fresh : this.wal.get(s)
        if (e === undefined) continue
        const n = (left.get(e) as number) - 1
        left.set(e, n)
        if (n === 0) {
          count--
          bytes -= e.bytes
        }
      }
    }
    for (const e of entries) {
      if (count <= WAL_MAX_ENTRIES && bytes <= WAL_MAX_BYTES && !e.legacy) break
      for (const docId of e.docs) fold(docId)
    }
    // Evicted documents are rebuilt from record and log, their store reads overlapping.
    const records = await Promise.all(
      [...folded].map(async (docId) => {
        const cached = this.docs.get(docId)
        if (cached !== undefined) return encodeDocRecord(cached.typeName, replicaBytes(cached.replica.state(), 'state', docId))
        const built = await this.rebuild(docId, undefined)
        return built === undefined ? undefined : encodeDocRecord(built.type, replicaBytes(built.replica.state(), 'state', docId))
      }),
    )
    let i = 0
    for (const docId of folded) {
      const record = records[i++]
      if (record !== undefined) ops.push({ op: 'put', key: docKey(docId), value: record })
    }
    const dropped = entries.filter((e) => e !== fresh && left.get(e) === 0)
    for (const e of dropped) for (const key of e.keys) ops.push({ op: 'delete', key })
    const written = fresh !== undefined && (left.get(fresh) as number) > 0
    if (written) ops.push({ op: 'put', key: walKey(seq), value: data as Uint8Array })
    return () => {
      for (const e of dropped) {
        this.wal.delete(e.seq)
        this.walBytes -= e.bytes
      }
      for (const docId of folded) {
        for (const s of this.walDocs.get(docId)?.seqs ?? []) this.wal.get(s)?.docs.delete(docId)
        this.walDocs.delete(docId)
      }
      if (!written) return
      const entry = fresh as WalEntry
      for (const docId of folded) entry.docs.delete(docId)
      this.wal.set(seq, entry)
      this.walBytes += entry.bytes
      this.walSeq = seq
      for (const it of items) {
        if (folded.has(it.docId)) continue
        const w = this.walDocs.get(it.docId)
        if (w === undefined) this.walDocs.set(it.docId, { typeName: it.typeName, seqs: [seq] })
        else w.seqs.push(seq)
      }
    }
  }

  /**
   * Starts appending the outbox's durable envelopes, unless an append is running: one append at a
   * time, in outbox order, each taking all that is durable by then, the next started when one
   * returns. A failed append leaves the outbox as it was, for the next start. Runs beside the
   * node's rounds: a round applies records while its envelopes are on their way to the log.
   */
  private startSend(): void {
    // Not while init catches up: a live twin must be ruled out before this writer appends.
    if (this.sender !== undefined || this.durableTotal === this.sentTotal || this.initializing) return
    const run = this.sendBatch().then(
      () => {
        this.sender = undefined
        this.startSend()
      },
      (e: unknown) => {
        this.sender = undefined
        // The start() loop does not wait for appends: it hears of a failure here (the next
        // round appends again). Whoever waits (sent()) sees it too.
        if (this.running) this.report(e)
        throw e
      },
    )
    // Nobody waiting is not an unhandled rejection.
    run.catch(() => undefined)
    this.sender = run
  }

  private async sendBatch(): Promise<void> {
    const n = this.durableTotal - this.sentTotal
    const k = this.sendableKeys
    // Copies: the outbox grows while the append is out, and a transport may read its arguments late.
    // Keyed by document: a Kafka topic keeps one document's envelopes in one partition's order.
    const positions = await this.o.transport.append(this.region, this.outbox.slice(0, n), { keys: this.outboxDocs.slice(0, n), source: this.writer })
    this.noteOwn(positions)
    const keys = this.outboxKeys.slice(0, k)
    if (n === this.outbox.length) {
      this.outbox = []
      this.outboxDocs = []
    } else {
      this.outbox = this.outbox.slice(n)
      this.outboxDocs = this.outboxDocs.slice(n)
    }
    this.outboxKeys = this.outboxKeys.slice(k)
    this.sendableKeys -= k
    this.sentTotal += n
    if (keys.length > 0) await this.writeStore(keys.map((key) => ({ op: 'delete', key })))
  }

  /**
   * Resolves once every envelope durable in the outbox now is appended (later ones may still be on
   * their way); rejects when an append failed.
   */
  private async sent(): Promise<void> {
    const target = this.durableTotal
    while (this.sentTotal < target) {
      this.startSend()
      if (this.sender === undefined) return
      await this.sender
    }
  }

  /**
   * Queues a control record (registration, heartbeat, repair request or answer) behind the outbox's
   * envelopes: the sender appends it in turn, so the own log holds this writer's records in the
   * order made, and a round does not wait for it (await {@link sent} for that). Not saved in the
   * store: one lost to a crash is made again when still needed (a heartbeat, a repair request).
   */
  private appendControl(typeName: string, docId: string, seq: number, payload: Uint8Array): boolean {
    // Envelopes whose store write failed wait at the outbox's end: one queued behind them would
    // make them sendable (the sender takes the outbox in order) before they are durable. Not sent
    // now, then; a control record is made again when still needed.
    if (this.outbox.length > this.durableTotal - this.sentTotal) return false
    const bytes = this.controlBytes(typeName, docId, seq, payload)
    if (bytes.length > this.envelopeLimit) {
      // Not sent (it would hold back the outbox). Repair answers leave out documents too large to
      // send before this point (answerRepairs); this is the guard for anything else.
      this.refuseTooLarge(`${typeName} record ${docId}: ${bytes.length} bytes, past the envelope limit of ${this.envelopeLimit}; not sent`)
      return false
    }
    this.outbox.push(bytes)
    this.outboxDocs.push(undefined)
    this.durableTotal++
    this.startSend()
    return true
  }

  /** The encoded (and, with keys, signed) envelope of a control record of this writer. */
  private controlBytes(typeName: string, docId: string, seq: number, payload: Uint8Array): Uint8Array {
    const env: Envelope = { docId, typeName, region: this.region, writer: this.writer, seq, time: this.hlc.now(), deps: new Uint8Array(0), payload }
    return encodeEnvelope(env, this.o.keys?.get(this.region))
  }

  private noteOwn(positions: readonly LogPosition[]): void {
    for (const p of positions) this.ownAppended.push(p)
  }

  /**
   * Whether `rec` is a record this process appended (so reading it back changes nothing: its
   * writer is this node, already applied, and its control records concern this incarnation). Saves
   * decoding a third of what a node reads. Positions come back in log order, so a queue suffices.
   */
  private isOwnAppend(rec: LogRecord): boolean {
    if (rec.origin !== this.region) return false
    const q = this.ownAppended
    const at = rec.position
    // The queue is in log order: every queued position up to `at` is behind the reader now. A
    // binary search, not a walk: a skipped run (one record for a whole run of own appends) would
    // otherwise compare against each of the run's positions.
    let lo = this.ownHead
    let hi = q.length
    // Usually the next own record is the queue's head (records read one by one), or nothing is due.
    if (lo < hi && q[lo] !== at && this.o.transport.comparePositions(q[lo] as LogPosition, at) > 0) return false
    if (q[lo] === at) hi = lo + 1
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const p = q[mid] as LogPosition
      if (p === at || this.o.transport.comparePositions(p, at) < 0) lo = mid + 1
      else hi = mid
    }
    const own = lo > this.ownHead && q[lo - 1] === at
    this.ownHead = lo
    if (this.ownHead > 1024 && this.ownHead * 2 > q.length) {
      this.ownAppended = q.slice(this.ownHead)
      this.ownHead = 0
    }
    return own
  }

  /** Queues a heartbeat; false when it could not go now (see appendControl). */
  private heartbeat(): boolean {
    this.lastHeartbeat = this.o.now()
    this.retireSilentNodes()
    if (this.heartbeatQueuedAt >= this.sentTotal) return false
    if (!this.appendControl(HEARTBEAT, NO_DOC, this.seq + 1, this.heartbeatPayload())) return false
    this.heartbeatQueuedAt = this.durableTotal - 1
    return true
  }

  /**
   * The heartbeat's payload: the incarnation and the applied prefix of every writer this node has
   * applied — as many writers as fit in an envelope (review finding: with many writers, or long
   * ids, it grew past the envelope limit and no heartbeat went out, so other regions never learned
   * this writer's last sequence number and never repaired its lost envelopes). A writer left out
   * keeps, at each receiver, what an earlier heartbeat said of it (see processControl); the
   * sender's own writer always goes first, and the others left out rotate from one heartbeat to
   * the next, so that every receiver learns of every writer within a few intervals (review
   * finding: the same writers were left out every time, and the frontier never covered them).
   */
  private heartbeatPayload(): Uint8Array {
    const seen = this.seenVector()
    const full = encodeHeartbeat({ incarnation: this.incarnation, seen })
    const room = this.envelopeLimit - this.controlBytes(HEARTBEAT, NO_DOC, this.seq + 1, new Uint8Array(0)).length - 8
    if (full.length <= room) return full
    let budget = room - encodeHeartbeat({ incarnation: this.incarnation, seen: new VersionVector() }).length
    const own: Array<[string, number]> = []
    const others: Array<[string, number]> = []
    for (const e of seen.entries()) (e[0] === this.writer ? own : others).push(e)
    const start = others.length === 0 ? 0 : this.heartbeatRotation % others.length
    const entries = [...own, ...others.slice(start), ...others.slice(0, start)]
    let n = 0
    for (; n < entries.length; n++) {
      budget -= utf8.encode((entries[n] as [string, number])[0]).length + 12
      if (budget < 0) break
    }
    for (;;) {
      const kept = new VersionVector()
      for (const [w, c] of entries.slice(0, n)) kept.set(w, c)
      const payload = encodeHeartbeat({ incarnation: this.incarnation, seen: kept })
      if (payload.length <= room || n === 0) {
        this.heartbeatRotation = start + Math.max(0, n - own.length)
        return payload
      }
      n = Math.floor(n / 2)
    }
  }

  private seenVector(): VersionVector {
    const v = new VersionVector()
    for (const w of this.seen.replicas()) v.set(w, this.seen.contiguous(w))
    return v
  }

  // ---------------------------------------------------------------- consuming

  /** Reads `origin`'s log once (waiting up to `waitMs` for records); returns the last position read, if any. */
  private async consume(origin: string, waitMs = 0): Promise<LogPosition | undefined> {
    const records = await this.o.transport.poll(this.writer, origin, { ...this.pollOptions(origin), waitMs })
    this.readAt = this.o.now()
    this.caughtUp.set(origin, records.length < this.o.pollMax)
    if (records.length === 0) return undefined
    const ops: StoreOp[] = []
    try {
      // Up to ROUND_BYTES of deltas per store batch, as a round applies them (review finding: the
      // start-up catch-up applied a whole poll of large records in one batch, past FileStore's
      // limit, and the node could never start). The rest is read again after the commit.
      this.roundBytes = 0
      let i = 0
      for (; i < records.length && this.roundBytes < ROUND_BYTES; i++) await this.processRecord(records[i] as LogRecord, ops)
      const last = (records[i - 1] as LogRecord).position
      const save = this.positionToSave(origin, last)
      ops.push({ op: 'put', key: posKey(origin), value: utf8.encode(save) })
      await this.persist(ops)
      this.savedPositions.set(origin, save)
      await this.o.transport.commit(this.writer, origin, last)
      if (i < records.length) {
        this.caughtUp.set(origin, false)
        await this.o.transport.rewind(this.writer, origin)
      }
      return last
    } catch (e) {
      // Not the records' fault (store or transport failed): read them again next round.
      this.undoDeadLetters()
      await this.o.transport.rewind(this.writer, origin).catch(() => undefined)
      throw e instanceof InfrastructureFailure ? e.error : e
    }
  }

  /**
   * One read of every region's log. The polls and the commits run concurrently (their round trips
   * overlap); everything read is applied and then saved in one atomic store batch — replica states
   * (once per touched document), the applied set and every log's position — before any position is
   * committed on the transport. A failed poll or commit affects only its log; a failed apply or
   * store write rewinds every log read in this round. The first failure is returned.
   */
  private async consumeAll(): Promise<{ records: number; failure: { error: unknown } | undefined }> {
    // The own log every round only while another instance of the region writes to it (see
    // ownLogPollMs), or until a read of it comes back short (so it cannot fall behind).
    const now = this.o.now()
    const readOwn =
      elapsed(now, this.twinHeardAt) < this.o.livenessMs || elapsed(now, this.lastOwnPoll) >= this.o.ownLogPollMs || this.caughtUp.get(this.region) === false
    if (readOwn) this.lastOwnPoll = now
    const origins = readOwn ? this.o.regions : this.otherRegions
    const polled = await Promise.allSettled(origins.map((origin) => this.o.transport.poll(this.writer, origin, this.pollOptions(origin))))
    this.readAt = this.o.now()
    let failure: { error: unknown } | undefined = this.commitFailure
    this.commitFailure = undefined
    const batches: Array<{ origin: string; last: LogPosition; records: readonly LogRecord[]; skip?: boolean }> = []
    let records = 0
    polled.forEach((r, i) => {
      const origin = origins[i] as string
      if (r.status === 'rejected') {
        failure ??= { error: r.reason }
        if (!this.unreadableSince.has(origin)) this.unreadableSince.set(origin, this.readAt)
        return
      }
      this.unreadableSince.delete(origin)
      this.caughtUp.set(origin, r.value.length < this.o.pollMax)
      const last = r.value[r.value.length - 1]
      if (last === undefined) return
      batches.push({ origin, last: last.position, records: r.value })
      records += r.value.length
    })
    if (this.fatal !== undefined && failure !== undefined) throw failure.error
    if (batches.length === 0) {
      // Idle rounds commit too: a reader whose logs went quiet does not keep its last positions uncommitted.
      if (this.toCommit.size > 0 && elapsed(this.o.now(), this.lastCommitAt) >= this.o.commitIntervalMs) this.startCommits()
      return { records, failure }
    }
    const ops: StoreOp[] = []
    // Logs whose records past the round's byte budget are left for the next round (read again).
    const cut: string[] = []
    const saves: Array<[string, LogPosition]> = []
    try {
      this.roundBytes = 0
      for (const b of batches) {
        // Indexed: an array iterator in this async function allocates a result object per record.
        const recs = b.records
        let i = 0
        // Past ROUND_BYTES of applied deltas the rest waits for the next round (the round's store
        // batch holds what it applied: past a store's batch limit it failed, every round, for good).
        // Records dropped as seen add nothing: a round that reads them again gets past them.
        const upTo = this.rereadUpTo.get(b.origin)
        for (; i < recs.length && this.roundBytes < ROUND_BYTES; i++) {
          const rec = recs[i] as LogRecord
          // Read again after a cut round's rewind, and handled then (saved): not again — a
          // rejected record would be dead-lettered twice, a control record processed twice.
          if (upTo !== undefined && this.o.transport.comparePositions(rec.position, upTo) <= 0) {
            records--
            continue
          }
          const pending = this.processRecord(rec, ops)
          if (pending !== undefined) await pending
        }
        if (upTo !== undefined && i > 0 && this.o.transport.comparePositions((recs[i - 1] as LogRecord).position, upTo) > 0) this.rereadUpTo.delete(b.origin)
        if (i < recs.length) {
          cut.push(b.origin)
          records -= recs.length - i
          if (i === 0) {
            b.skip = true
            continue
          }
          b.last = (recs[i - 1] as LogRecord).position
        }
        const save = this.positionToSave(b.origin, b.last)
        ops.push({ op: 'put', key: posKey(b.origin), value: utf8.encode(save) })
        saves.push([b.origin, save])
      }
      await this.persist(ops)
      for (const [origin, save] of saves) this.savedPositions.set(origin, save)
    } catch (e) {
      // Not the records' fault (store or transport failed): read them again next round.
      this.undoDeadLetters()
      await Promise.all(batches.map((b) => this.o.transport.rewind(this.writer, b.origin).catch(() => undefined)))
      const error = e instanceof InfrastructureFailure ? e.error : e
      if (this.fatal !== undefined) throw error
      return { records, failure: failure ?? { error } }
    }
    // The store holds state and positions now, so the transport commit only spares redelivery: it
    // goes out every commitIntervalMs, behind the rounds (never awaited by one: a slow or vanished
    // log must not stall the others), one batch of commits at a time; the next round reports a failure.
    for (const b of batches) if (b.skip !== true) this.toCommit.set(b.origin, b.last)
    // What was left out comes again, from the committed position: what this round handled up to
    // its cut is skipped then (rereadUpTo).
    for (const b of batches) if (b.skip !== true && cut.includes(b.origin)) this.rereadUpTo.set(b.origin, b.last)
    if (cut.length > 0) await Promise.all(cut.map((origin) => this.o.transport.rewind(this.writer, origin).catch(() => undefined)))
    if (elapsed(this.o.now(), this.lastCommitAt) >= this.o.commitIntervalMs) this.startCommits()
    if (this.fatal !== undefined && failure !== undefined) throw failure.error
    return { records, failure }
  }

  /** The read position to save for `origin`: `last`, or the higher one saved before (see savedPositions). */
  private positionToSave(origin: string, last: LogPosition): LogPosition {
    const saved = this.savedPositions.get(origin)
    if (saved === undefined || saved === last) return last
    try {
      return this.o.transport.comparePositions(saved, last) > 0 ? saved : last
    } catch {
      // A position the transport no longer reads (not one of its own): the new one.
      return last
    }
  }

  /** Own log: what this process appended need not come back (see PollOptions.skipAppendsOf). */
  private pollOptions(origin: string): PollOptions {
    return origin === this.region ? { max: this.o.pollMax, waitMs: 0, skipAppendsOf: this.writer } : { max: this.o.pollMax, waitMs: 0 }
  }

  /**
   * Commits every saved position not committed yet, unless commits are still running (then a
   * later round does, with the positions saved by then).
   */
  private startCommits(): void {
    if (this.commitsInFlight !== undefined || this.toCommit.size === 0) return
    const entries = [...this.toCommit]
    this.toCommit.clear()
    this.lastCommitAt = this.o.now()
    this.commitsInFlight = Promise.allSettled(entries.map(([origin, position]) => this.o.transport.commit(this.writer, origin, position)))
      .then(async (commits) => {
        for (let i = 0; i < entries.length; i++) {
          const c = commits[i] as PromiseSettledResult<void>
          if (c.status === 'fulfilled') continue
          // A rewind only redelivers what is then dropped as already applied.
          await this.o.transport.rewind(this.writer, (entries[i] as [string, LogPosition])[0]).catch(() => undefined)
          this.commitFailure ??= { error: c.reason }
        }
      })
      .finally(() => {
        this.commitsInFlight = undefined
      })
  }

  /** Waits for the running commits, until `until` (ms, Date.now) at the latest. */
  private async commitsSettled(until: number): Promise<void> {
    const inFlight = this.commitsInFlight
    if (inFlight === undefined) return
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([inFlight, new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, until - Date.now()))))])
    clearTimeout(timer)
  }

  private peer(region: string): MutablePeer {
    return this.peers.get(region) as MutablePeer
  }

  /**
   * Verifies, de-duplicates and applies one record. Synchronous when the document is cached (no
   * promise per record on the hot path); returns a promise only when it must load or await.
   */
  private processRecord(rec: LogRecord, ops: StoreOp[]): Promise<void> | undefined {
    // A run of our own appends the transport left out (skipped) changes nothing either.
    if (this.isOwnAppend(rec) || rec.skipped === true) return undefined
    const m = this.peer(rec.origin)
    try {
      if (rec.invalid !== undefined) throw new DecodeError(rec.invalid)
      if (rec.bytes.length > this.o.maxEnvelopeBytes) {
        throw new DecodeError(`envelope: ${rec.bytes.length} bytes exceeds the limit of ${this.o.maxEnvelopeBytes}`)
      }
      const env = decodeEnvelope(rec.bytes, this.o.keys)
      if (env.region !== rec.origin) throw new TypeMismatchError(`envelope of region ${env.region} found in the log of ${rec.origin}`)
      const o = rec.origin
      if (env.writer.length <= o.length + 1 || env.writer.charCodeAt(o.length) !== 47 /* '/' */ || !env.writer.startsWith(o)) {
        throw new TypeMismatchError(`writer ${env.writer} does not belong to region ${rec.origin}`)
      }
      // Another instance writes to our log: read it every round. (Not our own writer id: an own
      // record can arrive before its append has resolved, which isOwnAppend cannot know yet.)
      if (o === this.region && env.writer !== this.writer) this.twinHeardAt = this.o.now()
      // The region was heard up to this time (a time past the accepted clock lead does not count:
      // one such record would hide a stall for as long as it leads).
      else if (o !== this.region) {
        const wall = env.time.wall
        const last = this.heard.get(o)
        if ((last === undefined || wall > last.wall) && wall <= this.readAt + this.o.maxDriftMs) this.heard.set(o, { wall, readAt: this.readAt })
      }
      if (env.typeName.startsWith('$')) return this.settleRecord(rec, m, ops, this.processControl(env, rec.position))
      if (this.seen.hasCounter(env.writer, env.seq)) {
        if (env.writer !== this.writer) m.duplicates++
        return undefined
      }
      this.witness(env.time)
      this.giveWay(env.docId, env.typeName, env.writer, env.payload)
      const cached = this.cachedDoc(env.docId, env.typeName)
      if (cached !== undefined) {
        this.applyRemote(cached, env, m)
        return undefined
      }
      return this.settleRecord(rec, m, ops, this.loadDoc(env.docId, env.typeName).then((doc) => this.applyRemote(doc, env, m)))
    } catch (e) {
      this.rejectRecord(rec, m, e, ops)
      return undefined
    }
  }

  /**
   * Moves the clock past a received envelope's time. A flushed batch's envelopes share one time,
   * so a time equal to the last one witnessed is skipped: the clock is already past it.
   */
  private witness(t: HlcTimestamp): void {
    const last = this.lastWitnessed
    if (last !== undefined && last.wall === t.wall && last.logical === t.logical && last.node === t.node) return
    this.witnessTime(t)
    this.lastWitnessed = t
  }

  /**
   * hlc.witness(t). Its ConfigError is this node's own clock (now() gave no time: a negative, NaN
   * or huge reading), not the record's fault: the round fails and reads the record again, instead
   * of dead-lettering a valid record (review finding: one bad reading dead-lettered it, and only a
   * repair brought it back).
   */
  private witnessTime(t: HlcTimestamp): void {
    try {
      this.hlc.witness(t)
    } catch (e) {
      if (e instanceof ConfigError) throw new InfrastructureFailure(e)
      throw e
    }
  }

  private applyRemote(doc: OpenDoc, env: Envelope, m: MutablePeer): void {
    applyOrThrow(doc.replica, env.payload)
    doc.blank = false
    this.roundBytes += env.payload.length
    doc.unsaved.push(env.payload)
    if (doc.merge === undefined) this.staleVersions.add(doc)
    this.dirtyDocs.add(env.docId)
    this.seen.addRange(env.writer, env.seq, env.seq)
    this.seenDirty = true
    this.knownMax.advance(env.writer, env.seq)
    this.touch(doc, env.writer, env.seq)
    m.applied++
    m.lagMs = Math.max(0, this.readAt - env.time.wall)
  }

  /** Records that `writer`'s update `seq` reached `doc` (for repair answers); saved with the next batch when the bound grows. */
  private touch(doc: OpenDoc, writer: string, seq: number): void {
    const bound = (Math.floor(seq / TOUCH_BUCKET) + 1) * TOUCH_BUCKET
    if (doc.touched.get(writer) >= bound) return
    doc.touched.set(writer, bound)
    this.touchedDirty.add(doc)
  }

  private async settleRecord(rec: LogRecord, m: MutablePeer, ops: StoreOp[], work: Promise<void>): Promise<void> {
    try {
      await work
    } catch (e) {
      this.rejectRecord(rec, m, e, ops)
    }
  }

  /** Dead-letters a record that failed; rethrows store/transport failures (not the record's fault). */
  private rejectRecord(rec: LogRecord, m: MutablePeer, e: unknown, ops: StoreOp[]): void {
    if (e instanceof InfrastructureFailure) throw e
    // Delivered again and failed again: it was rejected (and its dead letter kept) already.
    if (this.isDeadLettered(rec)) return
    this.dlUndo ??= { list: this.deadList.slice(), counter: this.dlCounter, rejected: new Map() }
    this.dlUndo.rejected.set(m, (this.dlUndo.rejected.get(m) ?? 0) + 1)
    this.deadLetter(rec, e, ops)
  }

  /** Whether a dead letter kept holds `rec` (same origin, position and bytes: see deadIndex). */
  private isDeadLettered(rec: LogRecord): boolean {
    if (this.deadIndex.size === 0) return false
    const d = this.deadIndex.get(deadKey(rec.origin, rec.position))
    return d !== undefined && bytesEqual(d.bytes, rec.bytes.length > DEAD_LETTER_BYTES ? rec.bytes.subarray(0, DEAD_LETTER_BYTES) : rec.bytes)
  }

  private indexDeadLetters(): void {
    this.deadIndex.clear()
    for (const { letter } of this.deadList) this.deadIndex.set(deadKey(letter.origin, letter.position), letter)
  }

  /** Takes back the dead letters of a batch whose store write failed (see {@link dlUndo}). */
  private undoDeadLetters(): void {
    const u = this.dlUndo
    if (u === undefined) return
    this.dlUndo = undefined
    this.deadList = u.list
    this.dlCounter = u.counter
    this.indexDeadLetters()
  }

  private deadLetter(rec: LogRecord, e: unknown, ops: StoreOp[]): void {
    const letter: DeadLetter = {
      origin: rec.origin,
      position: rec.position,
      // Kept as stored (deadLetterText: short, well-formed), so a restart reads back the same letter.
      code: deadLetterText(isConcordError(e) ? e.code : 'INTERNAL'),
      error: deadLetterText(e instanceof Error ? e.name : 'Error'),
      message: deadLetterText(e instanceof Error ? e.message : String(e)),
      at: Math.max(0, Math.floor(this.o.now())),
      bytes: rec.bytes.slice(0, DEAD_LETTER_BYTES),
    }
    const key = dlKey(++this.dlCounter)
    this.deadList.push({ key, letter })
    this.deadIndex.set(deadKey(letter.origin, letter.position), letter)
    ops.push({ op: 'put', key, value: encodeDeadLetter(letter) })
    while (this.deadList.length > this.o.deadLetterLimit) {
      const old = this.deadList.shift() as { key: string; letter: DeadLetter }
      const k = deadKey(old.letter.origin, old.letter.position)
      if (this.deadIndex.get(k) === old.letter) this.deadIndex.delete(k)
      ops.push({ op: 'delete', key: old.key })
    }
  }

  private async processControl(env: Envelope, position: LogPosition): Promise<void> {
    this.witnessTime(env.time)
    switch (env.typeName) {
      case HEARTBEAT: {
        const hb = decodeHeartbeat(env.payload)
        if (env.writer === this.writer) {
          if (hb.incarnation !== this.incarnation) this.sight(hb.incarnation, env.time.wall, false, position)
          return
        }
        // A writer the heartbeat left out (too many for one envelope) keeps what the node's last
        // heartbeat said of it; those present replace theirs.
        const before = this.nodeSeen.get(env.writer)
        if (before !== undefined) for (const [w, c] of before.entries()) if (hb.seen.get(w) === 0) hb.seen.set(w, c)
        this.nodeSeen.set(env.writer, hb.seen)
        if (env.time.wall > (this.nodeHeardAt.get(env.writer) ?? Number.NEGATIVE_INFINITY)) this.nodeHeardAt.set(env.writer, env.time.wall)
        this.heardRegions.add(regionOf(env.writer))
        this.knownMax.advance(env.writer, env.seq - 1)
        // Writers of the deployment's regions only, at counters an envelope can carry.
        for (const [w, c] of hb.seen.entries()) if (this.peers.has(regionOf(w))) this.knownMax.advance(w, Math.min(c, MAX_DOT_COUNTER))
        return
      }
      case REGISTER: {
        const r = decodeRegistration(env.payload)
        if (env.writer === this.writer && r.incarnation !== this.incarnation) this.sight(r.incarnation, env.time.wall, r.event === 'stop', position)
        return
      }
      case REPAIR_REQUEST: {
        const req = decodeRepairRequest(env.payload)
        if (env.writer === this.writer || this.answered.has(req.requestId)) return
        const mine = req.responder === this.writer
        const canProxy = req.responder === ANY_RESPONDER && req.target !== env.writer && this.coverage(req.target) > req.from
        if (mine || canProxy) {
          this.answered.add(req.requestId)
          // Bounded: a request id is only looked up while its request may still be redelivered.
          if (this.answered.size > MAX_ANSWERED) this.answered.delete(this.answered.values().next().value as string)
          // A requester's newer request for the same target replaces its older one (asked again while
          // this node's answers were held up, each would have drawn a full answer); past the bound
          // the request is dropped: its requester asks again after repairTimeoutMs.
          const older = this.repairQueue.findIndex((q) => q.requester === env.writer && q.req.target === req.target)
          if (older >= 0) this.repairQueue[older] = { req, requester: env.writer }
          else if (this.repairQueue.length < MAX_REPAIR_QUEUE) this.repairQueue.push({ req, requester: env.writer })
        }
        return
      }
      case REPAIR_RESPONSE: {
        const resp = decodeRepairResponse(env.payload)
        if (resp.requester !== this.writer) return
        const asked = this.myRequests.get(resp.requestId)
        // An answer to a request of this writer no longer remembered (an earlier incarnation's, or
        // one of this incarnation's past the MAX_ANSWERED it keeps): not applied, and not dead-
        // lettered either (a real answer); the gap is asked for again if still open.
        if (asked === undefined && resp.requestId.startsWith(`${this.writer}.`)) return
        if (asked === undefined || asked.target !== resp.target || asked.from !== resp.from || (asked.responder !== ANY_RESPONDER && asked.responder !== env.writer)) {
          // Not an answer to a request of this node (forged, or from a node it did not ask):
          // applied, it would say which updates of the target this node holds.
          throw new TypeMismatchError(`repair answer ${resp.requestId} from ${env.writer} answers no request of ${this.writer} (target ${resp.target}, from ${resp.from})`)
        }
        for (const d of resp.docs) {
          let doc: OpenDoc
          try {
            this.giveWay(d.docId, d.typeName, env.writer, d.state)
            doc = await this.loadDoc(d.docId, d.typeName)
          } catch (e) {
            // A document of another type here (its envelopes were dead-lettered when they came):
            // the rest of the answer still applies, and the repair completes — the gap those
            // envelopes left is closed once, instead of asked for again every repairTimeoutMs
            // (with every answer dead-lettered whole) and holding trimming back for good. Not
            // done for the envelopes themselves: a forged one would then stand in for the real
            // update of that writer and sequence number.
            if (e instanceof DocTypeConflict) continue
            throw e
          }
          applyOrThrow(doc.replica, d.state)
          doc.blank = false
          doc.unsaved.push(d.state)
          if (doc.merge === undefined) this.staleVersions.add(doc)
          this.dirtyDocs.add(d.docId)
          this.touch(doc, resp.target, resp.upTo)
        }
        const key = `${resp.requestId}\u0000${env.writer}`
        if (this.repairsDone.has(key)) return
        const parts = this.repairParts.get(key) ?? new Set<number>()
        parts.add(resp.part)
        this.repairParts.set(key, parts)
        // Bounded: the oldest unfinished answer (a responder whose other parts were lost) goes first.
        if (this.repairParts.size > MAX_ANSWERED) this.repairParts.delete(this.repairParts.keys().next().value as string)
        if (parts.size === resp.parts) {
          this.repairParts.delete(key)
          this.repairsDone.add(key)
          if (this.repairsDone.size > MAX_ANSWERED) this.repairsDone.delete(this.repairsDone.values().next().value as string)
          // The states hold every update of the target up to `upTo`: those sequence numbers are done.
          if (resp.upTo > resp.from) this.seen.addRange(resp.target, resp.from + 1, resp.upTo)
          this.seenDirty = true
          this.knownMax.advance(resp.target, resp.upTo)
          // An answer that claims nothing (its responder could not send every document) leaves the
          // request pending: it times out and goes to another node.
          if (resp.upTo > resp.from && this.pendingRepairs.get(resp.target)?.requestId === resp.requestId) this.pendingRepairs.delete(resp.target)
          const region = regionOf(resp.target)
          if (this.peers.has(region)) this.peer(region).repairsApplied++
        }
        return
      }
      default:
        throw new DecodeError(`unknown control record type ${env.typeName}`)
    }
  }

  private sight(incarnation: string, wall: number, stopped: boolean, position: LogPosition): void {
    if (this.initializing) {
      this.sightings.push({ incarnation, wall, stopped })
      return
    }
    // Logged before this process registered, yet read only now (the start's catch-up ended on an
    // empty poll before it came: a Kafka fetch still on its way): it only says that incarnation was
    // alive before this one started. Alive still, it writes again after the registration.
    if (this.registeredAt !== undefined && this.o.transport.comparePositions(position, this.registeredAt) < 0) return
    // A record of an incarnation silent for livenessMs is history (read late), not a live twin.
    if (!stopped && this.o.now() - wall < this.o.livenessMs) {
      this.fatal = new ConfigError(`RegionNode: duplicate instance id: another live process (incarnation ${incarnation}) writes as ${this.writer}`)
      this.report(this.fatal)
    }
  }

  /** Highest sequence number of `writer` whose effect this node holds. */
  private coverage(writer: string): number {
    return writer === this.writer ? this.seq : this.seen.contiguous(writer)
  }

  // ---------------------------------------------------------------- repair

  private async requestRepairs(): Promise<number> {
    let sent = 0
    const now = this.o.now()
    // The writers due a request; past MAX_REPAIR_REQUESTS_PER_ROUND, the rest go first next round
    // (in the order writers became known, the first ones, asked again every repairTimeoutMs, could
    // keep the later ones from ever being asked — review suspicion).
    const due: Array<{ w: string; region: string; have: number; prev: PendingRepair | undefined; unreadable: boolean }> = []
    for (const [w, max] of this.knownMax.entries()) {
      if (w === this.writer) continue
      const region = regionOf(w)
      if (!this.peers.has(region)) continue
      const have = this.seen.contiguous(w)
      if (max <= have) continue
      // Under plain lag the records are still on their way; only a caught-up reader sees a real gap
      // — or a reader that cannot read the log at all (its region down): then the updates other
      // nodes' heartbeats say they applied come from them, not when the log comes back.
      const unreadable = this.unreadable(region, now)
      if (this.caughtUp.get(region) !== true && !unreadable) continue
      const prev = this.pendingRepairs.get(w)
      if (prev !== undefined && elapsed(now, prev.sentAt) < this.o.repairTimeoutMs) continue
      due.push({ w, region, have, prev, unreadable })
    }
    const start = due.length === 0 ? 0 : this.repairRotation % due.length
    for (let k = 0; k < due.length && sent < MAX_REPAIR_REQUESTS_PER_ROUND; k++) {
      const { w, region, have, prev, unreadable } = due[(start + k) % due.length] as (typeof due)[number]
      const attempts = prev === undefined ? 0 : prev.attempts + 1
      const requestId = `${this.writer}.${this.incarnation}.${++this.requestCounter}`
      // First ask the writer itself; if it does not answer, another node that has seen its updates.
      // A writer whose log cannot be read is likely down with it: other nodes only.
      const responder = unreadable ? this.proxyFor(w, have, attempts, true) : attempts % 2 === 0 ? w : this.proxyFor(w, have, attempts, false)
      // Not queued now: asked again next round, not after repairTimeoutMs.
      if (!this.appendControl(REPAIR_REQUEST, w, have + 1, encodeRepairRequest({ requestId, target: w, from: have, responder }))) continue
      this.pendingRepairs.set(w, { requestId, sentAt: now, attempts })
      this.myRequests.set(requestId, { target: w, from: have, responder })
      if (this.myRequests.size > MAX_ANSWERED) this.myRequests.delete(this.myRequests.keys().next().value as string)
      this.peer(region).repairsRequested++
      sent++
    }
    this.repairRotation = start + sent
    return sent
  }

  /** Whether every read of `region`'s log has failed for repairTimeoutMs or more. */
  private unreadable(region: string, now: number): boolean {
    const since = this.unreadableSince.get(region)
    return since !== undefined && elapsed(now, since) >= this.o.repairTimeoutMs
  }

  /**
   * Who answers a repair of `w` for a writer that did not: a node whose last heartbeat says it has
   * applied `w` past `have` — one node, named, so that one answer comes back (asked of anyone, every
   * node that has applied enough answers with full states). Named nodes rotate from one attempt to
   * the next (one may be gone too), every other time anyone (`*`) instead, in case no heartbeat
   * named the node that could answer.
   */
  private proxyFor(w: string, have: number, attempts: number, everyAttempt: boolean): string {
    if (attempts % 4 === 3) return ANY_RESPONDER
    const candidates: string[] = []
    for (const [node, seen] of this.nodeSeen) if (node !== w && node !== this.writer && seen.get(w) > have) candidates.push(node)
    if (candidates.length === 0) return ANY_RESPONDER
    candidates.sort()
    // The next node each time this function is asked: every attempt while the writer's log is
    // unreadable (attempts 0, 1, 2, 4, ...), else every other one (1, 5, 9, ...: the writer is
    // asked in between). Every attempt with the same node kept one gone for good (scaled in, and a
    // candidate until retired) asked three times before anyone else (review finding).
    const turn = everyAttempt ? attempts - Math.floor(attempts / 4) : Math.floor(attempts / 4)
    return candidates[turn % candidates.length] as string
  }


  private async answerRepairs(): Promise<number> {
    // Applied but not saved (this round's store write failed): the coverage claimed would run
    // ahead of the documents the answer finds in the store's repair index. Answered next round.
    if (this.unsavedApplies) return 0
    // Answers of an earlier round not appended yet (the own log slow or unreachable): the requests
    // wait (at most MAX_REPAIR_QUEUE of them). They were dropped, and their requesters waited
    // repairTimeoutMs to ask again: after a region's log came back empty, recovery took a plateau
    // of 5 s (drill finding).
    if (this.answerQueuedAt >= this.sentTotal) return 0
    // At most MAX_ANSWERS_PER_ROUND requests a round; the rest wait for the next rounds.
    const queue = this.repairQueue.slice(0, MAX_ANSWERS_PER_ROUND)
    this.repairQueue = this.repairQueue.slice(queue.length)
    let sent = 0
    for (let q = 0; q < queue.length; q++) {
      const { req, requester } = queue[q] as (typeof queue)[number]
      const upTo = this.coverage(req.target)
      if (upTo <= req.from) continue
      const docs: RepairDoc[] = []
      // Set when a document had to be left out: the answer then claims nothing (upTo = from), so
      // the requester keeps the gap open and asks another node, instead of taking the writer's
      // updates as applied without that document (review finding: it lost the document for good).
      let incomplete = false
      try {
        for (const key of await this.o.store.keys('dix/')) {
          const docId = key.slice(4)
          // A cached document may hold bounds newer than the store's (saved with the next batch).
          const cached = this.docs.get(docId)
          const bytes = cached === undefined ? await this.o.store.get(key) : undefined
          const touched = cached?.touched ?? (bytes === undefined ? undefined : VersionVector.decode(bytes))
          if (touched === undefined || touched.get(req.target) <= req.from) continue
          const doc = await this.loadDocUnwrapped(docId, undefined)
          let state: Uint8Array
          try {
            state = replicaBytes(doc.replica.deltaSince(), 'deltaSince', docId)
          } catch (e) {
            // The replica's fault, not the store's: this document is left out (reported), the
            // answer goes out with the rest. Thrown, it failed the round and came back every round
            // (review finding: a Yjs document that took a forged update stopped two nodes' rounds).
            this.report(new TypeMismatchError(`document ${docId}: its replica's deltaSince() threw (${e instanceof Error ? e.message : String(e)}); left out of the repair answer to ${requester}, which claims none of ${req.target}'s updates`, { cause: e }))
            incomplete = true
            continue
          }
          docs.push({ docId, typeName: doc.typeName, state })
        }
      } catch (e) {
        // The store failed: this request and the ones after it are answered next round (their ids
        // are already taken as answered, so a redelivery would not bring them back).
        this.repairQueue = queue.slice(q).concat(this.repairQueue)
        throw e
      }
      // Split so that no part's envelope exceeds the envelope limit: the room beside an answer's
      // fixed fields (measured on an empty answer, with part numbers as long as they get), each
      // document counted in UTF-8 bytes with room for its length prefixes. (Half the limit and
      // UTF-16 lengths had made parts past the limit with long or non-Latin ids and names, refused
      // every time: the repair never completed.)
      const bare = encodeRepairResponse({ requestId: req.requestId, requester, target: req.target, from: req.from, upTo, part: docs.length, parts: docs.length, docs: [] })
      const limit = Math.max(1, this.envelopeLimit - this.controlBytes(REPAIR_RESPONSE, req.requestId, upTo + 1, bare).length - 16)
      const docBytes = (d: RepairDoc): number => d.state.length + utf8.encode(d.docId).length + utf8.encode(d.typeName).length + 16
      const parts: RepairDoc[][] = [[]]
      let size = 0
      for (const d of docs) {
        const s = docBytes(d)
        const cur = parts[parts.length - 1] as RepairDoc[]
        if (cur.length > 0 && size + s > limit) {
          parts.push([d])
          size = s
        } else {
          cur.push(d)
          size += s
        }
      }
      // A document whose state alone is past the envelope limit cannot be sent: left out before the
      // parts are numbered, so that the requester, counting parts, still completes with the rest;
      // and the answer then claims none of the writer's updates (as when deltaSince() throws), so
      // that the requester keeps the gap open (its `pending` shows it) rather than closing it
      // without them (review finding: those acknowledged writes were lost there for good, silently).
      const sendable = parts.filter((p) => {
        const only = p[0]
        if (p.length !== 1 || only === undefined || docBytes(only) <= limit) return true
        const probe = encodeRepairResponse({ requestId: req.requestId, requester, target: req.target, from: req.from, upTo, part: parts.length, parts: parts.length, docs: p })
        if (this.controlBytes(REPAIR_RESPONSE, req.requestId, upTo + 1, probe).length <= this.envelopeLimit) return true
        this.refuseTooLarge(`repair answer: document ${only.docId}'s state is past the envelope limit of ${this.envelopeLimit}; left out of the answer to ${requester}, which claims none of ${req.target}'s updates`)
        incomplete = true
        return false
      })
      const claimed = incomplete ? req.from : upTo
      for (let i = 0; i < sendable.length; i++) {
        const payload = encodeRepairResponse({ requestId: req.requestId, requester, target: req.target, from: req.from, upTo: claimed, part: i, parts: sendable.length, docs: sendable[i] as RepairDoc[] })
        if (this.appendControl(REPAIR_RESPONSE, req.requestId, upTo + 1, payload)) {
          sent++
          this.answerQueuedAt = this.durableTotal - 1
        }
      }
    }
    return sent
  }

  // ---------------------------------------------------------------- stability and trimming

  /**
   * Per writer, the sequence number up to which every region has applied its updates (the minimum
   * over every node heard from, this one included, except nodes retired: none of whose heartbeats
   * is younger than `retireAfterMs`). Empty until each region has heartbeated.
   */
  stabilityFrontier(): VersionVector {
    this.retireSilentNodes()
    const reports: Array<[string, VersionVector]> = [[this.writer, this.seenVector().set(this.writer, this.seq)]]
    for (const [w, v] of this.nodeSeen) reports.push([w, v])
    // A retired node's region still counts as heard from: the rule is for a region that has not
    // reported yet, whose applied prefix is unknown. A retired node that comes back gets what was
    // trimmed by repair.
    if (!this.o.regions.every((r) => r === this.region || this.heardRegions.has(r))) return new VersionVector()
    const writers = new Set<string>()
    for (const [, v] of reports) for (const [w] of v.entries()) writers.add(w)
    const out = new VersionVector()
    for (const w of writers) {
      let min = Number.POSITIVE_INFINITY
      for (const [, v] of reports) min = Math.min(min, v.get(w))
      if (min > 0) out.set(w, min)
    }
    return out
  }

  /**
   * Forgets the nodes none of whose heartbeats is younger than retireAfterMs: they no longer hold
   * the stability frontier back, nor are they asked for repairs (proxyFor). Their entries went
   * otherwise unpruned: one per instance id ever heard, with autoscaled ids (review finding). A
   * retired node that heartbeats again is heard from anew.
   */
  private retireSilentNodes(): void {
    const now = this.o.now()
    for (const [w, at] of this.nodeHeardAt) {
      if (now - at <= this.o.retireAfterMs) continue
      this.nodeHeardAt.delete(w)
      this.nodeSeen.delete(w)
    }
  }

  /**
   * Trims the own region's log below the first data envelope some region has not applied yet.
   * Control records in the trimmed range go too. Returns the new earliest position, if trimmed.
   * The log is indexed up to its end as of the call (the position Transport.latest reports) first:
   * a transport that fetches in the background (Kafka) returned nothing to the first call's poll,
   * so the first trimStable of every process trimmed nothing (review finding). That reading runs
   * beside the node's rounds, not in them (it may wait for a consumer group's join); only the cut
   * holds the round lock.
   */
  async trimStable(): Promise<LogPosition | undefined> {
    this.check()
    await this.init()
    const run = this.trimming.then(async () => {
      await this.indexOwnLog()
      return this.exclusive(async () => {
        this.check()
        // Not once close() has begun (its shutdown record may be out already).
        this.checkNotClosing()
        const t = this.o.transport
        const frontier = this.stabilityFrontier()
        let cut = this.trimIndex.findIndex((e) => e.seq > frontier.get(e.writer))
        if (cut === -1) cut = this.trimIndex.length - 1 // keep the last record: trim() removes strictly before
        if (cut <= 0) return undefined
        const position = (this.trimIndex[cut] as { position: LogPosition }).position
        await t.trim(this.region, position)
        // Committed up to what is gone: not delivered again (nor kept pending) after this; a
        // restarted node's trim reader goes on from there and indexes the rest again.
        await t.commit(this.trimReader(), this.region, (this.trimIndex[cut - 1] as { position: LogPosition }).position)
        this.trimIndex = this.trimIndex.slice(cut)
        return position
      })
    })
    this.trimming = run.catch(() => undefined)
    return run
  }

  private trimReader(): string {
    return `${this.writer}#trim`
  }

  /**
   * Indexes the data envelopes of the own region's log for {@link trimStable}, up to its end as of
   * now (else until a poll comes back short), waiting at most CATCH_UP_STALL_MS without a record.
   */
  private async indexOwnLog(): Promise<void> {
    const t = this.o.transport
    const reader = this.trimReader()
    const end = t.latest === undefined ? undefined : await t.latest(this.region)
    // Read up to: the last record this process delivered to the trim reader, else what it committed.
    this.trimReadAt ??= end === undefined ? undefined : await t.committed(reader, this.region)
    const reached = (): boolean => end === undefined || (this.trimReadAt !== undefined && t.comparePositions(this.trimReadAt, end) >= 0)
    let progressAt = Date.now()
    for (;;) {
      this.check()
      this.checkNotClosing()
      const recs = await t.poll(reader, this.region, { max: this.o.pollMax, waitMs: reached() ? 0 : CATCH_UP_POLL_WAIT_MS })
      for (const rec of recs) {
        // Indexed once, in log order: a transport may deliver a record again (Redis hands a
        // reader's pending entries back to it after claimMinIdleMs), and the cut relies on
        // every record before it being indexed.
        if (this.trimReadAt !== undefined && t.comparePositions(rec.position, this.trimReadAt) <= 0) continue
        this.trimReadAt = rec.position
        try {
          const env = decodeEnvelope(rec.bytes, this.o.keys)
          if (!env.typeName.startsWith('$')) this.trimIndex.push({ position: rec.position, writer: env.writer, seq: env.seq })
        } catch {
          // Not a valid envelope (or a skipped placeholder): nobody needs it, it may go.
        }
      }
      if (recs.length > 0) progressAt = Date.now()
      if (recs.length >= this.o.pollMax) continue
      // Short of the end: the rest may still be on its way (a fetch in the background, a join).
      if (reached() || Date.now() - progressAt >= CATCH_UP_STALL_MS) return
    }
  }

  // ---------------------------------------------------------------- observability

  /** Dead-lettered records, oldest first (at most `deadLetterLimit`; persisted in the store). */
  deadLetters(): readonly DeadLetter[] {
    return this.deadList.map((x) => x.letter)
  }

  /** Plain-value metrics. */
  metrics(): NodeMetrics {
    const pendingByRegion = new Map<string, number>()
    for (const [w, max] of this.knownMax.entries()) {
      if (w === this.writer) continue
      const r = regionOf(w)
      // Sequence numbers after the contiguous prefix up to the highest known, less those the
      // applied set holds: from its ranges, not one lookup per number (a wide gap cost a walk of
      // up to a million numbers per metrics call, and OpenTelemetry calls it once per instrument).
      const c = this.seen.contiguous(w)
      let missing = Math.max(0, max - c)
      const ranges = this.seen.flatRanges(w)
      for (let i = 0; i + 1 < ranges.length; i += 2) {
        const lo = Math.max(ranges[i] as number, c + 1)
        const hi = Math.min(ranges[i + 1] as number, max)
        if (hi >= lo) missing -= hi - lo + 1
      }
      pendingByRegion.set(r, (pendingByRegion.get(r) ?? 0) + Math.max(0, missing))
    }
    const now = this.o.now()
    const staleness = (region: string): number | undefined => {
      if (region === this.region) return 0
      const heard = this.heard.get(region)
      // Never heard since this node started: the time since it started. A region in `regions` that
      // no node runs (a misspelt name, a region not deployed) reads as ever staler, not as nothing.
      if (heard === undefined) return this.initializedAt === undefined ? undefined : Math.max(0, now - this.initializedAt)
      // The time since it was read, plus how old it was then: a record whose time led the local
      // clock (a writer whose HLC took a third region's clock, running ahead) counts from when it
      // was read — the figure grows from there, instead of staying 0 until the lead has passed.
      return Math.max(0, now - heard.readAt) + Math.max(0, heard.readAt - heard.wall)
    }
    return {
      writer: this.writer,
      peers: this.o.regions.map((region) => ({ region, ...this.peer(region), pending: pendingByRegion.get(region) ?? 0, stalenessMs: staleness(region) })),
      deadLetters: this.deadList.length,
      cachedReplicas: this.docs.size,
      evictions: this.evictions,
      outbox: this.outbox.length,
      seq: this.seq,
      tooLarge: this.tooLarge,
    }
  }

  /**
   * The OpenTelemetry instruments: one per number of {@link metrics}, per region log (attributes
   * `concord.writer` and `concord.peer_region`) or node-wide (`concord.writer`). One collection
   * reads metrics() once, through a batch callback where the meter has them (every instrument then
   * reports the same moment); each instrument's callback reads it otherwise. Removed again by
   * close(): a closed node no longer reports, nor stays reachable from the meter.
   */
  private registerInstruments(): void {
    const meter = this.o.meter
    if (meter === undefined) return
    type Instrument = ObservableGauge | ObservableCounter
    const perPeer: Array<[Instrument, (p: PeerMetrics) => number | undefined]> = []
    const nodeWide: Array<[Instrument, (m: NodeMetrics) => number]> = []
    const make = (kind: 'gauge' | 'counter', name: string, description: string, unit: string): Instrument =>
      kind === 'gauge' ? meter.createObservableGauge(name, { description, unit }) : meter.createObservableCounter(name, { description, unit })
    const peer = (kind: 'gauge' | 'counter', name: string, description: string, unit: string, pick: (p: PeerMetrics) => number | undefined): void => void perPeer.push([make(kind, name, description, unit), pick])
    const node = (kind: 'gauge' | 'counter', name: string, description: string, unit: string, pick: (m: NodeMetrics) => number): void => void nodeWide.push([make(kind, name, description, unit), pick])
    peer('gauge', 'concord.replication.lag', 'Age of the last applied envelope when it was read; it does not grow while nothing arrives (alert on concord.replication.staleness)', 'ms', (p) => p.lagMs)
    peer('gauge', 'concord.replication.staleness', 'Age of the newest record read from the region (grows while it is not heard)', 'ms', (p) => p.stalenessMs)
    peer('gauge', 'concord.replication.pending', 'Envelopes known but not yet applied', '{envelope}', (p) => p.pending)
    peer('counter', 'concord.replication.applied', 'Envelopes applied, since this process started', '{envelope}', (p) => p.applied)
    peer('counter', 'concord.replication.duplicates', 'Envelopes dropped as already applied, since this process started', '{envelope}', (p) => p.duplicates)
    peer('counter', 'concord.replication.rejected', 'Records rejected and dead-lettered, since this process started', '{record}', (p) => p.rejected)
    peer('counter', 'concord.replication.repairs_requested', 'Repair requests sent, since this process started', '{request}', (p) => p.repairsRequested)
    peer('counter', 'concord.replication.repairs_applied', 'Repair answers applied, since this process started', '{answer}', (p) => p.repairsApplied)
    node('gauge', 'concord.replication.outbox', 'Envelopes persisted but not yet appended to the own region\'s log', '{envelope}', (m) => m.outbox)
    node('gauge', 'concord.replication.dead_letters', 'Dead letters kept (at most deadLetterLimit)', '{record}', (m) => m.deadLetters)
    node('counter', 'concord.replication.too_large', 'Local changes not sent for their size, since this process started', '{change}', (m) => m.tooLarge)
    const report = (observe: (instrument: Instrument, value: number, attributes: Attributes) => void, only?: Instrument): void => {
      const m = this.metrics()
      for (const [instrument, pick] of perPeer) {
        if (only !== undefined && instrument !== only) continue
        for (const p of m.peers) {
          const v = pick(p)
          // Nothing to report yet (stalenessMs before the node has started).
          if (v !== undefined) observe(instrument, v, { 'concord.writer': this.writer, 'concord.peer_region': p.region })
        }
      }
      for (const [instrument, pick] of nodeWide) if (only === undefined || instrument === only) observe(instrument, pick(m), { 'concord.writer': this.writer })
    }
    const all = [...perPeer, ...nodeWide].map(([instrument]) => instrument)
    if (typeof meter.addBatchObservableCallback === 'function' && typeof meter.removeBatchObservableCallback === 'function') {
      const cb: BatchObservableCallback = (r) => report((instrument, value, attributes) => r.observe(instrument, value, attributes))
      meter.addBatchObservableCallback(cb, all)
      this.instruments.push(() => meter.removeBatchObservableCallback(cb, all))
      return
    }
    for (const instrument of all) {
      const cb = (r: ObservableResult): void => report((_, value, attributes) => r.observe(value, attributes), instrument)
      instrument.addCallback(cb)
      this.instruments.push(() => instrument.removeCallback(cb))
    }
  }
}

/**
 * Empties `a` in place. pop() keeps the array's capacity, where `length = 0` gives it up and a new
 * array allocates again on its first push: a document's pending and unsaved lists are refilled
 * every batch.
 */
function clear(a: unknown[]): void {
  while (a.length > 0) a.pop()
}

function regionOf(writer: string): string {
  const i = writer.indexOf('/')
  return i < 0 ? writer : writer.slice(0, i)
}

function applyOrThrow(replica: Replica<unknown>, delta: Uint8Array): void {
  try {
    replica.apply(delta)
  } catch (e) {
    if (isConcordError(e)) throw e
    throw new DecodeError(`apply failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e })
  }
}
