import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runStoreContract } from '@concord/testing'
import { FileStore } from './fileStore.js'

// A temporary directory per test; reopen opens the same file again, as a restarted process would.
runStoreContract('file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'concord-store-contract-'))
  const path = join(dir, 'store.db')
  return {
    open: () => FileStore.open(path),
    reopen: () => FileStore.open(path),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  }
})
