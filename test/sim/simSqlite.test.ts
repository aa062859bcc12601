// The SQLite simulator: the full actor stack with the SQLite state machine and a random SQL
// workload under faults (test/sim/full/runSqliteSeed.ts). A few seeds here; `npm run sim --
// --seeds N --sqlite` runs many.
import { describe, expect, it } from "vitest"
import { runSqliteSeed } from "./full/runSqliteSeed.ts"

describe("SQLite simulator", () => {
  it("runs 4 seeds with no violation", () => {
    const failures: string[] = []
    let operations = 0
    for (let seed = 1; seed <= 4; seed++) {
      const result = runSqliteSeed({ seed })
      operations += result.operations
      for (const v of result.violations) failures.push(`seed ${seed}: ${v.invariant}: ${v.detail.slice(0, 300)}`)
    }
    expect(failures).toEqual([])
    expect(operations).toBeGreaterThan(400)
  }, 240_000)

  it("replays a seed identically", () => {
    const first = runSqliteSeed({ seed: 3, faultTicks: 150 })
    const second = runSqliteSeed({ seed: 3, faultTicks: 150 })
    expect(second.traceHash).toBe(first.traceHash)
    expect(second.operations).toBe(first.operations)
  }, 120_000)
})
