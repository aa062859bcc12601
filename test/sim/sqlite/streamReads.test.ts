// Streamed reads under the SQLite simulator: every client read goes the way the gateway sends
// QUERY_SQL (`querySqlStream`), in batches of two rows taken a tick apart while writes, faults and
// leadership changes go on, under the same checks as before — every insert acknowledged before the
// read began is seen, an insert seen while in flight must end up committed, and no crash. Proven
// by the pinning mutation the checks exist for (a reader that serves its snapshot before Raft
// commits it), caught on the streamed path too.
import { describe, expect, it } from "vitest"
import { runSqliteSeed } from "../full/runSqliteSeed.ts"
import { ciSchedule } from "./seeds.ts"

const seeds = 10

describe("SQLite simulator with streamed reads", () => {
  let streamedReads = 0
  for (let seed = 1; seed <= seeds; seed++) {
    it(`seed ${seed}`, async () => {
      await new Promise<void>((resolve) => setTimeout(resolve, 1))
      const result = runSqliteSeed({ seed, streamReads: true, ...ciSchedule })
      streamedReads += result.streamedReads
      expect(result.violations.map((v) => `${v.invariant}: ${v.detail.slice(0, 300)}`)).toEqual([])
    }, 120_000)
  }

  it("reads did stream (more than one batch) in those seeds", () => {
    expect(streamedReads).toBeGreaterThan(20)
  })

  // The dirty read shows only if the pending write it saw is then lost: the leader that served it
  // must lose leadership before that write reaches a quorum. Under the plain no-disk mix that
  // happened in 1 seed of 160 with the commit index broadcast (seed 18) and none of 160 with it
  // carried, while the bug served uncommitted snapshots as often either way (~8 a seed). A
  // partition that cuts the leader off alone makes it happen: seed 17 catches it on both settings.
  for (const carryCommit of [true, false]) {
    it(`a streamed reader that serves its snapshot before Raft commits it is caught (a dirty read; commit index ${carryCommit ? "carried" : "broadcast"})`, async () => {
      const options = { streamReads: true, faultMix: "no-disk", isolateLeader: true, carryCommit, ...ciSchedule } as const
      let caught: ReadonlyArray<string> = []
      let seed = 0
      while (seed < 20 && caught.length === 0) {
        await new Promise<void>((resolve) => setTimeout(resolve, 1))
        const result = runSqliteSeed({ seed: ++seed, mutation: "serve-uncommitted", ...options })
        caught = result.violations.map((v) => `${v.invariant}: ${v.detail}`)
      }
      expect(caught.some((v) => /dirty read/.test(v))).toBe(true)
      // The adjusted faults flag only the bug: the real code passes the seed that caught it.
      expect(runSqliteSeed({ seed, ...options }).violations).toEqual([])
    }, 600_000)
  }
})
