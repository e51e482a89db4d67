import { describe, expect, it } from 'vitest'
import { ConfigError, TransportError } from '@concord/core'
import { replyCode, translateError } from './errors.js'

function reply(message: string): Error {
  const e = new Error(message)
  e.name = 'ReplyError'
  return e
}

describe('translateError', () => {
  it('reads the code of a server reply', () => {
    expect(replyCode(reply('NOGROUP No such key'))).toBe('NOGROUP')
    expect(replyCode(new Error('Connection is closed.'))).toBeUndefined()
  })

  it('maps auth and type errors to ConfigError, transient replies and network errors to retriable TransportError', () => {
    for (const m of ['WRONGPASS invalid username-password pair', 'NOAUTH Authentication required.', 'WRONGTYPE Operation against a key']) {
      expect(translateError(reply(m), 'x')).toBeInstanceOf(ConfigError)
    }
    // MISCONF (the server cannot save: writes come back once the disk does) and UNBLOCKED (a blocked
    // read whose stream was deleted) were permanent: a node stopped for good.
    for (const m of ['LOADING Redis is loading', 'READONLY You cannot write', 'CLUSTERDOWN down', 'NOGROUP No such key', 'MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk', 'UNBLOCKED the stream key no longer exists']) {
      const e = translateError(reply(m), 'x')
      expect(e).toBeInstanceOf(TransportError)
      expect(e.retriable).toBe(true)
    }
    const network = translateError(new Error('Connection is closed.'), 'poll')
    expect(network).toBeInstanceOf(TransportError)
    expect(network.retriable).toBe(true)
    expect(network.cause).toBeInstanceOf(Error)
    const bad = translateError(reply('ERR syntax error'), 'x')
    expect(bad.retriable).toBe(false)
  })

  it('reads an EXECABORT by the refusal that aborted the transaction', () => {
    const aborted = (...previous: Error[]): Error => Object.assign(reply('EXECABORT Transaction discarded because of previous errors.'), { previousErrors: previous })
    const noReplicas = translateError(aborted(reply('NOREPLICAS Not enough good replicas to write.')), 'write')
    expect(noReplicas).toBeInstanceOf(TransportError)
    expect(noReplicas.retriable).toBe(true)
    expect(translateError(aborted(reply('NOPERM this user has no permissions')), 'write')).toBeInstanceOf(ConfigError)
    expect(translateError(aborted(reply('ERR syntax error')), 'write').retriable).toBe(false)
    expect(translateError(aborted(), 'write').retriable).toBe(true)
  })

  it('passes Concord errors through', () => {
    const e = new ConfigError('bad')
    expect(translateError(e, 'x')).toBe(e)
  })
})

describe('a Redis that is not there', () => {
  it('the transport and the store say which server and why (a new user saw only "Reached the max retries per request limit")', async () => {
    const { RedisTransport } = await import('./redisTransport.js')
    const { RedisStore } = await import('./redisStore.js')
    const t = new RedisTransport({ redis: 'redis://127.0.0.1:1' })
    const appended = await t.append('eu', [new Uint8Array([1])]).then(
      () => undefined,
      (e: unknown) => e,
    )
    await t.close()
    expect(appended).toBeInstanceOf(TransportError)
    expect((appended as TransportError).retriable).toBe(true)
    expect((appended as Error).message).toMatch(/^redis transport: append failed: .*\(last connection error: connect ECONNREFUSED 127\.0\.0\.1:1\)$/)
    // The store's client keeps ioredis's retries (a short restart must not fail open/start/close); a
    // client retrying once here keeps the test short.
    const s = new RedisStore({ redis: { host: '127.0.0.1', port: 1, maxRetriesPerRequest: 1 }, keyPrefix: '{t}' })
    const got = await s.get('k').then(
      () => undefined,
      (e: unknown) => e,
    )
    await s.close()
    expect(got).toBeInstanceOf(TransportError)
    expect((got as Error).message).toMatch(/^redis store: get failed: Reached the max retries per request limit .*ECONNREFUSED 127\.0\.0\.1:1/)
    expect(() => new RedisStore({ redis: 'redis://127.0.0.1:1' } as never)).toThrow(/redis store: keyPrefix is required/)
  })
})

describe('clients the application passes in', () => {
  it('a Cluster client that cannot reach a server: every call fails within commandTimeoutMs, retriably, instead of waiting in its offline queue for ever (review finding)', async () => {
    const { Cluster } = await import('ioredis')
    const { RedisTransport } = await import('./redisTransport.js')
    const { RedisStore } = await import('./redisStore.js')
    // Nothing listens on port 1: the Cluster never gets its slots and queues every command.
    const cluster = new Cluster([{ host: '127.0.0.1', port: 1 }], { clusterRetryStrategy: () => 100 })
    cluster.on('error', () => undefined)
    const t = new RedisTransport({ redis: cluster, keyPrefix: '{borrowed}', commandTimeoutMs: 300 })
    const s = new RedisStore({ redis: cluster, keyPrefix: '{borrowed-store}', commandTimeoutMs: 300 })
    try {
      const started = Date.now()
      const outcomes = await Promise.all(
        [t.append('o', [Uint8Array.of(1)]), t.commit('r', 'o', '1-0'), t.committed('r', 'o'), t.latest('o'), t.trim('o', '1-0'), s.get('k'), s.put('k', Uint8Array.of(1)), s.keys('')].map((p: Promise<unknown>) =>
          p.then(
            () => 'resolved',
            (e: unknown) => e,
          ),
        ),
      )
      for (const e of outcomes) {
        expect(e).toBeInstanceOf(TransportError)
        expect((e as TransportError).retriable).toBe(true)
        expect((e as Error).message).toMatch(/no answer within 300 ms .*offline queue/)
      }
      expect(Date.now() - started).toBeLessThan(5_000)
    } finally {
      await t.close()
      await s.close()
      cluster.disconnect()
    }
  })

  it('a closed client is refused with a ConfigError, when given and when closed later (it failed every call as retriable, for ever)', async () => {
    const { Redis } = await import('ioredis')
    const { RedisTransport } = await import('./redisTransport.js')
    const { RedisStore } = await import('./redisStore.js')
    const closed = new Redis({ port: 1, lazyConnect: true })
    closed.disconnect()
    expect(closed.status).toBe('end')
    expect(() => new RedisTransport({ redis: closed })).toThrow(ConfigError)
    expect(() => new RedisStore({ redis: closed, keyPrefix: '{k}' })).toThrow(/the ioredis client passed in is closed/)
    const later = new Redis({ port: 1, lazyConnect: true })
    const t = new RedisTransport({ redis: later })
    const s = new RedisStore({ redis: later, keyPrefix: '{k}' })
    later.disconnect()
    await expect(t.append('o', [Uint8Array.of(1)])).rejects.toBeInstanceOf(ConfigError)
    await expect(t.committed('r', 'o')).rejects.toThrow(/the ioredis client passed in is closed/)
    await expect(s.get('k')).rejects.toBeInstanceOf(ConfigError)
    await t.close()
    await s.close()
  })

  it('MOVED and ASK (a non-Cluster client on a node of a Redis Cluster) and a client in subscriber mode are ConfigErrors, not retriable for ever', () => {
    for (const m of ['MOVED 9077 127.0.0.1:7302', 'ASK 9077 127.0.0.1:7302']) {
      const e = translateError(reply(m), 'append')
      expect(e).toBeInstanceOf(ConfigError)
      expect(e.message).toMatch(/node of a Redis Cluster: pass an ioredis Cluster client/)
    }
    const sub = translateError(new Error('Connection in subscriber mode, only subscriber commands may be used'), 'poll')
    expect(sub).toBeInstanceOf(ConfigError)
    expect(sub.message).toMatch(/subscribed to channels/)
  })

  it('a WAIT reply as a string (ioredis stringNumbers) counts as its number (every append failed after it landed, and each retry appended it again)', async () => {
    const { waitAcked } = await import('./errors.js')
    expect(() => waitAcked('1', 1)).not.toThrow()
    expect(() => waitAcked(2, 1)).not.toThrow()
    expect(() => waitAcked('0', 1)).toThrow(/only 0 of 1 replicas acknowledged/)
    expect(() => waitAcked(0, 1)).toThrow(/only 0 of 1/)
    expect(() => waitAcked('x', 1)).toThrow(/only x of 1/)
    expect(() => waitAcked(null, 1)).toThrow(/only null of 1/)
  })
})
