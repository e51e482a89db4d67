import { defineConfig, defaultServerConditions } from 'vite'
import { defineConfig as defineVitest, mergeConfig } from 'vitest/config'

// Packages export their TypeScript sources under the `@concord/source` condition, so tests run
// against src/ without a build step.
const conditions = ['@concord/source', ...defaultServerConditions]

export default mergeConfig(
  defineConfig({ resolve: { conditions }, ssr: { resolve: { conditions } } }),
  defineVitest({
    test: {
      include: ['packages/*/src/**/*.test.ts', 'examples/*/src/**/*.test.ts', 'benchmarks/src/**/*.test.ts'],
      testTimeout: 120_000,
      hookTimeout: 120_000,
      pool: 'forks',
      reporters: ['default', './scripts/summary-reporter.ts'],
    },
  }),
)
