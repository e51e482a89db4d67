import { runStoreContract } from '@concord/testing'
import { MemoryStore } from './memoryStore.js'

// Durable for the life of the object: reopen() is a restart over the same memory.
runStoreContract('memory', () => ({
  open: async () => new MemoryStore(),
  reopen: async (closed) => (closed as MemoryStore).reopen(),
}))
