// Every Concord suite on AutomergeReplica: merge laws, convergence under each fault class, liveness.
// No oracle: the order of concurrent text inserts and the winner of concurrent map sets are
// Automerge's own choice; convergence is what must hold.
import * as fc from 'fast-check'
import * as A from '@automerge/automerge'
import { describeReplicaSuites, type Regression, type ReplicaSpec } from '@concord/testing'
import { AutomergeReplica } from './automergeReplica.js'

interface Doc {
  text: string
  map: Record<string, number>
}

/** Text edits at random positions (taken modulo the current length) and map writes. */
type DocOp =
  | { readonly type: 'insert'; readonly pos: number; readonly text: string }
  | { readonly type: 'delete'; readonly pos: number; readonly len: number }
  | { readonly type: 'set'; readonly key: string; readonly value: number }
  | { readonly type: 'remove'; readonly key: string }

const key = fc.constantFrom('a', 'b', 'c')
const docOp: fc.Arbitrary<DocOp> = fc.oneof(
  fc.record({ type: fc.constant('insert' as const), pos: fc.nat(64), text: fc.array(fc.constantFrom('a', 'b', 'é', '😀'), { minLength: 1, maxLength: 3 }).map((cs) => cs.join('')) }),
  fc.record({ type: fc.constant('delete' as const), pos: fc.nat(64), len: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ type: fc.constant('set' as const), key, value: fc.integer({ min: -5, max: 5 }) }),
  // Floats too: Automerge's encoder moves about one float in eight by a unit in the last place, and
  // every other replica refused such a change (review finding; integers alone never showed it).
  fc.record({ type: fc.constant('set' as const), key, value: fc.double({ noNaN: true, noDefaultInfinity: true }).filter((v) => !Number.isInteger(v)) }),
  fc.record({ type: fc.constant('remove' as const), key }),
)

// One shared root change, so every replica edits the same text and map objects.
const ROOT = A.save(
  A.change(A.init<Doc>({ actor: '00' }), (d) => {
    d.text = ''
    d.map = {}
  }),
)

/** Moves a UTF-16 index off the second half of a surrogate pair. */
function snap(s: string, i: number): number {
  return i > 0 && i < s.length && /[\uDC00-\uDFFF]/.test(s[i] ?? '') ? i - 1 : i
}

const automergeSpec: ReplicaSpec<Doc, DocOp, AutomergeReplica<Doc>> = {
  name: 'AutomergeReplica',
  create: (replicaId) => new AutomergeReplica<Doc>(replicaId, { initial: A.load<Doc>(ROOT) }),
  op: docOp,
  perform: (r, op) =>
    r.change((d) => {
      switch (op.type) {
        case 'insert':
          return A.splice(d, ['text'], snap(d.text, op.pos % (d.text.length + 1)), 0, op.text)
        case 'delete': {
          if (d.text.length === 0) return
          const at = snap(d.text, op.pos % d.text.length)
          const end = Math.min(d.text.length, at + op.len)
          return A.splice(d, ['text'], at, (end < d.text.length && /[\uDC00-\uDFFF]/.test(d.text[end] ?? '') ? end + 1 : end) - at)
        }
        case 'set':
          d.map[op.key] = op.value
          return
        case 'remove':
          delete d.map[op.key]
          return
      }
    }),
}

// Pinned: an insert and its delete, the delete delivered alone first. Automerge queued it and save()
// dropped it, so state() lost a change (now queued changes travel after the document chunk).
const queuedDelete: Regression<DocOp> = {
  property: 'laws/associative',
  sequence: {
    writers: 3,
    steps: [
      { type: 'op', writer: 0, op: { type: 'insert', pos: 0, text: 'a' } },
      { type: 'op', writer: 0, op: { type: 'delete', pos: 0, len: 1 } },
    ],
    seed: 199926388,
  },
}

// Automerge JS costs ~0.1-1 ms per change and apply, so the default run is smaller than for native types.
const envRuns = process.env['CONCORD_RUNS'] !== undefined || process.env['CONCORD_SOAK'] !== undefined
describeReplicaSuites(automergeSpec, { ...(envRuns ? {} : { numRuns: 50 }), regressions: [queuedDelete] })
