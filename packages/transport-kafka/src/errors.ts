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

function field(e: unknown, name: string): unknown {
  return typeof e === 'object' && e !== null ? (e as Record<string, unknown>)[name] : undefined
}

/** Wraps `e` (from a kafkajs call doing `what`) into a ConcordError. */
export function translateError(e: unknown, what: string): ConcordError {
  if (isConcordError(e)) return e
  const message = `kafka transport: ${what} failed: ${e instanceof Error ? e.message : String(e)}`
  const name = e instanceof Error ? e.name : ''
  const type = field(e, 'type')
  if (name === 'KafkaJSSASLAuthenticationError' || (typeof type === 'string' && CONFIG_TYPES.has(type))) {
    return new ConfigError(message, { cause: e })
  }
  // Retries exhausted on a retriable condition (broker down, leader moving): later may succeed.
  if (name === 'KafkaJSNumberOfRetriesExceeded' || name === 'KafkaJSConnectionError' || name === 'KafkaJSRequestTimeoutError') {
    return new TransportError(message, { cause: e })
  }
  const retriable = field(e, 'retriable')
  return new TransportError(message, { cause: e, retriable: retriable === true || !name.startsWith('KafkaJS') })
}
