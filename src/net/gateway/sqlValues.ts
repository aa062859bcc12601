// Between the wire's typed values and the SQL surface's plain ones (src/sqlite/Sql.ts SqlValue).
//
// Parameters (wire → SQL): INTEGER and BOOLEAN become `bigint`, so a binder that treats JS
// numbers as doubles (better-sqlite3 does) still binds an int64; FLOAT stays a `number`, TEXT and
// ISO8601 a string, BLOB bytes, NULL null. UNIXTIME never arrives (the codec rejects it).
//
// Rows (SQL → wire), as dqlite chooses types (fact sheet §4.4): the declared type of the column,
// matched whole and case-insensitively, decides the special types:
// - DATETIME / DATE / TIMESTAMP: an integer → UNIXTIME, text → ISO8601, NULL → ISO8601 "";
// - BOOLEAN: an integer → BOOLEAN (the raw value), NULL → BOOLEAN 0;
// - any other pairing (a REAL in a DATETIME column, text in a BOOLEAN one, which crash a dqlite
//   1.11 node) is sent with its plain type.
// SqlValue cannot tell REAL from INTEGER for an integral `number` (2.0 vs 2): a `bigint` is an
// INTEGER; a `number` is an INTEGER when it is a safe integer, unless the column's declared type
// has REAL affinity (contains REAL, FLOA or DOUB, and not INT), where SQLite only ever returns
// REALs. An expression like `SELECT 2.0` therefore goes out as INTEGER 2.

import type { SqlValue } from "../../sqlite/Sql.ts"
import type { Value } from "./values.ts"
import { canonicalInt64, int64Max, int64Min } from "./values.ts"

/** A parameter as the SQL surface binds it. */
export function sqlValueOfParam(value: Value): SqlValue {
  switch (value.kind) {
    case "integer":
    case "boolean":
    case "unixtime":
      return BigInt(value.value)
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

type SpecialColumn = "time" | "boolean" | "real" | "plain"

/** How a column's declared type affects the wire type of its values. */
export function specialColumnOf(declaredType: string | null | undefined): SpecialColumn {
  if (declaredType === null || declaredType === undefined || declaredType === "") return "plain"
  const upper = declaredType.toUpperCase()
  if (upper === "DATETIME" || upper === "DATE" || upper === "TIMESTAMP") return "time"
  if (upper === "BOOLEAN") return "boolean"
  if (!upper.includes("INT") && (upper.includes("REAL") || upper.includes("FLOA") || upper.includes("DOUB"))) return "real"
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
  if (typeof value === "number") {
    if (column !== "real" && Number.isSafeInteger(value)) return integerValue(BigInt(value), column)
    return { kind: "float", value }
  }
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
