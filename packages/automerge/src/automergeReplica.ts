/**
 * An Automerge document as a Concord replica. Deltas are Automerge change chunks (the bytes
 * `Automerge.getLastLocalChange` and `getChangesSince` return), so any Automerge peer can read them.
 */
import * as A from '@automerge/automerge'
import { ConfigError, DecodeError, bytesEqual, callListeners, checkKnownOptions, isConcordError, ownKeysCopy } from '@concord/core'
import type { ConflictEvent, ConflictSide, DeltaOrigin, Replica } from '@concord/core'
import { CHUNK_CHANGE, CHUNK_COMPRESSED_CHANGE, CHUNK_DOCUMENT, changeHash, checkChangeRows, checkDocumentInflatedSize, checkInflatedSize, concatBytes, mayMakeObjects, splitChunks, uncompressedChange, withNullValues, type Chunk } from './chunks.js'

/** Options for {@link AutomergeReplica}. */
export interface AutomergeReplicaOptions<T> {
  /**
   * Automerge actor id (even-length hex). Two live writers must never share one.
   * @default the hex of `replicaId`'s UTF-8 bytes, so conflict events name the replica
   */
  readonly actor?: string
  /**
   * Initial document. Its history is adopted as this replica's (re-rooted on this replica's actor);
   * pass the same `initial` everywhere only if it was created once and shared, never re-created.
   * @default an empty document
   */
  readonly initial?: A.Doc<T>
}

/** Hex of the UTF-8 bytes of `replicaId`: the default actor id. */
export function actorFor(replicaId: string): string {
  let hex = ''
  for (const b of new TextEncoder().encode(replicaId)) hex += b.toString(16).padStart(2, '0')
  return hex
}

const HASH_BYTES = 32
const HEX = /^(?:[0-9a-f]{2})+$/
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

function actorName(actor: string): string {
  try {
    const bytes = new Uint8Array(actor.length / 2)
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(actor.slice(2 * i, 2 * i + 2), 16)
    const s = utf8.decode(bytes)
    // Random actor ids of other Automerge peers rarely decode; if they do, control characters betray them.
    return /^[\x20-\x7e\u00a0-\uffff]+$/.test(s) ? s : actor
  } catch {
    return actor
  }
}

/** Automerge op ids are `counter@actor`; the op with the highest (counter, actor) wins a conflict. */
function compareOpIds(a: string, b: string): number {
  const [ca, aa = ''] = a.split('@')
  const [cb, ab = ''] = b.split('@')
  const d = Number(ca) - Number(cb)
  if (d !== 0) return d
  return aa < ab ? -1 : aa > ab ? 1 : 0
}

function plain(v: unknown): unknown {
  return v !== null && typeof v === 'object' ? (JSON.parse(JSON.stringify(v)) as unknown) : v
}

/** Messages of Automerge's JS change form meeting a value it cannot represent (see checkedChange). */
const JS_FORM_LIMITS = /can't be represented as a JavaScript number|Unable to read JS change/

/** A received change as apply() hands it to Automerge, with what {@link checkNesting} read of it. */
interface Checked {
  readonly bytes: Uint8Array
  /** Its hash; undefined when Automerge's JS change form cannot show it (see checkedChange). */
  readonly hash: string | undefined
  /** The objects it creates; undefined as the hash. */
  readonly made: readonly Made[] | undefined
}

/**
 * A received change, checked before Automerge sees it: it must decode, and encode back to the same
 * bytes (a compressed one: to a change of the same hash, which is what is applied). Automerge's
 * own parser accepts changes it cannot apply or save consistently (it panics later, or a restored
 * state differs); a change that does not survive its own round trip is refused here. A map key
 * `__proto__` is refused too (see checkKeys).
 */
function checkedChange(bytes: Uint8Array, type: number): Checked {
  let again: Uint8Array
  let hash: string | null
  let decoded: A.DecodedChange | undefined
  try {
    decoded = A.decodeChange(bytes)
    hash = decoded.hash ?? null
    again = A.encodeChange(decoded)
  } catch (e) {
    // Values Automerge stores but its JS change form cannot hold (integers past 2^53, NaN and the
    // infinities, byte arrays, 64-bit counters): the round trip is lossy, not the change wrong.
    // Such a change goes to Automerge as it is (its chunk checksum was checked; a compressed one
    // inflated), its hash read from its bytes; an apply that fails on it is rolled back from the
    // checkpoint like any other.
    if (e instanceof Error && JS_FORM_LIMITS.test(e.message)) {
      const plain = type === CHUNK_COMPRESSED_CHANGE ? uncompressedChange(splitChunks(bytes)[0] as Chunk) : bytes
      // Its structure (keys, the objects it makes) read from a copy with null values, else the
      // nesting limit and the __proto__ check did not apply to it (review finding: 3,000 nested
      // maps beside one integer past 2^53 were applied, in 6 s).
      const structure = decoded ?? decodedWithNullValues(plain)
      if (structure === undefined) return { bytes: plain, hash: changeHash(plain), made: undefined }
      checkKeys(structure)
      return { bytes: plain, hash: changeHash(plain), made: checkNesting(structure) }
    }
    throw new DecodeError('automerge: a change does not decode', { cause: e })
  }
  checkKeys(decoded)
  const made = checkNesting(decoded)
  if (type === CHUNK_CHANGE) {
    if (!bytesEqual(again, bytes) && !onlyFloatsDrifted(bytes, decoded, again)) throw new DecodeError('automerge: a change does not encode back to its own bytes')
    return { bytes, hash: hash ?? undefined, made }
  }
  let rehash: string | null
  try {
    rehash = A.decodeChange(again).hash ?? null
  } catch (e) {
    throw new DecodeError('automerge: a compressed change does not decode', { cause: e })
  }
  if (rehash === null || rehash !== hash) throw new DecodeError('automerge: a compressed change does not encode back to the same change')
  return { bytes: again, hash: hash ?? undefined, made }
}

/**
 * Refuses a change that writes the map key `__proto__`. Automerge's JS side cannot hold it: its
 * own proxies refuse it in local writes (a RangeError), and a received one became the prototype
 * of the materialized object (`doc.user.isAdmin` read through it), a value that is no object (a
 * number, a string, null) vanished from value(), and the next edit under the key — received or
 * local — made Automerge panic while patching its JS document (review finding: a received edit
 * was refused for good, so the writer's later changes waited for ever; a local one threw a
 * PanicError after the backend had taken it, and it was never sent). Refused by every replica
 * alike, from the change itself.
 */
function checkKeys(change: A.DecodedChange): void {
  for (const op of change.ops as ReadonlyArray<{ key?: unknown }>) {
    if (op.key === '__proto__') throw new DecodeError('automerge: a change writes the map key "__proto__", which Automerge\'s JS documents cannot hold')
  }
}

/**
 * `A.decodeChange(c)`; when its JS form cannot hold the change's values (see checkedChange), that
 * of a copy with every value null (withNullValues): its keys and objects are the change's, its
 * values and hash are not. Undefined when neither decodes that way.
 */
function decodedUnlessJsLimits(c: Uint8Array): A.DecodedChange | undefined {
  try {
    return A.decodeChange(c)
  } catch (e) {
    if (!(e instanceof Error && JS_FORM_LIMITS.test(e.message))) throw e
  }
  return decodedWithNullValues(c)
}

/** `A.decodeChange` of `c` with every value null (withNullValues); undefined when that does not decode either. */
function decodedWithNullValues(c: Uint8Array): A.DecodedChange | undefined {
  const nulled = withNullValues(c)
  if (nulled === undefined) return undefined
  try {
    return A.decodeChange(nulled)
  } catch {
    return undefined
  }
}

/** What checkedChange read of a change that waited for dependencies (it was checked when it came). */
function queuedChange(bytes: Uint8Array): Checked {
  try {
    const decoded = A.decodeChange(bytes)
    return { bytes, hash: decoded.hash, made: checkNesting(decoded) }
  } catch {
    return { bytes, hash: hashOf(bytes), made: undefined }
  }
}

/**
 * The hash of a change chunk as apply() hands it to Automerge (uncompressed: see checkedChange),
 * read from its bytes, not from its JS form: that form fails on values it cannot hold, and
 * tracking a queued change by it threw a RangeError (review finding: two changes of one writer,
 * the second holding 2^53, arriving before the first, recursed until the stack overflowed, and the
 * value was lost).
 */
function hashOf(change: Uint8Array): string {
  return change[8] === CHUNK_CHANGE ? changeHash(change) : (A.decodeChange(change).hash as string)
}

/**
 * Whether `again`, the JS-form round trip of the change `bytes` (`decoded`), differs from it only as Automerge's
 * encoder changes some float64 values (by a unit in the last place: about one random float in
 * eight; every other region refused such a change of a writer, and the writer's later changes
 * waited for it for ever — review finding): the same length, the decoded changes equal but for
 * float64 values a few units apart, and the bytes equal but for the chunk checksum and at most one
 * run of up to 8 bytes (a float's) per drifted value. Anything else — a non-canonical encoding,
 * which the round trip exists to catch — still fails.
 */
function onlyFloatsDrifted(bytes: Uint8Array, decoded: A.DecodedChange, again: Uint8Array): boolean {
  if (bytes.length !== again.length) return false
  let b: A.DecodedChange
  try {
    b = A.decodeChange(again)
  } catch {
    return false
  }
  const drifted = driftedFloats(decoded, b)
  if (drifted <= 0) return false
  // Chunk layout: 4 magic bytes, then the 4-byte checksum (which covers the rest, so it differs too).
  let runs = 0
  for (let i = 8; i < bytes.length; ) {
    if (bytes[i] === again[i]) {
      i++
      continue
    }
    const start = i
    while (i < bytes.length && bytes[i] !== again[i]) i++
    if (i - start > 8) return false
    runs++
  }
  for (let i = 0; i < 4; i++) if (bytes[i] !== again[i]) return false
  return runs <= drifted
}

/** Float64 values a few ULPs apart between two decodings of one change; -1 when anything else differs. */
function driftedFloats(a: A.DecodedChange, b: A.DecodedChange): number {
  const { hash: _ha, ops: opsA, ...restA } = a
  const { hash: _hb, ops: opsB, ...restB } = b
  if (JSON.stringify(restA) !== JSON.stringify(restB) || opsA.length !== opsB.length) return -1
  let drifted = 0
  for (let i = 0; i < opsA.length; i++) {
    const { value: va, ...oa } = opsA[i] as { value?: unknown; datatype?: string }
    const { value: vb, ...ob } = opsB[i] as { value?: unknown; datatype?: string }
    if (JSON.stringify(oa) !== JSON.stringify(ob)) return -1
    if (Object.is(va, vb)) continue
    if ((oa as { datatype?: string }).datatype !== 'float64' || typeof va !== 'number' || typeof vb !== 'number' || !Number.isFinite(va) || !Number.isFinite(vb)) return -1
    // A few units in the last place of the larger magnitude.
    if (Math.abs(va - vb) > 4 * Number.EPSILON * Math.max(Math.abs(va), Math.abs(vb), Number.MIN_VALUE)) return -1
    drifted++
  }
  return drifted
}

/**
 * Most levels of objects one change may nest inside each other, and the document too (readJson's
 * limit for the native types): an object's depth is its parent's (the object its make op names,
 * the root's is 0) plus one.
 */
const MAX_CHANGE_NESTING = 64
const ROOT = '_root'

/** An object a change creates: its id, and its depth below `obj`, the object it was created under that the change did not create. */
interface Made {
  readonly id: string
  readonly obj: string
  readonly depth: number
}

/**
 * Refuses a change that nests more than MAX_CHANGE_NESTING objects it creates inside each other:
 * Automerge's cost grows faster than linearly with such nesting (a 3.9 KB change of 2,000 nested
 * maps took 2.4 s to apply, and at depth 12,000 value() overflowed the stack — review finding).
 * Returns the objects it creates, for the document's limit (see AutomergeReplica.placeObjects).
 */
function checkNesting(change: A.DecodedChange): Made[] {
  const made = new Map<string, Made>()
  const ops = change.ops as ReadonlyArray<{ action?: string; obj?: string }>
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i] as { action?: string; obj?: string }
    if (typeof op.action !== 'string' || !op.action.startsWith('make')) continue
    const obj = op.obj ?? ROOT
    const parent = made.get(obj)
    const depth = (parent?.depth ?? 0) + 1
    if (depth > MAX_CHANGE_NESTING) throw new DecodeError(`automerge: a change nests objects more than ${MAX_CHANGE_NESTING} deep`)
    const id = `${change.startOp + i}@${change.actor}`
    made.set(id, { id, obj: parent?.obj ?? obj, depth })
  }
  return [...made.values()]
}

function documentTooDeep(): DecodeError {
  return new DecodeError(`automerge: a change nests objects more than ${MAX_CHANGE_NESTING} deep in the document`)
}

/** Past this many bytes of changes since the last full save, the rollback checkpoint is saved anew. */
const CHECKPOINT_MIN_BYTES = 1024 * 1024

/** Encodes heads as concatenated 32-byte hashes, in Automerge's (sorted) order. */
export function encodeHeads(heads: readonly string[]): Uint8Array {
  const out = new Uint8Array(heads.length * HASH_BYTES)
  heads.forEach((h, i) => {
    for (let j = 0; j < HASH_BYTES; j++) out[i * HASH_BYTES + j] = parseInt(h.slice(2 * j, 2 * j + 2), 16)
  })
  return out
}

/** Decodes {@link encodeHeads}; throws DecodeError unless the length is a multiple of 32. */
export function decodeHeads(bytes: Uint8Array): string[] {
  if (!(bytes instanceof Uint8Array) || bytes.length % HASH_BYTES !== 0) throw new DecodeError('automerge: version is not a list of 32-byte hashes')
  const heads: string[] = []
  for (let i = 0; i < bytes.length; i += HASH_BYTES) {
    let h = ''
    for (let j = i; j < i + HASH_BYTES; j++) h += (bytes[j] as number).toString(16).padStart(2, '0')
    heads.push(h)
  }
  return heads
}

/**
 * One Automerge document as a {@link Replica}.
 *
 * - `change(fn)` is `Automerge.change`; each call that changes something emits its change as one
 *   local delta;
 * - `version()` is the encoded heads; `deltaSince(heads)` is the changes after the heads this replica
 *   knows — heads it does not know are ignored, so the holder may receive changes it already has,
 *   which `apply` absorbs (it is idempotent);
 * - `apply` checks the chunk framing and checksums, loads document chunks, checks that every change
 *   decodes and encodes back to its own bytes, then applies all changes at once with
 *   `Automerge.applyChanges` (which parses every change before applying any); changes whose
 *   dependencies are missing are queued by Automerge until they arrive;
 * - concurrent assignments to one map key or list slot touched by a remote apply are reported as
 *   `concurrent-assign` conflict events (winner and losers with their op ids and actors).
 */
export class AutomergeReplica<T = Record<string, unknown>> implements Replica<T> {
  readonly typeName = 'automerge'
  readonly replicaId: string
  /** Actor id of this replica's changes. */
  readonly actor: string
  private current: A.Doc<T>
  /** True while the history order is the canonical one (see {@link state}), so `save()` is canonical. */
  private canonical = true
  /** Changes queued by Automerge for missing dependencies, by hash. */
  private readonly pending = new Map<string, Uint8Array>()
  /** `current` was rebuilt since `pending` was last handed to Automerge: its queue lacks them. */
  private queueLost = false
  /**
   * Depth of every object the changes seen here created (see MAX_CHANGE_NESTING), by id: read from
   * the changes, so the same on every replica whatever the order changes arrived in (an object's
   * path in the document is not: a deleted or concurrently overwritten object has none). Kept
   * through rebuilds and refusals (an entry of a change taken back is never read as another's:
   * object ids are op ids).
   */
  private readonly depths = new Map<string, number>()
  /**
   * The document as a full save plus the changes saved incrementally since (`A.saveIncremental`),
   * taken before each remote apply: what a refused apply rolls back to. Automerge panics on some
   * changes only while applying them, and leaves the document unusable; loading this brings it back.
   * Undefined until the first apply (and after a rebuild): taken then.
   */
  private checkpoint: { parts: Uint8Array[]; base: number; since: number } | undefined
  /** Set while {@link applyWithoutQueue} tries a batch again: a failure then is the batch's. */
  private retrying = false
  // Replaced, never changed in place: a listener that unsubscribes during a call does not make the next one miss it.
  private listeners: ReadonlyArray<(delta: Uint8Array, origin: DeltaOrigin) => void> = []
  private conflictListeners: ReadonlyArray<(event: ConflictEvent) => void> = []

  constructor(replicaId: string, options: AutomergeReplicaOptions<T> = {}) {
    if (typeof replicaId !== 'string' || replicaId === '') throw new ConfigError('AutomergeReplica: replicaId must be a non-empty string')
    if (typeof options !== 'object' || options === null) throw new ConfigError('AutomergeReplica: options must be an object')
    checkKnownOptions('AutomergeReplica', options, ['actor', 'initial'])
    const actor = options.actor ?? actorFor(replicaId)
    if (!HEX.test(actor)) throw new ConfigError(`AutomergeReplica: actor must be even-length lowercase hex, got ${actor}`)
    this.replicaId = replicaId
    this.actor = actor
    this.current = options.initial === undefined ? A.init<T>({ actor }) : A.clone(options.initial, { actor })
    this.canonical = options.initial === undefined
  }

  /** The current document (immutable: read it, change it through {@link change}). */
  get doc(): A.Doc<T> {
    return this.current
  }

  /** Makes a local change; emits it as one local delta unless `fn` changed nothing. */
  change(fn: A.ChangeFn<T>, message?: string): void {
    const before = this.current
    const next = message === undefined ? A.change(before, fn) : A.change(before, { message }, fn)
    if (next === before) return
    const c = A.getLastLocalChange(next) as Uint8Array
    // Refused here as every other replica would refuse it (see checkNesting, placeObjects): kept,
    // it would live in this region only. The document stays as it was. Decoded only when it
    // creates objects (a decode costs a quarter of a small edit).
    // A change whose values Automerge's JS change form cannot hold (2^53, say) is placed as a
    // received one is (see checkedChange): not at all (review finding: its decode threw a
    // RangeError out of change(), the change stayed in the document unsent, and every later
    // change() threw "Attempting to change an outdated document").
    try {
      // Refused here as every other replica would refuse it (see MAX_CHANGE_OPS).
      checkChangeRows(c)
    } catch (e) {
      this.dropLastChange(next, c)
      throw e
    }
    if (mayMakeObjects(c)) {
      try {
        const decoded = decodedUnlessJsLimits(c)
        if (decoded !== undefined) {
          const placed = new Map<string, number>()
          this.placeObjects(checkNesting(decoded), placed, next)
          for (const [id, d] of placed) this.depths.set(id, d)
        }
      } catch (e) {
        this.dropLastChange(next, c)
        throw e
      }
    }
    this.current = next
    const ls = this.listeners
    if (ls.length === 0) return
    callListeners(this.typeName, ls, c, 'local')
  }

  /**
   * Plain JS copy of the document. A map key `__proto__` cannot come from a change (see
   * checkKeys); one of an `initial` document made elsewhere is an own key of its object, not its
   * prototype (see ownKeysCopy).
   */
  value(): T {
    return ownKeysCopy(A.toJS(this.current)) as T
  }

  version(): Uint8Array {
    return encodeHeads(A.getHeads(this.current))
  }

  /** The chunks of `deltas` concatenated (apply takes any run of chunks; each is checked there). */
  mergeDeltas(deltas: readonly Uint8Array[]): Uint8Array {
    for (const d of deltas) splitChunks(d)
    return concatBytes(deltas)
  }

  deltaSince(version?: Uint8Array): Uint8Array {
    if (version === undefined) return concatBytes([this.save(), ...this.pendingBytes()])
    const known = decodeHeads(version).filter((h) => A.hasHeads(this.current, [h]))
    const changes = A.getChangesSince(this.current, known)
    return concatBytes(this.pending.size === 0 ? changes : [...changes, ...this.pendingBytes()])
  }

  /**
   * Joins changes or saved documents (concatenated chunks). Bytes that do not frame, load or parse
   * throw {@link DecodeError} and leave the document unchanged.
   */
  apply(delta: Uint8Array): void {
    if (!(delta instanceof Uint8Array)) throw new DecodeError('automerge: delta must be a Uint8Array')
    const chunks = splitChunks(delta)
    const checked: Checked[] = []
    for (const c of chunks) {
      if (c.type === CHUNK_DOCUMENT) {
        checkDocumentInflatedSize(c)
        let loaded: A.Doc<unknown>
        let all: Uint8Array[]
        try {
          loaded = A.load(c.bytes)
          all = A.getAllChanges(loaded)
        } catch (e) {
          throw new DecodeError('automerge: document chunk does not load', { cause: e })
        }
        for (const ch of all) checked.push(checkedChange(ch, CHUNK_CHANGE))
      } else {
        // Its op count, read from its columns, before Automerge expands them (see MAX_CHANGE_OPS).
        if (c.type === CHUNK_COMPRESSED_CHANGE) {
          checkInflatedSize(c)
          checkChangeRows(uncompressedChange(c))
        } else checkChangeRows(c.bytes)
        checked.push(checkedChange(c.bytes, c.type))
      }
    }
    if (checked.length === 0) return
    // The document's nesting limit, before Automerge sees the batch (it is slow on deep nesting):
    // the objects of every change whose parents are known by now. Those of changes waiting for
    // dependencies, here or queued, are placed once Automerge applied them (below).
    const placed = new Map<string, number>()
    const unplaced = this.placeAll(checked, placed)
    const changes = checked.map((c) => c.bytes)
    // Changes waiting for dependencies go in again after the document was rebuilt (state() in
    // canonical order, or after a refused batch): the new document has none queued, and Automerge
    // applies only what it holds when their dependencies arrive.
    const requeue = this.queueLost && this.pending.size > 0
    if (requeue) for (const c of this.pendingBytes()) changes.push(c)
    const queuedBefore = this.pending.size > 0
    this.takeCheckpoint()
    const headsBefore = A.getHeads(this.current)
    const missingBefore = this.pending.size === 0 ? NO_HEADS : A.getMissingDeps(this.current, [])
    let conflictPaths: A.Prop[][] | undefined
    const wantConflicts = this.conflictListeners.length > 0
    let next: A.Doc<T>
    let headsAfter: A.Heads
    try {
      ;[next] = A.applyChanges(
        this.current,
        changes,
        wantConflicts
          ? {
              patchCallback: (patches) => {
                for (const p of patches) if (p.action === 'put' && p.conflict === true) (conflictPaths ??= []).push(p.path)
              },
            }
          : undefined,
      )
      headsAfter = A.getHeads(next)
      // Changes Automerge applied whose objects were not placed before: those that waited for
      // dependencies (in this batch, or queued by an earlier one). One too deep is taken back
      // with the batch (below: the batch goes in again without the queue).
      if ((unplaced.size > 0 || queuedBefore) && !sameHeads(headsBefore, headsAfter)) this.placeReleased(next, headsBefore, unplaced, placed)
      this.trackPending(next, changes)
    } catch (e) {
      this.undoFailedApply(headsBefore, missingBefore)
      // Once: the retry's own failure is the batch's (an apply that failed again each time
      // recursed until the stack overflowed — review finding).
      if (this.pending.size > 0 && !this.retrying) return this.applyWithoutQueue(delta)
      throw e instanceof DecodeError ? e : new DecodeError('automerge: changes do not parse or apply', { cause: e })
    }
    this.current = next
    for (const [id, d] of placed) this.depths.set(id, d)
    if (requeue) this.queueLost = false
    if (sameHeads(headsBefore, headsAfter)) return
    if (this.canonical) this.canonical = appendedLinearly(next, headsBefore)
    callListeners(this.typeName, this.listeners, delta, 'remote')
    if (conflictPaths !== undefined) for (const path of conflictPaths) this.reportConflict(path)
  }

  /**
   * A batch refused while changes wait for dependencies. A waiting change may be what failed,
   * released by this batch (a forged one Automerge panics on, or one nesting too deep): it would
   * refuse every batch that brings its dependency, for good (review finding). So the batch is
   * tried once more on the history alone. Refused again, it is what failed: the waiting changes
   * stay queued (they were dropped with it, and lost when their dependency came — review
   * finding). Applied, the waiting changes go in again one by one, and only one refused on its
   * own is dropped.
   */
  private applyWithoutQueue(delta: Uint8Array): void {
    const queued = [...this.pending.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    this.dropQueue()
    this.retrying = true
    try {
      this.apply(delta)
    } catch (e) {
      for (const [h, c] of queued) this.pending.set(h, c)
      this.queueLost = true
      throw e
    } finally {
      this.retrying = false
    }
    for (const [, c] of queued) {
      try {
        this.apply(c)
      } catch (e) {
        if (!(e instanceof DecodeError)) throw e
      }
    }
  }

  /**
   * Places the objects of the `checked` changes whose parents are known (in the document or
   * created earlier in the batch, whatever the batch's order) into `placed`; throws DecodeError
   * when one is deeper than MAX_CHANGE_NESTING. Returns the others, by hash.
   */
  private placeAll(checked: readonly Checked[], placed: Map<string, number>): Map<string, readonly Made[]> {
    let left = checked.filter((c) => c.made !== undefined && c.made.length > 0)
    for (let progress = true; progress && left.length > 0; ) {
      progress = false
      const rest: Checked[] = []
      for (const c of left) {
        if (this.placeObjects(c.made as readonly Made[], placed, this.current)) progress = true
        else rest.push(c)
      }
      left = rest
    }
    return new Map(left.map((c) => [c.hash as string, c.made as readonly Made[]]))
  }

  /** Places the objects of the changes `doc` gained since `heads` that were not placed before it (in causal order, so their parents are). */
  private placeReleased(doc: A.Doc<T>, heads: A.Heads, unplaced: ReadonlyMap<string, readonly Made[]>, placed: Map<string, number>): void {
    for (const m of A.getChangesMetaSince(doc, heads)) {
      let made = unplaced.get(m.hash)
      if (made === undefined) {
        const queued = this.pending.get(m.hash)
        if (queued === undefined) continue
        made = queuedChange(queued).made
      }
      if (made !== undefined) this.placeObjects(made, placed, doc)
    }
  }

  /**
   * Adds the depths of the objects `made` to `placed` when the objects they were created under
   * are known (in `placed`, in {@link depths}, or in `doc`); false, adding none, when one is not.
   * Throws DecodeError, adding none, when one would be deeper than MAX_CHANGE_NESTING: nesting
   * built up over several changes costs Automerge as much as in one (50 changes of 60 nested maps
   * took 16 s to apply, 10 KB in all), and value() overflows the stack past some thousands of
   * levels (review finding).
   */
  private placeObjects(made: readonly Made[], placed: Map<string, number>, doc: A.Doc<T>): boolean {
    const bases = new Map<string, number>()
    for (const m of made) {
      if (bases.has(m.obj)) continue
      const d = this.depthOf(m.obj, placed, doc)
      if (d === undefined) return false
      bases.set(m.obj, d)
    }
    for (const m of made) if ((bases.get(m.obj) as number) + m.depth > MAX_CHANGE_NESTING) throw documentTooDeep()
    for (const m of made) placed.set(m.id, (bases.get(m.obj) as number) + m.depth)
    return true
  }

  /** Depth of the object `obj`; undefined when it is not known yet. */
  private depthOf(obj: string, placed: ReadonlyMap<string, number>, doc: A.Doc<T>): number | undefined {
    if (obj === ROOT) return 0
    const d = placed.get(obj) ?? this.depths.get(obj)
    if (d !== undefined) return d
    // Not from a change read here: of the `initial` document, or of a change whose ops Automerge's
    // JS form cannot show (see checkedChange). Its path in the document, when it has one.
    try {
      return A.getBackend(doc).objInfo(obj).path?.length ?? 0
    } catch {
      return undefined
    }
  }

  /**
   * Takes back the local change `c` that made `doc` (the document before it is not kept: an
   * Automerge document is changed in place, its older versions share it): rebuilt from the
   * history without it. Only for a refused local change.
   */
  private dropLastChange(doc: A.Doc<T>, c: Uint8Array): void {
    const hash = hashOf(c)
    const metas = A.getChangesMetaSince(doc, [])
    const kept = A.getAllChanges(doc).filter((_, i) => (metas[i] as A.ChangeMetadata).hash !== hash)
    const [rebuilt] = A.applyChanges(A.init<T>({ actor: this.actor }), kept)
    this.current = rebuilt
    this.canonical = false
    this.checkpoint = undefined
    // Automerge's queue did not come along: it goes in again with the next apply.
    if (this.pending.size > 0) this.queueLost = true
  }

  /** Forgets the changes waiting for dependencies: the document is rebuilt from its history alone (A.save keeps Automerge's queue). */
  private dropQueue(): void {
    const [rebuilt] = A.applyChanges(A.init<T>({ actor: this.actor }), A.getAllChanges(this.current))
    this.current = rebuilt
    this.pending.clear()
    this.queueLost = false
    this.canonical = false
    this.checkpoint = undefined
  }

  /**
   * Takes back what a refused `applyChanges` left behind. Automerge parses a whole batch before it
   * applies any of it, but then applies it change by change: a change it refuses (a second change
   * under one actor's sequence number, say) can come after others it applied, or after a dependency
   * that released queued changes. When the history or the queue moved, the document is rebuilt from
   * the history it had (`heads`); the changes waiting for dependencies stay in `pending` (apply()
   * hands them over again). Only on that failure.
   */
  private undoFailedApply(heads: A.Heads, missing: readonly string[]): void {
    try {
      if (!this.takeBack(heads, missing)) return
    } catch (e) {
      if (isConcordError(e)) throw e
      // Automerge panicked mid-apply and left the document unusable (its history cannot be read
      // back): it comes back from the checkpoint taken before the apply.
      this.current = A.load<T>(concatBytes((this.checkpoint as { parts: Uint8Array[] }).parts), { actor: this.actor })
      this.canonical = false
    }
    this.checkpoint = undefined
    this.queueLost = true
  }

  /** The rebuild of {@link undoFailedApply} from the document's own history; false when nothing moved. */
  private takeBack(heads: A.Heads, missing: readonly string[]): boolean {
    const doc = this.current
    const missingNow = A.getMissingDeps(doc, [])
    if (sameHeads(heads, A.getHeads(doc)) && missingNow.length === missing.length && missingNow.every((h) => missing.includes(h))) return false
    const added = new Set(A.getChangesMetaSince(doc, heads).map((m) => m.hash))
    const metas = A.getChangesMetaSince(doc, [])
    const all = A.getAllChanges(doc)
    const kept = all.filter((_, i) => !added.has((metas[i] as A.ChangeMetadata).hash))
    const [rebuilt] = A.applyChanges(A.init<T>({ actor: this.actor }), kept)
    this.current = rebuilt
    return true
  }

  /** `A.save` of the document; save() moves saveIncremental's mark, so the checkpoint restarts from it. */
  private save(): Uint8Array {
    const saved = A.save(this.current)
    this.checkpoint = { parts: [saved], base: saved.length, since: 0 }
    return saved
  }

  /**
   * Brings {@link checkpoint} up to the current document: the changes since it was last taken
   * (`A.saveIncremental`, cheap), or a full save the first time and once those pass the save's size.
   */
  private takeCheckpoint(): void {
    const cp = this.checkpoint
    if (cp !== undefined && cp.since <= Math.max(cp.base, CHECKPOINT_MIN_BYTES)) {
      const inc = A.saveIncremental(this.current)
      if (inc.length > 0) {
        cp.parts.push(inc)
        cp.since += inc.length
      }
      return
    }
    this.save()
  }

  /**
   * Automerge queues changes whose dependencies are missing but does not expose them: `save()`
   * keeps them (Automerge 3) yet `getAllChanges()` of the loaded document, which `apply` reads,
   * does not, and `getChangesSince()` leaves them out. They are kept here (by hash) so that
   * `state()` and `deltaSince()` carry them as change chunks, as Yjs does with its pending structs.
   * Only runs when something is actually queued.
   */
  private trackPending(doc: A.Doc<T>, batch: readonly Uint8Array[]): void {
    if (A.getMissingDeps(doc, []).length === 0) {
      if (this.pending.size > 0) this.pending.clear()
      return
    }
    for (const c of batch) this.pending.set(hashOf(c), c)
    for (const h of [...this.pending.keys()]) if (A.hasHeads(doc, [h])) this.pending.delete(h)
  }

  /** Queued changes in hash order, as one byte string (empty when none). */
  private pendingBytes(): Uint8Array[] {
    return [...this.pending.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, c]) => c)
  }

  /** True while some applied changes wait for missing dependencies. */
  get hasPending(): boolean {
    return this.pending.size > 0
  }

  private reportConflict(path: A.Prop[]): void {
    let parent: unknown = this.current
    for (const p of path.slice(0, -1)) {
      if (parent === null || typeof parent !== 'object') return
      parent = (parent as Record<string | number, unknown>)[p]
    }
    const prop = path[path.length - 1]
    if (prop === undefined || parent === null || typeof parent !== 'object') return
    const conflicts = A.getConflicts(parent as A.Doc<unknown>, prop)
    if (conflicts === undefined) return
    const ids = Object.keys(conflicts).sort(compareOpIds)
    if (ids.length < 2) return
    const side = (opId: string): ConflictSide => ({
      value: plain(conflicts[opId]),
      replica: actorName(opId.slice(opId.indexOf('@') + 1)),
      opId,
    })
    const winner = side(ids[ids.length - 1] as string)
    const event: ConflictEvent = {
      kind: 'concurrent-assign',
      typeName: this.typeName,
      path: path.map(String),
      winner,
      losers: ids.slice(0, -1).map(side),
    }
    callListeners(this.typeName, this.conflictListeners, event, undefined)
  }

  /**
   * The document in canonical form: `Automerge.save` of a history in one fixed order — topological,
   * ties broken by the smaller change hash. `save()` alone is not canonical (it keeps the order in
   * which changes arrived), so while changes arrive in that order (local edits, or remote changes that
   * each extend all current heads) this is just `save()`; after concurrent changes the document is
   * rebuilt once in canonical order (cost: one replay of the history), and stays canonical after.
   * Changes still waiting for dependencies follow the document chunk, in hash order.
   */
  state(): Uint8Array {
    // Automerge's save() keeps the changes it queues (waiting for dependencies) in the order they
    // arrived; `pending` follows in hash order. So while changes wait in the document's own queue,
    // it is rebuilt without it too — else replicas holding the same changes, received in other
    // orders, would give different states.
    if (!this.canonical || (this.pending.size > 0 && !this.queueLost)) {
      const metas = A.getChangesMetaSince(this.current, [])
      const changes = A.getAllChanges(this.current)
      const byHash = new Map<string, Uint8Array>()
      metas.forEach((m, i) => byHash.set(m.hash, changes[i] as Uint8Array))
      const order = canonicalOrder(metas)
      const [rebuilt] = A.applyChanges(
        A.init<T>({ actor: this.actor }),
        order.map((h) => byHash.get(h) as Uint8Array),
      )
      // The rebuilt document's queue is empty: the changes waiting for dependencies stay in
      // `pending`, and apply() hands them to Automerge again with the next changes.
      this.current = rebuilt
      this.queueLost = true
      this.canonical = true
    }
    const saved = this.save()
    return this.pending.size === 0 ? saved : concatBytes([saved, ...this.pendingBytes()])
  }

  onDelta(fn: (delta: Uint8Array, origin: DeltaOrigin) => void): () => void {
    this.listeners = [...this.listeners, fn]
    let subscribed = true
    return () => {
      if (!subscribed) return
      subscribed = false
      const i = this.listeners.indexOf(fn)
      if (i >= 0) this.listeners = [...this.listeners.slice(0, i), ...this.listeners.slice(i + 1)]
    }
  }

  onConflict(fn: (event: ConflictEvent) => void): () => void {
    this.conflictListeners = [...this.conflictListeners, fn]
    let subscribed = true
    return () => {
      if (!subscribed) return
      subscribed = false
      const i = this.conflictListeners.indexOf(fn)
      if (i >= 0) this.conflictListeners = [...this.conflictListeners.slice(0, i), ...this.conflictListeners.slice(i + 1)]
    }
  }
}

const NO_HEADS: readonly string[] = []

function sameHeads(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((h, i) => h === b[i])
}

/** True when every change added since `before` depended on all heads present when it was added. */
function appendedLinearly(doc: A.Doc<unknown>, before: A.Heads): boolean {
  let heads = new Set(before)
  for (const m of A.getChangesMetaSince(doc, before)) {
    if (m.deps.length !== heads.size || !m.deps.every((d) => heads.has(d))) return false
    heads = new Set([m.hash])
  }
  return true
}

/** Kahn's topological sort of change metadata, always taking the smallest ready hash. */
function canonicalOrder(metas: readonly { readonly hash: string; readonly deps: readonly string[] }[]): string[] {
  const children = new Map<string, string[]>()
  const missing = new Map<string, number>()
  const known = new Set(metas.map((m) => m.hash))
  const ready: string[] = []
  for (const m of metas) {
    const deps = m.deps.filter((d) => known.has(d))
    missing.set(m.hash, deps.length)
    if (deps.length === 0) ready.push(m.hash)
    for (const d of deps) {
      const c = children.get(d)
      if (c === undefined) children.set(d, [m.hash])
      else c.push(m.hash)
    }
  }
  const out: string[] = []
  ready.sort()
  while (ready.length > 0) {
    const h = ready.shift() as string
    out.push(h)
    for (const c of children.get(h) ?? []) {
      const n = (missing.get(c) as number) - 1
      missing.set(c, n)
      if (n === 0) {
        // Insert in sorted position; ready sets are small (the width of the concurrency).
        let i = 0
        while (i < ready.length && (ready[i] as string) < c) i++
        ready.splice(i, 0, c)
      }
    }
  }
  return out
}
