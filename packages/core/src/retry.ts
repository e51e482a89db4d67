/**
 * One retry helper with exponential backoff and full jitter, used by every adapter.
 */
import { isConcordError } from './errors.js'

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
  /** Waits `ms`; inject a virtual sleep in simulations. @default setTimeout-based */
  readonly sleep?: (ms: number) => Promise<void>
  /** Which errors to retry. @default ConcordErrors with `retriable` true */
  readonly shouldRetry?: (error: unknown, attempt: number) => boolean
  /** Stops retrying when aborted. */
  readonly signal?: AbortSignal
}

const defaultSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Backoff before attempt `attempt` (1-based retry count), with full jitter. */
export function backoffDelay(attempt: number, options: RetryOptions = {}): number {
  const initial = options.initialDelayMs ?? 100
  const max = options.maxDelayMs ?? 10_000
  const factor = options.factor ?? 2
  const random = options.random ?? Math.random
  const ceiling = Math.min(max, initial * factor ** (attempt - 1))
  return Math.floor(random() * ceiling)
}

/** Runs `fn` until it succeeds, a non-retriable error occurs, or attempts run out (then the last error is thrown). */
export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const attempts = options.retries ?? 5
  const shouldRetry = options.shouldRetry ?? ((e: unknown) => isConcordError(e) && e.retriable)
  const sleep = options.sleep ?? defaultSleep
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt)
    } catch (e) {
      if (attempt >= attempts || options.signal?.aborted === true || !shouldRetry(e, attempt)) throw e
      await sleep(backoffDelay(attempt, options))
    }
  }
}
