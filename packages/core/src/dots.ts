/**
 * Dots, dot sets and version vectors: the causality bookkeeping under every native CRDT and under
 * replication. A dot `(replica, counter)` names one event. A {@link DotSet} stores, per replica,
 * sorted disjoint ranges of counters, so a causal context of a million contiguous events costs a
 * few bytes and gaps (from out-of-order delivery) cost one range each.
 */
import { decodeWith, encodeWith, readLength, readString, readUint, writeString, writeUint, type Decoder, type Encoder } from './codec.js'
import { ConfigError, DecodeError } from './errors.js'
import { sortedStrings } from './sort.js'

/** One event: the `counter`-th event issued by `replica` (counters start at 1). */
export interface Dot {
  readonly replica: string
  readonly counter: number
}

const NO_RANGES: readonly number[] = []

/**
 * Index of the range holding `counter` in flat sorted disjoint ranges `[start0, end0, start1,
 * end1, ...]` (a DotSet's per-replica storage, a decoded context), or -1: a binary search.
 */
export function rangeIndex(r: readonly number[], counter: number): number {
  return rangeIndexIn(r, 0, r.length, counter)
}

/**
 * {@link rangeIndex} over the pairs `r[from..to)` of a larger flat array (several replicas' ranges
 * side by side, as a decoder's scratch keeps them); the index returned counts pairs from `from`.
 */
export function rangeIndexIn(r: readonly number[], from: number, to: number, counter: number): number {
  let lo = 0
  let hi = (to - from) / 2 - 1
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    if (counter < (r[from + mid * 2] as number)) hi = mid - 1
    else if (counter > (r[from + mid * 2 + 1] as number)) lo = mid + 1
    else return mid
  }
  return -1
}

/** Stable string form of a dot, usable as a Map key. */
export function dotKey(d: Dot): string {
  return `${d.counter}@${d.replica}`
}

/** Total order on dots (replica, then counter), for deterministic iteration and tie-breaks. */
export function compareDots(a: Dot, b: Dot): number {
  if (a.replica !== b.replica) return a.replica < b.replica ? -1 : 1
  return a.counter - b.counter
}

/** Largest replica id accepted by decoders, in UTF-8 bytes. */
export const MAX_REPLICA_ID_BYTES = 256

/**
 * Largest dot counter (or sequence number) a decoder accepts: 2^48, far past what any writer
 * reaches, far below 2^53. A received context holding a writer's counter near 2^53 (an 18-byte
 * delta) left that writer unable to take another dot, for good: its context keeps it.
 */
export const MAX_DOT_COUNTER = 2 ** 48

/**
 * A set of dots kept as per-replica sorted, disjoint, non-adjacent inclusive ranges.
 * Used as a causal context ("every event I have seen") and as a delta's context.
 */
export class DotSet {
  // replica -> flat [start0, end0, start1, end1, ...], sorted, disjoint, non-adjacent
  private readonly map = new Map<string, number[]>()

  /**
   * A set of `replicas[i]`'s flat ranges `ranges[i]`, already sorted, disjoint and non-adjacent (a
   * validated decoded context): the arrays are adopted, not copied; empty ones are skipped.
   */
  static fromRanges(replicas: readonly string[], ranges: readonly number[][]): DotSet {
    const s = new DotSet()
    for (let i = 0; i < replicas.length; i++) {
      const r = ranges[i] as number[]
      if (r.length > 0) s.map.set(replicas[i] as string, r)
    }
    return s
  }

  /** A set holding exactly `dots`. */
  static of(dots: Iterable<Dot>): DotSet {
    const s = new DotSet()
    for (const d of dots) s.add(d)
    return s
  }

  /** True when no dot is present. */
  isEmpty(): boolean {
    return this.map.size === 0
  }

  /** Replicas with at least one dot. */
  replicas(): IterableIterator<string> {
    return this.map.keys()
  }

  /** Highest counter seen from `replica`, 0 when none. */
  max(replica: string): number {
    const r = this.map.get(replica)
    return r === undefined ? 0 : (r[r.length - 1] as number)
  }

  /** Counter up to which every event of `replica` is present (the contiguous prefix). */
  contiguous(replica: string): number {
    const r = this.map.get(replica)
    return r !== undefined && r[0] === 1 ? (r[1] as number) : 0
  }

  has(d: Dot): boolean {
    return this.hasCounter(d.replica, d.counter)
  }

  hasCounter(replica: string, counter: number): boolean {
    const r = this.map.get(replica)
    return r !== undefined && rangeIndex(r, counter) >= 0
  }

  /** True when every counter `start..end` (inclusive) of `replica` is present. */
  coversRange(replica: string, start: number, end: number): boolean {
    const r = this.map.get(replica)
    if (r === undefined) return false
    // The range holding `start` must reach `end` (ranges are non-adjacent).
    const i = rangeIndex(r, start)
    return i >= 0 && end <= (r[i * 2 + 1] as number)
  }

  add(d: Dot): this {
    return this.addRange(d.replica, d.counter, d.counter)
  }

  /**
   * Adds counters `start..end` (inclusive) of `replica`; none when `end < start`.
   * @throws ConfigError for counters that are not integers from 1 to {@link MAX_DOT_COUNTER}: the
   *   set's own decode refused its encoding (and Infinity made encode loop forever).
   */
  addRange(replica: string, start: number, end: number): this {
    if (end < start) return this
    if (!(start >= 1 && end <= MAX_DOT_COUNTER && Number.isInteger(start) && Number.isInteger(end))) {
      throw new ConfigError(`dot set: counters must be integers from 1 to ${MAX_DOT_COUNTER}, got ${String(start)}..${String(end)}`)
    }
    const r = this.map.get(replica)
    if (r === undefined) {
      this.map.set(replica, [start, end])
      return this
    }
    const last = r[r.length - 1] as number
    if (start > last + 1) {
      r.push(start, end)
      return this
    }
    if (start >= (r[r.length - 2] as number)) {
      if (end > last) r[r.length - 1] = end
      return this
    }
    // General case: the ranges it touches (found by binary search) become one, in place. A walk
    // that rebuilt the array made n insertions before the end cost O(n^2) (a hostile 16 KB delta
    // took seconds to apply).
    let lo = 0
    let hi = r.length >> 1
    // First range whose end reaches start - 1 (it touches or follows the new one).
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((r[2 * mid + 1] as number) + 1 < start) lo = mid + 1
      else hi = mid
    }
    let k = lo
    let ns = start
    let ne = end
    // Every range from there that starts by end + 1 merges with it.
    while (k < r.length >> 1 && (r[2 * k] as number) <= end + 1) {
      ns = Math.min(ns, r[2 * k] as number)
      ne = Math.max(ne, r[2 * k + 1] as number)
      k++
    }
    if (k === lo) r.splice(2 * lo, 0, ns, ne)
    else r.splice(2 * lo, 2 * (k - lo), ns, ne)
    return this
  }

  /**
   * Adds the flat ranges `ranges[from..to)` of `replica` — sorted, disjoint and non-adjacent, as in
   * a validated decoded context — in one merge of the two sorted lists (linear, where a range at a
   * time could move the held ones once per range).
   */
  addRanges(replica: string, ranges: readonly number[], from: number, to: number): this {
    if (to <= from) return this
    const r = this.map.get(replica)
    if (r === undefined) {
      this.map.set(replica, ranges.slice(from, to))
      return this
    }
    // Past the held ones (the usual case: new dots of a writer), or one range: no merge of lists.
    if ((ranges[from] as number) > (r[r.length - 1] as number) + 1) {
      for (let i = from; i < to; i++) r.push(ranges[i] as number)
      return this
    }
    if (to - from === 2) return this.addRange(replica, ranges[from] as number, ranges[from + 1] as number)
    const out: number[] = []
    const emit = (s: number, e: number): void => {
      const n = out.length
      if (n > 0 && s <= (out[n - 1] as number) + 1) {
        if (e > (out[n - 1] as number)) out[n - 1] = e
      } else out.push(s, e)
    }
    let i = 0
    let j = from
    while (i < r.length || j < to) {
      if (j >= to || (i < r.length && (r[i] as number) <= (ranges[j] as number))) {
        emit(r[i] as number, r[i + 1] as number)
        i += 2
      } else {
        emit(ranges[j] as number, ranges[j + 1] as number)
        j += 2
      }
    }
    this.map.set(replica, out)
    return this
  }

  /** Adds every dot of `other` (in place). */
  union(other: DotSet): this {
    other.map.forEach((r, replica) => this.addRanges(replica, r, 0, r.length))
    return this
  }

  /** Dots in this set that are not in `other`, as a new set. */
  difference(other: DotSet): DotSet {
    const out = new DotSet()
    for (const [replica, r] of this.map) {
      const o = other.map.get(replica)
      // Both sorted: `from` only moves forward. Starting each range's scan of `other` at its first
      // range made the walk O(ranges x ranges): 200k x 200k took half a minute.
      let from = 0
      for (let i = 0; i < r.length; i += 2) {
        let s = r[i] as number
        const e = r[i + 1] as number
        if (o !== undefined) {
          // Ranges of `other` ending before `s` end before every later range of this set too.
          while (from < o.length && (o[from + 1] as number) < s) from += 2
          for (let j = from; j < o.length && s <= e; j += 2) {
            const os = o[j] as number
            const oe = o[j + 1] as number
            if (oe < s) continue
            if (os > e) break
            if (os > s) out.addRange(replica, s, os - 1)
            s = oe + 1
          }
        }
        if (s <= e) out.addRange(replica, s, e)
      }
    }
    return out
  }

  /** True when every dot of `other` is in this set. */
  includes(other: DotSet): boolean {
    for (const replica of other.map.keys()) {
      const r = other.map.get(replica) as number[]
      const o = this.map.get(replica)
      if (o === undefined) return false
      // Both sorted: walk this set's ranges once; each of other's ranges must fit inside one.
      let j = 0
      for (let i = 0; i < r.length; i += 2) {
        const s = r[i] as number
        const e = r[i + 1] as number
        while (j < o.length && (o[j + 1] as number) < s) j += 2
        if (j >= o.length || (o[j] as number) > s || (o[j + 1] as number) < e) return false
      }
    }
    return true
  }

  /** Deep copy. */
  clone(): DotSet {
    const c = new DotSet()
    for (const [replica, r] of this.map) c.map.set(replica, r.slice())
    return c
  }

  equals(other: DotSet): boolean {
    if (this.map.size !== other.map.size) return false
    for (const [replica, r] of this.map) {
      const o = other.map.get(replica)
      if (o === undefined || o.length !== r.length) return false
      for (let i = 0; i < r.length; i++) if (o[i] !== r[i]) return false
    }
    return true
  }

  /** Number of dots (may be large: counts, does not enumerate). */
  size(): number {
    let n = 0
    for (const r of this.map.values()) for (let i = 0; i < r.length; i += 2) n += (r[i + 1] as number) - (r[i] as number) + 1
    return n
  }

  /**
   * Ranges of `replica` as a flat `[start0, end0, start1, end1, ...]` array: the set's own
   * storage, read-only, valid until the set changes (no array per range, for encoders).
   */
  flatRanges(replica: string): readonly number[] {
    return this.map.get(replica) ?? NO_RANGES
  }

  /** Ranges of `replica` as [start, end] pairs. */
  ranges(replica: string): ReadonlyArray<readonly [number, number]> {
    const r = this.map.get(replica) ?? []
    const out: Array<readonly [number, number]> = []
    for (let i = 0; i < r.length; i += 2) out.push([r[i] as number, r[i + 1] as number])
    return out
  }

  /** Per-replica maximum counters, as a version vector. */
  toVersionVector(): VersionVector {
    const vv = new VersionVector()
    for (const replica of this.map.keys()) vv.set(replica, this.max(replica))
    return vv
  }

  /** Writes the set: replica count, then per replica (sorted) its ranges delta-encoded. */
  write(e: Encoder): void {
    const replicas = sortedStrings(this.map.keys())
    writeUint(e, replicas.length)
    for (const replica of replicas) {
      const r = this.map.get(replica) as number[]
      writeString(e, replica)
      writeUint(e, r.length / 2)
      let prev = 0
      for (let i = 0; i < r.length; i += 2) {
        // start as a gap from the previous end, length as end-start: small numbers, small varints
        writeUint(e, (r[i] as number) - prev)
        writeUint(e, (r[i + 1] as number) - (r[i] as number))
        prev = r[i + 1] as number
      }
    }
  }

  /** Reads a set written by {@link DotSet.write}, validating ranges. */
  static read(d: Decoder): DotSet {
    const s = new DotSet()
    const n = readLength(d, 1_000_000, 2)
    let prevReplica: string | undefined
    for (let i = 0; i < n; i++) {
      const replica = readString(d, MAX_REPLICA_ID_BYTES)
      if (prevReplica !== undefined && replica <= prevReplica) throw new DecodeError('dot set: replicas not strictly sorted')
      prevReplica = replica
      const k = readLength(d, 10_000_000, 2)
      if (k === 0) throw new DecodeError('dot set: empty replica entry')
      const r: number[] = []
      let prev = 0
      for (let j = 0; j < k; j++) {
        const gap = readUint(d)
        const len = readUint(d)
        const start = prev + gap
        // gap >= 1 from 0 (counters start at 1), gap >= 2 after a range (ranges are non-adjacent)
        if (gap < (j === 0 ? 1 : 2)) throw new DecodeError('dot set: overlapping or adjacent ranges')
        const end = start + len
        if (!(end <= MAX_DOT_COUNTER)) throw new DecodeError(`dot set: counter past ${MAX_DOT_COUNTER}`)
        r.push(start, end)
        prev = end
      }
      s.map.set(replica, r)
    }
    return s
  }

  encode(): Uint8Array {
    return encodeWith((e) => this.write(e))
  }

  static decode(bytes: Uint8Array): DotSet {
    return decodeWith('dot set', bytes, DotSet.read)
  }

  toString(): string {
    const parts: string[] = []
    for (const replica of [...this.map.keys()].sort()) parts.push(`${replica}:${this.ranges(replica).map(([s, e]) => (s === e ? `${s}` : `${s}-${e}`)).join(',')}`)
    return `{${parts.join(' ')}}`
  }
}

/** How two version vectors relate. */
export type Causality = 'equal' | 'before' | 'after' | 'concurrent'

/** Map from replica to the highest counter seen: a summary of a causal history without gaps. */
export class VersionVector {
  private readonly map = new Map<string, number>()

  static from(entries: Iterable<readonly [string, number]>): VersionVector {
    const v = new VersionVector()
    for (const [k, n] of entries) v.set(k, n)
    return v
  }

  get(replica: string): number {
    return this.map.get(replica) ?? 0
  }

  /** Sets the entry; 0 removes it. */
  set(replica: string, counter: number): this {
    if (counter <= 0) this.map.delete(replica)
    else this.map.set(replica, counter)
    return this
  }

  /** Raises the entry to at least `counter`. */
  advance(replica: string, counter: number): this {
    if (counter > this.get(replica)) this.map.set(replica, counter)
    return this
  }

  /** Pointwise maximum, in place. */
  merge(other: VersionVector): this {
    for (const [k, n] of other.map) this.advance(k, n)
    return this
  }

  /** Pointwise minimum: what both have seen (the basis of a stability frontier). */
  meet(other: VersionVector): VersionVector {
    const out = new VersionVector()
    for (const [k, n] of this.map) out.set(k, Math.min(n, other.get(k)))
    return out
  }

  /** True when this vector has seen everything `other` has. */
  dominates(other: VersionVector): boolean {
    for (const [k, n] of other.map) if (this.get(k) < n) return false
    return true
  }

  compare(other: VersionVector): Causality {
    const ge = this.dominates(other)
    const le = other.dominates(this)
    if (ge && le) return 'equal'
    if (ge) return 'after'
    if (le) return 'before'
    return 'concurrent'
  }

  entries(): IterableIterator<[string, number]> {
    return this.map.entries()
  }

  get size(): number {
    return this.map.size
  }

  clone(): VersionVector {
    return VersionVector.from(this.map)
  }

  toJSON(): Record<string, number> {
    return Object.fromEntries([...this.map].sort(([a], [b]) => (a < b ? -1 : 1)))
  }

  write(e: Encoder): void {
    const keys = sortedStrings(this.map.keys())
    writeUint(e, keys.length)
    for (const k of keys) {
      writeString(e, k)
      writeUint(e, this.map.get(k) as number)
    }
  }

  static read(d: Decoder): VersionVector {
    const v = new VersionVector()
    const n = readLength(d, 1_000_000, 2)
    let prev: string | undefined
    for (let i = 0; i < n; i++) {
      const k = readString(d, MAX_REPLICA_ID_BYTES)
      if (prev !== undefined && k <= prev) throw new DecodeError('version vector: replicas not strictly sorted')
      prev = k
      const c = readUint(d)
      if (c === 0) throw new DecodeError('version vector: zero entry')
      v.map.set(k, c)
    }
    return v
  }

  encode(): Uint8Array {
    return encodeWith((e) => this.write(e))
  }

  static decode(bytes: Uint8Array): VersionVector {
    return decodeWith('version vector', bytes, VersionVector.read)
  }
}
