/**
 * Vitest global setup: the Redis the integration suites run against.
 *
 * REDIS_URL if set; else 127.0.0.1:6379 if it answers PING; else, when `redis-server` is
 * installed, a private server started here on a free port (no persistence, its own temporary
 * directory) for this run only: REDIS_URL points the test files at it (the test workers are forked
 * after this runs and inherit it), and the teardown stops it. Otherwise nothing is started and the
 * Redis suites skip with a notice (under CI=true they fail: see packages/transport-redis/src/testServer.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
// By path, not the package name: vitest's global setup resolves packages without the
// @concord/source condition, so '@concord/testing' would need a build first (a fresh clone has none).
// eslint-disable-next-line no-restricted-imports
import { freePort } from '../packages/testing/src/freePort.js'

const DEFAULT_URL = 'redis://127.0.0.1:6379'
const START_TIMEOUT_MS = 10_000

async function answers(url: string): Promise<boolean> {
  const client = new Redis(url, { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => undefined)
  try {
    await client.connect()
    return (await client.ping()) === 'PONG'
  } catch {
    return false
  } finally {
    client.disconnect()
  }
}


/** Resolves with the running child, or undefined when the binary is missing or the server does not come up. */
async function startServer(port: number, dir: string): Promise<ChildProcess | undefined> {
  const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' })
  const exited = new Promise<'exited'>((resolve) => {
    child.once('error', () => resolve('exited'))
    child.once('exit', () => resolve('exited'))
  })
  const until = Date.now() + START_TIMEOUT_MS
  while (Date.now() < until) {
    const state = await Promise.race([exited, new Promise<'waiting'>((r) => setTimeout(() => r('waiting'), 50))])
    if (state === 'exited') return undefined
    if (await answers(`redis://127.0.0.1:${port}`)) return child
  }
  child.kill('SIGKILL')
  return undefined
}

export default async function setup(): Promise<(() => Promise<void>) | undefined> {
  if (process.env.REDIS_URL !== undefined || (await answers(DEFAULT_URL))) return undefined
  const dir = await mkdtemp(join(tmpdir(), 'concord-test-redis-'))
  const port = await freePort()
  const child = await startServer(port, dir)
  if (child === undefined) {
    await rm(dir, { recursive: true, force: true })
    return undefined
  }
  process.env.REDIS_URL = `redis://127.0.0.1:${port}`
  console.log(`[redis] nothing answers on 127.0.0.1:6379: started redis-server on port ${port} for this run`)
  return async () => {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    child.kill('SIGTERM')
    await Promise.race([exited, new Promise<void>((r) => setTimeout(r, 5000))])
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await rm(dir, { recursive: true, force: true })
  }
}
