/**
 * The replication property (packages/replication/src/replication.prop.test.ts) on a real Kafka
 * broker: RegionNodes over KafkaTransport, one topic per region, under the harness's generated
 * faults — lost, duplicated and reordered deliveries, partitions, crashes at any append or commit
 * with a restart from the node's store (a new KafkaTransport: a new consumer in the reader's group,
 * starting from the committed offsets), clock skew — must converge, lose no acknowledged write,
 * apply none twice and agree with the type's oracle. Every run is a fresh deployment under its own
 * topic and group prefix; its topics are deleted afterwards.
 *
 * The harness runs in rounds of virtual time and expects a poll to see what was appended before
 * it, as a Redis stream or the in-memory log shows it. Kafka delivers through a background fetch
 * (and a consumer joins its group first), so the transport is wrapped here: a poll that finds
 * nothing while its reader has not yet been delivered what the run appended to that log waits for
 * the fetch, up to 10 s. The nodes and the transport are unchanged. Three regions, no second
 * instance (the wrapper does not follow a node's own log, which KafkaTransport reads past its own
 * appends), and fewer cases than in memory: each is a fresh deployment, with its own topics and
 * group joins. CONCORD_SERVER_RUNS sets the cases (default 5 per type; 100 under `npm run soak`);
 * the schedules found failing before (replicationRegressions) are replayed first. A failure prints
 * its seed and path.
 */
import { randomUUID } from 'node:crypto'
import { Kafka, logLevel } from 'kafkajs'
import { afterAll, describe, expect, it } from 'vitest'
import type { LogPosition, LogRecord, PollOptions, Transport } from '@concord/core'
import { MemoryStore, RegionNode } from '@concord/replication'
import { assertAsyncProperty, checkReplication, nativeSpecs, replicationRegressions, serverRuns, type ReplicationBackend } from '@concord/testing'
import { KafkaTransport } from './kafkaTransport.js'
import { requireKafka } from './testServer.js'

const server = await requireKafka()

/** Longest a poll waits for records the run appended before it. */
const CATCH_UP_MS = 10_000

describe.skipIf(!server.available)('replication property on a real Kafka broker', () => {
  const kafka = new Kafka({ clientId: 'concord-prop', brokers: [...server.brokers], logLevel: logLevel.NOTHING })
  const open: Transport[] = []
  let prefix = ''
  /** The last position appended to each origin in the current run, by any node. */
  let appended = new Map<string, LogPosition>()
  afterAll(async () => {
    await Promise.all(open.splice(0).map((t) => t.close().catch(() => undefined)))
  })

  /** `inner` with polls that wait for what the run appended to another region's log (see above). */
  function caughtUp(inner: KafkaTransport, runAppended: Map<string, LogPosition>): Transport {
    // Per reader and origin: the last position delivered to this incarnation, or committed before it.
    const delivered = new Map<string, LogPosition | undefined>()
    const behind = (key: string, origin: string): boolean => {
      const last = runAppended.get(origin)
      const got = delivered.get(key)
      return last !== undefined && (got === undefined || inner.comparePositions(got, last) < 0)
    }
    return {
      name: inner.name,
      maxRecordBytes: inner.maxRecordBytes,
      append: async (origin, records, options) => {
        const positions = await inner.append(origin, records, options)
        const end = positions.at(-1)
        const was = runAppended.get(origin)
        if (end !== undefined && (was === undefined || inner.comparePositions(was, end) < 0)) runAppended.set(origin, end)
        return positions
      },
      poll: async (reader: string, origin: string, options: PollOptions = {}): Promise<readonly LogRecord[]> => {
        const key = `${reader}\u0000${origin}`
        if (!delivered.has(key)) delivered.set(key, await inner.committed(reader, origin))
        const own = reader.startsWith(`${origin}/`)
        let recs = await inner.poll(reader, origin, options)
        for (const until = Date.now() + CATCH_UP_MS; recs.length === 0 && !own && behind(key, origin) && Date.now() < until; ) {
          recs = await inner.poll(reader, origin, { ...options, waitMs: 100 })
        }
        const last = recs.at(-1)
        if (last !== undefined) {
          const got = delivered.get(key)
          if (got === undefined || inner.comparePositions(got, last.position) < 0) delivered.set(key, last.position)
        }
        return recs
      },
      subscribe: (reader, origins) => inner.subscribe(reader, origins),
      watch: (reader, listener) => inner.watch(reader, listener),
      commit: (reader, origin, position) => inner.commit(reader, origin, position),
      committed: (reader, origin) => inner.committed(reader, origin),
      rewind: async (reader, origin) => {
        await inner.rewind(reader, origin)
        delivered.set(`${reader}\u0000${origin}`, await inner.committed(reader, origin))
      },
      earliest: (origin) => inner.earliest(origin),
      latest: (origin) => inner.latest(origin),
      trim: (origin, before) => inner.trim(origin, before),
      comparePositions: (a, b) => inner.comparePositions(a, b),
      close: () => inner.close(),
    }
  }

  /** A fresh deployment: its own topics and groups. */
  function backend(): ReplicationBackend {
    prefix = `concord-prop-${randomUUID().slice(0, 8)}`
    appended = new Map()
    const runAppended = appended
    return {
      connect: () => {
        const t = new KafkaTransport({ kafka, topicPrefix: prefix, groupPrefix: prefix, fetchMaxWaitMs: 100 })
        open.push(t)
        return caughtUp(t, runAppended)
      },
      store: () => new MemoryStore(),
      node: (o) => new RegionNode(o),
    }
  }

  /**
   * Runs that created no topic (they did not run on Kafka), checked once the property has passed:
   * thrown from the afterEach hook, this error replaced the failure of a run that failed before
   * its nodes appended anything, and fast-check printed neither that failure nor its seed.
   */
  let unreplicated: string[] = []

  /** Closes the run's transports and deletes its topics; notes a run that created none. */
  async function cleanup(): Promise<void> {
    await Promise.all(open.splice(0).map((t) => t.close().catch(() => undefined)))
    const admin = kafka.admin()
    await admin.connect()
    try {
      const topics = (await admin.listTopics()).filter((t) => t.startsWith(`${prefix}.`))
      if (topics.length === 0) unreplicated.push(prefix)
      else await admin.deleteTopics({ topics })
    } finally {
      await admin.disconnect()
    }
  }

  for (const spec of nativeSpecs) {
    it(`${spec.name}: converges, no loss, exactly-once, oracle, liveness, availability`, async () => {
      const property = checkReplication(spec, backend, { regions: 3, twin: false }).afterEach(async (previous) => {
        await previous()
        await cleanup()
      })
      unreplicated = []
      await assertAsyncProperty(`${spec.name} replication/kafka`, property, { numRuns: serverRuns(5, 100), examples: replicationRegressions[spec.name] ?? [] })
      expect(unreplicated, 'runs that left no topic: they did not replicate through Kafka').toEqual([])
    }, 900_000)
  }
})
