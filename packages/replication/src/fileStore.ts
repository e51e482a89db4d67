/**
 * FileStore: the durable embedded Store. One append-only file of checksummed batch records; a
 * batch is one record, so it is atomic: on restart a torn last record (running past the end of the
 * file, or a tail of zeros) is detected by its length or checksum and cut off, and every record
 * before it is kept; a bad record with records after it is damage, refused with a DecodeError
 * (nothing is cut off silently). A failed write is cut off before the next one; after a failed
 * fsync the store refuses writes (the file's content is unknown). When dead records
 * dominate, the live map is compacted into a new file (written to a temporary file, fsynced,
 * renamed over the old one, directory fsynced), so a crash during compaction leaves either the old
 * or the new file, never a mix.
 *
 * The whole map is held in memory (the file is the durability, not the index): suited to the
 * state of one region node, not to large data sets.
 *
 * One process at a time: an open store holds a lock beside the real file (symlinks resolved), the
 * directory `<path>.lock`, whose time it refreshes every lockStaleMs / 2 (proper-lockfile); a second FileStore
 * on the same path — in this process, another one, or another host sharing the volume — is refused
 * with a LockedError instead of interleaving records with the first (two in-memory maps writing one
 * file, and one compaction renaming the file under the other, lose data without a word). A holder
 * that died stops refreshing its lock; after lockStaleMs it is taken over. A holder that finds its
 * lock taken over or gone (it stalled past lockStaleMs, or someone removed the lock) refuses every
 * later write.
 */
import { createHash } from 'node:crypto'
import { crc32 } from 'node:zlib'
import { lock as lockFile } from 'proper-lockfile'
import { open, realpath, rename, mkdir, unlink, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import {
  ClosedError,
  ConfigError,
  DecodeError,
  LockedError,
  checkKnownOptions,
  checkStoreBatch,
  checkStoreKey,
  decodeWith,
  encodeWith,
  readByte,
  readBytes,
  readLength,
  readString,
  writeByte,
  writeBytes,
  writeString,
  writeUint,
  MAX_COLLECTION,
  MAX_FIELD_BYTES,
  type Store,
  type StoreOp,
} from '@concord/core'

/** Options for {@link FileStore.open}. */
export interface FileStoreOptions {
  /**
   * Compact when the file is larger than this many bytes and more than twice the live data.
   * @default 4 MiB
   */
  readonly compactMinBytes?: number
  /**
   * fsync after every batch. Turning it off trades durability on power loss for speed (a process
   * crash still loses nothing the OS accepted).
   * @default true
   */
  readonly fsync?: boolean
  /**
   * Lock the store while it is open (see {@link FileStore}). Turn it off only where something else
   * guarantees one open FileStore per file, or for tests that simulate a crash by opening the file
   * again in the same process. Without the lock, one FileStore on the file at a time loses nothing
   * (a compaction's temporary file left by a crash is never read as data: open removes it). Two
   * open at once — in one process or two, an abandoned one with a write or compaction still
   * running included — lose acknowledged writes: a compaction in one renames a file holding only
   * its own map over the path (the other's writes, before and after, are gone at the next open),
   * and opening one removes the other's compaction file in progress (that compaction fails).
   * @default true
   */
  readonly lock?: boolean
  /**
   * How long a lock may go without being refreshed before it counts as its holder's death and is
   * taken over (at least 2000). Longer tolerates longer stalls of a live holder (a paused VM, a
   * frozen container); shorter lets a replacement start sooner after a crash.
   * @default 10000
   */
  readonly lockStaleMs?: number
}

const OPTION_KEYS = ['compactMinBytes', 'fsync', 'lock', 'lockStaleMs']
const MIN_LOCK_STALE_MS = 2000

/**
 * File formats. Version 2 (written since): a record header is u32 LE payload length, the first 8
 * bytes of SHA-256(payload), and a CRC-32 of those 12 bytes (u32 LE). Version 1 had no header
 * checksum, so a damaged length field looked like a torn last write and every record after it was
 * cut off without a word (review finding); a version 1 file is still read, and rewritten as
 * version 2 when opened.
 */
const MAGIC_V1 = new TextEncoder().encode('CONCORD-STORE-1\n')
const MAGIC = new TextEncoder().encode('CONCORD-STORE-2\n')
type Version = 1 | 2
const HEADER: Record<Version, number> = { 1: 4 + 8, 2: 4 + 8 + 4 }
/**
 * How far past a bad record's start the reader looks for a valid record, before it decides that
 * the bad one is the torn last write (cut off) rather than damage with records after it (refused).
 */
const SCAN_BYTES = 16 * 1024 * 1024
/** Most payload bytes the scan after a bad record may checksum (see soundRecordAfter). */
const SCAN_HASH_BYTES = 4 * SCAN_BYTES
const MAX_RECORD_BYTES = 512 * 1024 * 1024
const OP_PUT = 1
const OP_DELETE = 2

/**
 * Largest compaction record: the live map is written as several records past this (or
 * MAX_COLLECTION entries). Well within SCAN_BYTES, so that a compaction record whose header is
 * damaged has the next record within the scan and is refused as damage: at 64 MiB, one flipped
 * bit in the first record's length made open() cut off the whole compacted map and open the store
 * empty (review finding). A single entry past this still gets a record of its own, as a batch
 * past SCAN_BYTES does: damage to such a record's header is not told from a torn last write.
 */
const COMPACT_RECORD_BYTES = SCAN_BYTES / 4

/** Bytes an entry takes in a record (key as UTF-8, value, framing), as compaction would write it. */
function entryBytes(key: string, value: Uint8Array | undefined): number {
  return Buffer.byteLength(key) + (value?.length ?? 0) + 8
}

/**
 * Refuses a batch this file format could write but not read back (it would be lost at the next
 * open, with every record after it): more than MAX_COLLECTION operations, a key past
 * MAX_FIELD_BYTES of UTF-8, a value past MAX_RECORD_BYTES.
 */
function checkBatchLimits(batch: readonly StoreOp[]): void {
  if (batch.length > MAX_COLLECTION) throw new ConfigError(`FileStore: a batch holds at most ${MAX_COLLECTION} operations, got ${batch.length}`)
  for (const op of batch) {
    if (op.key.length * 3 > MAX_FIELD_BYTES && Buffer.byteLength(op.key) > MAX_FIELD_BYTES) {
      throw new ConfigError(`FileStore: key ${JSON.stringify(op.key.slice(0, 40))}... is longer than ${MAX_FIELD_BYTES} bytes`)
    }
    if (op.op === 'put' && op.value.length > MAX_RECORD_BYTES) throw new ConfigError(`FileStore: value of ${op.key} is longer than ${MAX_RECORD_BYTES} bytes`)
  }
}

/** Writes all of `bytes` (a write may take fewer than it was given). */
async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done)
    if (bytesWritten <= 0) throw new Error(`FileStore: a write took no bytes (${bytes.length - done} left)`)
    done += bytesWritten
  }
}

/** fsyncs the directory `dir` (a created or renamed file's entry in it). */
async function syncDir(dir: string): Promise<void> {
  const h = await open(dir, 'r')
  try {
    await h.sync()
  } finally {
    await h.close()
  }
}

function checksum(payload: Uint8Array): Uint8Array {
  return createHash('sha256').update(payload).digest().subarray(0, 8)
}

function encodeBatch(batch: readonly StoreOp[]): Uint8Array {
  return encodeWith((e) => {
    writeUint(e, batch.length)
    for (const op of batch) {
      writeByte(e, op.op === 'put' ? OP_PUT : OP_DELETE)
      writeString(e, op.key)
      if (op.op === 'put') writeBytes(e, op.value)
    }
  })
}

function decodeBatch(payload: Uint8Array): StoreOp[] {
  return decodeWith('store record', payload, (d) => {
    const n = readLength(d, MAX_COLLECTION, 2)
    const ops: StoreOp[] = []
    for (let i = 0; i < n; i++) {
      const kind = readByte(d)
      const key = readString(d)
      if (kind === OP_PUT) ops.push({ op: 'put', key, value: readBytes(d, MAX_RECORD_BYTES).slice() })
      else if (kind === OP_DELETE) ops.push({ op: 'delete', key })
      else throw new DecodeError(`store record: unknown op ${kind}`)
    }
    return ops
  })
}

/** Bytes of a file read a window at a time (windows of at least WINDOW_BYTES). */
class FileWindows {
  private window = new Uint8Array(0)
  private at = 0

  constructor(
    private readonly handle: FileHandle,
    readonly size: number,
  ) {}

  /** `n` bytes from `pos` (within the file): a view into the window holding them. */
  async bytes(pos: number, n: number): Promise<Uint8Array> {
    if (pos < this.at || pos + n > this.at + this.window.length) {
      const length = Math.min(Math.max(n, WINDOW_BYTES), this.size - pos)
      const buf = new Uint8Array(length)
      let got = 0
      while (got < length) {
        const { bytesRead } = await this.handle.read(buf, got, length - got, pos + got)
        if (bytesRead === 0) throw new DecodeError(`FileStore: the file ended at byte ${pos + got} while reading it (changed by another process?)`)
        got += bytesRead
      }
      this.window = buf
      this.at = pos
    }
    return this.window.subarray(pos - this.at, pos - this.at + n)
  }

  /** Whether every byte from `from` to the end is zero. */
  async zerosFrom(from: number): Promise<boolean> {
    for (let pos = from; pos < this.size; ) {
      const n = Math.min(WINDOW_BYTES, this.size - pos)
      const b = await this.bytes(pos, n)
      for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false
      pos += n
    }
    return true
  }
}

/** Size of the windows a store file is read in when opened. */
const WINDOW_BYTES = 64 * 1024 * 1024

function frame(payload: Uint8Array, version: Version): Uint8Array {
  const h = HEADER[version]
  const out = new Uint8Array(h + payload.length)
  const view = new DataView(out.buffer)
  view.setUint32(0, payload.length, true)
  out.set(checksum(payload), 4)
  if (version === 2) view.setUint32(12, crc32(out.subarray(0, 12)), true)
  out.set(payload, h)
  return out
}

/**
 * The record at `pos` as far as its header says, when the header is sound: its payload length
 * (undefined for a bad header — version 2's checksum fails — or a length no writer makes).
 */
function headerLength(header: Uint8Array, version: Version): number | undefined {
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength)
  const len = view.getUint32(0, true)
  if (version === 2 && view.getUint32(12, true) !== crc32(header.subarray(0, 12))) return undefined
  return len > MAX_RECORD_BYTES ? undefined : len
}

/**
 * The position of the first sound record (header and payload checksums hold, within the file)
 * starting after `from` and at most SCAN_BYTES past it, if any: what tells damage to a record
 * (records follow it) from the torn last write (nothing does).
 */
async function soundRecordAfter(data: FileWindows, from: number, version: Version): Promise<number | 'unchecked' | undefined> {
  const h = HEADER[version]
  const last = Math.min(data.size - h, from + SCAN_BYTES)
  let hashed = 0
  for (let q = from; q <= last; q++) {
    const header = await data.bytes(q, h)
    const len = headerLength(header, version)
    if (len === undefined || q + h + len > data.size) continue
    // Every candidate's payload is hashed: a file crafted with a header that checks every few
    // bytes, each claiming the rest of the file, cost O(size^2) (a 1 MiB file took 20 s to open —
    // review finding). Past SCAN_HASH_BYTES the tail is not told from damage: refused as damage.
    hashed += len
    if (hashed > SCAN_HASH_BYTES) return 'unchecked'
    const stored = header.subarray(4, 12)
    const sum = checksum(await data.bytes(q + h, len))
    if (sum.every((b, i) => stored[i] === b)) return q
  }
  return undefined
}

/** Errors of opening a store file that say the path is wrong, not that the system failed. */
const PATH_ERRORS = new Set(['EISDIR', 'ENOTDIR', 'EEXIST', 'ENAMETOOLONG', 'EACCES', 'EPERM', 'EROFS', 'ENOENT', 'ELOOP'])

/** Durable {@link Store} in one append-only file. Create with {@link FileStore.open}. */
export class FileStore implements Store {
  readonly name = 'file'
  /** Path of the data file. */
  readonly path: string
  /** Bytes cut off the end of the file when it was opened (a torn last write), 0 when clean. */
  readonly recoveredBytes: number
  private readonly map: Map<string, Uint8Array>
  private handle: FileHandle | undefined
  private fileBytes: number
  private liveBytes: number
  /** The file's format: what its appended records are framed as (a compaction writes version 2). */
  private version: Version
  /** Set by close(): every later call waits for the same close. */
  private closing: Promise<void> | undefined
  private readonly compactMinBytes: number
  private readonly fsync: boolean
  private queue: Promise<void> = Promise.resolve()
  /** The data file's real path (symlinks resolved): compaction replaces that file, not a link to it. */
  private readonly file: string
  /** Releases the file's lock (undefined when not locked). */
  private unlock: (() => Promise<void>) | undefined
  /** Set when the lock was lost while open: writes are refused from then on. */
  private lockLost: LockedError | undefined
  /**
   * Set when a write failed in a way that leaves the file's end unknown (an fsync failed, or a
   * torn write could not be cut off): writes are refused from then on (close and open again).
   */
  private failed: Error | undefined
  /** Why the last automatic compaction failed, if it did (the writes themselves succeeded). */
  private compactError: Error | undefined
  /** File size below which no automatic compaction is tried again after one failed. */
  private compactRetryAt = 0

  private constructor(path: string, file: string, handle: FileHandle, map: Map<string, Uint8Array>, fileBytes: number, recovered: number, version: Version, options: FileStoreOptions) {
    this.path = path
    this.version = version
    this.file = file
    this.handle = handle
    this.map = map
    this.fileBytes = fileBytes
    this.recoveredBytes = recovered
    this.compactMinBytes = options.compactMinBytes ?? 4 * 1024 * 1024
    this.fsync = options.fsync ?? true
    this.liveBytes = 0
    for (const [k, v] of map) this.liveBytes += entryBytes(k, v)
  }

  /** Opens (or creates) the store at `path`, recovering from a torn last record. */
  static async open(path: string, options: FileStoreOptions = {}): Promise<FileStore> {
    if (typeof path !== 'string' || path.length === 0) throw new ConfigError('FileStore: path must be a non-empty string')
    if (typeof options !== 'object' || options === null) throw new ConfigError('FileStore: options must be an object')
    checkKnownOptions('FileStore', options, OPTION_KEYS)
    if (options.compactMinBytes !== undefined && !(options.compactMinBytes >= 0)) {
      throw new ConfigError(`FileStore: compactMinBytes must be >= 0, got ${options.compactMinBytes}`)
    }
    if (options.fsync !== undefined && typeof options.fsync !== 'boolean') throw new ConfigError(`FileStore: fsync must be a boolean, got ${String(options.fsync)}`)
    if (options.lock !== undefined && typeof options.lock !== 'boolean') throw new ConfigError(`FileStore: lock must be a boolean, got ${String(options.lock)}`)
    const staleMs = options.lockStaleMs ?? 10_000
    if (typeof staleMs !== 'number' || !Number.isSafeInteger(staleMs) || staleMs < MIN_LOCK_STALE_MS) {
      throw new ConfigError(`FileStore: lockStaleMs must be an integer >= ${MIN_LOCK_STALE_MS}, got ${String(staleMs)}`)
    }
    if (path.includes('\0')) throw new ConfigError('FileStore: path must not contain NUL')
    let handle: FileHandle
    try {
      await mkdir(dirname(path), { recursive: true })
      // Opened (created) before the lock, read after it: the lock is taken on the file's real path,
      // so a second spelling of it (a symlink, a relative path) meets the same lock.
      handle = await open(path, 'a+')
    } catch (e) {
      // A path that cannot be a store file (a directory, under a file, too long, not ours to
      // write): the configuration's fault, named as such; other failures (EMFILE, EIO) as they are.
      const code = (e as { code?: unknown }).code
      if (typeof code === 'string' && PATH_ERRORS.has(code)) throw new ConfigError(`FileStore: cannot open ${path}: ${(e as Error).message}`, { cause: e })
      throw e
    }
    // A device or a FIFO opens, and failed later with a raw EINVAL from fsync (review finding).
    let regular: boolean
    try {
      regular = (await handle.stat()).isFile()
    } catch (e) {
      await handle.close().catch(() => undefined)
      throw e
    }
    if (!regular) {
      await handle.close().catch(() => undefined)
      throw new ConfigError(`FileStore: cannot open ${path}: not a regular file`)
    }
    let store: FileStore | undefined
    let lockLostEarly: unknown
    let unlock: (() => Promise<void>) | undefined
    try {
      if (options.lock !== false) unlock = await FileStore.lock(path, staleMs, (e) => (store === undefined ? (lockLostEarly = e) : store.loseLock(e)))
      store = await FileStore.read(path, await realpath(path), handle, options)
    } catch (e) {
      await handle.close().catch(() => undefined)
      await unlock?.().catch(() => undefined)
      throw e
    }
    store.unlock = unlock
    if (lockLostEarly !== undefined) store.loseLock(lockLostEarly)
    // A compaction's temporary file left by a crash (or a failed compaction): never the store's
    // data, so removing it loses nothing. Without the lock it may be another open FileStore's
    // compaction in progress, which then fails (two open at once are unsafe anyway, see `lock`).
    await unlink(`${store.file}.compact`).catch(() => undefined)
    // A version 1 file is rewritten as version 2 (whose record headers are checked); if that
    // fails (a full disk), it goes on as version 1 and the next compaction tries again.
    if (store.version === 1 && store.lockLost === undefined) {
      await store.compactNow().catch((e: unknown) => {
        store.compactError = e instanceof Error ? e : new Error(String(e))
      })
    }
    return store
  }

  /** Takes the lock of the store at `path`; `lost` is called if it is lost later. @throws LockedError when another holder has it. */
  private static async lock(path: string, staleMs: number, lost: (e: unknown) => void): Promise<() => Promise<void>> {
    try {
      // The lock is the directory `<real path>.lock`.
      return await lockFile(path, { stale: staleMs, update: staleMs / 2, retries: 0, realpath: true, onCompromised: lost })
    } catch (e) {
      if ((e as { code?: unknown }).code === 'ELOCKED') {
        throw new LockedError(
          `FileStore: ${path} is open in another FileStore (this process or another one sharing the file system: its lock ${path}.lock, beside the real file, is held). ` +
            `Give each process its own store file; after a holder died, its lock is taken over ${staleMs} ms (lockStaleMs) after its last refresh`,
          { cause: e },
        )
      }
      // Something else at the lock's path (a file, a directory with files in it, one not ours to
      // remove): it came through as a raw ENOTDIR or ENOTEMPTY (review finding).
      const code = (e as { code?: unknown }).code
      if (typeof code === 'string' && (PATH_ERRORS.has(code) || code === 'ENOTEMPTY')) {
        throw new ConfigError(`FileStore: cannot take the lock ${path}.lock (a directory FileStore makes beside the file): ${(e as Error).message}; remove what is there if no FileStore holds it`, { cause: e })
      }
      throw e
    }
  }

  /** The lock was taken over or removed while open: from now on writes are refused (another process may write the file). */
  private loseLock(e: unknown): void {
    this.lockLost ??= new LockedError(
      `FileStore: lost the lock on ${this.path} (${e instanceof Error ? e.message : String(e)}): another process may have taken the store over, so this one refuses further writes; close it and open the store again`,
      { cause: e, retriable: false },
    )
  }

  /** Reads the file behind `handle`, recovering from a torn last record (open() closes `handle` when this fails). */
  private static async read(path: string, file: string, handle: FileHandle, options: FileStoreOptions): Promise<FileStore> {
    // Windows of the file, not the whole of it: Node reads no file past 2 GiB at once (such a
    // store took writes and then could not be opened again).
    const data = new FileWindows(handle, (await handle.stat()).size)
    const size = data.size
    const map = new Map<string, Uint8Array>()
    const head = await data.bytes(0, Math.min(size, MAGIC.length))
    // Empty, or a creation cut short by a crash (part of the header, nothing else): a new store.
    if (size < MAGIC.length && head.every((b, i) => MAGIC[i] === b)) {
      if (size > 0) await handle.truncate(0)
      await writeAll(handle, MAGIC)
      await handle.sync()
      // The new file's entry in its directory, too: a power loss must not take the file away.
      await syncDir(dirname(file))
      return new FileStore(path, file, handle, map, MAGIC.length, 0, 2, options)
    }
    const version: Version | undefined = size < MAGIC.length ? undefined : MAGIC.every((b, i) => head[i] === b) ? 2 : MAGIC_V1.every((b, i) => head[i] === b) ? 1 : undefined
    if (version === undefined) throw new ConfigError(`FileStore: ${path} is not a Concord store file`)
    const h = HEADER[version]
    const damaged = (records: number, pos: number, why: string, after: string): DecodeError =>
      new DecodeError(
        `FileStore: ${path} is damaged: record ${records + 1} (at byte ${pos}) is bad (${why}) and ${after}. ` +
          'Nothing was changed; restore the file from a backup, or move it aside and let the node start empty (anti-entropy brings back what other regions hold)',
      )
    let pos = MAGIC.length
    let records = 0
    // A crash can only tear the last write: its record is cut short, or the file was extended
    // with zeros that never got their data. A bad record with a sound one after it is damage to
    // acknowledged records — refused, the file left as it is, rather than cutting off every record
    // after it without a word.
    while (pos + h <= size) {
      const header = await data.bytes(pos, h)
      const len = headerLength(header, version)
      if (len === undefined || pos + h + len > size) {
        // A sound version 2 header running past the end: the torn last write (its length holds).
        if (len !== undefined && version === 2) break
        // A bad header, or a version 1 length (which no checksum covers) running past the end:
        // the torn last write, unless a sound record follows (a damaged length).
        if (await data.zerosFrom(pos)) break
        const next = await soundRecordAfter(data, pos + 1, version)
        const bad = len === undefined ? 'its header does not check' : 'its length runs past the end of the file'
        if (next === 'unchecked') throw damaged(records, pos, bad, `the bytes after it hold more record headers that check than could be checksummed (${SCAN_HASH_BYTES} bytes): not a torn last write`)
        if (next !== undefined) throw damaged(records, pos, bad, `a sound record follows at byte ${next}`)
        break
      }
      const end = pos + h + len
      const stored = header.slice(4, 12)
      const payload = await data.bytes(pos + h, len)
      const sum = checksum(payload)
      let ops: StoreOp[] | undefined
      let why = 'its checksum does not match'
      if (sum.every((b, i) => stored[i] === b)) {
        try {
          ops = decodeBatch(payload)
        } catch (e) {
          why = `it does not decode (${e instanceof Error ? e.message : String(e)})`
        }
      }
      if (ops === undefined) {
        if (end < size && !(await data.zerosFrom(pos))) throw damaged(records, pos, why, `${size - end} bytes of records follow it`)
        break
      }
      for (const op of ops) {
        if (op.op === 'put') map.set(op.key, op.value)
        else map.delete(op.key)
      }
      records++
      pos = end
    }
    const recovered = size - pos
    if (recovered > 0) {
      // The last write, torn by a crash, was never acknowledged as durable: cut it off.
      await handle.truncate(pos)
      await handle.sync()
    }
    return new FileStore(path, file, handle, map, pos, recovered, version, options)
  }

  private check(): FileHandle {
    if (this.handle === undefined) throw new ClosedError(`file store ${this.path} is closed`)
    return this.handle
  }

  /** {@link check}, for writes: refused once the lock was lost. */
  private checkWritable(): FileHandle {
    const handle = this.check()
    if (this.lockLost !== undefined) throw this.lockLost
    if (this.failed !== undefined) throw this.failed
    return handle
  }

  /**
   * Why the last automatic compaction failed (the file kept growing; the write that triggered it
   * succeeded), or undefined. Tried again once the file has grown by another compactMinBytes.
   */
  get compactionError(): Error | undefined {
    return this.compactError
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    this.check()
    // As every store: a key that is not one (a number, undefined) is the caller's mistake, not an absent key.
    checkStoreKey('file store', key)
    const v = this.map.get(key)
    return v === undefined ? undefined : v.slice()
  }

  async put(key: string, value: Uint8Array): Promise<void> {
    await this.write([{ op: 'put', key, value }])
  }

  async delete(key: string): Promise<void> {
    await this.write([{ op: 'delete', key }])
  }

  async keys(prefix: string): Promise<readonly string[]> {
    this.check()
    // startsWith(undefined) looks for "undefined": keys() answered [] as if the store were empty.
    if (typeof prefix !== 'string') throw new ConfigError('file store: keys() takes a string prefix')
    return [...this.map.keys()].filter((k) => k.startsWith(prefix)).sort()
  }

  write(batch: readonly StoreOp[]): Promise<void> {
    try {
      this.checkWritable()
      checkStoreBatch('store', batch)
      checkBatchLimits(batch)
    } catch (e) {
      return Promise.reject(e)
    }
    // The values are handed over (Store contract); the list is copied, the caller may reuse it.
    const copy = batch.slice()
    // Serialise writes: records must reach the file in the order their effects are applied.
    const run = this.queue.then(() => this.doWrite(copy))
    this.queue = run.catch(() => undefined)
    return run
  }

  private async doWrite(batch: readonly StoreOp[]): Promise<void> {
    const handle = this.checkWritable()
    if (batch.length === 0) return
    const payload = encodeBatch(batch)
    if (payload.length > MAX_RECORD_BYTES) throw new ConfigError(`FileStore: a batch encodes to ${payload.length} bytes, past the limit of ${MAX_RECORD_BYTES}; write it in smaller batches`)
    const record = frame(payload, this.version)
    try {
      await writeAll(handle, record)
    } catch (e) {
      // Part of the record may be in the file: cut it off, or later records would follow a torn
      // one (and be refused at the next open). If even that fails, the file's end is unknown.
      try {
        await handle.truncate(this.fileBytes)
      } catch (t) {
        this.failed = new ConfigError(`FileStore: ${this.path}: a write failed and its partial record could not be cut off (${t instanceof Error ? t.message : String(t)}); close the store and open it again`, { cause: e })
      }
      throw e
    }
    if (this.fsync) {
      try {
        await handle.datasync()
      } catch (e) {
        // After a failed fsync the kernel may have dropped the pages: what the file holds is
        // unknown (the record may or may not be durable). No further writes on this handle.
        this.failed = new ConfigError(`FileStore: ${this.path}: fsync failed (${e instanceof Error ? e.message : String(e)}); close the store and open it again`, { cause: e })
        throw e
      }
    }
    this.fileBytes += record.length
    for (const op of batch) {
      const prev = this.map.get(op.key)
      if (prev !== undefined) this.liveBytes -= entryBytes(op.key, prev)
      if (op.op === 'put') {
        this.map.set(op.key, op.value)
        this.liveBytes += entryBytes(op.key, op.value)
      } else this.map.delete(op.key)
    }
    // The batch is durable: a compaction that fails now does not fail the write.
    if (this.fileBytes > this.compactMinBytes && this.fileBytes > 2 * this.liveBytes && this.fileBytes >= this.compactRetryAt) {
      try {
        await this.compact()
        this.compactError = undefined
        this.compactRetryAt = 0
      } catch (e) {
        this.compactError = e instanceof Error ? e : new Error(String(e))
        this.compactRetryAt = this.fileBytes + Math.max(this.compactMinBytes, 1024 * 1024)
      }
    }
  }

  /** Rewrites the file with only the live entries. Runs automatically; exposed for tools and tests. */
  async compactNow(): Promise<void> {
    const run = this.queue.then(() => this.compact())
    this.queue = run.catch(() => undefined)
    return run
  }

  private async compact(): Promise<void> {
    const old = this.checkWritable()
    const tmp = `${this.file}.compact`
    const out = await open(tmp, 'w')
    let size = MAGIC.length
    let written = false
    try {
      await writeAll(out, MAGIC)
      // Several records when the live map is large: each stays within what a reader accepts.
      let ops: StoreOp[] = []
      let bytes = 0
      const flush = async (): Promise<void> => {
        if (ops.length === 0) return
        const record = frame(encodeBatch(ops), 2)
        await writeAll(out, record)
        size += record.length
        ops = []
        bytes = 0
      }
      for (const [key, value] of this.map) {
        const n = entryBytes(key, value)
        if (ops.length > 0 && (bytes + n > COMPACT_RECORD_BYTES || ops.length >= MAX_COLLECTION)) await flush()
        ops.push({ op: 'put', key, value })
        bytes += n
      }
      await flush()
      await out.sync()
      written = true
    } finally {
      await out.close()
      // A failed compaction leaves no partial copy behind (on a full disk, as large as the data).
      if (!written) await unlink(tmp).catch(() => undefined)
    }
    try {
      await rename(tmp, this.file)
    } catch (e) {
      await unlink(tmp).catch(() => undefined)
      throw e
    }
    this.version = 2
    // From here the old handle writes to a file no longer at this path: only the new one may be used.
    try {
      // Make the rename itself durable.
      await syncDir(dirname(this.file))
      this.handle = await open(this.file, 'a')
    } catch (e) {
      this.failed = new ConfigError(`FileStore: ${this.path}: reopening the file after compaction failed (${e instanceof Error ? e.message : String(e)}); close the store and open it again`, { cause: e })
      throw e
    }
    this.fileBytes = size
    await old.close().catch(() => undefined)
  }

  /** Closes the file and releases the lock; every call waits for the same close (a second one resolved before the lock was released, review finding). */
  close(): Promise<void> {
    this.closing ??= this.doClose()
    return this.closing
  }

  private async doClose(): Promise<void> {
    if (this.handle === undefined) return
    // The handle once the queue is done: a compaction in it replaces the handle (the one read
    // before would be the old, already closed, and the new one left open).
    await this.queue
    const h = this.handle
    if (h === undefined) return
    this.handle = undefined
    await h.close()
    const unlock = this.unlock
    this.unlock = undefined
    // A lost lock is not ours to remove any more (it may be another holder's now).
    if (unlock !== undefined && this.lockLost === undefined) await unlock()
  }
}
