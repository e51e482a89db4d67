import { runDemo } from './demo.js'

process.stdout.write('Concord demo: a cart replicated active-active across 3 simulated regions\n\n')
const result = runDemo()
const ok = result.converged && result.correct
process.stdout.write(`\n${!result.converged ? 'NOT CONVERGED' : result.correct ? 'All regions converged, to the expected cart.' : 'CONVERGED TO THE WRONG CART'}\n`)
process.exit(ok ? 0 : 1)
