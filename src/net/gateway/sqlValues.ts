// Between the wire's typed values and the SQL surface's plain ones (src/sqlite/Sql.ts SqlValue).
//
// Parameters (wire → SQL): INTEGER and BOOLEAN (as 0 or 1) become `bigint`, so they bind as INTEGER
// (`typeof(?)` = integer; better-sqlite3 binds every JS number as a double); FLOAT stays a
// `number` and binds as REAL (−0.0 too), TEXT and ISO8601 a string, BLOB bytes, NULL null.
// UNIXTIME never arrives (the codec rejects it).
//
// Rows (SQL → wire), as dqlite chooses types (fact sheet §4.4): the declared type of the column,
// matched whole and case-insensitively, decides the special types:
// - DATETIME / DATE / TIMESTAMP: an integer → UNIXTIME, text → ISO8601, NULL → ISO8601 "";
// - BOOLEAN: an integer → BOOLEAN (the raw value), NULL → BOOLEAN 0;
// - any other pairing (a REAL in a DATETIME column, text in a BOOLEAN one, which crash a dqlite
//   1.11 node) is sent with its plain type.
// Otherwise every value goes out with SQLite's own storage class, which SqlValue carries: a
// `bigint` is an INTEGER, a `number` a FLOAT (`SELECT 2.0, -0.0, 1e15` → FLOAT 2, −0, 1e15, as
// dqlite sends them).

import type { SqlValue } from "../../sqlite/Sql.ts"
import type { Value } from "../protocol/values.ts"
import { canonicalInt64, int64Max, int64Min } from "../protocol/values.ts"

/** A parameter as the SQL surface binds it. */
export function sqlValueOfParam(value: Value): SqlValue {
  switch (value.kind) {
    case "integer":
    case "unixtime":
      return BigInt(value.value)
    case "boolean":
      // dqlite (1.11 and later) binds a BOOLEAN as 0 or 1, whatever the raw word.
      return value.value === 0 || value.value === 0n ? 0n : 1n
    case "float":
      return value.value
    case "text":
    case "iso8601":
      return value.value
    case "blob":
      return value.value
    case "null":
      return null
  }
}

type SpecialColumn = "time" | "boolean" | "plain"

/** How a column's declared type affects the wire type of its values. */
export function specialColumnOf(declaredType: string | null | undefined): SpecialColumn {
  if (declaredType === null || declaredType === undefined || declaredType === "") return "plain"
  const upper = declaredType.toUpperCase()
  if (upper === "DATETIME" || upper === "DATE" || upper === "TIMESTAMP") return "time"
  if (upper === "BOOLEAN") return "boolean"
  return "plain"
}

/** A row value as dqlite sends it for a column of the given kind. */
export function wireValueOfSql(value: SqlValue, column: SpecialColumn): Value {
  if (value === null) {
    if (column === "time") return { kind: "iso8601", value: "" }
    if (column === "boolean") return { kind: "boolean", value: 0 }
    return { kind: "null" }
  }
  if (typeof value === "bigint") return integerValue(value, column)
  if (typeof value === "number") return { kind: "float", value }
  if (typeof value === "string") {
    const text = textForWire(value)
    return column === "time" ? { kind: "iso8601", value: text } : { kind: "text", value: text }
  }
  return { kind: "blob", value }
}

function integerValue(value: bigint, column: SpecialColumn): Value {
  // An int64 always; clamp defensively so a broken SqlValue cannot make the encoder throw.
  const clamped = value < int64Min ? int64Min : value > int64Max ? int64Max : value
  const canonical = canonicalInt64(clamped)
  if (column === "time") return { kind: "unixtime", value: canonical }
  if (column === "boolean") return { kind: "boolean", value: canonical }
  return { kind: "integer", value: canonical }
}

const loneSurrogates = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g

/** Text the wire can carry: up to the first NUL (what C dqlite's strlen-based encoder sends) and
 * without lone surrogates (replaced by U+FFFD, as decoding invalid UTF-8 would). */
export function textForWire(value: string): string {
  const nul = value.indexOf("\0")
  const cut = nul === -1 ? value : value.slice(0, nul)
  return cut.replace(loneSurrogates, "\uFFFD")
}
