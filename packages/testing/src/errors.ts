/**
 * Errors raised by the simulator. Both are {@link ConcordError}s so callers can branch on `code`.
 */
import { ConcordError, type ConcordErrorOptions } from '@concord/core'

/** The region is crashed: it has no replica until it is restarted (or the simulation healed). */
export class RegionDownError extends ConcordError {
  readonly region: string
  constructor(region: string, options: ConcordErrorOptions = {}) {
    super(`region ${region} is down`, 'REGION_DOWN', options, true)
    this.region = region
  }
}

/** The regions still differ after the allowed number of anti-entropy rounds. */
export class NotConvergedError extends ConcordError {
  /** Anti-entropy rounds run before giving up. */
  readonly rounds: number
  constructor(rounds: number, detail: string, options: ConcordErrorOptions = {}) {
    super(`not converged after ${rounds} anti-entropy rounds: ${detail}`, 'NOT_CONVERGED', options)
    this.rounds = rounds
  }
}
