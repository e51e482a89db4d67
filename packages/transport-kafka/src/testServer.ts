/**
 * Test helper: finds the Kafka broker the integration suites run against. Not part of the public API.
 *
 * Under `CI=true` a missing broker is an error (the suite must run); elsewhere the suite is skipped
 * with a notice saying how to start one. Use it at the top of a `*.integration.test.ts`:
 *
 * ```ts
 * const kafka = await requireKafka()
 * describe.skipIf(!kafka.available)('...', () => { ... })
 * ```
 */
import { Kafka, logLevel } from 'kafkajs'

/** Where the test broker is and whether it answered. */
export interface KafkaTestServer {
  /** `KAFKA_BROKERS` (comma-separated), else `127.0.0.1:9092`. */
  readonly brokers: readonly string[]
  readonly available: boolean
}

/** Resolves the test broker; throws under `CI=true` when it cannot be reached. */
export async function requireKafka(): Promise<KafkaTestServer> {
  const brokers = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',').map((b) => b.trim())
  const admin = new Kafka({ clientId: 'concord-test-probe', brokers, connectionTimeout: 3000, retry: { retries: 1 }, logLevel: logLevel.NOTHING }).admin()
  let problem: string | undefined
  try {
    await admin.connect()
    await admin.describeCluster()
  } catch (e) {
    problem = e instanceof Error ? e.message : String(e)
  } finally {
    await admin.disconnect().catch(() => undefined)
  }
  if (problem === undefined) return { brokers, available: true }
  const message = `Kafka is not reachable at ${brokers.join(',')} (${problem}). Start it with \`bash scripts/kafka.sh start\` or set KAFKA_BROKERS.`
  if (process.env.CI === 'true') throw new Error(`${message} Required under CI=true.`)
  console.warn(`[skipped] ${message}`)
  return { brokers, available: false }
}
