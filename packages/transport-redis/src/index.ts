export { RedisTransport } from './redisTransport.js'
export { REDIS_TRANSPORT_DEFAULTS, type RedisTransportOptions } from './options.js'
export { translateError as translateRedisError } from './errors.js'
