// Database values as they travel in parameter tuples and rows, and the canonical int64 form.

import { WireError } from "./errors.ts"

/** A 64-bit signed integer. Canonical form: a `number` exactly when the value is a safe integer
 * (−(2^53 − 1) … 2^53 − 1), otherwise a `bigint`. Decoders always return the canonical form, so
 * every int64 round-trips with `toEqual`/`Object.is`; encoders accept any integer-valued number
 * or bigint within int64 and normalise it. */
export type Int64 = number | bigint

export const int64Min = -(2n ** 63n)
export const int64Max = 2n ** 63n - 1n
const safeMin = BigInt(Number.MIN_SAFE_INTEGER)
const safeMax = BigInt(Number.MAX_SAFE_INTEGER)

export function canonicalInt64(value: bigint): Int64 {
  return value >= safeMin && value <= safeMax ? Number(value) : value
}

/** The exact bigint of an int64, or `Unencodable` (fraction, NaN, ±Infinity, out of range). */
export function int64ToBigInt(value: Int64, field: string): bigint {
  if (typeof value === "number" && !Number.isInteger(value)) {
    throw new WireError("Unencodable", field, `${value} is not an integer`)
  }
  const big = typeof value === "bigint" ? value : BigInt(value)
  if (big < int64Min || big > int64Max) {
    throw new WireError("Unencodable", field, `${value} is outside int64`)
  }
  return big
}

/** A value in a parameter tuple or a row. `kind` names the wire type (codes.ts `ValueType`).
 * - integer: SQLite INTEGER.
 * - float: IEEE-754 double (NaN and −0 keep their bit patterns up to JS's NaN canonicalisation).
 * - text: UTF-8 text without NUL.
 * - blob: bytes.
 * - null: one word on the wire (content ignored).
 * - unixtime: seconds since the epoch; rows only (C rejects it in parameters).
 * - iso8601: a date/time as text (C sends `""` for a NULL in a DATETIME column).
 * - boolean: the raw int64 (5 stays 5); clients read non-zero as true. */
export interface IntegerValue {
  readonly kind: "integer"
  readonly value: Int64
}
export interface FloatValue {
  readonly kind: "float"
  readonly value: number
}
export interface TextValue {
  readonly kind: "text"
  readonly value: string
}
export interface BlobValue {
  readonly kind: "blob"
  readonly value: Uint8Array
}
export interface NullValue {
  readonly kind: "null"
}
export interface UnixtimeValue {
  readonly kind: "unixtime"
  readonly value: Int64
}
export interface Iso8601Value {
  readonly kind: "iso8601"
  readonly value: string
}
export interface BooleanValue {
  readonly kind: "boolean"
  readonly value: Int64
}

export type Value =
  | IntegerValue
  | FloatValue
  | TextValue
  | BlobValue
  | NullValue
  | UnixtimeValue
  | Iso8601Value
  | BooleanValue

export type ValueKind = Value["kind"]

/** Constructors that normalise integers to the canonical Int64 form. */
export const Values = {
  integer: (value: Int64): IntegerValue => ({ kind: "integer", value: canonicalInt64(int64ToBigInt(value, "integer")) }),
  float: (value: number): FloatValue => ({ kind: "float", value }),
  text: (value: string): TextValue => ({ kind: "text", value }),
  blob: (value: Uint8Array): BlobValue => ({ kind: "blob", value }),
  null: Object.freeze({ kind: "null" }) as NullValue,
  unixtime: (seconds: Int64): UnixtimeValue => ({ kind: "unixtime", value: canonicalInt64(int64ToBigInt(seconds, "unixtime")) }),
  iso8601: (value: string): Iso8601Value => ({ kind: "iso8601", value }),
  /** Booleans as clients send them: 1 or 0; an Int64 is kept raw. */
  boolean: (value: boolean | Int64): BooleanValue => ({
    kind: "boolean",
    value: typeof value === "boolean" ? (value ? 1 : 0) : canonicalInt64(int64ToBigInt(value, "boolean"))
  })
} as const
