// The full suites on the correct fixture type: every law, every fault class, liveness, oracle.
import { describeReplicaSuites } from './suites.js'
import { gCounterSpec } from './fixtures.js'

describeReplicaSuites(gCounterSpec)
