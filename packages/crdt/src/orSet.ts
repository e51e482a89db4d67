import type { Json } from '@concord/core'
import { CausalReplica, Cursor, type CrdtOptions } from './base.js'
import { OrSetView } from './kernels.js'
import { ORSET } from './schema.js'

/**
 * Add-wins observed-remove set of JSON values (`typeName` `or-set`). A remove deletes the adds it
 * has observed; an add concurrent with it survives. Removed elements leave no tombstone beyond the
 * range-compressed causal context.
 */
export class OrSet<T extends Json = Json> extends CausalReplica<T[]> {
  private readonly view: OrSetView<T>

  /** @throws ConfigError on bad options. */
  constructor(options: CrdtOptions) {
    super('or-set', ORSET, options)
    this.view = new OrSetView<T>(new Cursor(this, [], ORSET))
  }

  /** Adds `element`; equal JSON values (whatever their key order) are one element. */
  add(element: T): void {
    this.view.add(element)
  }

  /** Removes `element` as observed here. Returns whether it was present. */
  remove(element: T): boolean {
    return this.view.remove(element)
  }

  /** Removes every element observed here. */
  clear(): void {
    this.view.clear()
  }

  has(element: T): boolean {
    return this.view.has(element)
  }

  get size(): number {
    return this.view.size
  }

  /** Elements sorted by canonical JSON. */
  value(): T[] {
    return this.view.value()
  }
}
