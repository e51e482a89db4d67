export { KafkaTransport } from './kafkaTransport.js'
export { KAFKA_TRANSPORT_DEFAULTS, type KafkaTransportOptions } from './options.js'
export { translateError as translateKafkaError } from './errors.js'
export { MAX_INFLATED_BATCH_BYTES, registerCodecs } from './codecs.js'
