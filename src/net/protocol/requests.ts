// Requests (client → server): one tagged union, a decoder for untrusted frames (the server) and
// an encoder (tests, and later the TypeScript client). Field layouts per fact sheet §5, checked
// against canonical/dqlite src/request.h and go-dqlite internal/protocol/schema.go.
//
// Decoding rules, as C dqlite (HEAD) applies them:
// - the type is checked first (`UnknownType`), then the schema (`UnsupportedSchema`): 0 or 1 for
//   PREPARE, EXEC, QUERY, EXEC_SQL and QUERY_SQL, 0 for everything else;
// - fixed fields must all be present (`Truncated`, `UnterminatedText`); bytes after the last
//   field are ignored;
// - a parameter tuple is optional: no bytes left → no parameters. Errors inside it carry a
//   `field` starting with "params" (dqlite answers those "bind parameters", not a parse error);
// - ASSIGN with only the id word is the legacy PROMOTE: `role` is then `null` (= voter).

import { RequestType } from "./codes.ts"
import type { RequestTypeCode } from "./codes.ts"
import { WireError } from "./errors.ts"
import type { Frame } from "./framing.ts"
import type { Value } from "./values.ts"
import { Reader, Writer, readParams, writeParams } from "./wire.ts"

export interface LeaderRequest {
  readonly kind: "leader"
}
export interface ClientRequest {
  readonly kind: "client"
  /** go-dqlite sends 0; dqlite-client a random 63-bit id. */
  readonly clientId: bigint
}
export interface HeartbeatRequest {
  readonly kind: "heartbeat"
  readonly timestamp: bigint
}
export interface OpenRequest {
  readonly kind: "open"
  readonly database: string
  readonly flags: bigint
  readonly vfs: string
}
export interface PrepareRequest {
  readonly kind: "prepare"
  /** 0: one statement, STMT without offset; 1: multi-statement text, STMT with tail offset. */
  readonly schema: 0 | 1
  readonly dbId: bigint
  readonly sql: string
}
export interface ExecRequest {
  readonly kind: "exec"
  /** Parameter tuple count width: 0 = 8-bit, 1 = 32-bit. */
  readonly schema: 0 | 1
  readonly dbId: number
  readonly stmtId: number
  readonly params: ReadonlyArray<Value>
}
export interface QueryRequest {
  readonly kind: "query"
  readonly schema: 0 | 1
  readonly dbId: number
  readonly stmtId: number
  readonly params: ReadonlyArray<Value>
}
export interface FinalizeRequest {
  readonly kind: "finalize"
  readonly dbId: number
  readonly stmtId: number
}
export interface ExecSqlRequest {
  readonly kind: "execSql"
  readonly schema: 0 | 1
  readonly dbId: bigint
  readonly sql: string
  readonly params: ReadonlyArray<Value>
}
export interface QuerySqlRequest {
  readonly kind: "querySql"
  readonly schema: 0 | 1
  readonly dbId: bigint
  readonly sql: string
  readonly params: ReadonlyArray<Value>
}
export interface InterruptRequest {
  readonly kind: "interrupt"
  readonly dbId: bigint
}
/** Sent only by C dqlite peers (the socket then belongs to Raft). */
export interface ConnectRequest {
  readonly kind: "connect"
  readonly nodeId: bigint
  readonly address: string
}
export interface AddRequest {
  readonly kind: "add"
  readonly nodeId: bigint
  readonly address: string
}
export interface AssignRequest {
  readonly kind: "assign"
  readonly nodeId: bigint
  /** Role code (0 voter, 1 standby, 2 spare), or `null` for the one-word legacy PROMOTE form,
   * which means voter. Not validated here. */
  readonly role: number | null
}
export interface RemoveRequest {
  readonly kind: "remove"
  readonly nodeId: bigint
}
export interface DumpRequest {
  readonly kind: "dump"
  readonly database: string
}
export interface ClusterRequest {
  readonly kind: "cluster"
  /** 0: id + address; 1: id + address + role (what clients send). Not validated here. */
  readonly format: number
}
export interface TransferRequest {
  readonly kind: "transfer"
  readonly nodeId: bigint
}
export interface DescribeRequest {
  readonly kind: "describe"
  /** Must be 0 (checked by the server, not here). */
  readonly format: number
}
export interface WeightRequest {
  readonly kind: "weight"
  readonly weight: bigint
}

export type Request =
  | LeaderRequest
  | ClientRequest
  | HeartbeatRequest
  | OpenRequest
  | PrepareRequest
  | ExecRequest
  | QueryRequest
  | FinalizeRequest
  | ExecSqlRequest
  | QuerySqlRequest
  | InterruptRequest
  | ConnectRequest
  | AddRequest
  | AssignRequest
  | RemoveRequest
  | DumpRequest
  | ClusterRequest
  | TransferRequest
  | DescribeRequest
  | WeightRequest

export type RequestKind = Request["kind"]

/** The message type code of a request. */
export function requestTypeCode(request: Request): RequestTypeCode {
  return RequestType[request.kind]
}

/** The schema byte a request is sent with. */
export function requestSchema(request: Request): 0 | 1 {
  switch (request.kind) {
    case "prepare":
    case "exec":
    case "query":
    case "execSql":
    case "querySql":
      return request.schema
    default:
      return 0
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding

const requestKindByCode: ReadonlyMap<number, RequestKind> = new Map(
  Object.entries(RequestType).map(([kind, code]) => [code, kind as RequestKind])
)

/** The request kinds whose schema may be 1. */
function hasSchemaV1(kind: RequestKind): boolean {
  return kind === "prepare" || kind === "exec" || kind === "query" || kind === "execSql" || kind === "querySql"
}

/** Decode one request frame. Throws only `WireError`. */
export function decodeRequest(frame: Frame): Request {
  const kind = requestKindByCode.get(frame.type)
  if (kind === undefined) {
    throw new WireError("UnknownType", "header.type", `unknown request type ${frame.type}`)
  }
  const schemaMax = hasSchemaV1(kind) ? 1 : 0
  if (frame.schema > schemaMax) {
    throw new WireError("UnsupportedSchema", "header.schema", `schema ${frame.schema} for ${kind}`)
  }
  const schema = frame.schema === 1 ? 1 : 0
  return decodeRequestBody(kind, schema, new Reader(frame.body))
}

function decodeRequestBody(kind: RequestKind, schema: 0 | 1, r: Reader): Request {
  switch (kind) {
    case "leader":
      r.skip(8, "leader.unused")
      return { kind }
    case "client":
      return { kind, clientId: r.u64("client.id") }
    case "heartbeat":
      return { kind, timestamp: r.u64("heartbeat.timestamp") }
    case "open":
      return { kind, database: r.text("open.database"), flags: r.u64("open.flags"), vfs: r.text("open.vfs") }
    case "prepare":
      return { kind, schema, dbId: r.u64("prepare.db_id"), sql: r.text("prepare.sql") }
    case "exec":
    case "query": {
      const dbId = r.u32(`${kind}.db_id`)
      const stmtId = r.u32(`${kind}.stmt_id`)
      return { kind, schema, dbId, stmtId, params: readParams(r, schema) }
    }
    case "finalize":
      return { kind, dbId: r.u32("finalize.db_id"), stmtId: r.u32("finalize.stmt_id") }
    case "execSql":
    case "querySql": {
      const dbId = r.u64(`${kind}.db_id`)
      const sql = r.text(`${kind}.sql`)
      return { kind, schema, dbId, sql, params: readParams(r, schema) }
    }
    case "interrupt":
      return { kind, dbId: r.u64("interrupt.db_id") }
    case "connect":
    case "add":
      return { kind, nodeId: r.u64(`${kind}.id`), address: r.text(`${kind}.address`) }
    case "assign": {
      const nodeId = r.u64("assign.id")
      const role = r.remaining === 0 ? null : r.u64Safe("assign.role")
      return { kind, nodeId, role }
    }
    case "remove":
      return { kind, nodeId: r.u64("remove.id") }
    case "dump":
      return { kind, database: r.text("dump.database") }
    case "cluster":
      return { kind, format: r.u64Safe("cluster.format") }
    case "transfer":
      return { kind, nodeId: r.u64("transfer.id") }
    case "describe":
      return { kind, format: r.u64Safe("describe.format") }
    case "weight":
      return { kind, weight: r.u64("weight.weight") }
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** Encode a request as one whole message (header + body). Throws `WireError("Unencodable")` for
 * data the wire cannot carry (e.g. > 255 parameters at schema 0, NUL in a text). */
export function encodeRequest(request: Request): Uint8Array {
  const w = Writer.forMessage()
  writeRequestBody(w, request)
  return w.finishMessage(requestTypeCode(request), requestSchema(request))
}

function writeRequestBody(w: Writer, request: Request): void {
  switch (request.kind) {
    case "leader":
      return w.zeros(8)
    case "client":
      return w.u64(request.clientId, "client.id")
    case "heartbeat":
      return w.u64(request.timestamp, "heartbeat.timestamp")
    case "open":
      w.text(request.database, "open.database")
      w.u64(request.flags, "open.flags")
      return w.text(request.vfs, "open.vfs")
    case "prepare":
      w.u64(request.dbId, "prepare.db_id")
      return w.text(request.sql, "prepare.sql")
    case "exec":
    case "query":
      w.u32(request.dbId, `${request.kind}.db_id`)
      w.u32(request.stmtId, `${request.kind}.stmt_id`)
      return writeParams(w, request.params, request.schema)
    case "finalize":
      w.u32(request.dbId, "finalize.db_id")
      return w.u32(request.stmtId, "finalize.stmt_id")
    case "execSql":
    case "querySql":
      w.u64(request.dbId, `${request.kind}.db_id`)
      w.text(request.sql, `${request.kind}.sql`)
      return writeParams(w, request.params, request.schema)
    case "interrupt":
      return w.u64(request.dbId, "interrupt.db_id")
    case "connect":
    case "add":
      w.u64(request.nodeId, `${request.kind}.id`)
      return w.text(request.address, `${request.kind}.address`)
    case "assign":
      w.u64(request.nodeId, "assign.id")
      if (request.role !== null) w.u64(request.role, "assign.role")
      return
    case "remove":
      return w.u64(request.nodeId, "remove.id")
    case "dump":
      return w.text(request.database, "dump.database")
    case "cluster":
      return w.u64(request.format, "cluster.format")
    case "transfer":
      return w.u64(request.nodeId, "transfer.id")
    case "describe":
      return w.u64(request.format, "describe.format")
    case "weight":
      return w.u64(request.weight, "weight.weight")
  }
}
