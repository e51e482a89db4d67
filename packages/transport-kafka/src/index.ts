export { KafkaTransport } from './kafkaTransport.js'
export { KAFKA_TRANSPORT_DEFAULTS, type KafkaTransportOptions } from './options.js'
export { translateError as translateKafkaError } from './errors.js'
