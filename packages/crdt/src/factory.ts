import { ConfigError, checkKnownOptions, type Hlc, type ReplicaFactory } from '@concord/core'
import type { CausalReplica } from './base.js'
import { LwwMap } from './lwwMap.js'
import { LwwRegister } from './lwwRegister.js'
import { MvRegister } from './mvRegister.js'
import { OrMap } from './orMap.js'
import { OrSet } from './orSet.js'
import { PnCounter } from './pnCounter.js'
import { TYPE_CODES, type CausalTypeName } from './schema.js'

/** The class of each native type, by type name. */
export interface CrdtTypes {
  'lww-register': LwwRegister
  'mv-register': MvRegister
  'pn-counter': PnCounter
  'or-set': OrSet
  'lww-map': LwwMap
  'or-map': OrMap
}

/** Options for {@link crdtFactory}: shared by every replica it creates. */
export interface CrdtFactoryOptions {
  /** Physical time for each replica's own clock. @default Date.now */
  readonly now?: () => number
  /** Clock for each created replica (called with its replica id); overrides `now`. */
  readonly clock?: (replicaId: string) => Hlc
}

/** A {@link ReplicaFactory} for one native type, for replication, stores and the simulator. */
export function crdtFactory<K extends CausalTypeName>(type: K, options: CrdtFactoryOptions = {}): ReplicaFactory<unknown, CrdtTypes[K]> {
  if (typeof type !== 'string' || !Object.hasOwn(TYPE_CODES, type)) throw new ConfigError(`crdtFactory: unknown native type ${JSON.stringify(type)} (one of ${Object.keys(TYPE_CODES).join(', ')})`)
  if (typeof options !== 'object' || options === null) throw new ConfigError('crdtFactory: options must be an object')
  checkKnownOptions('crdtFactory', options, ['now', 'clock'])
  if (options.now !== undefined && typeof options.now !== 'function') throw new ConfigError('crdtFactory: now must be a function')
  if (options.clock !== undefined && typeof options.clock !== 'function') throw new ConfigError('crdtFactory: clock must be a function of the replica id')
  const make = (replicaId: string): CausalReplica<unknown> => {
    const o = options.clock !== undefined ? { replicaId, clock: options.clock(replicaId) } : options.now !== undefined ? { replicaId, now: options.now } : { replicaId }
    switch (type) {
      case 'lww-register':
        return new LwwRegister(o)
      case 'mv-register':
        return new MvRegister(o)
      case 'pn-counter':
        return new PnCounter(o)
      case 'or-set':
        return new OrSet(o)
      case 'lww-map':
        return new LwwMap(o)
      case 'or-map':
        return new OrMap(o)
      default:
        throw new TypeError(`unknown native type ${String(type)}`)
    }
  }
  return { typeName: type, create: (replicaId) => make(replicaId) as CrdtTypes[K] }
}
