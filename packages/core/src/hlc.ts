/**
 * Hybrid logical clock (Kulkarni et al., 2014): physical milliseconds plus a logical counter.
 * Timestamps are totally ordered by (wall, logical, node), never go backwards even when the wall
 * clock does, and stay close to physical time. A remote timestamp further ahead than
 * `maxDriftMs` is refused with {@link ClockDriftError} instead of dragging the local clock forward.
 */
import { decodeWith, encodeWith, isWellFormed, readString, readUint, writeString, writeUint, type Decoder, type Encoder } from './codec.js'
import { ClockDriftError, ConfigError, DecodeError, checkKnownOptions, isConcordError } from './errors.js'

/** One HLC timestamp. */
export interface HlcTimestamp {
  /** Physical component, milliseconds since the epoch. */
  readonly wall: number
  /** Logical counter that orders events within one millisecond. */
  readonly logical: number
  /** The replica that issued it: the final tie-break, so no two timestamps are equal. */
  readonly node: string
}

/** Options for {@link Hlc}. */
export interface HlcOptions {
  /**
   * Physical time source in milliseconds. Inject a virtual clock in simulations.
   * @default Date.now
   */
  readonly now?: () => number
  /**
   * Largest amount a remote timestamp may be ahead of local physical time.
   * @default 300_000 (five minutes)
   */
  readonly maxDriftMs?: number
}

/** Default for {@link HlcOptions.maxDriftMs}. */
export const DEFAULT_MAX_DRIFT_MS = 300_000
const MAX_LOGICAL = 0xffff_ffff
/** Longest node id a timestamp carries, in UTF-8 bytes (what {@link readHlc} accepts). */
const MAX_NODE_BYTES = 1024

/**
 * Why `t` is not a timestamp every decoder reads back as it is, or undefined: wall a safe integer
 * >= 0, logical an integer up to 2^32 - 1, node a string of at most 1024 UTF-8 bytes. lib0 writes
 * NaN as 0, -5 as 123 and 1.5 as 1.
 */
function timestampProblem(t: HlcTimestamp): string | undefined {
  if (typeof t !== 'object' || t === null) return 'not an object'
  const { wall, logical, node } = t
  if (!(Number.isSafeInteger(wall) && wall >= 0)) return `wall ${String(wall)} is not a safe integer >= 0`
  if (!(Number.isInteger(logical) && logical >= 0 && logical <= MAX_LOGICAL)) return `logical ${String(logical)} is not an integer from 0 to ${MAX_LOGICAL}`
  if (typeof node !== 'string' || (node.length * 3 > MAX_NODE_BYTES && Buffer.byteLength(node) > MAX_NODE_BYTES)) return `node is not a string of at most ${MAX_NODE_BYTES} UTF-8 bytes`
  return undefined
}

/** Orders timestamps by wall, then logical, then node id. */
export function compareHlc(a: HlcTimestamp, b: HlcTimestamp): number {
  if (a.wall !== b.wall) return a.wall < b.wall ? -1 : 1
  if (a.logical !== b.logical) return a.logical < b.logical ? -1 : 1
  return a.node < b.node ? -1 : a.node > b.node ? 1 : 0
}

/** A hybrid logical clock owned by one replica. */
export class Hlc {
  readonly node: string
  readonly maxDriftMs: number
  private readonly physical: () => number
  private wall = 0
  private logical = 0

  constructor(node: string, options: HlcOptions = {}) {
    if (typeof node !== 'string' || node.length === 0) throw new ConfigError('Hlc: node id must be a non-empty string')
    if (!isWellFormed(node)) throw new ConfigError('Hlc: node id is not well-formed UTF-16 (a lone surrogate)')
    // Every timestamp carries it: a longer one made timestamps that no decoder reads.
    if (Buffer.byteLength(node) > MAX_NODE_BYTES) throw new ConfigError(`Hlc: node id must be at most ${MAX_NODE_BYTES} UTF-8 bytes`)
    if (typeof options !== 'object' || options === null) throw new ConfigError('Hlc: options must be an object')
    checkKnownOptions('Hlc', options, ['now', 'maxDriftMs'])
    if (options.now !== undefined && typeof options.now !== 'function') throw new ConfigError('Hlc: now must be a function')
    const maxDrift = options.maxDriftMs ?? DEFAULT_MAX_DRIFT_MS
    // Finite: without a bound, one remote timestamp at the top of the range would push this clock
    // past the largest exact integer, and no timestamp it made after would decode anywhere.
    if (!(maxDrift >= 0) || !Number.isFinite(maxDrift)) throw new ConfigError(`Hlc: maxDriftMs must be a finite number >= 0, got ${maxDrift}`)
    this.node = node
    this.maxDriftMs = maxDrift
    this.physical = options.now ?? Date.now
  }

  /** Timestamp for a local event (a write or a send). Strictly greater than every earlier one. */
  now(): HlcTimestamp {
    const pt = this.physicalNow()
    if (pt > this.wall) {
      this.wall = pt
      this.logical = 0
    } else {
      this.bumpLogical()
    }
    return { wall: this.wall, logical: this.logical, node: this.node }
  }

  /**
   * Merges a remote timestamp into the clock (on receive) and returns the new local timestamp.
   * @throws ClockDriftError if `remote` is more than maxDriftMs ahead of physical time; the clock is unchanged.
   */
  receive(remote: HlcTimestamp): HlcTimestamp {
    this.witness(remote)
    return { wall: this.wall, logical: this.logical, node: this.node }
  }

  /**
   * {@link receive} without the returned timestamp (nothing allocated): for receivers that only
   * need the clock to move past `remote`.
   * @throws ClockDriftError as receive does; the clock is then unchanged.
   */
  witness(remote: HlcTimestamp): void {
    // Both checked before anything changes: a NaN or fractional wall (remote or physical) taken
    // in stuck the clock there for good, every later timestamp written as another number.
    const problem = timestampProblem(remote)
    if (problem !== undefined) throw new DecodeError(`Hlc: remote timestamp refused: ${problem}`)
    const pt = this.physicalNow()
    this.check(remote, pt)
    const wall = Math.max(this.wall, remote.wall, pt)
    if (wall === this.wall && wall === remote.wall) this.logical = Math.max(this.logical, remote.logical)
    else if (wall === remote.wall) this.logical = remote.logical
    else if (wall !== this.wall) this.logical = -1
    this.wall = wall
    if (this.logical < 0) this.logical = 0
    else this.bumpLogical()
  }

  /**
   * Like {@link receive} but never throws: a timestamp too far ahead or malformed (or a physical
   * reading {@link now} refuses) is ignored, the clock unchanged. Returns whether it was taken in.
   */
  observe(remote: HlcTimestamp): boolean {
    try {
      this.witness(remote)
      return true
    } catch (e) {
      if (isConcordError(e)) return false
      throw e
    }
  }

  /** The last timestamp issued or received, without advancing. */
  peek(): HlcTimestamp {
    return { wall: this.wall, logical: this.logical, node: this.node }
  }

  /**
   * The physical time, whole ms. @throws ConfigError (the clock unchanged) for a reading that is
   * not a time from 0 to below 2^53: Infinity or 2^60 became the wall for good (Infinity then made
   * every encode of a timestamp loop forever), NaN did in witness.
   */
  private physicalNow(): number {
    const pt = Math.floor(this.physical())
    if (!(pt >= 0 && pt < Number.MAX_SAFE_INTEGER)) throw new ConfigError(`Hlc: now() returned ${String(pt)}, not a time in ms from 0 to 2^53 - 2`)
    return pt
  }

  private check(remote: HlcTimestamp, pt: number): void {
    const drift = remote.wall - pt
    if (drift > this.maxDriftMs) throw new ClockDriftError(drift, this.maxDriftMs)
    // At the very top of the range (only reachable with a huge maxDriftMs): taking it in would
    // leave no room for a later timestamp.
    if (remote.wall >= Number.MAX_SAFE_INTEGER) throw new ClockDriftError(drift, this.maxDriftMs)
  }

  private bumpLogical(): void {
    if (this.logical >= MAX_LOGICAL) {
      // Overflowing the counter would break ordering: borrow the next millisecond instead.
      if (this.wall >= Number.MAX_SAFE_INTEGER) throw new RangeError('Hlc: clock exhausted (wall at the largest exact integer)')
      this.wall += 1
      this.logical = 0
    } else this.logical += 1
  }
}

/**
 * Writes a timestamp (wall, logical, node).
 * @throws ConfigError for a timestamp {@link readHlc} would refuse or read as another.
 */
export function writeHlc(e: Encoder, t: HlcTimestamp): void {
  const problem = timestampProblem(t)
  if (problem !== undefined) throw new ConfigError(`timestamp not writable: ${problem}`)
  writeUint(e, t.wall)
  writeUint(e, t.logical)
  writeString(e, t.node)
}

/** Reads a timestamp written by {@link writeHlc}. */
export function readHlc(d: Decoder): HlcTimestamp {
  const wall = readUint(d)
  const logical = readUint(d, MAX_LOGICAL)
  const node = readString(d, MAX_NODE_BYTES)
  return { wall, logical, node }
}

/** Encodes a timestamp on its own. */
export function encodeHlc(t: HlcTimestamp): Uint8Array {
  return encodeWith((e) => writeHlc(e, t))
}

/** Decodes a timestamp; bad bytes throw DecodeError. */
export function decodeHlc(bytes: Uint8Array): HlcTimestamp {
  return decodeWith('hlc timestamp', bytes, readHlc)
}
