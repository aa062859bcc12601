// tqlite embedded in an Effect program: three in-process nodes on loopback (Tqlite.make, the
// second and third joining the first), one @effect/sql program run through the leader's service,
// then through a follower's (routed to the leader), then through layerRemote; typed errors; the
// role-change stream across a leadership transfer.
import { describe, expect, it, layer } from "@effect/vitest"
import * as net from "node:net"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError as EffectSqlError } from "@effect/sql/SqlError"
import { Data, Deferred, Duration, Effect, Fiber, Layer, Stream } from "effect"
import * as Client from "../../src/net/client/Client.ts"
import { Tqlite } from "../../src/embed/Tqlite.ts"
import type { TqliteService } from "../../src/embed/Tqlite.ts"
import * as TqliteClient from "../../src/sql/TqliteClient.ts"
import * as TqliteMigrator from "../../src/sql/TqliteMigrator.ts"
import type { EmbeddedNode } from "./cluster.ts"
import { Cluster, clusterLayer, database, followerRows, followersOf, leaderOf, tempDir } from "./cluster.ts"

const migrations = TqliteMigrator.fromRecord({
  "1_create_notes": Effect.flatMap(SqlClient.SqlClient, (sql) => sql`CREATE TABLE notes (id INTEGER PRIMARY KEY, author TEXT NOT NULL, body TEXT NOT NULL)`),
  "2_add_tag": Effect.flatMap(SqlClient.SqlClient, (sql) => sql`ALTER TABLE notes ADD COLUMN tag TEXT`)
})

class Refused extends Data.TaggedError("Refused")<{ readonly seenInside: number }> {}

/** Code written against SqlClient only: it cannot tell which node, or which route, serves it. */
const notesProgram = (author: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const applied = yield* TqliteMigrator.run({ loader: migrations })
    yield* sql`INSERT INTO notes ${sql.insert({ author, body: "first", tag: "a" })}`
    yield* sql`INSERT INTO notes ${sql.insert([{ author, body: "second", tag: "b" }, { author, body: "third", tag: null }])}`
    // Committed, with a nested transaction (a savepoint) that fails and is rolled back to.
    yield* sql.withTransaction(
      Effect.gen(function*() {
        yield* sql`INSERT INTO notes ${sql.insert({ author, body: "committed", tag: "tx" })}`
        const inner = yield* Effect.either(sql.withTransaction(
          Effect.zipRight(sql`INSERT INTO notes ${sql.insert({ author, body: "inner", tag: "tx" })}`, Effect.fail(new Refused({ seenInside: -1 })))
        ))
        expect(inner._tag).toBe("Left")
      })
    )
    // Fails after writing: rolled back, although the write was visible inside.
    const failure = yield* Effect.flip(sql.withTransaction(
      Effect.gen(function*() {
        yield* sql`INSERT INTO notes ${sql.insert({ author, body: "rolled back", tag: "tx" })}`
        const [inside] = yield* sql<{ n: number }>`SELECT count(*) AS n FROM notes WHERE author = ${author} AND body = 'rolled back'`
        return yield* new Refused({ seenInside: inside!.n })
      })
    ))
    const bodies = yield* sql<{ body: string; tag: string | null }>`SELECT body, tag FROM notes WHERE author = ${author} ORDER BY id`
    return { applied, failure, bodies }
  })

const expectedBodies = [
  { body: "first", tag: "a" },
  { body: "second", tag: "b" },
  { body: "third", tag: null },
  { body: "committed", tag: "tx" }
]

const sqlClientOn = (node: TqliteService) => TqliteClient.layerFromTqlite().pipe(Layer.provide(Layer.succeed(Tqlite, node)))

const bodiesEverywhere = (nodes: ReadonlyArray<EmbeddedNode>, author: string) =>
  Effect.gen(function*() {
    const leader = yield* leaderOf(nodes)
    const select = `SELECT body FROM notes WHERE author = '${author}' ORDER BY id`
    const seen: Array<Array<unknown>> = [(yield* leader.service.query(select)).rows.map((r) => r[0])]
    for (const follower of nodes.filter((n) => n !== leader)) seen.push((yield* followerRows(leader, follower, select)).map((r) => r[0]))
    return seen
  })

const sqlErrorCause = (error: EffectSqlError) => error.cause as { readonly _tag: string; readonly code?: number }

describe("Tqlite embedded", () => {
  layer(clusterLayer, { excludeTestServices: true, timeout: Duration.seconds(30) })("three nodes", (it) => {
    it.effect("migrations from every node at once: one runs them, the others find nothing to do", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const results = yield* Effect.all(
          nodes.map((node) => Effect.provide(TqliteMigrator.run({ loader: migrations }), sqlClientOn(node.service))),
          { concurrency: "unbounded" }
        )
        expect(results.map((r) => r.length).sort()).toEqual([0, 0, 2])
        expect(results.flat().map(([id, name]) => `${id}_${name}`)).toEqual(["1_create_notes", "2_add_tag"])
      }))

    it.effect("the @effect/sql program on the leader: inserts, queries, a committed and a rolled-back transaction", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const before = yield* leader.service.stats
        const result = yield* Effect.provide(notesProgram("leader"), sqlClientOn(leader.service))
        const after = yield* leader.service.stats
        // Served by the node's own SQL surface, never through a socket.
        expect(after.routedStatements).toBe(before.routedStatements)
        expect(after.localStatements - before.localStatements).toBeGreaterThanOrEqual(10)
        expect(result.applied).toEqual([])
        expect(result.failure).toEqual(new Refused({ seenInside: 1 }))
        expect(result.bodies).toEqual(expectedBodies)
        // Nothing of the rolled-back transactions on any node; the committed rows on all three.
        const everywhere = yield* bodiesEverywhere(nodes, "leader")
        expect(everywhere).toEqual([0, 1, 2].map(() => expectedBodies.map((b) => b.body)))
      }))

    it.effect("the same program through a follower's service: writes routed to the leader, reads from its own copy", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const [follower] = yield* followersOf(nodes)
        expect((yield* follower!.service.state)?.role).toBe("follower")
        const before = yield* follower!.service.stats
        const result = yield* Effect.provide(notesProgram("follower"), sqlClientOn(follower!.service))
        const after = yield* follower!.service.stats
        expect((yield* follower!.service.state)?.role).toBe("follower")
        // The read outside a transaction is served by the follower (linearizable: the leader's
        // read index, then its own copy); everything else goes to the leader.
        expect(after.localStatements - before.localStatements).toBe(1)
        expect(after.routedStatements - before.routedStatements).toBeGreaterThanOrEqual(10)
        expect(result.failure).toEqual(new Refused({ seenInside: 1 }))
        expect(result.bodies).toEqual(expectedBodies)
        const everywhere = yield* bodiesEverywhere(nodes, "follower")
        expect(everywhere).toEqual([0, 1, 2].map(() => expectedBodies.map((b) => b.body)))
      }))

    it.effect("layerRemote: the same program over the wire client, from a follower's address", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const [follower] = yield* followersOf(nodes)
        const remote = TqliteClient.layerRemote({ servers: [follower!.address], database })
        const result = yield* Effect.provide(notesProgram("remote"), remote)
        expect(result.failure).toEqual(new Refused({ seenInside: 1 }))
        expect(result.bodies).toEqual(expectedBodies)
        const info = yield* Effect.provide(Effect.flatMap(Tqlite, (t) => Effect.all([t.leader, t.members, t.state])), Tqlite.layerRemote({ servers: [follower!.address], database }))
        const leader = yield* leaderOf(nodes)
        expect(info[0]?.address).toBe(leader.address)
        expect(info[1].map((m) => m.address).sort()).toEqual(nodes.map((n) => n.address).sort())
        expect(info[2]).toBeNull()
      }))

    it.effect("values come back alike from the leader's and a follower's service", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const [follower] = yield* followersOf(nodes)
        yield* leader.service.execute("CREATE TABLE typed (i INTEGER, big INTEGER, r REAL, flag BOOLEAN, at DATETIME, b BLOB)")
        const at = new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6))
        const inserted = yield* follower!.service.execute("INSERT INTO typed VALUES (?, ?, ?, ?, ?, ?)", [7, 2n ** 60n, 1.5, true, at, Uint8Array.of(1, 2)])
        expect(inserted.rowsAffected).toBe(1)
        yield* leader.service.execute("INSERT INTO typed VALUES (?, ?, ?, ?, strftime('%s', ?), NULL)", [-1, -(2n ** 62n), 2, false, "2026-01-02 03:04:05"])
        const select = "SELECT i, big, r, flag, at, b FROM typed ORDER BY i"
        const fromLeader = yield* leader.service.query(select)
        const fromFollower = yield* follower!.service.query(select)
        expect(fromFollower).toEqual(fromLeader)
        expect(fromLeader.rows).toEqual([
          [-1, -(2n ** 62n), 2, false, new Date(Date.UTC(2026, 0, 2, 3, 4, 5)), null],
          [7, 2n ** 60n, 1.5, true, "2026-01-02 03:04:05.006+00:00", Uint8Array.of(1, 2)]
        ])
      }))

    it.effect("both routes answer SQLite's classes, the first statement's rows, named parameters and SQLite's own syntax error", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const [follower] = yield* followersOf(nodes)
        for (const node of [leader, follower!]) {
          const classes = yield* node.service.query("SELECT 1e15, -0.0, 2.0, typeof(2.0), 9007199254740993, typeof(?), typeof(?); SELECT 'second'", [2, 2.5])
          expect(classes.rows).toEqual([[1e15, -0, 2, "real", 9007199254740993n, "integer", "real"]])
          expect(Object.is(classes.rows[0]![1], -0)).toBe(true)
          // `@b` takes the index after ?3 (4); index 2 is unused: value 2 binds nowhere.
          expect((yield* node.service.query("SELECT :a, ?3, @b", [1, 2, 3, 4])).rows).toEqual([[1, 3, 4]])
          const syntax = yield* Effect.flip(node.service.query("SELECT 1 +;"))
          expect(syntax).toMatchObject({ _tag: "SqlError", code: 1, message: "near \";\": syntax error" })
        }
      }))

    it.effect("typed errors: SqlError with SQLite's code on every route, refused transaction control and parameters", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const [follower] = yield* followersOf(nodes)
        for (const node of [leader, follower!]) {
          const bad = yield* Effect.flip(node.service.query("SELEKT 1"))
          expect(bad._tag).toBe("SqlError")
          if (bad._tag === "SqlError") {
            expect(bad.code).toBe(1)
            expect(bad.message).toContain("syntax error")
          }
          const unique = yield* Effect.flip(node.service.execute("INSERT INTO notes (id, author, body) VALUES (1, 'x', 'dup')"))
          expect(unique).toMatchObject({ _tag: "SqlError", code: 1555 })
          expect(yield* Effect.flip(node.service.execute("BEGIN"))).toMatchObject({ _tag: "SqlError", code: 21 })
          expect(yield* Effect.flip(node.service.execute("SAVEPOINT s"))).toMatchObject({ _tag: "SqlError", code: 21 })
          expect(yield* Effect.flip(node.service.query("SELECT ?", [{ not: "a value" } as never]))).toMatchObject({ _tag: "SqlError", code: 20 })
          // Through SqlClient: @effect/sql's SqlError, the Tqlite error as its cause.
          const viaSql = yield* Effect.flip(Effect.provide(Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELEKT 1`), sqlClientOn(node.service)))
          expect(viaSql._tag).toBe("SqlError")
          expect(sqlErrorCause(viaSql)).toMatchObject({ _tag: "SqlError", code: 1 })
        }
        // BEGIN … END inside CREATE TRIGGER is not transaction control.
        yield* follower!.service.execute("CREATE TRIGGER notes_touch AFTER INSERT ON notes WHEN NEW.author = 'trigger' BEGIN UPDATE notes SET tag = 'touched' WHERE id = NEW.id; END")
        yield* leader.service.execute("INSERT INTO notes (author, body) VALUES ('trigger', 'x')")
        expect((yield* follower!.service.query("SELECT tag FROM notes WHERE author = 'trigger'")).rows).toEqual([["touched"]])
        // A failed statement inside a transaction fails the transaction, which rolls back.
        const rolledBack = yield* Effect.flip(follower!.service.transaction(
          Effect.zipRight(follower!.service.execute("INSERT INTO notes (author, body) VALUES ('errors', 'kept?')"), follower!.service.execute("SELEKT"))
        ))
        expect(rolledBack).toMatchObject({ _tag: "SqlError", code: 1 })
        expect((yield* leader.service.query("SELECT count(*) FROM notes WHERE author = 'errors'")).rows).toEqual([[0]])
      }))

    it.effect("concurrent read-modify-write transactions from every node lose no update", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        yield* leader.service.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        yield* leader.service.execute("INSERT INTO counter VALUES (1, 0)")
        const increment = (node: EmbeddedNode) =>
          node.service.transaction(Effect.gen(function*() {
            const { rows } = yield* node.service.query("SELECT n FROM counter WHERE id = 1")
            yield* Effect.yieldNow()
            yield* node.service.execute("UPDATE counter SET n = ? WHERE id = 1", [Number(rows[0]![0]) + 1])
          }))
        yield* Effect.forEach(nodes.flatMap((node) => [node, node, node]), increment, { concurrency: "unbounded", discard: true })
        expect((yield* leader.service.query("SELECT n FROM counter")).rows).toEqual([[9]])
      }))

    it.effect("SAVEPOINT, RELEASE and ROLLBACK TO inside a transaction, on both routes", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const [follower] = yield* followersOf(nodes)
        for (const node of [leader, follower!]) {
          const db = node.service
          const author = `savepoints ${node.address}`
          yield* db.transaction(Effect.gen(function*() {
            yield* db.execute("SAVEPOINT kept")
            yield* db.execute("INSERT INTO notes (author, body) VALUES (?, 'kept')", [author])
            yield* db.execute("RELEASE kept")
            yield* db.execute("SAVEPOINT dropped")
            yield* db.execute("INSERT INTO notes (author, body) VALUES (?, 'dropped')", [author])
            yield* db.execute("ROLLBACK TO dropped")
            yield* db.execute("INSERT INTO notes (author, body) VALUES (?, 'last')", [author])
          }))
          expect((yield* leader.service.query("SELECT body FROM notes WHERE author = ? ORDER BY id", [author])).rows).toEqual([["kept"], ["last"]])
        }
      }))

    it.effect("resources a transaction acquires belong to the caller's scope, on both routes", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const [follower] = yield* followersOf(nodes)
        for (const node of [leader, follower!]) {
          let released = false
          yield* Effect.scoped(Effect.gen(function*() {
            yield* node.service.transaction(Effect.zipRight(
              Effect.addFinalizer(() => Effect.sync(() => void (released = true))),
              node.service.execute("INSERT INTO notes (author, body) VALUES ('scoped', ?)", [node.address])
            ))
            expect(released).toBe(false)
          }))
          expect(released).toBe(true)
        }
      }))

    it.effect("an interrupted transaction rolls back and frees the writer, locally and routed", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const [follower] = yield* followersOf(nodes)
        for (const node of [leader, follower!]) {
          const inside = yield* Deferred.make<void>()
          const fiber = yield* node.service.transaction(
            node.service.execute("INSERT INTO notes (author, body) VALUES ('interrupted', ?)", [node.address]).pipe(
              Effect.zipRight(Deferred.succeed(inside, undefined)),
              Effect.zipRight(Effect.never)
            )
          ).pipe(Effect.fork)
          yield* Deferred.await(inside)
          yield* Fiber.interrupt(fiber)
          // A transaction left open would hold the writer for transactionTimeoutMs (10 s).
          yield* node.service.execute("INSERT INTO notes (author, body) VALUES ('after interrupt', ?)", [node.address]).pipe(Effect.timeout(Duration.seconds(2)))
        }
        expect((yield* leader.service.query("SELECT count(*) FROM notes WHERE author = 'interrupted'")).rows).toEqual([[0]])
        expect((yield* leader.service.query("SELECT count(*) FROM notes WHERE author = 'after interrupt'")).rows).toEqual([[2]])
      }))

    it.effect("the role-change stream sees the leader become a follower and a follower become the leader", () =>
      Effect.gen(function*() {
        const { nodes } = yield* Cluster
        const leader = yield* leaderOf(nodes)
        const [target] = yield* followersOf(nodes)
        const watch = (node: EmbeddedNode, until: "leader" | "follower") =>
          Effect.gen(function*() {
            const started = yield* Deferred.make<void>()
            const fiber = yield* node.service.roleChanges.pipe(
              Stream.tap(() => Deferred.succeed(started, undefined)),
              Stream.takeUntil((change) => change.role === until),
              Stream.runCollect,
              Effect.timeout(Duration.seconds(10)),
              Effect.fork
            )
            yield* Deferred.await(started)
            return fiber
          })
        const oldLeader = yield* watch(leader, "follower")
        const newLeader = yield* watch(target!, "leader")
        const targetId = target!.service.node!.id
        yield* Effect.scoped(Effect.flatMap(Client.make({ servers: [leader.address], database }), (client) => client.transfer(targetId)))
        const seenByOld = [...yield* oldLeader.await.pipe(Effect.flatten)]
        const seenByNew = [...yield* newLeader.await.pipe(Effect.flatten)]
        expect(seenByOld[0]?.role).toBe("leader")
        expect(seenByOld.at(-1)?.role).toBe("follower")
        expect(seenByNew[0]?.role).toBe("follower")
        expect(seenByNew.at(-1)).toMatchObject({ role: "leader", leader: { id: targetId, address: target!.address } })
        // Requests keep working on every node after the change.
        for (const node of nodes) expect((yield* node.service.query("SELECT count(*) FROM notes WHERE author = 'leader'")).rows).toEqual([[4]])
      }))
  })

  it.live("a layer that cannot start fails with TqliteStartError saying why", () =>
    Effect.gen(function*() {
      const noPort = yield* Effect.flip(Effect.scoped(Tqlite.make({ dataDir: tempDir("tqlite-embed-bad-"), address: "127.0.0.1" })))
      expect(noPort._tag).toBe("TqliteStartError")
      expect(noPort.message).toContain("host:port")
      // The address is taken by another listener.
      const holder = yield* Effect.acquireRelease(
        Effect.async<net.Server>((resume) => {
          const server = net.createServer()
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
      )
      const taken = `127.0.0.1:${(holder.address() as net.AddressInfo).port}`
      const inUse = yield* Effect.flip(Effect.scoped(Tqlite.make({ dataDir: tempDir("tqlite-embed-bad-"), address: taken })))
      expect(inUse._tag).toBe("TqliteStartError")
      expect(inUse.message).toContain("EADDRINUSE")
    }).pipe(Effect.scoped))
})
