/**
 * TLS passes through to ioredis: a private redis-server listening with TLS only on one port (a
 * certificate made for the run with openssl) serves the transport and the store given ioredis
 * `tls` options with the CA, and a client that trusts another CA gets a rejected call — the
 * connection is verified, not merely encrypted.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { isConcordError } from '@concord/core'
import { freePort, hasOpenssl, selfSignedCert } from '@concord/testing'
import { RedisStore } from './redisStore.js'
import { RedisTransport } from './redisTransport.js'
import { PrivateRedis, hasRedisServer } from './testServer.js'

const available = (await hasRedisServer()) && (await hasOpenssl())

describe.skipIf(!available)('Redis over TLS', () => {
  let dir: string
  let server: PrivateRedis
  let tlsPort: number
  let ca: Buffer
  let otherCa: Buffer
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'concord-redis-tls-'))
    const own = await selfSignedCert(dir, 'server')
    const other = await selfSignedCert(dir, 'other')
    ca = await readFile(own.cert)
    otherCa = await readFile(other.cert)
    tlsPort = await freePort()
    // The plain port stays for the helper's own readiness ping and shutdown; the tests use the TLS one.
    server = await PrivateRedis.start(['--tls-port', String(tlsPort), '--tls-cert-file', own.cert, '--tls-key-file', own.key, '--tls-ca-cert-file', own.cert, '--tls-auth-clients', 'no'])
  })
  afterAll(async () => {
    await server?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  it('replicates and stores through ioredis tls options', async () => {
    const redis = { host: '127.0.0.1', port: tlsPort, tls: { ca } }
    const t = new RedisTransport({ redis, keyPrefix: '{tls}' })
    const [p] = await t.append('eu', [new Uint8Array([1, 2, 3])])
    const got = await t.poll('us', 'eu')
    expect(got.map((r) => r.position)).toContain(p)
    expect(got.find((r) => r.position === p)?.bytes).toEqual(new Uint8Array([1, 2, 3]))
    await t.close()
    const store = new RedisStore({ redis, keyPrefix: '{tls-store}' })
    await store.put('k', new Uint8Array([9]))
    expect(await store.get('k')).toEqual(new Uint8Array([9]))
    await store.close()
  })

  it('rejects a server whose certificate the client does not trust, with a typed error', async () => {
    // With ioredis's own reconnect strategy too: the call fails once its retries are spent.
    for (const retry of [{ retryStrategy: () => null }, {}]) {
      const t = new RedisTransport({ redis: { host: '127.0.0.1', port: tlsPort, tls: { ca: otherCa }, ...retry }, keyPrefix: '{tls}' })
      const e = await t.append('eu', [new Uint8Array([1])]).then(
        () => undefined,
        (err: unknown) => err,
      )
      expect(isConcordError(e)).toBe(true)
      expect(String((e as Error).message)).toMatch(/append/)
      await t.close()
    }
  })
})
