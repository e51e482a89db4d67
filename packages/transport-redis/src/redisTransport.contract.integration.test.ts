import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { describe } from 'vitest'
import { runTransportContract } from '@concord/testing'
import { RedisTransport } from './redisTransport.js'
import { requireRedis } from './testServer.js'

const server = await requireRedis()

describe.skipIf(!server.available)('RedisTransport (shared contract)', () => {
  runTransportContract('redis', () => {
    // A fresh key namespace per test; its keys are deleted afterwards.
    const keyPrefix = `{concord-contract-${randomUUID()}}`
    return {
      open: async () => new RedisTransport({ redis: server.url, keyPrefix }),
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
