export type { ReplicaSpec, OpRecord, SpecEnv } from './spec.js'
export {
  Simulation,
  type SimulationOptions,
  type NetworkFaults,
  type SimulationStats,
  type ReplicaFailure,
  type RegionHandle,
} from './simulation.js'
export { LATENCY_PROFILES, latencyProfile, type LatencyProfile, type LatencyProfileName, type LinkLatency } from './latency.js'
export { RegionDownError, NotConvergedError } from './errors.js'
export {
  FAULT_CLASSES,
  faultSchedule,
  opSequence,
  runSchedule,
  regionNames,
  type FaultClass,
  type FaultAction,
  type FaultStep,
  type FaultSchedule,
  type FaultScheduleOptions,
  type SimulationLike,
  type LawStep,
  type OpSequence,
  type OpSequenceOptions,
} from './arbitraries.js'
export {
  MERGE_LAWS,
  checkMergeLaws,
  checkConvergence,
  checkLiveness,
  checkOracle,
  assertProperty,
  describeReplicaSuites,
  defaultRuns,
  serverRuns,
  propertyIds,
  type MergeLaw,
  type Regression,
  type SuiteOptions,
  type AssertOptions,
} from './suites.js'
export { deepEqual, show } from './equality.js'
export {
  nativeSpecs,
  pnCounterSpec,
  orSetSpec,
  mvRegisterSpec,
  lwwRegisterSpec,
  lwwMapSpec,
  orMapSpec,
  type AnyReplicaSpec,
  type CounterOp,
  type SetOp,
  type RegisterOp,
  type LwwMapOp,
  type OrMapOp,
  type OrMapField,
} from './specs/native.js'
export { runTransportContract, type TransportHarness, type TransportContractOptions } from './transportContract.js'
export { runStoreContract, type StoreHarness, type StoreContractOptions } from './storeContract.js'
export {
  SEQUENTIAL_TRACES,
  CONCURRENT_TRACES,
  tracesDir,
  tracePath,
  hasTrace,
  tracesAvailable,
  loadTrace,
  loadSequentialTrace,
  loadConcurrentTrace,
  codePointToUtf16,
  patchToUtf16,
  applyPatches,
  replayConcurrentTrace,
  syncReplicas,
  type Trace,
  type TracePatch,
  type SequentialTrace,
  type SequentialTxn,
  type ConcurrentTrace,
  type ConcurrentTxn,
} from './traces.js'
export {
  replicationSchedule,
  runReplicationSchedule,
  checkReplication,
  assertAsyncProperty,
  DEFAULT_SIM_TIMING,
  SIM_DOC_IDS,
  type ReplicationBackend,
  type SimNode,
  type SimNodeOptions,
  type ReplicationSchedule,
  crashUnderAppendInFlight,
  replicationRegressions,
  type ReplicationStep,
  type ReplicationAction,
  type PartitionShape,
  type ReplicationScheduleOptions,
  type ReplicationCheckOptions,
  type ReplicationRunReport,
} from './replicationSim.js'
export { freePort } from './freePort.js'
export { isCI } from './ci.js'
export { hasOpenssl, selfSignedCert } from './tlsCert.js'
export {
  FaultCluster,
  WatchedStore,
  FAULT_REGIONS,
  FAULT_KEYS,
  corruptEnvelopes,
  retrying,
  type FaultRegion,
  type FaultNode,
  type FaultMember,
  type FaultClusterOptions,
} from './faultCluster.js'
