/**
 * A Yjs document as a Concord replica. Deltas are plain Yjs V1 updates, versions are plain Yjs
 * state vectors, so any Yjs peer (y-protocols, y-websocket, yrs) can exchange them unchanged.
 */
import * as decoding from 'lib0/decoding'
import * as Y from 'yjs'
import { ConfigError, DecodeError, callListeners, checkKnownOptions, ownKeysCopy } from '@concord/core'
import type { ConflictEvent, DeltaOrigin, Replica } from '@concord/core'

/** Kind of a root shared type, so that {@link YjsReplica.value} can show it before it has content. */
export type YjsRootKind = 'text' | 'map' | 'array' | 'xml'
const ROOT_KINDS: readonly YjsRootKind[] = ['text', 'map', 'array', 'xml']

/** How untrusted updates are checked before they touch the document. */
export type YjsValidation = 'strict' | 'decode'

/** Options for {@link YjsReplica}. */
export interface YjsReplicaOptions {
  /**
   * Use this document instead of a new one. Its `clientID` is kept; edits made on it by any code
   * (not only through this replica) are emitted as local deltas.
   * @default a new `Y.Doc` with `gc: true`
   */
  readonly doc?: Y.Doc
  /**
   * Yjs client id for a new document. Two live writers must never share one.
   * @default a 32-bit hash of `replicaId` ({@link clientIdFor})
   */
  readonly clientId?: number
  /**
   * Root types declared up front: they always appear in {@link YjsReplica.value}, as `''`, `{}`, `[]`
   * when empty. Give every replica of a document the same roots so their values compare equal.
   * @default {} (roots are inferred from content and shown once they have some)
   */
  readonly roots?: Readonly<Record<string, YjsRootKind>>
  /**
   * `strict`: an update is first decoded, then integrated into a shadow copy of the document; only if
   * both succeed does it touch the real document, so no byte sequence can leave it half-applied.
   * Costs a second copy of the document in memory (built on the first remote update) and a second
   * integration per remote update. `decode`: only decode first (catches truncation and corruption
   * that breaks the framing, ~98% of random corruption) — for authenticated links (envelope HMAC).
   * Only `strict` checks nesting through parent types and drops pending structs that fail once
   * their dependencies arrive (see {@link YjsReplica.apply}).
   * @default 'strict'
   */
  readonly validation?: YjsValidation
}

/** Plain view of a Yjs document: each root shared type by name, as JSON. */
export type YjsValue = Record<string, unknown>

/** Any shared type, as Yjs types the values of `doc.share`. */
type AnyType = NonNullable<ReturnType<Y.Doc['share']['get']>>

/** Transaction origin of updates applied by {@link YjsReplica.apply}; anything else counts as local. */
const REMOTE = Symbol('@concord/yjs/remote')

/**
 * Deepest nesting an applied update may create: shared types inside shared types, plus arrays and
 * objects inside a value. value(), Yjs's recursive delete and garbage collection of nested types,
 * and lib0's encoder all recurse once (or more) per level: 3,000 levels of either kind — 36 KB of
 * update — made value() throw RangeError on every replica, for good, and every delete of them fail.
 * 512 leaves a wide margin under the stack and far above any real document (rich text nests tens).
 */
const MAX_NESTING = 512

/** Shadow updates are flushed in batches so that local edits stay cheap. */
const SHADOW_FLUSH_AT = 4096

/**
 * FNV-1a over UTF-8: a deterministic 32-bit client id per replica id. 32 bits like Yjs' own random
 * ids: ids are varuint-encoded in every update, and 53-bit ids cost ~7 more bytes per edit. Odds of
 * two replicas colliding are ~n²/2³³ (as with Yjs' random ids); Yjs detects a remote update carrying
 * its own client id and switches to a fresh one.
 */
export function clientIdFor(replicaId: string): number {
  let h = 0x811c9dc5
  for (const b of new TextEncoder().encode(replicaId)) h = Math.imul(h ^ b, 0x01000193) >>> 0
  return h
}

/** An ID Yjs can encode again: a client id and a clock that are safe integers (varints past 2^53 decode, inexactly). */
function checkId(id: unknown, what: string): void {
  if (typeof id !== 'object' || id === null) return
  const { client, clock } = id as { client?: unknown; clock?: unknown }
  if (typeof client !== 'number' || !Number.isSafeInteger(client) || client < 0) throw new DecodeError(`yjs: update does not decode: ${what} has client id ${String(client)}, not a safe integer`)
  if (typeof clock !== 'number' || !Number.isSafeInteger(clock) || clock < 0) throw new DecodeError(`yjs: update does not decode: ${what} has clock ${String(clock)}, not a safe integer`)
}

/**
 * Refuses an update whose ids Yjs decodes but cannot encode again: a client id or clock past 2^53
 * (a varint Yjs reads as an inexact number). Applied, it left a document whose state() and
 * deltaSince() threw for good — a node answering a repair with it failed every round (review
 * finding: one forged 82-byte update).
 */
function checkIds(decoded: ReturnType<typeof Y.decodeUpdate>): void {
  for (const s of decoded.structs) {
    // The nesting inside one value is known before the update touches anything (in both validation
    // modes); nesting through parent types needs the document (checkNesting, strict mode).
    if (s instanceof Y.Item && contentDepth(s.content) > MAX_NESTING) throw new DecodeError(`yjs: update does not decode: a value nested deeper than ${MAX_NESTING} levels`)
    checkId(s.id, 'a struct')
    if (!Number.isSafeInteger(s.id.clock + s.length)) throw new DecodeError(`yjs: update does not decode: a struct runs past clock 2^53`)
    const item = s as unknown as { origin?: unknown; rightOrigin?: unknown; parent?: unknown }
    checkId(item.origin, 'an origin')
    checkId(item.rightOrigin, 'a right origin')
    checkId(item.parent, 'a parent')
  }
  for (const [client, deletes] of decoded.ds.clients) {
    checkId({ client, clock: 0 }, 'a deletion')
    for (const d of deletes) if (!Number.isSafeInteger(d.clock) || d.clock < 0 || !Number.isSafeInteger(d.clock + d.len)) throw new DecodeError('yjs: update does not decode: a deletion runs past clock 2^53')
  }
}

/** How deep `v` nests arrays and objects (0 for a primitive), counted up to MAX_NESTING + 2; iterative, for any depth. */
function valueDepth(v: unknown): number {
  let max = 0
  const stack: Array<[unknown, number]> = [[v, 0]]
  while (stack.length > 0) {
    const [x, d] = stack.pop() as [unknown, number]
    if (d > max) max = d
    if (max > MAX_NESTING + 1) return max
    if (typeof x !== 'object' || x === null || x instanceof Uint8Array) continue
    for (const c of Array.isArray(x) ? x : Object.values(x)) stack.push([c, d + 1])
  }
  return max
}

/** Levels an item's content adds below its parent type: 1 for a nested type or subdocument, the value's own nesting for plain values. */
function contentDepth(content: Y.Item['content']): number {
  if (content instanceof Y.ContentType || content instanceof Y.ContentDoc) return 1
  // (arr holds the item's values: its own level is not one of theirs)
  if (content instanceof Y.ContentAny || content instanceof Y.ContentJSON) return Math.max(0, valueDepth(content.arr) - 1)
  if (content instanceof Y.ContentEmbed) return valueDepth(content.embed)
  if (content instanceof Y.ContentFormat) return valueDepth(content.value)
  return 0
}

/**
 * Refuses what an update integrated into `doc` since `before` (its state vector then) if it nests
 * deeper than MAX_NESTING, counting the parent types it was added to (held before or made by the
 * same update). Also covers pending structs the update completed.
 */
function checkNesting(doc: Y.Doc, before: Map<number, number>): void {
  const depths = new Map<Y.AbstractType<unknown>, number>()
  // A root type is at depth 0, a type nested in it at 1, ...; memoised, so each type is walked once.
  const typeDepth = (t: Y.AbstractType<unknown>): number => {
    const path: Array<Y.AbstractType<unknown>> = []
    let base = -1
    for (let cur: Y.AbstractType<unknown> | null = t; cur !== null; ) {
      const known = depths.get(cur)
      if (known !== undefined) {
        base = known
        break
      }
      if (path.length > MAX_NESTING) return MAX_NESTING + 1
      path.push(cur)
      const parent: unknown = cur._item?.parent
      cur = parent instanceof Y.AbstractType ? (parent as Y.AbstractType<unknown>) : null
    }
    for (let i = path.length - 1; i >= 0; i--) depths.set(path[i] as Y.AbstractType<unknown>, ++base)
    return base
  }
  for (const [client, structs] of doc.store.clients) {
    const from = before.get(client) ?? 0
    const last = structs[structs.length - 1]
    if (last === undefined || last.id.clock + last.length <= from) continue
    for (let i = from === 0 ? 0 : Y.findIndexSS(structs, from); i < structs.length; i++) {
      const s = structs[i]
      if (!(s instanceof Y.Item) || !(s.parent instanceof Y.AbstractType)) continue
      if (typeDepth(s.parent as Y.AbstractType<unknown>) + contentDepth(s.content) > MAX_NESTING) {
        throw new DecodeError(`yjs: update does not integrate: shared types or values nested deeper than ${MAX_NESTING} levels`)
      }
    }
  }
}

/** Applies `update` to `doc` (a shadow or scratch copy), then refuses what it nests too deep (checkNesting). */
function integrateChecked(doc: Y.Doc, update: Uint8Array): void {
  const before = Y.decodeStateVector(Y.encodeStateVector(doc))
  Y.applyUpdate(doc, update)
  checkNesting(doc, before)
}

function asIntegrationError(e: unknown): DecodeError {
  return e instanceof DecodeError ? e : new DecodeError('yjs: update does not integrate', { cause: e })
}

/**
 * Whether `update` is framed as a V2 update (Y.encodeStateAsUpdateV2, an 'updateV2' event): the
 * replica speaks V1, and a V2 update fails to decode as one for reasons its bytes do not show. Only
 * the frame is read — a feature flag of 0, then the nine length-prefixed column buffers, each
 * within the update, and the rest after them — never the columns: V2's run-length columns repeat
 * one value as often as a count says, so decoding untrusted bytes as V2 let a 28-byte update claim
 * 2^40 structs, and the process died of heap exhaustion while an error message was being worded
 * (review finding).
 */
function isV2Update(update: Uint8Array): boolean {
  try {
    const d = decoding.createDecoder(update)
    if (decoding.readVarUint(d) !== 0) return false
    for (let i = 0; i < 9; i++) {
      const n = decoding.readVarUint(d)
      if (n > update.length - d.pos) return false
      d.pos += n
    }
    return d.pos < update.length
  } catch {
    return false
  }
}

function v2Hint(update: Uint8Array): string {
  return isV2Update(update) ? ' (it is a V2 update: send V1, or convert it with Y.convertUpdateFormatV2ToV1)' : ''
}

/**
 * Whether `update` (which decodes) carries bytes after its end: Yjs's reader stops at the end of
 * the delete set and ignores the rest, so a corrupted frame with bytes appended would pass. The last
 * byte of a well-formed V1 update belongs to its delete set, so without it the update cannot decode;
 * if it still does, that byte (at least) was past the end.
 */
function hasTrailingBytes(update: Uint8Array): boolean {
  if (update.length === 0) return false
  try {
    Y.decodeUpdate(update.subarray(0, update.length - 1))
    return true
  } catch {
    return false
  }
}

/**
 * One Yjs document as a {@link Replica}.
 *
 * - `version()` is `Y.encodeStateVector`, `deltaSince(v)` is `Y.encodeStateAsUpdate(doc, v)` (V1);
 * - `apply(update)` is `Y.applyUpdate` with a remote origin; updates whose dependencies are missing
 *   are kept by Yjs as *pending* and integrate once the gap is filled (see {@link hasPending});
 * - local edits (`doc.transact`, edits on shared types) are emitted through `onDelta(…, 'local')`,
 *   one delta per transaction;
 * - `state()` is a canonical full update (see there);
 * - Yjs has no conflict API, so `onConflict` never fires: concurrent `Y.Map` sets resolve by client id
 *   and the loser is deleted without a trace the replica could report cheaply.
 */
export class YjsReplica implements Replica<YjsValue> {
  readonly typeName = 'yjs'
  readonly replicaId: string
  /** The underlying document: edit it directly (`replica.doc.getText('t').insert(…)`). */
  readonly doc: Y.Doc
  private readonly roots: Readonly<Record<string, YjsRootKind>>
  private readonly validation: YjsValidation
  /** Replaced, never changed in place: a listener that unsubscribes during a call does not make the next one miss it. */
  private listeners: ReadonlyArray<(delta: Uint8Array, origin: DeltaOrigin) => void> = []
  private shadow: Y.Doc | undefined
  private shadowQueue: Uint8Array[] = []

  constructor(replicaId: string, options: YjsReplicaOptions = {}) {
    if (typeof replicaId !== 'string' || replicaId === '') throw new ConfigError('YjsReplica: replicaId must be a non-empty string')
    if (typeof options !== 'object' || options === null) throw new ConfigError('YjsReplica: options must be an object')
    checkKnownOptions('YjsReplica', options, ['doc', 'clientId', 'roots', 'validation'])
    const validation = options.validation ?? 'strict'
    if (validation !== 'strict' && validation !== 'decode') throw new ConfigError(`YjsReplica: unknown validation ${String(validation)}`)
    if (options.clientId !== undefined && !(Number.isSafeInteger(options.clientId) && options.clientId >= 0)) {
      throw new ConfigError('YjsReplica: clientId must be a non-negative safe integer')
    }
    if (options.doc !== undefined && !(options.doc instanceof Y.Doc)) throw new ConfigError('YjsReplica: doc must be a Y.Doc')
    // A given doc keeps its own client id: asking for another one too would be silently ignored.
    if (options.doc !== undefined && options.clientId !== undefined) throw new ConfigError('YjsReplica: give either doc or clientId, not both (set doc.clientID on your doc)')
    const roots: unknown = options.roots ?? {}
    if (typeof roots !== 'object' || roots === null || Array.isArray(roots)) throw new ConfigError('YjsReplica: roots must be an object of root name to kind')
    // Every kind checked before the doc is touched: a refused option leaves a given doc as it was.
    for (const [name, kind] of Object.entries(roots)) {
      if (!ROOT_KINDS.includes(kind as YjsRootKind)) throw new ConfigError(`YjsReplica: unknown root kind ${String(kind)} for ${name} (one of ${ROOT_KINDS.join(', ')})`)
    }
    this.replicaId = replicaId
    this.validation = validation
    this.roots = roots as Readonly<Record<string, YjsRootKind>>
    if (options.doc !== undefined) {
      this.doc = options.doc
    } else {
      this.doc = new Y.Doc({ gc: true })
      this.doc.clientID = options.clientId ?? clientIdFor(replicaId)
    }
    for (const [name, kind] of Object.entries(this.roots)) {
      try {
        this.root(name, kind)
      } catch (e) {
        // A given doc already holding the root as another type.
        if (e instanceof ConfigError) throw e
        throw new ConfigError(`YjsReplica: root ${name} cannot be a ${kind} in this doc: ${e instanceof Error ? e.message : String(e)}`, { cause: e })
      }
    }
    this.doc.on('update', this.onUpdate)
  }

  private readonly onUpdate = (update: Uint8Array, origin: unknown): void => {
    const remote = origin === REMOTE
    // The shadow only lags behind by local edits; remote ones were integrated into it first.
    if (!remote && this.shadow !== undefined) {
      this.shadowQueue.push(update)
      // A failure here (pending structs a local edit completed, see dropPoisonedPending) must not
      // escape into the local edit: the shadow is dropped and rebuilt at the next apply.
      if (this.shadowQueue.length >= SHADOW_FLUSH_AT) {
        try {
          this.flushShadow()
        } catch {
          this.dropShadow()
        }
      }
    }
    callListeners(this.typeName, this.listeners, update, remote ? 'remote' : 'local')
  }

  private root(name: string, kind: YjsRootKind): void {
    // (kinds are checked in the constructor; the default below is a last guard)
    switch (kind) {
      case 'text':
        this.doc.getText(name)
        return
      case 'map':
        this.doc.getMap(name)
        return
      case 'array':
        this.doc.getArray(name)
        return
      case 'xml':
        this.doc.getXmlFragment(name)
        return
      default:
        throw new ConfigError(`YjsReplica: unknown root kind ${String(kind)} for ${name}`)
    }
  }

  /** Shorthand for `doc.getText(name)`. */
  text(name: string): Y.Text {
    return this.doc.getText(name)
  }

  /** Shorthand for `doc.getMap(name)`. */
  map<T = unknown>(name: string): Y.Map<T> {
    return this.doc.getMap<T>(name)
  }

  /** Shorthand for `doc.getArray(name)`. */
  array<T = unknown>(name: string): Y.Array<T> {
    return this.doc.getArray<T>(name)
  }

  /** Runs `fn` in one Yjs transaction, so its edits form one local delta. */
  transact(fn: (doc: Y.Doc) => void): void {
    this.doc.transact(() => fn(this.doc))
  }

  /**
   * Roots as JSON: declared roots always, other roots once they hold content. Undeclared roots are
   * typed by their content (a sequence holding strings is text, other sequences arrays — a text
   * whose characters are all deleted, or holding only embeds, is an array — keyed ones maps),
   * on the replica that wrote them as on every other: declare roots (`roots`) for typed values.
   * Inference does not instantiate them, so a later `doc.getText(name)` still works.
   */
  value(): YjsValue {
    const out: YjsValue = {}
    const names = [...this.doc.share.keys()].sort()
    for (const name of names) {
      const t = this.doc.share.get(name)
      if (t === undefined) continue
      // Declared: typed as declared. Undeclared: typed by content alone, also where local code has
      // taken the root as a Y.Text or Y.Map — a receiver cannot know that, and value() must be the
      // same on every replica holding the same state.
      // Own names only: 'constructor' or 'toString' are not declared by Object.prototype.
      if (Object.hasOwn(this.roots, name)) define(out, name, typeJson(t))
      else if (hasContent(t)) define(out, name, inferJson(t))
    }
    return out
  }

  version(): Uint8Array {
    return Y.encodeStateVector(this.doc)
  }

  /** `Y.mergeUpdates`: one V1 update with the effect of `deltas`. */
  mergeDeltas(deltas: readonly Uint8Array[]): Uint8Array {
    try {
      return Y.mergeUpdates(deltas as Uint8Array[])
    } catch (e) {
      throw new DecodeError('yjs: deltas to merge are not V1 updates', { cause: e })
    }
  }

  deltaSince(version?: Uint8Array): Uint8Array {
    if (version === undefined) return Y.encodeStateAsUpdate(this.doc)
    try {
      Y.decodeStateVector(version)
    } catch (e) {
      throw new DecodeError('yjs: version is not a state vector', { cause: e })
    }
    return Y.encodeStateAsUpdate(this.doc, version)
  }

  /**
   * Integrates an update (from {@link deltaSince}, {@link state}, a local delta of another replica, or
   * any Yjs V1 update). Throws {@link DecodeError}, leaving the document untouched, when it does not
   * decode or (in `strict` mode) does not integrate. In `decode` mode an update that decodes but fails
   * to integrate also throws DecodeError, but may have been partly applied.
   */
  apply(delta: Uint8Array): void {
    if (!(delta instanceof Uint8Array)) throw new DecodeError('yjs: update must be a Uint8Array')
    let decoded: ReturnType<typeof Y.decodeUpdate>
    try {
      decoded = Y.decodeUpdate(delta)
    } catch (e) {
      throw new DecodeError(`yjs: update does not decode${v2Hint(delta)}`, { cause: e })
    }
    checkIds(decoded)
    if (hasTrailingBytes(delta)) throw new DecodeError(`yjs: update does not decode: bytes after its end${v2Hint(delta)}`)
    if (this.validation === 'strict') this.checkOnShadow(delta)
    // Integration and the observers it triggers run in one transaction; only an error before the
    // observers is the update's. One thrown by an application's observer or 'update' handler
    // (Yjs calls them all, then rethrows) comes after the update is in the document and its delta
    // emitted: reported as a DecodeError, it made the caller count an applied update as refused
    // (a node dead-letters it). It becomes a warning, as a throwing onDelta listener does.
    let integrated = false
    try {
      Y.transact(
        this.doc,
        () => {
          Y.applyUpdate(this.doc, delta)
          integrated = true
        },
        REMOTE,
        false,
      )
    } catch (e) {
      if (integrated) {
        process.emitWarning(`${this.typeName}: an observer threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, { code: 'CONCORD_LISTENER_THREW' })
        return
      }
      // Only reachable in 'decode' mode: the update decoded but did not integrate.
      throw new DecodeError('yjs: update does not integrate', { cause: e })
    }
  }

  /**
   * Integrates `delta` into the shadow first. When that fails while the document holds pending
   * structs, the culprit may be those, not `delta`: an update that decodes, waits for a missing
   * dependency, and throws inside Yjs once the dependency arrives. Kept, it made the shadow (and
   * in `decode` mode the document) refuse every update completing it — the missing writer's
   * updates and whole states alike — for good. If `delta` integrates into the document without its
   * pending structs, those are dropped (dropPoisonedPending) and `delta` goes through.
   */
  private checkOnShadow(delta: Uint8Array): void {
    try {
      if (this.shadow === undefined) this.shadow = this.buildShadow(true)
      else this.flushShadow()
      integrateChecked(this.shadow, delta)
      return
    } catch (e) {
      // The shadow may now be half-updated: drop it, it is rebuilt from the intact document.
      this.dropShadow()
      if (!this.hasPending) throw asIntegrationError(e)
    }
    const clean = this.buildShadow(false)
    try {
      integrateChecked(clean, delta)
    } catch (e) {
      clean.destroy()
      throw asIntegrationError(e)
    }
    this.dropPoisonedPending()
    this.shadow = clean
  }

  /** A copy of the document (with or without its pending structs) to try updates on. */
  private buildShadow(withPending: boolean): Y.Doc {
    const shadow = new Y.Doc({ gc: this.doc.gc })
    Y.applyUpdate(shadow, withPending ? Y.encodeStateAsUpdate(this.doc) : this.encodeWithoutPendingStructs())
    return shadow
  }

  /** `Y.encodeStateAsUpdate` of the document without its pending structs (its pending deletions kept). */
  private encodeWithoutPendingStructs(): Uint8Array {
    const store = this.doc.store
    const pendingStructs = store.pendingStructs
    store.pendingStructs = null
    try {
      return Y.encodeStateAsUpdate(this.doc)
    } finally {
      store.pendingStructs = pendingStructs
    }
  }

  /**
   * Drops the document's pending structs: they failed to integrate once their dependencies were
   * there, and would fail every time. Nothing of value is lost for good: pending structs are not in
   * version(), so their senders' deltaSince(version()) carries them again; only the part that cannot
   * integrate stays out. Pending deletions are kept (they were part of the document the update was
   * tried on): a version() does not show them, and once their items arrive alone nothing would resend them.
   */
  private dropPoisonedPending(): void {
    this.doc.store.pendingStructs = null
    process.emitWarning(`${this.typeName}: dropped updates waiting for missing dependencies: they failed to integrate once those were there (their senders resend what is not in version())`, {
      code: 'CONCORD_YJS_PENDING_DROPPED',
    })
  }

  private dropShadow(): void {
    this.shadow?.destroy()
    this.shadow = undefined
    this.shadowQueue = []
  }

  private flushShadow(): void {
    const shadow = this.shadow
    if (shadow === undefined || this.shadowQueue.length === 0) return
    const queue = this.shadowQueue
    this.shadowQueue = []
    Y.transact(shadow, () => {
      for (const u of queue) Y.applyUpdate(shadow, u)
    })
  }

  /** True while some applied updates wait for missing dependencies (Yjs "pending" structs). */
  get hasPending(): boolean {
    return this.doc.store.pendingStructs !== null || this.doc.store.pendingDs !== null
  }

  /**
   * The whole document as one V1 update in canonical form. `Y.encodeStateAsUpdate` writes structs
   * as they are split in memory, and the splits depend on the order updates arrived; integrating the
   * update into a fresh document in one transaction merges every mergeable neighbour, so replicas
   * that saw the same updates get the same bytes. Pending updates are included.
   */
  state(): Uint8Array {
    let fresh = new Y.Doc({ gc: this.doc.gc })
    try {
      try {
        Y.applyUpdate(fresh, Y.encodeStateAsUpdate(this.doc))
      } catch (e) {
        // Pending structs whose dependencies local edits supplied (Yjs retries pending structs
        // only when an update is applied) and that fail to integrate: state() threw until the next
        // apply, which drops them. They can never integrate; drop them here as apply() would.
        if (!this.hasPending) throw e
        fresh.destroy()
        fresh = new Y.Doc({ gc: this.doc.gc })
        Y.applyUpdate(fresh, this.encodeWithoutPendingStructs())
        this.dropPoisonedPending()
        this.dropShadow()
      }
      return Y.encodeStateAsUpdate(fresh)
    } finally {
      fresh.destroy()
    }
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

  /** Yjs exposes no conflict information; the listener is accepted and never called. */
  onConflict(_fn: (event: ConflictEvent) => void): () => void {
    return () => {}
  }

  /** Stops emitting deltas; the document itself is left to its owner. */
  close(): void {
    this.doc.off('update', this.onUpdate)
    this.listeners = []
    this.dropShadow()
  }
}

function hasContent(t: { readonly _start: Y.Item | null; readonly _map: Map<string, Y.Item> }): boolean {
  return t._start !== null || t._map.size > 0
}

/**
 * Sets `out[k]` as an own property: a plain assignment of '__proto__' would set the object's
 * prototype instead (the key would vanish from value(), its value leak into every property lookup).
 */
function define(out: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true })
}

/** JSON of a shared type: Y.Map (and maps inside it) built with {@link define}; the rest as Yjs gives it. */
function typeJson(t: AnyType): unknown {
  if (t instanceof Y.Map) {
    const out: Record<string, unknown> = {}
    for (const [k, item] of t._map) if (!item.deleted) define(out, k, contentJson(item.content.getContent()[item.length - 1]))
    return out
  }
  if (t instanceof Y.Array) return t.toArray().map(contentJson)
  return t.toJSON()
}

/**
 * A value in a shared type: a nested type as JSON; a subdocument as `{ guid }` (the live Y.Doc was
 * a different object on every replica, so equal states had unequal values, and not plain data);
 * a plain value copied with every key its own (a received `__proto__` key is no prototype:
 * ownKeysCopy) and its binaries copied (ownKeysCopy keeps them: a caller changing a returned
 * Uint8Array changed the document's own content, without an update, on this replica only).
 */
function contentJson(v: unknown): unknown {
  if (v instanceof Y.AbstractType) return typeJson(v as AnyType)
  if (v instanceof Y.Doc) return { guid: v.guid }
  return copyBinaries(ownKeysCopy(v))
}

/** Replaces every Uint8Array in `v` (a fresh copy from ownKeysCopy: its arrays and objects are its own) by a copy. */
function copyBinaries(v: unknown): unknown {
  if (v instanceof Uint8Array) return v.slice()
  const stack: unknown[] = [v]
  while (stack.length > 0) {
    const x = stack.pop()
    if (typeof x !== 'object' || x === null || x instanceof Uint8Array) continue
    const proto = Object.getPrototypeOf(x) as object | null
    if (!Array.isArray(x) && proto !== Object.prototype && proto !== null) continue
    const o = x as Record<string, unknown>
    for (const k of Object.keys(o)) {
      const c = o[k]
      if (c instanceof Uint8Array) o[k] = c.slice()
      else stack.push(c)
    }
  }
  return v
}

/** JSON of a root that no local code declared, typed by its content. */
function inferJson(t: AnyType): unknown {
  if (t._start === null) {
    const out: Record<string, unknown> = {}
    for (const [k, item] of [...t._map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (!item.deleted) define(out, k, contentJson(item.content.getContent()[item.length - 1]))
    }
    return out
  }
  let text = ''
  const arr: unknown[] = []
  let isText = false
  for (let n: Y.Item | null = t._start; n !== null; n = n.right) {
    // Live items only: whether a deleted one still holds its string depends on local garbage
    // collection (an UndoManager or gc: false keep it), which a receiver cannot know.
    if (n.deleted || !n.countable) continue
    if (n.content instanceof Y.ContentString) isText = true
    for (const c of n.content.getContent()) {
      if (typeof c === 'string') text += c
      arr.push(contentJson(c))
    }
  }
  return isText ? text : arr
}
