// The full suites on the correct fixture type: every law, every fault class, liveness, oracle.
import type { Regression } from './index.js'
import { describeReplicaSuites } from './suites.js'
import { gCounterRunningTotalAfterPartition, gCounterSpec } from './fixtures.js'

const regressions: Regression<number>[] = [{ property: 'convergence/mixed', schedule: gCounterRunningTotalAfterPartition }]

describeReplicaSuites(gCounterSpec, { regressions })
