import { runDemo } from './demo.js'

process.stdout.write('Concord demo: a cart replicated active-active across 3 simulated regions\n\n')
const result = runDemo()
process.stdout.write(`\n${result.converged ? 'All regions converged.' : 'NOT CONVERGED'}\n`)
process.exit(result.converged ? 0 : 1)
