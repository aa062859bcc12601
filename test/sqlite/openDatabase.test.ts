import fs from "node:fs"
import path from "node:path"
import Database from "better-sqlite3"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { DatabaseOpenError, PageSizeMismatch } from "../../src/sqlite/errors.ts"
import { openDatabase } from "../../src/sqlite/openDatabase.ts"
import { PageApplier } from "../../src/sqlite/PageApplier.ts"
import { pageSize, tempDirectory } from "./helpers.ts"

let dir: ReturnType<typeof tempDirectory>
beforeEach(() => {
  dir = tempDirectory()
})
afterEach(() => dir.remove())

describe("openDatabase", () => {
  it("sets WAL mode, no auto-checkpoint, synchronous NORMAL and the page size", () => {
    const file = path.join(dir.path, "a.db")
    const db = openDatabase(file, { pageSize: 8192 })
    expect(db.pragma("journal_mode", { simple: true })).toBe("wal")
    expect(db.pragma("wal_autocheckpoint", { simple: true })).toBe(0)
    expect(db.pragma("synchronous", { simple: true })).toBe(1)
    expect(db.pragma("page_size", { simple: true })).toBe(8192)
    // No auto-checkpoint: 2,000 frames stay in the WAL (the default would checkpoint at 1,000).
    db.exec("CREATE TABLE t(b BLOB)")
    const insert = db.prepare("INSERT INTO t VALUES (randomblob(9000))")
    for (let i = 0; i < 700; i++) insert.run()
    expect(fs.statSync(`${file}-wal`).size).toBeGreaterThan(2000 * 8192)
    db.close()

    const reader = openDatabase(file, { pageSize: 8192, readonly: true })
    expect(reader.readonly).toBe(true)
    expect(reader.prepare("SELECT count(*) AS n FROM t").get()).toEqual({ n: 700 })
    reader.close()
  })

  it("refuses an existing database with another page size", () => {
    const file = path.join(dir.path, "other.db")
    const other = new Database(file)
    other.pragma("page_size = 1024")
    other.exec("CREATE TABLE t(x)")
    other.close()
    expect(() => openDatabase(file, { pageSize })).toThrow(PageSizeMismatch)
    expect(() => openDatabase(file, { pageSize, readonly: true })).toThrow(PageSizeMismatch)
    expect(() => PageApplier.open({ databasePath: file, pageSize })).toThrow(PageSizeMismatch)
    const applier = PageApplier.open({ databasePath: file, pageSize: 1024 })
    expect(applier.fileSizeBytes).toBe(2048)
    applier.close()
  })

  it("refuses a read-only open of a missing or non-WAL database with DatabaseOpenError", () => {
    expect(() => openDatabase(path.join(dir.path, "missing.db"), { pageSize, readonly: true })).toThrow(DatabaseOpenError)
    const file = path.join(dir.path, "rollback.db")
    const rollback = new Database(file)
    rollback.exec("CREATE TABLE t(x)")
    rollback.close()
    expect(() => openDatabase(file, { pageSize, readonly: true })).toThrow(/journal_mode is delete/)
    expect(() => openDatabase(file, { pageSize: 1000 })).toThrow(DatabaseOpenError)
  })
})
