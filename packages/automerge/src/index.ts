export { AutomergeReplica, actorFor, encodeHeads, decodeHeads, type AutomergeReplicaOptions } from './automergeReplica.js'
export { automergeFactory } from './factory.js'
