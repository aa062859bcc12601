// Values on the local route, made identical to what the wire route gives: parameters go through
// the client's encoding and the gateway's decoding (a safe-integer number binds as INTEGER, a
// boolean as 0/1, a Date as go-dqlite's ISO8601 text), rows through the gateway's type choice
// and the client's decoding (BOOLEAN columns give booleans, DATETIME integers Dates). A program
// therefore sees the same values whether its node leads or routes to the leader.
import { InvalidArgument } from "../net/client/errors.ts"
import type { ParamValue, Row, RowValue } from "../net/client/values.ts"
import { paramOf, rowValueOf } from "../net/client/values.ts"
import { specialColumnOf, sqlValueOfParam, wireValueOfSql } from "../net/gateway/sqlValues.ts"
import type { Rows, SqlValue } from "../sqlite/Sql.ts"
import { parameterMismatchCode, SqlError } from "./errors.ts"

export interface QueryResult {
  readonly columns: ReadonlyArray<string>
  readonly rows: ReadonlyArray<Row>
}

/** Parameters as the local SQL surface binds them; a value no SQL type fits is a SqlError. */
export function localParams(params: ReadonlyArray<ParamValue>): SqlValue[] | SqlError {
  try {
    return params.map((value, index) => sqlValueOfParam(paramOf(value, index)))
  } catch (error) {
    return new SqlError({ code: parameterMismatchCode, message: error instanceof InvalidArgument ? error.detail : String(error) })
  }
}

/** Rows of the local SQL surface as the wire client would have decoded them. */
export function localRows(rows: Rows): QueryResult {
  const kinds = rows.columns.map((_, i) => specialColumnOf(rows.declaredTypes[i]))
  return {
    columns: rows.columns,
    rows: rows.rows.map((row) => row.map((value, i) => plainBytes(rowValueOf(wireValueOfSql(value, kinds[i] ?? "plain")))))
  }
}

/** better-sqlite3 gives Buffers; the wire route gives plain Uint8Arrays (same bytes, no copy). */
function plainBytes(value: RowValue): RowValue {
  return Buffer.isBuffer(value) ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength) : value
}
