// Streamed reads out of the reader pool (src/sqlite/readPool: `DatabaseReaders.stream`): a large
// result comes complete and in order a bounded batch at a time, with the bytes held on the main
// thread bounded by a few batches; a taker that stops asking stops the stepping; the snapshot the
// read pinned holds for the whole stream and is released when the stream's scope closes (so the
// pool's connection and the leader's checkpoint are free again); the time limit ends a paused
// stream; a step-down ends a running one retryably.
import path from "node:path"
import { Effect, Exit, Scope } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { LeaderDatabase } from "../../src/sqlite/LeaderDatabase.ts"
import type { ReadPoolService } from "../../src/sqlite/readPool/ReadPool.ts"
import { inThreadReadPool, stuckGraceMs, workerReadPool } from "../../src/sqlite/readPool/ReadPool.ts"
import type { RowBatch, RowStream, SqlFailure, SqlValue } from "../../src/sqlite/Sql.ts"
import { captureOneCommit, pageSize, tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))

const batchBytes = 16 * 1024
const limits = { readWorkersMax: 1, readQueueMax: 8, queryTimeoutMs: 20_000, statementCacheMax: 16, streamBatchBytes: batchBytes, streamBatchRowsMax: 4096 }

function openLeader(pool: ReadPoolService): LeaderDatabase {
  const dir = tempDirectory("tqlite-readstream-")
  dirs.push(dir)
  return LeaderDatabase.open({ databasePath: path.join(dir.path, "main.db"), pageSize, readersMax: 4, cachePages: 1000, statementCacheMax: 16, readPool: pool })
}

let seq = 0
/** One local commit, captured and marked committed by Raft. */
function commit(db: LeaderDatabase, sql: string): void {
  db.markCommitted(captureOneCommit(db, sql, ++seq))
}

/** `rows` rows of (n, a 1 KiB text): about 1 MiB per 1,000 rows. */
function fill(db: LeaderDatabase, rows: number): void {
  commit(db, "CREATE TABLE t(n INTEGER PRIMARY KEY, s TEXT)")
  commit(db, `WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < ${rows}) INSERT INTO t SELECT n, printf('%04d', n % 10000) || substr(hex(randomblob(600)), 1, 1020) FROM k`)
}

const failureOf = (exit: Exit.Exit<unknown, SqlFailure>): SqlFailure | undefined => (Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : undefined)

/** Opens a stream in its own scope (closed by the caller: the client going away). */
async function openStream(db: LeaderDatabase, sql: string, params: ReadonlyArray<SqlValue> = []): Promise<{ stream: RowStream; scope: Scope.CloseableScope }> {
  const scope = Effect.runSync(Scope.make())
  const stream = await Effect.runPromise(Scope.extend(db.readStream(sql, params), scope))
  return { stream, scope }
}

const close = (scope: Scope.CloseableScope) => Effect.runPromise(Scope.close(scope, Exit.void))

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 25))
  if (!check()) throw new Error(`timed out waiting for ${what}`)
}

for (const kind of ["workers", "in-thread"] as const) {
  const pool = (overrides: Partial<typeof limits> = {}) => (kind === "workers" ? workerReadPool({ ...limits, ...overrides }) : inThreadReadPool({ ...limits, ...overrides }))

  describe(`streamed reads (${kind})`, () => {
    it("a result of many MiB comes complete and in order, with a few batches held at most", async () => {
      const db = openLeader(pool())
      try {
        fill(db, 12_000) // ~12 MiB of rows
        const { stream, scope } = await openStream(db, "SELECT n, s FROM t ORDER BY n")
        expect(stream.columns).toEqual(["n", "s"])
        let expected = 1
        let batches = 0
        let batch: RowBatch = stream.first
        for (;;) {
          batches++
          for (const row of batch.rows) {
            expect(row[0]).toBe(BigInt(expected))
            expect((row[1] as string).startsWith(String(expected % 10000).padStart(4, "0"))).toBe(true)
            expected++
          }
          if (batch.done) break
          batch = await Effect.runPromise(stream.next)
        }
        expect(expected - 1).toBe(12_000)
        // ~1 KiB rows in 16 KiB batches: hundreds of batches, never the whole result at once.
        expect(batches).toBeGreaterThan(500)
        const stats = db.readersStats()
        // Held on this thread: the batch in hand and at most one waiting (each ≤ the bound plus one
        // row of ~1 KiB): far below the 12 MiB result.
        expect(stats.streamBytesHeldMax).toBeGreaterThan(0)
        expect(stats.streamBytesHeldMax).toBeLessThanOrEqual(2 * (batchBytes + 1100))
        await close(scope)
        expect(db.readersStats().streams).toBe(0)
        expect(db.readersStats().streamBytesHeld).toBe(0)
      } finally {
        db.close("discard")
      }
    })

    it("the snapshot holds for the whole stream: a write committed meanwhile is not in later batches; closing releases it", async () => {
      const db = openLeader(pool())
      try {
        fill(db, 3_000)
        const { stream, scope } = await openStream(db, "SELECT n, s FROM t ORDER BY n")
        // Committed after the stream started: every row changes, and rows are added.
        commit(db, "UPDATE t SET s = 'changed'")
        commit(db, "INSERT INTO t SELECT n + 3000, 'new' FROM t")
        // The pinned snapshot holds back a checkpoint (reported busy, nothing lost).
        expect(db.checkpoint().busy).toBe(true)
        let count = stream.first.rows.length
        let batch = stream.first
        while (!batch.done) {
          batch = await Effect.runPromise(stream.next)
          for (const row of batch.rows) expect(row[1]).not.toBe("changed")
          count += batch.rows.length
        }
        expect(count).toBe(3_000)
        await close(scope)
        // Released: the checkpoint completes, and a new read sees the new state.
        expect(db.checkpoint().busy).toBe(false)
        const after = await Effect.runPromise(db.read("SELECT count(*), sum(s = 'changed') FROM t", []))
        expect(after.rows.rows).toEqual([[6_000n, 3_000n]])
      } finally {
        db.close("discard")
      }
    })

    it("a stream closed mid-way (the client gone) frees its reader and snapshot at once", async () => {
      const db = openLeader(pool())
      try {
        fill(db, 5_000)
        const { stream, scope } = await openStream(db, "SELECT n, s FROM t ORDER BY n")
        expect(stream.first.done).toBe(false)
        await Effect.runPromise(stream.next)
        expect(db.readersStats().streams).toBe(1)
        await close(scope)
        expect(db.readersStats().streams).toBe(0)
        expect(db.readersStats().streamBytesHeld).toBe(0)
        // One reader only: usable again, and nothing pins the WAL.
        const again = await Effect.runPromise(db.read("SELECT count(*) FROM t", []))
        expect(again.rows.rows).toEqual([[5_000n]])
        expect(db.checkpoint().busy).toBe(false)
        // The closed stream answers nothing more.
        expect(failureOf(await Effect.runPromise(Effect.exit(stream.next)))?._tag).toBe("SqlError")
      } finally {
        db.close("discard")
      }
    })

    it("a step-down mid-stream fails the stream retryably and leaves no reader connection", async () => {
      const db = openLeader(pool())
      fill(db, 3_000)
      const { stream, scope } = await openStream(db, "SELECT n, s FROM t ORDER BY n")
      db.close("discard")
      let exit: Exit.Exit<RowBatch, SqlFailure> = Exit.succeed(stream.first)
      // A batch already here may still be handed out; then the failure.
      for (let i = 0; i < 3 && Exit.isSuccess(exit) && !exit.value.done; i++) exit = await Effect.runPromise(Effect.exit(stream.next))
      expect(failureOf(exit)?._tag).toBe("SqlBusy")
      await close(scope)
      expect(db.versions.openConnections()).toBe(0)
    })
  })
}

describe("streamed reads (workers): a taker that stops asking", () => {
  it("stops the stepping, holds at most a batch ahead, and the time limit ends the stream and frees the reader", async () => {
    const timeLimitMs = 1_500
    const db = openLeader(workerReadPool({ ...limits, queryTimeoutMs: timeLimitMs }))
    try {
      fill(db, 5_000)
      await until(() => db.readersStats().idle >= 1, "a reader")
      // Before the stream is queued: its time limit counts from there.
      const started = performance.now()
      const { stream, scope } = await openStream(db, "SELECT n, s FROM t ORDER BY n")
      // The pool asked for one batch ahead of the first; then nothing more while nobody asks.
      await until(() => db.readersStats().streamBatches >= 2, "the batch ahead")
      await new Promise((resolve) => setTimeout(resolve, 300))
      const paused = db.readersStats()
      expect(paused.streamBatches).toBe(2)
      expect(paused.streamBytesHeld).toBeLessThanOrEqual(2 * (batchBytes + 1100))
      expect(paused.busy).toBe(1)
      // Past the time limit the paused stream ends (no thread terminated: it was not stepping).
      await until(() => db.readersStats().busy === 0, "the time limit")
      expect(performance.now() - started).toBeGreaterThanOrEqual(timeLimitMs - 50)
      expect(performance.now() - started).toBeLessThan(timeLimitMs + stuckGraceMs + 3_000)
      // The batch that was waiting was dropped with the stream; the taker hears the limit.
      const exit = await Effect.runPromise(Effect.exit(stream.next))
      const failure = failureOf(exit)
      expect(failure?._tag === "SqlError" && failure.code).toBe(9)
      expect(db.readersStats().terminated).toBe(0)
      await close(scope)
      const again = await Effect.runPromise(db.read("SELECT count(*) FROM t", []))
      expect(again.rows.rows).toEqual([[5_000n]])
      expect(db.checkpoint().busy).toBe(false)
    } finally {
      db.close("discard")
    }
  })
})
