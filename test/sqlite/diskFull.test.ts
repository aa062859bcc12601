// A full disk under the replicated SQLite (issue 13), in the simulator's full cluster (real SQLite
// files, Raft logs on simulated disks switched "full"). A single node answers writes with
// SQLITE_FULL (13) while its log cannot persist and resumes once space is back; in three nodes
// the full leader hands over, the others write on, and every node ends with the same content.
import { Effect, Fiber } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { contentOf, exec, filesOf, makeCluster, query, rowsOf, session, simulate, sleepTicks } from "./clusterHelpers.ts"
import { tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => {
  for (const dir of dirs) dir.remove()
})
const newDir = () => {
  const dir = tempDirectory("tqlite-diskfull-")
  dirs.push(dir)
  return dir.path
}

describe("disk full under replicated SQLite", () => {
  it("a single node answers SQLITE_FULL while its log cannot persist, and writes again once space is back", () => {
    const outcome = simulate(Effect.gen(function*() {
      const cluster = makeCluster(newDir())
      yield* cluster.bootstrap([1])
      const leader = yield* cluster.awaitLeader()
      const s = yield* session(leader)
      yield* exec(s, "CREATE TABLE t (v INTEGER)")
      yield* exec(s, "INSERT INTO t VALUES (1)")
      cluster.diskOf(1)!.driver.setFull(true)
      // The write that meets the full disk is in the log's unstable tail: its outcome stays open
      // until the log can persist it.
      const inFlight = yield* Effect.fork(Effect.either(exec(s, "INSERT INTO t VALUES (2)")))
      yield* sleepTicks(20)
      const refused = yield* Effect.either(exec(s, "INSERT INTO t VALUES (3)"))
      const health = yield* leader.raft.condition
      cluster.diskOf(1)!.driver.setFull(false)
      const second = yield* Fiber.join(inFlight)
      yield* exec(s, "INSERT INTO t VALUES (4)")
      const rows = rowsOf(yield* query(s, "SELECT v FROM t ORDER BY v"))
      yield* cluster.shutdown()
      return { refused, second, rows, health }
    }))
    expect(outcome.refused._tag).toBe("Left")
    if (outcome.refused._tag === "Left") {
      expect(outcome.refused.left).toMatchObject({ _tag: "SqlError", code: 13 })
      expect(outcome.refused.left.message).toMatch(/^disk full: the log cannot write/)
    }
    expect(outcome.health.diskFull.map((e) => e.part)).toEqual(["log"])
    expect(outcome.second._tag).toBe("Right")
    // 3 was refused before it ran: never in the database.
    expect(outcome.rows).toEqual([[1n], [2n], [4n]])
  })

  it("in three nodes the full leader hands over, writes go on, and once space is back every node holds the same rows", () => {
    const baseDir = newDir()
    const outcome = simulate(Effect.gen(function*() {
      const cluster = makeCluster(baseDir)
      yield* cluster.bootstrap([1, 2, 3])
      const first = yield* cluster.awaitLeader()
      const s1 = yield* session(first)
      yield* exec(s1, "CREATE TABLE t (v INTEGER)")
      for (let v = 1; v <= 5; v++) yield* exec(s1, "INSERT INTO t VALUES (?)", [v])
      cluster.diskOf(first.id)!.driver.setFull(true)
      yield* Effect.fork(Effect.either(exec(s1, "INSERT INTO t VALUES (6)")))
      const second = yield* cluster.awaitLeader(1000, first.id)
      const s2 = yield* session(second)
      const acknowledged: number[] = [1, 2, 3, 4, 5]
      for (let v = 7; v <= 16; v++) {
        yield* exec(s2, "INSERT INTO t VALUES (?)", [v])
        acknowledged.push(v)
      }
      const full = (yield* first.raft.condition).diskFull.map((e) => e.part)
      const firstRole = (yield* first.raft.status).role
      cluster.diskOf(first.id)!.driver.setFull(false)
      for (let v = 17; v <= 20; v++) {
        yield* exec(s2, "INSERT INTO t VALUES (?)", [v])
        acknowledged.push(v)
      }
      const converged = yield* cluster.awaitConverged(2000)
      const rows = rowsOf(yield* query(s2, "SELECT v FROM t ORDER BY v")).map((r) => Number(r[0]))
      const after = (yield* first.raft.condition).diskFull
      yield* sleepTicks(10)
      yield* cluster.shutdown()
      return { full, firstRole, converged, rows, acknowledged, after, files: filesOf(cluster).filter((f) => f.id !== second.id) }
    }))
    expect(outcome.full).toContain("log")
    expect(outcome.firstRole).not.toBe("leader")
    expect(outcome.converged).toBe(true)
    expect(outcome.after).toEqual([])
    for (const v of outcome.acknowledged) expect(outcome.rows).toContain(v)
    // The followers' files (closed databases: the formerly full node and the third) hold exactly
    // what the new leader serves: rows as [rowid, v].
    for (const file of outcome.files) {
      const content = contentOf(file.path)
      const values = content.split("\n").slice(1).map((line) => JSON.parse(line.replace(/^t:/, "")) as [number, number]).map((row) => row[1])
      expect(values).toEqual(outcome.rows)
    }
  })

  it("followers whose page files cannot grow (ENOSPC part way through a write) retry without publishing, the leader writes on, and all converge", () => {
    const baseDir = newDir()
    const outcome = simulate(Effect.gen(function*() {
      const cluster = makeCluster(baseDir, { fsync: "sync" })
      yield* cluster.bootstrap([1, 2, 3])
      const leader = yield* cluster.awaitLeader()
      const s = yield* session(leader)
      yield* exec(s, "CREATE TABLE t (v INTEGER, pad BLOB)")
      yield* exec(s, "INSERT INTO t VALUES (1, randomblob(10000))")
      yield* cluster.awaitConverged()
      const followers = cluster.up().filter((n) => n.id !== leader.id)
      // Only the followers' SQLite files: their page appliers meet it (the leader's SQLite and
      // every log write on).
      const full = (on: boolean) => followers.forEach((n) => cluster.sqliteDiskOf(n.id)!.driver.setFull(on))
      full(true)
      for (let v = 2; v <= 6; v++) yield* exec(s, "INSERT INTO t VALUES (?, randomblob(10000))", [v])
      yield* sleepTicks(30)
      const during = yield* Effect.forEach(followers, (n) => n.raft.condition)
      full(false)
      const converged = yield* cluster.awaitConverged(2000)
      yield* exec(s, "INSERT INTO t VALUES (7, randomblob(10000))")
      yield* cluster.awaitConverged(2000)
      const after = yield* Effect.forEach(followers, (n) => n.raft.condition)
      const rows = rowsOf(yield* query(s, "SELECT v FROM t ORDER BY v")).map((r) => Number(r[0]))
      yield* cluster.shutdown()
      return { during, converged, after, rows, files: filesOf(cluster).filter((f) => f.id !== leader.id) }
    }))
    // Every retry failed while the disk was full: the episode stayed open (a failed apply counted
    // as done would have let the next attempt "succeed" without its pages).
    for (const condition of outcome.during) expect(condition.diskFull.map((e) => e.part)).toEqual(["state machine"])
    expect(outcome.converged).toBe(true)
    for (const condition of outcome.after) {
      expect(condition.diskFull).toEqual([])
      expect(condition.stopped).toEqual([])
    }
    expect(outcome.rows).toEqual([1, 2, 3, 4, 5, 6, 7])
    for (const file of outcome.files) {
      expect(contentOf(file.path).split("\n").slice(1).map((line) => (JSON.parse(line.replace(/^t:/, "")) as [number, number])[1])).toEqual(outcome.rows)
    }
  })
})
