/**
 * RegionNode options, their defaults, and validation (every problem is a ConfigError raised at
 * construction, before any work).
 */
import type { Meter } from '@opentelemetry/api'
import { ConfigError, checkKnownOptions, DEFAULT_MAX_DRIFT_MS, MAX_PAYLOAD_BYTES, MAX_POLL_WAIT_MS, isWellFormed, type Replica, type ReplicaFactory, type Store, type Transport } from '@concord/core'

/** Any replica factory: native, Yjs and Automerge alike. */
export type AnyReplicaFactory = ReplicaFactory<unknown, Replica<unknown>>

/** Batching of local deltas into envelopes. */
export interface BatchOptions {
  /** Flush as soon as this many local deltas are pending (in the `start()` loop). @default 64 */
  readonly maxDeltas?: number
  /** Flush local deltas at the latest this long after the first one (in the `start()` loop). @default 10 */
  readonly maxDelayMs?: number
}

/** Options for {@link RegionNode}. */
export interface RegionNodeOptions {
  /** This node's region; one of `regions`. */
  readonly region: string
  /** Instance id, unique within the region; the writer id is `region/instance`. */
  readonly instance: string
  /** Every region of the deployment; the node consumes each one's log. */
  readonly regions: readonly string[]
  readonly transport: Transport
  readonly store: Store
  /** Replica factories by type name. Type names starting with `$` are reserved. */
  readonly factories: Readonly<Record<string, AnyReplicaFactory>>
  /**
   * HMAC-SHA256 keys by region. When given, every region needs one, envelopes are signed with this
   * region's key, and unsigned, forged or unknown-region envelopes are rejected.
   * @default none (no signing)
   */
  readonly keys?: Readonly<Record<string, Uint8Array>>
  /**
   * Open replicas kept in memory (least recently used go first, approximately: second-chance LRU);
   * colder ones are persisted and dropped. A dropped replica the application still holds keeps
   * working, and opening its document again returns that same object. @default 1000
   */
  readonly cacheSize?: number
  /** Physical clock in ms. @default Date.now */
  readonly now?: () => number
  /**
   * Random source in [0, 1), for incarnation and request ids (simulations pass a seeded one). Half
   * of the incarnation also mixes in the system's random source: two processes given the same
   * seeded source still tell each other apart. @default Math.random
   */
  readonly random?: () => number
  readonly batch?: BatchOptions
  /** Most records read from one log per round. @default 256 */
  readonly pollMax?: number
  /**
   * How long the `start()` loop sleeps when a round found nothing. A transport that can be watched
   * (Transport.watch: memory, Redis, Kafka) wakes it as soon as records arrive, so this only paces
   * heartbeats, commits and repairs there; over one without it, it bounds how late records are read. @default 50
   */
  readonly pollWaitMs?: number
  /**
   * How often the own region's log is read while no other instance of the region writes to it.
   * A node appends to that log itself, so alone in its region it only finds its own records
   * there (recognised and skipped) — reading it every round would cost a third of all reads for
   * nothing. A record of another instance (a twin's registration, heartbeat or delta) switches to
   * reading it every round until that instance has been silent for `livenessMs`. So a new twin's
   * first writes reach this node at most this much later; everything after, at once. A read that
   * comes back full (`pollMax` records) is followed by another the next round, so the log is never
   * left behind. 0 reads it every round. @default 200
   */
  readonly ownLogPollMs?: number
  /** Heartbeat period. @default 1000 */
  readonly heartbeatIntervalMs?: number
  /**
   * How often read positions are committed on the transport. Every round saves what it applied,
   * with the applied set, in the node's store before anything is committed, so a commit only
   * bounds what a restarted node reads again (and recognises and drops): committing every round
   * would cost a commit request per round — on Kafka an OffsetCommit the broker writes to its
   * offsets topic — for records that are never lost either way. `close()` commits what is left.
   * 0 commits every round. @default 1000
   */
  readonly commitIntervalMs?: number
  /**
   * A repair request not answered within this time is re-sent, alternately to any node that has
   * applied enough and to the writer (the first goes to the writer). A writer whose region's log
   * this node has failed to read for this long is asked of other nodes only, and its gaps are asked
   * for though this node has not read the log to its end (the region is likely down). @default 5000
   */
  readonly repairTimeoutMs?: number
  /**
   * Longest `close()` waits for the current round, the last flush and the stop record (a store or
   * log that hangs must not hang a shutdown). Past it, close() finishes closing and throws a
   * TransportError: what the store's outbox holds goes out with the next start on that store, as
   * after a crash. Commits are waited for separately, for at most 5 s. @default 30_000
   */
  readonly closeTimeoutMs?: number
  /**
   * A node whose writer id heartbeated less than this long ago counts as alive: a second node with
   * the same id refuses to start. @default 3 × heartbeatIntervalMs
   */
  readonly livenessMs?: number
  /** Largest accepted clock lead of a remote envelope. @default 300_000 */
  readonly maxDriftMs?: number
  /**
   * A node whose latest heartbeat is older than this (by the time the heartbeat carries) no longer
   * holds the stability frontier back ({@link RegionNode.trimStable}). Without it, a node gone for
   * good (an instance scaled in or replaced under a new id) kept every log it read from being
   * trimmed past what it had applied, for as long as the nodes that had heard it ran. A retired
   * node that comes back is not lost: what was trimmed meanwhile reaches it by repair, as for a
   * node that joins late. `Infinity`: every node heard from stays protected. At least
   * 2 × livenessMs (by default six heartbeat intervals), so that no node the duplicate-id check
   * still counts as alive is retired. Give every node the same heartbeatIntervalMs: a node that
   * heartbeats less often than this is retired between its heartbeats (that costs it a repair; it
   * loses nothing). @default 86_400_000 (a day)
   */
  readonly retireAfterMs?: number
  /**
   * Records larger than this are rejected as oversize before decoding; the node sends no envelope
   * larger than this (nor than its transport's `maxRecordBytes`): a local change past it is kept
   * in this region only and reported as a TooLargeError. Give every region the same value. At
   * least 1 KiB (MIN_ENVELOPE_BYTES), as is the transport's `maxRecordBytes`.
   * @default 8 MiB + 64 KiB
   */
  readonly maxEnvelopeBytes?: number
  /** Dead letters kept (memory and store); older ones are dropped. @default 10_000 */
  readonly deadLetterLimit?: number
  /**
   * When given, metrics are also exported as OpenTelemetry observable instruments (one per number of
   * `metrics()`, names and units in docs/replication.md), until close().
   */
  readonly meter?: Meter
  /**
   * Errors of the `start()` loop (the loop keeps going unless the error is fatal). A round failure
   * that repeats unchanged (same class and message, e.g. a region's log that stays down) is
   * reported at most once every 10 s; watch `metrics().peers[].stalenessMs` for how long.
   * @default ignore
   */
  readonly onError?: (error: unknown) => void
}

/** Options with defaults applied. */
export interface ResolvedOptions {
  readonly region: string
  readonly instance: string
  readonly writer: string
  readonly regions: readonly string[]
  readonly transport: Transport
  readonly store: Store
  readonly factories: ReadonlyMap<string, AnyReplicaFactory>
  readonly keys: ReadonlyMap<string, Uint8Array> | undefined
  readonly cacheSize: number
  readonly now: () => number
  readonly random: () => number
  readonly maxDeltas: number
  readonly maxDelayMs: number
  readonly pollMax: number
  readonly pollWaitMs: number
  readonly ownLogPollMs: number
  readonly heartbeatIntervalMs: number
  readonly commitIntervalMs: number
  readonly repairTimeoutMs: number
  readonly closeTimeoutMs: number
  readonly livenessMs: number
  readonly maxDriftMs: number
  readonly retireAfterMs: number
  readonly maxEnvelopeBytes: number
  readonly deadLetterLimit: number
  readonly meter: Meter | undefined
  readonly onError: (error: unknown) => void
}

function fail(msg: string): never {
  throw new ConfigError(`RegionNode: ${msg}`)
}

function positiveInt(name: string, v: number | undefined, dflt: number, min = 1): number {
  const x = v ?? dflt
  // An unset option whose default is derived from another (livenessMs from heartbeatIntervalMs)
  // is named with that default, not as "undefined".
  if (!Number.isSafeInteger(x) || x < min) fail(`${name} must be an integer >= ${min}, got ${v === undefined ? `${String(x)} (its default, from other options)` : String(v)}`)
  return x
}

function nonNegative(name: string, v: number | undefined, dflt: number): number {
  const x = v ?? dflt
  if (typeof x !== 'number' || !Number.isFinite(x) || x < 0) fail(`${name} must be a finite number >= 0, got ${String(v)}`)
  return x
}

/**
 * {@link nonNegative} for a time the node sleeps on a timer: at most 2^31 - 1 ms (about 24.8 days).
 * Node turns a longer timer into 1 ms, and an idle node would then spin.
 */
function timerMs(name: string, v: number | undefined, dflt: number): number {
  const x = nonNegative(name, v, dflt)
  if (x > MAX_POLL_WAIT_MS) fail(`${name} must be at most ${MAX_POLL_WAIT_MS} ms (the longest timer), got ${String(v)}`)
  return x
}

const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/

/** Every option of {@link RegionNodeOptions} (the compiler keeps the two in step). */
const OPTION_KEYS: Record<keyof RegionNodeOptions, true> = {
  region: true,
  instance: true,
  regions: true,
  transport: true,
  store: true,
  factories: true,
  keys: true,
  cacheSize: true,
  now: true,
  random: true,
  batch: true,
  pollMax: true,
  pollWaitMs: true,
  ownLogPollMs: true,
  heartbeatIntervalMs: true,
  commitIntervalMs: true,
  repairTimeoutMs: true,
  closeTimeoutMs: true,
  livenessMs: true,
  maxDriftMs: true,
  retireAfterMs: true,
  maxEnvelopeBytes: true,
  deadLetterLimit: true,
  meter: true,
  onError: true,
}
const BATCH_KEYS: Record<keyof BatchOptions, true> = { maxDeltas: true, maxDelayMs: true }

/** Whether `t` has every member of the Transport contract (a partial one would fail later, with a TypeError). */
export function isTransport(t: unknown): t is Transport {
  if (typeof t !== 'object' || t === null) return false
  const o = t as Record<string, unknown>
  return typeof o.name === 'string' && ['append', 'poll', 'commit', 'committed', 'rewind', 'earliest', 'trim', 'comparePositions', 'close'].every((m) => typeof o[m] === 'function')
}

function isStore(s: unknown): s is Store {
  if (typeof s !== 'object' || s === null) return false
  const o = s as Record<string, unknown>
  return ['get', 'put', 'delete', 'write', 'keys', 'close'].every((m) => typeof o[m] === 'function')
}

/** Longest type name an envelope carries (receivers refuse longer ones). */
const MAX_TYPE_NAME_BYTES = 128

/** The default and the most of maxEnvelopeBytes: receivers refuse a payload past MAX_PAYLOAD_BYTES. */
const MAX_ENVELOPE_BYTES = MAX_PAYLOAD_BYTES + 64 * 1024

/**
 * The least of maxEnvelopeBytes (and of a transport's maxRecordBytes): below it not even a
 * heartbeat of a few writers fits, so the node could send no control record — no liveness, no
 * repairs — besides refusing every change.
 */
export const MIN_ENVELOPE_BYTES = 1024

function envelopeLimit(v: number | undefined): number {
  const x = positiveInt('maxEnvelopeBytes', v, MAX_ENVELOPE_BYTES, MIN_ENVELOPE_BYTES)
  // Larger envelopes would be sent, and refused by every receiver.
  if (x > MAX_ENVELOPE_BYTES) fail(`maxEnvelopeBytes must be at most ${MAX_ENVELOPE_BYTES} (receivers refuse a payload past ${MAX_PAYLOAD_BYTES} bytes), got ${x}`)
  return x
}

/**
 * retireAfterMs: a number of ms of at least twice livenessMs (no node the duplicate-id check still
 * counts as alive is retired; a heartbeat skipped while the own log is slow does not retire its
 * node either), or Infinity.
 */
function retireAfter(v: number | undefined, livenessMs: number): number {
  const x = v ?? DEFAULT_RETIRE_AFTER_MS
  const least = 2 * livenessMs
  if (typeof x !== 'number' || Number.isNaN(x) || x < least) {
    // Not set: its default is what is too short, for heartbeatIntervalMs (review finding: the
    // message blamed an option the user never set, "got undefined").
    if (v === undefined) fail(`heartbeatIntervalMs makes livenessMs ${livenessMs} ms, and the default retireAfterMs (${x} ms) is below 2 × livenessMs: set retireAfterMs to ${least} or more, or Infinity`)
    fail(`retireAfterMs must be a number of ms >= 2 × livenessMs (${least}), or Infinity; got ${String(v)}`)
  }
  return x
}

function atMost(name: string, v: number, max: number): number {
  if (v > max) fail(`${name} must be at most ${max}; got ${v}`)
  return v
}

/** Default of retireAfterMs: a day. */
const DEFAULT_RETIRE_AFTER_MS = 24 * 60 * 60 * 1000

function fn(name: string, v: unknown): void {
  if (v !== undefined && typeof v !== 'function') fail(`${name} must be a function`)
}

/** Validates options and applies defaults. */
export function resolveOptions(o: RegionNodeOptions): ResolvedOptions {
  if (typeof o !== 'object' || o === null) fail('options are required')
  checkKnownOptions('RegionNode', o, Object.keys(OPTION_KEYS), Object.fromEntries(Object.keys(BATCH_KEYS).map((k) => [k, `batch.${k}`])))
  if (o.batch !== undefined) {
    if (typeof o.batch !== 'object' || o.batch === null) fail('batch must be an object')
    checkKnownOptions('RegionNode batch', o.batch, Object.keys(BATCH_KEYS))
  }
  fn('now', o.now)
  // A clock that gives no number (NaN) would stop heartbeats and liveness checks without a word;
  // one the HLC refuses (negative, from 2^53 - 1 on) made every write and round throw, after a
  // construction that had accepted it.
  if (o.now !== undefined) {
    const t: unknown = o.now()
    if (typeof t !== 'number' || !(Math.floor(t) >= 0 && Math.floor(t) < Number.MAX_SAFE_INTEGER)) fail(`now() must return a finite number of ms from 0 to 2^53 - 2, got ${String(t)}`)
  }
  fn('random', o.random)
  fn('onError', o.onError)
  if (typeof o.region !== 'string' || !ID.test(o.region)) fail(`region must match ${String(ID)}, got ${JSON.stringify(o.region)}`)
  if (typeof o.instance !== 'string' || !ID.test(o.instance)) fail(`instance must match ${String(ID)}, got ${JSON.stringify(o.instance)}`)
  if (!Array.isArray(o.regions) || o.regions.length === 0) fail('regions must list every region of the deployment')
  const seen = new Set<string>()
  for (const r of o.regions) {
    if (typeof r !== 'string' || !ID.test(r)) fail(`region names must match ${String(ID)}, got ${JSON.stringify(r)}`)
    if (seen.has(r)) fail(`region ${r} is listed twice in regions`)
    seen.add(r)
  }
  if (!seen.has(o.region)) fail(`unknown region ${o.region}: not in regions [${o.regions.join(', ')}]`)
  if (!isTransport(o.transport)) fail('transport must be a Transport (name, append, poll, commit, committed, rewind, earliest, trim, comparePositions, close)')
  if (!isStore(o.store)) fail('store must be a Store (get, put, delete, write, keys, close)')
  if (typeof o.factories !== 'object' || o.factories === null) fail('factories are required')
  const factories = new Map<string, AnyReplicaFactory>()
  for (const [name, f] of Object.entries(o.factories)) {
    if (name.startsWith('$') || name.length === 0) fail(`type name ${JSON.stringify(name)} is reserved`)
    // What an envelope carries and every receiver takes: a name they refuse would leave every
    // write of the type in this region (or, unencodable, stop every flush).
    if (!isWellFormed(name) || new TextEncoder().encode(name).length > MAX_TYPE_NAME_BYTES) fail(`type name ${JSON.stringify(name)} must be 1..${MAX_TYPE_NAME_BYTES} bytes of well-formed UTF-16`)
    if (typeof f !== 'object' || f === null || typeof f.create !== 'function') fail(`factory ${name} has no create()`)
    if (f.typeName !== name) fail(`factory registered as ${name} has typeName ${f.typeName}`)
    factories.set(name, f)
  }
  if (factories.size === 0) fail('at least one replica factory is required')
  let keys: Map<string, Uint8Array> | undefined
  if (o.keys !== undefined) {
    if (typeof o.keys !== 'object' || o.keys === null || Array.isArray(o.keys)) fail('keys must be an object of region name to key')
    keys = new Map()
    for (const [region, key] of Object.entries(o.keys)) {
      if (!seen.has(region)) fail(`key given for unknown region ${region}`)
      if (!(key instanceof Uint8Array) || key.length < 16) fail(`key for region ${region} must be a Uint8Array of at least 16 bytes`)
      keys.set(region, key)
    }
    for (const r of o.regions) if (!keys.has(r)) fail(`missing key for region ${r} (keys are configured, so every region needs one)`)
  }
  const heartbeatIntervalMs = positiveInt('heartbeatIntervalMs', o.heartbeatIntervalMs, 1000)
  if (o.meter !== undefined) {
    const m = o.meter as unknown as Record<string, unknown> | null
    if (typeof m !== 'object' || m === null || typeof m.createObservableGauge !== 'function' || typeof m.createObservableCounter !== 'function') {
      fail('meter must be an OpenTelemetry Meter (createObservableGauge and createObservableCounter), e.g. metrics.getMeter("concord")')
    }
  }
  const batch = o.batch ?? {}
  const livenessMs = positiveInt('livenessMs', o.livenessMs, 3 * heartbeatIntervalMs)
  return {
    region: o.region,
    instance: o.instance,
    writer: `${o.region}/${o.instance}`,
    regions: [...o.regions],
    transport: o.transport,
    store: o.store,
    factories,
    keys,
    cacheSize: positiveInt('cacheSize', o.cacheSize, 1000),
    now: o.now ?? Date.now,
    random: o.random ?? Math.random,
    maxDeltas: positiveInt('batch.maxDeltas', batch.maxDeltas, 64),
    maxDelayMs: timerMs('batch.maxDelayMs', batch.maxDelayMs, 10),
    // At most what the Transport contract lets a poll ask for (review finding: 3e9 was accepted, and
    // every round then failed with the transport's ConfigError).
    pollMax: atMost('pollMax', positiveInt('pollMax', o.pollMax, 256), 2 ** 31 - 1),
    pollWaitMs: timerMs('pollWaitMs', o.pollWaitMs, 50),
    ownLogPollMs: nonNegative('ownLogPollMs', o.ownLogPollMs, 200),
    heartbeatIntervalMs,
    commitIntervalMs: nonNegative('commitIntervalMs', o.commitIntervalMs, 1000),
    repairTimeoutMs: positiveInt('repairTimeoutMs', o.repairTimeoutMs, 5000),
    closeTimeoutMs: atMost('closeTimeoutMs', positiveInt('closeTimeoutMs', o.closeTimeoutMs, 30_000), MAX_POLL_WAIT_MS),
    livenessMs,
    maxDriftMs: nonNegative('maxDriftMs', o.maxDriftMs, DEFAULT_MAX_DRIFT_MS),
    retireAfterMs: retireAfter(o.retireAfterMs, livenessMs),
    maxEnvelopeBytes: envelopeLimit(o.maxEnvelopeBytes),
    deadLetterLimit: positiveInt('deadLetterLimit', o.deadLetterLimit, 10_000),
    meter: o.meter,
    onError: o.onError ?? (() => undefined),
  }
}
