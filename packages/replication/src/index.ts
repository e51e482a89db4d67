export { MemoryTransport, MemoryBroker, type MemoryTransportOptions, type MemoryTransportFaults } from './memoryTransport.js'
export { MemoryStore } from './memoryStore.js'
export { RoutedTransport, type RoutedTransportOptions } from './routedTransport.js'
export { FileStore, type FileStoreOptions } from './fileStore.js'
export { RegionNode, type PeerMetrics, type NodeMetrics, type PumpResult } from './regionNode.js'
export { type RegionNodeOptions, type BatchOptions, type AnyReplicaFactory } from './options.js'
export {
  type DeadLetter,
  type Heartbeat,
  type Registration,
  type RepairRequest,
  type RepairResponse,
  type RepairDoc,
  HEARTBEAT,
  REGISTER,
  REPAIR_REQUEST,
  REPAIR_RESPONSE,
  ANY_RESPONDER,
  encodeHeartbeat,
  decodeHeartbeat,
  encodeRegistration,
  decodeRegistration,
  encodeRepairRequest,
  decodeRepairRequest,
  encodeRepairResponse,
  decodeRepairResponse,
} from './wire.js'
