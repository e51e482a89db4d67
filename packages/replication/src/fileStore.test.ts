import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, appendFile, lstat, realpath, stat, symlink, truncate } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
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
})
