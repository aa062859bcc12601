// The full simulator's linearizability checker is proven against a broken follower read (served
// at the follower's own commit index) and against a lease that is too long: a
// leader that trusts a lease of five election timeouts keeps leading and answering reads while
// a new leader, elected on the other side of a partition, commits writes. Reads in the workload
// go to any node and some clients only read, so such a stale read shows within a few seeds; the
// correct lease (with clocks drifting within its margin) passes the same seed.
import { describe, expect, it } from "vitest"
import { runFullSeed } from "./full/runFullSeed.ts"

const seedsMax = 20

describe("the full simulator catches a broken lease", () => {
  it(`a lease stretched past the election timeout reads stale data within ${seedsMax} seeds, and the real lease passes that seed`, () => {
    let found: { seed: number; invariants: ReadonlyArray<string> } | null = null
    for (let seed = 1; seed <= seedsMax && found === null; seed++) {
      const result = runFullSeed({ seed, mutation: "lease-too-long" })
      if (result.violations.length > 0) found = { seed, invariants: result.violations.map((v) => v.invariant) }
    }
    expect(found).not.toBeNull()
    expect(found?.invariants).toContain("linearizability")
    expect(runFullSeed({ seed: found?.seed ?? 0 }).violations).toEqual([])
  }, 240_000)

  it(`a follower serving reads at its own commit index (not the leader's read index) reads stale data within ${seedsMax} seeds; the real follower read passes that seed`, () => {
    let found: { seed: number; invariants: ReadonlyArray<string> } | null = null
    for (let seed = 1; seed <= seedsMax && found === null; seed++) {
      const result = runFullSeed({ seed, mutation: "follower-reads-local" })
      if (result.violations.length > 0) found = { seed, invariants: result.violations.map((v) => v.invariant) }
    }
    expect(found).not.toBeNull()
    expect(found?.invariants).toContain("linearizability")
    expect(runFullSeed({ seed: found?.seed ?? 0 }).violations).toEqual([])
  }, 240_000)
})
