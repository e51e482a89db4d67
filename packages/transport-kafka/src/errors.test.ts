import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { KafkaJSConnectionError, KafkaJSGroupCoordinatorNotFound, KafkaJSNonRetriableError, KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError } from 'kafkajs'
import { ConfigError, DecodeError, TransportError } from '@concord/core'
import { translateError } from './errors.js'
import { resolveOptions, topicName } from './options.js'
import { KafkaTransport } from './kafkaTransport.js'

// kafkajs's typings give these constructors other parameters than its runtime (src/errors.js) takes:
// the errors are built here as kafkajs builds them itself.
type ProtocolFields = { message: string; type: string; code: number; retriable: boolean }
const protocolError = (fields: ProtocolFields): KafkaJSProtocolError => new (KafkaJSProtocolError as unknown as new (e: ProtocolFields) => KafkaJSProtocolError)(fields)
const nonRetriable = (e: Error | string, meta?: { cause: Error }): KafkaJSNonRetriableError =>
  new (KafkaJSNonRetriableError as unknown as new (e: Error | string, meta?: { cause: Error }) => KafkaJSNonRetriableError)(e, meta)
const coordinatorNotFound = (message: string): KafkaJSGroupCoordinatorNotFound => new (KafkaJSGroupCoordinatorNotFound as unknown as new (m: string) => KafkaJSGroupCoordinatorNotFound)(message)

describe('translateError', () => {
  it('maps authentication and authorization failures to ConfigError', () => {
    const denied = protocolError({ message: 'denied', type: 'TOPIC_AUTHORIZATION_FAILED', code: 29, retriable: false })
    expect(translateError(denied, 'append')).toBeInstanceOf(ConfigError)
  })

  it('maps connection trouble and exhausted retries to retriable TransportError', () => {
    for (const e of [new KafkaJSConnectionError('refused'), new KafkaJSNumberOfRetriesExceeded(new Error('x'), { retryCount: 5, retryTime: 100 })]) {
      const t = translateError(e, 'poll')
      expect(t).toBeInstanceOf(TransportError)
      expect(t.retriable).toBe(true)
      expect(t.cause).toBe(e)
    }
    const leader = protocolError({ message: 'moving', type: 'NOT_LEADER_FOR_PARTITION', code: 6, retriable: true })
    expect(translateError(leader, 'append').retriable).toBe(true)
    expect(translateError(new KafkaJSNonRetriableError('bad'), 'append').retriable).toBe(false)
    // What an outer kafkajs retrier throws when an inner one gave up on a refused connection.
    const refused = new KafkaJSConnectionError('connect ECONNREFUSED')
    const wrapped = nonRetriable(new KafkaJSNumberOfRetriesExceeded(refused, { retryCount: 5, retryTime: 100 }), { cause: refused })
    expect(translateError(wrapped, 'append').retriable).toBe(true)
    // A restarted broker has no group coordinator until it has loaded its offsets.
    const notFound = coordinatorNotFound('Failed to find group coordinator')
    const loading = nonRetriable(notFound, { cause: notFound })
    expect(translateError(loading, 'poll').retriable).toBe(true)
  })

  it('finds a refusal down the cause chain: what the kafkajs retrier gave up on is still a ConfigError', () => {
    const denied = protocolError({ message: 'denied', type: 'TOPIC_AUTHORIZATION_FAILED', code: 29, retriable: false })
    expect(translateError(nonRetriable(denied, { cause: denied }), 'poll')).toBeInstanceOf(ConfigError)
    const sasl = Object.assign(new Error('SASL PLAIN authentication failed'), { name: 'KafkaJSSASLAuthenticationError' })
    expect(translateError(nonRetriable(sasl, { cause: sasl }), 'poll')).toBeInstanceOf(ConfigError)
  })
})

describe('KafkaTransport options', () => {
  it('applies defaults: unlimited retention, broker replication factor', () => {
    const o = resolveOptions({ topicConfig: { 'min.insync.replicas': '2' } })
    expect(o.topicConfig).toEqual({ 'retention.ms': '-1', 'retention.bytes': '-1', 'min.insync.replicas': '2' })
    expect(o.replicationFactor).toBe(-1)
  })

  it('rejects bad options and origins that cannot name a topic', () => {
    expect(() => resolveOptions({ topicPrefix: 'a b' })).toThrow(ConfigError)
    // No room left for an origin in a 249-character topic name.
    expect(() => resolveOptions({ topicPrefix: 'x'.repeat(248) })).toThrow(ConfigError)
    expect(topicName('x'.repeat(247), 'e')).toHaveLength(249)
    expect(() => resolveOptions({ replicationFactor: 0 })).toThrow(ConfigError)
    expect(() => resolveOptions({ bufferRecords: 0 })).toThrow(ConfigError)
    expect(() => resolveOptions({ topicPrefx: 'x' } as never)).toThrow(/unknown option "topicPrefx" \(did you mean "topicPrefix"\?\)/)
    expect(() => resolveOptions({ maxBatchBytes: 100 })).toThrow(/maxBatchBytes/)
    // Found by a review: each was accepted, and failed later (or, brokers without a port, retried for ever).
    for (const bad of [
      { groupPrefix: 7 },
      { topicConfig: 'retention.ms=1' },
      { topicConfig: { 'cleanup.policy': 'compact' } },
      { kafka: { brokers: ['127.0.0.1'] } },
      { kafka: { brokers: '127.0.0.1:9092' } },
      { kafka: { brokers: [] } },
    ]) {
      expect(() => resolveOptions(bad as never), JSON.stringify(bad)).toThrow(ConfigError)
    }
    expect(resolveOptions({ kafka: { brokers: ['127.0.0.1:9092', '[::1]:9093'] } }).groupPrefix).toBe('concord')
    expect(topicName('concord', 'eu-west-1')).toBe('concord.eu-west-1')
    expect(() => topicName('concord', 'eu/west')).toThrow(ConfigError)
    expect(() => topicName('concord', '')).toThrow(ConfigError)
  })

  it('orders offsets numerically', () => {
    const t = new KafkaTransport()
    expect(t.comparePositions('9', '10')).toBe(-1)
    expect(t.comparePositions('10', '10')).toBe(0)
    expect(() => t.comparePositions('01', '1')).toThrow()
    expect(() => t.comparePositions('1', '-1')).toThrow()
    expect(() => t.comparePositions('1', '')).toThrow()
    // Compared as canonical decimals (length, then digits): the same order as the numbers.
    expect(t.comparePositions('99', '100')).toBe(-1)
    expect(t.comparePositions('9223372036854775806', '999999999999999999')).toBe(1)
    // Past the last offset a commit can store (the next one must fit a signed 64-bit number).
    expect(() => t.comparePositions('9223372036854775807', '1')).toThrow(DecodeError)
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 63n - 2n }), fc.bigInt({ min: 0n, max: 2n ** 63n - 2n }), (a, b) => {
        expect(t.comparePositions(String(a), String(b))).toBe(a < b ? -1 : a > b ? 1 : 0)
      }),
    )
  })
})

describe('translateError and errors of no kafkajs class (review finding: options kafkajs could not use failed every call as retriable, for ever)', () => {
  it('a TypeError, RangeError or URIError is not retriable; a socket error still is', () => {
    for (const e of [new TypeError('The "string" argument must be of type string'), new RangeError('The value of "value" is out of range'), new URIError('URI malformed')]) {
      expect(translateError(e, 'append').retriable).toBe(false)
    }
    expect(translateError(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'append').retriable).toBe(true)
  })

  it('a replication factor past Kafka\'s int16 is refused up front', () => {
    expect(() => resolveOptions({ replicationFactor: 40_000 })).toThrow(/replicationFactor must be -1 or an integer from 1 to 32767/)
  })
})
