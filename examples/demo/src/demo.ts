/**
 * A shopping cart replicated active-active across three regions (us-east, eu-west, ap-south) on
 * the deterministic simulator: realistic inter-continental latency, then ap-south is cut off by a
 * partition while every region keeps taking writes, then the partition heals and the regions
 * converge. Every step prints what each region sees, and the conflicts the merge resolved.
 */
import * as fc from 'fast-check'
import { type ConflictEvent } from '@concord/core'
import { OrMap } from '@concord/crdt'
import { Simulation, deepEqual, type ReplicaSpec } from '@concord/testing'

/** An operation on the cart: a named closure, so the demo can say what it does. */
interface CartOp {
  readonly label: string
  readonly run: (cart: OrMap) => void
}

type Cart = ReturnType<OrMap['value']>

/** The cart as a ReplicaSpec: the demo drives it by hand, the test runs the convergence suite on it. */
export const cartSpec: ReplicaSpec<Cart, CartOp, OrMap> = {
  name: 'cart',
  create: (replicaId, env) => new OrMap({ replicaId, now: env.now }),
  // The demo performs hand-written ops; this generator lets the same spec run in the property suites.
  op: fc.constantFrom<CartOp>(
    { label: 'add book', run: (c) => c.update('items', 'or-set', (s) => s.add('book')) },
    { label: 'remove book', run: (c) => c.update('items', 'or-set', (s) => s.remove('book')) },
    { label: 'qty +1', run: (c) => c.update('qty', 'pn-counter', (q) => q.increment(1)) },
    { label: 'note', run: (c) => c.update('note', 'lww-register', (r) => r.set('hi')) },
  ),
  perform: (cart, op) => op.run(cart),
}

const addItem = (sku: string): CartOp => ({ label: `add ${sku}`, run: (c) => c.update('items', 'or-set', (s) => s.add(sku)) })
const removeItem = (sku: string): CartOp => ({ label: `remove ${sku}`, run: (c) => c.update('items', 'or-set', (s) => s.remove(sku)) })
const addQty = (n: number): CartOp => ({ label: `qty +${n}`, run: (c) => c.update('qty', 'pn-counter', (q) => q.increment(n)) })
const setNote = (note: string): CartOp => ({ label: `note = "${note}"`, run: (c) => c.update('note', 'lww-register', (r) => r.set(note)) })

/** What the demo reports at the end, also used by its test. */
export interface DemoResult {
  readonly converged: boolean
  /** Every region holds the cart the demo says it should (add-wins socks, 8 items, the later note). */
  readonly correct: boolean
  readonly rounds: number
  readonly values: Record<string, Cart>
  readonly conflicts: readonly ConflictEvent[]
  readonly divergedDuringPartition: boolean
}

/** Runs the demo, printing through `log`. */
export function runDemo(log: (line: string) => void = (l) => process.stdout.write(`${l}\n`), seed = 7): DemoResult {
  const regions = ['us-east', 'eu-west', 'ap-south']
  const sim = new Simulation({ spec: cartSpec, regions, seed, latency: 'three-continents', antiEntropyIntervalMs: 500 })
  const conflicts: ConflictEvent[] = []
  const watched = new Set<OrMap>()
  const watch = (): void => {
    for (const r of regions) {
      const replica = sim.region(r).replica
      if (watched.has(replica)) continue
      watched.add(replica)
      replica.onConflict((e) => {
        conflicts.push(e)
        const side = (s: { value: unknown; replica: string }) => `${JSON.stringify(s.value)} by ${s.replica}`
        log(`    conflict at ${r}: ${e.kind} on ${e.path.join('.') || '(root)'} — kept ${e.winner ? side(e.winner) : 'all'}, hid ${e.losers.map(side).join(', ')}`)
      })
    }
  }
  const show = (title: string): void => {
    log(`  ${title}  (t = ${sim.elapsed.toFixed(0)} ms)`)
    for (const [r, v] of Object.entries(sim.values())) log(`    ${r.padEnd(9)} ${JSON.stringify(v)}`)
  }
  const write = (region: string, op: CartOp): void => {
    sim.perform(region, op)
    log(`    ${region.padEnd(9)} ${op.label}`)
  }
  watch()

  log('1. Normal operation: writes in every region, replicated over 36-120 ms links')
  write('us-east', addItem('book'))
  write('eu-west', addItem('socks'))
  write('ap-south', addQty(1))
  sim.advance(300)
  show('after 300 ms')

  log('\n2. ap-south is cut off from the other regions; every region keeps accepting writes')
  sim.isolate('ap-south')
  write('us-east', removeItem('socks'))
  write('us-east', setNote('ring the bell'))
  write('eu-west', addQty(2))
  write('ap-south', addItem('socks'))
  write('ap-south', addQty(5))
  sim.advance(1)
  write('ap-south', setNote('leave at the door'))
  sim.advance(2_000)
  show('during the partition (2 s later)')
  const values = Object.values(sim.values()).map((v) => JSON.stringify(v))
  const divergedDuringPartition = new Set(values).size > 1

  log('\n3. The partition heals; anti-entropy repairs what the partition dropped')
  sim.heal()
  const rounds = sim.converge(50)
  watch()
  show(`converged after ${rounds} anti-entropy round(s)`)
  const stats = sim.stats()
  log(`\n  ${stats.delivered} messages delivered, ${stats.dropped} dropped by the partition, ${stats.bytes} bytes on the wire`)
  // The claims below are checked against what every region holds, not just printed.
  const expected = { items: ['book', 'socks'], qty: 1 + 2 + 5, note: 'leave at the door' }
  const wrong = Object.entries(sim.values()).filter(([, v]) => !deepEqual(v, expected))
  for (const [r, v] of wrong) log(`  WRONG at ${r}: ${JSON.stringify(v)}, expected ${JSON.stringify(expected)}`)
  if (wrong.length === 0) {
    log(`  socks survive: us-east removed them while ap-south concurrently re-added them (add wins).`)
    log(`  quantities add up: 1 + 2 + 5 = ${expected.qty}. The note is the later write by hybrid logical clock.`)
  }
  return { converged: sim.isConverged(), correct: wrong.length === 0, rounds, values: sim.values(), conflicts, divergedDuringPartition }
}
