/**
 * Vitest reporter that ends a run with one plain line, `tests: N passed, N failed, N skipped`,
 * which CI log readers understand whatever the test runner. With CONCORD_TEST_SUMMARY set (by
 * scripts/test.mjs, which runs two vitest processes and prints one line for both) it writes the
 * counts to that file, as JSON, instead.
 */
import { writeFileSync } from 'node:fs'
import type { Reporter, TestModule } from 'vitest/node'

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>): void {
    let passed = 0
    let failed = 0
    let skipped = 0
    for (const m of testModules) {
      for (const t of m.children.allTests()) {
        const s = t.result().state
        if (s === 'passed') passed++
        else if (s === 'failed') failed++
        else skipped++
      }
      // a module that failed to load has no tests but is a failure
      if (m.state() === 'failed' && [...m.children.allTests()].length === 0) failed++
    }
    failed += unhandledErrors.length
    const file = process.env['CONCORD_TEST_SUMMARY']
    if (file !== undefined && file !== '') writeFileSync(file, JSON.stringify({ passed, failed, skipped }))
    else process.stdout.write(`\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`)
  }
}
