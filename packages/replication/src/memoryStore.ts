/**
 * MemoryStore: the Store contract in memory. Durable only for the life of the object, which is
 * what tests and the simulator need: a "crashed" node is restarted over the same MemoryStore.
 */
import { ClosedError, ConfigError, checkStoreBatch, checkStoreKey, type Store, type StoreOp } from '@concord/core'

/**
 * In-memory {@link Store}. Batches are atomic because they are applied synchronously. Written
 * arrays are kept as they are (handed over, per the Store contract: a copy per value was a tenth
 * of the replication hot path); `get` returns copies, so readers cannot change what is stored.
 */
export class MemoryStore implements Store {
  readonly name = 'memory'
  private readonly map = new Map<string, Uint8Array>()
  private closed = false

  private check(): void {
    if (this.closed) throw new ClosedError('memory store is closed')
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    this.check()
    // As every store: a key that is not one (a number, undefined) is the caller's mistake, not an absent key.
    checkStoreKey('memory store', key)
    const v = this.map.get(key)
    return v === undefined ? undefined : v.slice()
  }

  async put(key: string, value: Uint8Array): Promise<void> {
    await this.write([{ op: 'put', key, value }])
  }

  async delete(key: string): Promise<void> {
    await this.write([{ op: 'delete', key }])
  }

  async write(batch: readonly StoreOp[]): Promise<void> {
    this.check()
    checkStoreBatch('store', batch)
    for (const op of batch) {
      if (op.op === 'put') this.map.set(op.key, op.value)
      else this.map.delete(op.key)
    }
  }

  async keys(prefix: string): Promise<readonly string[]> {
    this.check()
    // startsWith(undefined) looks for "undefined": keys() answered [] as if the store were empty.
    if (typeof prefix !== 'string') throw new ConfigError('memory store: keys() takes a string prefix')
    return [...this.map.keys()].filter((k) => k.startsWith(prefix)).sort()
  }

  /** Reopens after {@link close} keeping the data, as a process restart over the same disk would. */
  reopen(): MemoryStore {
    const s = new MemoryStore()
    for (const [k, v] of this.map) s.map.set(k, v)
    return s
  }

  async close(): Promise<void> {
    this.closed = true
  }
}
