// Seed 49 of the SQLite simulator at its full schedule (`npm run sim -- --sqlite --seed 49`; the
// CI shards run it on the short one, where it never failed): a one-node cluster shut down (a
// crash) with its main file checkpointed at 138, its commits 139–153 only in the WAL and the
// writer's entry 154 proposed. The applier wrote 154's pages over the stale file during the
// shutdown and recorded the file as current; the restart deleted the WAL: 31 reads missed
// acknowledged inserts and the database was malformed. test/sqlite/shutdownRelease.test.ts has
// the same steps on one machine. Mutation: `forget-kept-wal` (the code before the fix) fails it.
import { describe, expect, it } from "vitest"
import { runSqliteSeed } from "../full/runSqliteSeed.ts"

describe("SQLite simulator seed 49 (a writer's shutdown release, then an entry applied)", () => {
  it("has no violation, and has them with the bug before the fix", async () => {
    await new Promise<void>((resolve) => setTimeout(resolve, 1))
    const fixed = runSqliteSeed({ seed: 49 })
    expect(fixed.violations.map((v) => `${v.invariant}: ${v.detail.slice(0, 300)}`)).toEqual([])
    expect(fixed.operations).toBeGreaterThan(100)
    await new Promise<void>((resolve) => setTimeout(resolve, 1))
    const mutated = runSqliteSeed({ seed: 49, mutation: "forget-kept-wal" })
    expect(mutated.violations.some((v) => v.invariant === "linearizability")).toBe(true)
  }, 120_000)
})
