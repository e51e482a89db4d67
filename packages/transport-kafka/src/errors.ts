/**
 * Translates kafkajs errors into Concord errors. kafkajs marks its errors `retriable`; broker
 * errors carry a `type` naming the protocol error code.
 */
import { ConfigError, TransportError, isConcordError, type ConcordError } from '@concord/core'

// Protocol errors that mean the configuration or the credentials are wrong: retrying cannot help.
const CONFIG_TYPES = new Set([
  'SASL_AUTHENTICATION_FAILED',
  'ILLEGAL_SASL_STATE',
  'UNSUPPORTED_SASL_MECHANISM',
  'TOPIC_AUTHORIZATION_FAILED',
  'GROUP_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
  'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
  'INVALID_TOPIC_EXCEPTION',
  'INVALID_REPLICATION_FACTOR',
  'INVALID_CONFIG',
  'POLICY_VIOLATION',
])

// kafkajs errors that a later attempt may not meet: the broker is down, slow, or still loading
// after a restart (no group coordinator yet; kafkajs itself marks that one non-retriable).
const TRANSIENT_NAMES = new Set(['KafkaJSNumberOfRetriesExceeded', 'KafkaJSConnectionError', 'KafkaJSRequestTimeoutError', 'KafkaJSGroupCoordinatorNotFound'])

function field(e: unknown, name: string): unknown {
  return typeof e === 'object' && e !== null ? (e as Record<string, unknown>)[name] : undefined
}

/** Wraps `e` (from a kafkajs call doing `what`) into a ConcordError. */
export function translateError(e: unknown, what: string): ConcordError {
  if (isConcordError(e)) return e
  const message = `kafka transport: ${what} failed: ${e instanceof Error ? e.message : String(e)}`
  const name = e instanceof Error ? e.name : ''
  // Down the cause chain too: kafkajs's retrier wraps what it gives up on (a fetch refused for
  // lack of topic Read rights, a SASL failure while reconnecting) in a KafkaJSNonRetriableError.
  for (let c: unknown = e, depth = 0; depth < 8 && typeof c === 'object' && c !== null; c = field(c, 'cause'), depth++) {
    const type = field(c, 'type')
    if ((c instanceof Error && c.name === 'KafkaJSSASLAuthenticationError') || (typeof type === 'string' && CONFIG_TYPES.has(type))) {
      return new ConfigError(message, { cause: e })
    }
  }
  // Retries exhausted on a retriable condition (broker down, leader moving): later may succeed.
  // Nested kafkajs retriers wrap an exhausted inner retry as KafkaJSNonRetriableError, whose
  // cause is the retriable error (connection refused, coordinator not found while a restarted
  // broker loads): look down the cause chain.
  for (let c: unknown = e, depth = 0; c instanceof Error && depth < 8; c = c.cause, depth++) {
    if (TRANSIENT_NAMES.has(c.name)) {
      return new TransportError(message, { cause: e })
    }
    if (depth > 0 && field(c, 'retriable') === true) return new TransportError(message, { cause: e })
  }
  const retriable = field(e, 'retriable')
  return new TransportError(message, { cause: e, retriable: retriable === true || !name.startsWith('KafkaJS') })
}

// Broker errors that end an idempotent producer's session: its sequence numbers or id no longer
// match the broker's, and kafkajs cannot go on with it (KafkaTransport.append starts a new one).
const PRODUCER_STATE_TYPES = new Set(['OUT_OF_ORDER_SEQUENCE_NUMBER', 'UNKNOWN_PRODUCER_ID', 'INVALID_PRODUCER_EPOCH'])

/** Whether `e`, or an error it was caused by, is one of the producer-state errors above. */
export function isProducerStateError(e: unknown): boolean {
  return hasType(e, PRODUCER_STATE_TYPES)
}

const UNKNOWN_TOPIC_TYPES = new Set(['UNKNOWN_TOPIC_OR_PARTITION'])

/** Whether `e`, or an error it was caused by, says the topic does not exist (deleted, or not yet known). */
export function isUnknownTopicError(e: unknown): boolean {
  return hasType(e, UNKNOWN_TOPIC_TYPES)
}

function hasType(e: unknown, types: ReadonlySet<string>): boolean {
  for (let c: unknown = e, depth = 0; c instanceof Error && depth < 8; c = c.cause, depth++) {
    const type = field(c, 'type')
    if (typeof type === 'string' && types.has(type)) return true
  }
  return false
}
