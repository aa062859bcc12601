// Statement splitting and parameter numbering, checked against SQLite itself where it can say:
// better-sqlite3 refuses text holding more than one statement, so every span must prepare alone.
import Database from "better-sqlite3"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { firstStatement, isBlankSql, parameterSlots, splitStatements, utf8OffsetBytes } from "../../src/sqlite/statements.ts"

describe("splitStatements", () => {
  it("splits on ; outside literals, identifiers, comments and trigger bodies", () => {
    const sql = [
      "CREATE TABLE \"a;b\" (x TEXT DEFAULT 'it''s;', [c;d] INT, `e;f`)",
      "INSERT INTO \"a;b\" VALUES ('x;y', 1, 2) -- a line comment; its ; do not count\n",
      "/* block; comment */ CREATE TEMP TRIGGER tr AFTER INSERT ON \"a;b\" BEGIN SELECT 1; SELECT ';'; END",
      "EXPLAIN CREATE TRIGGER tr2 AFTER INSERT ON \"a;b\" BEGIN SELECT 2; END",
      "SELECT 'end'"
    ].join(";\n")
    const spans = splitStatements(sql)
    // A statement starts at its first token: the leading block comment is not part of it.
    expect(spans.map((s) => s.text.split(/\s+/)[0])).toEqual(["CREATE", "INSERT", "CREATE", "EXPLAIN", "SELECT"])
    const db = new Database(":memory:")
    db.exec(spans[0]!.text)
    for (const span of spans.slice(1)) expect(() => db.prepare(span.text)).not.toThrow()
    expect(spans.every((span) => sql.slice(span.start, span.end) === span.text)).toBe(true)
  })

  it("drops empty statements and reports blank text", () => {
    expect(splitStatements(" ; ;\n-- c\n/* d */ ;")).toEqual([])
    expect(isBlankSql("")).toBe(true)
    expect(isBlankSql("  -- x\n /* y */ ;;")).toBe(true)
    expect(isBlankSql("SELECT 1")).toBe(false)
    expect(splitStatements("SELECT 1;;SELECT 2").map((s) => s.text)).toEqual(["SELECT 1;", "SELECT 2"])
  })

  it("firstStatement gives the tail after the first statement, with its offset in UTF-8 bytes", () => {
    const first = firstStatement("SELECT 'é';  SELECT 2")
    expect(first?.statement.text).toBe("SELECT 'é';")
    expect(first?.tail).toBe("  SELECT 2")
    expect(utf8OffsetBytes("SELECT 'é';  SELECT 2", first!.statement.end)).toBe(12)
    expect(firstStatement("/* only */")).toBeNull()
    expect(firstStatement("SELECT 1 -- no semicolon")?.tail).toBe("")
  })

  it("agrees with SQLite on random concatenations of statements", () => {
    const pieces = ["SELECT 1", "SELECT ';'", "SELECT \"x;\" FROM (SELECT 1 AS \"x;\")", "SELECT 2 /* ; */", "SELECT [a;] FROM (SELECT 3 AS [a;])", "VALUES (1), (';')"]
    const db = new Database(":memory:")
    fc.assert(fc.property(fc.array(fc.constantFrom(...pieces), { minLength: 1, maxLength: 6 }), fc.constantFrom(";", ";\n", " ; -- c\n"), (chosen, separator) => {
      const spans = splitStatements(chosen.join(separator))
      expect(spans).toHaveLength(chosen.length)
      for (const span of spans) expect(() => db.prepare(span.text)).not.toThrow()
    }))
  })
})

describe("parameterSlots", () => {
  it("numbers parameters as SQLite does", () => {
    const db = new Database(":memory:")
    const cases: Array<[string, number]> = [
      ["SELECT 1", 0],
      ["SELECT ?, ?", 2],
      ["SELECT ?1, ?2, ?1", 2],
      ["SELECT ?5", 5],
      ["SELECT :a, @b, $c, :a", 3],
      ["SELECT ?3, ?, :x", 5],
      ["SELECT '?', ? -- ?\n", 1]
    ]
    for (const [sql, count] of cases) {
      expect(parameterSlots(sql).count, sql).toBe(count)
      // SQLite agrees: binding `count` values (named ones by name) is accepted.
      const slots = parameterSlots(sql)
      const positional: Array<null> = []
      const named: Record<string, null> = {}
      slots.names.forEach((name) => (name === null ? positional.push(null) : (named[name.slice(1)] = null)))
      const args = Object.keys(named).length > 0 ? [...positional, named] : positional
      expect(() => db.prepare(sql).get(...args), sql).not.toThrow()
    }
    expect(parameterSlots("SELECT ?3, ?, :x").names).toEqual([null, null, "?3", null, ":x"])
  })
})
