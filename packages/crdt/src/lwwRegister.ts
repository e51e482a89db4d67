import type { HlcTimestamp, Json } from '@concord/core'
import { CausalReplica, Cursor, type CrdtOptions } from './base.js'
import { LwwRegisterView } from './kernels.js'
import { LWW } from './schema.js'

/**
 * Last-writer-wins register (`typeName` `lww-register`). A write overwrites every write it has
 * observed, whatever the clocks say; among concurrent writes the highest HLC timestamp wins, then
 * the highest dot (replica id, counter). Concurrent losers are kept (not pruned at join, which
 * would break associativity) until the next write, and reported as `lww-overwrite` conflicts.
 */
export class LwwRegister<T extends Json = Json> extends CausalReplica<T | undefined> {
  private readonly view: LwwRegisterView<T>

  /** @throws ConfigError on bad options. */
  constructor(options: CrdtOptions) {
    super('lww-register', LWW, options)
    this.view = new LwwRegisterView<T>(new Cursor(this, [], LWW))
  }

  /** Writes `value`; returns the HLC timestamp it carries. */
  set(value: T): HlcTimestamp {
    return this.view.set(value)
  }

  /** The winning value, or undefined before any write. */
  value(): T | undefined {
    return this.view.value()
  }
}
