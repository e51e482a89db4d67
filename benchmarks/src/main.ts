/**
 * The benchmark suite: `npm run bench` runs every suite, `npm run bench -- convergence docs`
 * runs some, `npm run bench -- transport lag --only=redis` those two on Redis only. Each suite
 * prints a table, shows progress on stderr, and writes
 * benchmarks/results/<suite>.json and an SVG chart beside it.
 */
import { checkFlags, checkOptionForm, saveReport, usage, UsageError, type BenchReport } from './report.js'
import { requireServers } from './servers.js'

const SUITES: Record<string, () => Promise<BenchReport>> = {
  // Every suite saves and prints its report (the convergence suite's run() leaves that to its caller).
  convergence: async () => {
    const report = await (await import('./convergence-bench.js')).run()
    saveReport(report)
    return report
  },
  // Saved and printed by its CLI entry (runDocsBench alone only returns the report).
  docs: async () => (await import('./docs-bench.js')).main(),
  // `--only=redis` or `--only=kafka` narrows the two suites that need servers.
  // Each suite reads its own options (`--repeats=5`, `--only=kafka`, ...) as when run alone.
  transport: async () => {
    const m = await import('./transport-bench.js')
    return m.run(m.cliOptions())
  },
  lag: async () => {
    const m = await import('./lag-bench.js')
    return m.run(m.cliOptions())
  },
  engine: async () => {
    const m = await import('./engine-bench.js')
    return m.run(m.cliOptions())
  },
}

/**
 * What each suite refuses, checked for every chosen suite before the first one runs: option values
 * and the servers it needs (a bad `--only` or a Redis that is down was found only after the
 * convergence and documents suites had run for minutes).
 */
const PREFLIGHT: Record<string, () => Promise<void>> = {
  convergence: async () => {
    ;(await import('./convergence-bench.js')).settings()
  },
  docs: async () => {
    ;(await import('./docs-bench.js')).checkCli()
  },
  transport: async () => {
    const o = (await import('./transport-bench.js')).cliOptions()
    await requireServers('transport benchmark', o.only ?? ['redis', 'kafka'])
  },
  lag: async () => {
    const o = (await import('./lag-bench.js')).cliOptions()
    await requireServers('lag benchmark', o.only ?? ['redis', 'kafka'])
  },
  engine: async () => {
    ;(await import('./engine-bench.js')).cliOptions()
  },
}

const args = process.argv.slice(2)
if (args.includes('--help') || args.includes('-h')) {
  process.stdout.write(`${usage()}\n`)
  process.exit(0)
}
try {
  // The options' form first, against every suite's: `--repeats 5` is an option without its value,
  // not a suite named "5".
  checkOptionForm(args)
} catch (e) {
  if (!(e instanceof UsageError)) throw e
  process.stderr.write(`${e.message}\n`)
  process.exit(2)
}
const wanted = args.filter((a) => !a.startsWith('-'))
const unknown = wanted.filter((w) => !(w in SUITES))
if (unknown.length > 0) {
  process.stderr.write(`unknown suite(s): ${unknown.join(', ')}; known: ${Object.keys(SUITES).join(', ')}\n${usage()}\n`)
  process.exit(2)
}
const names = wanted.length > 0 ? wanted : Object.keys(SUITES)
try {
  checkFlags(names, args)
  for (const name of names) await (PREFLIGHT[name] as () => Promise<void>)()
} catch (e) {
  if (!(e instanceof UsageError)) throw e
  process.stderr.write(`${e.message}\n`)
  process.exit(2)
}
let failed = 0
for (const [i, name] of names.entries()) {
  process.stderr.write(`[${i + 1}/${names.length}] ${name}\n`)
  try {
    await (SUITES[name] as () => Promise<BenchReport>)()
  } catch (e) {
    failed++
    // A refused run (bad argument, server down) is said in one line; anything else with its stack.
    const said = e instanceof UsageError ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e)
    process.stderr.write(`suite ${name} failed: ${said}\n`)
  }
}
process.exit(failed === 0 ? 0 : 1)
