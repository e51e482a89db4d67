/**
 * Test helpers: the Kafka broker the integration suites run against, and private brokers for the
 * fault and SASL suites. Not part of the package (excluded from its build and files, like the tests).
 *
 * Under `CI=true` a missing broker is an error (the suite must run); elsewhere the suite is skipped
 * with a notice saying how to start one. Use it at the top of a `*.integration.test.ts`:
 *
 * ```ts
 * const kafka = await requireKafka()
 * describe.skipIf(!kafka.available)('...', () => { ... })
 * ```
 */
import { execFile, execFileSync } from 'node:child_process'
import { existsSync, rmSync } from 'node:fs'
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Kafka, logLevel } from 'kafkajs'
import { isConcordError, type LogPosition, type LogRecord, type Transport } from '@concord/core'
import { freePort, isCI } from '@concord/testing'

const run = promisify(execFile)
const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')

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
  if (isCI()) throw new Error(`${message} Required under CI=true.`)
  console.warn(`[skipped] ${message}`)
  return { brokers, available: false }
}

const KAFKA_VERSION = process.env.KAFKA_VERSION ?? '3.9.1'

/** Whether a private broker can be started here (Java and the script); under CI=true it must. */
export async function canRunKafka(): Promise<boolean> {
  try {
    await run(process.env.JAVA_HOME !== undefined ? join(process.env.JAVA_HOME, 'bin', 'java') : 'java', ['-version'])
    return true
  } catch {
    const message = 'java is not installed: the Kafka fault and SASL tests need it to run a private broker (scripts/kafka.sh).'
    if (isCI()) throw new Error(`${message} Required under CI=true.`)
    console.warn(`[skipped] ${message}`)
    return false
  }
}


/**
 * A KRaft broker of one test file only, run by scripts/kafka.sh on its own ports and directory (so
 * stopping it never disturbs the shared broker). `env` adds scripts/kafka.sh settings (KAFKA_SASL_PLAIN).
 */
export class PrivateKafka {
  private constructor(
    readonly port: number,
    private readonly env: NodeJS.ProcessEnv,
    private readonly dir: string,
  ) {}

  static async start(env: NodeJS.ProcessEnv = {}): Promise<PrivateKafka> {
    const dir = await mkdtemp(join(tmpdir(), 'concord-kafka-'))
    const port = await freePort()
    // The script gives up (and stops the JVM it started) before a test hook's 120 s would: a hook
    // that timed out could not stop a broker it never got hold of.
    const k = new PrivateKafka(port, { KAFKA_START_TIMEOUT: '90', ...process.env, ...env, KAFKA_DIR: dir, KAFKA_PORT: String(port), KAFKA_CONTROLLER_PORT: String(await freePort()) }, dir)
    // Known from here on: stopped at process exit if nobody stops it before (a failed or abandoned start).
    live.add(k)
    try {
      // Reuse the jars scripts/kafka.sh fetched for the shared broker, if any (else it fetches them).
      const libs = join(repo, '.kafka', `libs-${KAFKA_VERSION}`)
      if (existsSync(join(libs, '.complete'))) await symlink(libs, join(dir, `libs-${KAFKA_VERSION}`))
      else await mkdir(dir, { recursive: true })
      await k.up()
    } catch (e) {
      await k.stop()
      throw e
    }
    return k
  }

  get brokers(): readonly string[] {
    return [`127.0.0.1:${this.port}`]
  }

  up(): Promise<unknown> {
    return run('bash', [join(repo, 'scripts', 'kafka.sh'), 'start'], { env: this.env })
  }

  down(): Promise<unknown> {
    return run('bash', [join(repo, 'scripts', 'kafka.sh'), 'stop'], { env: this.env })
  }

  async stop(): Promise<void> {
    await this.down().catch(() => undefined)
    live.delete(this)
    if (process.env.KEEP === undefined) await rm(this.dir, { recursive: true, force: true })
  }

  /** Stops it synchronously (at process exit, when nothing async runs any more). */
  stopNow(): void {
    try {
      execFileSync('bash', [join(repo, 'scripts', 'kafka.sh'), 'stop'], { env: this.env, stdio: 'ignore', timeout: 70_000 })
    } catch {
      /* gone already */
    }
    if (process.env.KEEP === undefined) rmSync(this.dir, { recursive: true, force: true })
  }
}

/** Private brokers started and not stopped yet. */
const live = new Set<PrivateKafka>()
// A test file whose hook timed out, or a worker that exits early, leaves no broker running behind.
process.once('exit', () => {
  for (const k of live) k.stopNow()
})

/**
 * One record through `t` the way the credential suites check a connection: appended to `eu` keyed
 * by a document, polled by reader `us/1` (waiting up to 20 s), committed, and the commit read back.
 */
export async function roundTrip(t: Transport, bytes: Uint8Array): Promise<{ position: LogPosition | undefined; records: readonly LogRecord[]; committed: LogPosition | undefined }> {
  const [position] = await t.append('eu', [bytes], { keys: ['doc'] })
  let records: readonly LogRecord[] = []
  for (let i = 0; i < 100 && records.length === 0; i++) {
    try {
      records = await t.poll('us/1', 'eu', { waitMs: 200 })
    } catch (e) {
      // A broker just started may have no group coordinator yet: retriable, as a node would retry.
      if (!(isConcordError(e) && e.retriable)) throw e
      await new Promise((r) => setTimeout(r, 200))
    }
  }
  for (let i = 0; position !== undefined; i++) {
    try {
      await t.commit('us/1', 'eu', position)
      break
    } catch (e) {
      // Retriable (the consumer still joining its group): again, up to a point.
      if (!(isConcordError(e) && e.retriable) || i >= 50) throw e
      await new Promise((r) => setTimeout(r, 200))
    }
  }
  return { position, records, committed: await t.committed('us/1', 'eu') }
}

/** What appending one record through `t` fails with, or undefined when it succeeds; closes `t`. */
export async function appendError(t: Transport): Promise<unknown> {
  try {
    await t.append('eu', [new Uint8Array([1])])
    return undefined
  } catch (e) {
    return e
  } finally {
    await t.close()
  }
}
