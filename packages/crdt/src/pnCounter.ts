import { CausalReplica, Cursor, type CrdtOptions } from './base.js'
import { PnCounterView } from './kernels.js'
import { COUNTER } from './schema.js'

/**
 * Positive-negative counter (`typeName` `pn-counter`), in causal form: each replica keeps one
 * live dot holding its accumulated increments and decrements, so nested in an {@link OrMap} it
 * can be reset by removing the field.
 */
export class PnCounter extends CausalReplica<number> {
  private readonly view: PnCounterView

  /** @throws ConfigError on bad options. */
  constructor(options: CrdtOptions) {
    super('pn-counter', COUNTER, options)
    this.view = new PnCounterView(new Cursor(this, [], COUNTER))
  }

  /** Adds `n` (a safe non-negative integer, default 1). @throws TypeError otherwise. */
  increment(n = 1): void {
    this.view.increment(n)
  }

  /** Subtracts `n` (a safe non-negative integer, default 1). @throws TypeError otherwise. */
  decrement(n = 1): void {
    this.view.decrement(n)
  }

  /** Sum of every replica's increments minus decrements. */
  value(): number {
    return this.view.value()
  }
}
