// One client connection's state and the answer to each request (fact sheet §7). The connection
// fiber (Gateway.ts) owns a ClientSession and hands it one request at a time, so the state here
// is touched by that fiber only: the open database, the prepared statements, the protocol.
//
// Every request gets exactly one answer (QUERY / QUERY_SQL: one or more ROWS, or a FAILURE),
// and no failure of the SQL surface or the cluster closes the connection: go-dqlite treats a
// clean close after a request as a hard error it does not retry, while 10250 / 10506 make it look
// for the leader again. Only a broken stream ends the session.

import type { Scope } from "effect"
import { Effect, Either, Scope as ScopeOps } from "effect"
import type { ExecDone, ExecResult, Prepared, Rows, RowStream, SqlFailure, SqlSession, SqlDatabases, SqlValue } from "../../sqlite/Sql.ts"
import { rowStreamOf } from "../../sqlite/Sql.ts"
import type { Role } from "../../raft/types.ts"
import type { ClusterControl, ClusterControlError } from "./ClusterControl.ts"
import type { FailureText } from "../protocol/codes.ts"
import { ErrorCode, Failures, RequestType, RoleCode } from "../protocol/codes.ts"
import { WireError } from "../protocol/errors.ts"
import type { Frame } from "../protocol/framing.ts"
import type { GatewayLimits } from "./limits.ts"
import type { Request } from "../protocol/requests.ts"
import { decodeRequest } from "../protocol/requests.ts"
import { parseReadLevel } from "../protocol/readLevel.ts"
import type { Response } from "../protocol/responses.ts"
import { RowsWriter, encodeFilesPieces, encodeResponse, failure } from "../protocol/responses.ts"
import type { GatewayObserver, ObservedRequestType } from "./GatewayObserver.ts"
import type { FrameStream, FramingError } from "../protocol/socketIo.ts"
import { SocketError } from "../protocol/socketIo.ts"
import { firstStatement, isBlankSql, utf8OffsetBytes } from "../../sqlite/statements.ts"
import { specialColumnOf, sqlValueOfParam, textForWire, wireValueOfSql } from "./sqlValues.ts"
import type { Value } from "../protocol/values.ts"
import { trace, tracing } from "../../runtime/trace.ts"

/** A database's committed image as DUMP sends it (the main file; the WAL goes empty, as dqlite
 * ≥ 1.12 sends it, since the image already holds everything), read a chunk at a time: never one
 * buffer of the whole database. */
export interface DatabaseImage {
  /** Whole pages, so a multiple of 8 (FILES sizes must be). */
  readonly sizeBytes: number
  /** Fills `out` with the image's bytes at `offsetBytes` (both whole pages). */
  readonly read: (offsetBytes: number, out: Uint8Array) => Effect.Effect<void, SqlFailure>
}

export interface DatabaseDumper {
  /** The named database's image, consistent for as long as the scope is open, or null when this
   * node has no such database. */
  readonly dump: (name: string) => Effect.Effect<DatabaseImage | null, SqlFailure, Scope.Scope>
}

/** What a gateway serves. */
export interface GatewayDeps {
  readonly databases: SqlDatabases
  readonly cluster: ClusterControl
  /** Serves DUMP; without it DUMP answers a FAILURE. */
  readonly dumper?: DatabaseDumper
  /** Told about every request and FAILURE (metrics). */
  readonly observer?: GatewayObserver
  /** While the node leads: an effect that completes when that leadership ends (null when it does
   * not lead). A connection opened on a leader is closed once the leadership ends — at once when
   * idle, else right after answering the request in hand — so clients move to the new leader
   * rather than ask a deposed one (after a pause, say). Absent: connections stay open. */
  readonly leadershipEnd?: Effect.Effect<Effect.Effect<void> | null>
}

const tooManyParameters: FailureText = { code: ErrorCode.range, message: "column index out of range" }
const rowsNotRepresentable = (detail: string): FailureText => ({ code: ErrorCode.error, message: `result cannot be sent: ${detail}` })

/** What a non-leader's SQL surface or cluster said, as dqlite words it. */
export function failureOfSql(error: SqlFailure): FailureText {
  switch (error._tag) {
    case "SqlError":
      return { code: Number.isSafeInteger(error.code) && error.code >= 0 ? error.code : ErrorCode.error, message: error.message }
    case "SqlNotLeader":
      return Failures.notLeader
    case "SqlLeadershipLost":
      return Failures.leadershipLost
    case "SqlBusy":
      return { code: ErrorCode.busy, message: error.message === "" ? Failures.databaseLocked.message : error.message }
    case "SqlStale":
      // Not reached today (wire reads run on the leader, at the linearizable level); busy says
      // "nothing was done, try again" in dqlite's terms.
      return { code: ErrorCode.busy, message: error.message }
  }
}

export function failureOfCluster(error: ClusterControlError): FailureText {
  switch (error.reason) {
    case "NotLeader":
      return Failures.notLeader
    case "LeadershipLost":
      return Failures.leadershipLost
    case "ChangeInProgress":
      return Failures.configurationChangeInProgress
    case "IdInUse":
      return Failures.serverIdInUse
    case "UnknownId":
      return Failures.serverIdNotValid
    case "RoleNotValid":
      return Failures.serverRoleNotValid
    case "TransferFailed":
      return Failures.leadershipTransferFailed
    case "Failed":
      return { code: ErrorCode.error, message: error.message }
  }
}

/** The FAILURE for a request that could not be decoded, as C dqlite (HEAD) words it; HEAD closes
 * the connection for a malformed fixed field, tqlite answers and keeps serving. */
export function failureOfWireError(frame: Frame, error: WireError): FailureText {
  const takesParams = frame.type === RequestType.prepare || frame.type === RequestType.exec || frame.type === RequestType.query ||
    frame.type === RequestType.execSql || frame.type === RequestType.querySql
  switch (error.reason) {
    case "UnknownType":
      return Failures.unrecognizedRequestType
    case "UnsupportedSchema":
      return takesParams ? Failures.unrecognizedParamsSchemaVersion : Failures.unrecognizedSchemaVersion
    default:
      if (error.field.startsWith("params")) return Failures.bindParameters
      return { code: ErrorCode.dqliteParse, message: `malformed request: ${error.message}` }
  }
}

const roleOfCode = (code: number): Role | null =>
  code === RoleCode.voter ? "voter" : code === RoleCode.standby ? "standby" : code === RoleCode.spare ? "spare" : null

const codeOfRole = (role: Role): number => RoleCode[role]

/** A wire node id (u64) as a NodeId, or null if it cannot be one. */
const nodeIdOf = (id: bigint): number | null => (id > 0n && id <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(id) : null)

interface OpenDatabase {
  readonly name: string
  readonly session: SqlSession
}

interface StatementEntry {
  readonly prepared: Prepared
}

export type SessionError = SocketError | FramingError

/** What the plain statement path leaves to the connection's fiber: null when the request is
 * answered (its bytes handed to the socket with room to spare), else the Effect to run — a
 * request that needs Effect (OPEN, a transaction, a streamed result…), a write that must wait
 * for the socket to drain, a notice to run before the answer. */
export type PlainStep = Effect.Effect<void, SessionError> | null

export class ClientSession {
  private database: OpenDatabase | null = null
  private readonly statements = new Map<number, StatementEntry>()

  constructor(
    private readonly deps: GatewayDeps,
    private readonly limits: GatewayLimits,
    private readonly io: FrameStream,
    /** The connection's scope: an opened database lives (and is rolled back) with it. */
    private readonly scope: Scope.Scope,
    private readonly protocol: "v1" | "legacy"
  ) {}

  /** Answers one message. Fails only when the stream itself broke. */
  handle(frame: Frame): Effect.Effect<void, SessionError> {
    let request: Request
    try {
      request = decodeRequest(frame)
    } catch (error) {
      if (!(error instanceof WireError)) throw error
      return this.observed("malformed", this.fail(failureOfWireError(frame, error)))
    }
    return this.observed(request.kind, this.dispatch(request))
  }

  /** Answers one message as plain code where it can: a LEADER, a point read answered at once
   * (`querySqlNow`, one ROWS message), an autocommit write handed to the writer with a callback
   * (`execSqlWith` / `execWith`), and every FAILURE and EMPTY these give. Returns the step as
   * `PlainStep` says, or "pending" when a write's answer will come later: then `later` is called
   * exactly once with the step, from the turn that settles it. Anything else is `handle`'s
   * Effect, returned for the fiber to run. Same answers, in the same words, as `handle`. */
  handlePlain(frame: Frame, later: (step: PlainStep) => void): PlainStep | "pending" {
    let request: Request
    try {
      request = decodeRequest(frame)
    } catch (error) {
      if (!(error instanceof WireError)) throw error
      this.deps.observer?.request("malformed")
      return this.failNow(failureOfWireError(frame, error))
    }
    this.deps.observer?.request(request.kind)
    switch (request.kind) {
      case "leader": {
        const leaderNow = this.deps.cluster.leaderNow
        if (leaderNow === undefined) break
        const leader = leaderNow()
        return this.sendNow(
          this.protocol === "legacy"
            ? { kind: "serverLegacy", address: leader?.address ?? "" }
            : { kind: "server", nodeId: leader === null ? 0n : BigInt(leader.id), address: leader?.address ?? "" }
        )
      }
      case "execSql": {
        const session = this.openSession(request.dbId)
        if (session === null) return this.failNow(Failures.noDatabaseOpened)
        if (isBlankSql(request.sql)) return this.sendNow({ kind: "result", lastInsertId: 0n, rowsAffected: 0n })
        const execSqlWith = session.execSqlWith
        if (execSqlWith === undefined) break
        const step = this.execPlain((done) => execSqlWith(request.sql, params(request.params), done), later)
        if (step !== undefined) return step
        break
      }
      case "exec": {
        const session = this.openSession(request.dbId)
        if (session === null) return this.failNow(Failures.noDatabaseOpened)
        const entry = this.statements.get(request.stmtId)
        if (entry === undefined) return this.failNow(Failures.noStatement)
        if (request.params.length > entry.prepared.paramCount) return this.failNow(tooManyParameters)
        const execWith = session.execWith
        if (execWith === undefined) break
        const step = this.execPlain((done) => execWith(entry.prepared.id, params(request.params), done), later)
        if (step !== undefined) return step
        break
      }
      case "querySql": {
        const session = this.openSession(request.dbId)
        if (session === null) return this.failNow(Failures.noDatabaseOpened)
        if (isBlankSql(request.sql)) return this.failNow(Failures.emptyStatement)
        const values = params(request.params)
        const now = session.querySqlNow?.(request.sql, values)
        if (now === undefined) return this.querySqlLater(session, request.sql, values)
        if (Either.isLeft(now)) return this.failNow(failureOfSql(now.left))
        trace("gw.rows")
        const rows = now.right
        if (rows.rows.length <= 1) {
          const batch = this.buildBatch(rows.columns.map(textForWire), rows.columns.map((_, index) => specialColumnOf(rows.declaredTypes[index])), rows.rows, 0, false)
          if (batch._tag === "Failure") return this.failNow(batch.failure)
          if (batch.next >= rows.rows.length) return writtenNow(this.io.writeNow(batch.message))
        }
        return traced(this.streamRows(rowStreamOf(rows)))
      }
    }
    return this.dispatch(request)
  }

  /** A write handed to the SQL surface's plain form: its step (the answer came at once), or
   * "pending" (`later` hears it), or undefined when the surface could not take it (nothing ran). */
  private execPlain(submit: (done: ExecDone) => boolean, later: (step: PlainStep) => void): PlainStep | "pending" | undefined {
    let returned = false
    let answered: { readonly step: PlainStep } | null = null
    const taken = submit((result, after) => {
      const step = after === undefined ? this.answerExecNow(result) : Effect.zipRight(after, Effect.suspend(() => this.answerExecNow(result) ?? Effect.void))
      if (returned) later(step)
      else answered = { step }
    })
    returned = true
    if (!taken) return undefined
    return answered === null ? "pending" : (answered as { readonly step: PlainStep }).step
  }

  private answerExecNow(result: Either.Either<ExecResult, SqlFailure>): PlainStep {
    if (Either.isLeft(result)) return this.failNow(failureOfSql(result.left))
    trace("gw.result")
    return writtenNow(this.sendNow({
      kind: "result",
      lastInsertId: BigInt.asUintN(64, result.right.lastInsertId),
      rowsAffected: BigInt.asUintN(64, BigInt(result.right.rowsAffected))
    }))
  }

  private openSession(dbId: number | bigint): SqlSession | null {
    const database = this.database
    return database === null || BigInt(dbId) !== 0n ? null : database.session
  }

  private sendNow(response: Response): PlainStep {
    return this.io.writeNow(encodeSafely(response))
  }

  private failNow(text: FailureText): PlainStep {
    this.deps.observer?.failure(text.code)
    return this.sendNow(failure(text))
  }

  /** QUERY_SQL once `querySqlNow` could not answer: streamed, or whole. */
  private querySqlLater(session: SqlSession, sql: string, values: ReadonlyArray<SqlValue>): Effect.Effect<void, SessionError> {
    const stream = session.querySqlStream
    return stream === undefined ? this.answerQuery(session.querySql(sql, values)) : this.answerStream(stream(sql, values))
  }

  private observed<E>(type: ObservedRequestType, answer: Effect.Effect<void, E>): Effect.Effect<void, E> {
    this.deps.observer?.request(type)
    return answer
  }

  private send(response: Response): Effect.Effect<void, SocketError> {
    return this.io.write(encodeSafely(response))
  }

  private fail(text: FailureText): Effect.Effect<void, SocketError> {
    this.deps.observer?.failure(text.code)
    return this.send(failure(text))
  }

  private dispatch(request: Request): Effect.Effect<void, SessionError> {
    switch (request.kind) {
      case "leader":
        return Effect.flatMap(this.deps.cluster.leader, (leader) =>
          this.send(
            this.protocol === "legacy"
              ? { kind: "serverLegacy", address: leader?.address ?? "" }
              : { kind: "server", nodeId: leader === null ? 0n : BigInt(leader.id), address: leader?.address ?? "" }
          ))
      case "client":
        return this.send({ kind: "welcome", heartbeatTimeoutMs: this.limits.heartbeatTimeoutMs })
      case "heartbeat":
      case "connect":
        // dqlite ≥ 1.12 answers HEARTBEAT this way (1.11.1 never answers it); CONNECT is for C
        // dqlite's Raft peers, which tqlite does not speak.
        return this.fail(Failures.unrecognizedRequestType)
      case "open":
        return this.open(request.database, request.vfs)
      case "prepare":
        return this.prepare(request.dbId, request.sql, request.schema)
      case "exec":
        return this.withStatement(request.dbId, request.stmtId, (session, entry) => {
          if (request.params.length > entry.prepared.paramCount) return this.fail(tooManyParameters)
          return this.answerExec(session.exec(entry.prepared.id, params(request.params)))
        })
      case "query":
        return this.withStatement(request.dbId, request.stmtId, (session, entry) => {
          if (request.params.length > entry.prepared.paramCount) return this.fail(tooManyParameters)
          const values = params(request.params)
          const stream = session.queryStream
          return stream === undefined ? this.answerQuery(session.query(entry.prepared.id, values)) : this.answerStream(stream(entry.prepared.id, values))
        })
      case "finalize":
        return this.withStatement(request.dbId, request.stmtId, (session, entry) => {
          this.statements.delete(request.stmtId)
          return Effect.matchEffect(session.finalize(entry.prepared.id), {
            onFailure: (error) => this.fail(failureOfSql(error)),
            onSuccess: () => this.send({ kind: "empty" })
          })
        })
      case "execSql":
        return this.withDatabase(request.dbId, (session) =>
          isBlankSql(request.sql)
            ? this.send({ kind: "result", lastInsertId: 0n, rowsAffected: 0n })
            : this.answerExec(session.execSql(request.sql, params(request.params))))
      case "querySql":
        return this.withDatabase(request.dbId, (session) => {
          if (isBlankSql(request.sql)) return this.fail(Failures.emptyStatement)
          const values = params(request.params)
          // A read the session answers at once skips the Effect machinery (point reads).
          const now = session.querySqlNow?.(request.sql, values)
          if (now === undefined) return this.querySqlLater(session, request.sql, values)
          if (Either.isLeft(now)) return this.fail(failureOfSql(now.left))
          trace("gw.rows")
          return traced(this.streamRows(rowStreamOf(now.right)))
        })
      case "interrupt":
        // Requests are handled one at a time, so nothing runs now; an INTERRUPT sent during a
        // ROWS stream is taken by `streamRows` itself.
        return this.send({ kind: "empty" })
      case "add":
        return this.clusterChange(request.nodeId, (id) => this.deps.cluster.add(id, request.address))
      case "assign": {
        const role = request.role === null ? "voter" : roleOfCode(request.role)
        if (role === null) return this.fail(Failures.serverRoleNotValid)
        return this.clusterChange(request.nodeId, (id) => this.deps.cluster.assign(id, role))
      }
      case "remove":
        return this.clusterChange(request.nodeId, (id) => this.deps.cluster.remove(id))
      case "transfer":
        if (request.nodeId === 0n) return this.answerCluster(this.deps.cluster.transfer(null))
        return this.clusterChange(request.nodeId, (id) => this.deps.cluster.transfer(id))
      case "dump":
        return this.dump(request.database)
      case "cluster":
        return this.cluster(request.format)
      case "describe":
        if (request.format !== 0) return this.fail(Failures.badDescribeFormat)
        return Effect.flatMap(this.deps.cluster.describe, (metadata) =>
          this.send({ kind: "metadata", failureDomain: metadata.failureDomain, weight: metadata.weight }))
      case "weight":
        return Effect.zipRight(this.deps.cluster.setWeight(request.weight), this.send({ kind: "empty" }))
    }
  }

  private open(name: string, vfs: string): Effect.Effect<void, SocketError> {
    if (this.database !== null) return this.fail(Failures.databaseAlreadyOpen)
    // tqlite's client may ask for a read level in the VFS name (readLevel.ts); dqlite's clients
    // send none.
    const level = parseReadLevel(vfs)
    if (typeof level === "string") return this.fail({ code: ErrorCode.error, message: level })
    return Effect.matchEffect(ScopeOps.extend(this.deps.databases.open(name, level === null ? {} : { readConsistency: level }), this.scope), {
      onFailure: (error) => this.fail(failureOfSql(error)),
      onSuccess: (session) => {
        this.database = { name, session }
        return this.send({ kind: "db", dbId: 0 })
      }
    })
  }

  private withDatabase(
    dbId: number | bigint,
    f: (session: SqlSession) => Effect.Effect<void, SessionError>
  ): Effect.Effect<void, SessionError> {
    const database = this.database
    if (database === null || BigInt(dbId) !== 0n) return this.fail(Failures.noDatabaseOpened)
    return f(database.session)
  }

  private withStatement(
    dbId: number,
    stmtId: number,
    f: (session: SqlSession, entry: StatementEntry) => Effect.Effect<void, SessionError>
  ): Effect.Effect<void, SessionError> {
    return this.withDatabase(dbId, (session) => {
      const entry = this.statements.get(stmtId)
      if (entry === undefined) return this.fail(Failures.noStatement)
      return f(session, entry)
    })
  }

  private prepare(dbId: bigint, sql: string, schema: 0 | 1): Effect.Effect<void, SessionError> {
    return this.withDatabase(dbId, (session) => {
      const first = firstStatement(sql)
      if (first === null) return this.fail(Failures.emptyStatement)
      // Schema 0 is one statement; dqlite ≥ 1.12 refuses a tail that is more than whitespace
      // and comments. Schema 1 reports where the tail starts instead.
      if (schema === 0 && !isBlankSql(first.tail)) return this.fail(Failures.nonemptyStatementTail)
      const stmtId = this.freeStatementId()
      if (stmtId === null) {
        return this.fail({ code: ErrorCode.error, message: `too many prepared statements (at most ${this.limits.statementsMax} per connection)` })
      }
      return Effect.matchEffect(session.prepare(first.statement), {
        onFailure: (error) => this.fail(failureOfSql(error)),
        onSuccess: (prepared) => {
          this.statements.set(stmtId, { prepared })
          return this.send({
            kind: "stmt",
            dbId: 0,
            stmtId,
            paramCount: prepared.paramCount,
            tailOffset: schema === 1 ? utf8OffsetBytes(sql, first.statement.end) : null
          })
        }
      })
    })
  }

  /** The lowest unused id (C dqlite starts at 0 and reuses freed ids), or null at the bound. */
  private freeStatementId(): number | null {
    if (this.statements.size >= this.limits.statementsMax) return null
    for (let id = 0; ; id++) if (!this.statements.has(id)) return id
  }

  private answerExec(run: Effect.Effect<{ readonly lastInsertId: bigint; readonly rowsAffected: number }, SqlFailure>) {
    return Effect.matchEffect(run, {
      onFailure: (error) => this.fail(failureOfSql(error)),
      onSuccess: (result) => {
        trace("gw.result")
        return traced(this.send({
          kind: "result",
          lastInsertId: BigInt.asUintN(64, result.lastInsertId),
          rowsAffected: BigInt.asUintN(64, BigInt(result.rowsAffected))
        }))
      }
    })
  }

  private answerQuery(run: Effect.Effect<Rows, SqlFailure>): Effect.Effect<void, SessionError> {
    return Effect.matchEffect(run, {
      onFailure: (error) => this.fail(failureOfSql(error)),
      onSuccess: (rows) => {
        trace("gw.rows")
        return traced(this.streamRows(rowStreamOf(rows)))
      }
    })
  }

  /** A streamed result: its reader (and the snapshot it pinned) lives in this scope, which ends
   * with the answer — after DONE, a FAILURE, an INTERRUPT, or a broken connection. */
  private answerStream(open: Effect.Effect<RowStream, SqlFailure, Scope.Scope>): Effect.Effect<void, SessionError> {
    return Effect.scoped(Effect.matchEffect(open, {
      onFailure: (error) => this.fail(failureOfSql(error)),
      onSuccess: (stream) => {
        trace("gw.rows")
        return traced(this.streamRows(stream))
      }
    }))
  }

  /** Sends a result set as ROWS messages of about `rowsBatchBytesTarget` bytes, each but the last
   * ending in PART, taking the source's batches one at a time: the next batch is asked for only
   * once this one is written, and a write waits for the socket to drain, so a client that stops
   * reading stops the source (backpressure end to end). Between messages, an INTERRUPT that has
   * arrived stops the stream: it is answered with EMPTY and no further ROWS are sent (go-dqlite
   * discards messages until EMPTY). Messages go out ~64 KiB per write, an INTERRUPT looked for
   * between writes. A source failing after some batches went out is answered
   * with a lone FAILURE in place of the next ROWS (as C dqlite does). */
  private streamRows(stream: RowStream): Effect.Effect<void, SessionError> {
    const first = stream.first
    // One message holds it all (a point read): no loop.
    if (first.done && first.rows.length <= 1) {
      const batch = this.buildBatch(stream.columns.map(textForWire), stream.columns.map((_, index) => specialColumnOf(stream.declaredTypes[index])), first.rows, 0, false)
      if (batch._tag === "Failure") return this.fail(batch.failure)
      if (batch.next >= first.rows.length) return this.io.write(batch.message)
    }
    const self = this
    return Effect.gen(function*() {
      const columns = stream.columns.map(textForWire)
      const kinds = stream.columns.map((_, index) => specialColumnOf(stream.declaredTypes[index]))
      let source = first
      for (;;) {
        // ROWS messages go out in writes of about `writeBytesTarget` (one syscall, not one per
        // 4 KiB message), an INTERRUPT looked for after each; a batch without rows that is not
        // the last carries nothing to send.
        const messages: Array<Uint8Array> = []
        let pendingBytes = 0
        let index = 0
        while (index < source.rows.length || (source.done && index === 0)) {
          const batch = self.buildBatch(columns, kinds, source.rows, index, !source.done)
          if (batch._tag === "Failure") {
            if (messages.length > 0) yield* self.io.write(concatBytes(messages))
            return yield* self.fail(batch.failure)
          }
          index = batch.next
          messages.push(batch.message)
          pendingBytes += batch.message.byteLength
          const last = source.done && index >= source.rows.length
          if (pendingBytes < writeBytesTarget && index < source.rows.length) continue
          yield* self.io.write(concatBytes(messages.splice(0)))
          pendingBytes = 0
          if (last) return
          const interrupt = yield* self.io.pollFrame((frame) => frame.type === RequestType.interrupt)
          if (interrupt !== undefined && interrupt.type === RequestType.interrupt) {
            yield* Effect.ignore(self.database?.session.interrupt ?? Effect.void)
            return yield* self.send({ kind: "empty" })
          }
        }
        const next = yield* Effect.either(stream.next)
        if (Either.isLeft(next)) return yield* self.fail(failureOfSql(next.left))
        source = next.right
      }
    })
  }

  /** One ROWS message from `rows[from…]`: PART when rows are left here or `more` follow. */
  private buildBatch(
    columns: ReadonlyArray<string>,
    kinds: ReadonlyArray<ReturnType<typeof specialColumnOf>>,
    rows: RowStream["first"]["rows"],
    from: number,
    more: boolean
  ): { readonly _tag: "Batch"; readonly message: Uint8Array; readonly next: number } | { readonly _tag: "Failure"; readonly failure: FailureText } {
    try {
      const writer = new RowsWriter(columns)
      let index = from
      while (index < rows.length && writer.messageBytes < this.limits.rowsBatchBytesTarget) {
        const row = rows[index] ?? []
        if (row.length !== columns.length) {
          return { _tag: "Failure", failure: rowsNotRepresentable(`row ${index} has ${row.length} values for ${columns.length} columns`) }
        }
        const values: Array<Value> = row.map((value, column) => wireValueOfSql(value, kinds[column] ?? "plain"))
        writer.appendRow(values)
        index++
      }
      return { _tag: "Batch", message: writer.finish(index < rows.length || more ? "part" : "done"), next: index }
    } catch (error) {
      if (error instanceof WireError) return { _tag: "Failure", failure: rowsNotRepresentable(error.message) }
      throw error
    }
  }

  private clusterChange(
    wireId: bigint,
    change: (id: number) => Effect.Effect<void, ClusterControlError>
  ): Effect.Effect<void, SocketError> {
    const id = nodeIdOf(wireId)
    if (id === null) return this.fail(Failures.serverIdNotValid)
    return this.answerCluster(change(id))
  }

  private answerCluster(run: Effect.Effect<void, ClusterControlError>): Effect.Effect<void, SocketError> {
    return Effect.matchEffect(run, {
      onFailure: (error) => this.fail(failureOfCluster(error)),
      onSuccess: () => this.send({ kind: "empty" })
    })
  }

  private cluster(format: number): Effect.Effect<void, SocketError> {
    if (format !== 0 && format !== 1) return this.fail(Failures.unrecognizedClusterFormat)
    return Effect.flatMap(this.deps.cluster.servers, (servers) =>
      this.send(
        format === 0
          ? { kind: "servers", format, servers: servers.map((s) => ({ nodeId: BigInt(s.id), address: s.address })) }
          : { kind: "servers", format, servers: servers.map((s) => ({ nodeId: BigInt(s.id), address: s.address, role: codeOfRole(s.role) })) }
      ))
  }

  private dump(name: string): Effect.Effect<void, SocketError> {
    const dumper = this.deps.dumper
    if (dumper === undefined) return this.fail({ code: ErrorCode.error, message: "dump is not supported by this node" })
    return Effect.scoped(Effect.matchEffect(dumper.dump(name), {
      onFailure: (error) => this.fail(failureOfSql(error)),
      onSuccess: (image) => (image === null ? this.fail(Failures.databaseNotFound) : this.sendImage(name, image))
    }))
  }

  /** FILES streamed: the message's header announces the image's size, then the image goes out
   * `dumpChunkBytes` at a time, each chunk read only once the previous one is written (a write
   * waits for the socket to drain), then the empty WAL. Past the header no FAILURE can be sent
   * (the message's length is announced): a read that fails, or a dump past `dumpTimeoutMs` (it
   * holds the leader's checkpoints back), closes the connection. */
  private sendImage(name: string, image: DatabaseImage): Effect.Effect<void, SocketError> {
    let pieces: ReadonlyArray<Uint8Array>
    try {
      pieces = encodeFilesPieces([{ name, sizeBytes: image.sizeBytes }, { name: `${name}-wal`, sizeBytes: 0 }])
    } catch (error) {
      if (!(error instanceof WireError)) throw error
      return this.fail({ code: ErrorCode.error, message: `response cannot be sent: ${error.message}` })
    }
    const io = this.io
    const chunkBytes = this.limits.dumpChunkBytes
    const timeoutMs = this.limits.dumpTimeoutMs
    const body = Effect.gen(function*() {
      yield* io.write(pieces[0]!)
      for (let offset = 0; offset < image.sizeBytes;) {
        // A fresh buffer per chunk: the socket may still hold the previous one.
        const chunk = new Uint8Array(Math.min(chunkBytes, image.sizeBytes - offset))
        const read = yield* Effect.either(image.read(offset, chunk))
        if (read._tag === "Left") {
          yield* Effect.logWarning(`closing the connection: the dump of ${name} failed after ${offset} of ${image.sizeBytes} bytes: ${read.left.message}`)
          return yield* Effect.zipRight(io.close, Effect.fail(new SocketError({ reason: "Closed", detail: "the dump failed mid-way" })))
        }
        yield* io.write(chunk)
        offset += chunk.length
      }
      yield* io.write(pieces[1]!)
    })
    return body.pipe(
      Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => new SocketError({ reason: "Timeout", detail: `the dump of ${name} took longer than dumpTimeoutMs (${timeoutMs} ms)` }) }),
      Effect.tapError((error) => (error.reason === "Timeout" ? io.close : Effect.void))
    )
  }
}

/** ROWS messages gathered into one socket write: 64 KiB, a reader's batch. */
const writeBytesTarget = 64 * 1024

function concatBytes(parts: ReadonlyArray<Uint8Array>): Uint8Array {
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts)
}

/** Stamps `gw.written` after a plain write, when tracing. */
function writtenNow(step: PlainStep): PlainStep {
  if (tracing && step === null) trace("gw.written")
  return step
}

/** Stamps `gw.written` once the answer is written, when tracing (src/runtime/trace.ts). */
function traced<E>(answer: Effect.Effect<void, E>): Effect.Effect<void, E> {
  return tracing ? Effect.zipLeft(answer, Effect.sync(() => trace("gw.written"))) : answer
}

function params(values: ReadonlyArray<Value>) {
  return values.map(sqlValueOfParam)
}

/** A response as bytes; one the wire cannot carry (a NUL in a message text, a file whose size is
 * not whole words) becomes a FAILURE that says so. */
function encodeSafely(response: Response): Uint8Array {
  try {
    return encodeResponse(response)
  } catch (error) {
    if (!(error instanceof WireError)) throw error
    if (response.kind === "failure") {
      return encodeResponse({ kind: "failure", code: response.code, message: textForWire(response.message) })
    }
    return encodeResponse(failure({ code: ErrorCode.error, message: `response cannot be sent: ${error.message}` }))
  }
}
