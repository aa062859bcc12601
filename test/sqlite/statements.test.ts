// SQL text handling before any connection sees it, the bounds, and the write entry format.
import { describe, expect, it } from "vitest"
import { AssertionError } from "../../src/assert.ts"
import { sqliteLimits, logRecordBytesMax } from "../../src/sqlite/limits.ts"
import { changesRows, classifyStatement, looksReadOnly, mainVerb, parameterSlots, returnsRows, splitStatements } from "../../src/sqlite/statements.ts"
import { decodeWriteEntry, encodeWriteEntry } from "../../src/sqlite/writeEntry.ts"
import { PageSetDecodeError } from "../../src/sqlite/errors.ts"
import { persistBytesMax } from "../../src/storage/LogStore.ts"

describe("splitStatements", () => {
  it("splits on semicolons outside strings, identifiers and comments, with tail offsets", () => {
    const sql = "INSERT INTO t VALUES ('a;b'); -- c;d\n SELECT \"x;y\" FROM [t;u] /* ; */ ;;  "
    const parts = splitStatements(sql)
    // Each statement is the client's text from its first token through its `;`, comments before
    // it left out: SQLite sees exactly what was sent.
    expect(parts.map((p) => p.text)).toEqual(["INSERT INTO t VALUES ('a;b');", "SELECT \"x;y\" FROM [t;u] /* ; */ ;"])
    expect(parts[0]!.end).toBe(sql.indexOf(";", 25) + 1)
    expect(splitStatements("  -- nothing\n ; ")).toEqual([])
  })

  it("keeps a trigger body whole", () => {
    const sql = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE u SET n = n + 1; DELETE FROM v; END; SELECT 1"
    expect(splitStatements(sql).map((p) => p.text)).toEqual([
      "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE u SET n = n + 1; DELETE FROM v; END;",
      "SELECT 1"
    ])
  })
})

describe("parameterSlots", () => {
  it("counts like sqlite3_bind_parameter_count", () => {
    expect(parameterSlots("SELECT ?, ?, '?'").count).toBe(2)
    expect(parameterSlots("SELECT ?3, ?").count).toBe(4)
    expect(parameterSlots("SELECT :a, @b, $c, :a -- :d").count).toBe(3)
  })
})

describe("what a statement does, from its text", () => {
  it("finds the main verb behind WITH and knows which statements set changes()", () => {
    expect(mainVerb("WITH x(a) AS (SELECT 1) INSERT INTO t SELECT a FROM x")).toBe("INSERT")
    expect(mainVerb("with recursive c(n) as (select 1 union all select n + 1 from c where n < 3) select * from c")).toBe("SELECT")
    expect(changesRows("/* c */ delete from t")).toBe(true)
    expect(changesRows("REPLACE INTO t VALUES (1)")).toBe(true)
    expect(changesRows("EXPLAIN INSERT INTO t VALUES (1)")).toBe(false)
    expect(changesRows("CREATE TABLE t(a)")).toBe(false)
    expect(changesRows("BEGIN")).toBe(false)
    expect(changesRows("SELECT 'insert'")).toBe(false)
  })

  it("looksReadOnly is conservative, and reads words, not strings", () => {
    expect(looksReadOnly("SELECT 1")).toBe(true)
    expect(looksReadOnly("SELECT 'update'")).toBe(true)
    expect(looksReadOnly("SELECT 1; SELECT 2")).toBe(true)
    expect(looksReadOnly("SELECT 1; DELETE FROM t")).toBe(false)
    expect(looksReadOnly("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x")).toBe(false)
    expect(looksReadOnly("PRAGMA table_info(t)")).toBe(false)
    expect(looksReadOnly("")).toBe(false)
    // The client's retry decision (net/client) asks the same function: its cases, kept here.
    expect(looksReadOnly("  -- c\n with x as (select 1) select * from x")).toBe(true)
    expect(looksReadOnly("INSERT INTO t VALUES (1) RETURNING *")).toBe(false)
    expect(looksReadOnly("SELECT 'a;' AS \"update\"")).toBe(true)
    expect(looksReadOnly("/* insert */ SELECT 1 -- delete")).toBe(true)
  })

  it("returnsRows: what a shell runs as a query", () => {
    expect(returnsRows("INSERT INTO m VALUES (1) RETURNING x")).toBe(true)
    expect(returnsRows("WITH a AS (SELECT 1) INSERT INTO m SELECT * FROM a")).toBe(false)
    expect(returnsRows("VALUES (1)")).toBe(true)
    expect(returnsRows("PRAGMA table_info(m)")).toBe(true)
    expect(returnsRows("INSERT INTO m VALUES ('returning')")).toBe(false)
  })
})

describe("classifyStatement", () => {
  it("routes transaction control and refuses what would break replication", () => {
    expect(classifyStatement("begin immediate")._tag).toBe("Begin")
    expect(classifyStatement("END TRANSACTION")._tag).toBe("Commit")
    expect(classifyStatement("ROLLBACK")._tag).toBe("Rollback")
    expect(classifyStatement("ROLLBACK TO sp")._tag).toBe("Other")
    expect(classifyStatement("SAVEPOINT sp")._tag).toBe("Savepoint")
    expect(classifyStatement("VACUUM")._tag).toBe("Solo")
    expect(classifyStatement("VACUUM INTO '/tmp/x'")._tag).toBe("Forbidden")
    expect(classifyStatement("ATTACH 'x.db' AS x")._tag).toBe("Forbidden")
    expect(classifyStatement("PRAGMA journal_mode = DELETE")._tag).toBe("Forbidden")
    expect(classifyStatement("pragma main.wal_autocheckpoint=10")._tag).toBe("Forbidden")
    expect(classifyStatement("PRAGMA user_version = 3")._tag).toBe("Other")
    expect(classifyStatement("/* hi */ SELECT 1")._tag).toBe("Other")
  })
})

describe("bounds and formats", () => {
  it("the write entry bound matches the log's persist bound, and the default fits it", () => {
    expect(logRecordBytesMax).toBe(persistBytesMax)
    expect(() => sqliteLimits()).not.toThrow()
    expect(() => sqliteLimits({ transactionBytesMax: 64 * 1024 * 1024 })).toThrow(AssertionError)
  })

  it("a write entry round-trips and a damaged one is refused", () => {
    const page = new Uint8Array(4096).fill(7)
    const data = encodeWriteEntry({ origin: { node: 3, epoch: 2, seq: 9 }, previousChangeIndex: 41, database: "app", pageSet: { pageSize: 4096, dbSizePages: 2, pages: [{ pgno: 2, data: page }] } })
    const decoded = decodeWriteEntry(data)
    expect(decoded).toMatchObject({ origin: { node: 3, epoch: 2, seq: 9 }, previousChangeIndex: 41, database: "app" })
    expect(decoded.pageSet.pages[0]!.data).toEqual(page)
    expect(() => decodeWriteEntry(data.subarray(0, data.length - 1))).toThrow(PageSetDecodeError)
    const bad = data.slice()
    bad[0] = 0
    expect(() => decodeWriteEntry(bad)).toThrow(PageSetDecodeError)
  })
})
