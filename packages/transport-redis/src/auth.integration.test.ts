/**
 * Authentication passes through to ioredis: a private redis-server with a password accepts the
 * transport and the store given the password in the URL or in ioredis options, and refuses them
 * without it or with a wrong one — as a ConfigError (not retriable: retrying cannot help), not a hang.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError } from '@concord/core'
import { RedisStore } from './redisStore.js'
import { RedisTransport } from './redisTransport.js'
import { PrivateRedis, hasRedisServer } from './testServer.js'

const available = await hasRedisServer()
const PASSWORD = 'concord-test-secret'

describe.skipIf(!available)('Redis with a password', () => {
  let server: PrivateRedis
  beforeAll(async () => {
    server = await PrivateRedis.start(['--requirepass', PASSWORD])
  })
  afterAll(async () => {
    await server?.stop()
  })

  it('works with the password in the URL or in ioredis options', async () => {
    for (const redis of [`redis://:${PASSWORD}@127.0.0.1:${server.port}`, { host: '127.0.0.1', port: server.port, password: PASSWORD }]) {
      const t = new RedisTransport({ redis, keyPrefix: '{auth}' })
      const [p] = await t.append('eu', [new Uint8Array([1, 2, 3])])
      const got = await t.poll('us', 'eu')
      expect(got.map((r) => r.position)).toContain(p)
      await t.close()
      const store = new RedisStore({ redis, keyPrefix: '{auth-store}' })
      await store.put('k', new Uint8Array([9]))
      expect(await store.get('k')).toEqual(new Uint8Array([9]))
      await store.close()
    }
  })

  it('refuses a missing or wrong password with a ConfigError', async () => {
    for (const redis of [`redis://127.0.0.1:${server.port}`, `redis://:wrong@127.0.0.1:${server.port}`]) {
      const t = new RedisTransport({ redis, keyPrefix: '{auth}' })
      const append = t.append('eu', [new Uint8Array([1])])
      await expect(append).rejects.toBeInstanceOf(ConfigError)
      await expect(append).rejects.toMatchObject({ retriable: false })
      await expect(t.poll('us', 'eu')).rejects.toBeInstanceOf(ConfigError)
      await t.close()
    }
  })
})
