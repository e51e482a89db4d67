export { YjsReplica, clientIdFor, type YjsReplicaOptions, type YjsValue, type YjsRootKind, type YjsValidation } from './yjsReplica.js'
export { yjsFactory } from './factory.js'
