// The fast simulator in CI: 200 seeds must be clean, and a seed must replay bit for bit.
import { describe, expect, it } from "vitest"
import { runSeed } from "./fast/runSeed.ts"

describe("fast simulator", () => {
  // Twenty seeds per test: a seed runs synchronously, and between tests the worker's event
  // loop answers vitest (one 60-second block makes vitest report an RPC timeout).
  const totals = { elections: 0, committed: 0, operations: 0, undecided: 0, seeds: 0, readBacks: 0 }
  for (let first = 1; first <= 200; first += 20) {
    it(`seeds ${first}–${first + 19} have no violation`, async () => {
      await new Promise<void>((resolve) => setTimeout(resolve, 1))
      const failures: string[] = []
      for (let seed = first; seed < first + 20; seed++) {
        const result = runSeed({ seed })
        if (result.linearizabilityUndecided) totals.undecided++
        totals.elections += result.elections
        totals.committed += result.committed
        totals.operations += result.operations
        totals.readBacks += result.readBacks ?? 0
        totals.seeds++
        for (const v of result.violations) failures.push(`seed ${seed}: ${v.invariant}: ${v.detail.slice(0, 300)}`)
      }
      expect(failures).toEqual([])
    }, 120_000)
  }

  it("the 200 seeds were decided and did real work", () => {
    expect(totals.seeds).toBe(200)
    // Every history was decided: a budget overrun would hide a violation.
    expect(totals.undecided).toBe(0)
    // Leaders were elected and entries committed under faults.
    expect(totals.elections).toBeGreaterThan(200)
    expect(totals.committed).toBeGreaterThan(10_000)
    expect(totals.operations).toBeGreaterThan(10_000)
    // Most seeds run with a tiny entry cache: entries were read back from disk all along.
    expect(totals.readBacks).toBeGreaterThan(10_000)
  })

  it("replays a seed identically", () => {
    const lines: string[] = []
    const first = runSeed({ seed: 42, trace: (line) => lines.push(line) })
    const again: string[] = []
    const second = runSeed({ seed: 42, trace: (line) => again.push(line) })
    expect(second.traceHash).toBe(first.traceHash)
    expect(again).toEqual(lines)
    expect(lines.length).toBeGreaterThan(10)
    expect(runSeed({ seed: 43 }).traceHash).not.toBe(first.traceHash)
  })
})
