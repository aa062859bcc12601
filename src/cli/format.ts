// How the CLI prints results: an aligned text table, a JSON array of objects, or CSV (RFC 4180).
// Small code rather than a table or CSV library: together the three are a few dozen lines, and
// the part that matters — how NULL, blobs, 64-bit integers and non-finite floats look — would be
// ours to decide anyway.
//
// Values as the client returns them (src/net/client/values.ts):
// - NULL: table `NULL`, JSON null, CSV an empty field (as sqlite3 -csv).
// - integers: exact decimal digits, also beyond 2^53 (bigint); in JSON a bare number literal, so
//   a reader that parses big numbers exactly gets them exactly.
// - floats: JavaScript's shortest round-trip form; ±Infinity as `Inf`/`-Inf` (JSON strings).
// - blobs: a SQL hex literal X'00ff' (a JSON string), which can be pasted back into SQL.
// - booleans (BOOLEAN columns): 1/0 in table and CSV, true/false in JSON; dates: ISO 8601.
import type { Row, RowValue } from "../net/client/values.ts"

export type OutputFormat = "table" | "json" | "csv"

export const outputFormats: ReadonlyArray<OutputFormat> = ["table", "json", "csv"]

export function isOutputFormat(text: string): text is OutputFormat {
  return (outputFormats as ReadonlyArray<string>).includes(text)
}

export function hexLiteral(bytes: Uint8Array): string {
  return `X'${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex").toUpperCase()}'`
}

function floatText(value: number): string {
  if (value === Infinity) return "Inf"
  if (value === -Infinity) return "-Inf"
  return String(value)
}

/** A value as text for the table and CSV formats (null stays null: each format says it). */
export function valueText(value: RowValue): string | null {
  if (value === null) return null
  switch (typeof value) {
    case "number":
      return floatText(value)
    case "bigint":
      return value.toString()
    case "string":
      return value
    case "boolean":
      return value ? "1" : "0"
    default:
      return value instanceof Date ? value.toISOString() : hexLiteral(value)
  }
}

/** A value as a JSON literal (bigints as bare digits, which JSON.stringify cannot write). */
export function jsonValue(value: RowValue | ReadonlyArray<unknown> | Record<string, unknown>): string {
  if (value === null) return "null"
  switch (typeof value) {
    case "number":
      return Number.isFinite(value) ? JSON.stringify(value) : JSON.stringify(floatText(value))
    case "bigint":
      return value.toString()
    case "string":
    case "boolean":
      return JSON.stringify(value)
    default:
      break
  }
  if (value instanceof Date) return JSON.stringify(value.toISOString())
  if (value instanceof Uint8Array) return JSON.stringify(hexLiteral(value))
  if (Array.isArray(value)) return `[${value.map((v) => jsonValue(v as RowValue)).join(",")}]`
  return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}:${jsonValue(v as RowValue)}`).join(",")}}`
}

/** RFC 4180: a field with a comma, quote, CR or LF is quoted, its quotes doubled. */
export function csvField(text: string): string {
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, "\"\"")}"` : text
}

/** Lines end with CRLF, as RFC 4180 says. */
export function formatCsv(columns: ReadonlyArray<string>, rows: ReadonlyArray<Row>): string {
  const line = (fields: ReadonlyArray<string>) => `${fields.map(csvField).join(",")}\r\n`
  return line(columns) + rows.map((row) => line(row.map((v) => valueText(v) ?? ""))).join("")
}

/** One object per row, keyed by column name (a repeated name: the last value wins, as in most
 * JSON readers), as one array; each row on its own line. */
export function formatJson(columns: ReadonlyArray<string>, rows: ReadonlyArray<Row>): string {
  if (rows.length === 0) return "[]\n"
  const objects = rows.map((row) => `{${columns.map((c, i) => `${JSON.stringify(c)}:${jsonValue(row[i] ?? null)}`).join(",")}}`)
  return `[\n${objects.join(",\n")}\n]\n`
}

/** Character cells a string takes (wide East Asian characters and emoji take two). */
function displayWidth(text: string): number {
  let width = 0
  for (const char of text) {
    const code = char.codePointAt(0) ?? 0
    if (code < 0x20 || (code >= 0x300 && code < 0x370)) continue
    width += code >= 0x1100 && (code <= 0x115f || (code >= 0x2e80 && code <= 0xa4cf) || (code >= 0xac00 && code <= 0xd7a3) ||
        (code >= 0xf900 && code <= 0xfaff) || (code >= 0xfe30 && code <= 0xfe4f) || (code >= 0xff00 && code <= 0xff60) ||
        (code >= 0xffe0 && code <= 0xffe6) || (code >= 0x1f300 && code <= 0x1faff) || (code >= 0x20000 && code <= 0x3fffd))
      ? 2
      : 1
  }
  return width
}

/** Control characters would break the alignment (and the terminal): shown escaped. */
function cellText(value: RowValue): string {
  const text = valueText(value) ?? "NULL"
  return text.replace(/[\x00-\x1f\x7f]/g, (c) => c === "\n" ? "\\n" : c === "\t" ? "\\t" : c === "\r" ? "\\r" : `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)
}

/** Columns padded to their widest cell, numbers right-aligned, a rule under the header. */
export function formatTable(columns: ReadonlyArray<string>, rows: ReadonlyArray<Row>): string {
  if (columns.length === 0) return ""
  const cells = rows.map((row) => columns.map((_, i) => cellText(row[i] ?? null)))
  const numeric = columns.map((_, i) => rows.length > 0 && rows.every((row) => { const v = row[i]; return typeof v === "number" || typeof v === "bigint" || v === null }))
  const widths = columns.map((c, i) => Math.max(displayWidth(c), ...cells.map((r) => displayWidth(r[i]!))))
  const pad = (text: string, i: number) => {
    const fill = " ".repeat(widths[i]! - displayWidth(text))
    return numeric[i] ? fill + text : text + fill
  }
  const line = (fields: ReadonlyArray<string>) => `${fields.map(pad).join(" | ").trimEnd()}\n`
  return line(columns) + `${widths.map((w) => "-".repeat(w)).join("-+-")}\n` + cells.map(line).join("")
}

export function formatRows(format: OutputFormat, columns: ReadonlyArray<string>, rows: ReadonlyArray<Row>): string {
  switch (format) {
    case "table":
      return formatTable(columns, rows)
    case "json":
      return formatJson(columns, rows)
    case "csv":
      return formatCsv(columns, rows)
  }
}

/** What a statement that returns no rows did. */
export function formatChange(format: OutputFormat, rowsAffected: bigint, lastInsertId: bigint): string {
  switch (format) {
    case "table":
      return `rows affected: ${rowsAffected}, last insert id: ${lastInsertId}\n`
    case "json":
      return `{"rowsAffected":${rowsAffected},"lastInsertId":${lastInsertId}}\n`
    case "csv":
      return `rows_affected,last_insert_id\r\n${rowsAffected},${lastInsertId}\r\n`
  }
}
