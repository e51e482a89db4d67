/**
 * The Store contract: durable local state of one region node. Replica snapshots, consumer
 * positions, sequence counters and the outbox live side by side under string keys, and
 * {@link Store.write} saves several of them atomically, so that "replica state + consumer
 * position" can never be half-written by a crash. MemoryStore and FileStore in
 * `@concord/replication` implement it.
 */

import { isWellFormed } from './codec.js'
import { ConfigError } from './errors.js'

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

/**
 * Checks a {@link Store.write} batch, for every store: an array of operations, each an object
 * with a non-empty, well-formed key (a lone surrogate has no UTF-8 form: a store that encodes keys
 * would keep another key), a Uint8Array value for a put. `what` names the store in the message.
 * @throws ConfigError
 */
export function checkStoreBatch(what: string, batch: readonly StoreOp[]): void {
  if (!Array.isArray(batch)) throw new ConfigError(`${what}: write takes an array of operations`)
  for (const op of batch as readonly unknown[] as ReadonlyArray<StoreOp | null | undefined>) {
    if (typeof op !== 'object' || op === null) throw new ConfigError(`${what}: an operation must be an object, got ${String(op)}`)
    checkStoreKey(what, op.key)
    if (op.op === 'put') {
      if (!(op.value instanceof Uint8Array)) throw new ConfigError(`${what}: value for ${op.key} must be a Uint8Array`)
    } else if (op.op !== 'delete') throw new ConfigError(`${what}: unknown operation ${String((op as { op: unknown }).op)}`)
  }
}

/** Checks one store key (see {@link checkStoreBatch}). @throws ConfigError */
export function checkStoreKey(what: string, key: unknown): asserts key is string {
  if (typeof key !== 'string' || key.length === 0) throw new ConfigError(`${what}: keys must be non-empty strings`)
  if (!isWellFormed(key)) throw new ConfigError(`${what}: key ${JSON.stringify(key.slice(0, 40))} is not well-formed UTF-16 (a lone surrogate)`)
}
