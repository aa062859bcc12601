// Three nodes in simulated time, each actor's mailbox small (8), snapshots copied slowly (a 4 KiB
// chunk per 10 simulated ms: ~2 MB takes seconds) and taken by every node at the same applied
// index, while one client keeps writing. A follower whose applier waited for its snapshot (the
// behaviour before the copy-on-write, `followerSnapshotWaits`) stopped taking applies once its
// mailbox was full; then its Raft actor blocked on the send and stopped acknowledging; with both
// followers snapshotting the leader could not commit for the rest of the copy (here it even
// lost its leadership: its check-quorum heard from no follower). With the copy beside the
// applier, writes go on.
import { Clock, Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import type { SqliteMachineBugs } from "../../src/sqlite/SqliteMachine.ts"
import { exec, makeCluster, session, simulate } from "./clusterHelpers.ts"
import { tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))

/** The longest wait between two acknowledged writes of a client writing back to back while both
 * followers take their snapshot, and the snapshots the followers took. */
function writesDuringSnapshots(bugs?: SqliteMachineBugs) {
  const dir = tempDirectory("tqlite-follower-snapshot-cluster-")
  dirs.push(dir)
  return simulate(Effect.gen(function*() {
    const cluster = makeCluster(dir.path, {
      mailboxCapacity: 8,
      snapshotEveryEntries: 40,
      pacedSnapshots: true,
      snapshotChunkMs: 10,
      // Messages take 0–4 ms: the writes take simulated time, beside the copies.
      delayMsMax: 4,
      ...(bugs !== undefined ? { machineBugs: bugs } : {})
    })
    yield* cluster.bootstrap([1, 2, 3])
    const leader = yield* cluster.awaitLeader()
    const writes = yield* session(leader)
    yield* exec(writes, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    // ~2 MB in 8 writes: each node's copy takes ~5 s of simulated time at one page per 10 ms.
    for (let i = 0; i < 8; i++) yield* exec(writes, "INSERT INTO t(v) SELECT randomblob(3000) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 80) SELECT i FROM n)")
    const acks: Array<number> = [yield* Clock.currentTimeMillis]
    let failure: string | null = null
    // Small writes back to back, through the index where every node snapshots (40) and well past.
    for (let i = 0; i < 150 && failure === null; i++) {
      const outcome = yield* Effect.either(exec(writes, "INSERT INTO t(v) VALUES (randomblob(100))"))
      if (outcome._tag === "Left") failure = outcome.left._tag
      acks.push(yield* Clock.currentTimeMillis)
    }
    let longestGapMs = 0
    for (let i = 1; i < acks.length; i++) longestGapMs = Math.max(longestGapMs, acks[i]! - acks[i - 1]!)
    const followers = cluster.up().filter((node) => node.id !== leader.id)
    const followerSnapshots = followers.reduce((sum, node) => sum + node.machine.stats.snapshots, 0)
    yield* cluster.shutdown()
    return { longestGapMs, followerSnapshots, writesMs: acks[acks.length - 1]! - acks[0]!, failure }
  }))
}

describe("both followers take a snapshot while a client writes", () => {
  it("the leader goes on committing: no write waits for a follower's copy", () => {
    const result = writesDuringSnapshots()
    console.log(`copy beside the applier: longest wait between writes ${result.longestGapMs} ms, 150 writes in ${result.writesMs} ms`)
    expect(result.failure).toBeNull()
    expect(result.followerSnapshots).toBeGreaterThanOrEqual(2)
    expect(result.longestGapMs).toBeLessThan(500)
  }, 120_000)

  it("mutation: with each follower's applier waiting for its copy (main's behaviour), the leader stops committing and loses its quorum", () => {
    const result = writesDuringSnapshots({ followerSnapshotWaits: true })
    console.log(`applier waiting for the copy: longest wait between writes ${result.longestGapMs} ms, 150 writes in ${result.writesMs} ms, ${result.failure ?? "no write failed"}`)
    expect(result.followerSnapshots).toBeGreaterThanOrEqual(2)
    // The leader could not commit: a write waited seconds, or the leader lost its quorum
    // (check-quorum: its followers stopped answering) and the write failed.
    expect(result.longestGapMs > 2000 || result.failure === "SqlLeadershipLost").toBe(true)
  }, 120_000)
})
