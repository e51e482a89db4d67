import type { HlcTimestamp, Json } from '@concord/core'
import { CausalReplica, Cursor, type CrdtOptions } from './base.js'
import { LwwMapView } from './kernels.js'
import { LWWMAP } from './schema.js'

/**
 * Map of string keys to last-writer-wins values (`typeName` `lww-map`). Each key is an LWW
 * register; a delete is an LWW write of a marker without a value, so a deleted key costs one dot
 * and one timestamp until it is written again.
 */
export class LwwMap<V extends Json = Json> extends CausalReplica<Record<string, V>> {
  private readonly view: LwwMapView<V>

  /** @throws ConfigError on bad options. */
  constructor(options: CrdtOptions) {
    super('lww-map', LWWMAP, options)
    this.view = new LwwMapView<V>(new Cursor(this, [], LWWMAP))
  }

  /** Sets `key`; returns the write's HLC timestamp. */
  set(key: string, value: V): HlcTimestamp {
    return this.view.set(key, value)
  }

  /** Deletes `key` (an LWW write of a deletion marker); returns its HLC timestamp. */
  delete(key: string): HlcTimestamp {
    return this.view.delete(key)
  }

  get(key: string): V | undefined {
    return this.view.get(key)
  }

  has(key: string): boolean {
    return this.view.has(key)
  }

  /** Present keys, sorted. */
  keys(): string[] {
    return this.view.keys()
  }

  /** Present entries, keys sorted. */
  value(): Record<string, V> {
    return this.view.value()
  }
}
