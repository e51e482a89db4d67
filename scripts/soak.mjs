// Long property runs: every *.prop.test.ts with CONCORD_RUNS cases per property (default 100,000).
// Usage: CONCORD_RUNS=100000 npm run soak [-- extra vitest args]
import { spawnSync } from 'node:child_process'

const runs = process.env.CONCORD_RUNS ?? '100000'
process.stdout.write(`soak: ${runs} cases per property\n`)
const extra = process.argv.slice(2)
// vitest ORs file filters: the default 'prop.test' filter would add every property file to the
// one asked for, so it applies only when no property file is named.
const files = extra.some((a) => a.includes('prop.test')) ? [] : ['prop.test']
const r = spawnSync('npx', ['vitest', 'run', '--reporter=verbose', '--reporter=./scripts/summary-reporter.ts', '--testTimeout=0', '--hookTimeout=0', ...files, ...extra], {
  stdio: 'inherit',
  env: { ...process.env, CONCORD_RUNS: runs, CONCORD_SOAK: '1' },
})
process.exit(r.status ?? 1)
