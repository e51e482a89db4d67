// Long property runs: every *.prop.test.ts with CONCORD_RUNS cases per property (default 100,000).
// Usage: CONCORD_RUNS=100000 npm run soak [-- extra vitest args]
import { spawnSync } from 'node:child_process'

const runs = process.env.CONCORD_RUNS ?? '100000'
process.stdout.write(`soak: ${runs} cases per property\n`)
const r = spawnSync('npx', ['vitest', 'run', '--reporter=verbose', '--reporter=./scripts/summary-reporter.ts', '--testTimeout=0', '--hookTimeout=0', 'prop.test', ...process.argv.slice(2)], {
  stdio: 'inherit',
  env: { ...process.env, CONCORD_RUNS: runs, CONCORD_SOAK: '1' },
})
process.exit(r.status ?? 1)
