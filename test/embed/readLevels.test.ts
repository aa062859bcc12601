// Read consistency levels on three embedded nodes (Tqlite.make on loopback): every level served
// by a follower from its own copy, with what each promises. The same levels with a follower
// whose appends are held back, and the mutations that break them, are in
// test/sqlite/ownCopyReads.test.ts (simulated time, deterministic).
import { describe, expect, it, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Duration, Effect, Exit, Fiber, Option, Scope } from "effect"
import type { TqliteService } from "../../src/embed/Tqlite.ts"
import * as TqliteModule from "../../src/embed/Tqlite.ts"
import { Tqlite } from "../../src/embed/Tqlite.ts"
import * as TqliteClient from "../../src/sql/TqliteClient.ts"
import * as Client from "../../src/net/client/Client.ts"
import { parseReadLevel, parseReadLevelFlag, readLevelText } from "../../src/net/protocol/readLevel.ts"
import { parseShellArgs } from "../../src/cli/commands/shell.ts"
import { Cluster, database, eventually, followersOf, leaderOf, loopbackAddress, makeClusterLayer, tempDir, tickMs } from "./cluster.ts"

const sessionWaitMs = 1_500

const count = (service: TqliteService, options?: Parameters<TqliteService["query"]>[2], table = "levels") =>
  Effect.map(service.query(`SELECT count(*) FROM ${table}`, [], options), (result) => Number(result.rows[0]![0]))

describe("read consistency on followers", () => {
  layer(makeClusterLayer({ sessionWaitMs }), { excludeTestServices: true, timeout: Duration.seconds(30) })("three nodes", (it) => {
    it.effect("linearizable (the default): a follower sees every write the leader just acknowledged, from its own copy", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const followers = yield* followersOf(nodes)
        yield* leader.service.execute("CREATE TABLE IF NOT EXISTS levels (id INTEGER PRIMARY KEY, v TEXT)")
        const start = yield* count(leader.service)
        const before = yield* Effect.forEach(followers, (f) => f.service.stats)
        for (let i = 1; i <= 30; i++) {
          yield* leader.service.execute("INSERT INTO levels (v) VALUES (?)", [`row ${i}`])
          // Acknowledged on the leader a moment ago; the follower has usually not applied it yet.
          expect(yield* count(followers[i % 2]!.service)).toBe(start + i)
        }
        const after = yield* Effect.forEach(followers, (f) => f.service.stats)
        // Served by each follower itself, never routed to the leader.
        expect(after.map((s, i) => s.localStatements - before[i]!.localStatements)).toEqual([15, 15])
        expect(after.map((s, i) => s.routedStatements - before[i]!.routedStatements)).toEqual([0, 0])
      }))

    it.effect("session: a write's raftIndex read on another follower, and a service's own writes without an index", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const [first, second] = yield* followersOf(nodes)
        yield* leader.service.execute("CREATE TABLE IF NOT EXISTS levels (id INTEGER PRIMARY KEY, v TEXT)")
        for (let i = 0; i < 10; i++) {
          // Routed to the leader; the token is the leader's read index taken just after.
          const written = yield* first!.service.execute("INSERT INTO levels (v) VALUES (?)", [`session ${i}`])
          expect(written.raftIndex).not.toBeNull()
          expect(yield* first!.service.lastWriteIndex).toBeGreaterThanOrEqual(written.raftIndex!)
          const where = "SELECT v FROM levels WHERE id = ?"
          const elsewhere = yield* second!.service.query(where, [written.lastInsertId], { consistency: { level: "session", index: written.raftIndex! } })
          expect(elsewhere.rows).toEqual([[`session ${i}`]])
          const own = yield* first!.service.query(where, [written.lastInsertId], { consistency: { level: "session" } })
          expect(own.rows).toEqual([[`session ${i}`]])
        }
        // A write on the leader's own service carries an index too.
        const onLeader = yield* leader.service.execute("INSERT INTO levels (v) VALUES ('on the leader')")
        const seen = yield* second!.service.query("SELECT v FROM levels WHERE id = ?", [onLeader.lastInsertId], { consistency: { level: "session", index: onLeader.raftIndex! } })
        expect(seen.rows).toEqual([["on the leader"]])
      }))

    it.effect("session waits at most sessionWaitMs, then ReplicaStale; local meanwhile answers at once", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const [follower] = yield* followersOf(nodes)
        yield* leader.service.execute("CREATE TABLE IF NOT EXISTS levels (id INTEGER PRIMARY KEY, v TEXT)")
        const unreachable = 1_000_000_000
        const waiting = yield* Effect.fork(Effect.either(count(follower!.service, { consistency: { level: "session", index: unreachable } })))
        const local = yield* count(follower!.service, { consistency: { level: "local" } })
        expect(local).toBeGreaterThanOrEqual(0)
        // Still waiting after the local read was answered: local never waits for anything.
        expect(Option.isNone(yield* Fiber.poll(waiting))).toBe(true)
        const outcome = yield* Fiber.join(waiting)
        expect(outcome._tag).toBe("Left")
        if (outcome._tag === "Left") expect(outcome.left).toMatchObject({ _tag: "ReplicaStale", reason: "session" })
      }))

    it.effect("bounded: served while the leader was heard from within maxLagMs, ReplicaStale (lag) past it", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const [follower] = yield* followersOf(nodes)
        yield* leader.service.execute("CREATE TABLE IF NOT EXISTS levels (id INTEGER PRIMARY KEY, v TEXT)")
        const written = yield* leader.service.execute("INSERT INTO levels (v) VALUES ('bounded')")
        // Heartbeats every 20 ms: well within 10 s, and it waits for the commit index the last
        // one vouched for.
        const within = yield* follower!.service.query("SELECT v FROM levels WHERE id = ?", [written.lastInsertId], { consistency: { level: "bounded", maxLagMs: 10_000 } })
        expect(within.rows.length).toBeLessThanOrEqual(1)
        // No follower hears from its leader within a microsecond of being asked.
        const stale = yield* Effect.either(count(follower!.service, { consistency: { level: "bounded", maxLagMs: 0.001 } }))
        expect(stale._tag).toBe("Left")
        if (stale._tag === "Left") expect(stale.left).toMatchObject({ _tag: "ReplicaStale", reason: "lag" })
        // The leader serves a bounded read as a linearizable one.
        expect(yield* count(leader.service, { consistency: { level: "bounded", maxLagMs: 0.001 } })).toBeGreaterThan(0)
      }))

    it.effect("withConsistency reaches the @effect/sql client's statements; a malformed level is SqlError 21 on every node", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const [follower] = yield* followersOf(nodes)
        yield* leader.service.execute("CREATE TABLE IF NOT EXISTS levels (id INTEGER PRIMARY KEY, v TEXT)")
        const program = Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT count(*) AS n FROM levels`)
        const client = (service: TqliteService) => Effect.provideService(Effect.provide(program, TqliteClient.layerFromTqlite()), Tqlite, service)
        const fine = yield* client(follower!.service).pipe(TqliteClient.withConsistency({ level: "local" }))
        expect(fine.length).toBe(1)
        const stale = yield* Effect.either(client(follower!.service).pipe(TqliteClient.withConsistency({ level: "bounded", maxLagMs: 0.001 })))
        expect(stale._tag).toBe("Left")
        if (stale._tag === "Left") expect((stale.left as { cause?: unknown }).cause).toMatchObject({ _tag: "ReplicaStale", reason: "lag" })
        for (const service of [leader.service, follower!.service]) {
          const bad = yield* Effect.either(count(service, { consistency: { level: "bounded", maxLagMs: -1 } }))
          expect(bad._tag === "Left" ? bad.left : null).toMatchObject({ _tag: "SqlError", code: 21 })
        }
      }))

    it.effect("the wire: a client asking for a level in OPEN reads from the follower it names; writes still reach the leader", () =>
      Effect.scoped(Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const [follower] = yield* followersOf(nodes)
        yield* leader.service.execute("CREATE TABLE IF NOT EXISTS levels (id INTEGER PRIMARY KEY, v TEXT)")
        const linearizable = yield* Client.make({ servers: [follower!.address], database, readConsistency: { level: "linearizable" } })
        for (let i = 0; i < 10; i++) {
          // A write goes to the leader as always; the read right after is served by the
          // follower, which waits for the leader's read index first.
          const written = yield* linearizable.exec("INSERT INTO levels (v) VALUES (?)", [`wire ${i}`])
          const seen = yield* linearizable.query("SELECT v FROM levels WHERE id = ?", [written.lastInsertId])
          expect(seen.rows).toEqual([[`wire ${i}`]])
        }
        // Proof that the follower serves it: only a node that does not lead refuses a bounded read.
        const bounded = yield* Client.make({ servers: [follower!.address], database, readConsistency: { level: "bounded", maxLagMs: 0.001 } })
        const refused = yield* Effect.either(bounded.query("SELECT count(*) FROM levels"))
        expect(refused._tag === "Left" ? refused.left : null).toMatchObject({ _tag: "ServerFailure", code: 5 })
        const onLeader = yield* Client.make({ servers: [leader.address], database, readConsistency: { level: "bounded", maxLagMs: 0.001 } })
        expect((yield* onLeader.query("SELECT count(*) FROM levels")).rows.length).toBe(1)
      })))
  })
})

describe("a follower left alone", () => {
  it.live("bounded refuses once the leader has been silent past maxLagMs; local still answers from the copy", () =>
    Effect.gen(function*() {
      const scopes = yield* Effect.forEach([0, 1, 2], () => Scope.make())
      const start = (index: number, join: ReadonlyArray<string>) =>
        Effect.gen(function*() {
          const dataDir = tempDir("tqlite-embed-alone-")
          const address = yield* loopbackAddress
          const service = yield* TqliteModule.make({ dataDir, address, join, tickMs, database }).pipe(Scope.extend(scopes[index]!))
          return { service, dataDir, address }
        })
      const first = yield* start(0, [])
      yield* leaderOf([first])
      const nodes = [first, yield* start(1, [first.address]), yield* start(2, [first.address])]
      yield* eventually("three voters", Effect.map(first.service.members, (members) => (members.filter((m) => m.role === "voter").length === 3 ? true : undefined)), 20_000)
      const leader = yield* leaderOf(nodes)
      yield* leader.service.execute("CREATE TABLE alone (id INTEGER PRIMARY KEY)")
      yield* leader.service.execute("INSERT INTO alone (id) VALUES (1)")
      const follower = nodes.find((n) => n !== leader)!
      const committed = (yield* leader.service.state)!.commitIndex
      yield* eventually("the follower to apply", Effect.map(follower.service.state, (s) => ((s?.appliedIndex ?? 0) >= committed ? true : undefined)))
      yield* eventually("a bounded read served while the leader is heard", Effect.map(Effect.either(count(follower.service, { consistency: { level: "bounded", maxLagMs: 2_000 } }, "alone")), (r) => (r._tag === "Right" ? r.right : undefined)))
      // The two others stop: nobody leads any more (a leader alone steps down on check-quorum).
      yield* Effect.forEach(nodes.filter((n) => n !== follower), (n) => Scope.close(scopes[nodes.indexOf(n)]!, Exit.void), { concurrency: "unbounded", discard: true })
      yield* eventually("the follower to lead nobody", Effect.map(follower.service.state, (s) => (s?.role !== "leader" ? true : undefined)), 20_000)
      yield* Effect.sleep(Duration.millis(600))
      const stale = yield* Effect.either(count(follower.service, { consistency: { level: "bounded", maxLagMs: 300 } }, "alone"))
      const local = yield* count(follower.service, { consistency: { level: "local" } }, "alone")
      yield* Scope.close(scopes[nodes.indexOf(follower)]!, Exit.void)
      expect(stale._tag === "Left" ? stale.left : null).toMatchObject({ _tag: "ReplicaStale", reason: "lag" })
      expect(local).toBe(1)
    }), 90_000)
})

describe("read levels as text", () => {
  it("OPEN's vfs and the shell's --consistency round-trip every level; anything else is refused or ignored", () => {
    for (const level of [{ level: "linearizable" }, { level: "local" }, { level: "bounded", maxLagMs: 250 }, { level: "session", index: 42 }] as const) {
      expect(parseReadLevel(readLevelText(level))).toEqual(level)
    }
    expect(parseReadLevel("")).toBeNull()
    expect(parseReadLevel("unix-excl")).toBeNull()
    expect(typeof parseReadLevel("tqlite-read:bounded:0")).toBe("string")
    expect(typeof parseReadLevel("tqlite-read:session:x")).toBe("string")
    expect(typeof parseReadLevel("tqlite-read:sometimes")).toBe("string")
    expect(parseReadLevelFlag("bounded:500")).toEqual({ level: "bounded", maxLagMs: 500 })
    const shell = parseShellArgs(["--servers", "127.0.0.1:9001", "--consistency", "local", "notes"])
    expect(typeof shell === "string" ? shell : shell.consistency).toEqual({ level: "local" })
    expect(parseShellArgs(["--servers", "127.0.0.1:9001", "--consistency", "fresh", "notes"])).toMatch(/--consistency/)
  })
})
