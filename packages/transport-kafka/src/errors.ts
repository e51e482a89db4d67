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
  // sessionTimeoutMs outside the broker's group.min/max.session.timeout.ms.
  'INVALID_SESSION_TIMEOUT',
])

// kafkajs errors that a later attempt may not meet: the broker is down, slow, or still loading
// after a restart (no group coordinator yet; kafkajs itself marks that one non-retriable).
const TRANSIENT_NAMES = new Set(['KafkaJSNumberOfRetriesExceeded', 'KafkaJSConnectionError', 'KafkaJSRequestTimeoutError', 'KafkaJSGroupCoordinatorNotFound'])

function field(e: unknown, name: string): unknown {
  return typeof e === 'object' && e !== null ? (e as Record<string, unknown>)[name] : undefined
}

/**
 * `e` and what it holds: its cause chain, and the errors of an aggregate (kafkajs's createTopics
 * throws a KafkaJSAggregateError whose `errors` say why each topic was refused). Bounded.
 */
function errorTree(e: unknown): unknown[] {
  const out: unknown[] = []
  const todo: Array<{ err: unknown; depth: number }> = [{ err: e, depth: 0 }]
  while (todo.length > 0 && out.length < 64) {
    const { err, depth } = todo.shift() as { err: unknown; depth: number }
    if (typeof err !== 'object' || err === null || depth >= 8 || out.includes(err)) continue
    out.push(err)
    const cause = field(err, 'cause')
    if (cause !== undefined) todo.push({ err: cause, depth: depth + 1 })
    const errors = field(err, 'errors')
    if (Array.isArray(errors)) for (const inner of errors.slice(0, 16)) todo.push({ err: inner, depth: depth + 1 })
  }
  return out
}

/** The messages of an aggregate's errors, with their protocol error types: what its own message leaves out. */
function innerMessages(e: unknown): string {
  const errors = field(e, 'errors')
  if (!Array.isArray(errors) || errors.length === 0) return ''
  const parts = errors.slice(0, 4).map((x) => {
    const type = field(x, 'type')
    return `${x instanceof Error ? x.message : String(x)}${typeof type === 'string' ? ` (${type})` : ''}`
  })
  return `: ${parts.join('; ')}${errors.length > 4 ? `; and ${errors.length - 4} more` : ''}`
}

/** Wraps `e` (from a kafkajs call doing `what`) into a ConcordError. */
export function translateError(e: unknown, what: string): ConcordError {
  if (isConcordError(e)) return e
  const message = `kafka transport: ${what} failed: ${e instanceof Error ? e.message : String(e)}${innerMessages(e)}`
  const name = e instanceof Error ? e.name : ''
  // Down the cause chain too: kafkajs's retrier wraps what it gives up on (a fetch refused for
  // lack of topic Read rights, a SASL failure while reconnecting) in a KafkaJSNonRetriableError;
  // and into aggregates (a topic creation refused for its settings).
  for (const c of errorTree(e)) {
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
  // Errors of no kafkajs class are retriable (a socket's ECONNRESET...), but not a TypeError,
  // RangeError or URIError: options kafkajs could not use (a replication factor past its int16, a
  // clientId that is no string, a logger that throws) failed every call as retriable, for ever
  // (review finding).
  const programming = e instanceof TypeError || e instanceof RangeError || e instanceof URIError || e instanceof SyntaxError
  return new TransportError(message, { cause: e, retriable: retriable === true || (!name.startsWith('KafkaJS') && !programming) })
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
  for (const c of errorTree(e)) {
    const type = field(c, 'type')
    if (typeof type === 'string' && types.has(type)) return true
  }
  return false
}

const TOO_LARGE_TYPES = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE'])

/** Whether `e`, or an error it holds, says a produce request was past the topic's or broker's size limit. */
export function isTooLargeError(e: unknown): boolean {
  return hasType(e, TOO_LARGE_TYPES)
}

const AUTHORIZATION_TYPES = new Set(['TOPIC_AUTHORIZATION_FAILED', 'CLUSTER_AUTHORIZATION_FAILED'])

/** Whether `e`, or an error it holds, says the client lacks the right (an ACL) for what it asked. */
export function isAuthorizationError(e: unknown): boolean {
  return hasType(e, AUTHORIZATION_TYPES)
}
