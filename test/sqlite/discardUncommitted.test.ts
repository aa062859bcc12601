import { nodeDisk } from "../../src/storage/Disk.ts"
import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import fs from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"
import Database from "better-sqlite3"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { closeConnectionsKeepingWal, cutWal, discardUncommitted } from "../../src/sqlite/discardUncommitted.ts"
import { WalCutError } from "../../src/sqlite/errors.ts"
import type { SqliteDatabase } from "../../src/sqlite/openDatabase.ts"
import { checkpointTruncate, openDatabase } from "../../src/sqlite/openDatabase.ts"
import type { WalPosition } from "../../src/sqlite/WalCapture.ts"
import { WalCapture } from "../../src/sqlite/WalCapture.ts"
import { integrityCheck, pageSize, readOnly, tempDirectory } from "./helpers.ts"

let dir: ReturnType<typeof tempDirectory>
let databasePath: string

beforeEach(() => {
  dir = tempDirectory()
  databasePath = path.join(dir.path, "leader.db")
})
afterEach(() => dir.remove())

const sha1 = (file: string): string => createHash("sha1").update(fs.readFileSync(file)).digest("hex")
const names = (db: SqliteDatabase): Array<string> =>
  (db.prepare("SELECT name FROM t ORDER BY rowid").all() as Array<{ name: string }>).map((row) => row.name)

/** A leader with transaction A captured and (by assumption) Raft-committed, then B committed
 * locally and captured but never committed by Raft. */
function leaderWithAThenB(options: { readonly bigB: boolean }): { writer: SqliteDatabase; keep: WalPosition } {
  const writer = openDatabase(databasePath, { pageSize })
  const capture = new WalCapture({ databasePath, pageSize })
  writer.exec("CREATE TABLE t(name TEXT, payload BLOB)")
  writer.exec("INSERT INTO t VALUES ('A', randomblob(9000))")
  const keep = capture.capture().pop()!.walEnd
  if (options.bigB) {
    writer.pragma("cache_size = 8")
    writer.exec("BEGIN")
    for (let i = 0; i < 300; i++) writer.exec("INSERT INTO t VALUES ('B', randomblob(3000))")
    writer.exec("UPDATE t SET payload = NULL WHERE name = 'A'; COMMIT")
  } else {
    writer.exec("INSERT INTO t VALUES ('B', randomblob(100)); DELETE FROM t WHERE name = 'A' AND 0")
  }
  expect(capture.capture().length).toBeGreaterThan(0)
  capture.close()
  return { writer, keep }
}

describe("the claims discardUncommitted relies on", () => {
  it("closing the last read-write connection checkpoints the WAL into the main file and deletes it", () => {
    const writer = openDatabase(databasePath, { pageSize })
    writer.exec("CREATE TABLE t(name TEXT, payload BLOB); INSERT INTO t VALUES ('B', randomblob(100))")
    const mainBefore = sha1(databasePath)
    expect(fs.statSync(`${databasePath}-wal`).size).toBeGreaterThan(0)
    writer.close()
    expect(fs.existsSync(`${databasePath}-wal`)).toBe(false)
    expect(sha1(databasePath)).not.toBe(mainBefore)
  })

  it("a read-only connection that has not read yet does not stop the writer's close from checkpointing", () => {
    const { writer } = leaderWithAThenB({ bigB: false })
    const idleReader = new Database(databasePath, { readonly: true })
    writer.close()
    expect(fs.existsSync(`${databasePath}-wal`)).toBe(false) // B is in the main file now
    idleReader.close()
  })

  it("closing the writer while a read-only connection is open, then the reader, keeps the WAL and the main file", () => {
    const { writer } = leaderWithAThenB({ bigB: false })
    // A bare reader: closeConnectionsKeepingWal makes it read before closing the writer.
    const reader = new Database(databasePath, { readonly: true })
    const mainBefore = sha1(databasePath)
    const walBefore = sha1(`${databasePath}-wal`)
    closeConnectionsKeepingWal(writer, reader)
    expect(writer.open || reader.open).toBe(false)
    expect(sha1(`${databasePath}-wal`)).toBe(walBefore)
    expect(sha1(databasePath)).toBe(mainBefore) // no checkpoint happened
  })
})

describe("discardUncommitted", () => {
  for (const bigB of [false, true]) {
    it(`leaves exactly the Raft-committed state (B ${bigB ? "spilled, 300 rows" : "small"})`, () => {
      const { writer, keep } = leaderWithAThenB({ bigB })
      expect(names(writer)).toContain("B")
      const reader = openDatabase(databasePath, { pageSize, readonly: true })
      const cut = discardUncommitted({ writer, reader, keep })
      expect(cut.walBytesAfter).toBe(keep.offsetBytes)
      expect(cut.walBytesBefore).toBeGreaterThan(keep.offsetBytes)
      expect(fs.existsSync(`${databasePath}-shm`)).toBe(false)

      const reopened = openDatabase(databasePath, { pageSize })
      expect(names(reopened)).toEqual(["A"])
      expect((reopened.prepare("SELECT length(payload) AS n FROM t").get() as { n: number }).n).toBe(9000)
      expect(integrityCheck(reopened)).toBe("ok")
      // The database is writable again and new commits follow A.
      reopened.exec("INSERT INTO t VALUES ('C', NULL)")
      expect(names(reopened)).toEqual(["A", "C"])
      reopened.close()
    })
  }

  it("discards a transaction still open in the writer", () => {
    const { writer, keep } = leaderWithAThenB({ bigB: false })
    writer.pragma("cache_size = 8")
    writer.exec("BEGIN")
    for (let i = 0; i < 200; i++) writer.exec("INSERT INTO t VALUES ('open', randomblob(3000))")
    const reader = openDatabase(databasePath, { pageSize, readonly: true })
    discardUncommitted({ writer, reader, keep })
    expect(readOnly(databasePath, names)).toEqual(["A"])
  })

  it("empties a WAL restarted after the committed position (checkpoint, then B)", () => {
    const writer = openDatabase(databasePath, { pageSize })
    const capture = new WalCapture({ databasePath, pageSize })
    writer.exec("CREATE TABLE t(name TEXT, payload BLOB); INSERT INTO t VALUES ('A', NULL)")
    const keep = capture.capture().pop()!.walEnd
    expect(checkpointTruncate(writer).busy).toBe(0)
    writer.exec("INSERT INTO t VALUES ('B', NULL)")
    expect(capture.capture()[0]!.walEnd.salt1).not.toBe(keep.salt1)
    capture.close()
    const reader = openDatabase(databasePath, { pageSize, readonly: true })
    expect(discardUncommitted({ writer, reader, keep }).walBytesAfter).toBe(0)
    expect(readOnly(databasePath, names)).toEqual(["A"])
  })

  it("works after a kill -9 of the leader, with no connection to close", () => {
    const script = fileURLToPath(new URL("./crashingLeader.ts", import.meta.url))
    const child = spawnSync(process.execPath, ["--import", "tsx", script, databasePath], { encoding: "utf8", timeout: 30_000 })
    expect(child.signal, child.stderr).toBe("SIGKILL")
    const { a, b } = JSON.parse(child.stdout) as { a: WalPosition; b: WalPosition }
    expect(fs.statSync(`${databasePath}-wal`).size).toBe(b.offsetBytes)
    // Without the cut, B survived the crash: a copy of the files shows it.
    const copyPath = path.join(dir.path, "copy.db")
    fs.copyFileSync(databasePath, copyPath)
    fs.copyFileSync(`${databasePath}-wal`, `${copyPath}-wal`)
    expect(readOnly(copyPath, names)).toEqual(["A", "B"])
    expect(cutWal(nodeDisk, databasePath, a).walBytesAfter).toBe(a.offsetBytes)
    const reopened = openDatabase(databasePath, { pageSize })
    expect(names(reopened)).toEqual(["A"])
    expect((reopened.prepare("SELECT length(payload) AS n FROM t").get() as { n: number }).n).toBe(10000)
    expect(integrityCheck(reopened)).toBe("ok")
    reopened.close()
  })

  it("refuses, leaving the WAL untouched, a position that is not a commit boundary of this WAL", () => {
    const { writer, keep } = leaderWithAThenB({ bigB: false })
    const reader = openDatabase(databasePath, { pageSize, readonly: true })
    closeConnectionsKeepingWal(writer, reader)
    const walBefore = sha1(`${databasePath}-wal`)
    const attempts: Array<[WalPosition, string]> = [
      [{ ...keep, checksum1: (keep.checksum1 + 1) >>> 0 }, "NotACommitBoundary"],
      [{ ...keep, offsetBytes: keep.offsetBytes - (pageSize + 24) }, "NotACommitBoundary"], // a non-commit frame
      [{ ...keep, offsetBytes: keep.offsetBytes + 1 }, "NotACommitBoundary"],
      [{ ...keep, offsetBytes: keep.offsetBytes + 1000 * (pageSize + 24) }, "WalTooShort"]
    ]
    for (const [position, reason] of attempts) {
      let caught: unknown
      try {
        cutWal(nodeDisk, databasePath, position)
      } catch (error) {
        caught = error
      }
      expect(caught).toBeInstanceOf(WalCutError)
      expect((caught as WalCutError).reason).toBe(reason)
      expect(sha1(`${databasePath}-wal`)).toBe(walBefore)
    }
    const db = new Database(databasePath, { readonly: true })
    expect(names(db)).toEqual(["A", "B"])
    db.close()
  })
})
