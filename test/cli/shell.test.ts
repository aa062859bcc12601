// `tqlite shell` against a three-node cluster in this process: -c in each output format (NULL,
// blobs, int64 edges, floats, CSV quoting), statements typed over several lines, dot commands,
// and, through the real binary, the exit code and stderr of an SQL error.
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { PassThrough } from "node:stream"
import { describe, expect, it } from "vitest"
import type { OutputFormat } from "../../src/cli/format.ts"
import { HistoryFile, historyLinesMax, isComplete, returnsRows, runShell, ShellSession } from "../../src/cli/commands/shell.ts"
import { make as makeClient } from "../../src/net/client/Client.ts"
import type { ReadConsistency } from "../../src/actors/RaftActor.ts"
import { captureIo, clusterForFile, leaderAmong, runCaptured, tqlite } from "./harness.ts"

const cluster = clusterForFile()

const shell = (command: string, format: OutputFormat = "table", database = "shelldb") =>
  Effect.runPromise(runCaptured((io) => runShell({ servers: cluster().addresses, database, format, command }, io)))

describe("tqlite shell", () => {
  it("runs -c in each format: NULL, blobs, int64 edges, floats and CSV quoting", async () => {
    const created = await shell(
      "CREATE TABLE v (id INTEGER PRIMARY KEY, i INTEGER, f REAL, t TEXT, b BLOB, n);" +
        "INSERT INTO v VALUES (1, 9223372036854775807, 1.5, 'plain', x'00ff10', NULL);" +
        "INSERT INTO v VALUES (2, -9223372036854775808, -0.25, 'comma, \"quoted\"' || char(10) || 'line2', x'', NULL);" +
        "INSERT INTO v VALUES (3, 9007199254740993, 1e300, '', NULL, 7)"
    )
    expect(created.err).toBe("")
    expect(created.code).toBe(0)
    // One change line per statement: the last insert says which row it made.
    expect(created.out.trim().split("\n")).toHaveLength(4)
    expect(created.out.trim().split("\n").at(-1)).toBe("rows affected: 1, last insert id: 3")

    const csv = await shell("SELECT * FROM v ORDER BY id", "csv")
    expect(csv.code).toBe(0)
    expect(csv.out).toBe(
      "id,i,f,t,b,n\r\n" +
        "1,9223372036854775807,1.5,plain,X'00FF10',\r\n" +
        "2,-9223372036854775808,-0.25,\"comma, \"\"quoted\"\"\nline2\",X'',\r\n" +
        "3,9007199254740993,1e+300,,,7\r\n"
    )

    const json = await shell("SELECT * FROM v ORDER BY id", "json")
    expect(json.code).toBe(0)
    // Integers beyond 2^53 stay exact digits (a bare JSON number).
    expect(json.out).toContain("\"i\":9223372036854775807")
    expect(json.out).toContain("\"i\":-9223372036854775808")
    expect(json.out).toContain("\"i\":9007199254740993")
    const parsed = JSON.parse(json.out) as Array<Record<string, unknown>>
    expect(parsed.map((r) => [r["id"], r["f"], r["t"], r["b"], r["n"]])).toEqual([
      [1, 1.5, "plain", "X'00FF10'", null],
      [2, -0.25, "comma, \"quoted\"\nline2", "X''", null],
      [3, 1e300, "", null, 7]
    ])

    const table = await shell("SELECT id, i, t, n FROM v ORDER BY id")
    expect(table.code).toBe(0)
    const lines = table.out.trimEnd().split("\n")
    expect(lines).toHaveLength(5)
    expect(lines[0]).toMatch(/^id \| +i \| t +\| +n$/) // numeric columns right-aligned
    expect(lines[1]).toMatch(/^-+-\+-+-\+-+-\+-+$/)
    // Columns line up: every separator at the same offset on every line.
    const bars = (line: string) => [...line.matchAll(/\|/g)].map((m) => m.index)
    for (const line of [lines[0]!, ...lines.slice(2)]) expect(bars(line)).toEqual(bars(lines[0]!))
    expect(lines[2]).toContain("9223372036854775807")
    expect(lines[3]).toContain("comma, \"quoted\"\\nline2")
    expect(lines[2]).toMatch(/NULL$/)
  })

  it("prints an empty result as a header (table, CSV) or [] (JSON)", async () => {
    expect((await shell("SELECT id FROM v WHERE id < 0", "json")).out).toBe("[]\n")
    expect((await shell("SELECT id FROM v WHERE id < 0", "csv")).out).toBe("id\r\n")
  })

  it("reports an SQL error with SQLite's code and stops a -c with exit code 1", async () => {
    const failed = await shell("SELECT 1; SELEC 2; SELECT 3")
    expect(failed.code).toBe(1)
    expect(failed.err).toMatch(/^Error: near "SELEC": syntax error \(code 1\)\n$/)
    expect(failed.out.trim().split("\n").at(-1)).toBe("1") // the first statement ran, the third did not
    const constraint = await shell("INSERT INTO v (id) VALUES (1)")
    expect(constraint.code).toBe(1)
    expect(constraint.err).toContain("UNIQUE constraint failed: v.id")
    expect(constraint.err).toMatch(/\(code 1555\)/) // SQLITE_CONSTRAINT_PRIMARYKEY
    // The statement reaches SQLite with its `;`: SQLite's own message, not "incomplete input".
    const incomplete = await shell("SELECT 1 +;")
    expect(incomplete.err).toBe("Error: near \";\": syntax error (code 1)\n")
  })

  it("--consistency reads from the first server's own copy, also when it does not lead", async () => {
    const { nodes, addresses } = cluster()
    const leader = await Effect.runPromise(leaderAmong(nodes))
    const follower = addresses.find((address) => address !== leader.node.identity.address)!
    const run = (command: string, consistency: ReadConsistency) =>
      Effect.runPromise(runCaptured((io) => runShell({ servers: [follower], database: "shelldb", format: "csv", command, consistency }, io)))
    // Linearizable from the follower: it asks the leader for the read index, then reads its copy.
    const written = await run("CREATE TABLE levels (id INTEGER PRIMARY KEY); INSERT INTO levels (id) VALUES (9001)", { level: "linearizable" })
    expect(written.code).toBe(0)
    expect((await run("SELECT id FROM levels WHERE id = 9001", { level: "linearizable" })).out).toBe("id\r\n9001\r\n")
    // Only a node that does not lead refuses a bounded read: the follower served it.
    const stale = await run("SELECT count(*) FROM levels", { level: "bounded", maxLagMs: 0.001 })
    expect(stale.code).toBe(1)
    expect(stale.err).toMatch(/heard from its leader|has not heard/)
  })

  it("reads statements over several lines from a script and runs dot commands", async () => {
    const input = new PassThrough()
    input.end(
      "CREATE TABLE m (x INTEGER,\n  y TEXT);\n" +
        "INSERT INTO m VALUES (1, 'a;b'), -- a comment; not the end\n  (2, 'c');\n" +
        ".leader\n" +
        "SELECT count(*) AS n\nFROM m;\n" +
        ".format csv\n" +
        "SELECT x, y FROM m ORDER BY x;\n" +
        ".cluster\n" +
        "SELECT missing_column FROM m;\n" +
        "SELECT 42 AS answer;\n"
    )
    const result = await Effect.runPromise(runCaptured((io) => runShell({ servers: cluster().addresses, database: "scriptdb", format: "table", command: null }, io, input, false)))
    // A script with an error ends with exit code 1 but runs on after it.
    expect(result.code).toBe(1)
    expect(result.err).toBe("Error: no such column: missing_column (code 1)\n")
    const out = result.out
    expect(out).toContain("rows affected: 2, last insert id: 2")
    expect(cluster().addresses).toContain(out.split("\n").find((l) => l.startsWith("127.0.0.1:")))
    expect(out).toMatch(/^n\n-\n2\n/m)
    expect(out).toContain("x,y\r\n1,a;b\r\n2,c\r\n")
    expect(out).toContain("id,address,role,leader\r\n")
    expect((out.match(/,voter,/g) ?? []).length).toBe(3)
    expect((out.match(/,yes\r\n/g) ?? []).length).toBe(1)
    expect(out).toContain("answer\r\n42\r\n")
  })

  it("knows when typed text is a complete statement", () => {
    expect(isComplete("SELECT 1;")).toBe(true)
    expect(isComplete("SELECT 1")).toBe(false)
    expect(isComplete("SELECT ';")).toBe(false)
    expect(isComplete("SELECT 1; -- done")).toBe(true)
    expect(isComplete("SELECT 1 /* ;")).toBe(false)
    expect(isComplete("CREATE TRIGGER t AFTER INSERT ON m BEGIN DELETE FROM m;")).toBe(false)
    expect(isComplete("CREATE TRIGGER t AFTER INSERT ON m BEGIN DELETE FROM m; END;")).toBe(true)
    expect(returnsRows("INSERT INTO m VALUES (1) RETURNING x")).toBe(true)
    expect(returnsRows("WITH a AS (SELECT 1) INSERT INTO m SELECT * FROM a")).toBe(false)
    expect(returnsRows("/* c */ select 1")).toBe(true)
    expect(returnsRows("UPDATE m SET x = 1")).toBe(false)
  })

  it("keeps at most historyLinesMax lines of history, oldest first in the file", () => {
    const file = path.join(cluster().dir, "history")
    const history = new HistoryFile(file)
    expect(history.load()).toEqual([])
    // readline hands history newest first.
    const newestFirst = Array.from({ length: historyLinesMax + 5 }, (_, i) => `SELECT ${historyLinesMax + 4 - i};`)
    history.save(newestFirst)
    const lines = fs.readFileSync(file, "utf8").trimEnd().split("\n")
    expect(lines).toHaveLength(historyLinesMax)
    expect(lines[0]).toBe("SELECT 5;") // the five oldest are gone
    expect(lines.at(-1)).toBe(`SELECT ${historyLinesMax + 4};`)
    expect(history.load()).toEqual(newestFirst.slice(0, historyLinesMax))
    expect(fs.statSync(file).mode & 0o777).toBe(0o600)
  })

  it("the tqlite binary exits 1 on an SQL error with the message on stderr, 0 with the rows on stdout", async () => {
    const servers = cluster().addresses.join(",")
    // Each process loads the whole CLI through tsx: seconds on a busy machine.
    const [bad, good] = await Promise.all([
      tqlite(["shell", "--servers", servers, "-c", "SELECT * FROM missing_table", "shelldb"], 60_000),
      tqlite(["shell", "--servers", servers, "--format", "json", "-c", "SELECT id FROM v ORDER BY id", "shelldb"], 60_000)
    ])
    expect(bad).toEqual({ code: 1, out: "", err: "Error: no such table: missing_table (code 1)\n" })
    expect(good).toEqual({ code: 0, out: "[\n{\"id\":1},\n{\"id\":2},\n{\"id\":3}\n]\n", err: "" })
  }, 90_000)

  describe("at a terminal (readline in terminal mode over a pseudo-terminal stream)", () => {
    /** Types `keys` chunk by chunk (readline reads keypresses), then Ctrl-D. */
    const typed = async (chunks: ReadonlyArray<string | number | (() => void)>, database = "ttydb") => {
      const input = new PassThrough()
      const sink = new PassThrough()
      sink.resume()
      const captured = captureIo()
      const run = Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const client = yield* makeClient({ servers: cluster().addresses, database, connectionsMax: 1 })
        return yield* new ShellSession(client, captured.io, { servers: cluster().addresses, database, format: "csv" }).runLines(input, true, null, sink)
      })))
      for (const chunk of chunks) {
        if (typeof chunk === "number") await new Promise((resolve) => setTimeout(resolve, chunk))
        else if (typeof chunk === "function") chunk()
        else input.write(chunk)
      }
      input.write("\x04")
      input.end()
      const code = await run
      return { code, out: captured.out(), err: captured.err() }
    }

    it("Ctrl-C clears a one-line statement: Enter afterwards runs nothing; BEGIN and COMMIT print no change count", async () => {
      const result = await typed(["SELECT 41 + 1 AS cancelled;", 50, "\x03", 50, "\r", 50, "BEGIN;\r", "SELECT 'after' AS a;\r", "COMMIT;\r", 300])
      expect(result.out).not.toContain("cancelled")
      expect(result.out).toContain("a\r\nafter\r\n")
      // Transaction control prints no change count (as sqlite3 prints nothing).
      expect(result.out).not.toContain("rows_affected")
      expect(result.err).toBe("")
    }, 30_000)

    it("Ctrl-C during a statement stops it and gives the prompt back at once", async () => {
      const database = "ttywait"
      // Another client holds the writer in an interactive transaction for a while, so the shell's
      // INSERT waits for it (a statement that runs long without blocking the server).
      await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const client = yield* makeClient({ servers: cluster().addresses, database, connectionsMax: 1 })
        yield* client.exec("CREATE TABLE IF NOT EXISTS t (x)")
      })))
      const held = Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const client = yield* makeClient({ servers: cluster().addresses, database, connectionsMax: 1 })
        yield* client.transaction(Effect.zipRight(client.exec("INSERT INTO t VALUES ('holder')"), Effect.sleep("4 seconds")))
      })))
      await new Promise((resolve) => setTimeout(resolve, 300))
      let interruptedAt = 0
      const result = await typed([
        "INSERT INTO t VALUES ('waiting');\r", 500,
        () => void (interruptedAt = Date.now()), "\x03", 50,
        "SELECT 'next' AS n;\r", 300
      ], database)
      const promptBackMs = Date.now() - interruptedAt
      await held
      expect(result.err).toBe("^C: statement stopped\n")
      expect(result.out).toContain("n\r\nnext\r\n")
      // Back well before the holder let go of the writer (4 s after it took it).
      expect(promptBackMs).toBeLessThan(2_500)
    }, 30_000)
  })
})
