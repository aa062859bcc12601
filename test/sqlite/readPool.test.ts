// The reader pool (src/sqlite/readPool): reads pinned at a Raft-committed snapshot whatever the
// thread, the query time limit (between rows, and by terminating a worker stuck in one native
// step), bounded queue, a terminated worker replaced, closing and checkpoints with readers.
import fs from "node:fs"
import path from "node:path"
import { Effect, Exit, Fiber } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { LeaderDatabase } from "../../src/sqlite/LeaderDatabase.ts"
import type { ReadPoolService } from "../../src/sqlite/readPool/ReadPool.ts"
import { inThreadReadPool, readerThreadNiceness, stuckGraceMs, workerReadPool } from "../../src/sqlite/readPool/ReadPool.ts"
import { tryPin } from "../../src/sqlite/readPool/pinning.ts"
import type { SqlFailure } from "../../src/sqlite/Sql.ts"
import { captureOneCommit, pageSize, tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))

const limits = { readWorkersMax: 2, readQueueMax: 8, queryTimeoutMs: 10_000, statementCacheMax: 16 }

function openLeader(pool: ReadPoolService): LeaderDatabase {
  const dir = tempDirectory("tqlite-readpool-")
  dirs.push(dir)
  return LeaderDatabase.open({ databasePath: path.join(dir.path, "main.db"), pageSize, readersMax: 4, cachePages: 100, statementCacheMax: 16, readPool: pool })
}

let seq = 0
/** One local commit, captured (pending until markCommitted). */
function commitLocally(db: LeaderDatabase, sql: string): number {
  return captureOneCommit(db, sql, ++seq)
}

/** Waits (bounded) until the pool has `idle` started readers and `busy` running reads. */
async function until(db: LeaderDatabase, check: (stats: ReturnType<LeaderDatabase["readersStats"]>) => boolean): Promise<void> {
  for (let i = 0; i < 400 && !check(db.readersStats()); i++) await new Promise((resolve) => setTimeout(resolve, 25))
  expect(check(db.readersStats())).toBe(true)
}

/** Rows with integers as numbers (the value model may give bigint for every INTEGER). */
const plainRows = (rows: ReadonlyArray<ReadonlyArray<unknown>>) => rows.map((row) => row.map((v) => (typeof v === "bigint" && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v)))

const failureOf = (exit: Exit.Exit<unknown, SqlFailure>): SqlFailure | undefined =>
  Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : undefined

/** A recursive CTE counted in one native sqlite3_step: no row comes back until it is done. */
const oneLongStep = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30000000) SELECT count(*) FROM c"
/** Many rows: the worker checks the deadline between them. */
const manyRows = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) SELECT x FROM c"

for (const kind of ["workers", "in-thread"] as const) {
  const pool = (overrides: Partial<typeof limits> = {}) => (kind === "workers" ? workerReadPool({ ...limits, ...overrides }) : inThreadReadPool({ ...limits, ...overrides }))

  describe(`read pinning (${kind})`, () => {
    it("a read dispatched while a local commit is pending waits for Raft to commit it, and then sees it", async () => {
      const db = openLeader(pool())
      try {
        const s1 = commitLocally(db, "CREATE TABLE t(x)")
        db.markCommitted(s1)
        const s2 = commitLocally(db, "INSERT INTO t VALUES (1)")
        const fiber = Effect.runFork(db.read("SELECT count(*) FROM t", []))
        await new Promise((resolve) => setTimeout(resolve, 150))
        // Not served from the pending (uncommitted) snapshot.
        expect(fiber.unsafePoll()).toBeNull()
        db.markCommitted(s2)
        const outcome = await Effect.runPromise(Fiber.join(fiber))
        expect(plainRows(outcome.rows.rows)).toEqual([[1]])
        // With nothing pending, a read is served at once.
        const again = await Effect.runPromise(db.read("SELECT x FROM t", []))
        expect(plainRows(again.rows.rows)).toEqual([[1]])
      } finally {
        db.close("discard")
      }
    })

    it("a read waiting on a commit that is cut fails retryably, and closing leaves no reader connection", async () => {
      const db = openLeader(pool())
      const s1 = commitLocally(db, "CREATE TABLE t(x)")
      db.markCommitted(s1)
      commitLocally(db, "INSERT INTO t VALUES (1)")
      const fiber = Effect.runFork(db.read("SELECT count(*) FROM t", []))
      await new Promise((resolve) => setTimeout(resolve, 100))
      db.close("discard")
      const exit = await Effect.runPromise(Effect.exit(Fiber.join(fiber)))
      // Failed, retryably: SqlBusy when the reader was waiting, SqlNotLeader if still queued.
      expect(["SqlBusy", "SqlNotLeader"]).toContain(failureOf(exit)?._tag)
      expect(db.versions.openConnections()).toBe(0)
    })

    it("a row-by-row query stops at its time limit with SQLITE_INTERRUPT and the reader stays usable", async () => {
      const db = openLeader(pool({ queryTimeoutMs: 300, readWorkersMax: 1 }))
      try {
        db.markCommitted(commitLocally(db, "CREATE TABLE t(x)"))
        // A thread that is still starting counts against the read's limit (a loaded machine can
        // take longer than 300 ms): the clock starts once a reader is there.
        if (kind === "workers") await until(db, (s) => s.idle >= 1)
        const started = performance.now()
        const exit = await Effect.runPromise(Effect.exit(db.read(manyRows, [])))
        const tookMs = performance.now() - started
        const failure = failureOf(exit)
        expect(failure?._tag).toBe("SqlError")
        expect(failure?._tag === "SqlError" && failure.code).toBe(9)
        expect(failure?.message).toMatch(/queryTimeoutMs = 300 ms/)
        expect(tookMs).toBeLessThan(300 + stuckGraceMs + 2_000)
        const next = await Effect.runPromise(db.read("SELECT 1", []))
        expect(plainRows(next.rows.rows)).toEqual([[1]])
        // Stopped between rows: no thread had to be terminated.
        expect(db.readersStats().terminated).toBe(0)
      } finally {
        db.close("discard")
      }
    }, 20_000)

    it("a local commit under way (odd version) makes a pin retry", () => {
      const db = openLeader(pool())
      try {
        db.versions.beginLocalCommit()
        const connection = db.committedView
        const outcome = tryPin(connection, db.versions, db.versions.epoch())
        expect(outcome._tag).toBe("Retry")
        db.versions.endLocalCommit()
        db.versions.markAllCommitted()
      } finally {
        db.close("discard")
      }
    })
  })
}

describe("reader worker threads", () => {
  it("a query stuck in one native step is answered at its limit (SQLITE_INTERRUPT), its thread terminated and replaced", async () => {
    const db = openLeader(workerReadPool({ ...limits, queryTimeoutMs: 400, readWorkersMax: 1 }))
    try {
      db.markCommitted(commitLocally(db, "CREATE TABLE t(x)"))
      // A started worker, so the timing covers the query only.
      await until(db, (s) => s.idle >= 1)
      const started = performance.now()
      const exit = await Effect.runPromise(Effect.exit(db.read(oneLongStep, [])))
      const tookMs = performance.now() - started
      const failure = failureOf(exit)
      expect(failure?._tag === "SqlError" && failure.code).toBe(9)
      expect(tookMs).toBeGreaterThanOrEqual(400)
      expect(tookMs).toBeLessThan(400 + stuckGraceMs + 1_000)
      expect(db.readersStats().terminated).toBe(1)
      // A replacement serves the next read while the terminated thread still runs its step.
      await until(db, (s) => s.idle >= 1 && s.stuck === 1)
      const next = await Effect.runPromise(db.read("SELECT 41 + 1", []))
      expect(plainRows(next.rows.rows)).toEqual([[42]])
    } finally {
      // The stuck thread ends only with its native step: not waited for here.
      db.versions.newEpoch()
    }
  }, 20_000)

  it("reads beyond the queue bound are refused with SqlBusy", async () => {
    // A short limit: a row-by-row read keeps every row until it stops (results are not bounded).
    const db = openLeader(workerReadPool({ ...limits, queryTimeoutMs: 600, readWorkersMax: 1, readQueueMax: 1 }))
    try {
      db.markCommitted(commitLocally(db, "CREATE TABLE t(x)"))
      await until(db, (s) => s.idle >= 1)
      const long = Effect.runFork(db.read(manyRows, []))
      await until(db, (s) => s.busy === 1)
      const queued = Effect.runFork(db.read("SELECT 2", []))
      const refused = await Effect.runPromise(Effect.exit(db.read("SELECT 3", [])))
      expect(failureOf(refused)?._tag).toBe("SqlBusy")
      expect(failureOf(refused)?.message).toMatch(/readQueueMax/)
      // The queued one was accepted: it waits behind the long read (and shares its deadline).
      expect(queued.unsafePoll()).toBeNull()
      expect(failureOf(await Effect.runPromise(Effect.exit(Fiber.join(long))))?.message).toMatch(/time limit/)
      await Effect.runPromise(Effect.exit(Fiber.join(queued)))
    } finally {
      db.close("discard")
    }
  }, 20_000)

  /** The niceness of each thread of this process, by thread id (Linux: /proc/self/task). */
  function threadNiceness(): Map<string, number> {
    const niceness = new Map<string, number>()
    for (const tid of fs.readdirSync("/proc/self/task")) {
      try {
        const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, "utf8")
        // Fields after the command's ")": state is field 3, nice field 19.
        niceness.set(tid, Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]))
      } catch {
        // The thread ended meanwhile.
      }
    }
    return niceness
  }

  /** The niceness of the threads a pool started for one read. */
  async function readerNiceness(pool: ReadPoolService): Promise<Array<number>> {
    const before = threadNiceness()
    const db = openLeader(pool)
    try {
      db.markCommitted(commitLocally(db, "CREATE TABLE t(x)"))
      await Effect.runPromise(db.read("SELECT count(*) FROM t, t AS u", []))
      return [...threadNiceness()].filter(([tid]) => !before.has(tid)).map(([, nice]) => nice)
    } finally {
      db.close("discard")
    }
  }

  // Linux, and a test process not already as nice as a reader (a thread cannot be made less nice).
  const mainNiceness = process.platform === "linux" ? threadNiceness().get(String(process.pid)) ?? 0 : readerThreadNiceness
  it.runIf(mainNiceness < readerThreadNiceness)("with readerNiceness, reader threads run at a lower CPU priority than the main thread; by default at its own", async () => {
    // The thread started for the read, at the reader niceness; the main thread's is unchanged.
    expect(await readerNiceness(workerReadPool({ ...limits, readerNiceness: readerThreadNiceness }))).toContain(readerThreadNiceness)
    expect(threadNiceness().get(String(process.pid))).toBe(mainNiceness)
    // The default: every new thread at the process's niceness.
    const flat = await readerNiceness(workerReadPool(limits))
    expect(flat.length).toBeGreaterThan(0)
    expect(flat.every((nice) => nice === mainNiceness)).toBe(true)
  }, 20_000)

  it("a checkpoint held back by a running read reports busy instead of failing; it completes afterwards", async () => {
    const db = openLeader(workerReadPool({ ...limits, queryTimeoutMs: 600 }))
    try {
      db.markCommitted(commitLocally(db, "CREATE TABLE t(x)"))
      db.markCommitted(commitLocally(db, "INSERT INTO t VALUES (1)"))
      await until(db, (s) => s.idle >= 1)
      const long = Effect.runFork(db.read(manyRows, []))
      await until(db, (s) => s.busy === 1)
      await new Promise((resolve) => setTimeout(resolve, 50))
      expect(db.checkpoint().busy).toBe(true)
      await Effect.runPromise(Effect.exit(Fiber.join(long)))
      expect(db.checkpoint().busy).toBe(false)
      expect(db.walBytes()).toBe(0)
      expect(plainRows((await Effect.runPromise(db.read("SELECT x FROM t", []))).rows.rows)).toEqual([[1]])
    } finally {
      db.close("discard")
    }
  }, 20_000)

  it("closing stops a long row-by-row read at once and the step-down completes", async () => {
    const db = openLeader(workerReadPool({ ...limits, queryTimeoutMs: 10_000 }))
    db.markCommitted(commitLocally(db, "CREATE TABLE t(x)"))
    commitLocally(db, "INSERT INTO t VALUES (1)")
    db.markCommitted(seq)
    await until(db, (s) => s.idle >= 1)
    const long = Effect.runFork(db.read(manyRows, []))
    await until(db, (s) => s.busy === 1)
    await new Promise((resolve) => setTimeout(resolve, 50))
    const started = performance.now()
    db.close("discard")
    expect(performance.now() - started).toBeLessThan(2_000)
    expect(db.versions.openConnections()).toBe(0)
    const exit = await Effect.runPromise(Effect.exit(Fiber.join(long)))
    expect(Exit.isFailure(exit)).toBe(true)
  }, 20_000)

  it("values cross the thread as Connection.run gives them (integers, big integers, text, blobs, null)", async () => {
    const db = openLeader(workerReadPool(limits))
    try {
      db.markCommitted(commitLocally(db, "CREATE TABLE v(i INTEGER, big INTEGER, r REAL, s TEXT, b BLOB, n)"))
      db.markCommitted(commitLocally(db, "INSERT INTO v VALUES (7, 9007199254740993, 1.5, 'héllo', x'00ff10', NULL), (8, 1, 0.0, '', zeroblob(70000), NULL)"))
      const sql = "SELECT i, big, r, s, b, n FROM v ORDER BY i"
      const viaPool = await Effect.runPromise(db.read(sql, []))
      const inThread = db.committedView.run(sql, [])
      expect(viaPool.rows.columns).toEqual(inThread.rows.columns)
      expect(viaPool.rows.declaredTypes).toEqual(inThread.rows.declaredTypes)
      const plain = (rows: ReadonlyArray<ReadonlyArray<unknown>>) => rows.map((row) => row.map((v) => (v instanceof Uint8Array ? [...v] : v)))
      expect(plain(viaPool.rows.rows)).toEqual(plain(inThread.rows.rows))
      expect(viaPool.rows.rows[0]![1]).toBe(9007199254740993n)
    } finally {
      db.close("discard")
    }
  }, 20_000)
})
