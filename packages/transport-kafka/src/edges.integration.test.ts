/**
 * Edge cases a review found, each demonstrated against a real broker and each failing before its
 * fix: a topic created again by another appender, overlapping commits, kafkajs's offset sentinels,
 * a refetch ending in the reader's own run, close() during a group join, option combinations
 * kafkajs refuses late, a node's start-up catch-up meeting a consumer that has fetched nothing
 * yet, topics with a smaller record-batch limit, refusals hidden in kafkajs's aggregate errors,
 * positions past Kafka's offsets, a transactional producer's markers, other producers' compressed
 * batches (large ones, and one the codecs refuse).
 */
import { spawn } from 'node:child_process'
import net from 'node:net'
import { randomBytes, randomUUID } from 'node:crypto'
import { CompressionTypes, Kafka, logLevel, type Admin } from 'kafkajs'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { ClosedError, ConfigError, DecodeError, TransportError, isConcordError, type LogRecord } from '@concord/core'
import { crdtFactory, type PnCounter } from '@concord/crdt'
import { MemoryStore, RegionNode } from '@concord/replication'
import { KafkaTransport } from './kafkaTransport.js'
import type { KafkaTransportOptions } from './options.js'
import { requireKafka } from './testServer.js'

const server = await requireKafka()

const enc = new TextEncoder()
const dec = new TextDecoder()
const bytes = (s: string): Uint8Array => enc.encode(s)
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

describe.skipIf(!server.available)('KafkaTransport edge cases', () => {
  const prefix = `concord-edges-${randomUUID().slice(0, 8)}`
  const kafka = new Kafka({ clientId: 'concord-edges', brokers: [...server.brokers], logLevel: logLevel.NOTHING })
  let admin: Admin
  const opened: KafkaTransport[] = []
  const open = (options: KafkaTransportOptions = {}): KafkaTransport => {
    const t = new KafkaTransport({ kafka, topicPrefix: prefix, groupPrefix: prefix, fetchMaxWaitMs: 100, ...options })
    opened.push(t)
    return t
  }
  /** Polls until `n` records (placeholders included) or `tries` polls; retriable errors count as empty polls. */
  async function pollUntil(t: KafkaTransport, reader: string, origin: string, n: number, skipAppendsOf?: string, tries = 50): Promise<LogRecord[]> {
    const out: LogRecord[] = []
    for (let i = 0; i < tries && out.length < n; i++) {
      try {
        out.push(...(await t.poll(reader, origin, { waitMs: 200, ...(skipAppendsOf === undefined ? {} : { skipAppendsOf }) })))
      } catch (e) {
        if (!(isConcordError(e) && e.retriable)) throw e
      }
    }
    return out
  }

  /**
   * A member of `groupId`, subscribed to `topic`, killed (SIGKILL, in a child process) once it has
   * joined, without leaving: the group's next join waits for its `sessionTimeoutMs` to expire.
   */
  async function killedMember(groupId: string, topic: string, sessionTimeoutMs: number): Promise<void> {
    await killedOnceReady(
      [],
      `import { Kafka, logLevel } from 'kafkajs'
       const kafka = new Kafka({ clientId: 'edges-child', brokers: ${JSON.stringify([...server.brokers])}, logLevel: logLevel.NOTHING })
       const c = kafka.consumer({ groupId: ${JSON.stringify(groupId)}, sessionTimeout: ${sessionTimeoutMs}, heartbeatInterval: 1000 })
       c.on(c.events.GROUP_JOIN, () => console.log('ready'))
       await c.connect(); await c.subscribe({ topics: [${JSON.stringify(topic)}], fromBeginning: true })
       await c.run({ eachBatch: async () => {} })`,
    )
  }

  /** Runs `script` (an ES module) in a child process with `nodeArgs`, and kills it (SIGKILL) once it prints "ready". */
  async function killedOnceReady(nodeArgs: readonly string[], script: string): Promise<void> {
    const child = spawn(process.execPath, [...nodeArgs, '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'], cwd: process.cwd() })
    await new Promise<void>((resolve) => child.stdout.on('data', (d) => String(d).includes('ready') && resolve()))
    child.kill('SIGKILL')
  }

  beforeAll(async () => {
    admin = kafka.admin()
    await admin.connect()
  })
  afterEach(async () => {
    for (const t of opened.splice(0)) await t.close()
  })
  afterAll(async () => {
    const topics = (await admin.listTopics()).filter((t) => t.startsWith(`${prefix}`))
    if (topics.length > 0) await admin.deleteTopics({ topics })
    await admin.disconnect()
  })

  it("a topic deleted and created again by another appender: the reader delivers the new records, in order (it passed them off as its own runs and looped)", async () => {
    const t = open({ topicPrefix: `${prefix}-re`, groupPrefix: `${prefix}-re` })
    const twin = open({ topicPrefix: `${prefix}-re`, groupPrefix: `${prefix}-re` })
    await t.append('own', ['mine0', 'mine1', 'mine2'].map(bytes), { source: 'me' })
    expect((await pollUntil(t, 'r1', 'own', 1, 'me')).map((r) => r.skipped)).toEqual([true])
    await t.commit('r1', 'own', '2')
    await admin.deleteTopics({ topics: [`${prefix}-re.own`] })
    for (let i = 0; i < 40; i++) {
      const ok = await twin.append('own', ['twin0', 'twin1'].map(bytes)).then(
        () => true,
        (e: unknown) => !(isConcordError(e) && e.retriable) && Promise.reject(e),
      )
      if (ok) break
      await sleep(500)
    }
    const after: LogRecord[] = []
    // Through a consumer crash, restart and rejoin: 0.5 s on a quiet machine, 3 s on a loaded one.
    const until = Date.now() + 30_000
    while (Date.now() < until && after.filter((r) => r.skipped !== true).length < 2) after.push(...(await pollUntil(t, 'r1', 'own', 1, 'me', 1)))
    expect(after.filter((r) => r.skipped !== true).map((r) => dec.decode(r.bytes))).toEqual(['twin0', 'twin1'])
    const positions = after.map((r) => BigInt(r.position))
    expect(positions.every((p, i) => i === 0 || p > (positions[i - 1] as bigint))).toBe(true)
  })

  it('overlapping commits: the committed position never moves back, and a later commit is not lost (it moved back to the lower one)', async () => {
    const t = open()
    await t.append('cb', Array.from({ length: 10 }, (_, i) => bytes(`m${i}`)))
    expect(await pollUntil(t, 'r1', 'cb', 10)).toHaveLength(10)
    await t.commit('r1', 'cb', '0')
    const high = t.commit('r1', 'cb', '8')
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r))
    const low = t.commit('r1', 'cb', '3')
    await Promise.all([high, low])
    expect(await t.committed('r1', 'cb')).toBe('8')
    await t.commit('r1', 'cb', '6')
    expect(await t.committed('r1', 'cb')).toBe('8')
  })

  it('a reader restarted below a trimmed log start: committed() is a position or nothing, never kafkajs\'s sentinel (it was "-3")', async () => {
    const w = open()
    await w.append('tr', Array.from({ length: 20 }, (_, i) => bytes(`m${i}`)))
    const t1 = open()
    expect(await pollUntil(t1, 'r1', 'tr', 20)).toHaveLength(20)
    await t1.commit('r1', 'tr', '4')
    await t1.close()
    await w.trim('tr', '10')
    const t2 = open()
    const got = await pollUntil(t2, 'r1', 'tr', 10)
    expect(got[0]?.position).toBe('10')
    await sleep(500)
    const c = await t2.committed('r1', 'tr')
    expect(c === undefined || /^\d+$/.test(c)).toBe(true)
  })

  it('a refetch that ends in a run of the reader\'s own appends gives that run once per poll (it gave it twice)', async () => {
    const t = open({ topicPrefix: `${prefix}-dup`, groupPrefix: `${prefix}-dup` })
    const twin = open({ topicPrefix: `${prefix}-dup`, groupPrefix: `${prefix}-dup` })
    await twin.append('own', Array.from({ length: 5 }, (_, i) => bytes(`twin${i}`)))
    await twin.append('p', [bytes('p0')])
    await twin.append('q', [bytes('q0')])
    expect(await pollUntil(t, 'r1', 'own', 5, 'me')).toHaveLength(5)
    // A new origin polled re-subscribes the consumer: it restarts at the committed offset (none).
    await t.poll('r1', 'p', { waitMs: 2000 })
    await sleep(1000)
    await t.append('own', Array.from({ length: 5 }, (_, i) => bytes(`mine${i}`)), { source: 'me' })
    await t.poll('r1', 'q', { waitMs: 2000 })
    await sleep(1000)
    const got = await t.poll('r1', 'own', { skipAppendsOf: 'me', max: 100 })
    const positions = got.map((r) => r.position)
    expect(new Set(positions).size).toBe(positions.length)
  })

  it('close() releases a commit waiting for its group join (it waited for the join, or joinTimeoutMs)', async () => {
    const groupPrefix = `${prefix}-join`
    const w = open({ groupPrefix })
    await w.append('jo', [bytes('a')])
    // An earlier member of the group, killed without leaving: the next join waits for its session to expire.
    await killedMember(`${groupPrefix}/r1`, `${prefix}.jo`, 20_000)
    const t = open({ groupPrefix })
    let settledAt = 0
    const committing = t.commit('r1', 'jo', '0').then(
      () => 'resolved',
      (e: unknown) => e,
    )
    void committing.then(() => (settledAt = Date.now()))
    await sleep(1000)
    const closedAt = Date.now()
    // close() itself waits for kafkajs to disconnect the joining consumer; the commit does not.
    await t.close()
    const outcome = await committing
    expect(outcome).toBeInstanceOf(ClosedError)
    // The join waits out the killed member's 20 s session; the commit must not wait for it.
    expect(settledAt - closedAt).toBeLessThan(8_000)
  }, 90_000)

  it('while the group join waits out a crashed member, a poll returns within its waitMs, a commit fails after joinTimeoutMs, and close() does not wait for the join (review finding: each waited for the whole join)', async () => {
    const groupPrefix = `${prefix}-dead`
    const w = open({ groupPrefix })
    await w.append('dm', [bytes('a')])
    // An earlier member of the group, killed without leaving: the next join waits for its 20 s session.
    await killedMember(`${groupPrefix}/r1`, `${prefix}.dm`, 20_000)
    const t = open({ groupPrefix, joinTimeoutMs: 2000 })
    let at = Date.now()
    expect(await t.poll('r1', 'dm', { waitMs: 500 })).toEqual([])
    expect(Date.now() - at).toBeLessThan(3000)
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 300)
    at = Date.now()
    expect(await t.poll('r1', 'dm', { waitMs: 60_000, signal: ac.signal })).toEqual([])
    expect(Date.now() - at).toBeLessThan(3000)
    at = Date.now()
    const err = await t.commit('r1', 'dm', '0').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TransportError)
    expect((err as TransportError).retriable).toBe(true)
    expect((err as Error).message).toMatch(/timed out after 2000 ms joining the consumer group/)
    expect(Date.now() - at).toBeLessThan(5000)
    // The join goes on meanwhile: once the dead member's session has expired, the record comes.
    expect((await pollUntil(t, 'r1', 'dm', 1, undefined, 200)).map((r) => dec.decode(r.bytes))).toEqual(['a'])
    // A second transport in a join that waits out another dead member: close() is bounded.
    await killedMember(`${groupPrefix}/r2`, `${prefix}.dm`, 30_000)
    const t2 = new KafkaTransport({ kafka, topicPrefix: prefix, groupPrefix, fetchMaxWaitMs: 100 })
    expect(await t2.poll('r2', 'dm', { waitMs: 1000 })).toEqual([])
    at = Date.now()
    await t2.close()
    expect(Date.now() - at).toBeLessThan(8000)
  }, 120_000)

  it('a reader restarted after a crash reads again within rebalanceTimeoutMs, not its sessionTimeoutMs (the new member waited 30 s for the dead one)', async () => {
    const groupPrefix = `${prefix}-reb`
    const options = { topicPrefix: prefix, groupPrefix, fetchMaxWaitMs: 100, heartbeatIntervalMs: 1000, sessionTimeoutMs: 30_000, rebalanceTimeoutMs: 4000 }
    const w = open({ groupPrefix })
    await w.append('rb', [bytes('before')])
    // The crashed process: a KafkaTransport reading 'rb' as r1, killed once it has read (so joined).
    await killedOnceReady(
      ['--conditions=@concord/source', '--import', 'tsx'],
      `import { KafkaTransport } from '@concord/transport-kafka'
       const t = new KafkaTransport({ kafka: { clientId: 'edges-crash', brokers: ${JSON.stringify([...server.brokers])} }, ...${JSON.stringify(options)} })
       for (;;) { if ((await t.poll('r1', 'rb', { waitMs: 1000 })).length > 0) { console.log('ready'); break } }`,
    )
    await w.append('rb', [bytes('after')])
    const at = Date.now()
    const t = open(options)
    const got = await pollUntil(t, 'r1', 'rb', 2, undefined, 200)
    expect(got.map((r) => dec.decode(r.bytes))).toEqual(['before', 'after'])
    // The join waited for the dead member at most its rebalance timeout (4 s), not its 30 s session.
    expect(Date.now() - at).toBeLessThan(15_000)
  }, 120_000)

  it('commit and rewind work again once the broker is reachable after a start that failed (review finding: they kept the failed start, and failed for good)', async () => {
    // An address where nothing listens yet; later a proxy to the broker listens there.
    const probe = net.createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const port = (probe.address() as net.AddressInfo).port
    await new Promise<void>((resolve) => probe.close(() => resolve()))
    const [host, brokerPort] = (server.brokers[0] as string).split(':') as [string, string]
    const w = open()
    await w.append('sf', [bytes('a')])
    const t = open({ kafka: { clientId: 'concord-edges-sf', brokers: [`127.0.0.1:${port}`], retry: { retries: 0 }, connectionTimeout: 1000, logLevel: logLevel.NOTHING }, groupPrefix: `${prefix}-sf` })
    const first = await t.commit('r1', 'sf', '0').catch((e: unknown) => e)
    expect(isConcordError(first) && first.code === 'TRANSPORT' && first.retriable).toBe(true)
    const sockets = new Set<net.Socket>()
    const proxy = net.createServer((c) => {
      const u = net.connect(Number(brokerPort), host)
      sockets.add(c).add(u)
      c.pipe(u)
      u.pipe(c)
      const end = (): void => {
        c.destroy()
        u.destroy()
      }
      for (const x of [c, u]) x.on('error', end).on('close', end)
    })
    await new Promise<void>((resolve) => proxy.listen(port, '127.0.0.1', resolve))
    try {
      let committed = false
      let rewound = false
      let last: unknown
      for (const until = Date.now() + 60_000; !(committed && rewound) && Date.now() < until; ) {
        try {
          if (!committed) await t.commit('r1', 'sf', '0')
          committed = true
          await t.rewind('r1', 'sf')
          rewound = true
        } catch (e) {
          last = e
          await sleep(500)
        }
      }
      expect(committed && rewound, String(last)).toBe(true)
      expect(await t.committed('r1', 'sf')).toBe('0')
    } finally {
      await t.close()
      opened.splice(opened.indexOf(t), 1)
      for (const x of sockets) x.destroy()
      await new Promise<void>((resolve) => proxy.close(() => resolve()))
    }
  }, 120_000)

  it('close() ends an append waiting on a broker that accepts connections and never answers, and returns (review finding: 27 s)', async () => {
    const sockets = new Set<net.Socket>()
    const silent = net.createServer((c) => void sockets.add(c))
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const port = (silent.address() as net.AddressInfo).port
    const t = new KafkaTransport({ kafka: { clientId: 'concord-edges-silent', brokers: [`127.0.0.1:${port}`], logLevel: logLevel.NOTHING }, topicPrefix: prefix })
    try {
      const appending = t.append('silent', [bytes('a')]).then(
        () => 'resolved',
        (e: unknown) => e,
      )
      await sleep(500)
      const at = Date.now()
      await t.close()
      expect(Date.now() - at).toBeLessThan(7000)
      const outcome = await appending
      expect(outcome).toBeInstanceOf(ClosedError)
      expect(Date.now() - at).toBeLessThan(7000)
    } finally {
      for (const x of sockets) x.destroy()
      await new Promise<void>((resolve) => silent.close(() => resolve()))
    }
  }, 60_000)

  it('refuses a topic made elsewhere with compaction (review finding: used without a word, though compaction drops all but each document\'s last record)', async () => {
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic: `${prefix}.compacted`, numPartitions: 1, configEntries: [{ name: 'cleanup.policy', value: 'compact' }] }] })
    const t = open()
    const err = await t.append('compacted', [bytes('a')], { keys: ['d'] }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toMatch(/exists with cleanup.policy=compact; Concord needs "delete"/)
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic: `${prefix}.kept`, numPartitions: 1, configEntries: [{ name: 'cleanup.policy', value: 'delete' }] }] })
    expect(await t.append('kept', [bytes('a')])).toEqual(['0'])
  })

  it('refuses a topic made elsewhere with two partitions (review finding: appends went to partition 0 while the reader took both partitions\' offsets for one log: acknowledged records were never delivered)', async () => {
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic: `${prefix}.twoparts`, numPartitions: 2 }] })
    const t = open()
    const appended = await t.append('twoparts', [bytes('a')]).catch((e: unknown) => e)
    expect(appended).toBeInstanceOf(ConfigError)
    expect((appended as Error).message).toMatch(/exists with 2 partitions; Concord needs 1/)
    await expect(t.poll('r1', 'twoparts')).rejects.toThrow(/exists with 2 partitions/)
  })

  it('refuses readers and origins that are no names with a ConfigError (review finding: subscribe(\'r\', \'eu-west\') made one topic per character; a lone surrogate threw a raw URIError; a group id past Kafka\'s string limit failed as retriable, for ever)', async () => {
    const t = open()
    await expect(t.subscribe('r1', 'eu-west' as never)).rejects.toBeInstanceOf(ConfigError)
    await expect(t.subscribe('r1', null as never)).rejects.toBeInstanceOf(ConfigError)
    await expect(t.subscribe('r1', [undefined] as never)).rejects.toBeInstanceOf(ConfigError)
    await expect(t.poll('x\ud800', 'eu')).rejects.toThrow(/reader is not well-formed UTF-16/)
    await expect(t.commit('x\ud800', 'eu', '0')).rejects.toBeInstanceOf(ConfigError)
    await expect(t.poll('r'.repeat(40_000), 'eu')).rejects.toThrow(/consumer group id .* bytes; Kafka takes at most 32767/)
    const topics = await admin.listTopics()
    expect(topics.filter((x) => x === `${prefix}.e` || x === `${prefix}.u`)).toEqual([])
  })

  it('a refused origin (a compacted topic) leaves the reader\'s consumer of its other origins running (review finding: each poll of it restarted that consumer, and uncommitted records came again)', async () => {
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic: `${prefix}.cmp2`, numPartitions: 1, configEntries: [{ name: 'cleanup.policy', value: 'compact' }] }] })
    const w = open()
    const t = open({ groupPrefix: `${prefix}-refused` })
    await w.append('okA', [bytes('0'), bytes('1')])
    expect((await pollUntil(t, 'r1', 'okA', 2)).map((r) => dec.decode(r.bytes))).toEqual(['0', '1'])
    for (let i = 0; i < 3; i++) await expect(t.poll('r1', 'cmp2')).rejects.toBeInstanceOf(ConfigError)
    await expect(t.commit('r1', 'cmp2', '0')).rejects.toBeInstanceOf(ConfigError)
    await w.append('okA', [bytes('2')])
    // Nothing committed: a new consumer would start over at '0'.
    expect((await pollUntil(t, 'r1', 'okA', 1)).map((r) => dec.decode(r.bytes))).toEqual(['2'])
  })

  it('records fetched before a re-subscription are delivered while the consumer rejoins (review finding: polls returned nothing until the join was done)', async () => {
    const w = open()
    const t = open({ groupPrefix: `${prefix}-rejoin` })
    await w.append('rjA', Array.from({ length: 10 }, (_, i) => bytes(`a${i}`)))
    await w.append('rjB', [bytes('b0')])
    const first = await t.poll('r1', 'rjA', { max: 2, waitMs: 10_000 })
    expect(first.map((r) => dec.decode(r.bytes))).toEqual(['a0', 'a1'])
    // Wait until the rest is buffered, then a new origin re-subscribes the consumer (a rejoin).
    await sleep(1000)
    expect(await t.poll('r1', 'rjB')).toEqual([])
    const during = await t.poll('r1', 'rjA', { max: 100 })
    expect(during.map((r) => dec.decode(r.bytes))).toEqual(Array.from({ length: 8 }, (_, i) => `a${i + 2}`))
    expect((await pollUntil(t, 'r1', 'rjB', 1)).map((r) => dec.decode(r.bytes))).toEqual(['b0'])
    // Nothing of A again after the rejoin (refetched records are dropped by offset).
    expect(await t.poll('r1', 'rjA', { waitMs: 500 })).toEqual([])
  })

  it('refuses option combinations kafkajs refuses only at a first poll, or that overflow its timers (an untyped error; a reader that never read)', () => {
    // A port past 65535 (review finding: every call then failed with a retriable error).
    expect(() => open({ kafka: { brokers: ['127.0.0.1:99999'] } })).toThrow(/kafka.brokers must be a non-empty array of "host:port"/)
    expect(() => open({ kafka: { brokers: ['127.0.0.1:0'] } })).toThrow(ConfigError)
    // Named as given (review finding: the error named maxBatchBytes, which was not set).
    expect(() => open({ topicConfig: { 'max.message.bytes': '1000' } })).toThrow(/topicConfig max.message.bytes must be at least/)
    expect(() => open({ sessionTimeoutMs: 1000 })).toThrow(/heartbeatIntervalMs \(3000\) must be lower than sessionTimeoutMs \(1000\)/)
    expect(() => open({ heartbeatIntervalMs: 40_000 })).toThrow(ConfigError)
    expect(() => open({ fetchMaxWaitMs: 2 ** 31 })).toThrow(/fetchMaxWaitMs must be at most/)
    expect(() => open({ rebalanceTimeoutMs: 3000 })).toThrow(/rebalanceTimeoutMs \(3000\) must be at least heartbeatIntervalMs \+ fetchMaxWaitMs \+ 1000 \(4100\)/)
    expect(() => open({ joinTimeoutMs: 2 ** 31 })).toThrow(ConfigError)
  })
  it('a writer restarted with a lost store reads its own log to its end before it writes (the first polls of a new consumer come back empty): no sequence number used twice, regions converge', async () => {
    const topicPrefix = `${prefix}-cu`
    const node = (region: string, transport: KafkaTransport): RegionNode =>
      new RegionNode({ region, instance: 'i1', regions: ['eu', 'us'], transport, store: new MemoryStore(), factories: { 'pn-counter': crdtFactory('pn-counter') }, heartbeatIntervalMs: 100, livenessMs: 300, onError: () => undefined })
    const firstTransport = open({ topicPrefix, groupPrefix: topicPrefix })
    const first = node('eu', firstTransport)
    ;((await first.open('a', 'pn-counter')) as unknown as PnCounter).increment(1)
    await first.flush()
    // Its process died (the node not closed, nothing committed; its consumer gone), its store
    // lost; a new process after livenessMs.
    await firstTransport.close()
    await sleep(600)
    const again = node('eu', open({ topicPrefix, groupPrefix: topicPrefix }))
    await again.pump()
    ;((await again.open('b', 'pn-counter')) as unknown as PnCounter).increment(1)
    await again.flush()
    const us = node('us', open({ topicPrefix, groupPrefix: topicPrefix }))
    let a = 0
    let b = 0
    // Bounded by the clock, not by a count of polls (a new consumer group joins slower on a loaded machine).
    for (const until = Date.now() + 30_000; (a !== 1 || b !== 1) && Date.now() < until; ) {
      await us.pump()
      a = (await us.open<number>('a', 'pn-counter')).value()
      b = (await us.open<number>('b', 'pn-counter')).value()
      if (a !== 1 || b !== 1) await sleep(100)
    }
    expect({ a, b }).toEqual({ a: 1, b: 1 })
    expect(us.metrics().peers.find((p) => p.region === 'eu')?.duplicates).toBe(0)
    expect((await again.open<number>('a', 'pn-counter')).value()).toBe(1)
    await us.close()
    await again.close()
  }, 60_000)

  it('the first trimStable() of a process trims (review finding: its first poll came back empty while Kafka fetched in the background, so it trimmed nothing)', async () => {
    const topicPrefix = `${prefix}-ts`
    const make = (): RegionNode =>
      new RegionNode({ region: 'eu', instance: 'i1', regions: ['eu'], transport: open({ topicPrefix, groupPrefix: topicPrefix }), store: new MemoryStore(), factories: { 'pn-counter': crdtFactory('pn-counter') }, heartbeatIntervalMs: 60_000 })
    const node = make()
    const c = (await node.open('a', 'pn-counter')) as unknown as PnCounter
    for (let i = 0; i < 5; i++) {
      c.increment(1)
      await node.flush()
    }
    await node.pump()
    const trimmed = await node.trimStable()
    expect(trimmed).toBeDefined()
    const t = open({ topicPrefix, groupPrefix: topicPrefix })
    expect(await t.earliest('eu')).toBe(trimmed)
    expect(Number(trimmed)).toBeGreaterThan(0)
    await node.close()
  }, 60_000)

  it('latest() is the position of the last record, undefined for an empty or unknown log', async () => {
    const t = open()
    expect(await t.latest('lt-none')).toBeUndefined()
    const positions = await t.append('lt', [bytes('x'), bytes('y'), bytes('z')])
    expect(await t.latest('lt')).toBe(positions[2])
  }, 30_000)

  it('a topic whose max.message.bytes is below maxBatchBytes takes a flush in smaller requests; a record too large for it alone is a non-retriable error naming the limit', async () => {
    const topicPrefix = `${prefix}-mm`
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic: `${topicPrefix}.mm`, numPartitions: 1, configEntries: [{ name: 'max.message.bytes', value: '65536' }] }] })
    const t = open({ topicPrefix, groupPrefix: topicPrefix })
    const records = Array.from({ length: 100 }, (_, i) => new Uint8Array(1000).fill(i))
    const positions = await t.append('mm', records)
    expect(positions.map(Number)).toEqual(records.map((_, i) => i))
    const read = await pollUntil(t, 'r', 'mm', 100)
    expect(read.map((r) => r.bytes[0])).toEqual(records.map((_, i) => i))
    const big = t.append('mm', [new Uint8Array(100_000)])
    await expect(big).rejects.toThrow(TransportError)
    await expect(big).rejects.toThrow(/max\.message\.bytes/)
    await expect(big).rejects.toMatchObject({ retriable: false })
  }, 60_000)

  it('topicConfig max.message.bytes caps the batches (or refuses a larger maxBatchBytes); topics refused for their settings, and a session timeout the broker refuses, are ConfigErrors naming why', async () => {
    expect(open({ topicConfig: { 'max.message.bytes': '65536' } }).maxRecordBytes).toBeLessThan(65536)
    expect(() => open({ topicConfig: { 'max.message.bytes': '65536' }, maxBatchBytes: 100_000 })).toThrow(ConfigError)
    expect(() => open({ topicConfig: { 'max.message.bytes': 'lots' } })).toThrow(ConfigError)
    const bad = open({ topicPrefix: `${prefix}-bc`, topicConfig: { 'retention.ms': 'abc' } })
    await expect(bad.append('bc', [bytes('x')])).rejects.toThrow(ConfigError)
    await expect(bad.append('bc', [bytes('x')])).rejects.toThrow(/INVALID_CONFIG/)
    const short = open({ topicPrefix: `${prefix}-st`, groupPrefix: `${prefix}-st`, sessionTimeoutMs: 2000, heartbeatIntervalMs: 500 })
    await short.append('st', [bytes('x')])
    let error: unknown
    for (let i = 0; i < 5 && error === undefined; i++) error = await short.poll('r', 'st', { waitMs: 500 }).then(() => undefined, (e: unknown) => e)
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as Error).message).toMatch(/session timeout/)
  }, 60_000)

  it('positions past Kafka offsets are DecodeErrors (a commit of one was sent as a negative offset, and every later commit skipped)', async () => {
    const t = open()
    await expect(t.commit('r', 'hp', '9223372036854775807')).rejects.toThrow(DecodeError)
    expect(() => t.comparePositions('9223372036854775807', '1')).toThrow(DecodeError)
    await t.append('hp', [bytes('x'), bytes('y')])
    await t.commit('r', 'hp', '1')
    expect(await t.committed('r', 'hp')).toBe('1')
  }, 30_000)

  it('an origin written by a transactional producer: committed records come, aborted ones never, and a reader reaches latest() though it is a transaction marker no poll returns (it waited for it for ever)', async () => {
    const topicPrefix = `${prefix}-tx`
    const topic = `${topicPrefix}.tx`
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 1 }] })
    const producer = kafka.producer({ transactionalId: `${topicPrefix}-txid`, idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    const send = async (values: readonly string[], commit: boolean): Promise<void> => {
      const tx = await producer.transaction()
      await tx.send({ topic, messages: values.map((value) => ({ value, partition: 0 })) })
      await (commit ? tx.commit() : tx.abort())
    }
    try {
      // Offsets: c0 c1 | marker 2 | a0 a1 | abort marker 5 | c2 | marker 7.
      await send(['c0', 'c1'], true)
      await send(['a0', 'a1'], false)
      await send(['c2'], true)
    } finally {
      await producer.disconnect()
    }
    const t = open({ topicPrefix, groupPrefix: topicPrefix })
    // The coordinator writes a transaction's markers after its commit/abort call returns: latest()
    // reaches them a moment later (a run read 8 right after the abort of a9, marker 10).
    const latestOnce = async (want: string): Promise<string | undefined> => {
      let at = await t.latest('tx')
      for (const until = Date.now() + 10_000; at !== want && Date.now() < until; at = await t.latest('tx')) await new Promise((r) => setTimeout(r, 50))
      return at
    }
    const end = await latestOnce('7')
    expect(end).toBe('7')
    const got: LogRecord[] = []
    for (const until = Date.now() + 20_000; Date.now() < until && !got.some((r) => t.comparePositions(r.position, end as string) >= 0); ) got.push(...(await pollUntil(t, 'r1', 'tx', 1, undefined, 1)))
    expect(got.filter((r) => r.skipped !== true).map((r) => [r.position, dec.decode(r.bytes)])).toEqual([['0', 'c0'], ['1', 'c1'], ['6', 'c2']])
    // The marker at latest() is reached, as a skipped placeholder: a catch-up to latest() ends.
    expect(got.at(-1)).toMatchObject({ position: '7', skipped: true })
    await t.commit('r1', 'tx', '7')
    expect(await t.committed('r1', 'tx')).toBe('7')
    // Written after the markers: delivered, and nothing before it again.
    expect(await t.append('tx', [bytes('after')])).toEqual(['8'])
    const more = await pollUntil(t, 'r1', 'tx', 1)
    expect(more.map((r) => [r.position, dec.decode(r.bytes)])).toEqual([['8', 'after']])
    // A fetch of nothing but an aborted transaction (a9, its marker 10): kafkajs leaves it out of
    // eachBatch altogether; the reader still reaches latest().
    await producer.connect()
    try {
      await send(['a9'], false)
    } finally {
      await producer.disconnect()
    }
    expect(await latestOnce('10')).toBe('10')
    const tail = await pollUntil(t, 'r1', 'tx', 1)
    expect(tail).toEqual([{ origin: 'tx', position: '10', bytes: new Uint8Array(0), skipped: true }])
    // Rewound to a commit just before markers: the records after it again, no aborted one.
    await t.commit('r1', 'tx', '6')
    await t.rewind('r1', 'tx')
    const again = await pollUntil(t, 'r1', 'tx', 2)
    expect(again.map((r) => [r.position, r.skipped === true ? 'skipped' : dec.decode(r.bytes)])).toEqual([['8', 'after'], ['10', 'skipped']])
  }, 60_000)

  // GZIP and Snappy compressed by the producer, LZ4 and ZSTD by the broker (the topic's
  // compression.type: the transport's codecs decompress those only). The middle batch is larger than
  // a fetch's bytes per partition (kafkajs's 1 MiB: the broker sends it whole all the same) and than
  // bufferRecords.
  it.each([
    ['gzip', CompressionTypes.GZIP, 'producer'],
    ['snappy', CompressionTypes.Snappy, 'producer'],
    ['lz4', CompressionTypes.None, 'lz4'],
    ['zstd', CompressionTypes.None, 'zstd'],
  ])('an origin written by another producer in %s batches, one larger than a fetch and the buffer: every record delivered, in order', async (name, compression, topicCompression) => {
    const topicPrefix = `${prefix}-z${name}`
    const topic = `${topicPrefix}.z`
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 1, configEntries: [{ name: 'compression.type', value: topicCompression }, { name: 'max.message.bytes', value: String(8 * 1024 * 1024) }] }] })
    const t = open({ topicPrefix, groupPrefix: topicPrefix, bufferRecords: 16 })
    // Incompressible values, 1.5 MB in all: compressed the batch stays past 1 MiB.
    const big = Array.from({ length: 300 }, (_, i) => Buffer.concat([Buffer.from(`big${i}:`), randomBytes(5000)]))
    const producer = kafka.producer({ allowAutoTopicCreation: false })
    await producer.connect()
    try {
      await producer.send({ topic, compression, messages: [{ value: 'first', partition: 0 }] })
      await producer.send({ topic, compression, messages: big.map((value) => ({ value, partition: 0 })) })
      await producer.send({ topic, compression, messages: [{ value: 'last', partition: 0 }] })
    } finally {
      await producer.disconnect()
    }
    const want = [Buffer.from('first'), ...big, Buffer.from('last')]
    const got = await pollUntil(t, 'r1', 'z', want.length, undefined, 200)
    expect(got.map((r) => r.position)).toEqual(want.map((_, i) => String(i)))
    expect(got.every((r, i) => r.invalid === undefined && Buffer.from(r.bytes).equals(want[i] as Buffer))).toBe(true)
  }, 60_000)

  it('a compressed batch the reader cannot decompress (a ZSTD batch inflating past the codecs\' limit, which the broker takes): dead letters for its records, then the records after it; the reader\'s other origins keep flowing (its consumer crashed at every fetch, for good)', async () => {
    const topicPrefix = `${prefix}-zbad`
    const topic = `${topicPrefix}.bad`
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 1, configEntries: [{ name: 'compression.type', value: 'zstd' }, { name: 'max.message.bytes', value: String(32 * 1024 * 1024) }] }] })
    const t = open({ topicPrefix, groupPrefix: topicPrefix })
    await t.append('ok', [bytes('ok0')])
    const producer = kafka.producer({ allowAutoTopicCreation: false })
    await producer.connect()
    try {
      await producer.send({ topic, messages: [{ value: 'before', partition: 0 }] })
      // 17 MiB of zeros: the broker stores a few KB of ZSTD, which the codecs refuse to inflate.
      await producer.send({ topic, messages: Array.from({ length: 17 }, () => ({ value: Buffer.alloc(1024 * 1024), partition: 0 })) })
      await producer.send({ topic, messages: [{ value: 'after', partition: 0 }] })
    } finally {
      await producer.disconnect()
    }
    await t.subscribe('r1', ['ok', 'bad'])
    const got = await pollUntil(t, 'r1', 'bad', 19, undefined, 100)
    expect(got.map((r) => r.position)).toEqual(Array.from({ length: 19 }, (_, i) => String(i)))
    expect(dec.decode(got[0]?.bytes)).toBe('before')
    expect(got.slice(1, 18).every((r) => r.bytes.length === 0 && /could not be decompressed.*inflates past/.test(r.invalid ?? ''))).toBe(true)
    expect(got[18]).toMatchObject({ position: '18', bytes: bytes('after') })
    expect(got[18]?.invalid).toBeUndefined()
    expect((await pollUntil(t, 'r1', 'ok', 1)).map((r) => dec.decode(r.bytes))).toEqual(['ok0'])
    await t.append('ok', [bytes('ok1')])
    expect((await pollUntil(t, 'r1', 'ok', 1)).map((r) => dec.decode(r.bytes))).toEqual(['ok1'])
  }, 90_000)

  it('takes a Kafka client made by another copy of kafkajs as the client (its options used to be read as kafkajs options, without brokers)', async () => {
    const calls: string[] = []
    // No instance of this copy's Kafka class: only its shape says it is a client.
    const copy = {
      producer: (config?: Parameters<Kafka['producer']>[0]) => (calls.push('producer'), kafka.producer(config)),
      consumer: (config: Parameters<Kafka['consumer']>[0]) => kafka.consumer(config),
      admin: (config?: Parameters<Kafka['admin']>[0]) => kafka.admin(config),
    } as unknown as Kafka
    const t = open({ kafka: copy })
    await t.append('oc', [bytes('x')])
    expect(calls).toContain('producer')
  }, 30_000)
})
