// Opening a replicated database with the pragmas frame replication depends on:
// - journal_mode=WAL: transactions become WAL frames we can read back;
// - wal_autocheckpoint=0: tqlite alone decides when frames move into the main file (only once
//   every frame is Raft-committed and captured);
// - synchronous=NORMAL: no fsync per commit (Raft's log is the durable record), and no padding
//   of the WAL with repeated commit frames, which FULL does on some file systems;
// - a fixed page size, the same on every node, since pages are shipped as they are.

import Database from "better-sqlite3"
import { DatabaseOpenError, PageSizeMismatch } from "./errors.ts"
import { isValidPageSize } from "./walFormat.ts"

export type SqliteDatabase = Database.Database

export interface OpenDatabaseOptions {
  readonly pageSize: number
  /** Open read-only (a reader that keeps the WAL alive, or a follower read). The database must
   * exist and already be in WAL mode. */
  readonly readonly?: boolean
  /** How long a statement waits on a lock before SQLITE_BUSY (better-sqlite3's default: 5 s). */
  readonly busyTimeoutMs?: number
}

export function openDatabase(path: string, options: OpenDatabaseOptions): SqliteDatabase {
  if (!isValidPageSize(options.pageSize)) {
    throw new DatabaseOpenError({ path, message: `invalid page size ${options.pageSize}` })
  }
  const readonly = options.readonly ?? false
  let db: SqliteDatabase
  try {
    db = new Database(path, {
      readonly,
      fileMustExist: readonly,
      ...(options.busyTimeoutMs === undefined ? {} : { timeout: options.busyTimeoutMs })
    })
  } catch (cause) {
    throw new DatabaseOpenError({ path, message: "cannot open", cause })
  }
  try {
    configure(db, path, options.pageSize, readonly)
    return db
  } catch (error) {
    db.close()
    throw error
  }
}

function configure(db: SqliteDatabase, path: string, pageSize: number, readonly: boolean): void {
  const pragma = (source: string): unknown => {
    try {
      return db.pragma(source, { simple: true })
    } catch (cause) {
      throw new DatabaseOpenError({ path, message: `PRAGMA ${source} failed`, cause })
    }
  }
  // page_size only takes effect on a database with no page yet, so it must come before WAL
  // mode (which writes page 1); on an existing database the check below catches a mismatch.
  if (!readonly) pragma(`page_size=${pageSize}`)
  const journalMode = pragma(readonly ? "journal_mode" : "journal_mode=WAL")
  if (journalMode !== "wal") {
    throw new DatabaseOpenError({ path, message: `journal_mode is ${String(journalMode)}, expected wal` })
  }
  if (!readonly) {
    pragma("wal_autocheckpoint=0")
    pragma("synchronous=NORMAL")
    const synchronous = pragma("synchronous")
    if (synchronous !== 1) {
      throw new DatabaseOpenError({ path, message: `synchronous is ${String(synchronous)}, expected 1 (NORMAL)` })
    }
  }
  const actualBytes = pragma("page_size")
  if (actualBytes !== pageSize) {
    throw new PageSizeMismatch({ path, expectedBytes: pageSize, actualBytes: Number(actualBytes) })
  }
}

export interface CheckpointResult {
  /** 1 when a reader or writer kept the checkpoint from completing. */
  readonly busy: number
  /** Frames in the WAL before the checkpoint, and frames copied into the main file. */
  readonly walFrames: number
  readonly checkpointedFrames: number
}

/** `PRAGMA wal_checkpoint(TRUNCATE)`: copy every frame into the main file and empty the WAL.
 * Call it only when every frame is Raft-committed and captured. */
export function checkpointTruncate(db: SqliteDatabase): CheckpointResult {
  const row = db.pragma("wal_checkpoint(TRUNCATE)") as Array<{ busy: number; log: number; checkpointed: number }>
  const first = row[0]
  if (first === undefined) return { busy: 1, walFrames: -1, checkpointedFrames: -1 }
  return { busy: first.busy, walFrames: first.log, checkpointedFrames: first.checkpointed }
}
