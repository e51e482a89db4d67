import { CausalReplica, Cursor, type CrdtOptions } from './base.js'
import { OrMapView, type FieldId, type FieldViews } from './kernels.js'
import { ORMAP, type CausalTypeName } from './schema.js'

/**
 * Observed-remove map of nested CRDTs (`typeName` `or-map`). A field is identified by its name and
 * type (Riak style), and every nested field shares the map's causal context. Removing a field
 * resets what was observed; a concurrent update survives on top of the reset (update wins).
 *
 * ```ts
 * const cart = new OrMap({ replicaId: 'eu-1' })
 * cart.update('items', 'or-set', (s) => s.add('sku-1'))
 * cart.update('qty', 'pn-counter', (c) => c.increment(2))
 * cart.value() // { items: ['sku-1'], qty: 2 }
 * ```
 */
export class OrMap extends CausalReplica<Record<string, unknown>> {
  private readonly view: OrMapView

  /** @throws ConfigError on bad options. */
  constructor(options: CrdtOptions) {
    super('or-map', ORMAP, options)
    this.view = new OrMapView(new Cursor(this, [], ORMAP))
  }

  /** Runs `fn` on the field's view; its writes go out as one delta. */
  update<K extends CausalTypeName, R>(name: string, type: K, fn: (view: FieldViews[K]) => R): R {
    return this.view.update(name, type, fn)
  }

  /** Removes the field (every type of that name when `type` is omitted) as observed here. */
  remove(name: string, type?: CausalTypeName): boolean {
    return this.view.remove(name, type)
  }

  /** The plain value of one field, or undefined when absent. */
  get<K extends CausalTypeName>(name: string, type: K): ReturnType<FieldViews[K]['value']> | undefined {
    return this.view.get(name, type)
  }

  has(name: string, type?: CausalTypeName): boolean {
    return this.view.has(name, type)
  }

  fields(): FieldId[] {
    return this.view.fields()
  }

  /** Plain nested object of every field's value. */
  value(): Record<string, unknown> {
    return this.view.value()
  }
}
