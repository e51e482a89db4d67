/**
 * The Store contract suite: one set of vitest tests every Store (memory, file, Redis, or one of
 * your own) must pass — what the `Store` interface of `@concord/core` documents and what a region
 * node relies on. A store package's test file is a few lines:
 *
 * ```ts
 * runStoreContract('file', async () => {
 *   const dir = await mkdtemp(join(tmpdir(), 'store-'))
 *   const path = join(dir, 'store.db')
 *   return { open: () => FileStore.open(path), reopen: () => FileStore.open(path), cleanup: () => rm(dir, { recursive: true }) }
 * })
 * ```
 *
 * Values are handed over (the `Store.write` TSDoc): a caller must not change an array after
 * writing it, and a store may keep that very array (MemoryStore does) or a copy — the suite never
 * changes a written array, so it checks neither. What it does check: an array returned by `get`
 * is the caller's (changing it changes nothing stored), as every store here does.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { ClosedError, ConfigError, isConcordError, type Store, type StoreOp } from '@concord/core'

/** A fresh, empty, isolated namespace (a temporary directory, a key prefix, a schema) for one test. */
export interface StoreHarness {
  /** Opens the store over this namespace. Called once per test, which starts with it empty. */
  open(): Promise<Store>
  /**
   * Opens the namespace again after `closed` (what open() or an earlier reopen() returned) was
   * closed, as a process restarting over the same disk or server would: the new store must hold
   * everything `closed` wrote. Without it, the durability tests are skipped (a store that keeps
   * nothing past its own life).
   */
  reopen?(closed: Store): Promise<Store>
  /** Removes whatever the namespace left behind (files, keys), once every store of the test is closed. */
  cleanup?(): Promise<void>
}

/** Options for {@link runStoreContract}. */
export interface StoreContractOptions {
  /** Per-test timeout in ms. @default 60_000 */
  readonly timeoutMs?: number
}

const enc = new TextEncoder()
const bytes = (s: string): Uint8Array => enc.encode(s)
/** `n` bytes of a pattern that no offset or truncation preserves. */
const pattern = (n: number, seed = 0): Uint8Array => new Uint8Array(n).map((_, i) => (i * 31 + seed + (i >> 8)) % 251)

/** Whether `got` is a Uint8Array holding exactly `want`'s bytes (a message when not). */
function sameBytes(got: Uint8Array | undefined, want: Uint8Array): string | undefined {
  if (!(got instanceof Uint8Array)) return `expected a Uint8Array of ${want.length} bytes, got ${got === undefined ? 'undefined' : String(got)}`
  if (got.length !== want.length) return `expected ${want.length} bytes, got ${got.length}`
  for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) return `byte ${i} of ${want.length} differs: ${got[i]} instead of ${want[i]}`
  return undefined
}

async function expectBytes(st: Store, key: string, want: Uint8Array): Promise<void> {
  expect(sameBytes(await st.get(key), want), `get(${JSON.stringify(key)})`).toBeUndefined()
}

/**
 * The error `call` rejects with, or a failure: a call that resolves, or throws instead of
 * returning a rejected promise (a caller awaiting it inside a .then chain would not catch it).
 */
async function rejection(what: string, call: () => Promise<unknown>): Promise<unknown> {
  let pending: Promise<unknown>
  try {
    pending = call()
  } catch (e) {
    expect.fail(`${what}: threw ${String(e)} instead of returning a rejected promise`)
  }
  return pending.then(
    () => expect.fail(`${what}: resolved, expected it to reject`),
    (e: unknown) => e,
  )
}

const isConfigError = (e: unknown): boolean => e instanceof ConfigError || (isConcordError(e) && e.code === 'CONFIG')
const isClosedError = (e: unknown): boolean => e instanceof ClosedError || (isConcordError(e) && e.code === 'CLOSED')

async function refused(what: string, call: () => Promise<unknown>): Promise<void> {
  const err = await rejection(what, call)
  expect(isConfigError(err), `${what}: expected a ConfigError, got ${String(err)}`).toBe(true)
}

/** Keys that are not keys: not strings, empty, or not well-formed UTF-16 (no UTF-8 form). */
const BAD_KEYS: ReadonlyArray<readonly [string, unknown]> = [
  ['undefined', undefined],
  ['null', null],
  ['a number', 7],
  ['an object', { key: 'k' }],
  ['the empty string', ''],
  ['a lone high surrogate', '\uD800'],
  ['a lone low surrogate after text', 'k\uDC00'],
  ['a high surrogate at the end', 'k\uD83D'],
  ['a reversed surrogate pair', '\uDE00\uD83D'],
]

/** Keys the listing tests use: non-ASCII, astral, keys that are prefixes of each other, characters a backend might treat specially. */
const LISTED_KEYS = [
  'a',
  'ab',
  'abc',
  'abd',
  'ac',
  'a/',
  'a/b',
  'b',
  'B',
  'é',
  'éa',
  'e',
  'u/\u{1F600}',
  'u/\u{1F600}x',
  'u/\uFFFD',
  'u/\uE000',
  'u/z',
  'u',
  'z\u0000',
  'z[x',
  'z-',
  'z+',
  'z*?',
  'z:kv:',
  '\u{10FFFF}',
]

/** Ascending UTF-16 code-unit order: what Array.prototype.sort does to strings. */
const codeUnitOrder = (keys: readonly string[]): string[] => [...keys].sort()

/**
 * Registers the Store contract tests under `describe(name)`.
 * @param setup creates a fresh, empty namespace per test.
 */
export function runStoreContract(name: string, setup: () => Promise<StoreHarness> | StoreHarness, options: StoreContractOptions = {}): void {
  const timeout = options.timeoutMs ?? 60_000

  describe(`Store contract: ${name}`, () => {
    let harness: StoreHarness | undefined
    const opened: Store[] = []

    async function open(): Promise<Store> {
      harness ??= await setup()
      const st = await harness.open()
      opened.push(st)
      return st
    }

    /** Closes `st` and opens its namespace again (the harness's reopen). */
    async function reopen(st: Store): Promise<Store> {
      await st.close()
      if (harness?.reopen === undefined) throw new Error('the store harness has no reopen')
      const again = await harness.reopen(st)
      opened.push(again)
      return again
    }

    afterEach(async () => {
      for (const st of opened.splice(0)) await st.close().catch(() => undefined)
      await harness?.cleanup?.()
      harness = undefined
    })

    /** Runs only when the harness can reopen a store (known once a test opened one). */
    const durable = (title: string, fn: () => Promise<void>): void => {
      it(title, async (ctx) => {
        harness ??= await setup()
        if (harness.reopen === undefined) ctx.skip()
        await fn()
      }, timeout)
    }

    it('has a name; get of an absent key is undefined; a new namespace is empty', async () => {
      const st = await open()
      expect(typeof st.name === 'string' && st.name.length > 0, `name is a non-empty string, got ${String(st.name)}`).toBe(true)
      expect(await st.get('absent')).toBeUndefined()
      expect(await st.keys('')).toEqual([])
    }, timeout)

    it('put then get returns the same bytes: empty, small, binary and ~1 MiB values', async () => {
      const st = await open()
      const values: Array<readonly [string, Uint8Array]> = [
        ['empty', new Uint8Array(0)],
        ['small', bytes('hello')],
        ['binary', new Uint8Array([0, 255, 0, 128, 10, 13, 0])],
        ['large', pattern(1024 * 1024 + 7)],
      ]
      for (const [key, value] of values) await st.put(key, value)
      for (const [key, value] of values) await expectBytes(st, key, value)
      // A view into a larger buffer: its bytes only, not the buffer's.
      const backing = pattern(64, 3)
      await st.put('view', backing.subarray(8, 24))
      await expectBytes(st, 'view', backing.slice(8, 24))
      // A Buffer is a Uint8Array too.
      await st.put('buffer', Buffer.from('from a Buffer'))
      await expectBytes(st, 'buffer', bytes('from a Buffer'))
      // put replaces; an empty value is a value, not an absent key.
      await st.put('small', bytes('replaced'))
      await expectBytes(st, 'small', bytes('replaced'))
      await st.put('small', new Uint8Array(0))
      await expectBytes(st, 'small', new Uint8Array(0))
      expect(await st.keys('')).toEqual(codeUnitOrder(['empty', 'small', 'binary', 'large', 'view', 'buffer']))
    }, timeout)

    it('delete removes a key; deleting an absent key (never written, or deleted) is not an error', async () => {
      const st = await open()
      await st.put('k', bytes('v'))
      await st.put('other', bytes('o'))
      await st.delete('k')
      expect(await st.get('k')).toBeUndefined()
      await st.delete('k')
      await st.delete('never-written')
      await st.write([{ op: 'delete', key: 'never-written-either' }])
      expect(await st.keys('')).toEqual(['other'])
      await expectBytes(st, 'other', bytes('o'))
    }, timeout)

    it('write applies operations in order: a later operation on a key wins', async () => {
      const st = await open()
      await st.put('gone', bytes('before'))
      await st.write([
        { op: 'put', key: 'twice', value: bytes('1') },
        { op: 'put', key: 'twice', value: bytes('2') },
        { op: 'put', key: 'put-then-delete', value: bytes('x') },
        { op: 'delete', key: 'put-then-delete' },
        { op: 'delete', key: 'delete-then-put' },
        { op: 'put', key: 'delete-then-put', value: bytes('y') },
        { op: 'delete', key: 'gone' },
        { op: 'put', key: 'back', value: bytes('1') },
        { op: 'delete', key: 'back' },
        { op: 'put', key: 'back', value: bytes('3') },
      ])
      await expectBytes(st, 'twice', bytes('2'))
      expect(await st.get('put-then-delete')).toBeUndefined()
      await expectBytes(st, 'delete-then-put', bytes('y'))
      expect(await st.get('gone')).toBeUndefined()
      await expectBytes(st, 'back', bytes('3'))
      expect(await st.keys('')).toEqual(codeUnitOrder(['twice', 'delete-then-put', 'back']))
      // An empty batch is a batch: it changes nothing.
      await st.write([])
      expect(await st.keys('')).toEqual(codeUnitOrder(['twice', 'delete-then-put', 'back']))
    }, timeout)

    it('concurrent writes on distinct keys all land', async () => {
      const st = await open()
      const n = 50
      await Promise.all(Array.from({ length: n }, (_, i) => (i % 2 === 0 ? st.put(`c/${i}`, bytes(String(i))) : st.write([{ op: 'put', key: `c/${i}`, value: bytes(String(i)) }]))))
      expect(await st.keys('c/')).toEqual(codeUnitOrder(Array.from({ length: n }, (_, i) => `c/${i}`)))
      for (let i = 0; i < n; i++) await expectBytes(st, `c/${i}`, bytes(String(i)))
    }, timeout)

    it('a batch with a bad operation anywhere is refused with a ConfigError, and none of it is applied', async () => {
      const st = await open()
      await st.write([
        { op: 'put', key: 'keep', value: bytes('old') },
        { op: 'put', key: 'doomed', value: bytes('still here') },
      ])
      const good: StoreOp[] = [
        { op: 'put', key: 'keep', value: bytes('new') },
        { op: 'delete', key: 'doomed' },
        { op: 'put', key: 'fresh', value: bytes('f') },
      ]
      const badOps: ReadonlyArray<readonly [string, unknown]> = [
        ...BAD_KEYS.map(([what, key]) => [`a put whose key is ${what}`, { op: 'put', key, value: bytes('x') }] as const),
        ['a delete whose key is empty', { op: 'delete', key: '' }],
        ['a delete whose key is a lone surrogate', { op: 'delete', key: 'd\uD800' }],
        ['a put without a value', { op: 'put', key: 'v' }],
        ['a put whose value is a string', { op: 'put', key: 'v', value: 'text' }],
        ['a put whose value is an array of numbers', { op: 'put', key: 'v', value: [1, 2, 3] }],
        ['a put whose value is an ArrayBuffer', { op: 'put', key: 'v', value: new ArrayBuffer(4) }],
        ['a put whose value is null', { op: 'put', key: 'v', value: null }],
        ['an unknown operation', { op: 'upsert', key: 'v', value: bytes('x') }],
        ['an operation without op', { key: 'v', value: bytes('x') }],
        ['null', null],
        ['a string', 'put'],
      ]
      for (const [what, bad] of badOps) {
        for (const at of [0, 1, good.length]) {
          const batch = [...good.slice(0, at), bad, ...good.slice(at)] as StoreOp[]
          await refused(`write with ${what} at operation ${at}`, () => st.write(batch))
        }
      }
      for (const batch of [undefined, null, 'put', { op: 'put', key: 'k', value: bytes('x') }]) {
        await refused(`write(${JSON.stringify(batch) ?? 'undefined'})`, () => st.write(batch as unknown as StoreOp[]))
      }
      // Nothing of the refused batches reached the store, and it still works.
      await expectBytes(st, 'keep', bytes('old'))
      await expectBytes(st, 'doomed', bytes('still here'))
      expect(await st.get('fresh')).toBeUndefined()
      expect(await st.keys('')).toEqual(['doomed', 'keep'])
      await st.write(good)
      await expectBytes(st, 'keep', bytes('new'))
      expect(await st.keys('')).toEqual(['fresh', 'keep'])
    }, timeout)

    it('get, put and delete refuse a bad key with a ConfigError; keys refuses a prefix that is not a string', async () => {
      const st = await open()
      await st.put('k', bytes('v'))
      for (const [what, key] of BAD_KEYS) {
        await refused(`get(${what})`, () => st.get(key as string))
        await refused(`put(${what})`, () => st.put(key as string, bytes('x')))
        await refused(`delete(${what})`, () => st.delete(key as string))
      }
      for (const [what, value] of [
        ['undefined', undefined],
        ['a string', 'text'],
        ['an array of numbers', [1, 2]],
      ] as const) {
        await refused(`put with a value that is ${what}`, () => st.put('k', value as unknown as Uint8Array))
      }
      for (const [what, prefix] of [
        ['undefined', undefined],
        ['null', null],
        ['a number', 7],
        ['an array', ['k']],
      ] as const) {
        await refused(`keys(${what})`, () => st.keys(prefix as unknown as string))
      }
      expect(await st.keys('')).toEqual(['k'])
      await expectBytes(st, 'k', bytes('v'))
    }, timeout)

    it('keys(prefix) lists the keys starting with prefix, in ascending UTF-16 code-unit order', async () => {
      const st = await open()
      // Written in two batches and some single puts, in no particular order.
      const shuffled = [...LISTED_KEYS].reverse()
      await st.write(shuffled.slice(0, 10).map((key) => ({ op: 'put', key, value: bytes(key) })))
      for (const key of shuffled.slice(10, 15)) await st.put(key, bytes(key))
      await st.write(shuffled.slice(15).map((key) => ({ op: 'put', key, value: bytes(key) })))
      const under = (prefix: string): string[] => codeUnitOrder(LISTED_KEYS.filter((k) => k.startsWith(prefix)))
      // '' lists every key. Code-unit order differs from UTF-8 byte order above U+FFFF: U+1F600 is
      // D83D DE00 (before U+E000 and U+FFFD) in UTF-16, F0 9F 98 80 (after them) in UTF-8.
      expect(await st.keys('')).toEqual(codeUnitOrder(LISTED_KEYS))
      expect(await st.keys('u/')).toEqual(['u/z', 'u/\u{1F600}', 'u/\u{1F600}x', 'u/\uE000', 'u/\uFFFD'])
      for (const prefix of ['a', 'ab', 'abc', 'a/', 'B', 'b', 'e', 'é', 'u', 'u/\u{1F600}', 'z', 'z[', 'z*', 'z:kv', '\u{10FFFF}']) {
        expect(await st.keys(prefix), `keys(${JSON.stringify(prefix)})`).toEqual(under(prefix))
      }
      // A key equal to the prefix is listed; prefixes that match nothing list nothing.
      expect(await st.keys('abc')).toEqual(['abc'])
      for (const prefix of ['abcd', 'x', 'A', 'u/\uFFFE', '\u{10FFFF}\u{10FFFF}']) expect(await st.keys(prefix), `keys(${JSON.stringify(prefix)})`).toEqual([])
      // Deleted keys are not listed.
      await st.write([
        { op: 'delete', key: 'ab' },
        { op: 'delete', key: 'u/\u{1F600}' },
      ])
      expect(await st.keys('a')).toEqual(codeUnitOrder(['a', 'abc', 'abd', 'ac', 'a/', 'a/b']))
      expect(await st.keys('u/')).toEqual(['u/z', 'u/\u{1F600}x', 'u/\uE000', 'u/\uFFFD'])
      for (const key of ['a', 'éa', 'u/\u{1F600}x', 'z\u0000', '\u{10FFFF}']) await expectBytes(st, key, bytes(key))
    }, timeout)

    it('a value returned by get is the caller\'s: changing it changes nothing stored', async () => {
      const st = await open()
      await st.put('k', bytes('value'))
      const got = await st.get('k')
      got?.fill(0x21)
      await expectBytes(st, 'k', bytes('value'))
      const twice = [await st.get('k'), await st.get('k')]
      twice[0]?.fill(0x21)
      expect(sameBytes(twice[1], bytes('value')), 'one get\'s array changed by writing into another\'s').toBeUndefined()
    }, timeout)

    it('after close every method rejects with a ClosedError; closing again is harmless', async () => {
      const st = await open()
      await st.put('k', bytes('v'))
      await st.close()
      const calls: ReadonlyArray<readonly [string, () => Promise<unknown>]> = [
        ['get', () => st.get('k')],
        ['get of an absent key', () => st.get('absent')],
        ['put', () => st.put('k', bytes('w'))],
        ['delete', () => st.delete('k')],
        ['write', () => st.write([{ op: 'put', key: 'k', value: bytes('w') }])],
        ['write of an empty batch', () => st.write([])],
        ['keys', () => st.keys('')],
      ]
      for (const [what, call] of calls) {
        const err = await rejection(`${what} after close`, call)
        expect(isClosedError(err), `${what} after close: expected a ClosedError, got ${String(err)}`).toBe(true)
      }
      await st.close()
      await Promise.all([st.close(), st.close()])
    }, timeout)

    durable('data survives a close and a reopen: puts, deletes, a batch, large and astral values', async () => {
      let st = await open()
      const large = pattern(1024 * 1024, 5)
      await st.put('large', large)
      await st.put('empty', new Uint8Array(0))
      await st.put('deleted', bytes('x'))
      await st.delete('deleted')
      await st.put('u/\u{1F600}', bytes('astral'))
      st = await reopen(st)
      await expectBytes(st, 'large', large)
      await expectBytes(st, 'empty', new Uint8Array(0))
      expect(await st.get('deleted')).toBeUndefined()
      await expectBytes(st, 'u/\u{1F600}', bytes('astral'))
      expect(await st.keys('')).toEqual(codeUnitOrder(['large', 'empty', 'u/\u{1F600}']))

      // The last thing before the close is a batch: all of it is there, later operations winning.
      await st.write([
        { op: 'put', key: 'pos/eu', value: bytes('1') },
        { op: 'put', key: 'doc/a', value: bytes('a1') },
        { op: 'delete', key: 'large' },
        { op: 'put', key: 'doc/a', value: bytes('a2') },
        { op: 'put', key: 'tmp', value: bytes('t') },
        { op: 'delete', key: 'tmp' },
      ])
      st = await reopen(st)
      await expectBytes(st, 'pos/eu', bytes('1'))
      await expectBytes(st, 'doc/a', bytes('a2'))
      expect(await st.get('large')).toBeUndefined()
      expect(await st.get('tmp')).toBeUndefined()
      expect(await st.keys('')).toEqual(codeUnitOrder(['empty', 'u/\u{1F600}', 'pos/eu', 'doc/a']))

      // A refused batch before the close left nothing behind either.
      await refused('write with a bad key after good operations', () =>
        st.write([
          { op: 'put', key: 'pos/eu', value: bytes('2') },
          { op: 'put', key: '', value: bytes('x') },
        ]),
      )
      st = await reopen(st)
      await expectBytes(st, 'pos/eu', bytes('1'))
      expect(await st.keys('pos/')).toEqual(['pos/eu'])
    })

    durable('a reopened store takes writes like the first one, and those survive the next reopen', async () => {
      let st = await open()
      for (let i = 0; i < 20; i++) await st.write([{ op: 'put', key: `k/${String(i).padStart(2, '0')}`, value: bytes(`v${i}`) }, { op: 'put', key: 'last', value: bytes(String(i)) }])
      for (let round = 0; round < 3; round++) {
        st = await reopen(st)
        expect(await st.keys('k/'), `round ${round}`).toHaveLength(20 + round)
        await expectBytes(st, 'last', bytes(String(19 + round)))
        await st.write([{ op: 'put', key: `k/${20 + round}`, value: bytes('more') }, { op: 'put', key: 'last', value: bytes(String(20 + round)) }])
      }
      st = await reopen(st)
      expect(await st.keys('k/')).toHaveLength(23)
      await expectBytes(st, 'last', bytes('22'))
    })
  })
}
