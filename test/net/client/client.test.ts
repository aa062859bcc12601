// The TypeScript client against live gateways (better-sqlite3 fixture, fake cluster) and against
// scripted servers that misbehave on purpose.
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Exit, Fiber, Stream } from "effect"
import type { ClientOptions } from "../../../src/net/client/Client.ts"
import { looksReadOnly, make } from "../../../src/net/client/Client.ts"
import { Values } from "../../../src/net/protocol/values.ts"
import { startGateway } from "../gateway/harness.ts"
import { scriptedLeader, scriptedServer } from "./scriptedServer.ts"

const client = (servers: ReadonlyArray<string>, options: Partial<ClientOptions> = {}) =>
  make({ servers, database: "test", retryBaseMs: 5, retryCapMs: 20, ...options })

const failureTag = <A, E extends { readonly _tag: string }>(exit: Exit.Exit<A, E>) =>
  Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error._tag : Exit.isSuccess(exit) ? "success" : "defect"

describe("client: SQL", () => {
  it.scopedLive("parameters and rows of every type, integers beyond 2^53 as bigint", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const db = yield* client([gateway.address])
      yield* db.exec("CREATE TABLE v (i INTEGER, f REAL, t TEXT, b BLOB, n, flag BOOLEAN, at DATETIME, big INTEGER)")
      const when = new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678))
      const inserted = yield* db.exec("INSERT INTO v VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
        42, 2.5, "héllo ✓", new Uint8Array([0, 1, 255]), null, true, when, 2n ** 62n + 1n
      ])
      expect(inserted).toEqual({ lastInsertId: 1n, rowsAffected: 1n })
      yield* db.exec("INSERT INTO v (i, big, flag, at) VALUES (?, ?, ?, ?)", [-(2n ** 63n), 2n ** 53n + 1n, false, 1700000000])
      const result = yield* db.query("SELECT i, f, t, b, n, flag, at, big, typeof(at) FROM v ORDER BY rowid")
      expect(result.columns).toEqual(["i", "f", "t", "b", "n", "flag", "at", "big", "typeof(at)"])
      expect(result.rows).toEqual([
        [42, 2.5, "héllo ✓", new Uint8Array([0, 1, 255]), null, true, "2024-01-02 03:04:05.678+00:00", 2n ** 62n + 1n, "text"],
        [-(2n ** 63n), null, null, null, null, false, new Date(1700000000 * 1000), 2n ** 53n + 1n, "integer"]
      ])
      // Safe integers come back as numbers, the first unsafe one as bigint.
      expect((yield* db.query("SELECT ?, ?", [2 ** 53 - 1, 2n ** 53n])).rows).toEqual([[2 ** 53 - 1, 2n ** 53n]])
      // A codec value forces a type: 2 as REAL.
      expect((yield* db.query("SELECT typeof(?)", [Values.float(2)])).rows).toEqual([["real"]])
      const bad = yield* Effect.exit(db.exec("SELECT ?", [2n ** 64n]))
      expect(failureTag(bad)).toBe("InvalidArgument")
    }))

  it.scopedLive("prepared statements: parameter count, exec, query, stream, re-use", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const db = yield* client([gateway.address], { connectionsMax: 2 })
      yield* db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
      const insert = yield* db.prepare("INSERT INTO t (k, v) VALUES (?1, ?2)")
      expect(insert.paramCount).toBe(2)
      for (let k = 1; k <= 50; k++) yield* insert.exec([k, `v${k}`])
      const select = yield* db.prepare("SELECT v FROM t WHERE k > ? ORDER BY k")
      expect((yield* select.query([47])).rows).toEqual([["v48"], ["v49"], ["v50"]])
      expect(Chunk.toReadonlyArray(yield* Stream.runCollect(select.stream([48])))).toEqual([["v49"], ["v50"]])
      const failed = yield* Effect.exit(insert.exec([1, "again"]))
      expect(Exit.isFailure(failed) && failed.cause._tag === "Fail" && failed.cause.error._tag === "ServerFailure" && failed.cause.error.code).toBe(1555)
      const syntax = yield* Effect.exit(db.prepare("SELEC"))
      expect(failureTag(syntax)).toBe("ServerFailure")
    }))

  it.scopedLive("streams 10,000 rows batch by batch; stopping early interrupts and leaves the connection usable", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const db = yield* client([gateway.address], { connectionsMax: 1 })
      yield* db.exec("CREATE TABLE t (n INTEGER)")
      yield* db.exec("WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < 10000) INSERT INTO t SELECT n FROM k")
      const all = yield* Stream.runCollect(db.stream("SELECT n FROM t ORDER BY n"))
      expect(Chunk.size(all)).toBe(10_000)
      expect(Chunk.toReadonlyArray(all).every((row, index) => row[0] === index + 1)).toBe(true)
      const firstFive = yield* Stream.runCollect(Stream.take(db.stream("SELECT n FROM t ORDER BY n"), 5))
      expect(Chunk.toReadonlyArray(firstFive)).toEqual([[1], [2], [3], [4], [5]])
      // One connection only: this works only if the early stop drained the stream with INTERRUPT.
      expect((yield* db.query("SELECT count(*) FROM t")).rows).toEqual([[10_000]])
      // …on the very same connection (it was not dropped and replaced).
      expect((yield* gateway.server.stats).accepted).toBe(1)
    }))
})

describe("client: transactions", () => {
  it.scopedLive("commit, rollback on failure, rollback on interrupt; statements inside use the pinned connection", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const db = yield* client([gateway.address], { connectionsMax: 1 })
      yield* db.exec("CREATE TABLE t (x)")
      // With one connection, exec inside the transaction would wait forever unless pinned.
      const committed = yield* db.transaction(Effect.gen(function*() {
        yield* db.exec("INSERT INTO t VALUES (1)")
        yield* db.exec("INSERT INTO t VALUES (2)")
        const inside = yield* Stream.runCollect(db.stream("SELECT count(*) FROM t"))
        return Chunk.toReadonlyArray(inside)
      }))
      expect(committed).toEqual([[2]])
      const failed = yield* Effect.exit(db.transaction(Effect.gen(function*() {
        yield* db.exec("INSERT INTO t VALUES (3)")
        return yield* Effect.fail("boom" as const)
      })))
      expect(Exit.isFailure(failed) && failed.cause._tag === "Fail" && failed.cause.error).toBe("boom")
      const fiber = yield* Effect.fork(db.transaction(Effect.gen(function*() {
        yield* db.exec("INSERT INTO t VALUES (4)")
        return yield* Effect.never
      })))
      yield* Effect.sleep("100 millis")
      yield* Fiber.interrupt(fiber)
      expect((yield* db.query("SELECT x FROM t ORDER BY x")).rows).toEqual([[1], [2]])
      // Nested transactions join the outer one.
      yield* db.transaction(db.transaction(db.exec("INSERT INTO t VALUES (5)")))
      expect((yield* db.query("SELECT count(*) FROM t")).rows).toEqual([[3]])
      // Inside a transaction: statements run while a stream is consumed, and from forked fibers.
      yield* db.transaction(Effect.gen(function*() {
        yield* Stream.runDrain(Stream.mapEffect(db.stream("SELECT x FROM t"), (row) => db.exec("INSERT INTO t VALUES (?)", [Number(row[0]) * 10])))
        yield* Effect.all([1, 2, 3, 4].map((n) => db.exec("INSERT INTO t VALUES (?)", [100 + n])), { concurrency: "unbounded" })
      }))
      expect((yield* db.query("SELECT x FROM t ORDER BY x")).rows).toEqual([[1], [2], [5], [10], [20], [50], [101], [102], [103], [104]])
    }))

  it.scopedLive("a leadership loss fails the transaction cleanly and nothing is kept", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const db = yield* client([gateway.address], { retriesMax: 1 })
      yield* db.exec("CREATE TABLE t (x)")
      const outcome = yield* Effect.exit(db.transaction(Effect.gen(function*() {
        yield* db.exec("INSERT INTO t VALUES (1)")
        gateway.fixture.loseLeadership()
      })))
      expect(Exit.isFailure(outcome) && outcome.cause._tag === "Fail" && outcome.cause.error._tag === "ServerFailure" && outcome.cause.error.code).toBe(10506)
      gateway.fixture.setRole("leader")
      expect((yield* db.query("SELECT count(*) FROM t")).rows).toEqual([[0]])
    }))
})

describe("client: leaders and retries", () => {
  it.scopedLive("finds the leader through a follower and follows a leadership change", () =>
    Effect.gen(function*() {
      const a = yield* startGateway()
      const b = yield* startGateway({ others: [{ id: 2, address: a.address, role: "voter" }], leader: 2 })
      b.fixture.setRole("follower", 2)
      // B names A (id 2 in B's view); A names itself.
      const db = yield* client([b.address])
      yield* db.exec("CREATE TABLE t (x)")
      expect(a.fixture.openSessions()).toBeGreaterThan(0)
      expect(yield* db.leader).toEqual({ id: 1n, address: a.address })

      // Leadership moves to B: A now answers "not leader" and names B.
      b.fixture.setRole("leader")
      b.cluster.state.leader = { id: 1, address: b.address }
      a.fixture.setRole("follower")
      a.cluster.state.members = [...a.cluster.state.members, { id: 3, address: b.address, role: "voter" }]
      a.cluster.state.leader = { id: 3, address: b.address }
      // Not leader means nothing was done: the write is retried on the new leader.
      yield* db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
      expect((yield* db.query("SELECT count(*) FROM t")).rows).toEqual([[1]])
      expect(yield* db.leader).toEqual({ id: 1n, address: b.address })
    }))

  it.scopedLive("a write whose connection drops after sending is not retried; a read is, a bounded number of times", () =>
    Effect.gen(function*() {
      const server = yield* scriptedLeader(() => "close")
      const db = yield* client([server.address], { retriesMax: 3 })
      const write = yield* Effect.exit(db.exec("INSERT INTO t VALUES (1)"))
      expect(failureTag(write)).toBe("ConnectionLost")
      expect(server.received.filter((r) => r.kind === "execSql")).toHaveLength(1)
      const read = yield* Effect.exit(db.query("SELECT 1"))
      expect(failureTag(read)).toBe("ConnectionLost")
      expect(server.received.filter((r) => r.kind === "querySql")).toHaveLength(4)
      const notIdempotent = yield* Effect.exit(db.query("SELECT 1", [], { idempotent: false }))
      expect(failureTag(notIdempotent)).toBe("ConnectionLost")
      expect(server.received.filter((r) => r.kind === "querySql")).toHaveLength(5)
      // RETURNING makes a query a write.
      yield* Effect.exit(db.query("INSERT INTO t VALUES (1) RETURNING *"))
      expect(server.received.filter((r) => r.kind === "querySql")).toHaveLength(6)
    }))

  it.scopedLive("a pooled connection the server closed while idle is replaced before anything is written to it", () =>
    Effect.gen(function*() {
      const server = yield* scriptedLeader(() => ({ kind: "result", lastInsertId: 1n, rowsAffected: 1n }))
      const db = yield* client([server.address], { retriesMax: 0, connectionsMax: 1 })
      yield* db.exec("INSERT INTO t VALUES (1)")
      server.closeConnections()
      yield* Effect.sleep("50 millis")
      // Not retried (retriesMax 0) and a write: this succeeds only on a fresh connection.
      expect(yield* db.exec("INSERT INTO t VALUES (2)")).toEqual({ lastInsertId: 1n, rowsAffected: 1n })
      expect(server.received.filter((r) => r.kind === "execSql")).toHaveLength(2)
      expect(server.connections()).toBe(2)
    }))

  it.scopedLive("every request has a timeout; a timed-out write is not retried", () =>
    Effect.gen(function*() {
      const server = yield* scriptedLeader(() => "silence")
      const db = yield* client([server.address], { requestTimeoutMs: 200, retriesMax: 2 })
      const started = Date.now()
      const write = yield* Effect.exit(db.exec("INSERT INTO t VALUES (1)"))
      expect(failureTag(write)).toBe("RequestTimeout")
      expect(Date.now() - started).toBeLessThan(2000)
      expect(server.received.filter((r) => r.kind === "execSql")).toHaveLength(1)
      const read = yield* Effect.exit(db.query("SELECT 1"))
      expect(failureTag(read)).toBe("RequestTimeout")
      expect(server.received.filter((r) => r.kind === "querySql")).toHaveLength(3)
    }))

  it.scopedLive("\"not leader\" is retried (nothing was done) up to the bound; no leader anywhere fails with NoLeader", () =>
    Effect.gen(function*() {
      const notLeader = yield* scriptedLeader(() => ({ kind: "failure", code: 10250, message: "not leader" }))
      const db = yield* client([notLeader.address], { retriesMax: 2 })
      const write = yield* Effect.exit(db.exec("INSERT INTO t VALUES (1)"))
      expect(failureTag(write)).toBe("ServerFailure")
      expect(notLeader.received.filter((r) => r.kind === "execSql")).toHaveLength(3)

      const lost = yield* scriptedLeader(() => ({ kind: "failure", code: 10506, message: "leadership lost" }))
      const db2 = yield* client([lost.address], { retriesMax: 2 })
      yield* Effect.exit(db2.exec("INSERT INTO t VALUES (1)"))
      expect(lost.received.filter((r) => r.kind === "execSql")).toHaveLength(1)

      const nobody = yield* scriptedServer((request) =>
        request.kind === "leader" ? { kind: "server", nodeId: 0n, address: "" } : { kind: "failure", code: 1, message: "unexpected" })
      const db3 = yield* client([nobody.address, "127.0.0.1:1"], { retriesMax: 2, connectTimeoutMs: 500 })
      const noLeader = yield* Effect.exit(db3.exec("SELECT 1"))
      expect(failureTag(noLeader)).toBe("NoLeader")
      expect(nobody.received.filter((r) => r.kind === "leader")).toHaveLength(3)
    }))
})

describe("client: cluster administration", () => {
  it.scopedLive("leader, cluster, add/assign/remove/transfer, describe, weight, dump", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway({ others: [{ id: 2, address: "127.0.0.1:9002", role: "voter" }] })
      const db = yield* client([gateway.address])
      expect(yield* db.cluster).toEqual([
        { id: 1n, address: gateway.address, role: "voter" },
        { id: 2n, address: "127.0.0.1:9002", role: "voter" }
      ])
      yield* db.add(5n, "127.0.0.1:9005")
      yield* db.assign(5n, "standby")
      expect((yield* db.cluster).find((s) => s.id === 5n)?.role).toBe("standby")
      yield* db.remove(5n)
      const unknown = yield* Effect.exit(db.remove(5n))
      expect(Exit.isFailure(unknown) && unknown.cause._tag === "Fail" && unknown.cause.error._tag === "ServerFailure" && unknown.cause.error.message).toBe("server ID is not valid")
      yield* db.setWeight(gateway.address, 3n)
      expect(yield* db.describe(gateway.address)).toEqual({ failureDomain: 0n, weight: 3n })
      yield* db.exec("CREATE TABLE t (x)")
      const files = yield* db.dump(gateway.address)
      expect(files.map((f) => f.name)).toEqual(["test", "test-wal"])
      yield* db.transfer(2n)
      expect(gateway.cluster.state.leader?.id).toBe(2)
    }))

  it("looksReadOnly is conservative", () => {
    expect(looksReadOnly("SELECT 1")).toBe(true)
    expect(looksReadOnly("  -- c\n with x as (select 1) select * from x")).toBe(true)
    expect(looksReadOnly("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x")).toBe(false)
    expect(looksReadOnly("INSERT INTO t VALUES (1) RETURNING *")).toBe(false)
    expect(looksReadOnly("SELECT 'update'")).toBe(true)
    expect(looksReadOnly("PRAGMA table_info(t)")).toBe(false)
  })
})
