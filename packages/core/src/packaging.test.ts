// The packages as another project gets them: `npm run pack-packages` builds and packs every
// package (scripts/pack.mjs); a new project outside the repository installs the tarballs from npm
// (its cache first), type-checks an application against the shipped declarations, runs it with
// plain Node (the compiled dist/, no tsx, no source condition), and runs a property test of its own
// with the testing kit under its own vitest. Catches what the in-repo tests cannot see: a file left
// out of a tarball, a dependency not declared, a type that does not resolve, an export only the
// source condition has, a test kit that brings its own copy of vitest.
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const run = promisify(execFile)
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..')
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')

const APP = `import { ConfigError } from '@concord/core'
import { crdtFactory, type OrSet, type PnCounter } from '@concord/crdt'
import { MemoryBroker, MemoryStore, MemoryTransport, RegionNode } from '@concord/replication'
import { yjsFactory, type YjsReplica } from '@concord/yjs'
import { automergeFactory, type AutomergeReplica } from '@concord/automerge'
import { RedisTransport } from '@concord/transport-redis'
import { KafkaTransport } from '@concord/transport-kafka'

const broker = new MemoryBroker()
const regions = ['eu', 'us']
const nodes = regions.map(
  (region) =>
    new RegionNode({
      region,
      instance: 'web-1',
      regions,
      transport: new MemoryTransport({ broker }),
      store: new MemoryStore(),
      factories: { 'pn-counter': crdtFactory('pn-counter'), 'or-set': crdtFactory('or-set'), yjs: yjsFactory(), automerge: automergeFactory<{ title?: string }>() },
    }),
)
const [eu, us] = nodes as [RegionNode, RegionNode]
;((await eu.open('visits', 'pn-counter')) as PnCounter).increment(2)
;((await us.open('visits', 'pn-counter')) as PnCounter).increment(3)
;((await eu.open('cart', 'or-set')) as OrSet<string>).add('book')
;((await us.open('notes', 'yjs')) as YjsReplica).text('body').insert(0, 'hello')
;((await eu.open('doc', 'automerge')) as AutomergeReplica<{ title?: string }>).change((d) => {
  d.title = 'plan'
})
for (let i = 0; i < 3; i++) for (const n of nodes) await n.pump()
const values = []
for (const n of nodes) {
  values.push({
    visits: (await n.open('visits', 'pn-counter')).value(),
    cart: (await n.open('cart', 'or-set')).value(),
    notes: (await n.open('notes', 'yjs')).value(),
    doc: (await n.open('doc', 'automerge')).value(),
  })
}
// The transports load, and refuse a careless option with Concord's own error type.
const refused = []
for (const make of [() => new RedisTransport({ redis: 'redis://127.0.0.1:6379', nope: 1 } as never), () => new KafkaTransport({ kafka: { brokers: ['127.0.0.1:9092'] }, nope: 1 } as never)]) {
  try {
    make()
    refused.push('accepted')
  } catch (e) {
    refused.push(e instanceof ConfigError ? 'ConfigError' : String(e))
  }
}
for (const n of nodes) await n.close()
console.log(JSON.stringify({ values, refused }))
`

const PROPERTY_TEST = `import * as fc from 'fast-check'
import { describeReplicaSuites, type ReplicaSpec } from '@concord/testing'
import { PnCounter } from '@concord/crdt'

const spec: ReplicaSpec<number, number, PnCounter> = {
  name: 'my counter',
  create: (replicaId, env) => new PnCounter({ replicaId, now: env.now }),
  op: fc.integer({ min: 1, max: 5 }),
  perform: (c, n) => c.increment(n),
  oracle: (ops) => ops.reduce((sum, o) => sum + o.op, 0),
  carries: (op, history) => history.filter((h) => h.replica === op.replica && op.deps.has(h.id)).map((h) => h.id),
}

describeReplicaSuites(spec, { numRuns: 5 })
`

/** This process's environment without what the running vitest set for its workers (the project's vitest is another run). */
function outsideVitest(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VITEST') && k !== 'NODE_OPTIONS' && k !== 'TEST' && k !== 'NODE_ENV'))
}

/**
 * The version the repository's lockfile has of every registry package it holds in one version
 * only: the project below installs those (the ones it names, and the rest through `overrides`),
 * not whatever the registry has newest — a new upstream release must not change what `npm test`
 * tests, and these are in the npm cache after `npm ci`.
 */
function lockedVersions(): Map<string, string> {
  const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string; link?: boolean }> }
  const versions = new Map<string, Set<string>>()
  for (const [path, entry] of Object.entries(lock.packages)) {
    const at = path.lastIndexOf('node_modules/')
    if (at < 0 || entry.link === true || entry.version === undefined) continue
    const name = path.slice(at + 'node_modules/'.length)
    if (name.startsWith('@concord/')) continue
    const set = versions.get(name) ?? new Set<string>()
    set.add(entry.version)
    versions.set(name, set)
  }
  return new Map([...versions].filter(([, v]) => v.size === 1).map(([name, v]) => [name, [...v][0] as string]))
}

let dir: string
let app: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'concord-packaging-'))
  const packs = join(dir, 'packs')
  await run(process.execPath, [join(root, 'scripts', 'pack.mjs'), `--out=${packs}`], { cwd: root, timeout: 180_000 })
  const tarballs = (await readdir(packs)).filter((f) => f.endsWith('.tgz')).map((f) => join(packs, f))
  app = join(dir, 'app')
  await mkdir(app)
  const locked = lockedVersions()
  // What the project names itself: the peers of @concord/testing, and Node's types (Concord's
  // declarations use Buffer, as the README says).
  const direct = ['vitest', 'fast-check', '@types/node'].map((name) => {
    const v = locked.get(name)
    if (v === undefined) throw new Error(`package-lock.json holds no single version of ${name}`)
    return `${name}@${v}`
  })
  const overrides = Object.fromEntries([...locked].filter(([name]) => !['vitest', 'fast-check', '@types/node'].includes(name)))
  await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'concord-packaging-check', private: true, type: 'module', overrides }))
  // The cache that `npm ci` filled first: no download for what the repository already installed.
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs, ...direct], { cwd: app, timeout: 150_000 })
  await writeFile(
    join(app, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { target: 'es2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, outDir: 'out', types: ['node'] }, include: ['app.ts'] }),
  )
}, 400_000)

afterAll(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('the packed packages, in a project of their own', () => {
  it("install the repository's locked versions of their dependencies and of the project's tools", () => {
    const locked = lockedVersions()
    for (const name of ['yjs', '@automerge/automerge', 'ioredis', 'kafkajs', 'lib0', 'vitest', 'vite', 'fast-check', '@types/node']) {
      const installed = (JSON.parse(readFileSync(join(app, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version
      expect(installed, name).toBe(locked.get(name))
    }
  })

  it('type-check (strict, no skipLibCheck) and run with plain Node', async () => {
    await writeFile(join(app, 'app.ts'), APP)
    await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: app, timeout: 120_000 }).catch((e: { stdout?: string }) => {
      throw new Error(`tsc failed in the packaging project:\n${e.stdout ?? String(e)}`)
    })
    const { stdout } = await run(process.execPath, [join(app, 'out', 'app.js')], { cwd: app, timeout: 60_000 })
    const { values, refused } = JSON.parse(stdout.trim().split('\n').pop() as string) as { values: unknown[]; refused: string[] }
    const expected = { visits: 5, cart: ['book'], notes: { body: 'hello' }, doc: { title: 'plan' } }
    expect(values).toEqual([expected, expected])
    expect(refused).toEqual(['ConfigError', 'ConfigError'])
  }, 180_000)

  it("run the testing kit's suites, from the project's own test file, under the project's vitest", async () => {
    await writeFile(join(app, 'counter.prop.test.ts'), PROPERTY_TEST)
    const { stdout } = await run(join(app, 'node_modules', '.bin', 'vitest'), ['run', '--reporter=json'], { cwd: app, timeout: 180_000, env: outsideVitest() })
    const report = JSON.parse(stdout) as { numPassedTests: number; numFailedTests: number; numTotalTests: number }
    expect(report.numFailedTests).toBe(0)
    expect(report.numPassedTests).toBe(report.numTotalTests)
    expect(report.numPassedTests).toBeGreaterThan(10)
  }, 240_000)
})
