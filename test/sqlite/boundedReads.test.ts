// Which reads run inline on the main thread: only plans that bound the work to a few rows.
import Database from "better-sqlite3"
import { describe, expect, it } from "vitest"
import { BoundedReads } from "../../src/sqlite/boundedReads.ts"
import { Connection } from "../../src/sqlite/connection.ts"

function view(): Connection {
  const db = new Database(":memory:")
  db.exec(`
    CREATE TABLE kv (k TEXT, v TEXT, UNIQUE(k));
    CREATE TABLE t (id INTEGER PRIMARY KEY, a INT, b INT, c INT);
    CREATE INDEX t_a ON t(a);
    CREATE UNIQUE INDEX t_bc ON t(b, c);
  `)
  return new Connection(db as never, 16)
}

describe("bounded reads", () => {
  it("point lookups on a unique key, the rowid or no table are bounded", () => {
    const reads = new BoundedReads(16)
    const v = view()
    for (const sql of [
      "SELECT 1",
      "SELECT v FROM kv WHERE k = ?",
      "SELECT * FROM t WHERE id = ?",
      "SELECT a FROM t WHERE b = ? AND c = ?",
      "SELECT y.c FROM t AS x JOIN t AS y ON y.id = x.a WHERE x.id = ?"
    ]) expect([sql, reads.isBounded(v, sql)]).toEqual([sql, true])
  })

  it("scans, ranges, non-unique indexes, partial keys, sorts and recursive queries are not", () => {
    const reads = new BoundedReads(16)
    const v = view()
    for (const sql of [
      "SELECT count(*) FROM kv",
      "SELECT * FROM t WHERE id > ?",
      "SELECT * FROM t WHERE a = ?",
      "SELECT * FROM t WHERE b = ?",
      "SELECT * FROM kv ORDER BY v",
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) SELECT count(*) FROM c",
      "SELECT (SELECT count(*) FROM t)",
      "SELECT nonsense FROM nowhere"
    ]) expect([sql, reads.isBounded(v, sql)]).toEqual([sql, false])
  })

  it("a schema change decides again: a dropped unique index makes the lookup a scan", () => {
    const reads = new BoundedReads(16)
    const v = view()
    const sql = "SELECT a FROM t WHERE b = ? AND c = ?"
    expect(reads.isBounded(v, sql)).toBe(true)
    v.db.exec("DROP INDEX t_bc")
    expect(reads.isBounded(v, sql)).toBe(false)
  })
})
