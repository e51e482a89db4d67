// Long property runs: every *.prop.test.ts with CONCORD_RUNS cases per property (default 100,000),
// and every *.prop.integration.test.ts (the same properties on the real servers) with
// CONCORD_SERVER_RUNS cases, else its own soak count (Redis 400, Kafka 100: serverRuns in
// @concord/testing).
// Usage: CONCORD_RUNS=100000 npm run soak [-- extra vitest args]
import { runVitestJson } from './vitest-json.mjs'

const runs = process.env.CONCORD_RUNS ?? '100000'
process.stdout.write(`soak: ${runs} cases per property\n`)
const extra = process.argv.slice(2)
// vitest ORs file filters: the default filters would add every property file to the one asked
// for, so they apply only when no property file is named.
const files = extra.some((a) => a.includes('prop.test') || a.includes('prop.integration.test')) ? [] : ['prop.test', 'prop.integration.test']
// A JSON report beside the others, to tell a soak that ran nothing (a -t filter that matches no
// test) from one that passed: vitest counts every test skipped and exits 0.
const r = runVitestJson(['--reporter=verbose', '--reporter=./scripts/summary-reporter.ts', '--testTimeout=0', '--hookTimeout=0', ...files, ...extra], {
  stdio: 'inherit',
  env: { ...process.env, CONCORD_RUNS: runs, CONCORD_SOAK: '1' },
})
const ran = r.report === undefined ? undefined : (r.report.numPassedTests ?? 0) + (r.report.numFailedTests ?? 0)
if (r.status === 0 && ran === 0) {
  process.stderr.write('soak: no test ran (every test was skipped or filtered out): check the -t pattern and the file names\n')
  process.exit(1)
}
process.exit(r.status ?? 1)
