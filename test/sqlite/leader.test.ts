// The leader's side of replicated SQLite on a 3-node cluster in simulated time: pinned read views,
// leadership loss with uncommitted frames, group commit with savepoints, interactive transactions.
import { Effect, Exit, Fiber } from "effect"
import { afterAll, describe, expect, it, vi } from "vitest"
import type { NodeId } from "../../src/raft/types.ts"
import { Connection } from "../../src/sqlite/connection.ts"
import type { SqlFailure } from "../../src/sqlite/Sql.ts"
import { firstStatement } from "../../src/sqlite/statements.ts"
import type { SqliteCluster } from "../sim/full/SqliteCluster.ts"
import { contentOf, exec, filesOf, integrityOf, makeCluster, query, rowsOf, session, simulate, sleepTicks } from "./clusterHelpers.ts"
import { tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))
const newDir = () => {
  const dir = tempDirectory("tqlite-leader-")
  dirs.push(dir)
  return dir.path
}

/** The leader's appends stop reaching the followers (heartbeats still do, so ReadIndex works):
 * its next entry stays in flight, uncommitted. */
const holdAppends = (cluster: SqliteCluster, leader: NodeId) => {
  cluster.dropIf = (from, message) => from === leader && message._tag === "AppendEntries"
}

const failureTag = <A>(exit: Exit.Exit<A, SqlFailure>): string =>
  Exit.isSuccess(exit) ? "ok" : exit.cause._tag === "Fail" ? exit.cause.error._tag : `defect ${String(exit.cause)}`

describe("the leader's writer and readers", () => {
  it("a read during an in-flight write is never served from it: a point read answers at once from the committed view, a scan in a reader thread waits for the commit and sees the new value", () => {
    const base = newDir()
    const result = simulate(
      Effect.gen(function*() {
        const cluster = makeCluster(base)
        yield* cluster.bootstrap([1, 2, 3])
        const leader = yield* cluster.awaitLeader()
        const writerSession = yield* session(leader)
        const readerSession = yield* session(leader)
        yield* exec(writerSession, "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT); INSERT INTO kv VALUES ('a', 'old')")
        const before = rowsOf(yield* query(readerSession, "SELECT v FROM kv WHERE k = 'a'"))
        holdAppends(cluster, leader.id)
        const write = yield* Effect.fork(exec(writerSession, "UPDATE kv SET v = 'new' WHERE k = 'a'"))
        yield* sleepTicks(5)
        const inFlight = write.unsafePoll() === null
        // The frames are in the leader's WAL: its writer connection sees them…
        const writerSees = rowsOf(leader.dbs.writer("main")!.database.writer.run("SELECT v FROM kv", []).rows)
        // …a point read (bounded: inline, on the committed view) answers at once, without it…
        const point = rowsOf(yield* query(readerSession, "SELECT v FROM kv WHERE k = 'a'"))
        // …and a reader thread pinned on that WAL content does not serve it while Raft has not
        // committed it.
        const read = yield* Effect.fork(query(readerSession, "SELECT v FROM kv ORDER BY v"))
        yield* sleepTicks(5)
        const readWaited = read.unsafePoll() === null
        cluster.dropIf = null
        const written = yield* Fiber.join(write)
        const during = rowsOf(yield* Fiber.join(read))
        const after = rowsOf(yield* query(readerSession, "SELECT v FROM kv WHERE k = 'a'"))
        yield* cluster.shutdown()
        return { before, inFlight, writerSees, point, readWaited, during, written, after }
      })
    )
    expect(result.before).toEqual([["old"]])
    expect(result.inFlight).toBe(true)
    expect(result.writerSees).toEqual([["new"]])
    expect(result.point).toEqual([["old"]])
    expect(result.readWaited).toBe(true)
    expect(result.written.rowsAffected).toBe(1)
    expect(result.during).toEqual([["new"]])
    expect(result.after).toEqual([["new"]])
  })

  it("leader loss with uncommitted frames: the write fails, no node shows it, the old leader converges", () => {
    const base = newDir()
    const result = simulate(
      Effect.gen(function*() {
        const cluster = makeCluster(base)
        yield* cluster.bootstrap([1, 2, 3])
        const old = yield* cluster.awaitLeader()
        const s = yield* session(old)
        yield* exec(s, "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT); INSERT INTO kv VALUES ('kept', randomblob(3000))")
        yield* cluster.awaitConverged()
        holdAppends(cluster, old.id)
        const write = yield* Effect.fork(Effect.exit(exec(s, "INSERT INTO kv VALUES ('lost', randomblob(5000))")))
        yield* sleepTicks(3)
        const inOldWal = rowsOf(old.dbs.writer("main")!.database.writer.run("SELECT count(*) FROM kv WHERE k = 'lost'", []).rows)
        cluster.dropIf = null
        cluster.isolate(old.id)
        const next = yield* cluster.awaitLeader(500, old.id)
        const writeExit = yield* Fiber.join(write)
        const s2 = yield* session(next)
        yield* exec(s2, "INSERT INTO kv VALUES ('after', 'x')")
        const onNewLeader = rowsOf(yield* query(s2, "SELECT k FROM kv ORDER BY k"))
        const oldRead = failureTag(yield* Effect.exit(query(s, "SELECT k FROM kv")))
        cluster.heal()
        yield* sleepTicks(30)
        const converged = yield* cluster.awaitConverged()
        const oldStatus = yield* old.raft.status
        const contents = filesOf(cluster).map((f) => contentOf(f.path))
        const integrity = filesOf(cluster).map((f) => integrityOf(f.path))
        yield* cluster.shutdown()
        return { inOldWal, writeExit: failureTag(writeExit), onNewLeader, oldRead, converged, oldRole: oldStatus.role, contents, integrity }
      })
    )
    expect(result.inOldWal).toEqual([[1n]])
    expect(["SqlLeadershipLost", "SqlNotLeader"]).toContain(result.writeExit)
    expect(result.onNewLeader).toEqual([["after"], ["kept"]])
    expect(result.oldRead).toBe("SqlNotLeader")
    expect(result.converged).toBe(true)
    expect(result.oldRole).toBe("follower")
    expect(new Set(result.contents).size).toBe(1)
    expect(result.contents[0]).toContain('"after"')
    expect(result.contents[0]).not.toContain('"lost"')
    expect(result.integrity).toEqual(["ok", "ok", "ok"])
  })

  it("group commit: 50 statements from 50 sessions are one entry; the one bad statement fails alone", () => {
    const base = newDir()
    const result = simulate(
      Effect.gen(function*() {
        const cluster = makeCluster(base)
        yield* cluster.bootstrap([1, 2, 3])
        const leader = yield* cluster.awaitLeader()
        const s = yield* session(leader)
        yield* exec(s, "CREATE TABLE u(id INTEGER PRIMARY KEY, v INTEGER); INSERT INTO u VALUES (25, 0)")
        yield* cluster.awaitConverged()
        const follower = cluster.up().find((n) => n.id !== leader.id)!
        const ownBefore = leader.machine.stats.own
        const pagesBefore = follower.machine.stats.pages
        holdAppends(cluster, leader.id)
        const first = yield* Effect.fork(exec(s, "INSERT INTO u VALUES (1000, 1)"))
        yield* sleepTicks(2)
        const sessions = yield* Effect.forEach(Array.from({ length: 50 }, (_, i) => i + 1), () => session(leader))
        const fibers = yield* Effect.forEach(sessions, (si, i) => Effect.fork(Effect.exit(exec(si, "INSERT INTO u(id, v) VALUES (?, random())", [i + 1]))))
        yield* sleepTicks(2)
        cluster.dropIf = null
        yield* Fiber.join(first)
        const exits = yield* Effect.forEach(fibers, Fiber.join)
        yield* cluster.awaitConverged()
        const count = rowsOf(yield* query(s, "SELECT count(*) FROM u"))
        const failures = exits.flatMap((e, i) => (Exit.isFailure(e) ? [{ id: i + 1, tag: failureTag(e), code: e.cause._tag === "Fail" && e.cause.error._tag === "SqlError" ? e.cause.error.code : 0 }] : []))
        const stats = { own: leader.machine.stats.own - ownBefore, pages: follower.machine.stats.pages - pagesBefore, batchMax: leader.dbs.writer("main")!.stats.batchStatementsMax }
        const contents = filesOf(cluster).map((f) => contentOf(f.path))
        yield* cluster.shutdown()
        return { count, failures, stats, contents }
      })
    )
    expect(result.failures).toEqual([{ id: 25, tag: "SqlError", code: 1555 }])
    expect(result.count).toEqual([[51n]])
    // The first insert, then one entry for the 50 (49 inserts and a rolled-back savepoint).
    expect(result.stats.own).toBe(2)
    expect(result.stats.pages).toBe(2)
    expect(result.stats.batchMax).toBe(50)
    expect(new Set(result.contents).size).toBe(1)
  })

  /** Sequential single-statement writes, then a batch whose first statement fails half-way (a
   * duplicate key after one row went in) with five good ones gathered behind it; the SAVEPOINTs
   * the writer ran meanwhile. */
  function firstStatementRun(savepointFirstStatement: boolean) {
    const base = newDir()
    const control = vi.spyOn(Connection.prototype, "control")
    const savepoints = () => control.mock.calls.filter(([sql]) => sql.startsWith("SAVEPOINT tqlite_batch")).length
    try {
      return simulate(
        Effect.gen(function*() {
          const cluster = makeCluster(base, savepointFirstStatement ? { databasesBugs: { savepointFirstStatement: true } } : {})
          yield* cluster.bootstrap([1, 2, 3])
          const leader = yield* cluster.awaitLeader()
          const s = yield* session(leader)
          yield* exec(s, "CREATE TABLE u(id INTEGER PRIMARY KEY, v INTEGER)")
          const before = savepoints()
          for (let i = 1; i <= 10; i++) yield* exec(s, "INSERT INTO u VALUES (?, ?)", [i, i])
          const sequential = savepoints() - before
          // The bad statement opens the next batch while an entry is held in flight; the good
          // ones queue behind it.
          holdAppends(cluster, leader.id)
          const held = yield* Effect.fork(exec(s, "INSERT INTO u VALUES (100, 0)"))
          yield* sleepTicks(2)
          const sessions = yield* Effect.forEach([0, 1, 2, 3, 4, 5], () => session(leader))
          // OR FAIL keeps what the statement did before failing (the row 300): a savepoint, or the
          // whole transaction when it is the batch's first, must undo it.
          const bad = yield* Effect.fork(Effect.exit(exec(sessions[0]!, "INSERT OR FAIL INTO u VALUES (300, 7), (3, 0)")))
          yield* sleepTicks(1)
          const good = yield* Effect.forEach(sessions.slice(1), (si, i) => Effect.fork(Effect.exit(exec(si, "INSERT INTO u VALUES (?, 1)", [200 + i]))))
          yield* sleepTicks(2)
          cluster.dropIf = null
          yield* Fiber.join(held)
          const badExit = yield* Fiber.join(bad)
          const goodExits = yield* Effect.forEach(good, Fiber.join)
          yield* cluster.awaitConverged()
          const rows = rowsOf(yield* query(s, "SELECT count(*), sum(v) FROM u"))
          const contents = filesOf(cluster).map((f) => contentOf(f.path))
          const integrity = filesOf(cluster).map((f) => integrityOf(f.path))
          yield* cluster.shutdown()
          return {
            sequential,
            bad: Exit.isFailure(badExit) && badExit.cause._tag === "Fail" && badExit.cause.error._tag === "SqlError" ? badExit.cause.error.code : "not a SqlError",
            good: goodExits.filter(Exit.isSuccess).length,
            rows,
            sameFiles: new Set(contents).size,
            integrity
          }
        })
      )
    } finally {
      control.mockRestore()
    }
  }

  it("a batch's first statement runs without a savepoint; when it fails, the statements behind it still commit", () => {
    const result = firstStatementRun(false)
    // One client writing in a loop: every batch holds one statement, so no SAVEPOINT at all.
    expect(result.sequential).toBe(0)
    expect(result.bad).toBe(1555)
    expect(result.good).toBe(5)
    // 10 + the held one + 5 good: the failed one left nothing.
    expect(result.rows).toEqual([[16n, 55n + 5n]])
    expect(result.sameFiles).toBe(1)
    expect(result.integrity).toEqual(["ok", "ok", "ok"])
    // The slower path, as before: a savepoint for every statement.
    expect(firstStatementRun(true).sequential).toBe(10)
  })

  it("an interactive transaction interrupted by leader loss fails and leaves nothing", () => {
    const base = newDir()
    const result = simulate(
      Effect.gen(function*() {
        const cluster = makeCluster(base)
        yield* cluster.bootstrap([1, 2, 3])
        const old = yield* cluster.awaitLeader()
        const s = yield* session(old)
        const t = yield* session(old)
        yield* exec(s, "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)")
        // One transaction has sent COMMIT (in flight) when leadership goes, another is open.
        holdAppends(cluster, old.id)
        const committing = yield* Effect.fork(Effect.exit(exec(t, "BEGIN; INSERT INTO kv VALUES ('committing', '2'); COMMIT")))
        yield* sleepTicks(2)
        yield* exec(s, "BEGIN")
        yield* exec(s, "INSERT INTO kv VALUES ('open', '1')")
        const inTransaction = yield* s.inTransaction
        const committingInFlight = committing.unsafePoll() === null
        cluster.dropIf = null
        cluster.isolate(old.id)
        yield* cluster.awaitLeader(500, old.id)
        const commitOpen = failureTag(yield* Effect.exit(exec(s, "COMMIT")))
        const commitInFlight = failureTag(yield* Fiber.join(committing))
        cluster.heal()
        yield* cluster.awaitConverged()
        const contents = filesOf(cluster).map((f) => contentOf(f.path))
        yield* cluster.shutdown()
        return { inTransaction, committingInFlight, commitOpen, commitInFlight, contents }
      })
    )
    expect(result.inTransaction).toBe(true)
    expect(result.committingInFlight).toBe(true)
    expect(result.commitOpen).toBe("SqlNotLeader")
    expect(result.commitInFlight).toBe("SqlLeadershipLost")
    expect(new Set(result.contents).size).toBe(1)
    expect(result.contents[0]).not.toContain('"open"')
    expect(result.contents[0]).not.toContain('"committing"')
  })

  it("an interactive transaction past its timeout is rolled back; writers queued behind it proceed", () => {
    const base = newDir()
    const result = simulate(
      Effect.gen(function*() {
        const cluster = makeCluster(base, { limits: { transactionTimeoutMs: 200 } })
        yield* cluster.bootstrap([1, 2, 3])
        const leader = yield* cluster.awaitLeader()
        const slow = yield* session(leader)
        const other = yield* session(leader)
        yield* exec(slow, "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)")
        yield* exec(slow, "BEGIN; INSERT INTO kv VALUES ('slow', '1')")
        const queued = yield* Effect.fork(exec(other, "INSERT INTO kv VALUES ('other', '2')"))
        yield* sleepTicks(10)
        const waitingAt100ms = queued.unsafePoll() === null
        yield* sleepTicks(15)
        const otherDone = yield* Fiber.join(queued)
        const commit = yield* Effect.exit(exec(slow, "COMMIT"))
        const afterwards = yield* exec(slow, "INSERT INTO kv VALUES ('slow-again', '3')")
        const rows = rowsOf(yield* query(other, "SELECT k FROM kv ORDER BY k"))
        yield* cluster.shutdown()
        return { waitingAt100ms, otherDone, commit, afterwards, rows }
      })
    )
    expect(result.waitingAt100ms).toBe(true)
    expect(result.otherDone.rowsAffected).toBe(1)
    expect(Exit.isFailure(result.commit)).toBe(true)
    if (Exit.isFailure(result.commit) && result.commit.cause._tag === "Fail") {
      expect(result.commit.cause.error).toMatchObject({ _tag: "SqlError", code: 516 })
    }
    expect(result.afterwards.rowsAffected).toBe(1)
    expect(result.rows).toEqual([["other"], ["slow-again"]])
  })

  it("a follower answers writes, reads and prepares with SqlNotLeader naming the leader", () => {
    const base = newDir()
    const result = simulate(
      Effect.gen(function*() {
        const cluster = makeCluster(base)
        yield* cluster.bootstrap([1, 2, 3])
        const leader = yield* cluster.awaitLeader()
        yield* exec(yield* session(leader), "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)")
        yield* sleepTicks(3)
        const follower = cluster.up().find((n) => n.id !== leader.id)!
        const s = yield* session(follower)
        const failures = [
          yield* Effect.flip(exec(s, "INSERT INTO kv VALUES ('x', 'y')")),
          yield* Effect.flip(query(s, "SELECT * FROM kv")),
          yield* Effect.flip(s.prepare(firstStatement("SELECT * FROM kv")!.statement)),
          yield* Effect.flip(exec(s, "BEGIN"))
        ]
        yield* cluster.shutdown()
        return { leader: leader.id, failures }
      })
    )
    for (const failure of result.failures) expect(failure).toMatchObject({ _tag: "SqlNotLeader", leader: result.leader })
  })

  it("no BUSY while the writer is free; SqlBusy when the queue is full or a write waits past its timeout", () => {
    const base = newDir()
    const result = simulate(
      Effect.gen(function*() {
        const cluster = makeCluster(base, { limits: { writeTimeoutMs: 300, writeQueueMax: 2, transactionTimeoutMs: 5000 } })
        yield* cluster.bootstrap([1, 2, 3])
        const leader = yield* cluster.awaitLeader()
        const holder = yield* session(leader)
        yield* exec(holder, "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)")
        yield* exec(holder, "BEGIN; INSERT INTO kv VALUES ('held', '1')")
        const waiting = yield* Effect.forEach([1, 2], (i) =>
          Effect.flatMap(session(leader), (s) => Effect.fork(Effect.exit(exec(s, `INSERT INTO kv VALUES ('w${i}', '2')`)))))
        yield* sleepTicks(1)
        const full = yield* Effect.exit(exec(yield* session(leader), "INSERT INTO kv VALUES ('w3', '3')"))
        yield* sleepTicks(40)
        const timedOut = yield* Effect.forEach(waiting, Fiber.join)
        yield* exec(holder, "COMMIT")
        const rows = rowsOf(yield* query(holder, "SELECT k FROM kv ORDER BY k"))
        yield* cluster.shutdown()
        return { full: failureTag(full), timedOut: timedOut.map(failureTag), rows }
      })
    )
    expect(result.full).toBe("SqlBusy")
    expect(result.timedOut).toEqual(["SqlBusy", "SqlBusy"])
    expect(result.rows).toEqual([["held"]])
  })
})
