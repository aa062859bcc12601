// Numbers of dqlite's client protocol (wire protocol v1): message type codes, value type codes,
// roles, row markers and the failure codes and texts a dqlite server answers with.
// Source of every number: /work/shared/dqlite-wire-protocol.md, checked against canonical/dqlite
// (src/protocol.h, src/gateway.c) and canonical/go-dqlite v1.11.5 (internal/protocol/constants.go).
// Pure data: nothing here does I/O.

/** Bytes in one protocol word. Every message body is a whole number of words. */
export const wordBytes = 8

/** Bytes in a message header: body length in words (u32), type (u8), schema (u8), 2 unused. */
export const headerBytes = 8

/** The first word a client sends on a connection, before any message. */
export const ProtocolVersion = {
  /** Protocol v1, sent by every current client. */
  one: 1n,
  /** The pre-1.0 protocol: identical except that the LEADER answer carries only the address. */
  legacy: 0x86104dd760433fe5n
} as const

/** Request (client → server) message type codes. 11 (CONNECT) is sent only by C dqlite peers. */
export const RequestType = {
  leader: 0,
  client: 1,
  heartbeat: 2,
  open: 3,
  prepare: 4,
  exec: 5,
  query: 6,
  finalize: 7,
  execSql: 8,
  querySql: 9,
  interrupt: 10,
  connect: 11,
  add: 12,
  assign: 13,
  remove: 14,
  dump: 15,
  cluster: 16,
  transfer: 17,
  describe: 18,
  weight: 19
} as const
export type RequestTypeCode = (typeof RequestType)[keyof typeof RequestType]

/** Response (server → client) message type codes. SERVER and its legacy form share code 1. */
export const ResponseType = {
  failure: 0,
  server: 1,
  welcome: 2,
  servers: 3,
  db: 4,
  stmt: 5,
  result: 6,
  rows: 7,
  empty: 8,
  files: 9,
  metadata: 10
} as const
export type ResponseTypeCode = (typeof ResponseType)[keyof typeof ResponseType]

/** Value type codes, shared by parameter tuples and rows. 1–5 are SQLite's own codes. */
export const ValueType = {
  integer: 1,
  float: 2,
  text: 3,
  blob: 4,
  null: 5,
  unixtime: 9,
  iso8601: 10,
  boolean: 11
} as const
export type ValueTypeCode = (typeof ValueType)[keyof typeof ValueType]

/** Schema (header byte 5) values. 0 everywhere except the extended forms listed here. */
export const Schema = {
  /** Parameter tuple with an 8-bit count (EXEC, QUERY, EXEC_SQL, QUERY_SQL); PREPARE of one
   * statement, answered by STMT without a tail offset. Every other message uses only 0. */
  v0: 0,
  /** Parameter tuple with a 32-bit count; PREPARE of multi-statement text, answered by the STMT
   * form that carries the tail offset (whose header then also says schema 1). */
  v1: 1
} as const
export type SchemaVersion = (typeof Schema)[keyof typeof Schema]

/** Formats of the CLUSTER request: 0 = id and address, 1 = id, address and role. */
export const ClusterFormat = { v0: 0, v1: 1 } as const
export type ClusterFormatCode = (typeof ClusterFormat)[keyof typeof ClusterFormat]

/** The only DESCRIBE format. */
export const describeFormatV0 = 0

/** Role codes on the wire (ASSIGN, SERVERS). */
export const RoleCode = { voter: 0, standby: 1, spare: 2 } as const

/** The u64 that ends a ROWS body: the result set is complete. */
export const rowsDoneMarker = 0xffffffffffffffffn
/** The u64 that ends a ROWS body when another ROWS message follows unprompted. */
export const rowsPartMarker = 0xeeeeeeeeeeeeeeeen

/** Heartbeat timeout C dqlite announces in WELCOME (go ignores it; dqlite-client may use it). */
export const welcomeHeartbeatTimeoutMsDefault = 15_000

/** C dqlite ends a ROWS batch once the message (header included) has reached this many bytes,
 * checked before stepping to the next row; a batch may exceed it by one row. */
export const rowsBatchBytesTarget = 4096

/** Failure codes a dqlite server sends (SQLite primary/extended codes plus dqlite's own). */
export const ErrorCode = {
  /** "empty statement": go-dqlite 1.11.5 turns code 0 into ErrBadConn. */
  emptyStatement: 0,
  /** SQLITE_ERROR: SQL errors, tail/bind errors (HEAD), Raft admin errors. */
  error: 1,
  /** SQLITE_BUSY: locked database, db already open, configuration change in progress. */
  busy: 5,
  /** SQLITE_IOERR: "leader exec failed" (HEAD). */
  ioerr: 10,
  /** SQLITE_NOTFOUND: no database opened, no statement with the given id (→ ErrBadConn). */
  notFound: 12,
  /** SQLITE_PROTOCOL: DESCRIBE with a bad format. */
  protocol: 15,
  /** SQLITE_RANGE: more values than parameters (1.11.1). */
  range: 25,
  /** SQLITE_ROW: EXEC of a statement that yields rows (1.11.1). */
  row: 100,
  /** SQLITE_IOERR_NOT_LEADER = 10 | 40 << 8. Clients reconnect and find the leader. */
  notLeader: 10250,
  /** SQLITE_IOERR_LEADERSHIP_LOST = 10 | 41 << 8. Outcome of the write unknown. */
  leadershipLost: 10506,
  /** Legacy not-leader code (10 | 32 << 8). Understood by clients; never send it. */
  notLeaderLegacy: 8202,
  /** Legacy leadership-lost code (10 | 33 << 8). Understood by clients; never send it. */
  leadershipLostLegacy: 8458,
  /** DQLITE_PROTO. */
  dqliteProto: 1001,
  /** DQLITE_NOTFOUND: DUMP of an unknown database (HEAD). */
  dqliteNotFound: 1002,
  /** DQLITE_PARSE: malformed tuple, unknown request type, bad schema or format. */
  dqliteParse: 1005
} as const

/** A failure as dqlite words it: code and message text. */
export interface FailureText {
  readonly code: number
  readonly message: string
}

/** The failures whose code and text are fixed by dqlite (texts are HEAD's unless noted). */
export const Failures = {
  notLeader: { code: ErrorCode.notLeader, message: "not leader" },
  leadershipLost: { code: ErrorCode.leadershipLost, message: "leadership lost" },
  unrecognizedRequestType: { code: ErrorCode.dqliteParse, message: "unrecognized request type" },
  /** Schema ≠ 0 on a request that only has schema 0. */
  unrecognizedSchemaVersion: { code: ErrorCode.dqliteParse, message: "unrecognized schema version" },
  /** Schema ∉ {0, 1} on EXEC, QUERY, EXEC_SQL, QUERY_SQL or PREPARE (HEAD uses code 1 there). */
  unrecognizedParamsSchemaVersion: { code: ErrorCode.error, message: "unrecognized schema version" },
  unrecognizedClusterFormat: { code: ErrorCode.dqliteParse, message: "unrecognized cluster format" },
  badDescribeFormat: { code: ErrorCode.protocol, message: "bad format version" },
  emptyStatement: { code: ErrorCode.emptyStatement, message: "empty statement" },
  nonemptyStatementTail: { code: ErrorCode.error, message: "nonempty statement tail" },
  rowsYieldedByExec: { code: ErrorCode.error, message: "rows yielded when none expected for EXEC request" },
  bindParameters: { code: ErrorCode.error, message: "bind parameters" },
  noDatabaseOpened: { code: ErrorCode.notFound, message: "no database opened" },
  noStatement: { code: ErrorCode.notFound, message: "no statement with the given id" },
  databaseAlreadyOpen: { code: ErrorCode.busy, message: "a database for this connection is already open" },
  databaseLocked: { code: ErrorCode.busy, message: "database is locked" },
  leaderExecFailed: { code: ErrorCode.ioerr, message: "leader exec failed" },
  /** DUMP of an unknown database; the grammar is dqlite's own. */
  databaseNotFound: { code: ErrorCode.dqliteNotFound, message: "database does not exists" },
  leadershipTransferFailed: { code: ErrorCode.error, message: "leadership transfer failed" },
  configurationChangeInProgress: { code: ErrorCode.busy, message: "a configuration change is already in progress" },
  serverIdInUse: { code: ErrorCode.error, message: "server ID already in use" },
  serverIdNotValid: { code: ErrorCode.error, message: "server ID is not valid" },
  serverRoleNotValid: { code: ErrorCode.error, message: "server role is not valid" }
} as const satisfies Record<string, FailureText>

/** Whether a type code may appear in a row (go-dqlite 1.11.5 panics on any other). */
export function isRowValueType(code: number): code is ValueTypeCode {
  return (
    code === ValueType.integer ||
    code === ValueType.float ||
    code === ValueType.text ||
    code === ValueType.blob ||
    code === ValueType.null ||
    code === ValueType.unixtime ||
    code === ValueType.iso8601 ||
    code === ValueType.boolean
  )
}

/** Parameters accept every row type except UNIXTIME, which C dqlite rejects when decoding. */
export function isParamValueType(code: number): code is ValueTypeCode {
  return code !== ValueType.unixtime && isRowValueType(code)
}
