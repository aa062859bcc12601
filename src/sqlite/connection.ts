// One better-sqlite3 connection as the SQL surface uses it: a bounded statement cache, running a
// statement with dqlite's value model, and SQLite's failures as typed SqlErrors.
import type Database from "better-sqlite3"
import { assert } from "../assert.ts"
import type { SqliteDatabase } from "./openDatabase.ts"
import type { ExecResult, Rows, SqlValue } from "./Sql.ts"
import { SqlError } from "./Sql.ts"
import { sqliteCodeOf, sqliteRangeCode } from "./sqliteCodes.ts"

export type Statement = Database.Statement<Array<unknown>, unknown>

/** What running one statement gave: rows when it returns data, and how many rows it changed. */
export interface StatementOutcome {
  readonly exec: ExecResult
  readonly rows: Rows
}

const noRows: Rows = { columns: [], declaredTypes: [], rows: [] }

export class Connection {
  private readonly statements = new Map<string, Statement>()
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
    const cached = this.statements.get(sql)
    if (cached !== undefined) {
      this.statements.delete(sql)
      this.statements.set(sql, cached)
      return cached
    }
    const statement = this.db.prepare(sql) as Statement
    statement.safeIntegers(true)
    this.statements.set(sql, statement)
    if (this.statements.size > this.statementCacheMax) {
      const oldest = this.statements.keys().next().value
      if (oldest !== undefined) this.statements.delete(oldest)
    }
    return statement
  }

  /** Runs one statement; throws better-sqlite3's error. With `beforeRow`, rows are stepped one
   * at a time and `beforeRow` is called before each (a reader's time limit: it throws to stop). */
  run(sql: string, params: ReadonlyArray<SqlValue>, beforeRow?: () => void): StatementOutcome {
    const statement = this.prepare(sql)
    const bound = params.map(toSqlite)
    if (statement.reader) {
      const raw = beforeRow === undefined ? (statement.raw(true).all(...bound) as Array<Array<unknown>>) : stepRows(statement, bound, beforeRow)
      const columns = statement.columns()
      const rows: Rows = {
        columns: columns.map((c) => c.name),
        declaredTypes: columns.map((c) => c.type ?? ""),
        rows: raw.map((row) => row.map(fromSqlite))
      }
      return { exec: this.lastChanges(), rows }
    }
    const info = statement.run(...bound)
    return { exec: { lastInsertId: BigInt(info.lastInsertRowid), rowsAffected: Number(info.changes) }, rows: noRows }
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

function toSqlite(value: SqlValue): unknown {
  if (value instanceof Uint8Array && !Buffer.isBuffer(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  return value
}

function fromSqlite(value: unknown): SqlValue {
  if (typeof value === "bigint") {
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value
  }
  if (value === null || typeof value === "number" || typeof value === "string" || value instanceof Uint8Array) return value
  return String(value)
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
