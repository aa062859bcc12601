// The plain form of a write (`execSqlWith` / `execWith`, the gateway's statement path) keeps the
// disk-full notices of `execSql`: a statement that met SQLITE_FULL in the leader's own SQLite hands
// the caller an Effect that reports the state machine's episode (the node steps down by it), and
// a success while an episode is open one that ends it; otherwise nothing to run.
import { Effect, Either } from "effect"
import { describe, expect, it } from "vitest"
import * as DiskFullWatch from "../../src/actors/DiskFullWatch.ts"
import { noticingDiskFull } from "../../src/sqlite/ReplicatedDatabases.ts"
import type { ExecDone, ExecResult, SqlFailure, SqlSession } from "../../src/sqlite/Sql.ts"
import { SqlError } from "../../src/sqlite/Sql.ts"

const unused = Effect.dieMessage("unused")

/** A session whose plain writes answer `next()`, synchronously. */
function fakeSession(next: () => Either.Either<ExecResult, SqlFailure>): SqlSession {
  const answer = (done: ExecDone) => {
    done(next())
    return true
  }
  return {
    database: "main",
    prepare: () => unused,
    exec: () => unused,
    query: () => unused,
    finalize: () => unused,
    execSql: () => unused,
    querySql: () => unused,
    execSqlWith: (_sql, _params, done) => answer(done),
    execWith: (_statement, _params, done) => answer(done),
    interrupt: Effect.void,
    inTransaction: Effect.succeed(false)
  }
}

/** One plain write: what `done` got. */
function plainWrite(session: SqlSession, form: "execSqlWith" | "execWith") {
  let got: { result: Either.Either<ExecResult, SqlFailure>; after: Effect.Effect<void> | undefined } | null = null
  const done: ExecDone = (result, after) => {
    got = { result, after }
  }
  const taken = form === "execSqlWith" ? session.execSqlWith!("INSERT INTO t VALUES (1)", [], done) : session.execWith!(1, [], done)
  expect(taken).toBe(true)
  expect(got).not.toBeNull()
  return got!
}

describe("plain writes keep the disk-full notices", () => {
  for (const form of ["execSqlWith", "execWith"] as const) {
    it(`${form}: SQLITE_FULL opens the state machine's episode, a later success ends it, other outcomes run nothing`, () => {
      const watch = DiskFullWatch.make()
      let next: Either.Either<ExecResult, SqlFailure> = Either.right({ lastInsertId: 1n, rowsAffected: 1 })
      const session = noticingDiskFull(fakeSession(() => next), watch, "/data/main")

      expect(plainWrite(session, form).after).toBeUndefined()

      next = Either.left(new SqlError({ code: 13, message: "database or disk is full" }))
      const full = plainWrite(session, form)
      expect(Either.isLeft(full.result)).toBe(true)
      expect(full.after).toBeDefined()
      Effect.runSync(full.after!)
      expect(watch.episodes().map((e) => e.part)).toEqual(["state machine"])

      // The log's own full disk is the log's episode, reported where the log writes.
      next = Either.left(new SqlError({ code: 13, message: "disk full: the log cannot write" }))
      expect(plainWrite(session, form).after).toBeUndefined()
      next = Either.left(new SqlError({ code: 19, message: "UNIQUE constraint failed" }))
      expect(plainWrite(session, form).after).toBeUndefined()

      next = Either.right({ lastInsertId: 2n, rowsAffected: 1 })
      const back = plainWrite(session, form)
      expect(back.after).toBeDefined()
      Effect.runSync(back.after!)
      expect(watch.episodes()).toEqual([])
      expect(plainWrite(session, form).after).toBeUndefined()
    })
  }
})
