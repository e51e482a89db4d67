/**
 * Benchmark results: one shape for every suite, printed as a table, saved as JSON and drawn as an
 * SVG bar chart so that runs can be compared by eye.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** One measured figure. `ratio` compares it with the baseline measured in the same run. */
export interface BenchRow {
  readonly name: string
  readonly metric: string
  readonly value: number
  readonly unit: string
  /** Name of the row this one is compared with (same run). */
  readonly baseline?: string
  /** value / baseline value (for times: lower is better; for throughput: higher is better). */
  readonly ratio?: number
  /** Target for the ratio, if the project has one, e.g. `<= 1.10`. */
  readonly target?: string
  readonly pass?: boolean
}

/** A suite's results plus how they were produced. */
export interface BenchReport {
  readonly suite: string
  readonly command: string
  /** The git commit of the code measured ("+modified" if packages/ or benchmarks/ had uncommitted changes); set when saved. */
  readonly commit?: string
  readonly machine: string
  readonly date: string
  readonly notes: readonly string[]
  readonly rows: readonly BenchRow[]
}

export const resultsDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'results')

/** Machine description recorded with every report. */
export async function machine(): Promise<string> {
  const os = await import('node:os')
  const cpu = os.cpus()[0]?.model ?? 'unknown cpu'
  return `${os.cpus().length} x ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`
}

function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n)
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString('en-US')
  if (Math.abs(n) >= 10) return n.toFixed(1)
  return n.toFixed(3)
}

/** Renders a report as a fixed-width table. */
export function formatTable(r: BenchReport): string {
  const head = ['name', 'metric', 'value', 'unit', 'vs baseline', 'target', '']
  const rows = r.rows.map((x) => [x.name, x.metric, fmt(x.value), x.unit, x.ratio === undefined ? '' : `${x.ratio.toFixed(3)}x ${x.baseline ?? ''}`, x.target ?? '', x.pass === undefined ? '' : x.pass ? 'ok' : 'MISSED'])
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] as string).length)))
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd()
  return [`# ${r.suite}`, line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}

function esc(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c] as string)
}

/** Horizontal bar chart (one group per metric) as a standalone SVG document. */
export function barChart(r: BenchReport): string {
  const groups = new Map<string, BenchRow[]>()
  for (const row of r.rows) {
    const key = `${row.metric} (${row.unit})`
    groups.set(key, [...(groups.get(key) ?? []), row])
  }
  const W = 760
  const labelW = 260
  const barH = 18
  let y = 40
  const parts: string[] = [`<text x="10" y="22" font-size="15" font-weight="bold">${esc(r.suite)}</text>`]
  for (const [metric, rows] of groups) {
    parts.push(`<text x="10" y="${y + 12}" font-size="12" font-weight="bold">${esc(metric)}</text>`)
    y += 20
    const max = Math.max(...rows.map((x) => x.value), 1e-12)
    for (const row of rows) {
      const w = Math.max(1, ((W - labelW - 110) * row.value) / max)
      const colour = row.pass === false ? '#d9534f' : row.baseline === undefined ? '#888888' : '#337ab7'
      parts.push(`<text x="10" y="${y + 13}" font-size="11">${esc(row.name)}</text>`)
      parts.push(`<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH - 4}" fill="${colour}"/>`)
      const label = `${fmt(row.value)}${row.ratio === undefined ? '' : ` (${row.ratio.toFixed(2)}x)`}`
      parts.push(`<text x="${(labelW + w + 6).toFixed(1)}" y="${y + 12}" font-size="11">${esc(label)}</text>`)
      y += barH
    }
    y += 10
  }
  parts.push(`<text x="10" y="${y + 12}" font-size="10" fill="#666">${esc(`${r.machine} · ${r.date} · ${r.command}`)}</text>`)
  y += 24
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>${parts.join('')}</svg>\n`
}

/** Prints a report and writes results/<suite>.json and results/<suite>.svg. */
export function saveReport(r: BenchReport): void {
  mkdirSync(resultsDir, { recursive: true })
  // The code a figure came from: the commit, "+modified" when the measured code had uncommitted changes.
  const saved = { ...r, commit: r.commit ?? sourceCommit() }
  writeFileSync(join(resultsDir, `${r.suite}.json`), JSON.stringify(saved, null, 2) + '\n')
  writeFileSync(join(resultsDir, `${r.suite}.svg`), barChart(r))
  process.stdout.write(`${formatTable(r)}\n${r.notes.map((n) => `  note: ${n}`).join('\n')}\n  wrote benchmarks/results/${r.suite}.json and .svg\n\n`)
}

/** The checkout's commit, with "+modified" when packages/ or benchmarks/src/ differ from it; "unknown" outside git. */
export function sourceCommit(): string {
  try {
    // Run from this project's root (benchmarks/results/../..), not the enclosing git checkout's:
    // the project may sit inside a larger repository, where these paths would name its folders.
    const git = (...args: string[]): string => execFileSync('git', args, { cwd: join(resultsDir, '..', '..'), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
    const head = git('rev-parse', '--short=12', 'HEAD').trim()
    const dirty = git('status', '--porcelain', '--', 'packages', 'benchmarks/src')
      .split('\n')
      .some((l) => l.trim() !== '' && !/benchmarks\/src\/_/.test(l))
    return dirty ? `${head}+modified` : head
  } catch {
    return 'unknown'
  }
}

/** Median of a list of numbers. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2
}

/** Progress line on stderr (so stdout stays a clean report). */
export function progress(msg: string): void {
  process.stderr.write(`  … ${msg}\n`)
}

/** Builds a suite's report (machine and date of this run), saves and prints it. `cli` names the suite's options (a key of {@link SUITE_FLAGS}). */
export async function finishReport(suite: string, command: string, notes: readonly string[], rows: readonly BenchRow[], cli: string): Promise<BenchReport> {
  const report: BenchReport = { suite, command: commandLine(command, cli), machine: await machine(), date: new Date().toISOString(), notes, rows }
  saveReport(report)
  return report
}

/**
 * `base` (a suite's command) with the `--name=value` options this run was given that the suite
 * `cli` (a key of {@link SUITE_FLAGS}) reads, so that a results file names the command that
 * reproduces it (`npm run bench -- transport lag --repeats=5 --samples=50` records the transport
 * suite's command with `--repeats=5` only: that command refuses `--samples`).
 */
export function commandLine(base: string, cli: string): string {
  const flags = new Set(SUITE_FLAGS[cli] ?? [])
  const own = process.argv.slice(2).filter((a) => {
    const m = /^--([a-z-]+)=/.exec(a)
    return m !== null && flags.has(m[1] as string)
  })
  return [base, ...own].join(' ')
}

/**
 * A benchmark run refused before any work: a bad command-line value, a server that does not
 * answer. The CLI prints its message alone (no stack) and exits with status 2.
 */
export class UsageError extends Error {
  override readonly name = 'UsageError'
}

/** Runs a suite's command-line entry: a {@link UsageError} is printed as one line, status 2. */
export async function cliMain(body: () => Promise<unknown>): Promise<void> {
  try {
    await body()
  } catch (e) {
    if (!(e instanceof UsageError)) throw e
    process.stderr.write(`${e.message}\n`)
    process.exit(2)
  }
}

/** One `--name=value` option of a suite: what it sets, and its default (a number the suite reads from here). */
interface SuiteOption {
  readonly help: string
  readonly default: number | string
}

const ONLY: SuiteOption = { help: 'one server only: redis or kafka', default: 'both' }

/** The `--name=value` options each suite reads, with their defaults (`npm run bench -- --help` lists them). */
export const SUITE_OPTIONS = {
  convergence: {},
  docs: {
    repeats: { help: 'runs of each variant', default: '5 for Yjs, 3 for Automerge' },
    trace: { help: 'editing trace <name>.json.gz in the traces folder', default: 'automerge-paper' },
    types: { help: 'one backend only: yjs or automerge', default: 'both' },
  },
  transport: {
    repeats: { help: 'measured runs of each variant (medians reported)', default: 3 },
    warmup: { help: 'unmeasured runs of each variant first', default: 3 },
    envelopes: { help: 'envelopes written per region and run', default: 20_000 },
    batch: { help: 'envelopes per flush / per raw append', default: 100 },
    profile: { help: 'extra CPU-profiled runs of each variant (CPU split by component)', default: 0 },
    only: ONLY,
  },
  lag: {
    samples: { help: 'measured writes per variant', default: 300 },
    only: ONLY,
  },
  engine: {
    repeats: { help: 'measured runs of each variant (medians reported)', default: 5 },
    envelopes: { help: 'envelopes written per region and run', default: 20_000 },
    batch: { help: 'envelopes per flush / per raw append', default: 100 },
  },
} as const satisfies Record<string, Record<string, SuiteOption>>

/** The `--name=value` options each suite reads. */
export const SUITE_FLAGS: Readonly<Record<string, readonly string[]>> = Object.fromEntries(Object.entries(SUITE_OPTIONS).map(([suite, options]) => [suite, Object.keys(options)]))

/** The default of a suite's numeric option, from {@link SUITE_OPTIONS}. */
export function flagDefault<S extends keyof typeof SUITE_OPTIONS>(suite: S, flag: keyof (typeof SUITE_OPTIONS)[S]): number {
  const d = (SUITE_OPTIONS[suite] as Record<string, SuiteOption>)[flag as string]?.default
  if (typeof d !== 'number') throw new Error(`benchmark option --${String(flag)} of ${suite} has no numeric default`)
  return d
}

/**
 * Checks the command line's options against what `suites` read: each must be `--name=value` with
 * a name one of them knows (a misspelt `--repeat=5` ran the suite with its defaults, and
 * `--repeats 1` took the 1 for a suite name), given once (the first was used, a second ignored).
 * @throws UsageError naming the known ones.
 */
export function checkFlags(suites: readonly string[], args: readonly string[] = process.argv.slice(2)): void {
  checkOptionForm(args)
  const known = new Set(suites.flatMap((s) => SUITE_FLAGS[s] ?? []))
  for (const a of args) {
    if (!a.startsWith('-')) continue
    const m = /^--([a-z-]+)=(.*)$/.exec(a)
    if (m === null || !known.has(m[1] as string)) {
      const names = [...known].map((k) => `--${k}=`).join(', ')
      throw new UsageError(`unknown option ${JSON.stringify(a)} for ${suites.join(', ')}: options are ${names === '' ? 'none' : names} (as --name=value)`)
    }
  }
}

/**
 * Checks what can be told before the suites are known: an option of some suite written without
 * its value (`--repeats 5`: the 5 was taken for a suite name), and an option given twice (the
 * first was used and the second, even a bad value, ignored). @throws UsageError
 */
export function checkOptionForm(args: readonly string[] = process.argv.slice(2)): void {
  const every = new Set(Object.values(SUITE_FLAGS).flat())
  const seen = new Map<string, string>()
  for (const a of args) {
    const bare = /^--([a-z-]+)$/.exec(a)
    if (bare !== null && every.has(bare[1] as string)) throw new UsageError(`option ${JSON.stringify(a)} has no value: write it as --${bare[1]}=<value> (as --name=value; a value after a space is read as a suite name)`)
    const m = /^--([a-z-]+)=/.exec(a)
    if (m === null) continue
    const earlier = seen.get(m[1] as string)
    if (earlier !== undefined) throw new UsageError(`--${m[1]} given twice (${JSON.stringify(earlier)}, ${JSON.stringify(a)}): give it once`)
    seen.set(m[1] as string, a)
  }
}

/** Usage of `npm run bench`: the suites and their options. */
export function usage(): string {
  const lines: string[] = []
  for (const [suite, options] of Object.entries(SUITE_OPTIONS)) {
    const entries = Object.entries(options as Record<string, SuiteOption>)
    lines.push(`  ${suite}${entries.length === 0 ? '  (no options)' : ''}`)
    for (const [flag, o] of entries) lines.push(`    --${`${flag}=`.padEnd(12)} ${o.help} (default ${typeof o.default === 'number' ? o.default.toLocaleString('en-US') : o.default})`)
  }
  return ['usage: npm run bench -- [suite ...] [--option=value ...]   (no suite: all of them)', 'suites and their options:', ...lines].join('\n')
}

/** The value of `--name=value` on the command line, if given. */
export function cliArg(name: string): string | undefined {
  return process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
}

/**
 * The integer value of `--name=N`, `fallback` when absent. @throws UsageError for anything but an
 * integer of at least `min` (a typo must not run the suite with NaN repeats).
 */
export function cliInt(name: string, fallback: number, min = 1): number {
  const raw = cliArg(name)
  if (raw === undefined) return fallback
  const n = Number(raw)
  if (raw.trim() === '' || !Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be an integer of at least ${min}, got ${JSON.stringify(raw)}`)
  return n
}

/** The value of `--name=value` if it is one of `choices`. @throws UsageError for any other value. */
export function cliChoice<T extends string>(name: string, choices: readonly T[]): T | undefined {
  const raw = cliArg(name)
  if (raw === undefined) return undefined
  if (!(choices as readonly string[]).includes(raw)) throw new UsageError(`--${name} must be one of ${choices.join(', ')}, got ${JSON.stringify(raw)}`)
  return raw as T
}

/** `--only=redis` or `--only=kafka` from the command line, as a suite option. @throws UsageError for another value. */
export function cliOnly(): { only?: ['redis'] | ['kafka'] } {
  const only = cliChoice('only', ['redis', 'kafka'] as const)
  return only === undefined ? {} : { only: [only] }
}

/**
 * Refuses an `envelopes` count that is not a whole number of `batch`es: the runs write whole
 * batches, so the last one would write past the count, and the clock would stop before those were
 * delivered. @throws UsageError
 */
export function checkWholeBatches(envelopes: number, batch: number): void {
  if (envelopes % batch !== 0) throw new UsageError(`--envelopes (${envelopes}) must be a multiple of --batch (${batch}): the runs write whole batches`)
}
