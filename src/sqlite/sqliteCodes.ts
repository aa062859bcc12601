// SQLite result codes by name: better-sqlite3 reports a failure's code as a string
// ("SQLITE_CONSTRAINT_UNIQUE"), dqlite's wire protocol sends the number. Primary codes and the
// extended codes a client is likely to meet; an unknown extended name falls back to its primary.

const primary: Record<string, number> = {
  SQLITE_ERROR: 1,
  SQLITE_INTERNAL: 2,
  SQLITE_PERM: 3,
  SQLITE_ABORT: 4,
  SQLITE_BUSY: 5,
  SQLITE_LOCKED: 6,
  SQLITE_NOMEM: 7,
  SQLITE_READONLY: 8,
  SQLITE_INTERRUPT: 9,
  SQLITE_IOERR: 10,
  SQLITE_CORRUPT: 11,
  SQLITE_NOTFOUND: 12,
  SQLITE_FULL: 13,
  SQLITE_CANTOPEN: 14,
  SQLITE_PROTOCOL: 15,
  SQLITE_EMPTY: 16,
  SQLITE_SCHEMA: 17,
  SQLITE_TOOBIG: 18,
  SQLITE_CONSTRAINT: 19,
  SQLITE_MISMATCH: 20,
  SQLITE_MISUSE: 21,
  SQLITE_NOLFS: 22,
  SQLITE_AUTH: 23,
  SQLITE_FORMAT: 24,
  SQLITE_RANGE: 25,
  SQLITE_NOTADB: 26
}

const extended: Record<string, number> = {
  SQLITE_ABORT_ROLLBACK: 516,
  SQLITE_BUSY_SNAPSHOT: 517,
  SQLITE_READONLY_DBMOVED: 1032,
  SQLITE_CONSTRAINT_CHECK: 275,
  SQLITE_CONSTRAINT_COMMITHOOK: 531,
  SQLITE_CONSTRAINT_FOREIGNKEY: 787,
  SQLITE_CONSTRAINT_FUNCTION: 1043,
  SQLITE_CONSTRAINT_NOTNULL: 1299,
  SQLITE_CONSTRAINT_PRIMARYKEY: 1555,
  SQLITE_CONSTRAINT_TRIGGER: 1811,
  SQLITE_CONSTRAINT_UNIQUE: 2067,
  SQLITE_CONSTRAINT_VTAB: 2323,
  SQLITE_CONSTRAINT_ROWID: 2579,
  SQLITE_CONSTRAINT_DATATYPE: 3091
}

export const sqliteErrorCode = 1
export const sqliteAbortRollbackCode = 516
export const sqliteFullCode = 13
export const sqliteTooBigCode = 18
export const sqliteMisuseCode = 21
export const sqliteRangeCode = 25

/** The number for a code name; 1 (SQLITE_ERROR) when the name is unknown or absent. */
export function sqliteCodeOf(name: unknown): number {
  if (typeof name !== "string") return sqliteErrorCode
  const known = extended[name] ?? primary[name]
  if (known !== undefined) return known
  // An unknown extended name falls back to its primary: the longest primary name it extends.
  let best: string | undefined
  for (const prefix of Object.keys(primary)) {
    if (name.startsWith(`${prefix}_`) && (best === undefined || prefix.length > best.length)) best = prefix
  }
  return best === undefined ? sqliteErrorCode : (primary[best] ?? sqliteErrorCode)
}
