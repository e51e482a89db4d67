import { crdtFactory, type PnCounter } from '@concord/crdt'
import { MemoryStore, MemoryTransport, RegionNode } from '@concord/replication'
const REGIONS = ['eu', 'us', 'ap']
const t = new MemoryTransport()
const nodes = REGIONS.map((region) => new RegionNode({ region, instance: 'i1', regions: REGIONS, transport: t, store: new MemoryStore(), factories: { 'pn-counter': crdtFactory('pn-counter') }, heartbeatIntervalMs: 60_000 }))
const counters: PnCounter[][] = []
for (const node of nodes) { const cs: PnCounter[] = []; for (let d = 0; d < 100; d++) cs.push((await node.open(`d${d}`, 'pn-counter')) as unknown as PnCounter); counters.push(cs) }
const rounds = Number(process.env.ROUNDS ?? 300)
const run = async (n: number) => { for (let i = 0; i < n; i++) { for (let r = 0; r < 3; r++) { for (const c of counters[r]!) c.increment(1); await nodes[r]!.flush() } for (const node of nodes) await node.pump() } }
await run(30)
const s = performance.now()
await run(rounds)
const ms = performance.now() - s
console.log(`${rounds} rounds: ${ms.toFixed(0)} ms, ${(ms * 1000 / (rounds * 300)).toFixed(1)} us/envelope`)
