// The connections of one database while this node leads: the writer, the WAL capturer and the
// pinned read views. Synchronous and single-threaded by construction (better-sqlite3 is): the
// LeaderWriter drives it between its awaits, the state machine marks its entries applied.
//
// Read views. A reader connection in an open read transaction keeps seeing the database as it was
// when the transaction started, whatever the writer commits after. Right after each local commit
// the writer pins a reader there (the pending view); when Raft commits that entry, the pending
// view becomes the committed view and the previous one goes back to the pool. Reads run on the
// committed view only, so they never see a write Raft has not committed and never wait for one.
// The writer commits locally only when the previous entry is applied, so at most two views are
// pinned at once (committed + pending).
//
// Leaving. `close("discard")` is the step-down procedure of discardUncommitted.ts: close the
// writer while a reader holds the database (the WAL survives), cut the WAL after the last
// Raft-committed transaction, then open, checkpoint and close once so the main file alone holds
// exactly the committed state and no WAL is left for the follower's page applier to trip on.
// `close("keepWal")` leaves everything where it is, as a crash would: the next start drops the
// WAL and replays the log from the index the main file reflects.

import fs from "node:fs"
import { assert } from "../assert.ts"
import { Connection } from "./connection.ts"
import { closeConnectionsKeepingWal, cutWal } from "./discardUncommitted.ts"
import { checkpointTruncate, openDatabase } from "./openDatabase.ts"
import type { PageSet } from "./pageSet.ts"
import { mergePageSets } from "./pageSet.ts"
import type { WalPosition } from "./WalCapture.ts"
import { WalCapture } from "./WalCapture.ts"

export interface LeaderDatabaseOptions {
  readonly databasePath: string
  readonly pageSize: number
  /** Reader connections kept (pinned or idle); at least 2 (committed + pending view). */
  readonly readersMax: number
  /** The writer's page cache in pages: what a transaction may hold before spilling to the WAL. */
  readonly cachePages: number
  readonly statementCacheMax: number
}

/** A transaction committed locally and captured, not yet committed by Raft. */
export interface LocalCommit {
  readonly seq: number
  readonly pageSet: PageSet
  readonly walEnd: WalPosition
}

export interface CheckpointOutcome {
  readonly walBytesBefore: number
  readonly durationMs: number
}

export class LeaderDatabase {
  readonly databasePath: string
  private writerConnection: Connection
  private capture: WalCapture
  private readonly idleReaders: Array<Connection> = []
  private committed: Connection
  private pending: { readonly commit: LocalCommit; readonly reader: Connection } | null = null
  /** The end of the last Raft-committed transaction in the WAL (undefined: none in this WAL). */
  private committedWalEnd: WalPosition | undefined = undefined
  private open = true

  private constructor(
    private readonly options: LeaderDatabaseOptions,
    writer: Connection,
    capture: WalCapture,
    committed: Connection
  ) {
    this.databasePath = options.databasePath
    this.writerConnection = writer
    this.capture = capture
    this.committed = committed
  }

  /** The writer connection. */
  get writer(): Connection {
    assert(this.open, "leader database is open")
    return this.writerConnection
  }

  /** Opens the writer (creating the database if needed) and pins the first read view. The main
   * file must hold the whole committed state: the caller has removed any WAL. */
  static open(options: LeaderDatabaseOptions): LeaderDatabase {
    assert(options.readersMax >= 2, "at least two readers (committed and pending view)")
    const { writer, capture, reader } = LeaderDatabase.openConnections(options)
    return new LeaderDatabase(options, writer, capture, reader)
  }

  private static openConnections(options: LeaderDatabaseOptions): { writer: Connection; capture: WalCapture; reader: Connection } {
    assert(!fs.existsSync(`${options.databasePath}-wal`) || fs.statSync(`${options.databasePath}-wal`).size === 0, "no WAL left before the writer opens")
    const writerDb = openDatabase(options.databasePath, { pageSize: options.pageSize, busyTimeoutMs: 0 })
    const writer = new Connection(writerDb, options.statementCacheMax)
    try {
      writerDb.pragma(`cache_size=${options.cachePages}`)
      const capture = new WalCapture({ databasePath: options.databasePath, pageSize: options.pageSize })
      const reader = LeaderDatabase.openReader(options)
      pin(reader)
      return { writer, capture, reader }
    } catch (error) {
      writer.close()
      throw error
    }
  }

  /** Cuts the pending local commit (and anything uncommitted) and reopens on the committed
   * state: for a transaction refused after its local commit (over the size bound). */
  reopenDiscarding(): void {
    assert(this.open, "leader database is open")
    this.close("discard")
    const { writer, capture, reader } = LeaderDatabase.openConnections(this.options)
    this.writerConnection = writer
    this.capture = capture
    this.committed = reader
    this.committedWalEnd = undefined
    this.open = true
  }

  private static openReader(options: LeaderDatabaseOptions): Connection {
    const db = openDatabase(options.databasePath, { pageSize: options.pageSize, readonly: true, busyTimeoutMs: 0 })
    return new Connection(db, options.statementCacheMax)
  }

  get isOpen(): boolean {
    return this.open
  }

  /** The reader pinned at the last Raft-committed state. */
  get committedView(): Connection {
    assert(this.open, "leader database is open")
    return this.committed
  }

  get pendingCommit(): LocalCommit | null {
    return this.pending?.commit ?? null
  }

  /** After a local COMMIT: reads the transaction's frames back and pins a view on the new
   * state. Null when the transaction wrote nothing. Only one local commit may wait for Raft. */
  captureLocalCommit(seq: number): LocalCommit | null {
    assert(this.open, "leader database is open")
    assert(this.pending === null, "one local commit at a time")
    assert(!this.writer.inTransaction, "captured after the transaction ended")
    const transactions = this.capture.capture()
    const last = transactions[transactions.length - 1]
    if (last === undefined) return null
    const pageSet = mergePageSets(transactions)
    const commit: LocalCommit = { seq, pageSet, walEnd: last.walEnd }
    const reader = this.idleReaders.pop() ?? LeaderDatabase.openReader(this.options)
    pin(reader)
    this.pending = { commit, reader }
    return commit
  }

  /** Raft committed the pending local commit `seq`: its view becomes the committed view. */
  markCommitted(seq: number): void {
    assert(this.open, "leader database is open")
    const pending = this.pending
    assert(pending !== null && pending.commit.seq === seq, `the entry applied (${seq}) is the pending local commit (${pending?.commit.seq})`)
    this.release(this.committed)
    this.committed = pending.reader
    this.committedWalEnd = pending.commit.walEnd
    this.pending = null
  }

  /** The WAL's size on disk (stale bytes included). */
  walBytes(): number {
    try {
      return fs.statSync(`${this.databasePath}-wal`).size
    } catch {
      return 0
    }
  }

  /** wal_checkpoint(TRUNCATE) when every frame is Raft-committed: no transaction open, nothing
   * pending. Unpins the view for the duration (a pinned reader would hold the checkpoint back). */
  checkpoint(): CheckpointOutcome {
    assert(this.open && this.pending === null && !this.writerConnection.inTransaction, "checkpoint only with every frame committed")
    const started = performance.now()
    const walBytesBefore = this.walBytes()
    unpin(this.committed)
    const result = checkpointTruncate(this.writerConnection.db)
    assert(result.busy === 0, "checkpoint with no reader and no writer completes")
    pin(this.committed)
    this.committedWalEnd = undefined
    return { walBytesBefore, durationMs: performance.now() - started }
  }

  /** The committed view's database image (for a snapshot). */
  serialize(): Uint8Array {
    assert(this.open, "leader database is open")
    return this.committed.db.serialize()
  }

  /** Closes every connection. "discard": the main file ends up holding exactly the committed
   * state and no WAL is left. "keepWal": as a crash leaves it (the next start drops the WAL). */
  close(mode: "discard" | "keepWal"): void {
    if (!this.open) return
    this.open = false
    const readers = [...this.idleReaders, ...(this.pending === null ? [] : [this.pending.reader])]
    this.idleReaders.length = 0
    this.pending = null
    for (const reader of readers) reader.close()
    this.capture.close()
    const keep = this.committedWalEnd
    // Closing the writer first while the committed view still reads keeps the WAL.
    closeConnectionsKeepingWal(this.writerConnection.db, this.committed.db)
    this.writerConnection.close()
    this.committed.close()
    if (mode === "keepWal") return
    cutWal(this.databasePath, keep)
    const db = openDatabase(this.databasePath, { pageSize: this.options.pageSize, busyTimeoutMs: 0 })
    try {
      const result = checkpointTruncate(db)
      assert(result.busy === 0, "the step-down checkpoint completes")
    } finally {
      db.close()
    }
    fs.rmSync(`${this.databasePath}-wal`, { force: true })
    fs.rmSync(`${this.databasePath}-shm`, { force: true })
  }

  private release(reader: Connection): void {
    unpin(reader)
    if (this.idleReaders.length + 2 < this.options.readersMax) this.idleReaders.push(reader)
    else reader.close()
  }
}

/** Starts a read transaction: from here the connection sees the database as it is now. */
function pin(reader: Connection): void {
  assert(!reader.inTransaction, "pinning a reader that is not in a transaction")
  reader.db.exec("BEGIN")
  reader.prepare("SELECT count(*) FROM sqlite_schema").get()
  assert(reader.inTransaction, "the reader holds a read transaction")
}

function unpin(reader: Connection): void {
  if (reader.inTransaction) reader.db.exec("ROLLBACK")
}
