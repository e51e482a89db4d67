/**
 * Test helper: finds the Redis server the integration suites run against. Not part of the public API.
 *
 * Under `CI=true` a missing server is an error (the suite must run); elsewhere the suite is skipped
 * with a notice saying how to start one. Use it at the top of a `*.integration.test.ts`:
 *
 * ```ts
 * const redis = await requireRedis()
 * describe.skipIf(!redis.available)('...', () => { ... })
 * ```
 */
import { Redis } from 'ioredis'

/** Where the test Redis is and whether it answered. */
export interface RedisTestServer {
  /** `REDIS_URL` (set by scripts/vitest-redis.ts when it started a server), else `redis://127.0.0.1:6379`. */
  readonly url: string
  readonly available: boolean
}

/** Resolves the test server; throws under `CI=true` when it does not answer PING. */
export async function requireRedis(): Promise<RedisTestServer> {
  const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
  const client = new Redis(url, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => undefined)
  let problem: string | undefined
  try {
    await client.connect()
    if ((await client.ping()) !== 'PONG') problem = 'PING did not answer PONG'
  } catch (e) {
    problem = e instanceof Error ? e.message : String(e)
  } finally {
    client.disconnect()
  }
  if (problem === undefined) return { url, available: true }
  const message = `Redis is not reachable at ${url} (${problem}), and no redis-server could be started on a free port (scripts/vitest-redis.ts). Install Redis, start it with \`bash scripts/redis.sh start\`, or set REDIS_URL.`
  if (process.env.CI === 'true') throw new Error(`${message} Required under CI=true.`)
  console.warn(`[skipped] ${message}`)
  return { url, available: false }
}
