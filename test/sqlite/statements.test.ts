// SQL text handling before any connection sees it, the bounds, and the write entry format.
import { describe, expect, it } from "vitest"
import { AssertionError } from "../../src/assert.ts"
import { sqliteLimits, logRecordBytesMax } from "../../src/sqlite/limits.ts"
import { classifyStatement, parameterCount, splitStatements } from "../../src/sqlite/statements.ts"
import { decodeWriteEntry, encodeWriteEntry } from "../../src/sqlite/writeEntry.ts"
import { PageSetDecodeError } from "../../src/sqlite/errors.ts"
import { persistBytesMax } from "../../src/storage/LogStore.ts"

describe("splitStatements", () => {
  it("splits on semicolons outside strings, identifiers and comments, with tail offsets", () => {
    const sql = "INSERT INTO t VALUES ('a;b'); -- c;d\n SELECT \"x;y\" FROM [t;u] /* ; */ ;;  "
    const parts = splitStatements(sql)
    expect(parts.map((p) => p.sql)).toEqual(["INSERT INTO t VALUES ('a;b')", "-- c;d\n SELECT \"x;y\" FROM [t;u] /* ; */"])
    expect(parts[0]!.endOffset).toBe(sql.indexOf(";", 25) + 1)
    expect(splitStatements("  -- nothing\n ; ")).toEqual([])
  })

  it("keeps a trigger body whole", () => {
    const sql = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE u SET n = n + 1; DELETE FROM v; END; SELECT 1"
    expect(splitStatements(sql).map((p) => p.sql)).toEqual([
      "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE u SET n = n + 1; DELETE FROM v; END",
      "SELECT 1"
    ])
  })
})

describe("parameterCount", () => {
  it("counts like sqlite3_bind_parameter_count", () => {
    expect(parameterCount("SELECT ?, ?, '?'")).toBe(2)
    expect(parameterCount("SELECT ?3, ?")).toBe(4)
    expect(parameterCount("SELECT :a, @b, $c, :a -- :d")).toBe(3)
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
