// The end-of-run comparison on real SQLite files: identical nodes pass, a row that differs on one
// node is a divergence naming the table, and a node's WAL (a leader's committed frames) counts.
import Database from "better-sqlite3"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { ChaosNode } from "./cluster.ts"
import { compareContents, readContent } from "./final.ts"

const base = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-chaos-final-"))
afterAll(() => fs.rmSync(base, { recursive: true, force: true }))

function nodeWith(index: number, rows: ReadonlyArray<string>, options: { keepWal?: boolean } = {}): ChaosNode {
  const node = new ChaosNode(index, base)
  const dir = path.join(node.dataDir, "sqlite", "databases")
  fs.mkdirSync(dir, { recursive: true })
  const db = new Database(path.join(dir, "chaos.db"))
  db.pragma("journal_mode = WAL")
  db.pragma("wal_autocheckpoint = 0")
  db.exec("CREATE TABLE set_items (v TEXT PRIMARY KEY); CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER)")
  db.exec("INSERT INTO accounts VALUES (0, 100), (1, 100)")
  for (const row of rows) db.prepare("INSERT INTO set_items VALUES (?)").run(row)
  if (options.keepWal === true) {
    // Leave the last rows in the WAL only: copy the files while the connection is still open.
    const copy = path.join(dir, "copy")
    fs.mkdirSync(copy)
    for (const file of ["chaos.db", "chaos.db-wal"]) fs.copyFileSync(path.join(dir, file), path.join(copy, file))
    db.close()
    for (const file of ["chaos.db", "chaos.db-wal"]) fs.renameSync(path.join(copy, file), path.join(dir, file))
    fs.rmSync(path.join(dir, "chaos.db-shm"), { force: true })
  } else {
    db.close()
  }
  return node
}

describe("compareContents", () => {
  it("accepts identical nodes, a WAL-only copy included", () => {
    const contents = [nodeWith(1, ["a", "b"]), nodeWith(2, ["a", "b"], { keepWal: true })].map((node) => readContent(node, "chaos"))
    expect(contents.map((c) => c.integrity)).toEqual(["ok", "ok"])
    expect(contents[1]!.rowCounts.get("set_items")).toBe(2)
    expect(compareContents(contents)).toEqual([])
  })

  it("names the table that differs", () => {
    const contents = [nodeWith(3, ["a", "b"]), nodeWith(4, ["a", "c"]), nodeWith(5, ["a", "b"])].map((node) => readContent(node, "chaos"))
    const violations = compareContents(contents)
    expect(violations.map((v) => v.kind)).toEqual(["divergence"])
    expect(violations[0]!.message).toContain("table set_items differs")
  })

  it("reports a node without the database", () => {
    const empty = new ChaosNode(6, base)
    const contents = [nodeWith(7, ["a"]), empty].map((node) => readContent(node, "chaos"))
    expect(compareContents(contents).map((v) => v.kind).sort()).toEqual(["divergence", "divergence", "divergence", "integrity"])
  })
})
