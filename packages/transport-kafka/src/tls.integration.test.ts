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
import { PrivateKafka, appendError, canRunKafka, roundTrip } from './testServer.js'

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
      const { position, records, committed } = await roundTrip(t, new Uint8Array([4, 5, 6]))
      expect(records.map((r) => r.position)).toEqual([position])
      expect(records[0]?.bytes).toEqual(new Uint8Array([4, 5, 6]))
      expect(committed).toBe(position)
    } finally {
      await t.close()
    }
  })

  it('refuses an untrusted broker certificate and a plaintext client with a typed error', async () => {
    for (const ssl of [{ ca: otherCa }, undefined]) expect(isConcordError(await appendError(transport(ssl)))).toBe(true)
  })
})
