// JavaScript values ↔ the wire's typed values, for parameters and rows.
//
// Parameters: null/undefined → NULL; boolean → BOOLEAN; a number → INTEGER when it is a safe
// integer (and not −0), FLOAT otherwise; bigint → INTEGER (must fit int64); string → TEXT;
// Uint8Array → BLOB; Date → ISO8601 text in the layout go-dqlite sends
// ("2006-01-02 15:04:05.999-07:00", here always UTC); a codec `Value` (`Values.float(2)`) is sent
// as it is, to force a type.
// Rows: INTEGER → number when safe, bigint beyond 2^53; FLOAT → number; TEXT → string;
// BLOB → Uint8Array; NULL → null; UNIXTIME → Date; ISO8601 → its text ("" → null); BOOLEAN → boolean.
import type { Value } from "../protocol/values.ts"
import { canonicalInt64, int64Max, int64Min } from "../protocol/values.ts"
import { InvalidArgument } from "./errors.ts"

export type ParamValue = null | undefined | boolean | number | bigint | string | Uint8Array | Date | Value
export type RowValue = null | boolean | number | bigint | string | Uint8Array | Date
export type Row = ReadonlyArray<RowValue>

const valueKinds = new Set(["integer", "float", "text", "blob", "null", "unixtime", "iso8601", "boolean"])

function isValue(value: object): value is Value {
  return "kind" in value && typeof value.kind === "string" && valueKinds.has(value.kind)
}

const pad = (n: number, width = 2) => String(n).padStart(width, "0")

/** go-dqlite's time layout, in UTC. */
export function formatTime(date: Date): string {
  return `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())} ` +
    `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())}.${pad(date.getUTCMilliseconds(), 3)}+00:00`
}

export function paramOf(value: ParamValue, index: number): Value {
  if (value === null || value === undefined) return { kind: "null" }
  switch (typeof value) {
    case "boolean":
      return { kind: "boolean", value: value ? 1 : 0 }
    case "number":
      return Number.isSafeInteger(value) && !Object.is(value, -0) ? { kind: "integer", value } : { kind: "float", value }
    case "bigint":
      if (value < int64Min || value > int64Max) throw new InvalidArgument({ detail: `parameter ${index + 1}: ${value} is outside int64` })
      return { kind: "integer", value: canonicalInt64(value) }
    case "string":
      if (value.includes("\0")) throw new InvalidArgument({ detail: `parameter ${index + 1}: text contains a NUL character` })
      return { kind: "text", value }
    default:
      break
  }
  if (value instanceof Uint8Array) return { kind: "blob", value }
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new InvalidArgument({ detail: `parameter ${index + 1}: invalid Date` })
    return { kind: "iso8601", value: formatTime(value) }
  }
  if (typeof value === "object" && isValue(value)) {
    if (value.kind === "unixtime") throw new InvalidArgument({ detail: `parameter ${index + 1}: UNIXTIME is not a parameter type` })
    return value
  }
  throw new InvalidArgument({ detail: `parameter ${index + 1}: ${String(value)} is not a SQL value` })
}

export function paramsOf(values: ReadonlyArray<ParamValue>): Array<Value> {
  return values.map(paramOf)
}

export function rowValueOf(value: Value): RowValue {
  switch (value.kind) {
    case "integer":
    case "float":
      return value.value
    case "text":
      return value.value
    case "blob":
      return value.value
    case "null":
      return null
    case "unixtime":
      return new Date(Number(value.value) * 1000)
    case "iso8601":
      return value.value === "" ? null : value.value
    case "boolean":
      return value.value !== 0 && value.value !== 0n
  }
}
