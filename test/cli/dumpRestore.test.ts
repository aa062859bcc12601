// `tqlite dump` and `tqlite restore` against a three-node cluster in this process: a dump taken
// while a client keeps writing opens, passes integrity_check and holds exactly a prefix of the
// writes, all committed, including every one acknowledged before the dump began; dump → restore
// into another database → dump gives the same schema, rows, rowids and storage classes; restore
// refuses a database with tables unless --force. The `tqlite` binary dumps a database larger than
// the client's message bound with its peak memory no higher than for a tiny one, byte for byte
// what the leader's image is.
import Database from "better-sqlite3"
import { Effect, Fiber } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { runDump } from "../../src/cli/commands/dump.ts"
import type { RestoreLimits } from "../../src/cli/commands/restore.ts"
import { quoteName, runRestore } from "../../src/cli/commands/restore.ts"
import { make as makeClient } from "../../src/net/client/Client.ts"
import { messageBytesMaxDefault } from "../../src/net/protocol/framing.ts"
import { clusterForFile, leaderAmong, root, runCaptured } from "./harness.ts"

const cluster = clusterForFile()

const dump = (database: string, file: string) =>
  Effect.runPromise(runCaptured((io) => runDump({ servers: cluster().addresses, database, file }, io)))

const restore = (database: string, file: string, force = false, limits: Partial<RestoreLimits> = {}) =>
  Effect.runPromise(runCaptured((io) =>
    runRestore({ servers: cluster().addresses, database, file, force, limits: { rowsPerTransactionMax: 700, bytesPerTransactionMax: 256 * 1024, ...limits } }, io)))

const withClient = <A, E>(database: string, f: (client: Effect.Effect.Success<ReturnType<typeof makeClient>>) => Effect.Effect<A, E>) =>
  Effect.runPromise(Effect.scoped(Effect.flatMap(makeClient({ servers: cluster().addresses, database }), f)))

/** Everything a database holds, comparably: its schema (without root pages), sqlite_sequence,
 * and per table every row with its rowid and each value's storage class. */
function contents(file: string) {
  const db = new Database(file, { readonly: true, fileMustExist: true })
  try {
    expect(db.pragma("integrity_check", { simple: true })).toBe("ok")
    const schema = db.prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name").all()
    const tables = db.prepare("SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as Array<{ name: string; wr: number }>
    const rows: Record<string, unknown> = {}
    for (const { name, wr } of tables) {
      const columns = (db.prepare("SELECT name FROM pragma_table_xinfo(?)").pluck().all(name) as Array<string>).map(quoteName)
      const select = `SELECT ${wr === 1 ? "" : "rowid, "}${columns.join(", ")}, ${columns.map((c) => `typeof(${c})`).join(", ")} FROM ${quoteName(name)} ORDER BY 1`
      rows[name] = db.prepare(select).raw(true).safeIntegers(true).all()
    }
    const sequence = tables.length > 0 && schema.some((s) => (s as { name: string }).name === "sqlite_sequence")
      ? db.prepare("SELECT name, seq FROM sqlite_sequence ORDER BY name").raw(true).safeIntegers(true).all()
      : []
    return { schema, rows, sequence }
  } finally {
    db.close()
  }
}

const schemaSql = [
  "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
  "CREATE TABLE child (id INTEGER PRIMARY KEY AUTOINCREMENT, parent_id INTEGER REFERENCES parent(id), amount REAL, payload BLOB, note)",
  "CREATE TABLE plain (a, b)",
  "CREATE TABLE kv (k TEXT PRIMARY KEY, v) WITHOUT ROWID",
  "CREATE TABLE gen (x INTEGER, y INTEGER GENERATED ALWAYS AS (x * 2) VIRTUAL)",
  "CREATE INDEX child_parent ON child (parent_id, amount)",
  "CREATE VIEW totals AS SELECT parent_id, sum(amount) AS total FROM child GROUP BY parent_id",
  "CREATE TRIGGER child_note AFTER INSERT ON child WHEN new.note IS NULL BEGIN UPDATE child SET note = 'from trigger' WHERE id = new.id; END"
]

describe("tqlite dump and restore", () => {
  let base: string
  beforeAll(() => {
    base = path.join(cluster().dir, "files")
    fs.mkdirSync(base)
  })

  it("dumps a live database while writes go on: the file is sound and holds only committed writes", async () => {
    await withClient("live", (client) => client.exec("CREATE TABLE events (seq INTEGER PRIMARY KEY, body TEXT)"))
    const acknowledged: Array<number> = []
    let attempted = 0
    let stop = false
    const file = path.join(base, "live.db")
    const result = await withClient("live", (client) =>
      Effect.gen(function*() {
        const writer = yield* Effect.fork(Effect.gen(function*() {
          while (!stop && attempted < 20_000) {
            attempted++
            yield* client.exec("INSERT INTO events VALUES (?, ?)", [attempted, `event ${attempted} ${"x".repeat(200)}`])
            acknowledged.push(attempted)
          }
        }))
        while (acknowledged.length < 25) yield* Effect.sleep("5 millis")
        const ackedBefore = acknowledged.length
        const dumped = yield* Effect.promise(() => dump("live", file))
        const attemptedAfter = attempted
        const ackedAfterDump = acknowledged.length
        // Writes keep going a little after the dump, then stop.
        while (acknowledged.length < ackedAfterDump + 10) yield* Effect.sleep("5 millis")
        stop = true
        yield* Fiber.join(writer)
        const all = yield* client.query("SELECT seq, body FROM events ORDER BY seq")
        return { dumped, ackedBefore, attemptedAfter, all }
      }))
    expect(result.dumped.code).toBe(0)
    expect(result.dumped.err).toMatch(new RegExp(`dumped live from 127\\.0\\.0\\.1:\\d+: received .*, wrote ${fs.statSync(file).size} bytes`))
    const db = new Database(file, { readonly: true, fileMustExist: true })
    try {
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok")
      expect(db.pragma("journal_mode", { simple: true })).toBe("delete")
      const rows = db.prepare("SELECT seq, body FROM events ORDER BY seq").raw(true).all() as Array<[number, string]>
      const seqs = rows.map((r) => r[0])
      // One writer, one statement at a time: the committed writes are 1..n, and the dump holds
      // such a prefix: everything acknowledged before it started, nothing never attempted.
      expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1))
      expect(seqs.length).toBeGreaterThanOrEqual(result.ackedBefore)
      expect(seqs.length).toBeLessThanOrEqual(result.attemptedAfter)
      // Every row in the dump is committed: the cluster has it, with the same content.
      expect(result.all.rows.slice(0, rows.length)).toEqual(rows)
      expect(result.all.rows.length).toBeGreaterThan(rows.length)
    } finally {
      db.close()
    }
    expect(fs.readdirSync(base)).toEqual(["live.db"]) // no temporary file left
  })

  it("dump → restore into another database → dump gives identical tables, indexes and rows", async () => {
    await withClient("source", (client) =>
      Effect.gen(function*() {
        yield* client.transaction(Effect.forEach(schemaSql, (sql) => client.exec(sql), { discard: true }))
        // Generated server-side in a few statements (each autocommit write is a Raft round).
        yield* client.exec(`WITH RECURSIVE n(p) AS (SELECT 1 UNION ALL SELECT p + 1 FROM n WHERE p < 40) INSERT INTO parent SELECT p, 'parent ' || p FROM n`)
        // note: NULL (the trigger fills it), a whole REAL, text with CSV-hostile characters,
        // an int64 edge, by turns; payload: NULL or a blob of varying size.
        yield* client.exec(`WITH RECURSIVE n(c) AS (SELECT 1 UNION ALL SELECT c + 1 FROM n WHERE c < 2500)
          INSERT INTO child (parent_id, amount, payload, note)
          SELECT 1 + c % 40, c / 8.0, CASE WHEN c % 7 = 0 THEN NULL ELSE randomblob(c * 37 % 300) END,
            CASE c % 8 WHEN 0 THEN NULL WHEN 4 THEN NULL WHEN 1 THEN 2.0 WHEN 5 THEN 2.0 WHEN 2 THEN 'text, "quoted"' WHEN 6 THEN 'line' || char(10) || 'break'
              WHEN 3 THEN 9223372036854775807 ELSE -9223372036854775808 END
          FROM n`)
        yield* client.exec("DELETE FROM child WHERE id % 97 = 0") // gaps; sqlite_sequence stays at the top
        yield* client.exec(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 299) INSERT INTO plain SELECT i, CASE WHEN i % 3 = 0 THEN NULL ELSE 'p' || i END FROM n`)
        yield* client.exec("DELETE FROM plain WHERE a % 5 = 1") // rowid gaps a restore must keep
        yield* client.exec("INSERT INTO kv VALUES ('b', 1), ('a', x'00'), ('c', 1.5)")
        yield* client.exec("INSERT INTO gen (x) VALUES (1), (2), (21)")
      }))
    const first = path.join(base, "source.db")
    expect((await dump("source", first)).code).toBe(0)
    const restored = await restore("copy", first)
    expect(restored.err).toMatch(/restore copy: 100% 2761\/2761 rows/)
    expect(restored.err).toMatch(/restored 5 tables, 3 indexes\/triggers\/views, 2761 rows .* in (\d+) transactions/)
    expect(Number(/in (\d+) transactions/.exec(restored.err)![1])).toBeGreaterThan(4) // bounded transactions
    expect(restored.code).toBe(0)
    const created = await withClient("copy", (client) => client.query("SELECT name FROM sqlite_schema ORDER BY rowid"))
    const order = created.rows.map((r) => r[0])
    expect(order.indexOf("child_parent")).toBeGreaterThan(order.indexOf("gen")) // a small index: after the rows
    const second = path.join(base, "copy.db")
    expect((await dump("copy", second)).code).toBe(0)
    const original = contents(first)
    const copy = contents(second)
    expect(copy.schema).toEqual(original.schema)
    expect(copy.sequence).toEqual(original.sequence)
    expect(Object.keys(copy.rows)).toEqual(["child", "gen", "kv", "parent", "plain"])
    expect(copy.rows).toEqual(original.rows)
    // The data is what was written, not just equal on both sides: the trigger ran once, on the
    // original insert, and the whole REAL and the int64 edges kept their storage classes.
    const child = original.rows["child"] as Array<Array<unknown>>
    expect(child.length).toBe(2500 - 25)
    const row = (id: bigint) => child.find((r) => r[0] === id)!
    // Columns: rowid, id, parent_id, amount, payload, note, then their typeof()s.
    expect(row(8n).slice(5)).toEqual(["from trigger", "integer", "integer", "real", "blob", "text"])
    expect([row(1n)[5], row(1n)[10]]).toEqual([2, "real"])
    expect([row(3n)[5], row(3n)[10]]).toEqual([9223372036854775807n, "integer"])
    expect([row(7n)[5], row(7n)[10]]).toEqual([-9223372036854775808n, "integer"])
    expect(row(14n)[4]).toBeNull()
    expect((original.rows["plain"] as Array<unknown>).length).toBe(240)
    expect(original.sequence).toEqual([["child", 2500n]])
  })

  it("restore refuses a database that has tables unless --force, which replaces them", async () => {
    const file = path.join(base, "source.db")
    const refused = await restore("copy", file)
    expect(refused.code).toBe(1)
    expect(refused.err).toMatch(/^Error: database copy already has tables or views \(.*child.*\); --force drops them first\n$/)
    await withClient("copy", (client) => client.exec("INSERT INTO plain VALUES ('extra', 1)"))
    // Every index counts as large here: created with its table and filled as rows arrive.
    const forced = await restore("copy", file, true, { indexAfterDataBytesMax: 1 })
    expect(forced.code).toBe(0)
    expect(forced.err).toContain("dropping 6 tables and views of copy (--force)")
    const created = await withClient("copy", (client) => client.query("SELECT name FROM sqlite_schema ORDER BY rowid"))
    const order = created.rows.map((r) => r[0])
    expect(order.indexOf("child_parent")).toBeLessThan(order.indexOf("plain")) // with its table, before the rows
    const again = path.join(base, "copy-again.db")
    expect((await dump("copy", again)).code).toBe(0)
    expect(contents(again)).toEqual(contents(file))
  })

  it("a dump never holds a transaction's uncommitted writes; a follower refuses DUMP", async () => {
    const file = path.join(base, "open-transaction.db")
    await withClient("pending", (client) => client.exec("CREATE TABLE p (x); INSERT INTO p VALUES ('committed')"))
    const outcome = await withClient("pending", (client) =>
      // The transaction has written to the leader's writer connection (its WAL, even) when the
      // dump runs, and is rolled back afterwards.
      Effect.flip(client.transaction(Effect.gen(function*() {
        yield* client.exec("INSERT INTO p SELECT 'uncommitted ' || value FROM json_each('[1,2,3,4,5,6,7,8,9,10]')")
        yield* client.exec("CREATE TABLE q (y)")
        const result = yield* Effect.promise(() => dump("pending", file))
        return yield* Effect.fail({ dumpedWith: result })
      }))))
    expect("dumpedWith" in outcome).toBe(true)
    expect((outcome as { readonly dumpedWith: { readonly code: number } }).dumpedWith.code).toBe(0)
    const db = new Database(file, { readonly: true, fileMustExist: true })
    try {
      expect(db.prepare("SELECT x FROM p").pluck().all()).toEqual(["committed"])
      expect(db.prepare("SELECT name FROM sqlite_schema").pluck().all()).toEqual(["p"])
    } finally {
      db.close()
    }
    const leader = (await Effect.runPromise(leaderAmong(cluster().nodes))).node.identity.address
    const follower = cluster().addresses.find((a) => a !== leader)!
    const refused = await Effect.runPromise(Effect.scoped(Effect.flatMap(
      makeClient({ servers: cluster().addresses, database: "pending", retriesMax: 0 }),
      (client) => Effect.flip(client.dump(follower))
    )))
    expect(refused._tag === "ServerFailure" && refused.isNotLeader).toBe(true)
  })

  it("the binary streams a dump above the client's message bound: peak memory as for a tiny one, the leader's image byte for byte", async () => {
    const mib = 1024 * 1024
    // The set-up's statements are idempotent and retried a few times if leadership moves under
    // them: the three nodes share this process, and on a loaded machine a leader loses its lease
    // while megabytes of pages are applied. The dump itself is not retried.
    const idempotently = (client: Effect.Effect.Success<ReturnType<typeof makeClient>>, sql: string) =>
      client.exec(sql).pipe(Effect.retry({ times: 5, while: (error) => error._tag === "ServerFailure" && error.isLeadershipLost }))
    await withClient("small", (client) => idempotently(client, "CREATE TABLE IF NOT EXISTS t (x INTEGER PRIMARY KEY); INSERT OR IGNORE INTO t VALUES (1)"))
    await withClient("large", (client) =>
      Effect.gen(function*() {
        yield* idempotently(client, "CREATE TABLE IF NOT EXISTS big (i INTEGER PRIMARY KEY, b BLOB)")
        // 96 × 1 MiB of random blobs, 4 MiB a transaction.
        for (let t = 0; t < 24; t++) {
          yield* idempotently(client, `WITH RECURSIVE n(i) AS (SELECT ${t * 4} UNION ALL SELECT i + 1 FROM n WHERE i < ${t * 4 + 3}) INSERT OR IGNORE INTO big SELECT i, randomblob(${mib}) FROM n`)
        }
        expect((yield* client.query("SELECT count(*) FROM big")).rows).toEqual([[96]])
      }))
    /** `tqlite dump` as its own process (the bundle: npm run build), with its peak RSS. */
    const dumpProcess = (database: string, file: string) =>
      new Promise<{ code: number; err: string; peakRssKib: number }>((resolve) => {
        execFile("/usr/bin/time", ["-v", process.execPath, path.join(root, "dist/tqlite.mjs"), "dump", "--servers", cluster().addresses.join(","), database, file], { timeout: 120_000 }, (error, _stdout, stderr) => {
          const peak = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr)
          resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, err: stderr, peakRssKib: peak === null ? -1 : Number(peak[1]) })
        })
      })
    const small = await dumpProcess("small", path.join(base, "small.db"))
    expect(small.code, small.err).toBe(0)
    const largeFile = path.join(base, "large.db")
    const large = await dumpProcess("large", largeFile)
    expect(large.code, large.err).toBe(0)
    const size = fs.statSync(largeFile).size
    expect(size).toBeGreaterThan(messageBytesMaxDefault + 4 * mib) // more than one message could carry
    expect(large.err).toMatch(/dump large: 100% .* of /) // byte progress, against the announced size
    // Read whole (before), the answer took about three times its size above a tiny dump's peak
    // (96 MiB: +295 MB; the message's chunks, the message copied out of them, the files). Streamed,
    // the dump holds a few pieces; what remains above the tiny dump (+71 MB) is garbage: socket
    // reads' buffers awaiting a collection (~30 MiB) and the JS heap's (~18 MiB), the rest
    // memory the allocator keeps. It does not grow with the size (200 MiB: docs/performance.md).
    expect(small.peakRssKib).toBeGreaterThan(0)
    expect((large.peakRssKib - small.peakRssKib) * 1024, `peak RSS ${large.peakRssKib} KiB for ${size} bytes vs ${small.peakRssKib} KiB`).toBeLessThan(size)
    // The leader's image, read whole through Client.dump (a large enough bound), made a plain file
    // the same way, is the same bytes.
    const image = await Effect.runPromise(Effect.scoped(Effect.flatMap(
      makeClient({ servers: cluster().addresses, database: "large", messageBytesMax: 256 * mib }),
      (client) => Effect.flatMap(Effect.flatMap(leaderAmong(cluster().nodes), (leader) => client.dump(leader.node.identity.address)), Effect.succeed)
    )))
    const reference = path.join(base, "large-reference.db")
    fs.writeFileSync(reference, image.find((f) => f.name === "large")!.data)
    const db = new Database(reference)
    db.pragma("journal_mode=DELETE")
    db.close()
    expect(Buffer.compare(fs.readFileSync(largeFile), fs.readFileSync(reference))).toBe(0)
    fs.rmSync(reference)
    fs.rmSync(largeFile)
  }, 180_000)

  it("a dump of a database the cluster does not have fails with exit code 1", async () => {
    const missing = await dump("no-such-database", path.join(base, "missing.db"))
    expect(missing.code).toBe(1)
    expect(missing.err).toMatch(/Error: .*\(code \d+\)\n$/)
    expect(fs.existsSync(path.join(base, "missing.db"))).toBe(false)
  })
})
