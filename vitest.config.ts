import { defineConfig, defaultServerConditions } from 'vite'
import { availableParallelism } from 'node:os'
import { configDefaults, defineConfig as defineVitest, mergeConfig } from 'vitest/config'

// Packages export their TypeScript sources under the `@concord/source` condition, so tests run
// against src/ without a build step.
const conditions = ['@concord/source', ...defaultServerConditions]

// The Kafka integration files share one single-node broker (and the fault suite restarts its own);
// on a 2-core machine two of them at once starve the broker's group coordinator, so they run one
// file at a time. `npx vitest run` runs that project's files on their own, after the others;
// `npm test` (scripts/test.mjs) runs the two projects in two processes side by side instead.
const kafkaIntegration = 'packages/transport-kafka/src/**/*.integration.test.ts'

export default mergeConfig(
  defineConfig({ resolve: { conditions }, ssr: { resolve: { conditions } } }),
  defineVitest({
    test: {
      testTimeout: 120_000,
      hookTimeout: 120_000,
      pool: 'forks',
      // Vitest's default is one fewer than the cores: one file at a time on a 2-core machine, where
      // much of the run waits on the broker and on timers (the Kafka files, fault tests) while the
      // other core idles. Two at a time took the run from 525 s to 416 s on such a machine
      // (`npx vitest run --maxWorkers=1` against `=2`, same commit).
      maxWorkers: Math.max(2, availableParallelism() - 1),
      // REDIS_URL, else 127.0.0.1:6379, else a private redis-server on a free port when installed.
      globalSetup: ['./scripts/vitest-redis.ts'],
      reporters: ['default', './scripts/summary-reporter.ts'],
      projects: [
        {
          extends: true,
          test: {
            name: 'concord',
            include: ['packages/*/src/**/*.test.ts', 'examples/*/src/**/*.test.ts', 'benchmarks/src/**/*.test.ts', 'scripts/**/*.test.ts'],
            exclude: [...configDefaults.exclude, kafkaIntegration],
          },
        },
        {
          extends: true,
          test: { name: 'kafka', include: [kafkaIntegration], fileParallelism: false },
        },
      ],
    },
  }),
)
