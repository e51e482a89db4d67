import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, appendFile, lstat, mkdir, readFile, realpath, stat, symlink, truncate, writeFile, type FileHandle } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { crc32 } from 'node:zlib'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ConfigError } from '@concord/core'
import { FileStore } from './fileStore.js'
import { MemoryStore } from './memoryStore.js'

const b = (s: string): Uint8Array => new TextEncoder().encode(s)
const s = (x: Uint8Array | undefined): string | undefined => (x === undefined ? undefined : new TextDecoder().decode(x))

let dir = ''
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'concord-filestore-'))
})
afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe.each([
  ['MemoryStore', async () => new MemoryStore()],
  ['FileStore', async () => FileStore.open(join(dir, 'a', 'store.db'))],
] as const)('%s', (_name, make) => {
  it('gets, puts, deletes, lists by prefix and applies batches in order', async () => {
    const st = await make()
    await st.put('doc/a', b('1'))
    await st.write([
      { op: 'put', key: 'doc/b', value: b('2') },
      { op: 'put', key: 'pos/x', value: b('9') },
      { op: 'delete', key: 'doc/a' },
      { op: 'put', key: 'doc/b', value: b('3') },
    ])
    expect(s(await st.get('doc/a'))).toBeUndefined()
    expect(s(await st.get('doc/b'))).toBe('3')
    expect(await st.keys('doc/')).toEqual(['doc/b'])
    await st.delete('doc/b')
    await st.delete('missing')
    expect(await st.keys('')).toEqual(['pos/x'])
    await expect(st.write([{ op: 'put', key: '', value: b('x') }])).rejects.toMatchObject({ code: 'CONFIG' })
    await st.close()
    await expect(st.get('pos/x')).rejects.toMatchObject({ code: 'CLOSED' })
  })
  it('refuses malformed operations with a ConfigError, storing nothing of the batch', async () => {
    const st = await make()
    await expect(st.write([null as never])).rejects.toMatchObject({ code: 'CONFIG' })
    await expect(st.write('x' as never)).rejects.toMatchObject({ code: 'CONFIG' })
    // A lone surrogate has no UTF-8 form: an encoding store would keep another key.
    await expect(st.write([{ op: 'put', key: 'ok', value: b('1') }, { op: 'put', key: 'k\ud800', value: b('1') }])).rejects.toMatchObject({ code: 'CONFIG' })
    expect(await st.keys('')).toEqual([])
    await st.close()
  })
})

describe('FileStore durability', () => {
  it('reopens with everything written', async () => {
    const path = join(dir, 's.db')
    const st = await FileStore.open(path)
    for (let i = 0; i < 50; i++) await st.write([{ op: 'put', key: `k/${i}`, value: b(`v${i}`) }, { op: 'put', key: 'last', value: b(String(i)) }])
    await st.close()
    const again = await FileStore.open(path)
    expect(again.recoveredBytes).toBe(0)
    expect((await again.keys('k/')).length).toBe(50)
    expect(s(await again.get('last'))).toBe('49')
    await again.close()
  })

  it('cuts off a torn last record and keeps every complete batch (atomic)', async () => {
    const path = join(dir, 's.db')
    const st = await FileStore.open(path)
    await st.write([{ op: 'put', key: 'a', value: b('1') }])
    await st.close()
    const good = (await stat(path)).size
    const st2 = await FileStore.open(path)
    await st2.write([
      { op: 'put', key: 'a', value: b('2') },
      { op: 'put', key: 'b', value: b('2') },
    ])
    await st2.close()
    const full = (await stat(path)).size
    // Every possible tear inside the second record loses that whole batch and nothing else.
    for (let cut = good + 1; cut < full; cut += 3) {
      const copy = join(dir, `torn-${cut}.db`)
      const { copyFile } = await import('node:fs/promises')
      await copyFile(path, copy)
      await truncate(copy, cut)
      const r = await FileStore.open(copy)
      expect(r.recoveredBytes).toBe(cut - good)
      expect(s(await r.get('a'))).toBe('1')
      expect(await r.get('b')).toBeUndefined()
      // And the store keeps working after recovery.
      await r.put('c', b('3'))
      await r.close()
      const r2 = await FileStore.open(copy)
      expect(r2.recoveredBytes).toBe(0)
      expect(s(await r2.get('c'))).toBe('3')
      await r2.close()
    }
  })

  it('ignores a corrupt trailing record (checksum mismatch)', async () => {
    const path = join(dir, 's.db')
    const st = await FileStore.open(path)
    await st.put('a', b('1'))
    await st.close()
    await appendFile(path, new Uint8Array([5, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5]))
    const r = await FileStore.open(path)
    expect(r.recoveredBytes).toBe(17)
    expect(s(await r.get('a'))).toBe('1')
    await r.close()
  })

  it('compacts when dead records dominate and keeps the data', async () => {
    const path = join(dir, 's.db')
    const st = await FileStore.open(path, { compactMinBytes: 2000 })
    for (let i = 0; i < 300; i++) await st.put('hot', b(`value-${i}`))
    await st.put('cold', b('x'))
    expect((await stat(path)).size).toBeLessThan(2000 + 200)
    await st.compactNow()
    await st.close()
    const r = await FileStore.open(path)
    expect(s(await r.get('hot'))).toBe('value-299')
    expect(s(await r.get('cold'))).toBe('x')
    await r.close()
  })

  it('refuses a file that is not a store', async () => {
    const path = join(dir, 'other.db')
    await appendFile(path, b('hello world, not a store'))
    await expect(FileStore.open(path)).rejects.toMatchObject({ code: 'CONFIG' })
  })
})

/** A version 2 store file as version 1 wrote it: the old magic, record headers without their checksum. */
function toVersion1(v2: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [b('CONCORD-STORE-1\n')]
  for (let pos = 16; pos < v2.length; ) {
    const len = new DataView(v2.buffer, v2.byteOffset + pos, 4).getUint32(0, true)
    parts.push(v2.subarray(pos, pos + 12), v2.subarray(pos + 16, pos + 16 + len))
    pos += 16 + len
  }
  return Buffer.concat(parts)
}

type RawWrite = (bytes: Uint8Array, offset: number, length: number) => Promise<{ bytesWritten: number }>

/** Routes `st`'s writes to its file through `fn`, which gets the real write first. */
function interceptWrites(st: FileStore, fn: (write: RawWrite, bytes: Uint8Array, offset: number, length: number) => Promise<{ bytesWritten: number }>): void {
  const handle = (st as unknown as { handle: FileHandle }).handle
  const write = handle.write.bind(handle) as RawWrite
  ;(handle as unknown as { write: RawWrite }).write = (bytes, offset, length) => fn(write, bytes, offset, length)
}

describe('FileStore damage and failures', () => {
  const fill = async (path: string, n: number): Promise<void> => {
    const st = await FileStore.open(path)
    for (let i = 0; i < n; i++) await st.put(`k${i}`, b(`v${i}`))
    await st.close()
  }

  it('refuses a file damaged before its last record, changing nothing (it used to cut off every later record)', async () => {
    const path = join(dir, 's.db')
    await fill(path, 20)
    const before = await readFile(path)
    const damaged = Uint8Array.from(before)
    // A byte of the first record's payload (after the 16-byte file header and the 16-byte record header).
    damaged[34] = (damaged[34] as number) ^ 0xff
    await writeFile(path, damaged)
    await expect(FileStore.open(path)).rejects.toMatchObject({ code: 'DECODE', message: expect.stringMatching(/record 1 .*is bad.*follow it/) })
    expect(Buffer.compare(await readFile(path), Buffer.from(damaged))).toBe(0)
  })

  it('a crafted file with a record header that checks every 16 bytes, each claiming the rest of the file, is refused as damaged without checksumming each (review finding: O(size^2), a 1 MiB file took 20 s to open)', async () => {
    const path = join(dir, 's.db')
    const size = 2 * 1024 * 1024
    const buf = new Uint8Array(size)
    buf.set(new TextEncoder().encode('CONCORD-STORE-2\n'))
    const view = new DataView(buf.buffer)
    // The first record's header does not check; from byte 17 on, one that does every 16 bytes.
    buf[16] = 0xff
    for (let q = 17; q + 16 <= size; q += 16) {
      view.setUint32(q, size - q - 16, true)
      view.setUint32(q + 12, crc32(buf.subarray(q, q + 12)), true)
    }
    await writeFile(path, buf)
    await expect(FileStore.open(path, { lock: false })).rejects.toMatchObject({ code: 'DECODE', message: expect.stringMatching(/record 1 .*is bad .*more record headers that check than could be checksummed/) })
    expect(Buffer.compare(await readFile(path), Buffer.from(buf))).toBe(0)
  }, 60_000)

  it('refuses a file whose record length was damaged, changing nothing (one flipped bit there cut off every later record, and the store opened)', async () => {
    const path = join(dir, 's.db')
    await fill(path, 20)
    const before = await readFile(path)
    for (const at of [16, 16 + 2, 16 + 3]) {
      const damaged = Uint8Array.from(before)
      damaged[at] = (damaged[at] as number) ^ 0x01
      await writeFile(path, damaged)
      await expect(FileStore.open(path), `byte ${at}`).rejects.toMatchObject({ code: 'DECODE', message: expect.stringMatching(/record 1 \(at byte 16\) is bad \(its header does not check\) and a sound record follows at byte \d+/) })
      expect(Buffer.compare(await readFile(path), Buffer.from(damaged))).toBe(0)
    }
  })

  it('reads a version 1 file (no header checksums), refusing one with a damaged length before its last record, and rewrites it as version 2', async () => {
    const path = join(dir, 's.db')
    await fill(path, 20)
    const v1 = toVersion1(await readFile(path))
    await writeFile(path, v1)
    const st = await FileStore.open(path)
    expect(st.recoveredBytes).toBe(0)
    expect(await st.keys('k')).toHaveLength(20)
    await st.put('after', b('x'))
    await st.close()
    expect(s((await readFile(path)).subarray(0, 16))).toBe('CONCORD-STORE-2\n')
    const again = await FileStore.open(path)
    expect(await again.keys('')).toHaveLength(21)
    await again.close()
    // Version 1's length field is covered by no checksum: a damaged one is told from a torn write by the records after it.
    const damaged = Uint8Array.from(v1)
    damaged[16 + 3] = (damaged[16 + 3] as number) ^ 0x01
    await writeFile(path, damaged)
    await expect(FileStore.open(path)).rejects.toMatchObject({ code: 'DECODE', message: expect.stringMatching(/its length runs past the end of the file\) and a sound record follows/) })
    // Torn at its end, a version 1 file still loses only the last write.
    await writeFile(path, v1.subarray(0, v1.length - 3))
    const torn = await FileStore.open(path)
    expect(await torn.keys('k')).toHaveLength(19)
    await torn.close()
  })

  it('removes a compaction\'s temporary file left by a crash, and a second close() waits for the first (it resolved before the lock was released)', async () => {
    const path = join(dir, 's.db')
    await fill(path, 3)
    await writeFile(`${path}.compact`, b('half a compaction'))
    const st = await FileStore.open(path)
    await expect(stat(`${path}.compact`)).rejects.toMatchObject({ code: 'ENOENT' })
    const first = st.close()
    await st.close()
    await expect(lstat(`${path}.lock`)).rejects.toMatchObject({ code: 'ENOENT' })
    await first
  })

  it('cuts off a tail of zeros (a file extended without its data) and keeps every record before it', async () => {
    const path = join(dir, 's.db')
    await fill(path, 5)
    await appendFile(path, new Uint8Array(4096))
    const st = await FileStore.open(path)
    expect(st.recoveredBytes).toBe(4096)
    expect(await st.keys('k')).toHaveLength(5)
    await st.close()
  })

  it('opens a file cut short while it was being created as a new store', async () => {
    const path = join(dir, 's.db')
    await writeFile(path, b('CONCORD-ST'))
    const st = await FileStore.open(path)
    await st.put('a', b('1'))
    await st.close()
    const again = await FileStore.open(path)
    expect(s(await again.get('a'))).toBe('1')
    await again.close()
  })

  it('a write that fails half-way leaves no torn record: later writes survive a reopen', async () => {
    const path = join(dir, 's.db')
    const st = await FileStore.open(path)
    await st.put('before', b('1'))
    let armed = true
    interceptWrites(st, async (write, bytes, offset, length) => {
      if (!armed) return write(bytes, offset, length)
      armed = false
      await write(bytes, offset, Math.floor(length / 2))
      throw Object.assign(new Error('ENOSPC: no space left on device (test)'), { code: 'ENOSPC' })
    })
    await expect(st.put('failed', b('x'.repeat(500)))).rejects.toThrow(/ENOSPC/)
    for (let i = 0; i < 5; i++) await st.put(`after${i}`, b(`${i}`))
    await st.close()
    const again = await FileStore.open(path)
    expect(again.recoveredBytes).toBe(0)
    expect(await again.keys('')).toEqual(['after0', 'after1', 'after2', 'after3', 'after4', 'before'])
    await again.close()
  })

  it('a short write is completed, not acknowledged half-written', async () => {
    const path = join(dir, 's.db')
    const st = await FileStore.open(path)
    // Each call takes at most 7 bytes, as a write to a nearly full or interrupted device may.
    interceptWrites(st, (write, bytes, offset, length) => write(bytes, offset, Math.min(length, 7)))
    await st.put('big', new Uint8Array(300).fill(7))
    await st.close()
    const again = await FileStore.open(path)
    expect(again.recoveredBytes).toBe(0)
    expect(Buffer.compare(Buffer.from((await again.get('big')) as Uint8Array), Buffer.alloc(300, 7))).toBe(0)
    await again.close()
  })

  it('a compaction that fails does not fail the durable write that triggered it', async () => {
    const path = join(dir, 's.db')
    const st = await FileStore.open(path, { compactMinBytes: 500 })
    // The compaction's temporary file cannot be created (a directory is in its place).
    await mkdir(`${await realpath(path)}.compact`)
    for (let i = 0; i < 100; i++) await st.put('hot', b(`value-${i}`))
    expect(st.compactionError?.message).toMatch(/EISDIR|illegal operation/)
    await st.close()
    const again = await FileStore.open(path)
    expect(s(await again.get('hot'))).toBe('value-99')
    await again.close()
  })

  it('counts live data in UTF-8: keys outside ASCII do not make every write compact', async () => {
    const path = join(dir, 's.db')
    const st = await FileStore.open(path, { compactMinBytes: 0 })
    const keys = Array.from({ length: 50 }, (_, i) => `文書キー${'字'.repeat(40)}${i}`)
    for (const k of keys) await st.put(k, b('1'))
    const compact = vi.spyOn(st as unknown as { compact: () => Promise<void> }, 'compact')
    for (let round = 0; round < 4; round++) for (const k of keys) await st.put(k, b(`${round}`))
    // 200 overwrites of 50 live entries: the file doubles past the live data a few times, not 200.
    expect(compact.mock.calls.length).toBeLessThan(10)
    await st.close()
  })

  it('refuses a key or value this file could not read back, and keeps what came before and after', async () => {
    const path = join(dir, 's.db')
    const st = await FileStore.open(path)
    await st.put('first', b('1'))
    await expect(st.put('k'.repeat(16 * 1024 * 1024 + 1), b('x'))).rejects.toMatchObject({ code: 'CONFIG' })
    await st.put('after', b('2'))
    await st.close()
    const again = await FileStore.open(path)
    expect(await again.keys('')).toEqual(['after', 'first'])
    await again.close()
  })

  it('compacts a live map larger than one record into several', async () => {
    const path = join(dir, 's.db')
    const st = await FileStore.open(path, { compactMinBytes: 1 << 30, fsync: false })
    const value = new Uint8Array(1024 * 1024).fill(3)
    // 80 MiB of live data: more than one compaction record.
    for (let i = 0; i < 80; i++) await st.put(`big${i}`, value)
    await st.compactNow()
    await st.close()
    // The first record (after the 16-byte file header) ends before the file does.
    const data = await readFile(path)
    expect(16 + 12 + data.readUInt32LE(16)).toBeLessThan(data.length)
    const again = await FileStore.open(path)
    expect(await again.keys('big')).toHaveLength(80)
    expect(Buffer.compare(Buffer.from((await again.get('big79')) as Uint8Array), Buffer.from(value))).toBe(0)
    await again.close()
  })

  it('refuses a compacted file whose first record has a damaged length (compaction records ran past the 16 MiB searched for a sound record after a bad one: one flipped bit opened the store empty)', async () => {
    const path = join(dir, 's.db')
    const st = await FileStore.open(path, { compactMinBytes: 1 << 30, fsync: false })
    const value = new Uint8Array(1024 * 1024).fill(3)
    for (let i = 0; i < 20; i++) await st.put(`big${i}`, value)
    await st.compactNow()
    await st.close()
    const damaged = await readFile(path)
    damaged[16] = (damaged[16] as number) ^ 0x01
    await writeFile(path, damaged)
    await expect(FileStore.open(path)).rejects.toMatchObject({ code: 'DECODE', message: expect.stringMatching(/record 1 \(at byte 16\) is bad \(its header does not check\) and a sound record follows/) })
    expect(Buffer.compare(await readFile(path), damaged)).toBe(0)
  })

  it('a value past one compaction record gets a record of its own: the store opens and compacts again after each compaction', async () => {
    const path = join(dir, 's.db')
    const big = new Uint8Array(6 * 1024 * 1024).fill(9)
    const st = await FileStore.open(path, { compactMinBytes: 1 << 30, fsync: false })
    await st.write([
      { op: 'put', key: 'big', value: big },
      { op: 'put', key: 'big2', value: big },
      { op: 'put', key: 'small', value: b('s') },
    ])
    await st.compactNow()
    await st.close()
    for (let round = 0; round < 2; round++) {
      const again = await FileStore.open(path, { compactMinBytes: 1 << 30, fsync: false })
      expect(again.recoveredBytes).toBe(0)
      expect(await again.keys('big')).toEqual(['big', 'big2'])
      expect(Buffer.compare(Buffer.from((await again.get('big2')) as Uint8Array), Buffer.from(big))).toBe(0)
      await again.put(`after${round}`, b('1'))
      await again.compactNow()
      expect(again.compactionError).toBeUndefined()
      await again.close()
    }
    const last = await FileStore.open(path)
    expect(await last.keys('')).toEqual(['after0', 'after1', 'big', 'big2', 'small'])
    await last.close()
  })
})

describe('FileStore lock: one process per store file', () => {
  it('refuses a second FileStore on the same path until the first is closed', async () => {
    const path = join(dir, 'one.db')
    const first = await FileStore.open(path)
    await first.put('a', b('1'))
    const refused = FileStore.open(path)
    await expect(refused).rejects.toMatchObject({ code: 'LOCKED', retriable: true })
    await expect(refused).rejects.toThrow(/one\.db is open in another FileStore/)
    // Another spelling of the same file meets the same lock (it is taken on the real path).
    await symlink(path, join(dir, 'alias.db'))
    await expect(FileStore.open(join(dir, 'alias.db'))).rejects.toMatchObject({ code: 'LOCKED' })
    // The refused open changed nothing: the first keeps writing.
    await first.put('b', b('2'))
    await first.close()
    // Opened through the link: compaction rewrites the file it points to and leaves the link a link.
    const second = await FileStore.open(join(dir, 'alias.db'))
    expect(s(await second.get('a'))).toBe('1')
    expect(s(await second.get('b'))).toBe('2')
    await second.put('c', b('3'))
    await second.compactNow()
    await second.put('d', b('4'))
    expect((await lstat(join(dir, 'alias.db'))).isSymbolicLink()).toBe(true)
    await second.close()
    const third = await FileStore.open(path)
    expect(await third.keys('')).toEqual(['a', 'b', 'c', 'd'])
    await third.close()
  })

  it('refuses a store held by another process, and takes over its lock once that process died (lockStaleMs)', async () => {
    const path = join(dir, 'shared.db')
    // Another process opens the store, writes, then is killed with SIGKILL: no exit handler runs,
    // its lock stays behind, no longer refreshed.
    const source = pathToFileURL(join(import.meta.dirname, 'fileStore.ts')).href
    const code = `const { FileStore } = await import(process.argv[1]); const st = await FileStore.open(process.argv[2], { lockStaleMs: 2000 }); await st.put('child', new Uint8Array([7])); console.log('ready'); setInterval(() => {}, 1000)`
    const child = spawn(process.execPath, ['--conditions=@concord/source', '--import', 'tsx', '--input-type=module', '-e', code, source, path], { stdio: ['ignore', 'pipe', 'inherit'] })
    try {
      const [line] = (await once(child.stdout, 'data')) as [Buffer]
      expect(line.toString()).toContain('ready')
      await expect(FileStore.open(path, { lockStaleMs: 2000 })).rejects.toMatchObject({ code: 'LOCKED' })
      child.kill('SIGKILL')
      await once(child, 'exit')
      // Dead, but its lock is fresh: still refused, for up to lockStaleMs after its last refresh.
      await expect(FileStore.open(path, { lockStaleMs: 2000 })).rejects.toMatchObject({ code: 'LOCKED' })
      const until = Date.now() + 10_000
      let st: FileStore | undefined
      while (st === undefined) {
        st = await FileStore.open(path, { lockStaleMs: 2000 }).catch((e: unknown) => {
          if ((e as { code?: string }).code !== 'LOCKED' || Date.now() > until) throw e
          return new Promise<undefined>((r) => setTimeout(() => r(undefined), 200))
        })
      }
      expect([...((await st.get('child')) ?? [])]).toEqual([7])
      await st.close()
    } finally {
      child.kill('SIGKILL')
    }
  })

  it('refuses writes once its lock was taken away, and another open can then take the store', async () => {
    const path = join(dir, 'lost.db')
    const st = await FileStore.open(path, { lockStaleMs: 2000 })
    await st.put('a', b('1'))
    // Someone removes the lock (an operator, a cleanup job): the holder notices at its next refresh.
    await rm(`${await realpath(path)}.lock`, { recursive: true })
    const until = Date.now() + 5_000
    let refused: unknown
    while (refused === undefined && Date.now() < until) {
      refused = await st.put('b', b('2')).then(
        () => new Promise<undefined>((r) => setTimeout(() => r(undefined), 100)),
        (e: unknown) => e,
      )
    }
    expect(refused).toMatchObject({ code: 'LOCKED', retriable: false })
    expect(String(refused)).toMatch(/lost the lock/)
    // Reads still answer from memory; writes stay refused.
    expect(s(await st.get('a'))).toBe('1')
    await expect(st.write([{ op: 'put', key: 'c', value: b('3') }])).rejects.toMatchObject({ code: 'LOCKED' })
    const next = await FileStore.open(path)
    expect(s(await next.get('a'))).toBe('1')
    await st.close()
    // Closing the old holder did not remove the new holder's lock.
    await expect(FileStore.open(path)).rejects.toMatchObject({ code: 'LOCKED' })
    await next.close()
  })

  it('checks its options', async () => {
    const path = join(dir, 'opts.db')
    await expect(FileStore.open(path, { lockStaleMs: 500 })).rejects.toMatchObject({ code: 'CONFIG' })
    await expect(FileStore.open(path, { lock: 'yes' as unknown as boolean })).rejects.toMatchObject({ code: 'CONFIG' })
    await expect(FileStore.open(path, { fsynk: false } as never)).rejects.toThrow(/unknown option "fsynk" \(did you mean "fsync"\?\)/)
    // lock: false is for callers that guarantee one process per file themselves.
    const a = await FileStore.open(path, { lock: false })
    const c = await FileStore.open(path, { lock: false })
    await c.close()
    await a.close()
  })

  it('with lock: false, a single writer loses nothing to a compaction file a crash left behind', async () => {
    const path = join(dir, 'nolock.db')
    const first = await FileStore.open(path, { lock: false })
    await first.put('a', b('old'))
    await first.close()
    // Left by crashes during compaction: a whole store file not yet renamed (older than the data), and one cut short.
    for (const [round, leftover] of [await readFile(path), b('half a compaction')].entries()) {
      await writeFile(`${path}.compact`, leftover)
      const st = await FileStore.open(path, { lock: false, compactMinBytes: 0 })
      await expect(stat(`${path}.compact`)).rejects.toMatchObject({ code: 'ENOENT' })
      // Overwrites of one key: the file passes twice its live data, so the writes compact.
      for (let i = 0; i < 20; i++) await st.put('a', b(`v${round}.${i}`))
      await st.put(`b${round}`, b('1'))
      await st.compactNow()
      expect(st.compactionError).toBeUndefined()
      await st.close()
      const again = await FileStore.open(path, { lock: false })
      expect(s(await again.get('a'))).toBe(`v${round}.19`)
      expect(await again.keys('b')).toHaveLength(round + 1)
      await again.close()
    }
  })
})

describe('FileStore.open on a path that cannot be a store file', () => {
  it('refuses it with a ConfigError naming the path, the system error as its cause (review finding: EISDIR, EEXIST, ENAMETOOLONG and a TypeError came through raw)', async () => {
    await writeFile(join(dir, 'plain'), 'x')
    for (const path of [dir, join(dir, 'plain', 'store.db'), join(dir, 'x'.repeat(300)), join(dir, 'nul\0name')]) {
      const e = await FileStore.open(path).then(
        () => undefined,
        (err: unknown) => err,
      )
      expect(e, path).toBeInstanceOf(ConfigError)
    }
  })

  it('refuses a device and something other than its lock directory at the lock path with a ConfigError (review finding: raw EINVAL from fsync, ENOTDIR, ENOTEMPTY)', async () => {
    await expect(FileStore.open('/dev/null')).rejects.toThrow(/FileStore: cannot open \/dev\/null: not a regular file/)
    const { utimes } = await import('node:fs/promises')
    const withFile = join(dir, 'a.db')
    await writeFile(`${withFile}.lock`, 'x')
    await utimes(`${withFile}.lock`, new Date(0), new Date(0))
    const withDir = join(dir, 'b.db')
    await mkdir(`${withDir}.lock`)
    await writeFile(join(`${withDir}.lock`, 'inside'), 'x')
    await utimes(`${withDir}.lock`, new Date(0), new Date(0))
    for (const path of [withFile, withDir]) {
      const e = await FileStore.open(path).then(
        () => undefined,
        (err: unknown) => err,
      )
      expect(e, path).toBeInstanceOf(ConfigError)
      expect((e as Error).message).toMatch(/cannot take the lock .*\.lock/)
    }
  })
})

describe('FileStore.close() during a compaction', () => {
  it('closes the handle the compaction opened (it closed the old one, and the new one stayed open)', async () => {
    const { readdir, readlink } = await import('node:fs/promises')
    const dir = await mkdtemp(join(tmpdir(), 'concord-fsc-'))
    const openOn = async (): Promise<number> => {
      let n = 0
      for (const fd of await readdir('/proc/self/fd')) if ((await readlink(`/proc/self/fd/${fd}`).catch(() => '')).startsWith(dir)) n++
      return n
    }
    try {
      for (let i = 0; i < 3; i++) {
        const s = await FileStore.open(join(dir, 's.db'), { compactMinBytes: 0 })
        const v = new Uint8Array(1000)
        // The second write to the key makes the file past twice the live bytes: it compacts.
        const writes = [s.write([{ op: 'put', key: 'k', value: v }]), s.write([{ op: 'put', key: 'k', value: v }])]
        await Promise.all([...writes, s.close()])
      }
      expect(await openOn()).toBe(0)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
