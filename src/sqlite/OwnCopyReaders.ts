// SQL reads from a node's own copy of a closed database (a follower's, or any node's at the
// `local`, `bounded` and `session` levels): one read-only connection per database, kept open, and
// told to forget its cached pages whenever the page applier changed the file since its last read.
//
// DESIGN. A closed database's main file is written behind SQLite's back by the page applier
// (PageApplier.ts), one committed entry at a time. Two things could make a read wrong:
// 1. A read that overlaps the writing of an entry's pages sees half of a transaction. It cannot
//    happen here: reads run synchronously on the node's one JavaScript thread, in the caller's
//    fiber or the applier's, and the applier writes each entry's pages in one synchronous call
//    (SqliteMachine.applyEntry). Between two such calls the file is exactly the leader's database
//    as of a Raft index (DESIGN.md "Frame replication": byte-identical to its checkpointed file),
//    so every read sees one committed state, at or after the index its level asked for — except
//    after a call that a full disk stopped part way, until its retry: SqliteMachine.withOwnCopy
//    refuses reads of that database meanwhile.
// 2. A connection kept open keeps serving the pages it cached before the applier rewrote them.
//    In WAL mode SQLite validates its cache only against the wal-index (the -shm), which the
//    applier never touches, so an open connection would read stale pages forever. Each database
//    therefore has a `generation`, bumped by SqliteMachine every time it changes the file; a
//    read on a connection whose generation is older first runs `PRAGMA shrink_memory`
//    (sqlite3_db_release_memory): outside a transaction no page is pinned, so every cached page
//    is dropped and the next read transaction reads the file again — page 1 included, whose
//    schema cookie makes prepared statements re-prepare after a schema change, and whose size
//    comes from the file. test/sqlite/ownCopyReaders.test.ts checks exactly this (new rows, a new
//    table, a file that shrank) and that a connection without the shrink is stale (the mutation).
// Why not a fresh connection per generation: on the loaded dev VM (load 10), open + first point
// read + close of a 21-table database measured ~645 µs (the schema is parsed again at the first
// statement), the shrink plus the same read (its pages read again from the OS cache) ~130–190 µs,
// a point read on a warm cache 10–46 µs. Under a steady write load every applier batch is a new
// generation, so that cost is paid once per batch per database read, not per read. Why not `immutable=1`:
// better-sqlite3 is built with SQLITE_USE_URI=0, so no URI parameters reach SQLite.
//
// The connection is read-only and never checkpoints; SQLite still creates an empty -wal and a
// -shm beside the file when it opens it. A closed database has no WAL worth keeping (the machine
// deletes them at start and before leading), so they are deleted before the first open: a WAL
// left by an older leader must not be read over the pages applied since. The one exception is a
// step-down discard that a full disk interrupted (its WAL holds committed frames): the machine
// finishes it before calling `read` (SqliteMachine.withOwnCopy), never this class. Whoever is about to
// replace the file (a snapshot), open the writer (leading) or stop the node closes the reader
// first (`close`), so no connection ever maps a -shm that a writer is about to recreate.
//
// Cost: reads run on the main thread, as the leader's bounded reads do (boundedReads.ts); their
// rows are stepped one at a time against the read's time limit. A statement that spends longer
// than that in one native step (a big sort) still holds the node's event loop: the follower
// side has no reader threads yet (see src/sqlite/README.md "Reads on followers").
import fs from "node:fs"
import Database from "better-sqlite3"
import { assert } from "../assert.ts"
import { Connection } from "./connection.ts"
import { openDatabase } from "./openDatabase.ts"

export interface OwnCopyReadersOptions {
  readonly pageSize: number
  readonly statementCacheMax: number
  /** Connections kept open at once (one per database read recently); the least recently used
   * is closed past it. */
  readonly readersMax: number
  /** Deliberate bug for the mutation test: never drop the cache (reads go stale). */
  readonly bugs?: { readonly keepStaleCache?: boolean }
}

interface Reader {
  readonly connection: Connection
  /** The file's generation this connection's cache reflects. */
  generation: number
}

export class OwnCopyReaders {
  private readonly readers = new Map<string, Reader>()
  /** Cache drops since start (tests, the README's cost figures). */
  refreshes = 0
  opens = 0

  constructor(private readonly options: OwnCopyReadersOptions) {
    assert(options.statementCacheMax >= 1, "statement cache holds at least one statement")
    assert(options.readersMax >= 1, "at least one own-copy reader")
  }

  /** Runs `read` on a connection showing `databasePath` as it is now (`generation`: the
   * machine's counter of changes to that file). A database this node has no file for yet reads
   * as an empty one (a connection of its own, closed after the read: names are the clients'
   * choice, so they are not kept). */
  read<A>(name: string, databasePath: () => string, generation: number, read: (view: Connection) => A): A {
    // An open reader's file exists: whoever replaces or removes it closes the reader first. Only
    // a database without one is looked for on disk (not every read: a stat and a path join per
    // read were ~7 % of a follower's CPU serving point reads).
    const open = this.readers.get(name)
    if (open !== undefined) return read(this.refreshed(name, open, generation))
    const file = databasePath()
    if (!fs.existsSync(file)) {
      this.close(name)
      const empty = new Connection(new Database(":memory:"), 1)
      try {
        return read(empty)
      } finally {
        empty.close()
      }
    }
    const opened: Reader = { connection: new Connection(this.openFile(file), this.options.statementCacheMax), generation }
    this.readers.set(name, opened)
    this.opens++
    if (this.readers.size > this.options.readersMax) this.close(this.readers.keys().next().value!)
    return read(opened.connection)
  }

  /** An open reader, its cache dropped if the file changed since its last read. */
  private refreshed(name: string, reader: Reader, generation: number): Connection {
    // Most recently used last: the first one is closed when too many are open.
    this.readers.delete(name)
    this.readers.set(name, reader)
    if (reader.generation !== generation) {
      if (this.options.bugs?.keepStaleCache !== true) reader.connection.control("PRAGMA shrink_memory")
      reader.generation = generation
      this.refreshes++
    }
    return reader.connection
  }

  close(name: string): void {
    const reader = this.readers.get(name)
    if (reader === undefined) return
    this.readers.delete(name)
    reader.connection.close()
  }

  closeAll(): void {
    for (const name of [...this.readers.keys()]) this.close(name)
  }

  isOpen(name: string): boolean {
    return this.readers.has(name)
  }

  private openFile(databasePath: string): Database.Database {
    fs.rmSync(`${databasePath}-wal`, { force: true })
    fs.rmSync(`${databasePath}-shm`, { force: true })
    return openDatabase(databasePath, { pageSize: this.options.pageSize, readonly: true })
  }
}
