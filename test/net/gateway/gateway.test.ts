// Every request type served by a live gateway (127.0.0.1, ephemeral port) against the
// better-sqlite3 fixture and a fake cluster, checked through the codec and, for a few, byte for
// byte against the dqlite captures of the fact sheet.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { encodeProtocolVersion } from "../../../src/net/protocol/framing.ts"
import { encodeRequest } from "../../../src/net/protocol/requests.ts"
import type { Response } from "../../../src/net/protocol/responses.ts"
import { Values } from "../../../src/net/protocol/values.ts"
import { ascii, concat, hex, toHex } from "./helpers.ts"
import { execSql, querySql, rawConnect, startGateway } from "./harness.ts"

const failureOf = (response: Response) => (response.kind === "failure" ? { code: response.code, message: response.message } : response)

describe("gateway: connection setup and node requests", () => {
  it.scopedLive("LEADER, CLIENT, HEARTBEAT and unknown types, byte for byte", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address)

      yield* c.sendBytes(hex("01000000 00 00 0000 | 0000000000000000")) // LEADER
      const leader = yield* c.receiveFrame
      expect(leader?.type).toBe(1)
      expect(toHex(leader!.body.subarray(0, 8))).toBe(toHex(hex("0100000000000000")))
      expect(Buffer.from(leader!.body.subarray(8)).toString("latin1").replace(/\0+$/, "")).toBe(gateway.address)

      yield* c.sendBytes(hex("01000000 01 00 0000 | 0000000000000000")) // CLIENT
      const welcome = yield* c.receiveFrame
      expect(welcome).toEqual({ type: 2, schema: 0, body: hex("983a000000000000") })

      expect(failureOf(yield* c.call({ kind: "heartbeat", timestamp: 5n }))).toEqual({ code: 1005, message: "unrecognized request type" })
      yield* c.sendBytes(hex("01000000 14 00 0000 | 0000000000000000")) // type 20
      expect(failureOf(yield* c.receive())).toEqual({ code: 1005, message: "unrecognized request type" })
      expect(failureOf(yield* c.call({ kind: "connect", nodeId: 1n, address: "x" }))).toEqual({ code: 1005, message: "unrecognized request type" })
      // Schema 1 on a request that has none, and schema 2 on one that has 0 and 1.
      yield* c.sendBytes(hex("01000000 00 01 0000 | 0000000000000000"))
      expect(failureOf(yield* c.receive())).toEqual({ code: 1005, message: "unrecognized schema version" })
      yield* c.sendBytes(concat(hex("02000000 08 02 0000"), new Uint8Array(8), ascii("BEGIN", 8)))
      expect(failureOf(yield* c.receive())).toEqual({ code: 1, message: "unrecognized schema version" })
    }))

  it.scopedLive("LEADER on the legacy protocol carries the address only", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address, { version: "legacy" })
      expect(yield* c.call({ kind: "leader" }, { protocol: "legacy" })).toEqual({ kind: "serverLegacy", address: gateway.address })
    }))

  it.scopedLive("a follower names the leader; a standby names nobody even if it knows", () =>
    Effect.gen(function*() {
      const follower = yield* startGateway({ others: [{ id: 7, address: "127.0.0.1:9007", role: "voter" }], leader: 7 })
      const c = yield* rawConnect(follower.address)
      expect(yield* c.call({ kind: "leader" })).toEqual({ kind: "server", nodeId: 7n, address: "127.0.0.1:9007" })
      const standby = yield* startGateway({ others: [{ id: 7, address: "127.0.0.1:9007", role: "voter" }], leader: 7, selfRole: "standby" })
      const s = yield* rawConnect(standby.address)
      expect(yield* s.call({ kind: "leader" })).toEqual({ kind: "server", nodeId: 0n, address: "" })
    }))

  it.scopedLive("OPEN answers DB(0) once; SQL before OPEN or with another db id answers 12", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address)
      expect(failureOf(yield* c.call(execSql("SELECT 1")))).toEqual({ code: 12, message: "no database opened" })
      yield* c.sendBytes(concat(hex("04000000 03 00 0000"), ascii("demo", 8), new Uint8Array(8), ascii("volatile", 16)))
      expect(yield* c.receiveFrame).toEqual({ type: 4, schema: 0, body: new Uint8Array(8) })
      expect(failureOf(yield* c.call({ kind: "open", database: "other", flags: 0n, vfs: "" }))).toEqual({
        code: 5,
        message: "a database for this connection is already open"
      })
      expect(failureOf(yield* c.call({ kind: "execSql", schema: 0, dbId: 1n, sql: "SELECT 1", params: [] }))).toEqual({
        code: 12,
        message: "no database opened"
      })
    }))
})

describe("gateway: SQL requests", () => {
  it.scopedLive("EXEC_SQL: multi-statement text, sticky counters, empty text, SQLite failures", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address)
      yield* c.open()
      expect(yield* c.call(execSql("CREATE TABLE model (key TEXT, value TEXT, UNIQUE(key)); INSERT INTO model VALUES ('a', '1'); INSERT INTO model VALUES ('b', '2')")))
        .toEqual({ kind: "result", lastInsertId: 2n, rowsAffected: 1n })
      // Byte level, as captured from dqlite: EXEC_SQL "BEGIN" → RESULT with the sticky (2, 1).
      yield* c.sendBytes(concat(hex("02000000 08 00 0000"), new Uint8Array(8), ascii("BEGIN", 8)))
      expect(toHex((yield* c.receiveFrame)!.body)).toBe(toHex(hex("0200000000000000 0100000000000000")))
      expect(yield* c.call(execSql("COMMIT"))).toEqual({ kind: "result", lastInsertId: 2n, rowsAffected: 1n })
      // Empty, whitespace or comment-only text: RESULT(0, 0).
      expect(yield* c.call(execSql(""))).toEqual({ kind: "result", lastInsertId: 0n, rowsAffected: 0n })
      expect(yield* c.call(execSql("  -- nothing\n ; /* here */"))).toEqual({ kind: "result", lastInsertId: 0n, rowsAffected: 0n })
      // A UNIQUE violation, byte for byte as dqlite sends it.
      yield* c.send(execSql("INSERT INTO model VALUES ('a', 'x')"))
      const failure = yield* c.receiveFrame
      expect(toHex(failure!.body)).toBe(toHex(concat(hex("1308000000000000"), ascii("UNIQUE constraint failed: model.key", 40))))
      // Parameters bind positionally, whatever the placeholder style; missing ones are NULL.
      expect(yield* c.call(execSql("INSERT INTO model VALUES (:k, ?2)", [Values.text("c")]))).toEqual({ kind: "result", lastInsertId: 3n, rowsAffected: 1n })
      expect(yield* c.call(querySql("SELECT key, value FROM model WHERE key = ?", [Values.text("c")]))).toEqual({
        kind: "rows",
        columns: ["key", "value"],
        rows: [[Values.text("c"), Values.null]],
        end: "done"
      })
      // Too many values, and a row-yielding statement sent as EXEC_SQL.
      expect(failureOf(yield* c.call(execSql("INSERT INTO model VALUES (?, ?)", [1, 2, 3].map(Values.integer))))).toEqual({
        code: 25,
        message: "column index out of range"
      })
      expect(failureOf(yield* c.call(execSql("SELECT * FROM model")))).toEqual({ code: 1, message: "rows yielded when none expected for EXEC request" })
      expect(failureOf(yield* c.call(execSql("SELEC 1")))).toEqual({ code: 1, message: "near \"SELEC\": syntax error" })
    }))

  it.scopedLive("QUERY_SQL: ROWS byte for byte, empty statement, zero-column statements, bad parameters", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address)
      yield* c.open()
      // The fact sheet's capture, with 2.5 for 2.0 (an integral REAL is sent as INTEGER, see sqlValues.ts).
      yield* c.send(querySql("SELECT 1, 'x', NULL, 2.5, x'ff'"))
      const rows = yield* c.receiveFrame
      expect(rows?.type).toBe(7)
      expect(toHex(rows!.body)).toBe(toHex(concat(
        hex("0500000000000000"),
        ascii("1", 8), ascii("'x'", 8), ascii("NULL", 8), ascii("2.5", 8), ascii("x'ff'", 8),
        hex("31 25 04 00 00 00 00 00"),
        hex("0100000000000000"), ascii("x", 8), new Uint8Array(8), hex("0000000000000440"), hex("0100000000000000"), hex("ff00000000000000"),
        hex("ffffffffffffffff")
      )))
      expect(failureOf(yield* c.call(querySql("  ")))).toEqual({ code: 0, message: "empty statement" })
      expect(yield* c.call(querySql("CREATE TABLE t (x)"))).toEqual({ kind: "rows", columns: [], rows: [], end: "done" })
      // A UNIXTIME parameter and an unknown type are refused as dqlite ≥ 1.12 does.
      yield* c.sendBytes(concat(hex("05000000 09 00 0000"), new Uint8Array(8), ascii("SELECT ?", 16), hex("01 09 000000000000"), hex("0000000000000000")))
      expect(failureOf(yield* c.receive())).toEqual({ code: 1, message: "bind parameters" })
      yield* c.sendBytes(concat(hex("05000000 09 00 0000"), new Uint8Array(8), ascii("SELECT ?", 16), hex("01 0c 000000000000"), hex("0000000000000000")))
      expect(failureOf(yield* c.receive())).toEqual({ code: 1, message: "bind parameters" })
      // Still serving.
      expect(yield* c.call(querySql("SELECT count(*) FROM t"))).toMatchObject({ kind: "rows", rows: [[Values.integer(0)]] })
    }))

  it.scopedLive("PREPARE / EXEC / QUERY / FINALIZE: parameter counts, tails, ids", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address)
      yield* c.open()
      yield* c.call(execSql("CREATE TABLE t (a INTEGER, b TEXT)"))
      expect(yield* c.call({ kind: "prepare", schema: 0, dbId: 0n, sql: "INSERT INTO t VALUES (?1, ?2)" })).toEqual({
        kind: "stmt", dbId: 0, stmtId: 0, paramCount: 2, tailOffset: null
      })
      expect(yield* c.call({ kind: "prepare", schema: 0, dbId: 0n, sql: "SELECT a, b FROM t WHERE a > ?1 OR a = ?2 OR a = ?1" })).toEqual({
        kind: "stmt", dbId: 0, stmtId: 1, paramCount: 2, tailOffset: null
      })
      expect(yield* c.call({ kind: "exec", schema: 0, dbId: 0, stmtId: 0, params: [Values.integer(1), Values.text("one")] })).toEqual({
        kind: "result", lastInsertId: 1n, rowsAffected: 1n
      })
      expect(yield* c.call({ kind: "exec", schema: 0, dbId: 0, stmtId: 0, params: [Values.integer(2)] })).toEqual({
        kind: "result", lastInsertId: 2n, rowsAffected: 1n
      })
      expect(yield* c.call({ kind: "query", schema: 0, dbId: 0, stmtId: 1, params: [Values.integer(1), Values.integer(1)] })).toEqual({
        kind: "rows", columns: ["a", "b"], rows: [[Values.integer(1), Values.text("one")], [Values.integer(2), Values.null]], end: "done"
      })
      expect(failureOf(yield* c.call({ kind: "exec", schema: 0, dbId: 0, stmtId: 0, params: [1, 2, 3].map(Values.integer) }))).toEqual({
        code: 25, message: "column index out of range"
      })
      expect(yield* c.call({ kind: "finalize", dbId: 0, stmtId: 0 })).toEqual({ kind: "empty" })
      expect(failureOf(yield* c.call({ kind: "finalize", dbId: 0, stmtId: 0 }))).toEqual({ code: 12, message: "no statement with the given id" })
      expect(failureOf(yield* c.call({ kind: "exec", schema: 0, dbId: 0, stmtId: 0, params: [] }))).toEqual({ code: 12, message: "no statement with the given id" })
      // Freed ids are reused, lowest first.
      expect(yield* c.call({ kind: "prepare", schema: 0, dbId: 0n, sql: "SELECT 1" })).toMatchObject({ kind: "stmt", stmtId: 0, paramCount: 0 })
      // Empty text, a tail at schema 0, and the tail offset (in UTF-8 bytes) at schema 1.
      expect(failureOf(yield* c.call({ kind: "prepare", schema: 0, dbId: 0n, sql: "-- only a comment" }))).toEqual({ code: 0, message: "empty statement" })
      expect(failureOf(yield* c.call({ kind: "prepare", schema: 0, dbId: 0n, sql: "SELECT 1; SELECT 2" }))).toEqual({ code: 1, message: "nonempty statement tail" })
      expect(yield* c.call({ kind: "prepare", schema: 0, dbId: 0n, sql: "SELECT 3; -- trailing comment" })).toMatchObject({ kind: "stmt", stmtId: 2 })
      expect(yield* c.call({ kind: "prepare", schema: 1, dbId: 0n, sql: "SELECT 'é'; SELECT 2" })).toEqual({
        kind: "stmt", dbId: 0, stmtId: 3, paramCount: 0, tailOffset: 12
      })
      expect(failureOf(yield* c.call({ kind: "prepare", schema: 0, dbId: 0n, sql: "SELECT nope FROM t" }))).toEqual({ code: 1, message: "no such column: nope" })
    }))

  it.scopedLive("special value types from declared column types, as dqlite chooses them", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address)
      yield* c.open()
      yield* c.call(execSql("CREATE TABLE t (d DATETIME, b BOOLEAN, r REAL, x DATETIME(6), y bool)"))
      yield* c.call(execSql("INSERT INTO t VALUES (1700000000, 5, 3, 1, 1), ('2024-01-02 03:04:05', 0, 2.5, 'z', 't'), (NULL, NULL, NULL, NULL, NULL), (2.5, 'yes', x'00', NULL, NULL)"))
      const response = yield* c.call(querySql("SELECT d, b, r, x, y, d AS alias, (SELECT d FROM t LIMIT 1), d + 0 FROM t"))
      expect(response.kind).toBe("rows")
      if (response.kind !== "rows") return
      expect(response.rows).toEqual([
        [Values.unixtime(1700000000), Values.boolean(5), Values.float(3), Values.integer(1), Values.integer(1), Values.unixtime(1700000000), Values.unixtime(1700000000), Values.integer(1700000000)],
        [Values.iso8601("2024-01-02 03:04:05"), Values.boolean(0), Values.float(2.5), Values.text("z"), Values.text("t"), Values.iso8601("2024-01-02 03:04:05"), Values.unixtime(1700000000), Values.integer(2024)],
        [Values.iso8601(""), Values.boolean(0), Values.null, Values.null, Values.null, Values.iso8601(""), Values.unixtime(1700000000), Values.null],
        // Where dqlite 1.11 crashes: a REAL in a DATETIME column, text in a BOOLEAN one.
        [Values.float(2.5), Values.text("yes"), Values.blob(new Uint8Array([0])), Values.null, Values.null, Values.float(2.5), Values.unixtime(1700000000), Values.float(2.5)]
      ])
    }))

  it.scopedLive("interactive transactions: held per connection, locked for others, rolled back on disconnect", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const a = yield* rawConnect(gateway.address)
      const b = yield* rawConnect(gateway.address)
      yield* a.open()
      yield* b.open()
      yield* a.call(execSql("CREATE TABLE t (x)"))
      yield* a.call(execSql("BEGIN"))
      yield* a.call(execSql("INSERT INTO t VALUES (1)"))
      expect(yield* b.call(querySql("SELECT count(*) FROM t"))).toMatchObject({ rows: [[Values.integer(0)]] })
      expect(failureOf(yield* b.call(execSql("INSERT INTO t VALUES (2)")))).toEqual({ code: 5, message: "database is locked" })
      yield* a.call(execSql("COMMIT"))
      expect(yield* b.call(querySql("SELECT count(*) FROM t"))).toMatchObject({ rows: [[Values.integer(1)]] })

      // A connection that disappears mid-transaction leaves nothing behind.
      yield* b.call(execSql("BEGIN; INSERT INTO t VALUES (3)"))
      b.socket.destroy()
      const deadline = Date.now() + 5000
      while (gateway.fixture.openSessions() > 1 && Date.now() < deadline) yield* Effect.sleep("10 millis")
      expect(gateway.fixture.openSessions()).toBe(1)
      expect(yield* a.call(querySql("SELECT count(*) FROM t"))).toMatchObject({ rows: [[Values.integer(1)]] })
      expect(yield* a.call(execSql("INSERT INTO t VALUES (4)"))).toMatchObject({ kind: "result", rowsAffected: 1n })
    }))
})

describe("gateway: cluster requests", () => {
  it.scopedLive("CLUSTER in both formats, DESCRIBE, WEIGHT", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway({ others: [{ id: 2, address: "127.0.0.1:9002", role: "standby" }, { id: 3, address: "127.0.0.1:9003", role: "spare" }] })
      const c = yield* rawConnect(gateway.address)
      expect(yield* c.call({ kind: "cluster", format: 1 })).toEqual({
        kind: "servers",
        format: 1,
        servers: [
          { nodeId: 1n, address: gateway.address, role: 0 },
          { nodeId: 2n, address: "127.0.0.1:9002", role: 1 },
          { nodeId: 3n, address: "127.0.0.1:9003", role: 2 }
        ]
      })
      expect(yield* c.call({ kind: "cluster", format: 0 }, { serversFormat: 0 })).toMatchObject({ format: 0, servers: [{ nodeId: 1n }, { nodeId: 2n }, { nodeId: 3n }] })
      expect(failureOf(yield* c.call({ kind: "cluster", format: 2 }))).toEqual({ code: 1005, message: "unrecognized cluster format" })
      expect(yield* c.call({ kind: "describe", format: 0 })).toEqual({ kind: "metadata", failureDomain: 0n, weight: 0n })
      expect(failureOf(yield* c.call({ kind: "describe", format: 1 }))).toEqual({ code: 15, message: "bad format version" })
      expect(yield* c.call({ kind: "weight", weight: 42n })).toEqual({ kind: "empty" })
      expect(yield* c.call({ kind: "describe", format: 0 })).toEqual({ kind: "metadata", failureDomain: 0n, weight: 42n })
    }))

  it.scopedLive("ADD, ASSIGN, REMOVE, TRANSFER and their failures", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway({ others: [{ id: 2, address: "127.0.0.1:9002", role: "voter" }] })
      const c = yield* rawConnect(gateway.address)
      expect(yield* c.call({ kind: "add", nodeId: 3n, address: "127.0.0.1:9003" })).toEqual({ kind: "empty" })
      expect(failureOf(yield* c.call({ kind: "add", nodeId: 3n, address: "127.0.0.1:9003" }))).toEqual({ code: 1, message: "server ID already in use" })
      expect(gateway.cluster.state.members.find((m) => m.id === 3)?.role).toBe("spare")
      expect(yield* c.call({ kind: "assign", nodeId: 3n, role: 1 })).toEqual({ kind: "empty" })
      expect(failureOf(yield* c.call({ kind: "assign", nodeId: 3n, role: 1 }))).toEqual({ code: 1, message: "server role is not valid" })
      expect(failureOf(yield* c.call({ kind: "assign", nodeId: 3n, role: 7 }))).toEqual({ code: 1, message: "server role is not valid" })
      // The one-word legacy PROMOTE form means voter.
      yield* c.sendBytes(hex("01000000 0d 00 0000 | 0300000000000000"))
      expect(yield* c.receive()).toEqual({ kind: "empty" })
      expect(gateway.cluster.state.members.find((m) => m.id === 3)?.role).toBe("voter")
      expect(failureOf(yield* c.call({ kind: "remove", nodeId: 9n }))).toEqual({ code: 1, message: "server ID is not valid" })
      expect(failureOf(yield* c.call({ kind: "remove", nodeId: 2n ** 63n }))).toEqual({ code: 1, message: "server ID is not valid" })
      gateway.cluster.state.changeInProgress = true
      expect(failureOf(yield* c.call({ kind: "remove", nodeId: 3n }))).toEqual({ code: 5, message: "a configuration change is already in progress" })
      gateway.cluster.state.changeInProgress = false
      expect(yield* c.call({ kind: "remove", nodeId: 3n })).toEqual({ kind: "empty" })
      expect(failureOf(yield* c.call({ kind: "transfer", nodeId: 1n }))).toEqual({ code: 1, message: "leadership transfer failed" })
      expect(yield* c.call({ kind: "transfer", nodeId: 2n })).toEqual({ kind: "empty" })
      // Now a follower: changes answer "not leader", LEADER names node 2.
      expect(failureOf(yield* c.call({ kind: "add", nodeId: 4n, address: "x:1" }))).toEqual({ code: 10250, message: "not leader" })
      expect(yield* c.call({ kind: "leader" })).toEqual({ kind: "server", nodeId: 2n, address: "127.0.0.1:9002" })
      expect(gateway.cluster.state.calls).toEqual([
        "add 3 127.0.0.1:9003", "add 3 127.0.0.1:9003", "assign 3 standby", "assign 3 standby", "assign 3 voter",
        "remove 9", "remove 3", "remove 3", "transfer 1", "transfer 2", "add 4 x:1"
      ])
    }))

  it.scopedLive("DUMP: the database image and an empty WAL; unknown databases answer 1002", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address)
      yield* c.open("demo")
      yield* c.call(execSql("CREATE TABLE t (x); INSERT INTO t VALUES (1)"))
      const files = yield* c.call({ kind: "dump", database: "demo" })
      expect(files.kind).toBe("files")
      if (files.kind !== "files") return
      expect(files.files.map((f) => f.name)).toEqual(["demo", "demo-wal"])
      expect(Buffer.from(files.files[0]!.data.subarray(0, 16)).toString("latin1")).toBe("SQLite format 3\0")
      expect(files.files[0]!.data.byteLength % 4096).toBe(0)
      expect(files.files[1]!.data.byteLength).toBe(0)
      expect(failureOf(yield* c.call({ kind: "dump", database: "nope" }))).toEqual({ code: 1002, message: "database does not exists" })
    }))
})

describe("gateway: malformed input", () => {
  it.scopedLive("a zero-word body, truncated fields and bad texts get a FAILURE and the connection keeps serving", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address)
      yield* c.sendBytes(hex("00000000 00 00 0000")) // LEADER with no body: crashed dqlite 1.11.1
      expect((yield* c.receive()).kind).toBe("failure")
      yield* c.sendBytes(concat(hex("01000000 03 00 0000"), ascii("abcdefgh", 8))) // OPEN, name without NUL
      expect(failureOf(yield* c.receive())).toMatchObject({ code: 1005 })
      yield* c.sendBytes(hex("01000000 05 00 0000 | 0000000000000000 ")) // EXEC: ids only, no params: fine but no db
      expect(failureOf(yield* c.receive())).toEqual({ code: 12, message: "no database opened" })
      yield* c.open()
      // A message arriving in pieces is assembled (EXEC_SQL "SELECT ?", whose row makes it fail).
      yield* c.sendBytes(concat(hex("03000000 08 00 0000"), new Uint8Array(8), ascii("SELECT ?", 16).subarray(0, 8), hex("00")))
      yield* c.sendBytes(new Uint8Array(7))
      expect(failureOf(yield* c.receive())).toEqual({ code: 1, message: "rows yielded when none expected for EXEC request" })
      expect(yield* c.call(querySql("SELECT 42"))).toMatchObject({ rows: [[Values.integer(42)]] })
    }))

  it.scopedLive("an oversized header or an unknown version word closes the connection; others are unaffected", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway({ limits: { messageBytesMax: 1024 } })
      const healthy = yield* rawConnect(gateway.address)
      yield* healthy.open()
      const big = yield* rawConnect(gateway.address)
      yield* big.sendBytes(hex("00010000 08 00 0000")) // 256 words > 1024 bytes
      expect(yield* big.receiveFrame).toBeNull()
      const stranger = yield* rawConnect(gateway.address, { version: null })
      yield* stranger.sendBytes(hex("0200000000000000"))
      expect(yield* stranger.receiveFrame).toBeNull()
      expect(yield* healthy.call(querySql("SELECT 1"))).toMatchObject({ rows: [[Values.integer(1)]] })
      expect((yield* gateway.server.stats).rejected).toBe(1)
    }))

  it.scopedLive("the version word and the first request may arrive in one write", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address, { version: null })
      yield* c.sendBytes(concat(encodeProtocolVersion("v1"), encodeRequest({ kind: "leader" }), encodeRequest({ kind: "client", clientId: 9n })))
      expect(yield* c.receive()).toMatchObject({ kind: "server", nodeId: 1n })
      expect(yield* c.receive()).toEqual({ kind: "welcome", heartbeatTimeoutMs: 15000 })
    }))
})
