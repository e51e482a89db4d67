import { describe, expect, it } from 'vitest'
import { ConfigError, TransportError } from './errors.js'
import { backoffDelay, retry } from './retry.js'

const retriable = (): TransportError => new TransportError('down', { retriable: true })

describe('retry', () => {
  it('retries retriable errors with full-jitter backoff until one attempt succeeds', async () => {
    const slept: number[] = []
    let calls = 0
    const out = await retry(
      async (attempt) => {
        calls++
        if (attempt < 4) throw retriable()
        return 'ok'
      },
      { random: () => 0.5, initialDelayMs: 100, factor: 2, maxDelayMs: 300, sleep: async (ms) => void slept.push(ms) },
    )
    expect(out).toBe('ok')
    expect(calls).toBe(4)
    // Half of min(max, initial * factor^(n-1)): 100, 200, then capped at 300.
    expect(slept).toEqual([50, 100, 150])
  })

  it('throws the last error when attempts run out, and at once for errors not to retry', async () => {
    let calls = 0
    const fail = async (): Promise<never> => {
      calls++
      throw retriable()
    }
    await expect(retry(fail, { retries: 3, sleep: async () => undefined })).rejects.toBeInstanceOf(TransportError)
    expect(calls).toBe(3)
    calls = 0
    const plain = new Error('a bug')
    await expect(
      retry(
        async () => {
          calls++
          throw plain
        },
        { sleep: async () => undefined },
      ),
    ).rejects.toBe(plain)
    expect(calls).toBe(1)
    calls = 0
    await expect(retry(fail, { retries: 9, shouldRetry: (_e, attempt) => attempt < 2, sleep: async () => undefined })).rejects.toBeInstanceOf(TransportError)
    expect(calls).toBe(2)
  })

  it('stops when aborted, even in the middle of a backoff, without another attempt', async () => {
    const ac = new AbortController()
    let calls = 0
    const started = Date.now()
    const run = retry(
      async () => {
        calls++
        throw retriable()
      },
      { retries: 100, initialDelayMs: 60_000, maxDelayMs: 60_000, random: () => 0.99, signal: ac.signal },
    )
    setTimeout(() => ac.abort(), 20)
    await expect(run).rejects.toBeInstanceOf(TransportError)
    expect(calls).toBe(1)
    expect(Date.now() - started).toBeLessThan(30_000)
  })

  it('refuses options it cannot mean', async () => {
    const ok = async (): Promise<number> => 1
    await expect(retry(ok, { retries: Number.NaN })).rejects.toBeInstanceOf(ConfigError)
    await expect(retry(ok, { retries: 0 })).rejects.toThrow(/retries must be an integer >= 1/)
    await expect(retry(ok, { factor: 0.5 })).rejects.toThrow(/factor/)
    await expect(retry(ok, { maxDelayMs: -1 })).rejects.toThrow(/maxDelayMs/)
    await expect(retry(ok, { sleep: 5 as never })).rejects.toThrow(/sleep must be a function/)
    await expect(retry(ok, { retrys: 3 } as never)).rejects.toThrow(/retry: unknown option "retrys"/)
    expect(await retry(ok)).toBe(1)
  })

  it('backoffDelay stays within [0, min(max, initial * factor^(n-1)))', () => {
    for (let n = 1; n <= 20; n++) {
      const d = backoffDelay(n, { random: () => 0.999999 })
      expect(d).toBeGreaterThanOrEqual(0)
      expect(d).toBeLessThan(Math.min(10_000, 100 * 2 ** (n - 1)))
    }
  })
})

describe('retry with careless callers', () => {
  it('refuses a signal that is not an AbortSignal (after a failure, a timer threw a TypeError that crashed the process)', async () => {
    const ok = async (): Promise<number> => 1
    await expect(retry(ok, { signal: {} as never })).rejects.toBeInstanceOf(ConfigError)
    await expect(retry(ok, { signal: 'abort' as never })).rejects.toThrow(/signal must be an AbortSignal/)
    expect(await retry(ok, { signal: new AbortController().signal })).toBe(1)
  })

  it('rethrows non-Error throws as they are, without retrying them by default', async () => {
    for (const thrown of [undefined, null, 'text', 42, Object.create(null) as unknown, Symbol('s')]) {
      let calls = 0
      const run = retry(
        async () => {
          calls++
          throw thrown
        },
        { sleep: async () => undefined },
      )
      await expect(run).rejects.toBe(thrown)
      expect(calls).toBe(1)
    }
  })
})
