// `tqlite dump` against a scripted dqlite server (test/net/client/dumpServer.ts): a main file and
// a non-empty WAL (as a dqlite server sends them) are streamed to disk, the WAL folded in, with
// byte progress; a dump that breaks mid-stream (a silent server, a malformed body) exits 1 with
// the reason and leaves the target as it was and no temporary file.
import Database from "better-sqlite3"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { runDump } from "../../src/cli/commands/dump.ts"
import type { DumpAnswer } from "../net/client/dumpServer.ts"
import { dumpServer, filesAnswer } from "../net/client/dumpServer.ts"
import { runCaptured } from "./harness.ts"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-dumpstream-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

/** A database in WAL mode whose rows are all still in its WAL: the main file and the WAL. */
function walDatabase(rows: number): { main: Uint8Array; wal: Uint8Array } {
  const file = path.join(dir, `source-${rows}.db`)
  const db = new Database(file)
  try {
    db.pragma("journal_mode=WAL")
    db.pragma("wal_autocheckpoint=0")
    db.exec("CREATE TABLE t (i INTEGER PRIMARY KEY, s TEXT)")
    const insert = db.prepare("INSERT INTO t VALUES (?, ?)")
    db.transaction(() => {
      for (let i = 1; i <= rows; i++) insert.run(i, `row ${i} ${"x".repeat(900)}`)
    })()
    // Read while the connection is open: closing it would checkpoint and delete the WAL.
    return { main: fs.readFileSync(file), wal: fs.readFileSync(`${file}-wal`) }
  } finally {
    db.close()
  }
}

const dumpWith = (answer: () => DumpAnswer, file: string, idleTimeoutMs = 10_000) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const server = yield* dumpServer(answer)
    return yield* runCaptured((io) => runDump({ servers: [server.address], database: "db", file, idleTimeoutMs }, io))
  })))

const leftovers = () => fs.readdirSync(dir).filter((name) => name.includes("dump-tmp"))

describe("tqlite dump, streamed", () => {
  it("writes a main file and its WAL as they arrive, folds the WAL in, shows byte progress", async () => {
    const { main, wal } = walDatabase(3000)
    expect(wal.length).toBeGreaterThan(main.length) // the rows are in the WAL only
    const file = path.join(dir, "with-wal.db")
    const result = await dumpWith(() => ({ parts: filesAnswer([{ name: "db", data: main }, { name: "db-wal", data: wal }]), then: "stay" }), file)
    expect(result.code, result.err).toBe(0)
    const bodyBytes = 8 + 8 + 8 + main.length + 8 + 8 + wal.length
    expect(result.err).toContain(`dump db: 100% `)
    expect(result.err).toMatch(new RegExp(`received ${(bodyBytes / 1024 / 1024).toFixed(1)} MiB`))
    const db = new Database(file, { readonly: true, fileMustExist: true })
    try {
      expect(db.pragma("journal_mode", { simple: true })).toBe("delete")
      expect(db.prepare("SELECT count(*), max(i) FROM t").raw(true).get()).toEqual([3000, 3000])
    } finally {
      db.close()
    }
    expect(fs.existsSync(`${file}-wal`)).toBe(false)
    expect(leftovers()).toEqual([])
  })

  it("a server silent mid-file: exit 1 after the idle timeout, the old file kept, no temporary left", async () => {
    const file = path.join(dir, "kept.db")
    fs.writeFileSync(file, "the previous dump")
    const answer = filesAnswer([{ name: "db", data: new Uint8Array(64 * 1024) }])
    const result = await dumpWith(() => ({ parts: [answer[0]!, answer[1]!.subarray(0, 4096)], then: "stay" }), file, 300)
    expect(result.code).toBe(1)
    expect(result.err).toMatch(/Error: dump \(idle: no bytes for 300 ms after \d+ of the \d+-byte FILES body inside file 0 \(\d+ of its bytes missing\)\) to 127\.0\.0\.1:\d+: no answer within 300 ms\n$/)
    expect(fs.readFileSync(file, "utf8")).toBe("the previous dump")
    expect(leftovers()).toEqual([])
  })

  it("a body whose file overruns it: exit 1 naming the field, no temporary left", async () => {
    const file = path.join(dir, "never.db")
    const body = new Uint8Array(40)
    const view = new DataView(body.buffer)
    view.setBigUint64(0, 1n, true)
    body.set([0x64, 0x62], 8) // "db"
    view.setBigUint64(16, 1n << 40n, true)
    const header = new Uint8Array(8)
    new DataView(header.buffer).setUint32(0, body.length / 8, true)
    header[4] = 9 // FILES
    const result = await dumpWith(() => ({ parts: [header, body], then: "stay" }), file)
    expect(result.code).toBe(1)
    expect(result.err).toContain("protocol error from 127.0.0.1")
    expect(result.err).toContain("Truncated at files[0].data: a file of 1099511627776 bytes overruns the 16 bytes left of the body")
    expect(fs.existsSync(file)).toBe(false)
    expect(leftovers()).toEqual([])
  })
})
