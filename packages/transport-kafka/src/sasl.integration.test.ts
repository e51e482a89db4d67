/**
 * SASL passes through to kafkajs: a private broker whose client listener takes SASL/PLAIN only
 * (scripts/kafka.sh with KAFKA_SASL_PLAIN) serves the transport given kafkajs `sasl` options —
 * topic creation, append, a consumer group's poll and commit — and refuses a wrong password with
 * a ConfigError (not retriable: retrying cannot help) rather than retrying or hanging. A client
 * without SASL is refused too: the listener really requires it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { logLevel } from 'kafkajs'
import { ConfigError, isConcordError } from '@concord/core'
import { KafkaTransport } from './kafkaTransport.js'
import { PrivateKafka, appendError, canRunKafka, roundTrip } from './testServer.js'

const USER = 'concord'
const PASSWORD = 'concord-test-secret'

const available = await canRunKafka()

describe.skipIf(!available)('Kafka with SASL/PLAIN', () => {
  let server: PrivateKafka
  beforeAll(async () => {
    server = await PrivateKafka.start({ KAFKA_SASL_PLAIN: `${USER}:${PASSWORD}` })
  }, 180_000)
  afterAll(async () => {
    await server?.stop()
  }, 120_000)

  const options = (password: string): ConstructorParameters<typeof KafkaTransport>[0] => ({
    kafka: { clientId: 'concord-sasl-test', brokers: [...server.brokers], sasl: { mechanism: 'plain', username: USER, password }, retry: { retries: 2 }, logLevel: logLevel.NOTHING },
    topicPrefix: 'sasl',
    groupPrefix: 'sasl',
    fetchMaxWaitMs: 100,
  })

  it('replicates through kafkajs sasl options', async () => {
    const t = new KafkaTransport(options(PASSWORD))
    try {
      const { position, records, committed } = await roundTrip(t, new Uint8Array([1, 2, 3]))
      expect(records.map((r) => r.position)).toEqual([position])
      expect(records[0]?.bytes).toEqual(new Uint8Array([1, 2, 3]))
      expect(committed).toBe(position)
    } finally {
      await t.close()
    }
  })

  it('refuses a wrong password with a non-retriable ConfigError', async () => {
    const e = await appendError(new KafkaTransport(options('wrong')))
    expect(e).toBeInstanceOf(ConfigError)
    expect(e).toMatchObject({ retriable: false })
  })

  it('refuses a client without SASL', async () => {
    const e = await appendError(new KafkaTransport({ kafka: { clientId: 'concord-sasl-test', brokers: [...server.brokers], retry: { retries: 1 }, logLevel: logLevel.NOTHING }, topicPrefix: 'sasl' }))
    expect(isConcordError(e)).toBe(true)
  })
})
