// Long property runs: every *.prop.test.ts with CONCORD_RUNS cases per property (default 100,000),
// and every *.prop.integration.test.ts (the same properties on the real servers) with
// CONCORD_SERVER_RUNS cases, else its own soak count (Redis 400, Kafka 100: serverRuns in
// @concord/testing).
// Usage: CONCORD_RUNS=100000 npm run soak [-- extra vitest args]
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const runs = process.env.CONCORD_RUNS ?? '100000'
process.stdout.write(`soak: ${runs} cases per property\n`)
const extra = process.argv.slice(2)
// vitest ORs file filters: the default filters would add every property file to the one asked
// for, so they apply only when no property file is named.
const files = extra.some((a) => a.includes('prop.test') || a.includes('prop.integration.test')) ? [] : ['prop.test', 'prop.integration.test']
// A JSON report beside the others, to tell a soak that ran nothing (a -t filter that matches no
// test) from one that passed: vitest counts every test skipped and exits 0.
const dir = mkdtempSync(join(tmpdir(), 'concord-soak-'))
const report = join(dir, 'report.json')
const r = spawnSync('npx', ['vitest', 'run', '--reporter=verbose', '--reporter=./scripts/summary-reporter.ts', '--reporter=json', `--outputFile.json=${report}`, '--testTimeout=0', '--hookTimeout=0', ...files, ...extra], {
  stdio: 'inherit',
  env: { ...process.env, CONCORD_RUNS: runs, CONCORD_SOAK: '1' },
})
let ran
try {
  const json = JSON.parse(readFileSync(report, 'utf8'))
  ran = (json.numPassedTests ?? 0) + (json.numFailedTests ?? 0)
} catch {
  ran = undefined
} finally {
  rmSync(dir, { recursive: true, force: true })
}
if (r.status === 0 && ran === 0) {
  process.stderr.write('soak: no test ran (every test was skipped or filtered out): check the -t pattern and the file names\n')
  process.exit(1)
}
process.exit(r.status ?? 1)
