import { mkdtemp, rm, appendFile, stat, truncate } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
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
