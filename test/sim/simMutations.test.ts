// The checkers are proven: the simulator run against deliberately broken variants reports a
// violation within a bounded number of seeds.
import { describe, expect, it } from "vitest"
import type { Mutation } from "./fast/runSeed.ts"
import { runSeed } from "./fast/runSeed.ts"

const found = new Map<Mutation, { seed: number; invariants: ReadonlyArray<string> } | null>()

/** The first seed (up to seedsMax) whose run reports a violation; remembered per mutation. */
function firstViolation(mutation: Mutation, seedsMax: number): { seed: number; invariants: ReadonlyArray<string> } | null {
  const known = found.get(mutation)
  if (known !== undefined && (known === null || known.seed <= seedsMax)) return known
  const result = search(mutation, seedsMax)
  found.set(mutation, result)
  return result
}

function search(mutation: Mutation, seedsMax: number): { seed: number; invariants: ReadonlyArray<string> } | null {
  for (let seed = 1; seed <= seedsMax; seed++) {
    const result = runSeed({ seed, mutation })
    if (result.violations.length > 0) return { seed, invariants: result.violations.map((v) => v.invariant) }
  }
  return null
}

describe("checkers catch broken Raft variants", () => {
  it("granting two votes in one term breaks election safety", () => {
    const found = firstViolation("double-vote", 50)
    expect(found).not.toBeNull()
    expect(found?.invariants).toContain("election-safety")
  })

  it("forgetting to persist the vote is a durability violation", () => {
    const found = firstViolation("forget-vote", 50)
    expect(found).not.toBeNull()
    expect(found?.invariants).toContain("durability")
  })

  it("committing an earlier term's entry by counting replicas is caught", () => {
    const found = firstViolation("commit-old-term", 400)
    expect(found).not.toBeNull()
    expect(found?.invariants.some((i) => i === "linearizability" || i === "log-matching" || i === "leader-completeness" || i === "state-machine-safety")).toBe(true)
  }, 240_000)

  it("a follower serving a read at its own commit index instead of the leader's read index is caught", () => {
    const found = firstViolation("follower-reads-local", 50)
    expect(found).not.toBeNull()
    expect(found?.invariants).toContain("linearizability")
  })

  it("a read-back of evicted entries that serves another entry's data is caught", () => {
    // The seeds' tiny entry caches make every node read entries back all the time; a wrong one
    // is applied and sent to followers under the right index and term.
    const found = firstViolation("load-wrong-entry", 20)
    expect(found).not.toBeNull()
    expect(found?.invariants).toContain("state-machine-safety")
  })

  it("the correct core passes the seeds that catch each bug", () => {
    for (const mutation of ["double-vote", "forget-vote", "commit-old-term", "follower-reads-local", "load-wrong-entry"] as const) {
      const found = firstViolation(mutation, 400)
      expect(found).not.toBeNull()
      expect(runSeed({ seed: found?.seed ?? 0 }).violations).toEqual([])
    }
  }, 240_000)
})
