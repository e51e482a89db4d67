import type { ReplicaFactory } from '@concord/core'
import { YjsReplica, type YjsReplicaOptions, type YjsValue } from './yjsReplica.js'

/** A {@link ReplicaFactory} of empty Yjs replicas sharing `options` (for example the declared roots). */
export function yjsFactory(options: Omit<YjsReplicaOptions, 'doc' | 'clientId'> = {}): ReplicaFactory<YjsValue, YjsReplica> {
  return { typeName: 'yjs', create: (replicaId: string) => new YjsReplica(replicaId, options) }
}
