import { execFileSync } from 'node:child_process'
import { afterEach, describe, expect, it } from 'vitest'
import { checkFlags, checkWholeBatches, cliChoice, cliInt, cliOnly, commandLine, SUITE_OPTIONS, usage } from './report.js'
import { requireServers } from './servers.js'

const argv = process.argv
const env = { ...process.env }
afterEach(() => {
  process.argv = argv
  process.env = { ...env }
})
const withArgs = (...args: string[]): void => {
  process.argv = [argv[0] as string, 'bench.ts', ...args]
}

describe('benchmark command lines', () => {
  it('take integers and choices, and refuse typos instead of running with NaN or defaults', () => {
    withArgs('--repeats=5', '--warmup=0', '--only=kafka')
    expect(cliInt('repeats', 3)).toBe(5)
    expect(cliInt('warmup', 3, 0)).toBe(0)
    expect(cliInt('envelopes', 20_000)).toBe(20_000)
    expect(cliOnly()).toEqual({ only: ['kafka'] })
    for (const bad of ['--repeats=abc', '--repeats=', '--repeats=2.5', '--repeats=0', '--repeats=1e400']) {
      withArgs(bad)
      expect(() => cliInt('repeats', 3)).toThrow(/--repeats must be an integer of at least 1/)
    }
    withArgs('--only=kafak')
    expect(() => cliOnly()).toThrow(/--only must be one of redis, kafka, got "kafak"/)
    expect(() => cliChoice('only', ['yjs', 'automerge'])).toThrow(/yjs, automerge/)
  })

  it('refuse an option no chosen suite reads, or one not written --name=value (a misspelt one ran the suite with its defaults)', () => {
    expect(() => checkFlags(['transport'], ['--repeats=5', '--only=redis'])).not.toThrow()
    expect(() => checkFlags(['transport'], ['--repeat=5'])).toThrow(/unknown option "--repeat=5" for transport/)
    expect(() => checkFlags(['lag'], ['--sample=10'])).toThrow(/--samples=/)
    expect(() => checkFlags(['engine'], ['--repeats'])).toThrow(/as --name=value/)
    expect(() => checkFlags(['convergence', 'transport'], ['--only=kafka'])).not.toThrow()
    expect(() => checkFlags(['docs'], ['--only=yjs'])).toThrow(/--types=/)
  })

  it('refuse an option given twice (the first was used and the second, even a bad value, ignored without a word)', () => {
    expect(() => checkFlags(['engine'], ['--repeats=1', '--repeats=abc'])).toThrow(/--repeats given twice \("--repeats=1", "--repeats=abc"\)/)
    expect(() => checkFlags(['transport', 'lag'], ['--only=redis', '--only=kafka'])).toThrow(/--only given twice/)
    expect(() => checkFlags(['engine'], ['--repeats=1', '--envelopes=100'])).not.toThrow()
  })

  it("record in a results file only the options its suite reads (a run of two suites recorded the other's, and the command refused them)", () => {
    withArgs('transport', 'lag', '--samples=50', '--envelopes=2000', '--only=redis')
    expect(commandLine('transport-bench.ts', 'transport')).toBe('transport-bench.ts --envelopes=2000 --only=redis')
    expect(commandLine('lag-bench.ts', 'lag')).toBe('lag-bench.ts --samples=50 --only=redis')
  })

  it('--help lists every option of every suite with its default, and the defaults are what the suites run with (it listed names only)', async () => {
    const help = usage()
    expect(help).toContain('--envelopes=   envelopes written per region and run (default 20,000)')
    expect(help).toContain('--samples=     measured writes per variant (default 300)')
    withArgs()
    const read = {
      transport: (await import('./transport-bench.js')).cliOptions(),
      lag: (await import('./lag-bench.js')).cliOptions(),
      engine: (await import('./engine-bench.js')).cliOptions(),
    }
    for (const [suite, options] of Object.entries(read)) {
      for (const [flag, value] of Object.entries(options)) {
        expect(value, `${suite} --${flag}`).toBe((SUITE_OPTIONS[suite as keyof typeof read] as Record<string, { default: unknown }>)[flag]?.default)
      }
      // Every numeric option the suite lists is one it read.
      for (const [flag, o] of Object.entries(SUITE_OPTIONS[suite as keyof typeof read])) if (typeof o.default === 'number') expect(Object.keys(options), `${suite} --${flag}`).toContain(flag)
    }
  })

  it('refuse a count of envelopes that is not whole batches (the clock stopped before the last batch was delivered)', () => {
    expect(() => checkWholeBatches(20_000, 100)).not.toThrow()
    expect(() => checkWholeBatches(150, 100)).toThrow(/--envelopes \(150\) must be a multiple of --batch \(100\)/)
  })

  it('npm run bench refuses a bad value before any suite runs (it ran the convergence and documents suites for minutes first)', () => {
    const run = (args: string[], extraEnv: Record<string, string> = {}): { status: number; stderr: string } => {
      try {
        execFileSync(process.execPath, ['--conditions=@concord/source', '--import', 'tsx', 'benchmarks/src/main.ts', ...args], { env: { ...process.env, ...extraEnv }, stdio: 'pipe', timeout: 60_000 })
        return { status: 0, stderr: '' }
      } catch (e) {
        const err = e as { status: number; stderr: Buffer }
        return { status: err.status, stderr: String(err.stderr) }
      }
    }
    const bad = run(['--only=foo'])
    expect(bad.status).toBe(2)
    expect(bad.stderr).toMatch(/--only must be one of redis, kafka, got "foo"/)
    expect(bad.stderr).not.toMatch(/\[1\/\d+\] convergence/)
    expect(run(['convergence'], { CONCORD_BENCH_OPS: 'abc' }).stderr).toMatch(/CONCORD_BENCH_OPS must be an integer/)
    expect(run(['engine', '--envelopes=150'])).toMatchObject({ status: 2 })
    const docs = run(['convergence', 'docs', '--repeats=abc'], { CONCORD_BENCH_OPS: '20', CONCORD_BENCH_REPEATS: '1' })
    expect(docs.stderr).toMatch(/--repeats must be an integer of at least 1, got "abc"/)
    expect(docs.stderr).not.toMatch(/\[1\/2\] convergence/)
    expect(run(['docs', '--trace=nope']).stderr).toMatch(/--trace: no editing trace "nope"/)
    // `--repeats 5` took the 5 for a suite name ("unknown suite(s): 5").
    const spaced = run(['engine', '--repeats', '5'])
    expect(spaced.status).toBe(2)
    expect(spaced.stderr).toMatch(/option "--repeats" has no value: write it as --repeats=<value>/)
    expect(spaced.stderr).not.toMatch(/unknown suite/)
  }, 120_000)
})

describe('benchmark servers', () => {
  it('fail at once, naming each server that does not answer and how to start it', async () => {
    process.env.REDIS_URL = 'redis://127.0.0.1:1'
    process.env.KAFKA_BROKERS = '127.0.0.1:1'
    await expect(requireServers('transport benchmark', ['redis'])).rejects.toThrow(/Redis is not reachable at redis:\/\/127\.0\.0\.1:1 .*bash scripts\/redis\.sh start/)
    const both = requireServers('transport benchmark', ['redis', 'kafka'])
    await expect(both).rejects.toThrow(/Redis is not reachable.*; Kafka is not reachable at 127\.0\.0\.1:1 .*bash scripts\/kafka\.sh start/)
  })
})
