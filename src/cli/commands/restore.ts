// `tqlite restore`: loads a SQLite file into a live cluster's database through the client.
//
// Order: refuse a target that has tables (unless --force: then drop its views and tables in one
// transaction), create the tables, copy the rows, then create indexes, triggers and views (so
// triggers do not fire on copied rows and indexes are built once), then copy sqlite_sequence.
// Rows go in bounded transactions (rows and bytes per transaction, well below the cluster's
// transaction bound, src/sqlite/limits.ts) of multi-row INSERTs (bounded rows, parameters and
// bytes per statement); parent tables (by foreign key) go before their children, and each
// transaction defers foreign-key checks to its commit.
//
// The bound is on the pages a transaction writes, not on its values: rows landing on scattered
// pages of an index (a UNIQUE column, say) can write many more bytes than they carry. A
// transaction refused as too big (SQLITE_TOOBIG: nothing was written) is split in halves and
// sent again, and later transactions of that table stay at the smaller size. A CREATE INDEX is
// one transaction however large the index: an index whose pages in the source file exceed
// `indexAfterDataBytesMax` is therefore created with its table, before the rows, and filled as
// they arrive.
//
// Values keep their storage class: integers are read as bigints and sent as INTEGER, reals are
// sent as FLOAT even when they hold a whole number, so a column without affinity gets back
// exactly what it had. Rowids are copied too (tables without an INTEGER PRIMARY KEY, not
// WITHOUT ROWID), so a dump → restore → dump gives the same rows with the same rowids.
//
// Not handled: virtual tables (refused), text values containing NUL characters (the wire cannot
// carry them; the restore stops with that error), sqlite_stat* statistics (not copied).
import Database from "better-sqlite3"
import type { Scope } from "effect"
import { Clock, Data, Effect } from "effect"
import * as path from "node:path"
import type { DqliteClientService } from "../../net/client/Client.ts"
import { make as makeClient } from "../../net/client/Client.ts"
import type { ClientError } from "../../net/client/errors.ts"
import type { ParamValue } from "../../net/client/values.ts"
import { Values } from "../../net/protocol/values.ts"
import { defaultSqliteLimits } from "../../sqlite/limits.ts"
import type { CliIo } from "../common.ts"
import { clientErrorText, exitCodes, formatBytes, parseCommandLine, parseServers, parseTlsFlags, processIo, runProgram, tlsFlags, withTls } from "../common.ts"
import type { PeerTlsOptions } from "../../net/peers/sockets.ts"
import { Progress } from "../progress.ts"
import type { Command } from "./command.ts"
import { usageError } from "./command.ts"

/** SQLite's "string or blob too big": the cluster refused a transaction over its bound and
 * wrote nothing. */
const sqliteTooBigCode = 18

export interface RestoreLimits {
  /** Rows copied per transaction. */
  readonly rowsPerTransactionMax: number
  /** Bytes of values per transaction (one row more may go past it: a transaction has at least
   * one row). At most a third of the cluster's transaction bound: pages cost more than values. */
  readonly bytesPerTransactionMax: number
  /** Rows, parameters and bytes of values per INSERT statement. */
  readonly rowsPerStatementMax: number
  readonly paramsPerStatementMax: number
  readonly bytesPerStatementMax: number
  /** Indexes up to this size (their pages in the source) are built after the data, in one
   * transaction; larger ones are created before it. */
  readonly indexAfterDataBytesMax: number
}

export const restoreLimitsDefault: RestoreLimits = {
  rowsPerTransactionMax: 10_000,
  bytesPerTransactionMax: 8 * 1024 * 1024,
  rowsPerStatementMax: 500,
  paramsPerStatementMax: 999,
  bytesPerStatementMax: 1024 * 1024,
  indexAfterDataBytesMax: 8 * 1024 * 1024
}

export function validateRestoreLimits(limits: RestoreLimits): string | null {
  for (const [key, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 1) return `${key} must be a positive integer`
  }
  for (const key of ["bytesPerTransactionMax", "indexAfterDataBytesMax"] as const) {
    if (limits[key] > defaultSqliteLimits.transactionBytesMax / 3) {
      return `${key} must stay below a third of the cluster's ${formatBytes(defaultSqliteLimits.transactionBytesMax)} transaction bound`
    }
  }
  return null
}

export class RestoreError extends Data.TaggedError("RestoreError")<{ readonly detail: string }> {}

export interface RestoreOptions {
  readonly servers: ReadonlyArray<string>
  readonly database: string
  readonly file: string
  readonly force: boolean
  readonly limits?: Partial<RestoreLimits>
  readonly tls?: PeerTlsOptions
}

interface SourceTable {
  readonly name: string
  readonly sql: string
  /** Columns written (generated ones are left out). */
  readonly columns: ReadonlyArray<string>
  /** The rowid's name when it must be copied explicitly (no INTEGER PRIMARY KEY alias). */
  readonly rowidName: string | null
  readonly rowsTotal: number
  /** CREATE INDEX statements run with the table, before its rows (large indexes). */
  readonly indexesBeforeData: ReadonlyArray<string>
}

interface SourceSchema {
  /** Parents (by foreign key) before children. */
  readonly tables: ReadonlyArray<SourceTable>
  /** Indexes (the smaller ones), triggers and views, in creation order. */
  readonly later: ReadonlyArray<{ readonly type: string; readonly name: string; readonly sql: string }>
  readonly sequence: ReadonlyArray<readonly [string, bigint]> | null
}

export const quoteName = (name: string) => `"${name.replace(/"/g, "\"\"")}"`

const sourceStep = <A>(what: string, run: () => A) =>
  Effect.try({ try: run, catch: (cause) => new RestoreError({ detail: `${what}: ${cause instanceof Error ? cause.message : String(cause)}` }) })

/** What the source file holds, read once before anything is sent. */
function readSourceSchema(db: Database.Database, limits: RestoreLimits): SourceSchema {
  const objects = db.prepare("SELECT type, name, tbl_name AS tableName, sql FROM main.sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid").all() as Array<{ type: string; name: string; tableName: string; sql: string }>
  const listed = new Map((db.prepare("SELECT name, type, wr FROM pragma_table_list WHERE schema = 'main'").all() as Array<{ name: string; type: string; wr: number }>).map((t) => [t.name, t]))
  const virtual = objects.find((o) => o.type === "table" && listed.get(o.name)?.type === "virtual")
  if (virtual !== undefined) throw new Error(`virtual table ${virtual.name} cannot be restored`)
  const indexBytes = db.prepare("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = ?").pluck()
  const largeIndexes = new Set(objects.filter((o) => o.type === "index" && Number(indexBytes.get(o.name)) > limits.indexAfterDataBytesMax).map((o) => o.name))
  const tables = objects.filter((o) => o.type === "table" && listed.get(o.name)?.type === "table").map((o): SourceTable => {
    const columns = db.prepare("SELECT name, type, pk, hidden FROM pragma_table_xinfo(?)").all(o.name) as Array<{ name: string; type: string; pk: number; hidden: number }>
    const keys = columns.filter((c) => c.pk > 0)
    const aliased = keys.length === 1 && keys[0]!.type.toUpperCase() === "INTEGER"
    const names = new Set(columns.map((c) => c.name.toLowerCase()))
    const rowidName = listed.get(o.name)!.wr === 1 || aliased ? null : (["rowid", "_rowid_", "oid"].find((n) => !names.has(n)) ?? null)
    const rowsTotal = Number((db.prepare(`SELECT count(*) FROM main.${quoteName(o.name)}`).pluck().get() as number))
    const indexesBeforeData = objects.filter((i) => largeIndexes.has(i.name) && i.tableName === o.name).map((i) => i.sql)
    return { name: o.name, sql: o.sql, columns: columns.filter((c) => c.hidden === 0).map((c) => c.name), rowidName, rowsTotal, indexesBeforeData }
  })
  const hasSequence = db.prepare("SELECT count(*) FROM main.sqlite_schema WHERE name = 'sqlite_sequence'").pluck().get() === 1
  const sequence = hasSequence
    ? (db.prepare("SELECT name, seq FROM main.sqlite_sequence").raw(true).safeIntegers(true).all() as Array<[string, bigint]>)
    : null
  return { tables: parentsFirst(db, tables), later: objects.filter((o) => o.type !== "table" && !largeIndexes.has(o.name)), sequence }
}

/** Tables ordered so that a table comes after the tables its foreign keys name (cycles: as found). */
function parentsFirst(db: Database.Database, tables: ReadonlyArray<SourceTable>): ReadonlyArray<SourceTable> {
  const byName = new Map(tables.map((t) => [t.name.toLowerCase(), t]))
  const ordered: Array<SourceTable> = []
  const state = new Map<string, "visiting" | "done">()
  const visit = (table: SourceTable) => {
    const key = table.name.toLowerCase()
    if (state.has(key)) return
    state.set(key, "visiting")
    const parents = db.prepare("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?)").pluck().all(table.name) as Array<string>
    for (const parent of parents) {
      const found = byName.get(parent.toLowerCase())
      if (found !== undefined && found !== table) visit(found)
    }
    state.set(key, "done")
    ordered.push(table)
  }
  for (const table of tables) visit(table)
  return ordered
}

/** A source value as a parameter that keeps its storage class. */
function paramOfSource(value: unknown): ParamValue {
  if (typeof value === "number") return Values.float(value)
  return value as ParamValue
}

function valueBytes(value: unknown): number {
  if (typeof value === "string") return Buffer.byteLength(value, "utf8")
  if (value instanceof Uint8Array) return value.byteLength
  return value === null ? 1 : 8
}

interface Batch {
  readonly rows: ReadonlyArray<ReadonlyArray<ParamValue>>
  readonly bytes: number
}

/** Pulls the next transaction's rows from `rows`, bounded by rows and bytes (at least one row). */
function nextBatch(rows: Iterator<Array<unknown>>, rowsMax: number, bytesMax: number): Batch {
  const batch: Array<ReadonlyArray<ParamValue>> = []
  let bytes = 0
  while (batch.length < rowsMax && bytes < bytesMax) {
    const next = rows.next()
    if (next.done === true) break
    batch.push(next.value.map(paramOfSource))
    bytes += next.value.reduce((sum: number, value) => sum + valueBytes(value), 0)
  }
  return { rows: batch, bytes }
}

/** Rows as multi-row INSERTs bounded by rows, parameters and bytes per statement. */
export function insertStatements(
  rows: ReadonlyArray<ReadonlyArray<ParamValue>>,
  insertInto: (rowCount: number) => string,
  limits: RestoreLimits
): Array<{ readonly sql: string; readonly params: ReadonlyArray<ParamValue> }> {
  const width = Math.max(1, rows[0]?.length ?? 1)
  const rowsPerStatement = Math.max(1, Math.min(limits.rowsPerStatementMax, Math.floor(limits.paramsPerStatementMax / width)))
  const statements: Array<{ sql: string; params: Array<ParamValue> }> = []
  let params: Array<ParamValue> = []
  let rowCount = 0
  let bytes = 0
  for (const row of rows) {
    params.push(...row)
    rowCount++
    bytes += row.reduce((sum: number, value) => sum + valueBytes(value), 0)
    if (rowCount >= rowsPerStatement || bytes >= limits.bytesPerStatementMax) {
      statements.push({ sql: insertInto(rowCount), params })
      params = []
      rowCount = 0
      bytes = 0
    }
  }
  if (rowCount > 0) statements.push({ sql: insertInto(rowCount), params })
  return statements
}

export const isTooBig = (error: ClientError): boolean => error._tag === "ServerFailure" && error.code === sqliteTooBigCode

/** Sends `rows` as one transaction; one refused as too big is split in halves, each sent the
 * same way (down to single rows, which then fail). `onSplit` learns the size that was too big.
 * Returns the transactions committed. */
export const sendSplittingTooBig = <E>(
  rows: ReadonlyArray<ReadonlyArray<ParamValue>>,
  send: (rows: ReadonlyArray<ReadonlyArray<ParamValue>>) => Effect.Effect<void, E>,
  tooBig: (error: E) => boolean,
  onSplit: (rowsTooMany: number) => void
): Effect.Effect<number, E> =>
  Effect.catchIf(
    Effect.as(send(rows), 1),
    (error) => rows.length > 1 && tooBig(error),
    () => {
      onSplit(rows.length)
      const half = Math.ceil(rows.length / 2)
      return Effect.zipWith(
        sendSplittingTooBig(rows.slice(0, half), send, tooBig, onSplit),
        sendSplittingTooBig(rows.slice(half), send, tooBig, onSplit),
        (a, b) => a + b
      )
    }
  )

const deferForeignKeys = "PRAGMA defer_foreign_keys = ON"

/** Drops the target's views and tables (with their indexes and triggers) in one transaction. */
const dropAll = (client: DqliteClientService, existing: ReadonlyArray<{ readonly type: string; readonly name: string }>) =>
  client.transaction(
    Effect.gen(function*() {
      yield* client.exec(deferForeignKeys)
      for (const o of existing.filter((o) => o.type === "view")) yield* client.exec(`DROP VIEW IF EXISTS main.${quoteName(o.name)}`)
      for (const o of existing.filter((o) => o.type === "table")) yield* client.exec(`DROP TABLE IF EXISTS main.${quoteName(o.name)}`)
    })
  )

const copyTable = (client: DqliteClientService, db: Database.Database, table: SourceTable, limits: RestoreLimits, progress: Progress) =>
  Effect.gen(function*() {
    const columns = [...(table.rowidName === null ? [] : [table.rowidName]), ...table.columns]
    if (columns.length === 0) return 0
    const list = columns.map(quoteName).join(", ")
    const tuple = `(${columns.map(() => "?").join(", ")})`
    const insertInto = (rowCount: number) => `INSERT INTO main.${quoteName(table.name)} (${list}) VALUES ${Array.from({ length: rowCount }, () => tuple).join(", ")}`
    const rows = yield* sourceStep(`reading ${table.name}`, () =>
      db.prepare(`SELECT ${list} FROM main.${quoteName(table.name)}`).raw(true).safeIntegers(true).iterate() as IterableIterator<Array<unknown>>)
    const send = (batch: ReadonlyArray<ReadonlyArray<ParamValue>>) =>
      client.transaction(
        Effect.gen(function*() {
          yield* client.exec(deferForeignKeys)
          for (const statement of insertStatements(batch, insertInto, limits)) yield* client.exec(statement.sql, statement.params)
        })
      )
    // Shrinks (never grows back) when the cluster finds a transaction of this table too big.
    let rowsPerTransaction = limits.rowsPerTransactionMax
    let transactions = 0
    for (;;) {
      const batch = yield* sourceStep(`reading ${table.name}`, () => nextBatch(rows, rowsPerTransaction, limits.bytesPerTransactionMax))
      if (batch.rows.length === 0) break
      transactions += yield* sendSplittingTooBig(batch.rows, send, isTooBig, (tooMany) => {
        rowsPerTransaction = Math.max(1, Math.min(rowsPerTransaction, Math.floor(tooMany / 2)))
      })
      progress.advance(batch.rows.length, batch.bytes, yield* Clock.currentTimeMillis)
    }
    return transactions
  })

const restoreInto = (client: DqliteClientService, db: Database.Database, options: RestoreOptions, limits: RestoreLimits, io: CliIo): Effect.Effect<number, ClientError | RestoreError> =>
  Effect.gen(function*() {
    const started = yield* Clock.currentTimeMillis
    const schema = yield* sourceStep(`reading ${options.file}`, () => readSourceSchema(db, limits))
    const existing = (yield* client.query("SELECT type, name FROM main.sqlite_schema WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'"))
      .rows.map((row) => ({ type: String(row[0]), name: String(row[1]) }))
    if (existing.length > 0) {
      const names = existing.map((o) => o.name).slice(0, 10).join(", ")
      if (!options.force) {
        return yield* new RestoreError({ detail: `database ${options.database} already has tables or views (${names}${existing.length > 10 ? ", …" : ""}); --force drops them first` })
      }
      io.err(`dropping ${existing.length} tables and views of ${options.database} (--force)\n`)
      yield* dropAll(client, existing)
    }
    // Schema statements go in one transaction each phase: one Raft round instead of one each.
    yield* client.transaction(Effect.forEach(schema.tables.flatMap((t) => [t.sql, ...t.indexesBeforeData]), (sql) => client.exec(sql), { discard: true }))
    const rowsTotal = schema.tables.reduce((sum, t) => sum + t.rowsTotal, 0)
    const progress = new Progress(io, `restore ${options.database}`, rowsTotal)
    let transactions = 0
    for (const table of schema.tables) transactions += yield* copyTable(client, db, table, limits, progress)
    const copied = progress.finish()
    const sequence = schema.sequence
    yield* client.transaction(
      Effect.gen(function*() {
        for (const object of schema.later) yield* client.exec(object.sql)
        if (sequence === null) return
        yield* client.exec("DELETE FROM main.sqlite_sequence")
        for (const [name, seq] of sequence) yield* client.exec("INSERT INTO main.sqlite_sequence (name, seq) VALUES (?, ?)", [name, seq])
      })
    )
    const elapsedMs = (yield* Clock.currentTimeMillis) - started
    io.err(
      `restored ${schema.tables.length} tables, ${schema.later.length + schema.tables.reduce((n, t) => n + t.indexesBeforeData.length, 0)} indexes/triggers/views, ${copied.rows} rows ` +
        `(${formatBytes(copied.bytes)} of values) into ${options.database} in ${transactions} transactions, ${elapsedMs} ms\n`
    )
    return exitCodes.ok
  })

export const runRestore = (options: RestoreOptions, io: CliIo): Effect.Effect<number, never, Scope.Scope> =>
  Effect.gen(function*() {
    const limits = { ...restoreLimitsDefault, ...options.limits }
    const invalid = validateRestoreLimits(limits)
    if (invalid !== null) {
      io.err(`Error: ${invalid}\n`)
      return exitCodes.usage
    }
    const opened = yield* Effect.either(Effect.acquireRelease(
      sourceStep(`opening ${options.file}`, () => new Database(options.file, { readonly: true, fileMustExist: true })),
      (db) => Effect.sync(() => db.close())
    ))
    if (opened._tag === "Left") {
      io.err(`Error: ${opened.left.detail}\n`)
      return exitCodes.failed
    }
    const client = yield* makeClient({ servers: options.servers, database: options.database, connectionsMax: 1, tls: options.tls ?? null })
    return yield* restoreInto(client, opened.right, options, limits, io).pipe(
      Effect.catchAll((error) =>
        Effect.sync(() => {
          io.err(`Error: ${error._tag === "RestoreError" ? error.detail : clientErrorText(error)}\n`)
          return exitCodes.failed
        })
      )
    )
  })

export function parseRestoreArgs(args: ReadonlyArray<string>): RestoreOptions | string {
  const parsed = parseCommandLine(args, {
    servers: { type: "string", short: "s" },
    force: { type: "boolean" },
    "rows-per-transaction": { type: "string" },
    "bytes-per-transaction": { type: "string" },
    ...tlsFlags
  })
  if (typeof parsed === "string") return parsed
  const { values, positionals } = parsed
  const servers = parseServers(values.servers)
  if ("error" in servers) return servers.error
  if (positionals.length !== 2) return "give DATABASE and FILE"
  const limits: { -readonly [K in keyof RestoreLimits]?: RestoreLimits[K] } = {}
  if (values["rows-per-transaction"] !== undefined) limits.rowsPerTransactionMax = Number(values["rows-per-transaction"])
  if (values["bytes-per-transaction"] !== undefined) limits.bytesPerTransactionMax = Number(values["bytes-per-transaction"])
  const invalid = validateRestoreLimits({ ...restoreLimitsDefault, ...limits })
  if (invalid !== null) return invalid
  const tls = parseTlsFlags(values)
  if ("error" in tls) return tls.error
  return { servers: servers.servers, database: positionals[0]!, file: path.resolve(positionals[1]!), force: values.force ?? false, limits, ...withTls(tls.tls) }
}

export const restore: Command = {
  name: "restore",
  usage: `tqlite restore --servers HOST:PORT[,...] [--force] [--rows-per-transaction N] [--bytes-per-transaction N]
               [--tls-cert F --tls-key F --tls-ca F] DATABASE FILE
      loads a SQLite file into the cluster's DATABASE; refuses a DATABASE with tables unless
      --force (which drops them first). Defaults: 10000 rows, 8 MiB per transaction.`,
  run: async (args) => {
    const options = parseRestoreArgs(args)
    if (typeof options === "string") return usageError("restore", options)
    await runProgram(runRestore(options, processIo))
  }
}
