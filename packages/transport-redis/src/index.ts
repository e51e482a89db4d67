export { RedisTransport } from './redisTransport.js'
export { REDIS_TRANSPORT_DEFAULTS, type RedisTransportOptions } from './options.js'
export { RedisStore, REDIS_STORE_DEFAULTS, type RedisStoreOptions } from './redisStore.js'
export { translateError as translateRedisError } from './errors.js'
