import type { ReplicaFactory } from '@concord/core'
import { AutomergeReplica } from './automergeReplica.js'

/** A {@link ReplicaFactory} of empty Automerge replicas (actor derived from the replica id). */
export function automergeFactory<T = Record<string, unknown>>(): ReplicaFactory<T, AutomergeReplica<T>> {
  return { typeName: 'automerge', create: (replicaId: string) => new AutomergeReplica<T>(replicaId) }
}
