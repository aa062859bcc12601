// The same wire requests to a real dqlite node (Debian's `dqlite-demo`, dqlite 1.11.1 through
// go-dqlite) and to a one-node tqlite, answer by answer: where dqlite and SQLite agree, tqlite
// must answer byte-for-byte what dqlite answers (values with their types, failures with code and
// message, RESULT counters). The requests where tqlite chooses differently on purpose are run
// here too, and their difference is asserted (docs/compatibility.md says why). Skipped only when
// the binary is absent (`apt-get install dqlite-demo` / go-dqlite).
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Duration, Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { Request } from "../../../src/net/protocol/requests.ts"
import type { Response } from "../../../src/net/protocol/responses.ts"
import type { Value } from "../../../src/net/protocol/values.ts"
import { Values } from "../../../src/net/protocol/values.ts"
import { clusterForFile } from "../../cli/harness.ts"
import { freePortNow } from "../../freePort.ts"
import { execSql, querySql, rawConnect } from "./harness.ts"

const demoBinary = ["/usr/bin/dqlite-demo", "/usr/local/bin/dqlite-demo"].find((candidate) => fs.existsSync(candidate)) ?? null
const cluster = clusterForFile(1)

let demoAddress = ""
let stopDemo: () => void = () => {}

/** Whether something accepts connections at `address` now. */
const listening = (address: string) =>
  new Promise<boolean>((resolve) => {
    const [host, port] = address.split(":") as [string, string]
    const socket = net.connect({ host, port: Number(port) })
    socket.once("connect", () => {
      socket.destroy()
      resolve(true)
    })
    socket.once("error", () => resolve(false))
  })

beforeAll(async () => {
  if (demoBinary === null) return
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-vs-dqlite-"))
  demoAddress = `127.0.0.1:${await freePortNow()}`
  const child = spawn(demoBinary, ["--api", `127.0.0.1:${await freePortNow()}`, "--db", demoAddress, "--dir", dir], { stdio: "ignore" })
  stopDemo = () => {
    child.kill("SIGKILL")
    fs.rmSync(dir, { recursive: true, force: true })
  }
  // A fresh node elects itself within a second or two; bounded wait.
  for (let attempt = 0; attempt < 100 && !(await listening(demoAddress)); attempt++) await new Promise((r) => setTimeout(r, 100))
}, 30_000)

afterAll(() => stopDemo())

const int = (value: number | bigint): Value => Values.integer(value)

/** Each request's answer on one fresh connection to `address`, database `database`; a rows
 * answer is read to its end (these results fit one batch). */
const answers = (address: string, database: string, requests: ReadonlyArray<Request>) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const connection = yield* rawConnect(address)
    // dqlite-demo may still be electing itself: OPEN answers once it leads.
    yield* connection.open(database).pipe(Effect.timeout(Duration.seconds(10)), Effect.orDie)
    const out: Array<Response> = []
    for (const request of requests) out.push(yield* connection.call(request))
    return out
  })))

/** Requests whose answers must be identical. Each database is fresh on both sides. */
const sameAnswers: ReadonlyArray<Request> = [
  // Storage classes, in rows and parameters.
  querySql("SELECT 1e15, -0.0, 2.0, 1, typeof(2.0), 9007199254740993, -9223372036854775808, 1.5, NULL, x'0102', 'text'"),
  querySql("SELECT typeof(?), typeof(?), ?, typeof(?), ?, ?", [int(2), Values.float(2), Values.float(-0), int(2n ** 60n), Values.boolean(7), Values.iso8601("2024-01-02")]),
  // Statement text as sent.
  querySql("SELECT 1 +;"),
  querySql("SELECT 1 +"),
  execSql("SELECT 1 +;"),
  { kind: "prepare", schema: 0, dbId: 0n, sql: "SELECT 1 +;" },
  querySql("SELECT nope"),
  // Parameters by position, whatever their form.
  querySql("SELECT :a, @b, $c, ?5, :a, typeof(?)", [int(1), int(2), int(3), int(4), int(5), int(6)]),
  querySql("SELECT ?2, ?1", [int(1), int(2)]),
  querySql("SELECT ?, ?", [int(1)]),
  querySql("SELECT ?", [int(1), int(2)]),
  querySql("SELECT 1", [int(1)]),
  // Declared types.
  execSql("CREATE TABLE d (b BOOLEAN, t DATETIME, dd date, ts TIMESTAMP, r REAL, i INTEGER, x DATETIME(6), y bool)"),
  execSql("INSERT INTO d VALUES (5, 1700000000, '2024-01-02', NULL, 3, 3, 1, 1)"),
  execSql("INSERT INTO d VALUES (NULL, '2024-01-02 03:04:05', NULL, 5, 0.5, NULL, NULL, NULL)"),
  querySql("SELECT * FROM d ORDER BY rowid"),
  // Counters: only INSERT / UPDATE / DELETE set them.
  execSql("CREATE TABLE c (a)"),
  execSql("INSERT INTO c VALUES (1), (2)"),
  execSql("BEGIN"),
  execSql("INSERT INTO c VALUES (3)"),
  execSql("SAVEPOINT s"),
  execSql("RELEASE s"),
  execSql("COMMIT"),
  execSql("BEGIN"),
  execSql("INSERT INTO c VALUES (4)"),
  execSql("ROLLBACK"),
  execSql("SAVEPOINT a"),
  execSql("ROLLBACK TO a"),
  execSql("RELEASE a"),
  execSql("UPDATE c SET a = a"),
  execSql("CREATE INDEX ci ON c (a)"),
  execSql("DELETE FROM c WHERE a > 100"),
  execSql("BEGIN; INSERT INTO c VALUES (80); COMMIT"),
  // Several statements where 1.11 and tqlite agree: params for the first only, the rest NULL.
  execSql("INSERT INTO c VALUES (?); INSERT INTO c VALUES (?)", [int(90)]),
  querySql("SELECT rowid, a FROM c ORDER BY rowid"),
  querySql("SELECT 'first'; SELECT 'second'"),
  execSql("SAVEPOINT z; RELEASE z"),
  // Transaction control out of place, and constraint failures (SQLite's extended codes).
  execSql("COMMIT"),
  execSql("ROLLBACK"),
  execSql("BEGIN"),
  execSql("BEGIN"),
  execSql("ROLLBACK"),
  execSql("RELEASE nowhere"),
  execSql("CREATE TABLE k (id INTEGER PRIMARY KEY, u TEXT UNIQUE, n TEXT NOT NULL, c INTEGER CHECK (c > 0))"),
  execSql("INSERT INTO k VALUES (1, 'a', 'n', 1)"),
  execSql("INSERT INTO k VALUES (1, 'b', 'n', 1)"),
  execSql("INSERT INTO k VALUES (2, 'a', 'n', 1)"),
  execSql("INSERT INTO k VALUES (3, 'c', NULL, 1)"),
  execSql("INSERT INTO k VALUES (4, 'd', 'n', 0)"),
  querySql("SELECT * FROM k"),
  // Blank text.
  execSql(""),
  execSql("  -- only a comment\n ;"),
  querySql(""),
  querySql("/* nothing */")
]

describe.skipIf(demoBinary === null)("tqlite answers as a real dqlite 1.11.1 node", () => {
  it("the same requests get the same answers: values and their types, failures, counters", async () => {
    const fromDqlite = await answers(demoAddress, "same", sameAnswers)
    const fromTqlite = await answers(cluster().addresses[0]!, "same", sameAnswers)
    for (let i = 0; i < sameAnswers.length; i++) {
      const request = sameAnswers[i]!
      expect(fromTqlite[i], `${request.kind} ${"sql" in request ? request.sql : ""}`).toEqual(fromDqlite[i])
    }
  }, 60_000)

  it("prepared statements: the same parameter count, rows, counters and failures", async () => {
    const prepared = (address: string) =>
      Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const connection = yield* rawConnect(address)
        yield* connection.open("prepared").pipe(Effect.timeout(Duration.seconds(10)), Effect.orDie)
        const prepare = (sql: string) =>
          Effect.map(connection.call({ kind: "prepare", schema: 0, dbId: 0n, sql }), (response) => {
            if (response.kind !== "stmt") throw new Error(`PREPARE ${sql}: ${JSON.stringify(response)}`)
            return response
          })
        yield* connection.call(execSql("CREATE TABLE n (a, b, c)"))
        const select = yield* prepare("SELECT :a, ?3, @b, typeof(?3)")
        const insert = yield* prepare("INSERT INTO n VALUES (:x, @y, $z)")
        const run = (kind: "query" | "exec", stmtId: number, params: ReadonlyArray<Value>) => connection.call({ kind, schema: 0, dbId: 0, stmtId, params })
        return {
          counts: [select.paramCount, insert.paramCount],
          rows: yield* run("query", select.stmtId, [int(1), int(2), int(3), Values.float(4)]),
          fewer: yield* run("query", select.stmtId, [int(1)]),
          tooMany: yield* run("query", select.stmtId, [int(1), int(2), int(3), int(4), int(5)]),
          inserted: yield* run("exec", insert.stmtId, [int(7), Values.text("y"), Values.float(0.5)]),
          again: yield* run("exec", insert.stmtId, [int(8)]),
          table: yield* connection.call(querySql("SELECT rowid, * FROM n ORDER BY rowid")),
          bad: yield* connection.call({ kind: "prepare", schema: 0, dbId: 0n, sql: "SELECT FROM" })
        }
      })))
    expect(await prepared(cluster().addresses[0]!)).toEqual(await prepared(demoAddress))
  }, 60_000)

  it("where tqlite chooses differently on purpose, the difference is the documented one", async () => {
    const requests: ReadonlyArray<Request> = [
      execSql("CREATE TABLE m (a)"),
      // 1.11 drops the INSERT after the first statement of a QUERY_SQL; tqlite runs it.
      querySql("SELECT 1; INSERT INTO m VALUES (7)"),
      querySql("SELECT count(*) FROM m"),
      // 1.11 binds every value to the first statement (25 here); tqlite gives each its share.
      execSql("INSERT INTO m VALUES (?); INSERT INTO m VALUES (?)", [int(1), int(2)]),
      // 1.11 refuses an EXEC_SQL that returns rows (100); tqlite runs it as sqlite3_exec would.
      execSql("SELECT 1"),
      // 1.11 answers a write sent as QUERY_SQL with FAILURE 1 "not an error" and does not do it;
      // with RETURNING it answers the row but keeps nothing. tqlite does both writes.
      querySql("INSERT INTO m VALUES (100)"),
      querySql("INSERT INTO m VALUES (101) RETURNING a"),
      querySql("SELECT count(*) FROM m WHERE a >= 100")
    ]
    const fromDqlite = await answers(demoAddress, "differ", requests)
    const fromTqlite = await answers(cluster().addresses[0]!, "differ", requests)
    const [, dqliteRows, dqliteCount, dqliteShare, dqliteExec] = fromDqlite
    const [, tqliteRows, tqliteCount, tqliteShare, tqliteExec] = fromTqlite
    expect(tqliteRows).toEqual(dqliteRows)
    expect(dqliteCount).toMatchObject({ kind: "rows", rows: [[int(0)]] })
    expect(tqliteCount).toMatchObject({ kind: "rows", rows: [[int(1)]] })
    expect(dqliteShare).toMatchObject({ kind: "failure", message: "column index out of range" })
    expect(tqliteShare).toMatchObject({ kind: "result", lastInsertId: 3n, rowsAffected: 1n })
    expect(dqliteExec).toMatchObject({ kind: "failure", message: "another row available" })
    expect(tqliteExec).toMatchObject({ kind: "result", lastInsertId: 3n, rowsAffected: 1n })
    const [dqliteInsert, dqliteReturning, dqliteKept] = fromDqlite.slice(5)
    const [tqliteInsert, tqliteReturning, tqliteKept] = fromTqlite.slice(5)
    expect(dqliteInsert).toMatchObject({ kind: "failure", code: 1, message: "not an error" })
    expect(tqliteInsert).toEqual({ kind: "rows", columns: [], rows: [], end: "done" })
    expect(tqliteReturning).toEqual(dqliteReturning)
    expect(dqliteKept).toMatchObject({ kind: "rows", rows: [[int(0)]] })
    expect(tqliteKept).toMatchObject({ kind: "rows", rows: [[int(2)]] })
  }, 60_000)
})
