// Runs vitest in a child process with a JSON report beside the other reporters, and reads the
// report back: the scripts that need to know what ran (soak.mjs: a filter that matched nothing;
// mutation-audit.mjs: which tests a mutation broke) share this instead of each spawning vitest
// and parsing its report file.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/**
 * `npx vitest run ...args --reporter=json` with `spawnOptions` (stdio, env, timeout, ...).
 * Returns the child's `status`, `signal` and `stderr` (when piped), and `report`: the parsed JSON
 * report, or undefined when vitest wrote none (it crashed, was killed, or its timeout passed).
 * The report's temporary directory is removed either way.
 */
export function runVitestJson(args, spawnOptions = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'concord-vitest-'))
  const file = join(dir, 'report.json')
  try {
    const r = spawnSync('npx', ['vitest', 'run', ...args, '--reporter=json', `--outputFile.json=${file}`], spawnOptions)
    let report
    try {
      report = JSON.parse(readFileSync(file, 'utf8'))
    } catch {
      report = undefined
    }
    return { status: r.status, signal: r.signal, stderr: r.stderr, report }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
