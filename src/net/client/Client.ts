// The Effect-native client of tqlite (and of any dqlite wire protocol v1 server).
//
// - Leader discovery as go-dqlite does it: ask each known server (the last leader first) with
//   LEADER; a server naming itself is the leader; a server naming another is followed once, and
//   that one must name itself.
// - A small pool of leader connections (`connectionsMax`), each with the database OPENed. A
//   connection that breaks, times out, or answers "not leader" / "leadership lost" is closed and
//   the leader looked for again on the next use.
// - Retries, bounded (`retriesMax`, exponential backoff capped at `retryCapMs`): a request that
//   certainly did nothing (no connection, no leader, FAILURE 10250) is always retried; one whose
//   outcome is unknown (connection lost after sending, timeout, 10506) only when it is
//   idempotent: reads (`query`/`stream` of SELECT-like text, unless told otherwise), BEGIN,
//   LEADER, CLUSTER. Writes whose outcome is unknown fail with that error. Nothing inside a
//   transaction is retried.
// - Interactive transactions: `transaction(effect)` pins one connection (a fiber-local
//   reference, so `exec`/`query`/`stream`/statements inside `effect` use it), runs BEGIN, the
//   effect, then COMMIT — or ROLLBACK when the effect fails or is interrupted.
// - `stream` yields rows as ROWS batches arrive (the socket is read only as the stream is pulled);
//   stopping early sends INTERRUPT and discards the rest of the result.
// - Every request has a timeout (`requestTimeoutMs`), every connect one (`connectTimeoutMs`).
import { looksReadOnly } from "../../sqlite/statements.ts"
import type { ReadConsistency } from "../../actors/RaftActor.ts"
import { readLevelText } from "../protocol/readLevel.ts"
import type { Scope } from "effect"
import { Chunk, Context, Duration, Effect, Exit, FiberRef, Layer, Option, Schedule, Scope as ScopeOps, Stream } from "effect"
import { ExecutionStrategy } from "effect"
import { assert } from "../../assert.ts"
import { ErrorCode, headerBytes, RoleCode } from "../protocol/codes.ts"
import { messageBytesMaxDefault } from "../protocol/framing.ts"
import type { FilesPiece } from "../protocol/filesStream.ts"
import type { Request } from "../protocol/requests.ts"
import type { Response, RowsResponse } from "../protocol/responses.ts"
import type { Value } from "../protocol/values.ts"
import { paramsSchemaFor } from "../protocol/wire.ts"
import type { PeerTlsOptions } from "../peers/sockets.ts"
import type { PreparedOnConnection } from "./Connection.ts"
import { Connection, statementsCachedMax } from "./Connection.ts"
import type { ClientError } from "./errors.ts"
import { certainlyNotApplied, InvalidArgument, invalidatesConnection, NoLeader, ProtocolError, RequestTimeout, ServerUnresponsive } from "./errors.ts"
import type { ParamValue, Row } from "./values.ts"
import { paramsOf, rowValueOf } from "./values.ts"

export interface ClientOptions {
  /** Addresses ("host:port") of some cluster members; the leader is found from any of them. */
  readonly servers: ReadonlyArray<string>
  /** The database every connection opens. */
  readonly database: string
  readonly connectTimeoutMs?: number
  readonly requestTimeoutMs?: number
  /** Attempts after the first, for failures that may be retried. */
  readonly retriesMax?: number
  readonly retryBaseMs?: number
  readonly retryCapMs?: number
  /** Connections to the leader held at once (each serves one request or transaction at a time). */
  readonly connectionsMax?: number
  /** Largest response read whole; `dump` holds at most this (`dumpTo` streams any size). */
  readonly messageBytesMax?: number
  readonly tls?: PeerTlsOptions | null
  /** A request unanswered this long makes the client probe its server (LEADER on a second
   * connection); 0: never probe, wait for the request timeout. */
  readonly livenessProbeAfterMs?: number
  /** A server that answers neither the request nor the probe within this is silent (paused,
   * wedged): the request fails with ServerUnresponsive (an unknown outcome: retried only when
   * idempotent, on whichever server leads then). Also bounds each LEADER of leader discovery. */
  readonly livenessTimeoutMs?: number
  /** tqlite only: read single read-only statements (`query` of a text `looksReadOnly` accepts,
   * outside a transaction) from `readFrom` at this level, on one connection that asks for it
   * when it opens (net/protocol/readLevel.ts). A server that will not serve it that way (it is
   * dqlite, or not a read after all) answers "not leader" and the query goes to the leader. */
  readonly readConsistency?: ReadConsistency
  /** The server those reads go to (default: the first of `servers`). */
  readonly readFrom?: string
}

export const clientDefaults = {
  connectTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  // Retries wait 50, 100, 200, then 250 ms: a new leader is found within a quarter second of
  // its election, and the 16 retries span ~3.6 s, several elections (failover: 0.5–1 s).
  retriesMax: 16,
  retryBaseMs: 50,
  retryCapMs: 250,
  connectionsMax: 4,
  messageBytesMax: messageBytesMaxDefault,
  // A paused leader is noticed after ~3 s instead of the 10 s request timeout. The probe's 2 s
  // are far beyond an election timeout (0.5–1 s): a server that slow has lost its leadership
  // anyway, and a merely loaded one (load average 25 on 2 cores, seen) is not cut off.
  livenessProbeAfterMs: 1_000,
  livenessTimeoutMs: 2_000
} as const

export interface ExecResult {
  readonly lastInsertId: bigint
  readonly rowsAffected: bigint
}

export interface QueryResult {
  readonly columns: ReadonlyArray<string>
  readonly rows: ReadonlyArray<Row>
}

export interface QueryOptions {
  /** Whether the statement may be re-run when its outcome is unknown. Default: true when every
   * statement of the text starts with SELECT, VALUES, EXPLAIN or WITH and has no INSERT,
   * UPDATE, DELETE, REPLACE or RETURNING outside its strings and comments (`looksReadOnly`):
   * the server runs every statement of a QUERY_SQL. */
  readonly idempotent?: boolean
}

export interface LeaderInfo {
  readonly id: bigint
  readonly address: string
}

export type ServerRole = "voter" | "standby" | "spare"

export interface ServerInfo {
  readonly id: bigint
  readonly address: string
  readonly role: ServerRole
}

export interface DumpedFile {
  readonly name: string
  readonly data: Uint8Array
}

/** How `dumpTo` bounds its waits. */
export interface DumpStreamOptions {
  /** The whole dump (default: the client's `requestTimeoutMs`). */
  readonly timeoutMs?: number
  /** The longest wait for the answer's next bytes once it has begun (default
   * `dumpIdleTimeoutMsDefault`). */
  readonly idleTimeoutMs?: number
}

/** A server that stops sending a dump's bytes for this long is given up. Generous: the leader
 * sends as fast as the client reads (TCP back-pressure), so a gap this long is a dead server. */
export const dumpIdleTimeoutMsDefault = 30_000

/** A prepared statement. It is prepared on each connection that runs it (and again after a
 * leader change), and cached there. */
export interface Statement {
  readonly sql: string
  readonly paramCount: number
  readonly exec: (params?: ReadonlyArray<ParamValue>) => Effect.Effect<ExecResult, ClientError>
  readonly query: (params?: ReadonlyArray<ParamValue>, options?: QueryOptions) => Effect.Effect<QueryResult, ClientError>
  readonly stream: (params?: ReadonlyArray<ParamValue>, options?: QueryOptions) => Stream.Stream<Row, ClientError>
}

export interface DqliteClientService {
  readonly exec: (sql: string, params?: ReadonlyArray<ParamValue>) => Effect.Effect<ExecResult, ClientError>
  readonly query: (sql: string, params?: ReadonlyArray<ParamValue>, options?: QueryOptions) => Effect.Effect<QueryResult, ClientError>
  readonly stream: (sql: string, params?: ReadonlyArray<ParamValue>, options?: QueryOptions) => Stream.Stream<Row, ClientError>
  readonly prepare: (sql: string) => Effect.Effect<Statement, ClientError>
  readonly transaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | ClientError, R>
  readonly leader: Effect.Effect<LeaderInfo | null, ClientError>
  readonly cluster: Effect.Effect<ReadonlyArray<ServerInfo>, ClientError>
  readonly add: (id: bigint, address: string) => Effect.Effect<void, ClientError>
  readonly assign: (id: bigint, role: ServerRole) => Effect.Effect<void, ClientError>
  readonly remove: (id: bigint) => Effect.Effect<void, ClientError>
  /** Hands leadership to `id` (0n: let the cluster pick). */
  readonly transfer: (id: bigint) => Effect.Effect<void, ClientError>
  /** Asks one server (no leader discovery) for its failure domain and weight. */
  readonly describe: (address: string) => Effect.Effect<{ readonly failureDomain: bigint; readonly weight: bigint }, ClientError>
  readonly setWeight: (address: string, weight: bigint) => Effect.Effect<void, ClientError>
  /** One server's copy of a database (default: the client's): the main file and its WAL, whole
   * in memory, so at most `messageBytesMax` of FILES answer (a larger one fails with
   * ProtocolError). Retried like other idempotent requests. For any size, use `dumpTo`. */
  readonly dump: (address: string, database?: string) => Effect.Effect<ReadonlyArray<DumpedFile>, ClientError>
  /** One server's copy of a database streamed to `sink` as it arrives (Connection `callFiles`):
   * `Files` (count, body size), then per file `File` (name, size) and its bytes as `Data` pieces
   * (≤ 1 MiB; views of the socket's chunks, valid after the sink returns), then `End`. The socket
   * is read only when `sink` has finished with the last piece. No size bound, no retries (the sink
   * may have taken pieces): a FAILURE answer (not leader, …) comes before any piece. */
  readonly dumpTo: <E, R>(address: string, database: string, sink: (piece: FilesPiece) => Effect.Effect<void, E, R>, options?: DumpStreamOptions) => Effect.Effect<void, ClientError | E, R>
}

export class DqliteClient extends Context.Tag("tqlite/net/client/DqliteClient")<DqliteClient, DqliteClientService>() {}

interface PooledConnection {
  readonly connection: Connection
  readonly scope: ScopeOps.CloseableScope
}

interface TransactionBinding {
  readonly client: symbol
  readonly entry: PooledConnection
}

/** The connection of the transaction the current fiber is in, per client. */
const currentTransaction = FiberRef.unsafeMake<TransactionBinding | null>(null)

/** Conservative: false only makes a query non-retryable after an unknown outcome. */
export { looksReadOnly }

const roleByCode: Record<number, ServerRole> = { [RoleCode.voter]: "voter", [RoleCode.standby]: "standby", [RoleCode.spare]: "spare" }

/** The client in the current scope; closing the scope closes its connections. */
export const make = (options: ClientOptions): Effect.Effect<DqliteClientService, never, Scope.Scope> =>
  Effect.gen(function*() {
    const settings = { ...clientDefaults, ...definedOnly(options) }
    const clientScope = yield* Effect.scope
    const clientId = Symbol("DqliteClient")
    const permits = yield* Effect.makeSemaphore(settings.connectionsMax)
    const idle: Array<PooledConnection> = []
    let knownLeader: string | null = null

    const connectionOptions = (address: string) => ({
      address,
      connectTimeoutMs: settings.connectTimeoutMs,
      requestTimeoutMs: settings.requestTimeoutMs,
      messageBytesMax: settings.messageBytesMax,
      tls: settings.tls ?? null,
      liveness: settings.livenessProbeAfterMs > 0 ? { probeAfterMs: settings.livenessProbeAfterMs, timeoutMs: settings.livenessTimeoutMs } : null
    })

    /** A connection in its own scope (a child of the client's), closed on failure. */
    const openConnection = (address: string): Effect.Effect<PooledConnection, ClientError> =>
      Effect.gen(function*() {
        const scope = yield* ScopeOps.fork(clientScope, ExecutionStrategy.sequential)
        const connection = yield* Connection.open(connectionOptions(address)).pipe(
          ScopeOps.extend(scope),
          Effect.tapError(() => ScopeOps.close(scope, Exit.void))
        )
        return { connection, scope }
      })

    const discard = (entry: PooledConnection) => ScopeOps.close(entry.scope, Exit.void)

    // Discovery asks with the liveness timeout: a paused server in the list must not hold the
    // search for a whole request timeout.
    const askLeader = (entry: PooledConnection): Effect.Effect<LeaderInfo, ClientError> =>
      Effect.flatMap(entry.connection.call({ kind: "leader" }), (response) =>
        response.kind === "server"
          ? Effect.succeed({ id: response.nodeId, address: response.address })
          : Effect.fail(new ProtocolError({ address: entry.connection.address, detail: `LEADER answered ${response.kind}` }))).pipe(
          Effect.timeoutFail({
            duration: Duration.millis(Math.min(settings.livenessTimeoutMs, settings.requestTimeoutMs)),
            onTimeout: () => new ServerUnresponsive({ address: entry.connection.address, request: "leader", silentMs: Math.min(settings.livenessTimeoutMs, settings.requestTimeoutMs) })
          })
        )

    /** go-dqlite's discovery: the server that names itself as leader, following one redirect. */
    const findLeader: Effect.Effect<PooledConnection, ClientError> = Effect.gen(function*() {
      const candidates = [...new Set([...(knownLeader === null ? [] : [knownLeader]), ...settings.servers])]
      const failures: Array<string> = []
      const probe = (address: string) =>
        Effect.gen(function*() {
          const entry = yield* openConnection(address)
          const answer = yield* Effect.either(askLeader(entry))
          if (answer._tag === "Left" || answer.right.address !== address) yield* discard(entry)
          if (answer._tag === "Left") return yield* Effect.fail(answer.left)
          return { entry, leader: answer.right.address }
        })
      for (const address of candidates) {
        const first = yield* Effect.either(probe(address))
        if (first._tag === "Left") {
          failures.push(`${address}: ${describeError(first.left)}`)
          continue
        }
        if (first.right.leader === address) return first.right.entry
        if (first.right.leader === "") {
          failures.push(`${address}: knows no leader`)
          continue
        }
        const redirected = yield* Effect.either(probe(first.right.leader))
        if (redirected._tag === "Left") {
          failures.push(`${first.right.leader} (named by ${address}): ${describeError(redirected.left)}`)
          continue
        }
        if (redirected.right.leader === first.right.leader) return redirected.right.entry
        failures.push(`${first.right.leader} (named by ${address}) names ${redirected.right.leader || "no leader"}`)
      }
      return yield* Effect.fail(new NoLeader({ detail: failures.join("; ") || "no servers given" }))
    })

    /** A leader connection with the database open. */
    const connectLeader: Effect.Effect<PooledConnection, ClientError> = Effect.gen(function*() {
      const entry = yield* findLeader
      const opened = yield* Effect.either(entry.connection.call({ kind: "open", database: settings.database, flags: 0n, vfs: "" }))
      if (opened._tag === "Left") {
        yield* discard(entry)
        return yield* Effect.fail(opened.left)
      }
      if (opened.right.kind !== "db") {
        yield* discard(entry)
        return yield* Effect.fail(new ProtocolError({ address: entry.connection.address, detail: `OPEN answered ${opened.right.kind}` }))
      }
      entry.connection.database = settings.database
      knownLeader = entry.connection.address
      return entry
    })

    const takeConnection: Effect.Effect<PooledConnection, ClientError> = Effect.gen(function*() {
      for (;;) {
        const entry = idle.pop()
        if (entry === undefined) return yield* connectLeader
        entry.connection.stopIdleWatch()
        if (entry.connection.isUsable) return entry
        yield* discard(entry)
      }
    })

    const returnConnection = (entry: PooledConnection) =>
      Effect.suspend(() => {
        if (!entry.connection.isUsable || idle.length >= settings.connectionsMax) return discard(entry)
        entry.connection.startIdleWatch()
        idle.push(entry)
        return Effect.void
      })

    /** A pooled leader connection for the current scope. */
    // Permits in use, counted beside the semaphore: while one is free, taking it cannot wait,
    // so the timeout (a fiber and a timer) is paid only when the pool is exhausted.
    let permitsTaken = 0
    const takePermit = Effect.suspend(() =>
      permitsTaken < settings.connectionsMax
        ? permits.take(1)
        : permits.take(1).pipe(
          Effect.timeoutFail({
            duration: Duration.millis(settings.requestTimeoutMs),
            onTimeout: () => new RequestTimeout({ address: "(client pool)", request: "connection", timeoutMs: settings.requestTimeoutMs })
          })
        )
    ).pipe(Effect.tap(() => void permitsTaken++))
    const releasePermit = Effect.suspend(() => {
      permitsTaken--
      return permits.release(1)
    })

    const lease: Effect.Effect<PooledConnection, ClientError, Scope.Scope> = Effect.zipRight(
      Effect.acquireRelease(takePermit, () => releasePermit),
      Effect.acquireRelease(takeConnection, returnConnection)
    )

    const invalidate = (entry: PooledConnection, error: ClientError) =>
      Effect.suspend(() => {
        if (!invalidatesConnection(error)) return Effect.void
        if (knownLeader === entry.connection.address) knownLeader = null
        return entry.connection.close
      })

    /** Runs `f` on the transaction's connection, or on a leased one (invalidated on failures
     * that say the connection or its leadership is gone). */
    const withConnection = <A>(f: (connection: Connection) => Effect.Effect<A, ClientError>): Effect.Effect<A, ClientError> =>
      Effect.flatMap(FiberRef.get(currentTransaction), (binding) => {
        // Fibers forked inside a transaction share its connection: one exchange at a time.
        if (binding !== null && binding.client === clientId) return binding.entry.connection.exclusive(f(binding.entry.connection))
        return Effect.scoped(Effect.flatMap(lease, (entry) => f(entry.connection).pipe(Effect.tapError((error) => invalidate(entry, error)))))
      })

    const retrySchedule = Schedule.exponential(Duration.millis(settings.retryBaseMs)).pipe(
      Schedule.union(Schedule.spaced(Duration.millis(settings.retryCapMs)))
    )

    /** Bounded retries: always for failures that certainly did nothing; for unknown outcomes only
     * when `idempotent`. Never inside a transaction. */
    const retrying = <A>(attempt: Effect.Effect<A, ClientError>, idempotent: boolean): Effect.Effect<A, ClientError> =>
      Effect.flatMap(FiberRef.get(currentTransaction), (binding) =>
        binding !== null && binding.client === clientId
          ? attempt
          : Effect.retry(attempt, {
            schedule: retrySchedule,
            times: settings.retriesMax,
            while: (error) => certainlyNotApplied(error) || (idempotent && unknownOutcome(error))
          }))

    const encodeParams = (params: ReadonlyArray<ParamValue>): Effect.Effect<Array<Value>, InvalidArgument> =>
      Effect.try({
        try: () => paramsOf(params),
        catch: (error) => error instanceof InvalidArgument ? error : new InvalidArgument({ detail: String(error) })
      })

    const expect = <K extends Response["kind"]>(connection: Connection, response: Response, kind: K) =>
      response.kind === kind
        ? Effect.succeed(response as Extract<Response, { kind: K }>)
        : Effect.zipRight(connection.close, Effect.fail(new ProtocolError({ address: connection.address, detail: `expected ${kind}, got ${response.kind}` })))

    const resultOf = (connection: Connection, response: Response) =>
      Effect.map(expect(connection, response, "result"), (r): ExecResult => ({ lastInsertId: BigInt.asIntN(64, r.lastInsertId), rowsAffected: r.rowsAffected }))

    /** The statement's id on `connection`, preparing (and caching) it there if needed. */
    const preparedOn = (connection: Connection, sql: string): Effect.Effect<PreparedOnConnection, ClientError> =>
      Effect.gen(function*() {
        const cached = connection.statements.get(sql)
        if (cached !== undefined) return cached
        if (connection.statements.size >= statementsCachedMax) {
          const [oldestSql, oldest] = connection.statements.entries().next().value as [string, PreparedOnConnection]
          connection.statements.delete(oldestSql)
          yield* Effect.ignore(connection.call({ kind: "finalize", dbId: 0, stmtId: oldest.stmtId }))
        }
        const response = yield* connection.call({ kind: "prepare", schema: 0, dbId: 0n, sql })
        const stmt = yield* expect(connection, response, "stmt")
        const prepared = { stmtId: stmt.stmtId, paramCount: stmt.paramCount }
        connection.statements.set(sql, prepared)
        return prepared
      })

    /** A whole result: the first batch, then every batch after a PART. */
    const collectRows = (connection: Connection, request: Request): Effect.Effect<QueryResult, ClientError> =>
      Effect.gen(function*() {
        let page = yield* connection.startRows(request)
        const rows: Array<Row> = page.rows.map((row) => row.map(rowValueOf))
        const columns = page.columns
        while (page.end === "part") {
          page = yield* connection.nextRows(request)
          for (const row of page.rows) rows.push(row.map(rowValueOf))
        }
        return { columns, rows }
      })

    /** Rows as they arrive. The first batch is fetched (and retried when idempotent) before the
     * stream starts; later batches are read as the stream is pulled. */
    const streamRows = (
      makeRequest: (connection: Connection) => Effect.Effect<Request, ClientError>,
      idempotent: boolean
    ): Stream.Stream<Row, ClientError> =>
      Stream.unwrapScoped(
        Effect.gen(function*() {
          const streamScope = yield* Effect.scope
          const binding = yield* FiberRef.get(currentTransaction)
          if (binding !== null && binding.client === clientId) {
            // Inside a transaction the connection is shared with the statements the stream's
            // consumer may run, and the protocol allows nothing else on a connection while a
            // result streams: read the whole result first.
            const pinned = binding.entry.connection
            const result = yield* pinned.exclusive(Effect.flatMap(makeRequest(pinned), (request) => collectRows(pinned, request)))
            return Stream.fromIterable(result.rows)
          }
          const attempt = Effect.gen(function*() {
            const attemptScope = yield* ScopeOps.fork(streamScope, ExecutionStrategy.sequential)
            const entry = yield* lease.pipe(ScopeOps.extend(attemptScope), Effect.tapError(() => ScopeOps.close(attemptScope, Exit.void)))
            return yield* Effect.gen(function*() {
              const request = yield* makeRequest(entry.connection)
              return { connection: entry.connection, request, first: yield* entry.connection.startRows(request) }
            }).pipe(Effect.tapError((error) => Effect.zipRight(invalidate(entry, error), ScopeOps.close(attemptScope, Exit.void))))
          })
          const { connection, request, first } = yield* retrying(attempt, idempotent)
          let done = first.end === "done"
          yield* Effect.addFinalizer(() =>
            done || !connection.isUsable ? Effect.void : Effect.catchAll(connection.interruptRows(), () => connection.close))
          const rowsOf = (page: RowsResponse) => Chunk.fromIterable(page.rows.map((row) => row.map(rowValueOf)))
          return Stream.paginateChunkEffect<"first" | "more", Row, ClientError, never>("first", (state) => {
            if (state === "first") return Effect.succeed([rowsOf(first), done ? Option.none() : Option.some("more" as const)])
            return Effect.map(connection.nextRows(request), (page) => {
              done = page.end === "done"
              return [rowsOf(page), done ? Option.none() : Option.some("more" as const)]
            })
          })
        })
      )

    const execSql = (sql: string, params: ReadonlyArray<ParamValue> = []) =>
      Effect.flatMap(encodeParams(params), (values) =>
        retrying(
          withConnection((connection) =>
            Effect.flatMap(
              connection.call({ kind: "execSql", schema: paramsSchemaFor(values.length), dbId: 0n, sql, params: values }),
              (response) => resultOf(connection, response)
            )),
          false
        ))

    const querySql = (sql: string, params: ReadonlyArray<ParamValue> = [], options: QueryOptions = {}) =>
      Effect.flatMap(encodeParams(params), (values) =>
        retrying(
          withConnection((connection) =>
            collectRows(connection, { kind: "querySql", schema: paramsSchemaFor(values.length), dbId: 0n, sql, params: values })),
          options.idempotent ?? looksReadOnly(sql)
        ))

    // Reads at a level from one server (readConsistency): one connection, one read at a time.
    const readLevel = settings.readConsistency ?? null
    const readFrom = settings.readFrom ?? settings.servers[0] ?? null
    const readerLock = yield* Effect.makeSemaphore(1)
    let reader: PooledConnection | null = null
    const readerConnection = (level: ReadConsistency, address: string): Effect.Effect<PooledConnection, ClientError> =>
      Effect.gen(function*() {
        if (reader !== null && reader.connection.isUsable) return reader
        if (reader !== null) yield* discard(reader)
        reader = null
        const entry = yield* openConnection(address)
        const opened = yield* Effect.either(entry.connection.call({ kind: "open", database: settings.database, flags: 0n, vfs: readLevelText(level) }))
        if (opened._tag === "Left" || opened.right.kind !== "db") {
          yield* discard(entry)
          return yield* (opened._tag === "Left" ? Effect.fail(opened.left) : Effect.fail(new ProtocolError({ address, detail: `OPEN answered ${opened.right.kind}` })))
        }
        entry.connection.database = settings.database
        reader = entry
        return entry
      })
    const queryAtLevel = (sql: string, params: ReadonlyArray<ParamValue> = [], options: QueryOptions = {}): Effect.Effect<QueryResult, ClientError> =>
      Effect.flatMap(FiberRef.get(currentTransaction), (binding) => {
        if (readLevel === null || readFrom === null || (binding !== null && binding.client === clientId) || !looksReadOnly(sql)) return querySql(sql, params, options)
        return Effect.flatMap(encodeParams(params), (values) =>
          readerLock.withPermits(1)(Effect.flatMap(readerConnection(readLevel, readFrom), (entry) =>
            collectRows(entry.connection, { kind: "querySql", schema: paramsSchemaFor(values.length), dbId: 0n, sql, params: values }).pipe(
              Effect.tapError((error) => (invalidatesConnection(error) ? Effect.zipRight(discard(entry), Effect.sync(() => void (reader = null))) : Effect.void))
            )))
        ).pipe(Effect.catchIf((error) => error._tag === "ServerFailure" && error.isNotLeader, () => querySql(sql, params, options)))
      })

    const streamSql = (sql: string, params: ReadonlyArray<ParamValue> = [], options: QueryOptions = {}) =>
      Stream.unwrap(Effect.map(encodeParams(params), (values) =>
        streamRows(
          () => Effect.succeed({ kind: "querySql", schema: paramsSchemaFor(values.length), dbId: 0n, sql, params: values }),
          options.idempotent ?? looksReadOnly(sql)
        )))

    const prepare = (sql: string): Effect.Effect<Statement, ClientError> =>
      Effect.map(retrying(withConnection((connection) => preparedOn(connection, sql)), true), (first): Statement => {
        const statementRequest = (kind: "exec" | "query", values: Array<Value>) => (connection: Connection) =>
          Effect.map(preparedOn(connection, sql), (prepared): Request => ({
            kind,
            schema: paramsSchemaFor(values.length),
            dbId: 0,
            stmtId: prepared.stmtId,
            params: values
          }))
        return {
          sql,
          paramCount: first.paramCount,
          exec: (params = []) =>
            Effect.flatMap(encodeParams(params), (values) =>
              retrying(
                withConnection((connection) =>
                  Effect.flatMap(statementRequest("exec", values)(connection), (request) =>
                    Effect.flatMap(connection.call(request), (response) => resultOf(connection, response)))),
                false
              )),
          query: (params = [], options = {}) =>
            Effect.flatMap(encodeParams(params), (values) =>
              retrying(
                withConnection((connection) =>
                  Effect.flatMap(statementRequest("query", values)(connection), (request) => collectRows(connection, request))),
                options.idempotent ?? looksReadOnly(sql)
              )),
          stream: (params = [], options = {}) =>
            Stream.unwrap(Effect.map(encodeParams(params), (values) =>
              streamRows(statementRequest("query", values), options.idempotent ?? looksReadOnly(sql))))
        }
      })

    const simpleExec = (connection: Connection, sql: string) =>
      Effect.flatMap(connection.call({ kind: "execSql", schema: 0, dbId: 0n, sql, params: [] }), (response) => resultOf(connection, response))

    const rollbackQuietly = (entry: PooledConnection) =>
      Effect.suspend(() => {
        if (!entry.connection.isUsable) return Effect.void
        return simpleExec(entry.connection, "ROLLBACK").pipe(
          Effect.catchAll((error) =>
            // "no transaction is active" (already rolled back, e.g. by a leadership loss) is fine;
            // anything else leaves the connection's state unknown: drop it.
            error._tag === "ServerFailure" && !invalidatesConnection(error) ? Effect.void : entry.connection.close)
        )
      })

    const transaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | ClientError, R> =>
      Effect.flatMap(FiberRef.get(currentTransaction), (binding) => {
        if (binding !== null && binding.client === clientId) return effect
        return Effect.scoped(Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            const scope = yield* Effect.scope
            const begin = Effect.gen(function*() {
              const attemptScope = yield* ScopeOps.fork(scope, ExecutionStrategy.sequential)
              const entry = yield* lease.pipe(ScopeOps.extend(attemptScope), Effect.tapError(() => ScopeOps.close(attemptScope, Exit.void)))
              yield* simpleExec(entry.connection, "BEGIN").pipe(
                Effect.tapError((error) => Effect.zipRight(invalidate(entry, error), ScopeOps.close(attemptScope, Exit.void)))
              )
              return entry
            })
            // BEGIN may be sent again: a BEGIN whose connection died left nothing behind.
            const entry = yield* restore(retrying(begin, true))
            const outcome = yield* Effect.exit(restore(Effect.locally(effect, currentTransaction, { client: clientId, entry })))
            if (Exit.isSuccess(outcome)) {
              const committed = yield* Effect.exit(restore(simpleExec(entry.connection, "COMMIT")))
              if (Exit.isSuccess(committed)) return outcome.value
              yield* invalidateOnExit(entry, committed)
              yield* rollbackQuietly(entry)
              return yield* Effect.failCause(committed.cause)
            }
            yield* rollbackQuietly(entry)
            return yield* outcome
          })
        ))
      })

    const invalidateOnExit = (entry: PooledConnection, exit: Exit.Exit<unknown, ClientError>) =>
      Exit.isFailure(exit) && exit.cause._tag === "Fail" ? invalidate(entry, exit.cause.error) : Effect.void

    /** A request on one server, no discovery (DESCRIBE, WEIGHT, DUMP). */
    const onServer = <A>(address: string, f: (connection: Connection) => Effect.Effect<A, ClientError>) =>
      retrying(Effect.scoped(Effect.flatMap(Connection.open(connectionOptions(address)), f)), true)

    const admin = (request: Request, idempotent: boolean) =>
      retrying(
        withConnection((connection) => Effect.flatMap(connection.call(request), (response) => expect(connection, response, "empty"))),
        idempotent
      )

    const dropIdle = Effect.suspend(() => {
      const entries = idle.splice(0, idle.length)
      knownLeader = null
      return Effect.forEach(entries, discard, { discard: true })
    })

    yield* Effect.addFinalizer(() => dropIdle)

    const service: DqliteClientService = {
      exec: execSql,
      query: queryAtLevel,
      stream: streamSql,
      prepare,
      transaction,
      leader: retrying(
        withConnection((connection) =>
          Effect.flatMap(connection.call({ kind: "leader" }), (response) =>
            Effect.map(expect(connection, response, "server"), (server) =>
              server.address === "" ? null : { id: server.nodeId, address: server.address }))),
        true
      ),
      cluster: retrying(
        withConnection((connection) =>
          Effect.flatMap(connection.call({ kind: "cluster", format: 1 }), (response) =>
            Effect.map(expect(connection, response, "servers"), (servers) =>
              servers.servers.map((server) => ({
                id: server.nodeId,
                address: server.address,
                role: roleByCode["role" in server ? server.role : RoleCode.voter] ?? "voter"
              }))))),
        true
      ),
      add: (id, address) => Effect.asVoid(admin({ kind: "add", nodeId: id, address }, false)),
      assign: (id, role) => Effect.asVoid(admin({ kind: "assign", nodeId: id, role: RoleCode[role] }, false)),
      remove: (id) => Effect.asVoid(admin({ kind: "remove", nodeId: id }, false)),
      transfer: (id) => Effect.zipRight(admin({ kind: "transfer", nodeId: id }, false), dropIdle),
      describe: (address) =>
        onServer(address, (connection) =>
          Effect.flatMap(connection.call({ kind: "describe", format: 0 }), (response) =>
            Effect.map(expect(connection, response, "metadata"), (m) => ({ failureDomain: m.failureDomain, weight: m.weight })))),
      setWeight: (address, weight) =>
        onServer(address, (connection) =>
          Effect.flatMap(connection.call({ kind: "weight", weight }), (response) => Effect.asVoid(expect(connection, response, "empty")))),
      dump: (address, database = settings.database) =>
        onServer(address, (connection) =>
          Effect.suspend(() => {
            const collector = new FilesCollector(address, settings.messageBytesMax)
            return Effect.as(
              connection.callFiles({ kind: "dump", database }, collector.sink, { idleTimeoutMs: dumpIdleTimeoutMsDefault }),
              collector.files
            )
          })),
      dumpTo: (address, database, sink, options = {}) =>
        Effect.scoped(Effect.flatMap(Connection.open(connectionOptions(address)), (connection) =>
          connection.callFiles({ kind: "dump", database }, sink, {
            timeoutMs: options.timeoutMs ?? settings.requestTimeoutMs,
            idleTimeoutMs: options.idleTimeoutMs ?? dumpIdleTimeoutMsDefault
          })))
    }
    return service
  })

/** `dump`'s sink: each file whole in memory, the answer bounded as a whole message would be. */
class FilesCollector {
  readonly files: Array<DumpedFile> = []
  private current: { data: Uint8Array; filled: number } | null = null

  constructor(private readonly address: string, private readonly messageBytesMax: number) {}

  readonly sink = (piece: FilesPiece): Effect.Effect<void, ProtocolError> =>
    Effect.suspend(() => {
      switch (piece._tag) {
        case "Files":
          if (headerBytes + piece.bodyBytes > this.messageBytesMax) {
            return Effect.fail(new ProtocolError({
              address: this.address,
              detail: `dump: a FILES answer of ${headerBytes + piece.bodyBytes} bytes exceeds messageBytesMax ${this.messageBytesMax} (dumpTo streams any size)`
            }))
          }
          return Effect.void
        case "File": {
          const data = new Uint8Array(piece.sizeBytes)
          this.files.push({ name: piece.name, data })
          this.current = { data, filled: 0 }
          return Effect.void
        }
        case "Data": {
          const current = this.current
          assert(current !== null && current.filled + piece.bytes.byteLength <= current.data.byteLength, "pieces stay within their file")
          current.data.set(piece.bytes, current.filled)
          current.filled += piece.bytes.byteLength
          return Effect.void
        }
        case "End":
          return Effect.void
      }
    })
}

export const layer = (options: ClientOptions): Layer.Layer<DqliteClient> => Layer.scoped(DqliteClient, make(options))

function unknownOutcome(error: ClientError): boolean {
  switch (error._tag) {
    case "ConnectionLost":
    case "RequestTimeout":
    case "ServerUnresponsive":
    case "ProtocolError":
      return true
    case "ServerFailure":
      return error.isLeadershipLost
    default:
      return false
  }
}

function describeError(error: ClientError): string {
  switch (error._tag) {
    case "ServerFailure":
      return `FAILURE ${error.code} ${error.message}`
    case "ConnectionFailed":
    case "ConnectionLost":
    case "ProtocolError":
    case "NoLeader":
    case "InvalidArgument":
      return error.detail
    case "RequestTimeout":
      return `${error.request} timed out after ${error.timeoutMs} ms`
    case "ServerUnresponsive":
      return `${error.request}: no answer for ${error.silentMs} ms, nor to a liveness probe`
  }
}

function definedOnly<T extends object>(value: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as { [K in keyof T]: Exclude<T[K], undefined> }
}

/** Whether a failure is dqlite's "not leader". */
export const isNotLeader = (error: ClientError): boolean => error._tag === "ServerFailure" && error.code === ErrorCode.notLeader
