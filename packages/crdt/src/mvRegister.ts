import type { Json } from '@concord/core'
import { CausalReplica, Cursor, type CrdtOptions } from './base.js'
import { MvRegisterView } from './kernels.js'
import { MV } from './schema.js'

/**
 * Multi-value register (`typeName` `mv-register`): a write replaces the values it has observed;
 * concurrent writes are all kept as siblings until a later write overwrites them.
 */
export class MvRegister<T extends Json = Json> extends CausalReplica<T[]> {
  private readonly view: MvRegisterView<T>

  /** @throws ConfigError on bad options. */
  constructor(options: CrdtOptions) {
    super('mv-register', MV, options)
    this.view = new MvRegisterView<T>(new Cursor(this, [], MV))
  }

  /** Writes `value`, replacing every sibling observed here. */
  set(value: T): void {
    this.view.set(value)
  }

  /** Concurrent values (siblings) sorted by canonical JSON; `[]` before any write. */
  value(): T[] {
    return this.view.value()
  }
}
