/**
 * TLS passes through to kafkajs: a private broker whose client listener speaks TLS only
 * (scripts/kafka.sh with KAFKA_TLS_CERT/KAFKA_TLS_KEY, a certificate made for the run with openssl)
 * serves the transport given kafkajs `ssl` options with the CA, and a client that trusts another CA,
 * or speaks plaintext, is refused with a typed error — the connection is verified, not merely
 * encrypted.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { logLevel } from 'kafkajs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { isConcordError } from '@concord/core'
import { hasOpenssl, selfSignedCert } from '@concord/testing'
import { KafkaTransport } from './kafkaTransport.js'
import { PrivateKafka, canRunKafka } from './testServer.js'

const available = (await canRunKafka()) && (await hasOpenssl())

describe.skipIf(!available)('Kafka over TLS', () => {
  let dir: string
  let server: PrivateKafka
  let ca: Buffer
  let otherCa: Buffer
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'concord-kafka-tls-'))
    const own = await selfSignedCert(dir, 'broker')
    ca = await readFile(own.cert)
    otherCa = await readFile((await selfSignedCert(dir, 'other')).cert)
    server = await PrivateKafka.start({ KAFKA_TLS_CERT: own.cert, KAFKA_TLS_KEY: own.key })
  }, 180_000)
  afterAll(async () => {
    await server?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  }, 120_000)

  const transport = (ssl: { ca: Buffer } | undefined): KafkaTransport =>
    new KafkaTransport({
      kafka: { clientId: 'concord-tls-test', brokers: [...server.brokers], ...(ssl === undefined ? {} : { ssl }), retry: { retries: 1 }, logLevel: logLevel.NOTHING },
      topicPrefix: 'tls',
      groupPrefix: 'tls',
      fetchMaxWaitMs: 100,
    })

  it('replicates through kafkajs ssl options', async () => {
    const t = transport({ ca })
    try {
      const [p] = await t.append('eu', [new Uint8Array([4, 5, 6])], { keys: ['doc'] })
      let got: Awaited<ReturnType<KafkaTransport['poll']>> = []
      for (let i = 0; i < 100 && got.length === 0; i++) got = await t.poll('us/1', 'eu', { waitMs: 200 })
      expect(got.map((r) => r.position)).toEqual([p])
      expect(got[0]?.bytes).toEqual(new Uint8Array([4, 5, 6]))
      await t.commit('us/1', 'eu', p as string)
      expect(await t.committed('us/1', 'eu')).toBe(p)
    } finally {
      await t.close()
    }
  })

  it('refuses an untrusted broker certificate and a plaintext client with a typed error', async () => {
    for (const ssl of [{ ca: otherCa }, undefined]) {
      const t = transport(ssl)
      try {
        const e = await t.append('eu', [new Uint8Array([1])]).then(
          () => undefined,
          (err: unknown) => err,
        )
        expect(isConcordError(e)).toBe(true)
      } finally {
        await t.close()
      }
    }
  })
})
