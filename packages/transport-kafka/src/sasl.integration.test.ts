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
import { PrivateKafka, canRunKafka } from './testServer.js'

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
      const [p] = await t.append('eu', [new Uint8Array([1, 2, 3])], { keys: ['doc'] })
      let got: Awaited<ReturnType<KafkaTransport['poll']>> = []
      for (let i = 0; i < 100 && got.length === 0; i++) got = await t.poll('us/1', 'eu', { waitMs: 200 })
      expect(got.map((r) => r.position)).toEqual([p])
      expect(got[0]?.bytes).toEqual(new Uint8Array([1, 2, 3]))
      await t.commit('us/1', 'eu', p as string)
      expect(await t.committed('us/1', 'eu')).toBe(p)
    } finally {
      await t.close()
    }
  })

  it('refuses a wrong password with a non-retriable ConfigError', async () => {
    const t = new KafkaTransport(options('wrong'))
    try {
      const append = t.append('eu', [new Uint8Array([1])])
      await expect(append).rejects.toBeInstanceOf(ConfigError)
      await expect(append).rejects.toMatchObject({ retriable: false })
    } finally {
      await t.close()
    }
  })

  it('refuses a client without SASL', async () => {
    const t = new KafkaTransport({ kafka: { clientId: 'concord-sasl-test', brokers: [...server.brokers], retry: { retries: 1 }, logLevel: logLevel.NOTHING }, topicPrefix: 'sasl' })
    try {
      const e = await t.append('eu', [new Uint8Array([1])]).then(
        () => undefined,
        (err: unknown) => err,
      )
      expect(isConcordError(e)).toBe(true)
    } finally {
      await t.close()
    }
  })
})
