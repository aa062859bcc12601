// @effect/sql's Migrator on a tqlite cluster. The generic Migrator needs only `SqlClient`: it
// creates its table, then reads the latest id, records the new migrations and runs them in one
// `withTransaction` — one interactive transaction on the leader, so instances that start
// together serialize there and all but the first find nothing left to do. No schema dump (the
// SQLite one shells out to `sqlite3` on a local file; a replicated database has none to share).
import * as Migrator from "@effect/sql/Migrator"
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type { Effect } from "effect"
import { Layer } from "effect"

export * from "@effect/sql/Migrator"

/** Runs the migrations `loader` gives that are newer than the latest recorded; returns them. */
export const run: <R = never>(
  options: Migrator.MigratorOptions<R>
) => Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, Migrator.MigrationError | SqlError, SqlClient.SqlClient | R> = Migrator.make({})

/** Runs the migrations while the layer builds. */
export const layer = <R>(options: Migrator.MigratorOptions<R>): Layer.Layer<never, Migrator.MigrationError | SqlError, SqlClient.SqlClient | R> =>
  Layer.effectDiscard(run(options))
