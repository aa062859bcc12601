// Primitive encodings of dqlite's wire protocol v1: words, text, blobs, database values,
// parameter tuples and row tuples. All integers are little-endian; a word is 8 bytes.
//
// Representation choices (documented once, used everywhere in this folder):
// - u32 fields → `number`.
// - u64 fields → `bigint` (ids, flags, counters, rowids: any of the 2^64 values round-trips),
//   except a few small enumerations and counts decoded with `Reader.u64Safe`, which are `number`
//   and answer `OutOfRange` above 2^53 − 1.
// - int64 values inside tuples (INTEGER, UNIXTIME, BOOLEAN) → `Int64 = number | bigint` in
//   canonical form: a `number` exactly when the value is a safe integer (|v| ≤ 2^53 − 1), a
//   `bigint` otherwise. Every int64 has exactly one canonical form, so decode(encode(v)) === v for
//   canonical inputs; the encoder also accepts any integer-valued number or bigint in range.
// - text → `string`. Decoding replaces invalid UTF-8 with U+FFFD (never throws on it); encoding
//   refuses strings with a NUL or a lone surrogate (the wire cannot carry them exactly).
// - blob → `Uint8Array` (always a fresh copy, never a view into the message).
//
// Decoding never trusts a length: every read is checked against the bytes left, and every count
// is checked against the smallest size its items could have before anything is allocated.

import { assert } from "../../assert.ts"
import { ValueType, isParamValueType, isRowValueType, wordBytes } from "./codes.ts"
import { WireError } from "./errors.ts"
import type { Int64, Value } from "./values.ts"
import { canonicalInt64, int64ToBigInt } from "./values.ts"

const utf8Decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true })
const utf8Encoder = new TextEncoder()
const u64Max = 0xffffffffffffffffn
const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** `byteCount` rounded up to a whole number of words. */
export function paddedBytes(byteCount: number): number {
  const rest = byteCount % wordBytes
  return rest === 0 ? byteCount : byteCount + (wordBytes - rest)
}

/** Bytes a text takes on the wire: UTF-8, one NUL, zero padding to a word. `""` → 8. */
export function textWireBytes(value: string): number {
  return paddedBytes(utf8Encoder.encode(value).length + 1)
}

/** A bounds-checked cursor over one message body. Every method names the field it reads so a
 * failure says where the input went wrong. */
export class Reader {
  private readonly bytes: Uint8Array
  private readonly view: DataView
  private position = 0

  constructor(bytes: Uint8Array) {
    // A plain view: Buffer#slice would alias instead of copying.
    this.bytes = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  get offset(): number {
    return this.position
  }

  get remaining(): number {
    return this.bytes.byteLength - this.position
  }

  /** Reserve `count` bytes and return where they start, or throw `Truncated`. */
  private claim(count: number, field: string): number {
    if (count > this.remaining) {
      throw new WireError(
        "Truncated",
        field,
        `needs ${count} bytes at offset ${this.position}, ${this.remaining} left`
      )
    }
    const start = this.position
    this.position += count
    return start
  }

  u8(field: string): number {
    return this.view.getUint8(this.claim(1, field))
  }

  u32(field: string): number {
    return this.view.getUint32(this.claim(4, field), true)
  }

  u64(field: string): bigint {
    return this.view.getBigUint64(this.claim(8, field), true)
  }

  /** A u64 that must be a safe integer (small enumerations and counts). */
  u64Safe(field: string): number {
    const value = this.u64(field)
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new WireError("OutOfRange", field, `${value} is above 2^53 - 1`)
    }
    return Number(value)
  }

  /** The next u64 without consuming it (row markers). */
  peekU64(field: string): bigint {
    const start = this.claim(8, field)
    this.position = start
    return this.view.getBigUint64(start, true)
  }

  int64(field: string): Int64 {
    return canonicalInt64(this.view.getBigInt64(this.claim(8, field), true))
  }

  float64(field: string): number {
    return this.view.getFloat64(this.claim(8, field), true)
  }

  /** UTF-8 up to the first NUL, then skip to the next word boundary (relative to the text). */
  text(field: string): string {
    const nul = this.bytes.indexOf(0, this.position)
    if (nul === -1) {
      throw new WireError("UnterminatedText", field, `no NUL after offset ${this.position}`)
    }
    const length = nul - this.position
    const start = this.claim(paddedBytes(length + 1), field)
    return utf8Decoder.decode(this.bytes.subarray(start, start + length))
  }

  /** u64 length, the bytes, padding to a word. Padding content is never checked (C dqlite does
   * not zero it). */
  blob(field: string): Uint8Array {
    const length = this.u64(`${field}.length`)
    if (length > BigInt(this.remaining)) {
      throw new WireError("Truncated", field, `blob of ${length} bytes, ${this.remaining} left`)
    }
    const start = this.claim(paddedBytes(Number(length)), field)
    return this.bytes.slice(start, start + Number(length))
  }

  /** `count` raw bytes, copied. */
  raw(count: number, field: string): Uint8Array {
    const start = this.claim(count, field)
    return this.bytes.slice(start, start + count)
  }

  skip(count: number, field: string): void {
    this.claim(count, field)
  }
}

/** A growable little-endian writer. Messages start with 8 reserved header bytes
 * (`Writer.forMessage`) filled in by `finishMessage`, so a body is never copied twice. */
export class Writer {
  private buffer: Uint8Array
  private view: DataView
  private length = 0

  constructor(initialBytes = 256) {
    this.buffer = new Uint8Array(Math.max(initialBytes, 16))
    this.view = new DataView(this.buffer.buffer)
  }

  get byteLength(): number {
    return this.length
  }

  private reserve(count: number): number {
    const needed = this.length + count
    if (needed > this.buffer.byteLength) {
      let capacity = this.buffer.byteLength * 2
      while (capacity < needed) capacity *= 2
      const grown = new Uint8Array(capacity)
      grown.set(this.buffer.subarray(0, this.length))
      this.buffer = grown
      this.view = new DataView(grown.buffer)
    }
    const start = this.length
    this.length = needed
    return start
  }

  u8(value: number): void {
    const start = this.reserve(1)
    this.view.setUint8(start, value)
  }

  u32(value: number, field: string): void {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
      throw new WireError("Unencodable", field, `${value} is not a u32`)
    }
    const start = this.reserve(4)
    this.view.setUint32(start, value, true)
  }

  u64(value: bigint | number, field: string): void {
    const big = typeof value === "bigint" ? value : Number.isInteger(value) ? BigInt(value) : -1n
    if (big < 0n || big > u64Max) {
      throw new WireError("Unencodable", field, `${value} is not a u64`)
    }
    const start = this.reserve(8)
    this.view.setBigUint64(start, big, true)
  }

  int64(value: Int64, field: string): void {
    const big = int64ToBigInt(value, field)
    const start = this.reserve(8)
    this.view.setBigInt64(start, big, true)
  }

  float64(value: number): void {
    const start = this.reserve(8)
    this.view.setFloat64(start, value, true)
  }

  text(value: string, field: string): void {
    if (value.includes("\0")) {
      throw new WireError("Unencodable", field, "text contains a NUL character")
    }
    if (loneSurrogate.test(value)) {
      throw new WireError("Unencodable", field, "text contains a lone UTF-16 surrogate")
    }
    const encoded = utf8Encoder.encode(value)
    const start = this.reserve(paddedBytes(encoded.length + 1))
    this.buffer.set(encoded, start)
    this.buffer.fill(0, start + encoded.length, this.length)
  }

  blob(value: Uint8Array, field: string): void {
    this.u64(value.byteLength, `${field}.length`)
    const start = this.reserve(paddedBytes(value.byteLength))
    this.buffer.set(value, start)
    this.buffer.fill(0, start + value.byteLength, this.length)
  }

  /** Raw bytes, no length and no padding. */
  raw(value: Uint8Array): void {
    const start = this.reserve(value.byteLength)
    this.buffer.set(value, start)
  }

  zeros(count: number): void {
    const start = this.reserve(count)
    this.buffer.fill(0, start, this.length)
  }

  /** Forget everything after the first `length` bytes (undo a partly written item). */
  truncate(length: number): void {
    assert(Number.isInteger(length) && length >= 0 && length <= this.length, "truncate within what was written")
    this.length = length
  }

  /** A copy of everything written so far. */
  toBytes(): Uint8Array {
    return this.buffer.slice(0, this.length)
  }

  /** A writer whose first 8 bytes are the (not yet known) message header. */
  static forMessage(initialBytes = 256): Writer {
    const writer = new Writer(initialBytes)
    writer.zeros(8)
    return writer
  }

  /** Fill in the header of a writer made by `forMessage` and return the whole message. */
  finishMessage(type: number, schema: number): Uint8Array {
    const bodyBytes = this.length - 8
    if (bodyBytes < 0 || bodyBytes % wordBytes !== 0) {
      throw new WireError("Unencodable", "header", `body of ${bodyBytes} bytes is not whole words`)
    }
    const bodyWords = bodyBytes / wordBytes
    if (bodyWords > 0xffffffff) {
      throw new WireError("Unencodable", "header", `body of ${bodyWords} words exceeds u32`)
    }
    this.view.setUint32(0, bodyWords, true)
    this.view.setUint8(4, type)
    this.view.setUint8(5, schema)
    this.view.setUint16(6, 0, true)
    return this.toBytes()
  }
}

// ---------------------------------------------------------------------------------------------
// Values

export function writeValue(writer: Writer, value: Value, field: string): void {
  switch (value.kind) {
    case "integer":
    case "unixtime":
    case "boolean":
      return writer.int64(value.value, field)
    case "float":
      return writer.float64(value.value)
    case "text":
    case "iso8601":
      return writer.text(value.value, field)
    case "blob":
      return writer.blob(value.value, field)
    case "null":
      return writer.zeros(8)
  }
}

/** Decode one value of the given type code. The caller has checked the code is allowed. */
export function readValue(reader: Reader, code: number, field: string): Value {
  switch (code) {
    case ValueType.integer:
      return { kind: "integer", value: reader.int64(field) }
    case ValueType.float:
      return { kind: "float", value: reader.float64(field) }
    case ValueType.text:
      return { kind: "text", value: reader.text(field) }
    case ValueType.blob:
      return { kind: "blob", value: reader.blob(field) }
    case ValueType.null:
      reader.skip(8, field) // C writes 0; the content is ignored
      return { kind: "null" }
    case ValueType.unixtime:
      return { kind: "unixtime", value: reader.int64(field) }
    case ValueType.iso8601:
      return { kind: "iso8601", value: reader.text(field) }
    case ValueType.boolean:
      return { kind: "boolean", value: reader.int64(field) }
    default:
      throw new WireError("BadValueType", field, `unknown value type ${code}`)
  }
}

export function valueTypeCode(value: Value): number {
  return ValueType[value.kind]
}

// ---------------------------------------------------------------------------------------------
// Parameter tuples (EXEC, QUERY, EXEC_SQL, QUERY_SQL)

/** Bytes of a parameter tuple's header, count field included: count (1 byte at schema 0, 4 at
 * schema 1) and one type byte per value, padded to a word. */
export function paramsHeaderBytes(count: number, schema: 0 | 1): number {
  return paddedBytes((schema === 0 ? 1 : 4) + count)
}

/** The schema a request needs to carry `count` parameters: 0 up to 255, else 1. */
export function paramsSchemaFor(count: number): 0 | 1 {
  return count <= 0xff ? 0 : 1
}

/** Write a parameter tuple. No values → no bytes at all, as go-dqlite and dqlite-wire send. */
export function writeParams(
  writer: Writer,
  values: ReadonlyArray<Value>,
  schema: 0 | 1,
  field = "params"
): void {
  const count = values.length
  if (count === 0) return
  if (schema === 0 && count > 0xff) {
    throw new WireError("Unencodable", field, `${count} parameters need schema 1`)
  }
  if (count > 0xffffffff) {
    throw new WireError("Unencodable", field, `${count} parameters exceed u32`)
  }
  const countBytes = schema === 0 ? 1 : 4
  if (schema === 0) writer.u8(count)
  else writer.u32(count, `${field}.count`)
  values.forEach((value, index) => {
    if (!isParamValueType(valueTypeCode(value))) {
      throw new WireError("Unencodable", `${field}[${index}]`, `${value.kind} is not a parameter type`)
    }
    writer.u8(valueTypeCode(value))
  })
  writer.zeros(paddedBytes(countBytes + count) - countBytes - count)
  values.forEach((value, index) => writeValue(writer, value, `${field}[${index}]`))
}

/** Read a parameter tuple from the rest of the body. No bytes left → no parameters (the common
 * form); otherwise the count, the types and the values. Padding bytes are ignored (go-dqlite
 * leaves garbage there). UNIXTIME and unknown type codes → `BadValueType`, as C rejects them. */
export function readParams(reader: Reader, schema: 0 | 1, field = "params"): Array<Value> {
  if (reader.remaining === 0) return []
  const countBytes = schema === 0 ? 1 : 4
  const count = schema === 0 ? reader.u8(`${field}.count`) : reader.u32(`${field}.count`)
  const typesBytes = paddedBytes(countBytes + count) - countBytes
  // Every value takes at least one word: reject an impossible count before allocating.
  if (typesBytes + count * wordBytes > reader.remaining) {
    throw new WireError(
      "Truncated",
      field,
      `${count} parameters cannot fit in the ${reader.remaining} bytes left`
    )
  }
  const types = reader.raw(typesBytes, `${field}.types`)
  const values: Array<Value> = []
  for (let index = 0; index < count; index++) {
    const code = types[index] ?? 0
    const valueField = `${field}[${index}]`
    if (!isParamValueType(code)) {
      throw new WireError("BadValueType", valueField, `type ${code} is not allowed in parameters`)
    }
    values.push(readValue(reader, code, valueField))
  }
  return values
}

// ---------------------------------------------------------------------------------------------
// Row tuples (ROWS)

/** Bytes of a row header: one 4-bit type per column, padded to a word. */
export function rowHeaderBytes(columnCount: number): number {
  return paddedBytes(Math.ceil(columnCount / 2))
}

/** Write one row: the nibble header (column 2k in the low nibble of byte k, 2k+1 in the high
 * nibble, padding zeroed), then each value in column order. */
export function writeRow(writer: Writer, values: ReadonlyArray<Value>, field = "row"): void {
  const header = new Uint8Array(rowHeaderBytes(values.length))
  values.forEach((value, index) => {
    const code = valueTypeCode(value)
    const byteIndex = index >> 1
    header[byteIndex] = (header[byteIndex] ?? 0) | (index % 2 === 0 ? code : code << 4)
  })
  writer.raw(header)
  values.forEach((value, index) => writeValue(writer, value, `${field}[${index}]`))
}

/** Read one row of `columnCount` values. Padding nibbles are ignored; a type outside the row
 * set (1–5, 9–11) → `BadValueType` (that includes a partial 0xee/0xff marker). */
export function readRow(reader: Reader, columnCount: number, field = "row"): Array<Value> {
  const headerBytes = rowHeaderBytes(columnCount)
  if (headerBytes + columnCount * wordBytes > reader.remaining) {
    throw new WireError("Truncated", field, `a row of ${columnCount} columns cannot fit`)
  }
  const header = reader.raw(headerBytes, `${field}.header`)
  const values: Array<Value> = []
  for (let index = 0; index < columnCount; index++) {
    const byte = header[index >> 1] ?? 0
    const code = index % 2 === 0 ? byte & 0x0f : byte >> 4
    const valueField = `${field}[${index}]`
    if (!isRowValueType(code)) {
      throw new WireError("BadValueType", valueField, `type ${code} is not allowed in rows`)
    }
    values.push(readValue(reader, code, valueField))
  }
  return values
}
