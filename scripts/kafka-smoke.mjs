// End-to-end check of the broker started by scripts/kafka.sh: creates a topic, produces three
// messages with acks=all through an idempotent producer, consumes them back in a fresh group.
// Usage: node scripts/kafka-smoke.mjs   (KAFKA_BROKERS overrides 127.0.0.1:9092). Exits non-zero on failure.
import { randomUUID } from 'node:crypto'
import { clearTimeout, setTimeout } from 'node:timers'
import { Kafka, Partitioners, logLevel } from 'kafkajs'

const brokers = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',')
const kafka = new Kafka({ clientId: 'concord-smoke', brokers, logLevel: logLevel.WARN })
const topic = `concord-smoke-${randomUUID()}`
const sent = ['one', 'two', 'three']

const admin = kafka.admin()
await admin.connect()
await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 1 }], waitForLeaders: true })

const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner })
await producer.connect()
await producer.send({ topic, acks: -1, messages: sent.map((value) => ({ key: 'k', value })) })

const consumer = kafka.consumer({ groupId: `${topic}-group` })
await consumer.connect()
await consumer.subscribe({ topics: [topic], fromBeginning: true })
const received = []
const done = new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`timed out; received ${JSON.stringify(received)}`)), 30_000)
  void consumer.run({
    eachMessage: async ({ message }) => {
      received.push(message.value?.toString() ?? '')
      if (received.length === sent.length) {
        clearTimeout(timer)
        resolve()
      }
    },
  })
})
try {
  await done
  if (JSON.stringify(received) !== JSON.stringify(sent)) throw new Error(`got ${JSON.stringify(received)}`)
  console.log(`kafka smoke ok: ${brokers.join(',')} round-tripped ${received.length} messages on ${topic}`)
} finally {
  await consumer.disconnect()
  await producer.disconnect()
  await admin.deleteTopics({ topics: [topic] }).catch(() => {})
  await admin.disconnect()
}
