// Responses (server → client): one tagged union, an encoder (the server) and a decoder for
// untrusted frames (tests, and later the TypeScript client). Layouts per fact sheet §6 and §4.3,
// checked against canonical/dqlite src/response.h, src/query.c, src/gateway.c and go-dqlite
// v1.11.5 internal/protocol/message.go.
//
// Two responses cannot be told apart by their type code alone, so the decoder takes options:
// - SERVER (code 1) carries `{id, address}` on protocol v1 but only the address on the legacy
//   protocol (`protocol: "legacy"`);
// - SERVERS carries roles only when the CLUSTER request asked for format 1 (`serversFormat`).
// STMT carries the tail offset exactly when its header says schema 1. Other schema bytes are
// ignored on responses (dqlite 1.11 writes 0 always). Bytes after the last field are ignored.

import { ResponseType, headerBytes, rowsDoneMarker, rowsPartMarker, wordBytes } from "./codes.ts"
import type { FailureText, ResponseTypeCode } from "./codes.ts"
import { Failures } from "./codes.ts"
import { WireError } from "./errors.ts"
import type { Frame } from "./framing.ts"
import { encodeHeader } from "./framing.ts"
import type { Value } from "./values.ts"
import { Reader, Writer, readRow, writeRow } from "./wire.ts"

export interface FailureResponse {
  readonly kind: "failure"
  /** SQLite (extended) code or dqlite code, see codes.ts `ErrorCode`. */
  readonly code: number
  readonly message: string
}
/** LEADER answer on protocol v1: the leader's id and address, or (0, "") if unknown. */
export interface ServerResponse {
  readonly kind: "server"
  readonly nodeId: bigint
  readonly address: string
}
/** LEADER answer on the legacy protocol: the address only. Same type code as SERVER. */
export interface ServerLegacyResponse {
  readonly kind: "serverLegacy"
  readonly address: string
}
export interface WelcomeResponse {
  readonly kind: "welcome"
  readonly heartbeatTimeoutMs: number
}
export interface ServerInfoV0 {
  readonly nodeId: bigint
  readonly address: string
}
export interface ServerInfo extends ServerInfoV0 {
  /** 0 voter, 1 standby, 2 spare. */
  readonly role: number
}
export type ServersResponse =
  | { readonly kind: "servers"; readonly format: 0; readonly servers: ReadonlyArray<ServerInfoV0> }
  | { readonly kind: "servers"; readonly format: 1; readonly servers: ReadonlyArray<ServerInfo> }
export interface DbResponse {
  readonly kind: "db"
  readonly dbId: number
}
export interface StmtResponse {
  readonly kind: "stmt"
  readonly dbId: number
  readonly stmtId: number
  /** SQLite's bind-parameter count (highest index). */
  readonly paramCount: number
  /** Byte offset of the unprepared tail (answer to a schema-1 PREPARE, sent with schema 1), or
   * `null` for the plain schema-0 form. */
  readonly tailOffset: number | null
}
export interface ResultResponse {
  readonly kind: "result"
  /** `last_insert_rowid()` as u64 (a negative rowid arrives as its two's complement). */
  readonly lastInsertId: bigint
  readonly rowsAffected: bigint
}
export interface RowsResponse {
  readonly kind: "rows"
  /** Column names; repeated in every batch of a multi-batch result. */
  readonly columns: ReadonlyArray<string>
  readonly rows: ReadonlyArray<ReadonlyArray<Value>>
  /** "done": result complete; "part": another ROWS message follows unprompted. */
  readonly end: "done" | "part"
}
export interface EmptyResponse {
  readonly kind: "empty"
}
export interface DumpFile {
  readonly name: string
  readonly data: Uint8Array
}
export interface FilesResponse {
  readonly kind: "files"
  readonly files: ReadonlyArray<DumpFile>
}
export interface MetadataResponse {
  readonly kind: "metadata"
  readonly failureDomain: bigint
  readonly weight: bigint
}

export type Response =
  | FailureResponse
  | ServerResponse
  | ServerLegacyResponse
  | WelcomeResponse
  | ServersResponse
  | DbResponse
  | StmtResponse
  | ResultResponse
  | RowsResponse
  | EmptyResponse
  | FilesResponse
  | MetadataResponse

export type ResponseKind = Response["kind"]

export function responseTypeCode(response: Response): ResponseTypeCode {
  return response.kind === "serverLegacy" ? ResponseType.server : ResponseType[response.kind]
}

export function responseSchema(response: Response): 0 | 1 {
  return response.kind === "stmt" && response.tailOffset !== null ? 1 : 0
}

/** A FAILURE response from a code and message (e.g. `failure(Failures.notLeader)`). */
export function failure(text: FailureText): FailureResponse {
  return { kind: "failure", code: text.code, message: text.message }
}

/** What dqlite sends to a non-leader asked to do leader work: FAILURE 10250 "not leader". */
export const notLeaderFailure: FailureResponse = failure(Failures.notLeader)
/** What dqlite sends when leadership is lost while a write is in flight: 10506. */
export const leadershipLostFailure: FailureResponse = failure(Failures.leadershipLost)

// ---------------------------------------------------------------------------------------------
// Encoding

/** Encode a response as one whole message (header + body). */
export function encodeResponse(response: Response): Uint8Array {
  if (response.kind === "rows") return encodeRows(response)
  const w = Writer.forMessage()
  writeResponseBody(w, response)
  return w.finishMessage(responseTypeCode(response), responseSchema(response))
}

function writeResponseBody(w: Writer, response: Exclude<Response, RowsResponse>): void {
  switch (response.kind) {
    case "failure":
      w.u64(response.code, "failure.code")
      return w.text(response.message, "failure.message")
    case "server":
      w.u64(response.nodeId, "server.id")
      return w.text(response.address, "server.address")
    case "serverLegacy":
      return w.text(response.address, "server.address")
    case "welcome":
      return w.u64(response.heartbeatTimeoutMs, "welcome.heartbeat_timeout")
    case "servers":
      return writeServers(w, response)
    case "db":
      w.u32(response.dbId, "db.id")
      return w.u32(0, "db.pad")
    case "stmt":
      w.u32(response.dbId, "stmt.db_id")
      w.u32(response.stmtId, "stmt.id")
      w.u64(response.paramCount, "stmt.params")
      if (response.tailOffset !== null) w.u64(response.tailOffset, "stmt.offset")
      return
    case "result":
      w.u64(response.lastInsertId, "result.last_insert_id")
      return w.u64(response.rowsAffected, "result.rows_affected")
    case "empty":
      return w.zeros(8)
    case "files":
      return writeFiles(w, response)
    case "metadata":
      w.u64(response.failureDomain, "metadata.failure_domain")
      return w.u64(response.weight, "metadata.weight")
  }
}

function writeServers(w: Writer, response: ServersResponse): void {
  w.u64(response.servers.length, "servers.n")
  response.servers.forEach((server, index) => {
    w.u64(server.nodeId, `servers[${index}].id`)
    w.text(server.address, `servers[${index}].address`)
    if (response.format === 1) w.u64((server as ServerInfo).role, `servers[${index}].role`)
  })
}

/** FILES: name, u64 size, the raw bytes with **no** padding. go-dqlite 1.11.5 does not skip
 * padding, so every size must already be a multiple of 8 (SQLite pages and WALs are). */
function writeFiles(w: Writer, response: FilesResponse): void {
  w.u64(response.files.length, "files.n")
  response.files.forEach((file, index) => {
    if (file.data.byteLength % wordBytes !== 0) {
      throw new WireError("Unencodable", `files[${index}].data`, `${file.data.byteLength} bytes is not a multiple of 8`)
    }
    w.text(file.name, `files[${index}].name`)
    w.u64(file.data.byteLength, `files[${index}].size`)
    w.raw(file.data)
  })
}

/** A FILES message whose file contents are sent separately (streamed): the pieces that go
 * before each file's bytes — piece 0 is the header, the count, the first name and size; piece i
 * the i-th name and size. Writing piece 0, then file 0's `sizeBytes` bytes, piece 1, file 1's
 * bytes… gives the same message `encodeResponse` gives for the whole files. */
export function encodeFilesPieces(files: ReadonlyArray<{ readonly name: string; readonly sizeBytes: number }>): ReadonlyArray<Uint8Array> {
  const pieces: Array<Writer> = []
  let bodyBytes = 0
  files.forEach((file, index) => {
    if (!Number.isSafeInteger(file.sizeBytes) || file.sizeBytes < 0 || file.sizeBytes % wordBytes !== 0) {
      throw new WireError("Unencodable", `files[${index}].data`, `${file.sizeBytes} bytes is not a multiple of 8`)
    }
    const w = index === 0 ? Writer.forMessage() : new Writer()
    if (index === 0) w.u64(files.length, "files.n")
    w.text(file.name, `files[${index}].name`)
    w.u64(file.sizeBytes, `files[${index}].size`)
    bodyBytes += w.byteLength - (index === 0 ? headerBytes : 0) + file.sizeBytes
    pieces.push(w)
  })
  if (pieces.length === 0) return [encodeResponse({ kind: "files", files: [] })]
  const bodyWords = bodyBytes / wordBytes
  if (bodyWords > 0xffffffff) throw new WireError("Unencodable", "header", `body of ${bodyWords} words exceeds u32`)
  const first = pieces[0]!.toBytes()
  first.set(encodeHeader({ bodyWords, type: ResponseType.files, schema: 0 }), 0)
  return [first, ...pieces.slice(1).map((w) => w.toBytes())]
}

function encodeRows(response: RowsResponse): Uint8Array {
  const writer = new RowsWriter(response.columns)
  for (const row of response.rows) writer.appendRow(row)
  return writer.finish(response.end)
}

/** Builds one ROWS message row by row, for paging: the server appends rows while
 * `messageBytes < rowsBatchBytesTarget`, then finishes with "part" (more follows) or "done".
 * A row that fails to encode leaves the message as it was before that row. */
export class RowsWriter {
  readonly columnCount: number
  private readonly writer: Writer
  private rowCountWritten = 0
  private finished = false

  constructor(columns: ReadonlyArray<string>) {
    this.columnCount = columns.length
    this.writer = Writer.forMessage(4096 + 512)
    this.writer.u64(columns.length, "rows.column_count")
    columns.forEach((name, index) => this.writer.text(name, `rows.columns[${index}]`))
  }

  /** Bytes of the message so far, header included, marker not yet included. */
  get messageBytes(): number {
    return this.writer.byteLength
  }

  get rowCount(): number {
    return this.rowCountWritten
  }

  appendRow(values: ReadonlyArray<Value>): void {
    const field = `rows[${this.rowCountWritten}]`
    if (this.finished) throw new WireError("Unencodable", field, "the message is already finished")
    if (this.columnCount === 0) {
      throw new WireError("Unencodable", field, "a result without columns cannot carry rows")
    }
    if (values.length !== this.columnCount) {
      throw new WireError("Unencodable", field, `${values.length} values for ${this.columnCount} columns`)
    }
    const before = this.writer.byteLength
    try {
      writeRow(this.writer, values, field)
    } catch (error) {
      this.writer.truncate(before)
      throw error
    }
    this.rowCountWritten += 1
  }

  /** Append the full 8-byte marker and return the whole message. */
  finish(end: "done" | "part"): Uint8Array {
    if (this.finished) throw new WireError("Unencodable", "rows.marker", "the message is already finished")
    this.finished = true
    this.writer.u64(end === "done" ? rowsDoneMarker : rowsPartMarker, "rows.marker")
    return this.writer.finishMessage(ResponseType.rows, 0)
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding

export interface ResponseDecodeOptions {
  /** Protocol of the connection: decides the shape of SERVER. Default "v1". */
  readonly protocol?: "v1" | "legacy"
  /** Format of the CLUSTER request this SERVERS answers. Default 1 (what clients send). */
  readonly serversFormat?: 0 | 1
}

/** Decode one response frame. Throws only `WireError`. */
export function decodeResponse(frame: Frame, options: ResponseDecodeOptions = {}): Response {
  const r = new Reader(frame.body)
  switch (frame.type) {
    case ResponseType.failure:
      return { kind: "failure", code: r.u64Safe("failure.code"), message: r.text("failure.message") }
    case ResponseType.server:
      if (options.protocol === "legacy") return { kind: "serverLegacy", address: r.text("server.address") }
      return { kind: "server", nodeId: r.u64("server.id"), address: r.text("server.address") }
    case ResponseType.welcome:
      return { kind: "welcome", heartbeatTimeoutMs: r.u64Safe("welcome.heartbeat_timeout") }
    case ResponseType.servers:
      return readServers(r, options.serversFormat ?? 1)
    case ResponseType.db: {
      const dbId = r.u32("db.id")
      r.skip(4, "db.pad")
      return { kind: "db", dbId }
    }
    case ResponseType.stmt: {
      const dbId = r.u32("stmt.db_id")
      const stmtId = r.u32("stmt.id")
      const paramCount = r.u64Safe("stmt.params")
      const tailOffset = frame.schema === 1 ? r.u64Safe("stmt.offset") : null
      return { kind: "stmt", dbId, stmtId, paramCount, tailOffset }
    }
    case ResponseType.result:
      return { kind: "result", lastInsertId: r.u64("result.last_insert_id"), rowsAffected: r.u64("result.rows_affected") }
    case ResponseType.rows:
      return readRows(r)
    case ResponseType.empty:
      r.skip(8, "empty.unused")
      return { kind: "empty" }
    case ResponseType.files:
      return readFiles(r)
    case ResponseType.metadata:
      return { kind: "metadata", failureDomain: r.u64("metadata.failure_domain"), weight: r.u64("metadata.weight") }
    default:
      throw new WireError("UnknownType", "header.type", `unknown response type ${frame.type}`)
  }
}

function readServers(r: Reader, format: 0 | 1): ServersResponse {
  const count = r.u64Safe("servers.n")
  const itemBytesMin = format === 0 ? 16 : 24
  if (count * itemBytesMin > r.remaining) {
    throw new WireError("Truncated", "servers", `${count} servers cannot fit in ${r.remaining} bytes`)
  }
  if (format === 0) {
    const servers: Array<ServerInfoV0> = []
    for (let index = 0; index < count; index++) {
      servers.push({ nodeId: r.u64(`servers[${index}].id`), address: r.text(`servers[${index}].address`) })
    }
    return { kind: "servers", format, servers }
  }
  const servers: Array<ServerInfo> = []
  for (let index = 0; index < count; index++) {
    const nodeId = r.u64(`servers[${index}].id`)
    const address = r.text(`servers[${index}].address`)
    servers.push({ nodeId, address, role: r.u64Safe(`servers[${index}].role`) })
  }
  return { kind: "servers", format, servers }
}

/** ROWS: column count, names, rows until a full 8-byte DONE or PART marker. */
function readRows(r: Reader): RowsResponse {
  const columnCount = r.u64Safe("rows.column_count")
  // Each name takes at least one word, and the marker one more.
  if ((columnCount + 1) * wordBytes > r.remaining) {
    throw new WireError("Truncated", "rows.columns", `${columnCount} columns cannot fit in ${r.remaining} bytes`)
  }
  const columns: Array<string> = []
  for (let index = 0; index < columnCount; index++) columns.push(r.text(`rows.columns[${index}]`))
  const rows: Array<Array<Value>> = []
  for (;;) {
    const word = r.peekU64("rows.marker")
    if (word === rowsDoneMarker || word === rowsPartMarker) {
      r.skip(wordBytes, "rows.marker")
      return { kind: "rows", columns, rows, end: word === rowsDoneMarker ? "done" : "part" }
    }
    const firstByte = Number(word & 0xffn)
    if (columnCount === 0 || firstByte === 0xee || firstByte === 0xff) {
      throw new WireError("BadMarker", "rows.marker", `0x${word.toString(16)} is neither a row nor a DONE/PART marker`)
    }
    rows.push(readRow(r, columnCount, `rows[${rows.length}]`))
  }
}

/** FILES: n × (name, u64 size, raw bytes without padding). */
function readFiles(r: Reader): FilesResponse {
  const count = r.u64Safe("files.n")
  if (count * 16 > r.remaining) {
    throw new WireError("Truncated", "files", `${count} files cannot fit in ${r.remaining} bytes`)
  }
  const files: Array<DumpFile> = []
  for (let index = 0; index < count; index++) {
    const name = r.text(`files[${index}].name`)
    const size = r.u64(`files[${index}].size`)
    if (size > BigInt(r.remaining)) {
      throw new WireError("Truncated", `files[${index}].data`, `${size} bytes, ${r.remaining} left`)
    }
    files.push({ name, data: r.raw(Number(size), `files[${index}].data`) })
  }
  return { kind: "files", files }
}

