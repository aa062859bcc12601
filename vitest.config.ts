import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Builds the bundled CLI when it is older than the sources: process tests run it.
    globalSetup: ["test/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Both cores: vitest's default leaves one for itself (one worker on a 2-core CI machine),
    // and many files mostly wait on sockets, child processes and fsync.
    maxWorkers: 2,
    minWorkers: 1
  }
})
