import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { describe } from 'vitest'
import { runStoreContract } from '@concord/testing'
import { RedisStore } from './redisStore.js'
import { requireRedis } from './testServer.js'

const server = await requireRedis()

describe.skipIf(!server.available)('RedisStore (shared contract)', () => {
  runStoreContract('redis', () => {
    // A private key prefix per test (its hash tag keeps a batch in one slot); its keys are deleted afterwards.
    const keyPrefix = `{concord-store-contract-${randomUUID()}}`
    const open = async (): Promise<RedisStore> => new RedisStore({ redis: server.url, keyPrefix })
    return {
      open,
      // Another client over the same prefix: what a restarted node sees.
      reopen: open,
      cleanup: async () => {
        const admin = new Redis(server.url)
        try {
          const keys = await admin.keys(`${keyPrefix}*`)
          if (keys.length > 0) await admin.del(...keys)
        } finally {
          await admin.quit()
        }
      },
    }
  })
})
