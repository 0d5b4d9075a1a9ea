import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Root-only options (not settable per project). The machine has 2 cores and
    // the integration servers already compete for them.
    poolOptions: {
      forks: { maxForks: 2, minForks: 1 },
    },
    // Leave time for global teardown to stop PostgreSQL and Azurite cleanly.
    teardownTimeout: 30_000,
    projects: [
      {
        test: {
          name: 'unit',
          include: ['tests/unit/**/*.test.ts'],
          setupFiles: ['tests/harness/setup.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['tests/integration/**/*.test.ts'],
          globalSetup: ['tests/harness/globalSetup.ts'],
          setupFiles: ['tests/harness/setup.ts'],
          pool: 'forks',
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
