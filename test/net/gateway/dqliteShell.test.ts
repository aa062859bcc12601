// The real client: Debian's `dqlite` shell (go-dqlite 1.11.5, `apt-get install go-dqlite`; CI
// installs it) against a gateway on loopback serving the single-node better-sqlite3 fixture and a
// fake cluster. The shell finds the leader (LEADER, CLIENT), opens the database, runs SQL lines
// in transactions (BEGIN, EXEC_SQL or QUERY_SQL, COMMIT) and the dot commands. Skipped only when
// the binary is absent.
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { findDqliteShell, startGateway } from "./harness.ts"

const dqliteBinary = findDqliteShell()
if (dqliteBinary === null) {
  console.warn("SKIPPING the real dqlite shell tests: no `dqlite` binary (apt-get install go-dqlite)")
}

interface ShellRun {
  readonly exitCode: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs the shell without blocking the event loop (the gateway serves it from this process). */
const shell = (args: ReadonlyArray<string>, cwd?: string) =>
  Effect.async<ShellRun>((resume) => {
    const child = execFile(dqliteBinary ?? "dqlite", [...args], { timeout: 30_000, ...(cwd === undefined ? {} : { cwd }) }, (error, stdout, stderr) => {
      const exitCode = error === null ? 0 : typeof error.code === "number" ? error.code : -1
      resume(Effect.succeed({ exitCode, stdout, stderr }))
    })
    return Effect.sync(() => void child.kill("SIGKILL"))
  })

/** The shell's output for commands that must succeed. */
const ok = (args: ReadonlyArray<string>, cwd?: string) =>
  Effect.flatMap(shell(args, cwd), (run) =>
    run.exitCode === 0
      ? Effect.succeed(run.stdout)
      : Effect.dieMessage(`dqlite ${args.join(" ")} exited ${run.exitCode}:\n${run.stdout}\n${run.stderr}`))

const timePattern = /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) \+0000 UTC$/

describe.skipIf(dqliteBinary === null)("the real dqlite shell (go-dqlite 1.11.5)", () => {
  it.scopedLive("creates, inserts with random() and datetime('now'), selects, and runs .leader/.cluster/.describe/.weight/.remove", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway({ others: [{ id: 0x2a, address: "127.0.0.1:9042", role: "standby" }] })
      const s = ["-s", gateway.address, "test"]
      expect(yield* ok([...s, "CREATE TABLE t (id INTEGER PRIMARY KEY, r INTEGER, d DATETIME, b BOOLEAN, note TEXT)"])).toBe("")
      const before = Date.now()
      expect(yield* ok([...s, "INSERT INTO t (r, d, b, note) VALUES (random(), datetime('now'), 1, 'first');INSERT INTO t (r, d, b, note) VALUES (random(), datetime('now'), 0, 'second')"])).toBe("")

      // Tabular SELECT: values joined by |, time as go prints a time.Time, booleans as true/false.
      expect(yield* ok([...s, "SELECT id, note, typeof(r), b FROM t ORDER BY id"])).toBe("1|first|integer|true\n2|second|integer|false\n")
      const dates = (yield* ok([...s, "SELECT d FROM t ORDER BY id"])).trim().split("\n")
      expect(dates).toHaveLength(2)
      for (const line of dates) {
        const match = timePattern.exec(line)
        expect(match, line).not.toBeNull()
        const [, year, month, day, hour, minute, second] = match!.map(Number)
        const at = Date.UTC(year!, month! - 1, day!, hour!, minute!, second!)
        expect(Math.abs(at - before)).toBeLessThan(60_000)
      }
      const randoms = (yield* ok([...s, "SELECT r FROM t ORDER BY id"])).trim().split("\n")
      expect(randoms.every((r) => /^-?\d+$/.test(r))).toBe(true)
      expect(randoms[0]).not.toBe(randoms[1])
      // NULL, blob, float and several SELECTs in one invocation.
      expect(yield* ok([...s, "SELECT NULL, x'0102', 2.5, 'a b';SELECT count(*) FROM t"])).toBe("<nil>|[1 2]|2.5|a b\n2\n")
      // -f json changes the dot commands' output; SELECT output is the same.
      expect(yield* ok(["-f", "json", ...s, "SELECT id, note FROM t ORDER BY id"])).toBe("1|first\n2|second\n")

      // Dot commands (no space after ';': the shell compares them whole).
      expect(yield* ok([...s, ".leader"])).toBe(`${gateway.address}\n`)
      expect(yield* ok([...s, ".cluster"])).toBe(`1|${gateway.address}|voter\n2a|127.0.0.1:9042|stand-by\n`)
      expect(JSON.parse(yield* ok(["-f", "json", ...s, ".cluster"]))).toEqual([
        { ID: 1, Address: gateway.address, Role: 0 },
        { ID: 42, Address: "127.0.0.1:9042", Role: 1 }
      ])
      expect(yield* ok([...s, `.describe ${gateway.address}`])).toBe(`${gateway.address}|0|0\n`)
      expect(yield* ok([...s, `.weight ${gateway.address} 7`])).toBe("")
      expect(JSON.parse(yield* ok(["-f", "json", ...s, `.describe ${gateway.address}`]))).toEqual({ FailureDomain: 0, Weight: 7 })
      expect(yield* ok([...s, ".remove 127.0.0.1:9042;.cluster"])).toBe(`1|${gateway.address}|voter\n`)
      expect(gateway.cluster.state.calls).toEqual(["weight 7", "remove 42"])
    }))

  it.scopedLive("SQL errors come back as the shell prints dqlite's: exit 1 with SQLite's message", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const s = ["-s", gateway.address, "test"]
      yield* ok([...s, "CREATE TABLE t (id INTEGER PRIMARY KEY)"])
      yield* ok([...s, "INSERT INTO t VALUES (1)"])
      const duplicate = yield* shell([...s, "INSERT INTO t VALUES (1)"])
      expect(duplicate.exitCode).toBe(1)
      expect(duplicate.stdout + duplicate.stderr).toContain("Error: exec: UNIQUE constraint failed: t.id")
      const missing = yield* shell([...s, "SELECT nope FROM t"])
      expect(missing.exitCode).toBe(1)
      expect(missing.stdout + missing.stderr).toContain("Error: query: no such column: nope")
      const remove = yield* shell([...s, ".remove 127.0.0.1:1"])
      expect(remove.stdout + remove.stderr).toContain("no node has address \"127.0.0.1:1\"")
      // The failed statements were rolled back; the connection pool still works.
      expect(yield* ok([...s, "SELECT count(*) FROM t"])).toBe("1\n")
    }))

  it.scopedLive(".dump writes the database image and its (empty) WAL into the current directory", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const s = ["-s", gateway.address, "test"]
      yield* ok([...s, "CREATE TABLE t (x);INSERT INTO t VALUES ('dumped')"])
      const directory = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-dump-"))),
        (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
      )
      expect(yield* ok([...s, `.dump ${gateway.address} test`], directory)).toBe("OK\n")
      const main = fs.readFileSync(path.join(directory, "test"))
      expect(main.subarray(0, 16).toString("latin1")).toBe("SQLite format 3\0")
      expect(main.includes(Buffer.from("dumped"))).toBe(true)
      expect(fs.statSync(path.join(directory, "test-wal")).size).toBe(0)
    }))

  it.scopedLive("a large result arrives through many ROWS batches", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const s = ["-s", gateway.address, "test"]
      const out = yield* ok([...s, "SELECT n, printf('row-%05d', n) FROM (WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < 5000) SELECT n FROM k)"])
      const lines = out.trim().split("\n")
      expect(lines).toHaveLength(5000)
      expect(lines[0]).toBe("1|row-00001")
      expect(lines[4999]).toBe("5000|row-05000")
    }))

  it.scopedLive("pointed at a follower, the shell follows LEADER to the leader and runs there", () =>
    Effect.gen(function*() {
      const leader = yield* startGateway()
      const follower = yield* startGateway({ others: [{ id: 2, address: leader.address, role: "voter" }], leader: 2 })
      follower.fixture.setRole("follower", 2)
      const s = ["-s", follower.address, "test"]
      expect(yield* ok([...s, "CREATE TABLE t (x);INSERT INTO t VALUES (5)"])).toBe("")
      expect(yield* ok([...s, "SELECT x FROM t"])).toBe("5\n")
      expect(yield* ok([...s, ".leader"])).toBe(`${leader.address}\n`)
      // The table is in the leader's database, not the follower's.
      expect(yield* ok(["-s", leader.address, "test", "SELECT count(*) FROM t"])).toBe("1\n")
    }))
})
