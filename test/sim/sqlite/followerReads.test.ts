// Follower reads under the SQLite simulator: half the linearizable reads of each seed go to the
// picked node's own copy (ReplicatedDatabases.read, any role), under the same checks as leader
// reads — every insert acknowledged before the read began is seen, and an insert seen while in
// flight must end up committed. Proven by the mutation it exists for: a node that serves a
// linearizable read from its copy at once, without the leader's read index. Seeds with follower
// readers (clients that only read, back to back, at nodes that do not lead) make reads arrive
// while a follower's read round is in flight, so the coalescing of read rounds runs; they prove
// its mutation: a read answered by a round already in flight when it arrived.
import { describe, expect, it } from "vitest"
import { runSqliteSeed } from "../full/runSqliteSeed.ts"
import { ciSchedule } from "./seeds.ts"

const seeds = 12

describe("SQLite simulator with follower reads", () => {
  let operations = 0
  let ownCopyReads = 0
  for (let seed = 1; seed <= seeds; seed++) {
    it(`seed ${seed}`, async () => {
      await new Promise<void>((resolve) => setTimeout(resolve, 1))
      const result = runSqliteSeed({ seed, followerReads: true, ...ciSchedule })
      operations += result.operations
      ownCopyReads += result.ownCopyReads
      expect(result.violations.map((v) => `${v.invariant}: ${v.detail.slice(0, 300)}`)).toEqual([])
    }, 120_000)
  }

  // Seeds that once failed outside the range above: a former leader whose step-down discard a
  // full disk interrupted served a follower read, whose reader deleted the WAL holding the
  // committed frames (a malformed file on node 1: src/sqlite/README.md "Whose files").
  for (const [seed, followerReaders] of [[15, 0], [24, 4]] as const) {
    it(`seed ${seed}${followerReaders > 0 ? ` with ${followerReaders} follower readers` : ""} (regression: a read before an interrupted discard finished)`, async () => {
      await new Promise<void>((resolve) => setTimeout(resolve, 1))
      const result = runSqliteSeed({ seed, followerReads: true, followerReaders, ...ciSchedule })
      expect(result.ownCopyReads).toBeGreaterThan(0)
      expect(result.violations.map((v) => `${v.invariant}: ${v.detail.slice(0, 300)}`)).toEqual([])
    }, 120_000)
  }

  // The same under the disk mix (most faults full disks, on the leader more often than not): before
  // the fix 10 of its seeds 1–30 failed so (2 and 4 among these), every one also with the fix and
  // only the mutation below switched on.
  const diskSeeds = 4
  for (let seed = 1; seed <= diskSeeds; seed++) {
    it(`seed ${seed} under the disk mix`, async () => {
      await new Promise<void>((resolve) => setTimeout(resolve, 1))
      const result = runSqliteSeed({ seed, followerReads: true, faultMix: "disk", ...ciSchedule })
      expect(result.violations.map((v) => `${v.invariant}: ${v.detail.slice(0, 300)}`)).toEqual([])
    }, 120_000)
  }

  it("mutation: an own-copy read opening the file before an interrupted step-down discard finished is caught (a malformed file)", async () => {
    await new Promise<void>((resolve) => setTimeout(resolve, 1))
    const result = runSqliteSeed({ seed: 15, followerReads: true, mutation: "read-before-discard", ...ciSchedule })
    expect(result.violations.some((v) => v.invariant === "convergence" && /integrity_check/.test(v.detail))).toBe(true)
  }, 120_000)

  it("did real work, followers serving reads among it", () => {
    expect(operations).toBeGreaterThan(seeds * 30)
    expect(ownCopyReads).toBeGreaterThan(seeds * 2)
  })

  const readerSeeds = 6
  const followerReaders = 4
  for (let seed = 1; seed <= readerSeeds; seed++) {
    it(`seed ${seed} with ${followerReaders} follower readers`, async () => {
      await new Promise<void>((resolve) => setTimeout(resolve, 1))
      const result = runSqliteSeed({ seed, followerReads: true, followerReaders, ...ciSchedule })
      expect(result.ownCopyReads).toBeGreaterThan(0)
      expect(result.violations.map((v) => `${v.invariant}: ${v.detail.slice(0, 300)}`)).toEqual([])
    }, 120_000)
  }

  // Caught when a write is acknowledged between a round's request and a read joining it: with 8
  // readers per follower ~40 % of seeds catch it (4 readers: ~17 %), so 12 seeds miss it with a
  // chance of ~0.1 % whatever a change elsewhere does to the schedules.
  const mutationSeeds = 12
  const mutationReaders = 8
  it(`mutation: a read answered by a read round already in flight when it arrived is caught within ${mutationSeeds} seeds with ${mutationReaders} follower readers`, async () => {
    const found: Array<string> = []
    for (let seed = 1; seed <= mutationSeeds && found.length === 0; seed++) {
      await new Promise<void>((resolve) => setTimeout(resolve, 1))
      const result = runSqliteSeed({ seed, followerReads: true, followerReaders: mutationReaders, mutation: "read-joins-inflight-round", ...ciSchedule })
      found.push(...result.violations.map((v) => `${v.invariant}: ${v.detail}`))
    }
    expect(found.some((v) => /^linearizability: (client|reader) \d+ .*read \d+ of \d+ acknowledged inserts/.test(v))).toBe(true)
  }, 600_000)

  it("mutation: a node serving linearizable reads from its copy at once is caught (a read misses acknowledged inserts)", async () => {
    const found: Array<string> = []
    for (let seed = 1; seed <= 25 && found.length === 0; seed++) {
      await new Promise<void>((resolve) => setTimeout(resolve, 1))
      const result = runSqliteSeed({ seed, followerReads: true, mutation: "own-copy-reads-at-once", ...ciSchedule })
      found.push(...result.violations.map((v) => `${v.invariant}: ${v.detail}`))
    }
    expect(found.some((v) => /^linearizability: client \d+ read \d+ of \d+ acknowledged inserts/.test(v))).toBe(true)
  }, 600_000)
})
