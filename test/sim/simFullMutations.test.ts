// The full simulator's checkers are proven against broken reads: a lease that is too long (a
// leader that trusts a lease of five election timeouts keeps leading and answering reads while a
// new leader, elected on the other side of a partition, commits writes), a follower that serves
// a linearizable read at its own commit index instead of the leader's read index, a session read
// that does not wait for the session's index, and a bounded read that ignores how long ago the
// leader was heard from. Reads go to any node and some clients only read, so each shows within a
// few seeds; the correct code passes the same seed.
import { describe, expect, it } from "vitest"
import type { Violation } from "./checkers/safety.ts"
import type { FullMutation } from "./full/runFullSeed.ts"
import { runFullSeed } from "./full/runFullSeed.ts"

const seedsMax = 20

function firstViolation(mutation: FullMutation): { seed: number; invariants: ReadonlyArray<Violation["invariant"]> } | null {
  for (let seed = 1; seed <= seedsMax; seed++) {
    const result = runFullSeed({ seed, mutation })
    if (result.violations.length > 0) return { seed, invariants: result.violations.map((v) => v.invariant) }
  }
  return null
}

const cases: ReadonlyArray<{ readonly mutation: FullMutation; readonly invariant: Violation["invariant"]; readonly what: string }> = [
  { mutation: "lease-too-long", invariant: "linearizability", what: "a lease stretched past the election timeout reads stale data" },
  { mutation: "follower-reads-local", invariant: "linearizability", what: "a follower serving reads at its own commit index reads stale data" },
  { mutation: "session-reads-at-once", invariant: "session", what: "a session read that does not wait for its index misses the session's write" },
  { mutation: "bounded-ignores-lag", invariant: "bounded-staleness", what: "a bounded read that ignores the leader's silence reads past its bound" }
]

describe("the full simulator catches broken reads", () => {
  for (const { mutation, invariant, what } of cases) {
    it(`${what} within ${seedsMax} seeds, and the real code passes that seed`, () => {
      const found = firstViolation(mutation)
      expect(found).not.toBeNull()
      expect(found?.invariants).toContain(invariant)
      expect(runFullSeed({ seed: found?.seed ?? 0 }).violations).toEqual([])
    }, 240_000)
  }
})
