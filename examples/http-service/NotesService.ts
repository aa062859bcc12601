// A small notes API embedding tqlite: every instance runs a tqlite node in its own process and
// serves HTTP; the instances form one cluster, and any of them answers any request (writes
// from a follower are routed to the leader by the Tqlite service underneath SqlClient).
//
//   POST /notes      {"body": "…"}  → 201 the note (id, body, createdBy, createdAt)
//   GET  /notes                      → the 100 newest notes
//   GET  /notes/:id                  → one note, or 404
//   GET  /cluster                    → this node, its role, the leader and the members
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Layer, Schema } from "effect"
import { createServer } from "node:http"
import { Tqlite, TqliteClient, TqliteMigrator } from "../../src/index.ts"

export interface NotesServiceOptions {
  /** tqlite's address for peers and dqlite clients ("host:port"). */
  readonly address: string
  readonly join: ReadonlyArray<string>
  readonly dataDir: string
  readonly httpHost: string
  /** 0: any free port (tests). */
  readonly httpPort: number
  readonly tickMs?: number
}

const migrations = TqliteMigrator.fromRecord({
  "1_create_notes": Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`CREATE TABLE notes (
      id INTEGER PRIMARY KEY,
      body TEXT NOT NULL,
      created_by TEXT NOT NULL,
      created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )`),
  "2_index_created_at": Effect.flatMap(SqlClient.SqlClient, (sql) => sql`CREATE INDEX notes_by_created_at ON notes (created_at)`)
})

const NoteInput = Schema.Struct({ body: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(10_000)) })
const NoteId = Schema.Struct({ id: Schema.NumberFromString.pipe(Schema.int()) })

interface Note {
  readonly id: number
  readonly body: string
  readonly createdBy: string
  readonly createdAt: string
}

const noteColumns = "id, body, created_by AS createdBy, created_at AS createdAt"

/** 503 when the cluster cannot serve (no leader, timeout), 500 for SQLite's refusals. */
const sqlFailure = (error: SqlError) => {
  const cause = error.cause as { readonly _tag?: string } | undefined
  const unavailable = cause?._tag === "ClusterUnavailable" || cause?._tag === "NotLeader" || cause?._tag === "WriteTimeout"
  return HttpServerResponse.json({ error: error.message }, { status: unavailable ? 503 : 500 })
}

export const router = HttpRouter.empty.pipe(
  HttpRouter.post(
    "/notes",
    Effect.gen(function*() {
      const input = yield* HttpServerRequest.schemaBodyJson(NoteInput)
      const sql = yield* SqlClient.SqlClient
      const tqlite = yield* Tqlite
      const [note] = yield* sql<Note>`INSERT INTO notes ${sql.insert({ body: input.body, created_by: tqlite.node?.address ?? "remote" })} RETURNING ${sql.unsafe(noteColumns)}`
      return yield* HttpServerResponse.json(note, { status: 201 })
    })
  ),
  HttpRouter.get(
    "/notes",
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const notes = yield* sql<Note>`SELECT ${sql.unsafe(noteColumns)} FROM notes ORDER BY id DESC LIMIT 100`
      return yield* HttpServerResponse.json(notes)
    })
  ),
  HttpRouter.get(
    "/notes/:id",
    Effect.gen(function*() {
      const { id } = yield* HttpRouter.schemaPathParams(NoteId)
      const sql = yield* SqlClient.SqlClient
      const [note] = yield* sql<Note>`SELECT ${sql.unsafe(noteColumns)} FROM notes WHERE id = ${id}`
      return yield* note === undefined ? HttpServerResponse.json({ error: `no note ${id}` }, { status: 404 }) : HttpServerResponse.json(note)
    })
  ),
  HttpRouter.get(
    "/cluster",
    Effect.gen(function*() {
      const tqlite = yield* Tqlite
      const [state, leader, members] = yield* Effect.all([tqlite.state, tqlite.leader, tqlite.members])
      // Ids are uint64s (bigint): sent as decimal strings.
      return yield* HttpServerResponse.json({
        node: tqlite.node === null ? null : { id: String(tqlite.node.id), address: tqlite.node.address },
        role: state?.role ?? null,
        leader: leader === null ? null : { id: String(leader.id), address: leader.address },
        members: members.map((m) => ({ id: String(m.id), address: m.address, role: m.role }))
      })
    }).pipe(Effect.catchTags({
      NotLeader: (error) => HttpServerResponse.json({ error: error.message }, { status: 503 }),
      WriteTimeout: (error) => HttpServerResponse.json({ error: error.message }, { status: 503 }),
      ClusterUnavailable: (error) => HttpServerResponse.json({ error: error.message }, { status: 503 }),
      SqlError: (error) => HttpServerResponse.json({ error: error.message }, { status: 500 })
    }))
  ),
  HttpRouter.catchTags({
    ParseError: (error) => HttpServerResponse.json({ error: error.message }, { status: 400 }),
    RequestError: (error) => HttpServerResponse.json({ error: error.message }, { status: 400 }),
    SqlError: sqlFailure
  })
)

/** The whole service: the tqlite node with SqlClient on top, the migrations (run before the
 * HTTP server starts), and the HTTP server. Its scope is the process: closing it stops the
 * server, then the node hands leadership over and stops. */
export const NotesService = (options: NotesServiceOptions) => {
  const database = TqliteClient.layer({
    dataDir: options.dataDir,
    address: options.address,
    join: options.join,
    database: "notes",
    ...(options.tickMs !== undefined ? { tickMs: options.tickMs } : {})
  })
  const http = NodeHttpServer.layer(() => createServer(), { host: options.httpHost, port: options.httpPort })
  return HttpServer.serve(router).pipe(
    HttpServer.withLogAddress,
    Layer.provide(TqliteMigrator.layer({ loader: migrations })),
    Layer.provideMerge(database),
    Layer.provideMerge(http)
  )
}
