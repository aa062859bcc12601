// The one error the codec throws. Decoding untrusted bytes never throws anything else: every
// read is bounds-checked first. Encoding throws it for data the wire cannot carry (a NUL inside a
// text, an integer outside int64, more than 255 parameters at schema 0, …). Programming errors
// (bad options) are assertions instead (src/assert.ts).

/** Why a message could not be decoded or encoded. Callers react per reason:
 * - `Truncated`: the input ended inside a field (or a tuple/row/list announced more than fits).
 * - `TooLarge`: a header announced a message above the configured maximum (stream unusable).
 * - `UnterminatedText`: no NUL before the end of the body.
 * - `UnknownType`: a message type code this side does not know.
 * - `UnsupportedSchema`: a schema byte the message type does not have.
 * - `BadValueType`: a value type code that is not allowed at that place.
 * - `BadMarker`: a ROWS body whose next word is neither a row nor a full DONE/PART marker.
 * - `OutOfRange`: a number that is valid on the wire but outside what the field can mean here
 *   (e.g. a u64 format code above 2^53 − 1).
 * - `Unencodable`: the encoder was given data the wire cannot represent. */
export type WireErrorReason =
  | "Truncated"
  | "TooLarge"
  | "UnterminatedText"
  | "UnknownType"
  | "UnsupportedSchema"
  | "BadValueType"
  | "BadMarker"
  | "OutOfRange"
  | "Unencodable"

export class WireError extends Error {
  readonly _tag = "WireError"
  override readonly name = "WireError"
  readonly reason: WireErrorReason
  /** The field being read or written, e.g. `"exec_sql.sql"` or `"params"`; lets a server tell a
   * bad parameter tuple (dqlite answers "bind parameters") from a bad fixed field. */
  readonly field: string

  constructor(reason: WireErrorReason, field: string, detail: string) {
    super(`${reason} at ${field}: ${detail}`)
    this.reason = reason
    this.field = field
  }
}

export function isWireError(error: unknown): error is WireError {
  return error instanceof WireError
}
