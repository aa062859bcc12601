// Running a tqlite cluster (test/sim/full/SqliteCluster.ts) in a test: under the simulator's
// runtime (simulated clock and scheduler, so nothing waits on real time and a run is repeatable),
// with small helpers to run SQL on a node and read every node's database.
import fs from "node:fs"
import path from "node:path"
import Database from "better-sqlite3"
import { Duration, Effect, Exit, Scope } from "effect"
import type { ExecResult, Rows, SqlFailure, SqlSession, SqlValue } from "../../src/sqlite/Sql.ts"
import type { LiveNode, SqliteClusterOptions } from "../sim/full/SqliteCluster.ts"
import { SqliteCluster } from "../sim/full/SqliteCluster.ts"
import { runSimulated } from "../sim/full/SimRuntime.ts"
import { Prng } from "../sim/Prng.ts"
import { dumpContent, integrityCheck } from "./helpers.ts"

export const tickMs = 10

export function makeCluster(baseDir: string, overrides: Partial<SqliteClusterOptions> = {}): SqliteCluster {
  return new SqliteCluster({
    baseDir,
    rng: new Prng(overrides.rng === undefined ? 42 : overrides.rng.u32()),
    tickMs,
    fsync: "sync",
    snapshotEveryEntries: 100_000,
    ...overrides
  })
}

/** Runs `program` in simulated time and returns its value (throws on failure). */
export function simulate<A, E>(program: Effect.Effect<A, E, Scope.Scope>): A {
  const exit = runSimulated(Effect.scoped(program), { tasksPerInstantMax: 20_000_000 })
  if (Exit.isSuccess(exit)) return exit.value
  throw new Error(`simulation failed: ${String(exit.cause)}`)
}

export const sleepTicks = (ticks: number) => Effect.sleep(Duration.millis(ticks * tickMs))

/** A session on `database` at `node`, in the caller's scope. */
export const session = (node: LiveNode, database = "main"): Effect.Effect<SqlSession, SqlFailure, Scope.Scope> => node.dbs.open(database)

export const exec = (s: SqlSession, sql: string, params: ReadonlyArray<SqlValue> = []): Effect.Effect<ExecResult, SqlFailure> => s.execSql(sql, params)
export const query = (s: SqlSession, sql: string, params: ReadonlyArray<SqlValue> = []): Effect.Effect<Rows, SqlFailure> => s.querySql(sql, params)

/** Every table's content of a database file, read by a fresh read-only connection; "" when the
 * file does not exist. */
export function contentOf(databasePath: string): string {
  if (!fs.existsSync(databasePath)) return ""
  const db = new Database(databasePath, { readonly: true, fileMustExist: true })
  try {
    return dumpContent(db)
  } finally {
    db.close()
  }
}

export function integrityOf(databasePath: string): string {
  const db = new Database(databasePath, { readonly: true, fileMustExist: true })
  try {
    return integrityCheck(db)
  } finally {
    db.close()
  }
}

export function filesOf(cluster: SqliteCluster, database = "main"): Array<{ readonly id: number; readonly path: string }> {
  return [...cluster.nodes.values()].map((node) => ({ id: node.id, path: path.join(node.dataDir, "databases", `${database}.db`) }))
}

export function rowsOf(rows: Rows): Array<Array<unknown>> {
  return rows.rows.map((row) => [...row])
}

/** On `leader`: a table t, three warm-up inserts, then `writes` one-row inserts one at a time
 * with `counter.counting` on (a Supervisor counting Effect operations). Returns the entries the
 * writer committed for them and the rows they left. */
export const countedInserts = (leader: LiveNode, counter: { counting: boolean }, writes: number) =>
  Effect.gen(function*() {
    const s = yield* session(leader)
    yield* exec(s, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    for (let i = 0; i < 3; i++) yield* exec(s, "INSERT INTO t(v) VALUES ('warm')")
    const before = leader.dbs.writer("main")!.stats.entries
    counter.counting = true
    for (let i = 0; i < writes; i++) yield* exec(s, "INSERT INTO t(v) VALUES (?)", [`x${i}`])
    counter.counting = false
    const entries = leader.dbs.writer("main")!.stats.entries - before
    const rows = rowsOf(yield* query(s, "SELECT count(*) FROM t WHERE v LIKE 'x%'"))
    return { entries, rows }
  })
