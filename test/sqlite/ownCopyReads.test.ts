// SQL reads from a follower's own copy (ReplicatedDatabases.read), three nodes in simulated time:
// each consistency level on a follower whose appends are held back, the own-copy reader's cache
// dropped when pages arrive, and the two bugs these tests exist to catch (a follower answering a
// linearizable read before it applied the read index; a reader that keeps its stale cache).
import { Effect, Exit, Fiber } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import type { ReadConsistency } from "../../src/actors/RaftActor.ts"
import type { Rows, SqlFailure } from "../../src/sqlite/Sql.ts"
import type { LiveNode, SqliteClusterOptions } from "../sim/full/SqliteCluster.ts"
import { exec, makeCluster, session, simulate, sleepTicks } from "./clusterHelpers.ts"
import { tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))
const newDir = () => {
  const dir = tempDirectory("tqlite-own-copy-")
  dirs.push(dir)
  return dir.path
}

const linearizable: ReadConsistency = { level: "linearizable" }
const local: ReadConsistency = { level: "local" }

/** The ids a read returned (null: the statement went the write way). */
const idsOf = (rows: Rows | null): Array<number> | null => (rows === null ? null : rows.rows.map((row) => Number(row[0])))
const read = (node: LiveNode, consistency: ReadConsistency, sql = "SELECT id FROM t ORDER BY id") => Effect.map(node.dbs.read("main", sql, [], consistency), idsOf)

/** A cluster with table t holding row 1, and one of its followers. */
const started = (options: Partial<SqliteClusterOptions>) =>
  Effect.gen(function*() {
    const cluster = makeCluster(newDir(), { limits: { sessionWaitMs: 300 }, ...options })
    yield* cluster.bootstrap([1, 2, 3])
    const leader = yield* cluster.awaitLeader()
    const writes = yield* session(leader)
    yield* exec(writes, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    yield* exec(writes, "INSERT INTO t(id, v) VALUES (1, 'a')")
    expect(yield* cluster.awaitConverged()).toBe(true)
    const follower = cluster.up().find((n) => n.id !== leader.id)!
    return { cluster, leader, writes, follower }
  })

/** Holds back the AppendEntries to `follower` (heartbeats still pass, so it keeps its leader and
 * stays a follower, but learns of no new entry). */
const holdAppends = (cluster: ReturnType<typeof makeCluster>, follower: LiveNode) => {
  cluster.dropIf = (_from, message) => message.to === follower.id && message._tag === "AppendEntries"
}

/** What a linearizable read on a follower returns when the write it must see was committed while
 * the follower's appends were held back (released after 20 ticks). */
function linearizableAfterHeldBackWrite(options: Partial<SqliteClusterOptions>) {
  return simulate(Effect.gen(function*() {
    const { cluster, writes, follower } = yield* started(options)
    holdAppends(cluster, follower)
    yield* exec(writes, "INSERT INTO t(id, v) VALUES (2, 'b')")
    const reading = yield* Effect.fork(read(follower, linearizable))
    yield* sleepTicks(20)
    const doneWhileHeld = (yield* Fiber.poll(reading))._tag === "Some"
    cluster.dropIf = null
    const seen = yield* Fiber.join(reading)
    yield* cluster.shutdown()
    return { seen, doneWhileHeld }
  }))
}

describe("reads from a follower's own copy", () => {
  it("linearizable: waits for the leader's read index, then sees the write committed before it", () => {
    const result = linearizableAfterHeldBackWrite({})
    expect(result.doneWhileHeld).toBe(false)
    expect(result.seen).toEqual([1, 2])
  })

  it("mutation: a follower that serves before it applied the read index is caught", () => {
    const result = linearizableAfterHeldBackWrite({ databasesBugs: { ownCopyReadsAtOnce: true } })
    expect(result.seen).toEqual([1])
  })

  it("mutation: the Raft core's follower serving at its own commit index is caught too", () => {
    const result = linearizableAfterHeldBackWrite({ raftConfig: () => ({ bugs: { followerReadsLocal: true } }) })
    expect(result.seen).toEqual([1])
  })

  it("local never waits; session waits for its index (SqlStale past sessionWaitMs); a write goes the write way", () => {
    const result = simulate(Effect.gen(function*() {
      const { cluster, leader, writes, follower } = yield* started({})
      holdAppends(cluster, follower)
      yield* exec(writes, "INSERT INTO t(id, v) VALUES (2, 'b')")
      const index = yield* leader.dbs.appliedIndex
      const localNow = yield* read(follower, local)
      const sessionHeld = yield* Effect.exit(read(follower, { level: "session", index }))
      const notARead = yield* read(follower, local, "INSERT INTO t(id, v) VALUES (3, 'c')")
      cluster.dropIf = null
      const sessionAfter = yield* read(follower, { level: "session", index })
      const malformed = yield* Effect.exit(read(follower, { level: "session", index: -1 }))
      yield* cluster.shutdown()
      return { localNow, sessionHeld, notARead, sessionAfter, malformed }
    }))
    expect(result.localNow).toEqual([1])
    expect(failureOf(result.sessionHeld)).toMatchObject({ _tag: "SqlStale", reason: "session" })
    expect(result.notARead).toBeNull()
    expect(result.sessionAfter).toEqual([1, 2])
    expect(failureOf(result.malformed)).toMatchObject({ _tag: "SqlError", code: 21 })
  })

  it("bounded: served while the leader is heard from, SqlStale (lag) once it has not been for maxLagMs", () => {
    const result = simulate(Effect.gen(function*() {
      const { cluster, follower } = yield* started({})
      // A few heartbeats, each vouching for the leader's commit index under its lease.
      yield* sleepTicks(5)
      const fresh = yield* read(follower, { level: "bounded", maxLagMs: 200 })
      cluster.isolate(follower.id)
      yield* sleepTicks(30)
      const lagging = yield* Effect.exit(read(follower, { level: "bounded", maxLagMs: 200 }))
      const localStill = yield* read(follower, local)
      yield* cluster.shutdown()
      return { fresh, lagging, localStill }
    }))
    expect(result.fresh).toEqual([1])
    expect(failureOf(result.lagging)).toMatchObject({ _tag: "SqlStale", reason: "lag" })
    expect(result.localStill).toEqual([1])
  })
})

/** Rows a follower reads locally after a later write, a new table and a file that shrank, on
 * the one reader connection it keeps. */
function ownCopyAfterChanges(options: Partial<SqliteClusterOptions>) {
  return simulate(Effect.gen(function*() {
    const { cluster, writes, follower } = yield* started(options)
    const first = yield* read(follower, local)
    yield* exec(writes, "INSERT INTO t(id, v) VALUES (2, zeroblob(20000))")
    yield* exec(writes, "CREATE TABLE u(x)")
    yield* exec(writes, "INSERT INTO u(x) VALUES (42)")
    expect(yield* cluster.awaitConverged()).toBe(true)
    const second = yield* read(follower, local)
    const newTable = yield* Effect.map(follower.dbs.read("main", "SELECT x FROM u", [], local), idsOf)
    yield* exec(writes, "DELETE FROM t WHERE id = 2")
    yield* exec(writes, "VACUUM")
    expect(yield* cluster.awaitConverged()).toBe(true)
    const third = yield* read(follower, local)
    const pages = yield* Effect.map(follower.dbs.read("main", "PRAGMA page_count", [], local), idsOf)
    const stats = follower.machine.ownCopyStats
    yield* cluster.shutdown()
    return { first, second, newTable, third, pages, stats }
  }))
}

describe("after a restart", () => {
  it("a node reads its files only once its replay passed the log's end at boot (SqlStale replaying before)", () => {
    const result = simulate(Effect.gen(function*() {
      const { cluster, follower } = yield* started({})
      // What a restart sets: the log's last index at boot, which the replay has not reached yet.
      const bootLast = (yield* follower.raft.status).lastIndex
      follower.machine.ownCopyFromIndex = bootLast + 1
      const early = yield* Effect.exit(read(follower, local))
      follower.machine.ownCopyFromIndex = bootLast
      const later = yield* read(follower, local)
      yield* cluster.shutdown()
      return { early, later }
    }))
    expect(failureOf(result.early)).toMatchObject({ _tag: "SqlStale", reason: "replaying" })
    expect(result.later).toEqual([1])
  })
})

describe("the own-copy reader's cache", () => {
  it("one connection sees every change the applier writes into the file", () => {
    const result = ownCopyAfterChanges({})
    expect(result.first).toEqual([1])
    expect(result.second).toEqual([1, 2])
    expect(result.newTable).toEqual([42])
    expect(result.third).toEqual([1])
    expect(result.pages![0]).toBeLessThan(6)
    expect(result.stats.opens).toBe(1)
    expect(result.stats.refreshes).toBe(2)
  })

  it("mutation: a reader that keeps its cache serves stale rows", () => {
    const result = simulate(Effect.gen(function*() {
      const { cluster, writes, follower } = yield* started({ machineBugs: { ownCopyStaleCache: true } })
      const first = yield* read(follower, local)
      yield* exec(writes, "INSERT INTO t(id, v) VALUES (2, 'b')")
      expect(yield* cluster.awaitConverged()).toBe(true)
      const second = yield* read(follower, local)
      yield* cluster.shutdown()
      return { first, second }
    }))
    expect(result.first).toEqual([1])
    expect(result.second).toEqual([1])
  })
})

function failureOf<A>(exit: Exit.Exit<A, SqlFailure>): SqlFailure | undefined {
  return Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : undefined
}
