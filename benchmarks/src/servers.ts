/**
 * The servers the transport and lag benchmarks run against, checked before any work: a suite whose
 * Redis or Kafka is down fails at once, saying how to start it, instead of after minutes of other
 * variants (or kafkajs's connection retries).
 */
import { Redis } from 'ioredis'
import { Kafka, logLevel } from 'kafkajs'
import { UsageError } from './report.js'

/** `REDIS_URL`, else the project's development Redis. */
export const redisUrl = (): string => process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

/** `KAFKA_BROKERS` (comma-separated), else the broker `scripts/kafka.sh` starts. */
export const kafkaBrokers = (): string[] => (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',').map((b) => b.trim())

const PROBE_TIMEOUT_MS = 3000

async function probeRedis(): Promise<string | undefined> {
  const client = new Redis(redisUrl(), { lazyConnect: true, connectTimeout: PROBE_TIMEOUT_MS, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => undefined)
  try {
    await client.connect()
    await client.ping()
    return undefined
  } catch (e) {
    return `Redis is not reachable at ${redisUrl()} (${e instanceof Error ? e.message : String(e)}): start it with \`bash scripts/redis.sh start\`, or set REDIS_URL`
  } finally {
    client.disconnect()
  }
}

async function probeKafka(): Promise<string | undefined> {
  const admin = new Kafka({ clientId: 'concord-bench-probe', brokers: kafkaBrokers(), connectionTimeout: PROBE_TIMEOUT_MS, retry: { retries: 1 }, logLevel: logLevel.NOTHING }).admin()
  try {
    await admin.connect()
    await admin.describeCluster()
    return undefined
  } catch (e) {
    return `Kafka is not reachable at ${kafkaBrokers().join(',')} (${e instanceof Error ? e.message : String(e)}): start the project's broker with \`bash scripts/kafka.sh start\`, or set KAFKA_BROKERS`
  } finally {
    await admin.disconnect().catch(() => undefined)
  }
}

/**
 * Checks that every server of `only` answers. @throws UsageError naming each one that does not, how to
 * start it, and the `--only=` that runs the suite without it.
 */
export async function requireServers(suite: string, only: readonly ('redis' | 'kafka')[]): Promise<void> {
  const problems: string[] = []
  const down: string[] = []
  for (const server of only) {
    const problem = server === 'redis' ? await probeRedis() : await probeKafka()
    if (problem === undefined) continue
    problems.push(problem)
    down.push(server)
  }
  if (problems.length === 0) return
  const others = only.filter((s) => !down.includes(s))
  const hint = others.length > 0 ? `; or run the other transport only: --only=${others.join(',')}` : ''
  throw new UsageError(`${suite}: ${problems.join('; ')}${hint}`)
}
