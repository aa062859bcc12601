// The fast simulator in CI: 200 seeds must be clean, and a seed must replay bit for bit.
import { describe, expect, it } from "vitest"
import { runSeed } from "./fast/runSeed.ts"

describe("fast simulator", () => {
  it("runs 200 seeds with no violation", () => {
    const failures: string[] = []
    let elections = 0
    let committed = 0
    let operations = 0
    let undecided = 0
    for (let seed = 1; seed <= 200; seed++) {
      const result = runSeed({ seed })
      if (result.linearizabilityUndecided) undecided++
      elections += result.elections
      committed += result.committed
      operations += result.operations
      for (const v of result.violations) failures.push(`seed ${seed}: ${v.invariant}: ${v.detail.slice(0, 300)}`)
    }
    expect(failures).toEqual([])
    // Every history was decided: a budget overrun would hide a violation.
    expect(undecided).toBe(0)
    // The runs did real work: leaders were elected and entries committed under faults.
    expect(elections).toBeGreaterThan(200)
    expect(committed).toBeGreaterThan(10_000)
    expect(operations).toBeGreaterThan(10_000)
  }, 240_000)

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
