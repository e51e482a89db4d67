import { randomUUID } from 'node:crypto'
import { Kafka, logLevel } from 'kafkajs'
import { describe } from 'vitest'
import { runTransportContract } from '@concord/testing'
import { KafkaTransport } from './kafkaTransport.js'
import { requireKafka } from './testServer.js'

const server = await requireKafka()

describe.skipIf(!server.available)('KafkaTransport (shared contract)', () => {
  const kafka = new Kafka({ clientId: 'concord-contract', brokers: [...server.brokers], logLevel: logLevel.ERROR })
  runTransportContract('kafka', () => {
    // A fresh topic and group namespace per test; its topics are deleted afterwards.
    const prefix = `concord-contract-${randomUUID().slice(0, 8)}`
    return {
      open: async () => new KafkaTransport({ kafka, topicPrefix: prefix, groupPrefix: prefix }),
      cleanup: async () => {
        const admin = kafka.admin()
        await admin.connect()
        try {
          const topics = (await admin.listTopics()).filter((t) => t.startsWith(`${prefix}.`))
          if (topics.length > 0) await admin.deleteTopics({ topics })
        } finally {
          await admin.disconnect()
        }
      },
    }
  })
})
