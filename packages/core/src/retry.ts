/**
 * One retry helper with exponential backoff and full jitter, used by every adapter.
 */
import { ConfigError, checkKnownOptions, isConcordError } from './errors.js'

/** Options for {@link retry}. */
export interface RetryOptions {
  /** Attempts in all, the first included. @default 5 */
  readonly retries?: number
  /** First backoff in ms. @default 100 */
  readonly initialDelayMs?: number
  /** Largest backoff in ms. @default 10_000 */
  readonly maxDelayMs?: number
  /** Backoff multiplier. @default 2 */
  readonly factor?: number
  /** Random source in [0, 1) for jitter. @default Math.random */
  readonly random?: () => number
  /** Waits `ms` (it may end early when `signal` aborts); inject a virtual sleep in simulations. @default setTimeout-based, cut short by an abort */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>
  /** Which errors to retry. @default ConcordErrors with `retriable` true */
  readonly shouldRetry?: (error: unknown, attempt: number) => boolean
  /** Stops retrying when aborted: a backoff in progress ends, and the last error is thrown without another attempt. */
  readonly signal?: AbortSignal
}

function defaultSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) return resolve()
    const done = (): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
  })
}

/** Backoff before attempt `attempt` (1-based retry count), with full jitter. */
export function backoffDelay(attempt: number, options: RetryOptions = {}): number {
  const initial = options.initialDelayMs ?? 100
  const max = options.maxDelayMs ?? 10_000
  const factor = options.factor ?? 2
  const random = options.random ?? Math.random
  const ceiling = Math.min(max, initial * factor ** (attempt - 1))
  return Math.floor(random() * ceiling)
}

/**
 * Runs `fn` until it succeeds, a non-retriable error occurs, attempts run out or `signal` aborts
 * (then the last error is thrown). @throws ConfigError for options it cannot mean.
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  checkRetryOptions(options)
  const attempts = options.retries ?? 5
  const shouldRetry = options.shouldRetry ?? ((e: unknown) => isConcordError(e) && e.retriable)
  const sleep = options.sleep ?? defaultSleep
  // A function, not a narrowed property read: the signal may abort during any await.
  const aborted = (): boolean => options.signal?.aborted === true
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt)
    } catch (e) {
      if (attempt >= attempts || aborted() || !shouldRetry(e, attempt)) throw e
      await sleep(backoffDelay(attempt, options), options.signal)
      // Aborted while backing off: no further attempt.
      if (aborted()) throw e
    }
  }
}

const RETRY_KEYS = ['retries', 'initialDelayMs', 'maxDelayMs', 'factor', 'random', 'sleep', 'shouldRetry', 'signal']

/** @throws ConfigError for options {@link retry} cannot mean (a NaN `retries` would retry forever). */
function checkRetryOptions(o: RetryOptions): void {
  if (typeof o !== 'object' || o === null) throw new ConfigError('retry: options must be an object')
  checkKnownOptions('retry', o, RETRY_KEYS)
  if (o.retries !== undefined && !(Number.isSafeInteger(o.retries) && o.retries >= 1)) throw new ConfigError(`retry: retries must be an integer >= 1, got ${String(o.retries)}`)
  for (const k of ['initialDelayMs', 'maxDelayMs'] as const) {
    const v = o[k]
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v >= 0)) throw new ConfigError(`retry: ${k} must be a finite number >= 0, got ${String(v)}`)
  }
  if (o.factor !== undefined && !(typeof o.factor === 'number' && Number.isFinite(o.factor) && o.factor >= 1)) throw new ConfigError(`retry: factor must be a finite number >= 1, got ${String(o.factor)}`)
  for (const k of ['random', 'sleep', 'shouldRetry'] as const) {
    if (o[k] !== undefined && typeof o[k] !== 'function') throw new ConfigError(`retry: ${k} must be a function`)
  }
  // Checked up front: a signal without addEventListener failed only in the first backoff, and its
  // timer then threw a TypeError no caller could catch.
  const signal: unknown = o.signal
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new ConfigError('retry: signal must be an AbortSignal')
}
