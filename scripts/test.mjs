// `npm test`: every suite, in two vitest processes side by side — the Kafka integration files
// (vitest project `kafka`, one file at a time: they share one broker) beside everything else
// (project `concord`). The Kafka files mostly wait on the broker (restarts, group joins, session
// timeouts), so run after the rest, as `npx vitest run` does, they left a core idle for about four
// minutes. The `concord` process runs at a lower CPU priority (nice 10): the broker and the Kafka
// files, whose tests wait on timeouts, get the CPU first, the rest takes what they leave.
//
// Each line of output is prefixed with its project; a failing file's report comes from the
// process that ran it. The run ends with one plain line, `tests: N passed, N failed, N skipped`,
// for both processes together, and exits 0 only when both passed.
//
// With arguments (`npm test -- packages/core`, `npm test -- -t name`) it is plain
// `vitest run <arguments>`, one process, as before.
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { setPriority, tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

const vitest = join(createRequire(import.meta.url).resolve('vitest/package.json'), '..', 'vitest.mjs')
const args = process.argv.slice(2)

if (args.length > 0) {
  const child = spawn(process.execPath, [vitest, 'run', ...args], { stdio: 'inherit' })
  forwardSignals([child])
  child.on('exit', (code) => process.exit(code ?? 1))
} else {
  await both()
}

async function both() {
  const dir = mkdtempSync(join(tmpdir(), 'concord-test-'))
  const color = process.stdout.isTTY === true && process.env.NO_COLOR === undefined ? { FORCE_COLOR: '1' } : {}
  const lanes = [
    { project: 'kafka', tag: '[kafka]  ', nice: 0 },
    { project: 'concord', tag: '[concord]', nice: 10 },
  ].map((lane) => {
    const summary = join(dir, `${lane.project}.json`)
    const child = spawn(process.execPath, [vitest, 'run', '--project', lane.project], {
      stdio: ['ignore', 'pipe', 'pipe'],
      // The summary reporter writes its counts there instead of printing them (see summary-reporter.ts).
      env: { ...process.env, ...color, CONCORD_TEST_SUMMARY: summary },
    })
    if (lane.nice !== 0 && child.pid !== undefined) {
      // Set before vitest forks its workers (they inherit it): node takes far longer to start.
      try {
        setPriority(child.pid, lane.nice)
      } catch (e) {
        process.stderr.write(`test.mjs: could not lower the priority of the ${lane.project} tests (${e instanceof Error ? e.message : String(e)}); running them at the same priority\n`)
      }
    }
    prefix(child.stdout, process.stdout, lane.tag)
    prefix(child.stderr, process.stderr, lane.tag)
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
    return { ...lane, child, summary, exited }
  })
  forwardSignals(lanes.map((l) => l.child))
  const total = { passed: 0, failed: 0, skipped: 0 }
  let ok = true
  for (const lane of lanes) {
    const { code, signal } = await lane.exited
    let counts
    try {
      counts = JSON.parse(readFileSync(lane.summary, 'utf8'))
    } catch {
      // No summary: vitest did not get to the end of its run (it crashed, or was killed).
      counts = undefined
    }
    if (counts === undefined) {
      process.stderr.write(`test.mjs: the ${lane.project} tests ended without a summary (exit code ${code}, signal ${signal})\n`)
      total.failed++
    } else {
      total.passed += counts.passed
      total.failed += counts.failed
      total.skipped += counts.skipped
    }
    if (code !== 0) ok = false
  }
  rmSync(dir, { recursive: true, force: true })
  process.stdout.write(`\ntests: ${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped\n`)
  process.exit(ok && total.failed === 0 ? 0 : 1)
}

/** Copies `from` to `to` line by line, each line after `tag`. */
function prefix(from, to, tag) {
  createInterface({ input: from, crlfDelay: Infinity }).on('line', (line) => to.write(`${tag} ${line}\n`))
}

/** Ctrl-C reaches the children through the terminal; a runner's SIGTERM is passed on. */
function forwardSignals(children) {
  for (const sig of ['SIGTERM', 'SIGHUP']) process.on(sig, () => children.forEach((c) => c.kill(sig)))
}
