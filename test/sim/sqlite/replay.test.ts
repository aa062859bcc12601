// The SQLite simulator: the full actor stack with the SQLite state machine and a random SQL
// workload under faults (test/sim/full/runSqliteSeed.ts). The seeds CI runs are in
// seeds1..4.test.ts; here, a full-length seed passes and a seed replays bit for bit.
import { describe, expect, it } from "vitest"
import { runSqliteSeed } from "../full/runSqliteSeed.ts"

describe("SQLite simulator", () => {
  it("runs a full-length seed with no violation", () => {
    const result = runSqliteSeed({ seed: 1 })
    expect(result.violations).toEqual([])
    expect(result.operations).toBeGreaterThan(100)
  }, 240_000)

  it("replays a seed identically", () => {
    const first = runSqliteSeed({ seed: 3, faultTicks: 150, healTicks: 60 })
    const second = runSqliteSeed({ seed: 3, faultTicks: 150, healTicks: 60 })
    expect(second.traceHash).toBe(first.traceHash)
    expect(second.operations).toBe(first.operations)
  }, 120_000)
})
