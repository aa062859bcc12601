// An @effect/sql `SqlClient` over the Tqlite service (src/embed/Tqlite.ts): code written against
// `SqlClient` runs unchanged on a tqlite cluster, embedded or remote.
//
// - Statements compile with SQLite's dialect (`Statement.makeCompilerSqlite`) and run through
//   `Tqlite.query` (rows of the first statement, RETURNING included), so they
//   follow its routing: the local node when it leads, else the leader over the wire.
// - `withTransaction` is `Tqlite.transaction`: the @effect/sql transaction marker only records
//   the depth, the statements themselves find the transaction through Tqlite's fiber-local
//   binding. A nested `withTransaction` is a savepoint (rolled back to on failure).
// - Read consistency: `withConsistency(level)(effect)` sets the level of every statement `effect`
//   runs (Tqlite's fiber-local default, which `Tqlite.query` reads); on a node that does not
//   lead, a read-only statement is then served from the node's own copy at that level.
// - Every failure is @effect/sql's `SqlError` with the Tqlite error as `cause` (its `_tag` and,
//   for SQLite's refusals, `code`).
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Statement from "@effect/sql/Statement"
import { Context, Effect, Exit, FiberRef, Layer, Option, Stream } from "effect"
import type { TqliteError } from "../embed/errors.ts"
import type { ParamValue, QueryResult, ReadConsistency, TqliteConfig, TqliteRemoteConfig, TqliteService } from "../embed/Tqlite.ts"
import { Tqlite, withConsistency as tqliteWithConsistency } from "../embed/Tqlite.ts"
import type { TqliteStartError } from "../embed/errors.ts"

export const TypeId: unique symbol = Symbol.for("tqlite/sql/TqliteClient")
export type TypeId = typeof TypeId

export interface TqliteClient extends SqlClient.SqlClient {
  readonly [TypeId]: TypeId
  readonly config: TqliteClientConfig
  /** The service underneath (leader, members, role changes). */
  readonly tqlite: TqliteService
  /** Not supported by SQLite. */
  readonly updateValues: never
}

export const TqliteClient = Context.GenericTag<TqliteClient>("tqlite/sql/TqliteClient")

export interface TqliteClientConfig {
  readonly spanAttributes?: Record<string, unknown> | undefined
  readonly transformResultNames?: ((name: string) => string) | undefined
  readonly transformQueryNames?: ((name: string) => string) | undefined
}

/** The SqlClient over the `Tqlite` in context. */
export const make = (config: TqliteClientConfig = {}): Effect.Effect<TqliteClient, never, Tqlite | Reactivity.Reactivity> =>
  Effect.gen(function*() {
    const tqlite = yield* Tqlite
    const compiler = Statement.makeCompilerSqlite(config.transformQueryNames)
    const transformRows = config.transformResultNames === undefined ? undefined : Statement.defaultTransforms(config.transformResultNames).array

    const run = (sql: string, params: ReadonlyArray<unknown>) =>
      Effect.mapError(tqlite.query(sql, params as ReadonlyArray<ParamValue>), sqlErrorOf)

    const records = (sql: string, params: ReadonlyArray<unknown>, transform: (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined) =>
      Effect.map(run(sql, params), (result) => (transform === undefined ? recordsOf(result) : transform(recordsOf(result))))

    // One connection object for everything: which node and which transaction a statement goes
    // to is Tqlite's routing, not a property of a connection.
    const connection: Connection = {
      execute: records,
      executeUnprepared: records,
      executeValues: (sql, params) => Effect.map(run(sql, params), (result) => result.rows),
      // The raw result: column names and rows as arrays.
      executeRaw: run,
      // Results arrive whole (Tqlite.query); the stream replays them.
      executeStream: (sql, params, transform) => Stream.unwrap(Effect.map(records(sql, params, transform), (rows) => Stream.fromIterable(rows)))
    }
    const acquirer = Effect.succeed(connection)

    const spanAttributes: ReadonlyArray<readonly [string, unknown]> = [
      ...(config.spanAttributes === undefined ? [] : Object.entries(config.spanAttributes)),
      ["db.system.name", "sqlite"]
    ]
    const client = yield* SqlClient.make({ acquirer, transactionAcquirer: acquirer, compiler, spanAttributes, transformRows })
    return Object.assign(client, {
      [TypeId]: TypeId,
      config,
      tqlite,
      withTransaction: <R, E, A>(effect: Effect.Effect<A, E, R>) => withTransaction(tqlite, connection, effect)
    }) as unknown as TqliteClient
  })

/** Runs `effect` with `consistency` as the read level of its statements (and of the fibers it
 * forks): e.g. `sql\`SELECT …\`.pipe(TqliteClient.withConsistency({ level: "local" }))`.
 * Writes are unaffected; inside `withTransaction` the transaction's route serves everything. */
export const withConsistency = (consistency: ReadConsistency) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => tqliteWithConsistency(consistency)(effect)

/** Outermost: Tqlite's interactive transaction. Nested: a savepoint on it. */
const withTransaction = <R, E, A>(tqlite: TqliteService, connection: Connection, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> =>
  Effect.flatMap(FiberRef.get(FiberRef.currentContext), (context): Effect.Effect<A, E | SqlError, R> => {
    const outer = Context.getOption(context, SqlClient.TransactionConnection)
    const depth = Option.isSome(outer) ? outer.value[1] + 1 : 0
    const inside = Effect.locally(effect, FiberRef.currentContext, Context.add(context, SqlClient.TransactionConnection, [connection, depth] as const))
    if (depth === 0) {
      return tqlite.transaction(Effect.mapError(inside, (error) => new CallerFailure(error))).pipe(
        Effect.mapError((error): E | SqlError => (error instanceof CallerFailure ? (error.error as E) : sqlErrorOf(error as TqliteError)))
      )
    }
    const savepoint = `tqlite_sql_${depth}`
    return Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        yield* restore(connection.executeUnprepared(`SAVEPOINT ${savepoint}`, [], undefined))
        const outcome = yield* Effect.exit(restore(inside))
        // As @effect/sql does: a savepoint that cannot be rolled back to leaves the transaction
        // in an unknown state, so the whole transaction must fail (a defect rolls it back).
        if (Exit.isFailure(outcome)) yield* Effect.orDie(connection.executeUnprepared(`ROLLBACK TO SAVEPOINT ${savepoint}`, [], undefined))
        return yield* outcome
      })
    )
  })

/** Marks the caller's own failure while it crosses Tqlite.transaction. */
class CallerFailure<E> {
  constructor(readonly error: E) {}
}

function sqlErrorOf(error: TqliteError): SqlError {
  const code = error._tag === "SqlError" ? ` (SQLite code ${error.code})` : ""
  return new SqlError({ cause: error, message: `${error._tag}${code}: ${error.message}` })
}

/** Rows as objects keyed by column name (a repeated name keeps the last column's value). */
function recordsOf<A extends object>(result: QueryResult): ReadonlyArray<A> {
  return result.rows.map((row) => {
    const record: Record<string, unknown> = {}
    for (let i = 0; i < result.columns.length; i++) record[result.columns[i]!] = row[i]
    return record as A
  })
}

const clientContext = (client: TqliteClient) => Context.make(TqliteClient, client).pipe(Context.add(SqlClient.SqlClient, client))

/** `TqliteClient` and `SqlClient` over a `Tqlite` the caller provides. */
export const layerFromTqlite = (config: TqliteClientConfig = {}): Layer.Layer<TqliteClient | SqlClient.SqlClient, never, Tqlite> =>
  Layer.effectContext(Effect.map(make(config), clientContext)).pipe(Layer.provide(Reactivity.layer))

/** An embedded node (Tqlite.layer) with `TqliteClient` and `SqlClient` on top; `Tqlite` too. */
export const layer = (config: TqliteConfig & TqliteClientConfig): Layer.Layer<TqliteClient | SqlClient.SqlClient | Tqlite, TqliteStartError> =>
  layerFromTqlite(config).pipe(Layer.provideMerge(Tqlite.layer(config)))

/** The same over the wire client only (Tqlite.layerRemote). */
export const layerRemote = (config: TqliteRemoteConfig & TqliteClientConfig): Layer.Layer<TqliteClient | SqlClient.SqlClient | Tqlite, TqliteStartError> =>
  layerFromTqlite(config).pipe(Layer.provideMerge(Tqlite.layerRemote(config)))
