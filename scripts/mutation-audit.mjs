// Mutation audit of the server suites: each mutation below breaks one guarantee the Redis and
// Kafka transports (or the engine above them) give — deduplication, claims, replays, trimming,
// dead letters, repairs, commits that never move back, pausing, topic checks — and runs the
// suites that should notice. A mutation they do not notice ("survived") is a test that cannot
// fail for that bug: the audit exits 1 then. Needs the servers the suites need (Redis on
// REDIS_URL or 127.0.0.1:6379, `bash scripts/kafka.sh start`); runs with CI=true, so a missing
// server fails instead of skipping. Takes about 15 minutes on 2 cores.
//
// Usage: npm run mutation-audit [-- name ...]   (names from the list; default: all)
//
// Each mutation replaces one exact snippet of one source file (refused unless it occurs exactly
// once, so a change to that code shows up here rather than as a mutation that silently did
// nothing) and puts the file back afterwards, on Ctrl-C too.
import { readFileSync, writeFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { runVitestJson } from './vitest-json.mjs'

const NODE = 'packages/replication/src/regionNode.ts'
const REDIS = 'packages/transport-redis/src/redisTransport.ts'
const KAFKA = 'packages/transport-kafka/src/kafkaTransport.ts'
const suite = {
  redisFaults: 'packages/transport-redis/src/faults.integration.test.ts',
  redisTransport: 'packages/transport-redis/src/redisTransport.integration.test.ts',
  redisEdges: 'packages/transport-redis/src/edges.integration.test.ts',
  redisHostile: 'packages/transport-redis/src/hostile.integration.test.ts',
  redisCluster: 'packages/transport-redis/src/cluster.integration.test.ts',
  kafkaFaults: 'packages/transport-kafka/src/faults.integration.test.ts',
  kafkaEdges: 'packages/transport-kafka/src/edges.integration.test.ts',
  kafkaTransport: 'packages/transport-kafka/src/kafkaTransport.integration.test.ts',
}

/** `never` keeps the mutated code type-correct and lint-clean: a condition that is always false. */
const never = 'Math.random() > 2'

export const MUTATIONS = [
  {
    name: 'engine-applies-duplicates',
    breaks: 'a redelivered envelope is dropped as already applied (exactly-once apply)',
    file: NODE,
    from: 'if (this.seen.hasCounter(env.writer, env.seq)) {',
    to: `if (this.seen.hasCounter(env.writer, env.seq) && ${never}) {`,
    suites: [suite.redisFaults, suite.kafkaFaults],
  },
  {
    name: 'engine-trims-past-frontier',
    breaks: 'trimStable removes only what every region has applied',
    file: NODE,
    from: 'let cut = this.trimIndex.findIndex((e) => e.seq > frontier.get(e.writer))',
    to: 'let cut = frontier.size < 0 ? 0 : -1',
    suites: [suite.redisFaults, suite.kafkaFaults],
  },
  {
    name: 'engine-commits-before-apply',
    breaks: 'read positions are committed only once what was read is applied and stored',
    file: NODE,
    from: '    const ops: StoreOp[] = []\n    // Logs whose records past the round',
    to: '    for (const b of batches) this.toCommit.set(b.origin, b.last)\n    this.startCommits()\n    const ops: StoreOp[] = []\n    // Logs whose records past the round',
    suites: [suite.redisFaults, suite.kafkaFaults],
  },
  {
    name: 'engine-drops-instead-of-dead-lettering',
    breaks: 'a corrupted record is dead-lettered, not dropped',
    file: NODE,
    from: 'this.dlUndo.rejected.set(m, (this.dlUndo.rejected.get(m) ?? 0) + 1)\n    this.deadLetter(rec, e, ops)',
    to: `this.dlUndo.rejected.set(m, (this.dlUndo.rejected.get(m) ?? 0) + 1)\n    if (${never}) this.deadLetter(rec, e, ops)`,
    suites: [suite.redisFaults, suite.kafkaFaults],
  },
  {
    name: 'engine-never-asks-repairs',
    breaks: 'a node that lost updates (a log lost with its server) repairs by anti-entropy',
    file: NODE,
    from: '  private async requestRepairs(): Promise<number> {\n',
    to: `  private async requestRepairs(): Promise<number> {\n    if (!(${never})) return 0\n`,
    suites: [suite.redisFaults, suite.kafkaFaults],
  },
  {
    name: 'redis-never-claims',
    breaks: "a live consumer claims a dead consumer's pending entries",
    file: REDIS,
    from: 'if (out.length < max && this.options.now() >= s.nextClaimAt) await this.claim(',
    to: `if (${never}) await this.claim(`,
    suites: [suite.redisFaults, suite.redisTransport, suite.redisHostile],
  },
  {
    name: 'redis-no-replay-after-failed-poll',
    breaks: 'entries delivered to a poll that failed are delivered again',
    file: REDIS,
    from: '    } catch (e) {\n      s.replay = true',
    to: '    } catch (e) {\n      s.replay = false',
    suites: [suite.redisFaults, suite.redisTransport, suite.redisEdges],
  },
  {
    name: 'redis-commit-moves-back',
    breaks: 'a committed position never moves back',
    file: REDIS,
    from: 'if raise then redis.call',
    to: 'if true then redis.call',
    suites: [suite.redisTransport, suite.redisEdges, suite.redisHostile],
  },
  {
    name: 'redis-keys-without-hash-tag',
    breaks: "an origin's keys share one Redis Cluster slot (hash-tagged), so its scripts run on a cluster",
    file: REDIS,
    from: "return `${this.options.keyPrefix}:log:${origin}`",
    to: "return `${this.options.keyPrefix.replace(/[{}]/g, '')}:log:${origin}`",
    suites: [suite.redisCluster],
  },
  {
    name: 'kafka-records-without-key',
    breaks: 'records are keyed by document id (order per document on a partitioned topic)',
    file: KAFKA,
    from: 'key: keys?.[from + i] ?? null,',
    to: 'key: null,',
    suites: [suite.kafkaTransport],
  },
  {
    name: 'kafka-topic-without-settings',
    breaks: 'topics are created with the settings Concord needs (unlimited retention: only trimStable removes records)',
    file: KAFKA,
    from: 'configEntries: Object.entries(this.options.topicConfig).map(([name, value]) => ({ name, value })),',
    to: 'configEntries: [],',
    suites: [suite.kafkaTransport],
  },
  {
    name: 'kafka-delivers-refetched-offsets',
    breaks: 'records fetched again (after a rejoin or a seek) are delivered once',
    file: KAFKA,
    from: 'if (!allNew && BigInt(message.offset) < (o.next as bigint)) continue',
    to: `if (${never}) continue`,
    suites: [suite.kafkaFaults, suite.kafkaEdges, suite.kafkaTransport],
  },
  {
    name: 'kafka-commit-moves-back',
    breaks: 'a committed offset never moves back',
    file: KAFKA,
    from: 'return committed === undefined || offset > committed',
    to: 'return committed === undefined || offset !== committed',
    suites: [suite.kafkaEdges, suite.kafkaTransport],
  },
  {
    name: 'kafka-never-pauses',
    breaks: "a reader's buffer is bounded (its topic is paused when full)",
    file: KAFKA,
    from: '          o.paused = true\n          steer(() => consumer.pause([{ topic: o.topic }]))',
    to: `          o.paused = ${never}`,
    suites: [suite.kafkaFaults, suite.kafkaEdges, suite.kafkaTransport],
  },
  {
    name: 'kafka-no-skip-of-undelivered-offsets',
    breaks: "offsets kafkajs leaves out (a transaction's markers, aborted records) are skipped",
    file: KAFKA,
    from: 'if (o.next !== undefined && end >= o.next) this.skipUndelivered(o, end)',
    to: `if (${never}) this.skipUndelivered(o, end)`,
    suites: [suite.kafkaEdges],
  },
  {
    name: 'kafka-misses-recreated-topic',
    breaks: 'a topic deleted and created again is read from its new start',
    file: KAFKA,
    from: 'if (o.next !== undefined && BigInt(batch.highWatermark) < o.next) {',
    to: `if (${never}) {`,
    suites: [suite.kafkaFaults, suite.kafkaEdges],
  },
  {
    name: 'kafka-takes-compacted-topic',
    breaks: 'a topic with cleanup.policy=compact is refused',
    file: KAFKA,
    from: 'throw new ConfigError(`kafka transport: topic ${topic} exists with cleanup.policy',
    to: `if (${never}) throw new ConfigError(\`kafka transport: topic \${topic} exists with cleanup.policy`,
    suites: [suite.kafkaEdges],
  },
]

/** Runs `suites` with vitest under CI=true; returns the passed and failed test counts. */
function runSuites(suites) {
  const r = runVitestJson(['--reporter=dot', ...suites], {
    // The failures are expected (a mutation caught): their reports would bury the summary.
    stdio: ['ignore', 'ignore', 'pipe'],
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, CI: 'true' },
    timeout: 20 * 60_000,
  })
  const json = r.report
  if (json === undefined) {
    const tail = String(r.stderr ?? '').trim().split('\n').slice(-20).join('\n')
    return { passed: 0, failed: 0, error: `vitest wrote no report (status ${r.status}, signal ${r.signal})${tail === '' ? '' : `:\n${tail}`}` }
  }
  const failedNames = json.testResults.flatMap((f) => f.assertionResults.filter((a) => a.status === 'failed').map((a) => a.title))
  return { passed: json.numPassedTests, failed: json.numFailedTests, failedNames }
}

function main() {
  const wanted = process.argv.slice(2)
  const unknown = wanted.filter((w) => !MUTATIONS.some((m) => m.name === w))
  if (unknown.length > 0) {
    process.stderr.write(`mutation-audit: unknown mutation(s) ${unknown.join(', ')}; known: ${MUTATIONS.map((m) => m.name).join(', ')}\n`)
    process.exit(2)
  }
  const chosen = wanted.length === 0 ? MUTATIONS : MUTATIONS.filter((m) => wanted.includes(m.name))
  // Every snippet first: a stale one fails the audit before any suite runs.
  for (const m of chosen) {
    const count = readFileSync(m.file, 'utf8').split(m.from).length - 1
    if (count !== 1) {
      process.stderr.write(`mutation-audit: ${m.name}: its snippet occurs ${count} times in ${m.file} (expected once): update the mutation\n`)
      process.exit(2)
    }
  }
  let restore
  process.on('SIGINT', () => {
    restore?.()
    process.exit(130)
  })
  const survived = []
  for (const [i, m] of chosen.entries()) {
    process.stdout.write(`[${i + 1}/${chosen.length}] ${m.name}: breaks "${m.breaks}" … `)
    const original = readFileSync(m.file, 'utf8')
    restore = () => writeFileSync(m.file, original)
    const started = Date.now()
    let result
    try {
      writeFileSync(m.file, original.replace(m.from, m.to))
      result = runSuites(m.suites)
    } finally {
      restore()
      restore = undefined
    }
    const secs = Math.round((Date.now() - started) / 1000)
    if (result.error !== undefined) {
      process.stdout.write(`ERROR: ${result.error} (${secs} s)\n`)
      survived.push(m.name)
    } else if (result.failed > 0) {
      process.stdout.write(`caught: ${result.failed} of ${result.passed + result.failed} tests failed (${secs} s)\n`)
      for (const t of result.failedNames.slice(0, 4)) process.stdout.write(`    - ${t.slice(0, 150)}\n`)
    } else {
      process.stdout.write(`SURVIVED: all ${result.passed} tests passed (${secs} s)\n`)
      survived.push(m.name)
    }
  }
  process.stdout.write(survived.length === 0 ? `mutation-audit: all ${chosen.length} mutations caught\n` : `mutation-audit: ${survived.length} of ${chosen.length} not caught: ${survived.join(', ')}\n`)
  process.exit(survived.length === 0 ? 0 : 1)
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) main()
