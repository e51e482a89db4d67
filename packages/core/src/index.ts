export {
  ConcordError,
  isConcordError,
  DecodeError,
  ClockDriftError,
  ConfigError,
  TypeMismatchError,
  SignatureError,
  StaleEpochError,
  NotOwnerError,
  TransportError,
  TooLargeError,
  LockedError,
  ClosedError,
  checkKnownOptions,
  type ConcordErrorOptions,
} from './errors.js'
export {
  encodeWith,
  decodeWith,
  writeUint,
  writeInt,
  writeString,
  writeBytes,
  writeFloat,
  writeByte,
  writeJson,
  readUint,
  readInt,
  readString,
  readBytes,
  readFloat,
  readByte,
  readLength,
  readJson,
  canonicalJson,
  assertJson,
  bytesEqual,
  isWellFormed,
  MAX_FIELD_BYTES,
  MAX_COLLECTION,
  takeEncoder,
  toBuffer,
  encoderBytes,
  encoderSlabBytes,
  slabCopy,
  releaseEncoder,
  type Encoder,
  type Decoder,
  type Json,
} from './codec.js'
export { Hlc, compareHlc, encodeHlc, decodeHlc, writeHlc, readHlc, DEFAULT_MAX_DRIFT_MS, type HlcTimestamp, type HlcOptions } from './hlc.js'
export { DotSet, VersionVector, dotKey, compareDots, rangeIndex, rangeIndexIn, MAX_REPLICA_ID_BYTES, MAX_DOT_COUNTER, type Dot, type Causality } from './dots.js'
export type { Replica, ReplicaFactory, DeltaOrigin, ConflictEvent, ConflictSide, ConflictKind } from './replica.js'
export { callListeners, ownKeysCopy } from './replica.js'
export type { Transport, LogPosition, LogRecord, PollOptions, AppendOptions } from './transport.js'
export { WatchListeners, checkAppendArgs, checkPollOptions, MAX_POLL_WAIT_MS, MAX_POLL_MAX } from './transport.js'
export type { Store, StoreOp } from './store.js'
export { checkStoreBatch, checkStoreKey } from './store.js'
export { encodeEnvelope, decodeEnvelope, ENVELOPE_MAGIC, ENVELOPE_VERSION, MAX_PAYLOAD_BYTES, type Envelope, type EnvelopeKeys } from './envelope.js'
export { retry, backoffDelay, type RetryOptions } from './retry.js'
export { seededRandom, type Random } from './random.js'
export { sortInPlace, sortedStrings, compareStrings } from './sort.js'
