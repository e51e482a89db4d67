/**
 * Concord's error hierarchy. Every error Concord throws is a {@link ConcordError} with a stable
 * `code`, a `retriable` flag (would the same call succeed later?) and an optional `cause`.
 * Adapters translate backend errors (ioredis, kafkajs, yjs, automerge) into these.
 */

const BRAND = Symbol.for('@concord/core/ConcordError')

/** Options every Concord error accepts. */
export interface ConcordErrorOptions {
  /** The underlying error, kept for diagnosis. */
  readonly cause?: unknown
  /** Overrides the class default for whether retrying may succeed. */
  readonly retriable?: boolean
}

/** Root of all errors raised by Concord. Check with {@link isConcordError}, which survives duplicated installs. */
export class ConcordError extends Error {
  /** Stable machine-readable code, e.g. `DECODE`. */
  readonly code: string
  /** Whether the same operation may succeed when retried later. */
  readonly retriable: boolean
  declare readonly cause?: unknown

  constructor(message: string, code = 'CONCORD', options: ConcordErrorOptions = {}, defaultRetriable = false) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = new.target.name
    this.code = code
    this.retriable = options.retriable ?? defaultRetriable
    Object.defineProperty(this, BRAND, { value: true })
  }
}

/**
 * A thrown value as text, for a message: `name: message` for an Error, else `String(e)` — never
 * throwing itself. A value without a string form (`Object.create(null)`, a throwing `toString`)
 * made `String(e)` throw a TypeError out of the code reporting it.
 */
export function describeThrown(e: unknown): string {
  try {
    return e instanceof Error ? `${e.name}: ${e.message}` : String(e)
  } catch {
    return Object.prototype.toString.call(e)
  }
}

/** True for any ConcordError, even one created by another installed copy of this package. */
export function isConcordError(e: unknown): e is ConcordError {
  return typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[BRAND] === true
}

/** Bytes that do not decode: truncated, corrupted, wrong version, oversize. Nothing was applied. */
export class DecodeError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super(message, 'DECODE', options)
  }
}

/** A remote timestamp is further ahead of the local clock than the configured maximum drift. */
export class ClockDriftError extends ConcordError {
  readonly driftMs: number
  readonly maxDriftMs: number
  constructor(driftMs: number, maxDriftMs: number, options: ConcordErrorOptions = {}) {
    super(`remote clock is ${driftMs} ms ahead, more than the allowed ${maxDriftMs} ms`, 'CLOCK_DRIFT', options, true)
    this.driftMs = driftMs
    this.maxDriftMs = maxDriftMs
  }
}

/** Options were missing, malformed or contradictory. Raised at construction, before any work. */
export class ConfigError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super(message, 'CONFIG', options)
  }
}

/** A delta or envelope is well-formed but does not fit the replica (wrong type, wrong document). */
export class TypeMismatchError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super(message, 'TYPE_MISMATCH', options)
  }
}

/** An envelope's signature is missing, wrong, or from a region with no configured key. */
export class SignatureError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super(message, 'SIGNATURE', options)
  }
}

/** A write carried an ownership epoch older than the current one (fencing). */
export class StaleEpochError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super(message, 'STALE_EPOCH', options)
  }
}

/** A write reached a region that does not own the entity. */
export class NotOwnerError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super(message, 'NOT_OWNER', options)
  }
}

/** A transport (log) operation failed; usually retriable. */
export class TransportError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super(message, 'TRANSPORT', options, true)
  }
}

/**
 * A record, delta or envelope over a size limit (a log's largest record, an envelope limit): it
 * was not appended or sent. Retrying the same data cannot help.
 */
export class TooLargeError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super(message, 'TOO_LARGE', options)
  }
}

/**
 * A resource is held by another process: a FileStore's file, locked by the process that opened
 * it. Retriable: the holder may close it, or — when it died — its lock goes stale.
 */
export class LockedError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super(message, 'LOCKED', options, true)
  }
}

/** An operation was attempted on a closed component. */
export class ClosedError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super(message, 'CLOSED', options)
  }
}

/**
 * Refuses option keys outside `known` (a misspelt or misplaced option would otherwise be ignored
 * without a word, its default silently in force), naming the closest known key when one is near,
 * or where a key of `elsewhere` belongs (`{ maxDelayMs: 'batch.maxDelayMs' }`).
 * @throws ConfigError
 */
export function checkKnownOptions(what: string, options: object, known: readonly string[], elsewhere: Readonly<Record<string, string>> = {}): void {
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue
    const near = elsewhere[key] ?? known.find((k) => k.toLowerCase() === key.toLowerCase()) ?? nearest(key, known)
    throw new ConfigError(`${what}: unknown option ${JSON.stringify(key)}${near === undefined ? '' : ` (did you mean ${JSON.stringify(near)}?)`}; known options: ${known.join(', ')}`)
  }
}

/** The key of `known` at the smallest edit distance (at most 2) from `key`; a tie goes to the longer common prefix. */
function nearest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined
  let bestScore = Number.POSITIVE_INFINITY
  for (const k of known) {
    const d = editDistance(k, key)
    if (d > 2) continue
    let prefix = 0
    while (prefix < k.length && prefix < key.length && k[prefix] === key[prefix]) prefix++
    const score = d * 1000 - prefix
    if (score < bestScore) {
      best = k
      bestScore = score
    }
  }
  return best
}

/** Levenshtein distance (short strings: option names). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min((prev[j] as number) + 1, (cur[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = cur
  }
  return prev[b.length] as number
}
