/**
 * The Store contract: durable local state of one region node. Replica snapshots, consumer
 * positions, sequence counters and the outbox live side by side under string keys, and
 * {@link Store.write} saves several of them atomically, so that "replica state + consumer
 * position" can never be half-written by a crash. MemoryStore and FileStore in
 * `@concord/replication` implement it.
 */

/** One operation of an atomic {@link Store.write} batch. */
export type StoreOp =
  | { readonly op: 'put'; readonly key: string; readonly value: Uint8Array }
  | { readonly op: 'delete'; readonly key: string }

/** Durable key → bytes map with atomic batches. Keys are non-empty strings. */
export interface Store {
  /** Store name, for errors and metrics: `memory`, `file`, ... */
  readonly name: string
  /** The value under `key`, if any. */
  get(key: string): Promise<Uint8Array | undefined>
  /** Sets `key` durably (same as a one-op {@link Store.write}). */
  put(key: string, value: Uint8Array): Promise<void>
  /** Removes `key` durably; removing an absent key is not an error. */
  delete(key: string): Promise<void>
  /**
   * Applies every operation in order, atomically: after a crash either all of them are visible or
   * none. Resolves once durable. Later operations on the same key win. Values are handed over:
   * do not change an array after writing it (an in-memory store may keep it as it is).
   */
  write(batch: readonly StoreOp[]): Promise<void>
  /** Keys starting with `prefix`, in ascending code-unit order. */
  keys(prefix: string): Promise<readonly string[]>
  /** Releases files. Further calls throw ClosedError. */
  close(): Promise<void>
}
