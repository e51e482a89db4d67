import { ConfigError, checkKnownOptions, type ReplicaFactory } from '@concord/core'
import { YjsReplica, type YjsReplicaOptions, type YjsValue } from './yjsReplica.js'

/**
 * A {@link ReplicaFactory} of empty Yjs replicas sharing `options` (for example the declared
 * roots). The options are checked here, not at the first `create`: a misspelt one fails at setup.
 */
export function yjsFactory(options: Omit<YjsReplicaOptions, 'doc' | 'clientId'> = {}): ReplicaFactory<YjsValue, YjsReplica> {
  if (typeof options !== 'object' || options === null) throw new ConfigError('yjsFactory: options must be an object')
  // Each replica gets its own doc and a client id derived from its replica id: neither can be shared.
  checkKnownOptions('yjsFactory', options, ['roots', 'validation'])
  new YjsReplica('yjs-factory-check', options).close()
  return { typeName: 'yjs', create: (replicaId: string) => new YjsReplica(replicaId, options) }
}
