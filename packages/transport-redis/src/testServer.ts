/**
 * Test helpers: the Redis server the integration suites run against, and private servers for the
 * fault suites. Not part of the package (excluded from its build and files, like the tests).
 *
 * Under `CI=true` a missing server is an error (the suite must run); elsewhere the suite is skipped
 * with a notice saying how to start one. Use it at the top of a `*.integration.test.ts`:
 *
 * ```ts
 * const redis = await requireRedis()
 * describe.skipIf(!redis.available)('...', () => { ... })
 * ```
 */
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { freePort, isCI } from '@concord/testing'

const run = promisify(execFile)

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
  // With REDIS_URL set, the test setup (scripts/vitest-redis.ts) starts no server of its own.
  const why =
    process.env.REDIS_URL !== undefined
      ? 'REDIS_URL names that server (unset it to use 127.0.0.1:6379, else a redis-server the tests start on a free port)'
      : 'and no redis-server could be started on a free port (scripts/vitest-redis.ts). Install Redis, start it with `bash scripts/redis.sh start`, or set REDIS_URL'
  const message = `Redis is not reachable at ${url} (${problem}); ${why}.`
  if (isCI()) throw new Error(`${message} Required under CI=true.`)
  console.warn(`[skipped] ${message}`)
  return { url, available: false }
}

/** Whether redis-server can be started here; under CI=true its absence fails the suite. */
export async function hasRedisServer(): Promise<boolean> {
  try {
    await run('redis-server', ['--version'])
    return true
  } catch {
    const message = 'redis-server is not installed: the Redis fault tests need it to run private servers (apt-get install redis-server).'
    if (isCI()) throw new Error(`${message} Required under CI=true.`)
    console.warn(`[skipped] ${message}`)
    return false
  }
}


/** A redis-server of one test file only, on its own port, without persistence (a restart loses everything). */
export class PrivateRedis {
  private constructor(
    readonly port: number,
    private readonly dir: string,
    private readonly args: readonly string[],
  ) {}

  /** Starts a server; `args` are more redis-server options (e.g. `--cluster-enabled yes`). */
  static async start(args: readonly string[] = []): Promise<PrivateRedis> {
    const s = new PrivateRedis(await freePort(), await mkdtemp(join(tmpdir(), 'concord-redis-')), args)
    try {
      await s.up()
    } catch (e) {
      await s.stop().catch(() => undefined)
      throw e
    }
    return s
  }

  private get pidfile(): string {
    return join(this.dir, 'redis.pid')
  }

  /** Pid of the server this object started (its pid file), if any. */
  private async pid(): Promise<number | undefined> {
    const text = await readFile(this.pidfile, 'utf8').catch(() => undefined)
    const pid = Number(text?.trim())
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined
  }

  /** Whether the server answering on the port is the one this object started (not another on a reused port). */
  private async ours(c: Redis): Promise<boolean> {
    const pid = await this.pid()
    const info = String(await c.info('server'))
    return pid !== undefined && new RegExp(`^process_id:${pid}\\s*$`, 'm').test(info)
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`
  }

  async up(): Promise<void> {
    await rm(this.pidfile, { force: true })
    // --daemonize returns before the server binds its port: the pid file and the server's own
    // process_id tell whether what answers on the port is this server (the port may have been
    // taken meanwhile, and the new server then exits on EADDRINUSE).
    await run('redis-server', ['--daemonize', 'yes', '--pidfile', this.pidfile, '--bind', '127.0.0.1', '--port', String(this.port), '--save', '', '--appendonly', 'no', '--dir', this.dir, ...this.args])
    for (let i = 0; ; i++) {
      const c = new Redis(this.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, ...this.auth() })
      c.on('error', () => undefined)
      try {
        await c.connect()
        if ((await c.ping()) === 'PONG') {
          if (await this.ours(c)) return
          if (i > 100) throw new Error(`port ${this.port} is served by another redis-server than the one started here`)
        }
      } catch (e) {
        if (i > 100) throw e
      } finally {
        c.disconnect()
      }
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  /** The password of a server started with `--requirepass`, as ioredis options. */
  private auth(): { password?: string } {
    const i = this.args.indexOf('--requirepass')
    const password = i >= 0 ? this.args[i + 1] : undefined
    return password === undefined ? {} : { password }
  }

  /** SHUTDOWN NOSAVE: the server exits and its data is gone. */
  async down(): Promise<void> {
    const c = new Redis(this.url, { retryStrategy: () => null, maxRetriesPerRequest: 0, ...this.auth() })
    c.on('error', () => undefined)
    // Only this object's server: never another one that took the port.
    const ours = await this.ours(c).catch(() => false)
    if (ours) await c.call('SHUTDOWN', ['NOSAVE']).catch(() => undefined)
    c.disconnect()
    if (!ours) return
    // Wait until the port is free before a restart binds it again.
    for (let i = 0; i < 200; i++) {
      const probe = new Redis(this.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
      probe.on('error', () => undefined)
      const alive = await probe.connect().then(
        () => true,
        () => false,
      )
      probe.disconnect()
      if (!alive) return
      await new Promise((r) => setTimeout(r, 25))
    }
    throw new Error(`redis-server on ${this.port} did not shut down`)
  }

  /**
   * Freezes the server (SIGSTOP) or thaws it (SIGCONT): a server that stops answering without
   * closing its connections, as a paused VM or a partition looks to a client.
   */
  async freeze(frozen: boolean): Promise<void> {
    const pid = await this.pid()
    if (pid === undefined) throw new Error('redis-server pid unknown')
    process.kill(pid, frozen ? 'SIGSTOP' : 'SIGCONT')
  }

  async stop(): Promise<void> {
    await this.freeze(false).catch(() => undefined)
    await this.down()
    await rm(this.dir, { recursive: true, force: true })
  }
}
