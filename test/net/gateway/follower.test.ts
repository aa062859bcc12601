// A node that is not the leader: SQL requests answer FAILURE 10250 "not leader" (so real clients
// look for the leader again) and the connection stays open; LEADER names the leader; a
// leadership loss fails the open transaction with 10506, then 10250.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlBusy, SqlError, SqlNotLeader } from "../../../src/sqlite/Sql.ts"
import { ascii, concat, hex, toHex } from "./helpers.ts"
import { execSql, querySql, rawConnect, startGateway } from "./harness.ts"

describe("gateway: follower", () => {
  it.scopedLive("SQL on a follower answers FAILURE 10250 \"not leader\", byte for byte, and keeps the connection", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway({ others: [{ id: 2, address: "127.0.0.1:9002", role: "voter" }], leader: 2 })
      gateway.fixture.setRole("follower", 2)
      const c = yield* rawConnect(gateway.address)
      expect(yield* c.call({ kind: "leader" })).toEqual({ kind: "server", nodeId: 2n, address: "127.0.0.1:9002" })
      yield* c.open()
      yield* c.send(execSql("CREATE TABLE t (x)"))
      const frame = yield* c.receiveFrame
      expect(frame?.type).toBe(0)
      expect(toHex(frame!.body)).toBe(toHex(concat(hex("0a28000000000000"), ascii("not leader", 16))))
      expect(yield* c.call(querySql("SELECT 1"))).toEqual({ kind: "failure", code: 10250, message: "not leader" })
      // dqlite 1.11 prepares on followers; running the statement is what fails.
      expect(yield* c.call({ kind: "prepare", schema: 0, dbId: 0n, sql: "SELECT 1" })).toMatchObject({ kind: "stmt", stmtId: 0 })
      expect(yield* c.call({ kind: "query", schema: 0, dbId: 0, stmtId: 0, params: [] })).toEqual({ kind: "failure", code: 10250, message: "not leader" })
      expect(yield* c.call({ kind: "exec", schema: 0, dbId: 0, stmtId: 0, params: [] })).toEqual({ kind: "failure", code: 10250, message: "not leader" })
      // Becoming leader again: the same connection works.
      gateway.fixture.setRole("leader")
      expect(yield* c.call(querySql("SELECT 7"))).toMatchObject({ kind: "rows", rows: [[{ kind: "integer", value: 7 }]] })
    }))

  it.scopedLive("OPEN failures of the SQL surface map to dqlite's codes", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address)
      gateway.fixture.setOpenFailure(new SqlNotLeader({ leader: null, message: "no leader" }))
      expect(yield* c.call({ kind: "open", database: "x", flags: 0n, vfs: "" })).toEqual({ kind: "failure", code: 10250, message: "not leader" })
      gateway.fixture.setOpenFailure(new SqlBusy({ message: "write queue full" }))
      expect(yield* c.call({ kind: "open", database: "x", flags: 0n, vfs: "" })).toEqual({ kind: "failure", code: 5, message: "write queue full" })
      gateway.fixture.setOpenFailure(new SqlError({ code: 14, message: "unable to open database file" }))
      expect(yield* c.call({ kind: "open", database: "x", flags: 0n, vfs: "" })).toEqual({ kind: "failure", code: 14, message: "unable to open database file" })
      gateway.fixture.setOpenFailure(null)
      expect(yield* c.call({ kind: "open", database: "x", flags: 0n, vfs: "" })).toEqual({ kind: "db", dbId: 0 })
    }))

  it.scopedLive("leadership lost in an interactive transaction: 10506 once, then 10250; the transaction is gone", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address)
      const other = yield* rawConnect(gateway.address)
      yield* c.open()
      yield* other.open()
      yield* c.call(execSql("CREATE TABLE t (x)"))
      yield* c.call(execSql("BEGIN"))
      yield* c.call(execSql("INSERT INTO t VALUES (1)"))
      gateway.fixture.loseLeadership()
      expect(yield* c.call(execSql("COMMIT"))).toEqual({ kind: "failure", code: 10506, message: "leadership lost" })
      expect(yield* c.call(execSql("COMMIT"))).toEqual({ kind: "failure", code: 10250, message: "not leader" })
      gateway.fixture.setRole("leader")
      expect(yield* other.call(querySql("SELECT count(*) FROM t"))).toMatchObject({ rows: [[{ kind: "integer", value: 0 }]] })
    }))
})
