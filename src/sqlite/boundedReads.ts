// Which reads may run on the main thread, at once, on the leader's committed view, instead of
// going through a reader thread: those whose query plan bounds their work to a few rows. A
// point lookup (`SELECT v FROM kv WHERE k = ?` on a unique key) costs a few microseconds here,
// against ~150 µs through a worker and, while a write is in flight, a wait for its commit round
// (a worker cannot pin the state before it). Everything else — scans, ranges, sorts, subqueries,
// recursive queries — goes to the reader threads, where a time limit can stop it, so no query on
// the main thread can hold up heartbeats.
//
// A plan is bounded when every line of EXPLAIN QUERY PLAN is one of:
// - `SCAN CONSTANT ROW` (no table: `SELECT 1`);
// - `SEARCH t USING INTEGER PRIMARY KEY (rowid=?)`;
// - `SEARCH t USING [COVERING] INDEX i (a=? AND b=?)` where `i` is a UNIQUE index on exactly
//   those columns.
// Each such search yields at most one row per outer row, so the whole read yields at most one.
// Decided once per statement text and schema version (the plan depends on both).
import type { Connection } from "./connection.ts"

const searchRowid = /^SEARCH \S+(?: AS \S+)? USING INTEGER PRIMARY KEY \(rowid=\?\)$/
const searchIndex = /^SEARCH \S+(?: AS \S+)? USING (?:COVERING )?INDEX (\S+) \((.+)\)$/
const equality = /^(\S+)=\?$/

/** Bounded answers per statement text, for one schema version of one database. */
export class BoundedReads {
  private schemaVersion = -1
  private readonly known = new Map<string, boolean>()
  private readonly uniqueIndexes = new Map<string, ReadonlyArray<string> | null>()

  constructor(private readonly entriesMax: number) {}

  /** Whether `sql` (a read-only statement) may run on the main thread, per the plan on `view`. */
  isBounded(view: Connection, sql: string): boolean {
    const version = Number(view.prepare("PRAGMA schema_version").pluck(true).get())
    if (version !== this.schemaVersion) {
      this.schemaVersion = version
      this.known.clear()
      this.uniqueIndexes.clear()
    }
    const cached = this.known.get(sql)
    if (cached !== undefined) return cached
    const bounded = this.decide(view, sql)
    if (this.known.size >= this.entriesMax) this.known.delete(this.known.keys().next().value!)
    this.known.set(sql, bounded)
    return bounded
  }

  private decide(view: Connection, sql: string): boolean {
    let plan: ReadonlyArray<ReadonlyArray<unknown>>
    try {
      plan = view.run(`EXPLAIN QUERY PLAN ${sql}`, []).rows.rows
    } catch {
      return false // the reader thread reports the error as it would
    }
    if (plan.length === 0) return false
    for (const row of plan) {
      const detail = String(row[3] ?? "")
      if (detail === "SCAN CONSTANT ROW" || searchRowid.test(detail)) continue
      const match = searchIndex.exec(detail)
      if (match === null) return false
      const columns = match[2]!.split(" AND ").map((term) => equality.exec(term)?.[1] ?? null)
      if (columns.some((c) => c === null)) return false
      const unique = this.uniqueColumns(view, match[1]!)
      if (unique === null || unique.length !== columns.length || !unique.every((c) => columns.includes(c))) return false
    }
    return true
  }

  /** The columns of `index` if it is UNIQUE, else null. */
  private uniqueColumns(view: Connection, index: string): ReadonlyArray<string> | null {
    const cached = this.uniqueIndexes.get(index)
    if (cached !== undefined) return cached
    let columns: ReadonlyArray<string> | null = null
    const quoted = `"${index.replaceAll('"', '""')}"`
    const table = view.db.prepare("SELECT tbl_name FROM sqlite_schema WHERE type = 'index' AND name = ?").pluck(true).get(index) as string | undefined
    if (table !== undefined) {
      const list = view.db.prepare(`PRAGMA index_list("${table.replaceAll('"', '""')}")`).all() as Array<{ name: string; unique: number | bigint }>
      const entry = list.find((i) => i.name === index)
      if (entry !== undefined && Number(entry.unique) === 1) {
        columns = (view.db.prepare(`PRAGMA index_info(${quoted})`).all() as Array<{ name: string | null }>).map((c) => c.name ?? "")
      }
    }
    this.uniqueIndexes.set(index, columns)
    return columns
  }
}
