// The SQL surface of a tqlite node, as the dqlite gateway, the embedding API and tests see it.
// The replicated implementation (leader writer, pinned readers, followers answering NotLeader)
// lives beside it in src/sqlite; a gateway session holds one SqlSession per open database.
import type { Either, Scope } from "effect"
import { Data, Effect } from "effect"
import type { ReadConsistency } from "../actors/RaftActor.ts"
import type { NodeId } from "../raft/types.ts"
import type { StatementSpan } from "./statements.ts"

/** A value with SQLite's storage class: INTEGER is a `bigint`, REAL a `number` (so 2.0 and -0.0
 * stay REAL), TEXT a string, BLOB bytes, NULL null. Rows always come this way; a parameter binds
 * by its JS type the same way (a `number` binds as REAL). */
export type SqlValue = null | number | bigint | string | Uint8Array

export interface ExecResult {
  readonly lastInsertId: bigint
  readonly rowsAffected: number
}

export interface Rows {
  readonly columns: ReadonlyArray<string>
  /** The declared type of each column (e.g. "DATETIME", "BOOLEAN"), "" when none: dqlite maps
   * these to its unixtime / iso8601 / boolean value types. */
  readonly declaredTypes: ReadonlyArray<string>
  readonly rows: ReadonlyArray<ReadonlyArray<SqlValue>>
}

/** Some rows of a result, in order; `done` on the last batch of the result. */
export interface RowBatch {
  readonly rows: ReadonlyArray<ReadonlyArray<SqlValue>>
  readonly done: boolean
}

/** A result set handed over a batch at a time while the statement is still stepping (a read on
 * the leader's reader threads): memory stays bounded by a few batches whatever the result's
 * size, and the first rows go out before the last are read. It holds a reader, and its pinned
 * snapshot, until the last batch, a failure, or its scope closes (a client gone, INTERRUPT). */
export interface RowStream {
  readonly columns: ReadonlyArray<string>
  readonly declaredTypes: ReadonlyArray<string>
  readonly first: RowBatch
  /** The batch after the one last handed out; only while that one was not `done`. Taking it
   * releases the previous batch (the producer runs at most one batch ahead of the taker). */
  readonly next: Effect.Effect<RowBatch, SqlFailure>
}

const noNextBatch: Effect.Effect<RowBatch, SqlFailure> = Effect.die("a one-batch stream has no next batch")

/** A whole result as a stream of one batch. */
export function rowStreamOf(rows: Rows): RowStream {
  return { columns: rows.columns, declaredTypes: rows.declaredTypes, first: { rows: rows.rows, done: true }, next: noNextBatch }
}

export interface Prepared {
  readonly id: number
  readonly sql: string
  readonly paramCount: number
  /** Offset in the original SQL text just after this statement (dqlite's tail). */
  readonly tailOffset: number
  readonly readonly: boolean
}

/** SQLite refused the statement: `code` is SQLite's (extended) result code, as dqlite sends it. */
export class SqlError extends Data.TaggedError("SqlError")<{ readonly code: number; readonly message: string }> {}

/** This node is not the leader (dqlite's SQLITE_IOERR_NOT_LEADER, 10250). */
export class SqlNotLeader extends Data.TaggedError("SqlNotLeader")<{ readonly leader: NodeId | null; readonly message: string }> {}

/** Leadership was lost while the request was in flight: its outcome is unknown (dqlite's
 * SQLITE_IOERR_LEADERSHIP_LOST, 10506). */
export class SqlLeadershipLost extends Data.TaggedError("SqlLeadershipLost")<{ readonly message: string }> {}

/** The write queue is full or a write waited past its timeout; nothing was done. */
export class SqlBusy extends Data.TaggedError("SqlBusy")<{ readonly message: string }> {}

/** This node's copy is not fresh enough for the read's consistency level, and waiting would not
 * help in time; nothing was read. `reason`: "lag" — a bounded read on a node that has not heard
 * from its leader within `maxLagMs`; "session" — the session's index was not applied here
 * within the wait bound; "replaying" — after a restart, the node has not replayed far enough to
 * read its files. Read elsewhere, at another level, or later. */
export class SqlStale extends Data.TaggedError("SqlStale")<{ readonly reason: "lag" | "session" | "replaying"; readonly message: string }> {}

export type SqlFailure = SqlError | SqlNotLeader | SqlLeadershipLost | SqlBusy | SqlStale

/** One client's view of one database: statements, and an interactive transaction (BEGIN …
 * COMMIT across calls) that holds the database's writer until it ends or times out. */
export interface SqlSession {
  readonly database: string
  /** One statement, already split from its text by the caller (the gateway's PREPARE: the text
   * is split once, in `net/gateway/ClientSession.ts`, and the tail stays there). */
  readonly prepare: (statement: StatementSpan) => Effect.Effect<Prepared, SqlFailure>
  readonly exec: (statement: number, params: ReadonlyArray<SqlValue>) => Effect.Effect<ExecResult, SqlFailure>
  readonly query: (statement: number, params: ReadonlyArray<SqlValue>) => Effect.Effect<Rows, SqlFailure>
  readonly finalize: (statement: number) => Effect.Effect<void, SqlFailure>
  /** Runs every statement of `sql` in turn (dqlite's EXEC_SQL / QUERY_SQL); each statement takes
   * as many of the remaining values as it has parameters (dqlite ≥ 1.12; 1.11 binds them all to
   * the first), by position; values left over → SqlError 25. `execSql` answers the counters after
   * the last statement, `querySql` the rows of the first (as dqlite), having run the others too. */
  readonly execSql: (sql: string, params: ReadonlyArray<SqlValue>) => Effect.Effect<ExecResult, SqlFailure>
  readonly querySql: (sql: string, params: ReadonlyArray<SqlValue>) => Effect.Effect<Rows, SqlFailure>
  /** Optional fast path of `querySql`, synchronous: the answer when it can be had at once (a
   * point read on the leader's committed view under its lease, say), else undefined, having run
   * nothing — then the caller uses `querySql`. Saves the Effect machinery on the hottest path. */
  readonly querySqlNow?: (sql: string, params: ReadonlyArray<SqlValue>) => Either.Either<Rows, SqlFailure> | undefined
  /** Optional plain forms of `execSql` / `exec` for the gateway's statement path: when the
   * statement can go straight to the leader's writer (one autocommit write, already compiled, no
   * transaction open, this term's writer running), it is submitted and `done` is called exactly
   * once with what `execSql` / `exec` would answer — maybe before this returns — and `after`,
   * when given, is an Effect the caller runs before answering (a disk-full report); true. Else
   * false, nothing run: the caller uses `execSql` / `exec`. No Effect or fiber per statement. */
  readonly execSqlWith?: (sql: string, params: ReadonlyArray<SqlValue>, done: ExecDone) => boolean
  readonly execWith?: (statement: number, params: ReadonlyArray<SqlValue>, done: ExecDone) => boolean
  /** Optional streamed forms of `query` / `querySql` (same statements, same answers): the rows
   * a batch at a time, for as long as the scope is open. An implementation may answer a whole
   * result as one batch (`rowStreamOf`) where it cannot stream (a statement inside a
   * transaction, a multi-statement text). Without them the caller uses `query` / `querySql`. */
  readonly queryStream?: (statement: number, params: ReadonlyArray<SqlValue>) => Effect.Effect<RowStream, SqlFailure, Scope.Scope>
  readonly querySqlStream?: (sql: string, params: ReadonlyArray<SqlValue>) => Effect.Effect<RowStream, SqlFailure, Scope.Scope>
  /** Stops the running query (dqlite's INTERRUPT). */
  readonly interrupt: Effect.Effect<void>
  readonly inTransaction: Effect.Effect<boolean>
}

/** The answer of a plain `execSqlWith` / `execWith`, and an Effect to run before answering. */
export type ExecDone = (result: Either.Either<ExecResult, SqlFailure>, after?: Effect.Effect<void>) => void

export interface OpenOptions {
  /** Set: on a node that does not lead, single read-only autocommit statements (QUERY_SQL /
   * EXEC_SQL text) are served from the node's own copy at this level instead of "not leader".
   * The leader serves every level as linearizable. */
  readonly readConsistency?: ReadConsistency
}

export interface SqlDatabases {
  /** Opens (creating if needed) a named database for one client; closing the scope finalizes
   * its statements and rolls back an open transaction. */
  readonly open: (name: string, options?: OpenOptions) => Effect.Effect<SqlSession, SqlFailure, Scope.Scope>
}
