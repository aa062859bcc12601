// One better-sqlite3 connection as the SQL surface uses it: a bounded statement cache, running a
// statement with dqlite's value and binding model, and SQLite's failures as typed SqlErrors.
//
// Values keep SQLite's storage class (statements read with safeIntegers): an INTEGER is a
// `bigint`, a REAL a `number` (2.0 stays 2.0, -0.0 stays -0.0), TEXT a string, BLOB bytes.
// Parameters bind the same way: a `bigint` as INTEGER, a `number` as REAL (better-sqlite3 binds
// every JS number as a double). Boundaries that promise plain JS numbers (the embedded API, the
// wire client) convert there. The conversion functions are exported so a worker thread running
// a statement converts exactly as this connection does.
import type Database from "better-sqlite3"
import { assert } from "../assert.ts"
import type { SqliteDatabase } from "./openDatabase.ts"
import type { ExecResult, Rows, SqlValue } from "./Sql.ts"
import { SqlError } from "./Sql.ts"
import { sqliteCodeOf, sqliteRangeCode } from "./sqliteCodes.ts"
import type { ParameterSlots } from "./statements.ts"
import { parameterSlots } from "./statements.ts"

export type Statement = Database.Statement<Array<unknown>, unknown>

/** What running one statement gave: rows when it returns data, and how many rows it changed. */
export interface StatementOutcome {
  readonly exec: ExecResult
  readonly rows: Rows
}

const noRows: Rows = { columns: [], declaredTypes: [], rows: [] }
const unchanged: ExecResult = { lastInsertId: 0n, rowsAffected: 0 }

interface CachedStatement {
  readonly statement: Statement
  readonly slots: ParameterSlots
}

export class Connection {
  private readonly statements = new Map<string, CachedStatement>()
  private changesStatement: Statement | undefined
  private pageCountStatement: Statement | undefined

  constructor(
    readonly db: SqliteDatabase,
    private readonly statementCacheMax: number
  ) {
    assert(statementCacheMax >= 1, "statement cache holds at least one statement")
  }

  /** A prepared statement for `sql` from the cache (least recently used evicted). Throws
   * better-sqlite3's error for bad SQL. */
  prepare(sql: string): Statement {
    return this.cached(sql).statement
  }

  private cached(sql: string): CachedStatement {
    const cached = this.statements.get(sql)
    if (cached !== undefined) {
      this.statements.delete(sql)
      this.statements.set(sql, cached)
      return cached
    }
    const statement = this.db.prepare(sql) as Statement
    statement.safeIntegers(true)
    const entry = { statement, slots: parameterSlots(sql) }
    this.statements.set(sql, entry)
    if (this.statements.size > this.statementCacheMax) {
      const oldest = this.statements.keys().next().value
      if (oldest !== undefined) this.statements.delete(oldest)
    }
    return entry
  }

  /** Runs one statement, its parameters bound by position as dqlite binds them
   * (`bindArguments`); throws better-sqlite3's error, or SqlError 25 for too many values. With
   * `beforeRow`, rows are stepped one at a time and `beforeRow` is called before each (a
   * reader's time limit: it throws to stop). */
  run(sql: string, params: ReadonlyArray<SqlValue>, beforeRow?: () => void): StatementOutcome {
    const { statement, slots } = this.cached(sql)
    const bound = bindArguments(slots, params)
    if (statement.reader) {
      const raw = beforeRow === undefined ? (statement.raw(true).all(...bound) as Array<Array<unknown>>) : stepRows(statement, bound, beforeRow)
      const columns = statement.columns()
      const rows: Rows = {
        columns: columns.map((c) => c.name),
        declaredTypes: columns.map((c) => c.type ?? ""),
        rows: raw.map((row) => row.map(sqlValueOfColumn))
      }
      return { exec: this.lastChanges(), rows }
    }
    const info = statement.run(...bound)
    return { exec: { lastInsertId: BigInt(info.lastInsertRowid), rowsAffected: Number(info.changes) }, rows: noRows }
  }

  /** Starts a statement that returns rows and hands back its cursor (a streamed read): the rows
   * come one `next()` at a time, raw (convert each value with `sqlValueOfColumn`). Null for a
   * statement that returns no rows (the caller `run`s it instead). The connection runs nothing
   * else until the cursor is done or `return()`ed (SQLite's statement is busy meanwhile). */
  iterate(sql: string, params: ReadonlyArray<SqlValue>): { readonly columns: ReadonlyArray<string>; readonly declaredTypes: ReadonlyArray<string>; readonly rows: IterableIterator<Array<unknown>> } | null {
    const { statement, slots } = this.cached(sql)
    const bound = bindArguments(slots, params)
    if (!statement.reader) return null
    const columns = statement.columns()
    const rows = statement.raw(true).iterate(...bound) as IterableIterator<Array<unknown>>
    return { columns: columns.map((c) => c.name), declaredTypes: columns.map((c) => c.type ?? ""), rows }
  }

  /** Runs a statement that returns nothing (transaction control: BEGIN, SAVEPOINT, RELEASE…)
   * through the cache, so the hot path compiles it once. */
  control(sql: string): void {
    this.prepare(sql).run()
  }

  /** The database's size in pages, as this connection sees it (inside its transaction). */
  pageCount(): number {
    this.pageCountStatement ??= this.db.prepare("PRAGMA page_count").pluck(true) as Statement
    return Number(this.pageCountStatement.get())
  }

  /** The statement's metadata without running it: does it return rows, does it write. */
  describe(sql: string): { readonly reader: boolean; readonly readonly: boolean } {
    const statement = this.prepare(sql)
    return { reader: statement.reader, readonly: statement.readonly }
  }

  get inTransaction(): boolean {
    return this.db.inTransaction
  }

  close(): void {
    this.statements.clear()
    this.changesStatement = undefined
    this.pageCountStatement = undefined
    if (this.db.open) this.db.close()
  }

  private lastChanges(): ExecResult {
    // A read-only connection (the committed view, a follower's own copy) never changes a row or
    // inserts one, so its counters stay 0: no second statement after each of its reads.
    if (this.db.readonly) return unchanged
    this.changesStatement ??= this.db.prepare("SELECT changes(), last_insert_rowid()").raw(true).safeIntegers(true) as Statement
    const row = this.changesStatement.get() as [bigint, bigint]
    return { lastInsertId: row[1], rowsAffected: Number(row[0]) }
  }
}

function stepRows(statement: Statement, bound: ReadonlyArray<unknown>, beforeRow: () => void): Array<Array<unknown>> {
  const rows: Array<Array<unknown>> = []
  beforeRow()
  const iterator = statement.raw(true).iterate(...bound) as IterableIterator<Array<unknown>>
  try {
    for (const row of iterator) {
      rows.push(row)
      beforeRow()
    }
  } finally {
    // Resets the statement when beforeRow threw mid-iteration (the connection stays usable).
    iterator.return?.()
  }
  return rows
}

/** A parameter as better-sqlite3 binds it: a bigint as INTEGER, a number as REAL. */
export function sqliteValueOf(value: SqlValue): unknown {
  if (value instanceof Uint8Array && !Buffer.isBuffer(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  return value
}

/** A column value read with safeIntegers(true), with its storage class kept: INTEGER → bigint,
 * REAL → number. */
export function sqlValueOfColumn(value: unknown): SqlValue {
  if (value === null || typeof value === "bigint" || typeof value === "number" || typeof value === "string" || value instanceof Uint8Array) return value
  return String(value)
}

/** SQLite's answer when more values are bound than the statement has parameters (what dqlite
 * 1.11 sends: sqlite3_bind_* returned SQLITE_RANGE). */
export const tooManyValuesError = (): SqlError => new SqlError({ code: sqliteRangeCode, message: "column index out of range" })

/** better-sqlite3's arguments for dqlite's positional binding: value i goes to parameter index
 * i + 1 whatever its form (`?`, `?NNN`, `:a`, `@a`, `$a`); indexes without a value stay NULL, as
 * an unbound parameter does. better-sqlite3 takes unnamed indexes positionally and named ones
 * (a `?NNN` too) from an object keyed by the name without its prefix. */
export function bindArguments(slots: ParameterSlots, params: ReadonlyArray<SqlValue>): Array<unknown> {
  if (params.length > slots.count) throw tooManyValuesError()
  const positional: Array<unknown> = []
  let named: Record<string, unknown> | null = null
  for (let index = 0; index < slots.count; index++) {
    const value = index < params.length ? sqliteValueOf(params[index]!) : null
    const name = slots.names[index] ?? null
    if (name === null) {
      positional.push(value)
    } else {
      named ??= {}
      named[name.slice(1)] = value
    }
  }
  if (named !== null) positional.push(named)
  return positional
}

/** A failure of better-sqlite3 as the SqlError a client sees (SQLite's code and message). */
export function toSqlError(cause: unknown): SqlError {
  if (cause instanceof SqlError) return cause
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code
    if (code === undefined && cause instanceof RangeError) return new SqlError({ code: sqliteRangeCode, message: cause.message })
    return new SqlError({ code: sqliteCodeOf(code), message: cause.message })
  }
  return new SqlError({ code: 1, message: String(cause) })
}
