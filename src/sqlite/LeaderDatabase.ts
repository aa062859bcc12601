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
// WAL and replays the log from the index the main file reflects. The discard stays due: a later
// `close("discard")` does it, should the process write the file before it ends (README "Shutdown").
//
// Client reads do not run on the committed view: they go to the database's reader pool
// (readPool/, worker threads by default), which pins its own snapshots and serves one only once
// Raft has committed it. The writer tells the readers what the WAL holds through ReadVersions: a
// seqlock around every local COMMIT (commitLocally), the committed version (markCommitted), an
// epoch bumped before any cut or close. The committed view stays for snapshots, DUMP images and
// statement metadata. See README.md "Reads in worker threads".

import fs from "node:fs"
import { assert } from "../assert.ts"
import { Connection } from "./connection.ts"
import { closeConnectionsKeepingWal, cutWal } from "./discardUncommitted.ts"
import { checkpointTruncate, openDatabase } from "./openDatabase.ts"
import type { CheckpointWorker } from "./CheckpointWorker.ts"
import { waitIdle } from "./CheckpointWorker.ts"
import type { PageSet } from "./pageSet.ts"
import { mergePageSets } from "./pageSet.ts"
import type { StatementOutcome } from "./connection.ts"
import type { DatabaseReaders, ReadPoolService } from "./readPool/ReadPool.ts"
import { ReadVersions } from "./readPool/versions.ts"
import type { ReadHorizon } from "./readPool/horizon.ts"
import type { RowStream, SqlFailure, SqlValue } from "./Sql.ts"
import type { CapturedTransaction, WalPosition } from "./WalCapture.ts"
import { WalCapture } from "./WalCapture.ts"
import type { CommittedWal } from "./leadingImage.ts"
import { indexCommittedWal, readCommittedPages } from "./leadingImage.ts"
import { walHeaderBytes } from "./walFormat.ts"
import { trace, traceDuration } from "../runtime/trace.ts"
import { stepsYielding } from "../runtime/yieldToLoop.ts"
import type { Scope } from "effect"
import { Effect } from "effect"
import { isDiskFull } from "../actors/DiskFullWatch.ts"
import type { DiskService } from "../storage/Disk.ts"
import { nodeDisk, runNow, unlinkIfExists } from "../storage/Disk.ts"

export interface LeaderDatabaseOptions {
  readonly databasePath: string
  readonly pageSize: number
  /** Reader connections kept (pinned or idle); at least 2 (committed + pending view). */
  readonly readersMax: number
  /** The writer's page cache in pages: what a transaction may hold before spilling to the WAL. */
  readonly cachePages: number
  readonly statementCacheMax: number
  /** Where client reads run (worker threads, or in-thread for the simulator). */
  readonly readPool: ReadPoolService
  /** Where tqlite's own changes to the files go (the step-down's WAL cut and removal); SQLite
   * does its own I/O. Default: the real file system. */
  readonly disk?: DiskService
  /** Where checkpoints run off the event loop (CheckpointWorker.ts); without it (the simulator)
   * `checkpoint` runs them on the writer's connection. */
  readonly checkpointWorker?: CheckpointWorker
  /** How long the worker's checkpoint waits for a pool reader before it reports busy. */
  readonly checkpointBusyTimeoutMs?: number
}

/** The worker's checkpoint waits this long for a reader by default: long enough for the reads in
 * progress when it starts to end (it waits only for those: a read that starts once the WAL is
 * copied reads the main file). The writer waits meanwhile; a checkpoint readers held back is not
 * asked again until those reads ended (writerCore.ts "checkpoint back-off"), so a long query
 * costs the writer this wait once, not at every entry. */
export const checkpointBusyTimeoutMsDefault = 250
/** How long a close may wait for a checkpoint still running in the worker (the main thread is
 * blocked meanwhile: only a step-down that arrives in the middle of one). A checkpoint copies at
 * most a WAL of walCheckpointBytes plus one transaction; past this the disk is failing, and
 * closing beside it could leave the worker's connection the last one (which checkpoints
 * everything, uncommitted frames included): a defect. */
export const checkpointCloseWaitMsMax = 60_000

/** A transaction committed locally and captured, not yet committed by Raft. */
export interface LocalCommit {
  readonly seq: number
  readonly pageSet: PageSet
  readonly walEnd: WalPosition
}

/** A committed image being read (LeaderDatabase.openCommittedImage). */
export interface CommittedImageReader {
  readonly sizeBytes: number
  /** Fills `out` with the image's bytes at `offsetBytes` (whole pages); a string says why it
   * cannot (the files changed under the read: a step-down). */
  readonly read: (offsetBytes: number, out: Uint8Array) => string | null
  /** Ends the hold on checkpoints and closes the files (idempotent). */
  readonly release: () => void
}

export interface CheckpointOutcome {
  readonly walBytesBefore: number
  readonly durationMs: number
  /** A reader kept the checkpoint from completing (a long read), or the disk is full: the WAL
   * stays, retried later. */
  readonly busy: boolean
  /** Why it was busy: "readers" (pool readers held the WAL), "other" (a snapshot copy holds
   * checkpoints off, or the disk is full: nothing waited). */
  readonly blockedBy: "readers" | "other" | null
}

export class LeaderDatabase {
  readonly databasePath: string
  private writerConnection: Connection
  private capture: WalCapture
  private readonly idleReaders: Array<Connection> = []
  private committed: Connection
  private pending: { readonly commit: LocalCommit; readonly reader: Connection; readonly version: number } | null = null
  /** What the readers may see (shared with the worker threads). */
  readonly versions = ReadVersions.create()
  private readers: DatabaseReaders
  /** Local COMMITs bracketed by commitLocally since the last capture (a capture that finds a
   * transaction nobody bracketed is a bug the readers could not see: asserted). */
  private bracketedCommits = 0
  /** The end of the last Raft-committed transaction in the WAL (undefined: none in this WAL). */
  private committedWalEnd: WalPosition | undefined = undefined
  private open = true
  /** A `close("discard")` whose WAL cut or checkpoint failed: what it was to keep. */
  private discardUnfinished: { readonly keep: WalPosition | undefined } | null = null
  /** Snapshots being copied from the main file and the committed WAL prefix: while any is,
   * `checkpoint` reports busy without running, so neither changes under the copy. */
  private snapshotHolds = 0
  /** Bumped whenever the connections close (a step-down, or `reopenDiscarding`): a close
   * checkpoints into the main file, which voids a snapshot copy in progress. */
  private generation = 0
  /** The worker's last checkpoint of this database: 1 while it still has the database open. */
  private checkpointIdle: Int32Array | null = null

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
    this.readers = this.openReaders()
  }

  private openReaders(): DatabaseReaders {
    return this.options.readPool.forDatabase({ databasePath: this.options.databasePath, pageSize: this.options.pageSize, versions: this.versions })
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
    this.versions.markAllCommitted()
    this.readers = this.openReaders()
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

  /** Every local COMMIT of the writer goes through here (LeaderWriter): the WAL version is odd
   * while `commit` runs, so a reader whose snapshot straddles it pins again. Only with nothing
   * pending (one local commit at a time). */
  commitLocally<A>(commit: () => A): A {
    assert(this.open, "leader database is open")
    const walBytesBefore = this.walBytes()
    this.versions.beginLocalCommit()
    let completed = false
    try {
      const result = commit()
      completed = true
      return result
    } finally {
      this.versions.endLocalCommit()
      this.bracketedCommits++
      // It threw: if the WAL did not grow, nothing was committed and what the WAL holds is
      // committed (readers pinned meanwhile need not wait). It may have grown and committed (an
      // autocommit statement refused afterwards as too big): then the capture that follows
      // decides, as after any commit.
      if (!completed && this.pending === null && this.walBytes() === walBytesBefore) this.markAllCommitted()
    }
  }

  /** A client read: dispatched now (call it once leadership is confirmed and everything
   * committed before the read is applied), served by a reader from a snapshot at least this
   * fresh and never ahead of what Raft committed. */
  read(sql: string, params: ReadonlyArray<SqlValue>): Effect.Effect<StatementOutcome, SqlFailure> {
    assert(this.open, "leader database is open")
    return this.readers.read(sql, params, this.versions.epoch())
  }

  /** `read`, streamed (readPool's `stream`): the rows a batch at a time, the reader's snapshot
   * held until the scope closes. */
  readStream(sql: string, params: ReadonlyArray<SqlValue>): Effect.Effect<RowStream, SqlFailure, Scope.Scope> {
    assert(this.open, "leader database is open")
    return this.readers.stream(sql, params, this.versions.epoch())
  }

  readersStats() {
    return this.readers.stats()
  }

  /** Which pool reads may still hold a snapshot (readPool/horizon.ts). */
  readHorizon(): ReadHorizon {
    return this.readers.horizon()
  }

  private markAllCommitted(): void {
    this.versions.markAllCommitted()
    this.readers.changed()
  }

  /** After a local COMMIT: reads the transaction's frames back and pins a view on the new
   * state. Null when the transaction wrote nothing. Only one local commit may wait for Raft. */
  captureLocalCommit(seq: number): LocalCommit | null {
    this.assertCapturable()
    return this.captured(seq, this.capture.capture())
  }

  /** `captureLocalCommit` for a large transaction: its frames are read and checked a step of
   * `readFramesStep` frames at a time, the event loop free between two steps (a whole-WAL read
   * into fresh memory held it 0.2–0.7 s for 20 MiB on the dev VM: issue 17). Nothing else may
   * touch the WAL meanwhile (the writer waits for this); `abandon()` is asked between steps, and
   * a database closed meanwhile ends it too: then the result is `undefined` and nothing was
   * recorded (the close decided what becomes of the local commit). */
  captureLocalCommitInSteps(seq: number, readFramesStep: number, abandon: () => boolean): Effect.Effect<LocalCommit | null | undefined> {
    return Effect.suspend(() => {
      this.assertCapturable()
      const steps = this.capture.captureSteps(readFramesStep)
      return Effect.map(stepsYielding(steps, () => !this.open || abandon()), (transactions) => (transactions === undefined ? undefined : this.captured(seq, transactions)))
    })
  }

  private assertCapturable(): void {
    assert(this.open, "leader database is open")
    assert(this.pending === null, "one local commit at a time")
    assert(!this.writer.inTransaction, "captured after the transaction ended")
  }

  private captured(seq: number, transactions: ReadonlyArray<CapturedTransaction>): LocalCommit | null {
    trace("writer.walRead")
    const last = transactions[transactions.length - 1]
    const bracketed = this.bracketedCommits
    this.bracketedCommits = 0
    if (last === undefined) {
      // Nothing new in the WAL: what it holds is committed.
      this.markAllCommitted()
      return null
    }
    assert(bracketed > 0, "every local COMMIT runs inside commitLocally")
    const pageSet = mergePageSets(transactions)
    const commit: LocalCommit = { seq, pageSet, walEnd: last.walEnd }
    const reader = this.idleReaders.pop() ?? LeaderDatabase.openReader(this.options)
    pin(reader)
    this.pending = { commit, reader, version: this.versions.walVersion() }
    return commit
  }

  /** The writer has encoded the pending local commit `seq` into its entry (which it keeps for
   * every proposal): the captured pages are not needed any more and go now rather than when the
   * entry commits — 20 MiB less held per large transaction while it is replicated (issue 17's
   * memory). The pending commit keeps its seq and WAL end, and an empty page set. */
  dropPendingPages(seq: number): void {
    const pending = this.pending
    if (pending === null || pending.commit.seq !== seq) return
    const pageSet = pending.commit.pageSet
    this.pending = { ...pending, commit: { ...pending.commit, pageSet: { ...pageSet, pages: [] } } }
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
    this.versions.markCommitted(pending.version)
    this.readers.changed()
  }

  /** Bytes the WAL holds past what was captured last (stale bytes included, so an upper bound):
   * how much a capture now may have to read. */
  uncapturedWalBytes(): number {
    return Math.max(0, this.walBytes() - (this.capture.position?.offsetBytes ?? 0))
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
   * pending. Unpins the view for the duration (a pinned reader would hold the checkpoint back).
   * A pool reader in the middle of a read may hold it back anyway: then the WAL stays as it is
   * (SQLite may have copied some frames, which changes nothing: they are committed) and the
   * writer tries again after a later commit. Reads are time-limited, so that ends. A full disk
   * (SQLITE_FULL: the main file cannot grow) is the same case: reported busy, tried again later,
   * never thrown into the writer. */
  checkpoint(): CheckpointOutcome {
    assert(this.open && this.pending === null && !this.writerConnection.inTransaction, "checkpoint only with every frame committed")
    const started = performance.now()
    const walBytesBefore = this.walBytes()
    // A snapshot is copying the main file: the writer tries again after a later commit, as after
    // a busy checkpoint. The WAL grows meanwhile by what is committed during the copy.
    if (this.snapshotHolds > 0) return { walBytesBefore, durationMs: 0, busy: true, blockedBy: "other" }
    const disk = this.options.disk ?? nodeDisk
    unpin(this.committed)
    let result: ReturnType<typeof checkpointTruncate>
    try {
      // SQLite writes the main file by itself here: where the simulator's disk fails it.
      if (disk.checkWritable !== undefined) runNow(disk.checkWritable(this.databasePath))
      // Without SQLite's own fsyncs (of the WAL, then of the main file): they ran on the event
      // loop, 100–350 ms for a 20 MiB WAL on the dev VM under load (issue 17's write stalls).
      // The main file is fdatasynced on the thread pool before the machine records it as
      // holding these commits (SqliteMachine.checkpointed); the WAL needs no durability (a
      // starting node deletes it and replays from the index the record names).
      const db = this.writerConnection.db
      db.pragma("synchronous=OFF")
      try {
        result = checkpointTruncate(db)
      } finally {
        db.pragma("synchronous=NORMAL")
      }
    } catch (error) {
      if (!isDiskFull(error)) throw error
      return { walBytesBefore, durationMs: performance.now() - started, busy: true, blockedBy: "other" }
    } finally {
      // Also when it threw (SQLITE_FULL): an unpinned committed view would read the next
      // uncommitted local commit (snapshots and DUMP images are served from it).
      pin(this.committed)
    }
    // The WAL was emptied only when the checkpoint completed; else committedWalEnd still names
    // the last committed frame of this WAL.
    if (result.busy === 0) this.committedWalEnd = undefined
    traceDuration("writer.checkpoint.ms", started, 0)
    return { walBytesBefore, durationMs: performance.now() - started, busy: result.busy !== 0, blockedBy: result.busy !== 0 ? "readers" : null }
  }

  /** Whether checkpoints run in a worker thread (`checkpointOffLoop`) rather than `checkpoint`. */
  get checkpointsOffLoop(): boolean {
    return this.options.checkpointWorker !== undefined
  }

  /** `checkpoint`, run by the checkpoint worker on a connection of its own (CheckpointWorker.ts
   * has the rules): the event loop is free while the WAL is copied. Same preconditions and
   * outcome; the writer waits for it as for `checkpoint` (TRUNCATE takes SQLite's writer lock).
   * A snapshot or DUMP hold taken meanwhile stays consistent while pages are copied (each page
   * copied is one of its committed frames, which it reads from the WAL), sees a short WAL once
   * it is truncated, and is voided at the end (`generation`). Uninterruptible: the writer's
   * scope closing waits for the checkpoint rather than leave it running unseen.
   * `waitForReaders` false: no busy wait at all (readers known to hold the WAL still read). */
  checkpointOffLoop(waitForReaders = true): Effect.Effect<CheckpointOutcome> {
    return Effect.uninterruptible(Effect.suspend((): Effect.Effect<CheckpointOutcome> => {
      const worker = this.options.checkpointWorker
      assert(worker !== undefined, "a checkpoint worker")
      assert(this.open && this.pending === null && !this.writerConnection.inTransaction, "checkpoint only with every frame committed")
      const started = performance.now()
      const walBytesBefore = this.walBytes()
      if (this.snapshotHolds > 0) return Effect.succeed({ walBytesBefore, durationMs: 0, busy: true, blockedBy: "other" as const })
      // A pinned view would hold the TRUNCATE back; nothing is pending, so the unpinned view
      // still reads the committed state.
      unpin(this.committed)
      const busyTimeoutMs = waitForReaders ? this.options.checkpointBusyTimeoutMs ?? checkpointBusyTimeoutMsDefault : 0
      const ticket = worker.start(this.databasePath, "TRUNCATE", busyTimeoutMs)
      this.checkpointIdle = ticket.idle
      return Effect.either(ticket.result).pipe(
        Effect.flatMap((result): Effect.Effect<CheckpointOutcome> => {
          if (result._tag === "Left") {
            // SQLITE_FULL: the main file cannot grow; tried again later, as `checkpoint` does.
            if (result.left.code === "SQLITE_FULL") return Effect.succeed({ walBytesBefore, durationMs: performance.now() - started, busy: true, blockedBy: "other" as const })
            return Effect.die(result.left)
          }
          if (result.right.busy === 0) this.committedWalEnd = undefined
          traceDuration("writer.checkpoint.ms", started, 0)
          const busy = result.right.busy !== 0
          return Effect.succeed({ walBytesBefore, durationMs: performance.now() - started, busy, blockedBy: busy ? "readers" as const : null })
        }),
        Effect.ensuring(Effect.sync(() => {
          // A close (a step-down in the applier) may have come meanwhile: it waited for the
          // worker, and the views are gone.
          if (!this.open) return
          this.generation++
          pin(this.committed)
        }))
      )
    }))
  }

  /** Holds checkpoints for a snapshot of the committed state, which is then the main file with
   * the WAL's frames up to `walEnd` laid over it (none when undefined). Valid as long as
   * `holdValid` says so; `release` once the copy is done (or abandoned). */
  holdForSnapshot(): { readonly walEnd: WalPosition | undefined; readonly generation: number; readonly release: () => void } {
    assert(this.open, "leader database is open")
    this.snapshotHolds++
    let released = false
    return {
      walEnd: this.committedWalEnd,
      generation: this.generation,
      release: () => {
        if (released) return
        released = true
        this.snapshotHolds--
      }
    }
  }

  /** The connections a hold was taken on are still open: the main file and the WAL prefix are
   * as they were. */
  holdValid(hold: { readonly generation: number }): boolean {
    return this.open && this.generation === hold.generation
  }

  /** The committed state's image, read from the files a chunk at a time (a DUMP): the main file
   * with the WAL's committed frames laid over it (leadingImage.ts), checkpoints held off until
   * `release`, so neither changes under the reads. Call it where the committed view is current
   * (after a leadership check, everything committed applied). Throws when the WAL prefix is not
   * the one the last commit left. */
  openCommittedImage(): CommittedImageReader {
    assert(this.open, "leader database is open")
    const hold = this.holdForSnapshot()
    const pageSize = this.options.pageSize
    let mainFd: number | null = null
    let walFd: number | null = null
    const release = () => {
      hold.release()
      if (mainFd !== null) fs.closeSync(mainFd)
      if (walFd !== null) fs.closeSync(walFd)
      mainFd = walFd = null
    }
    try {
      mainFd = fs.openSync(this.databasePath, "r")
      const walEnd = hold.walEnd
      let wal: CommittedWal | null = null
      let sizeBytes = Math.ceil(fs.fstatSync(mainFd).size / pageSize) * pageSize
      if (walEnd !== undefined && walEnd.offsetBytes > walHeaderBytes) {
        walFd = fs.openSync(`${this.databasePath}-wal`, "r")
        const indexed = indexCommittedWal(walFd, pageSize, walEnd)
        if (typeof indexed === "string") throw new Error(`the committed image of ${this.databasePath} cannot be read: ${indexed}`)
        wal = indexed
        sizeBytes = indexed.dbSizePages * pageSize
      }
      return {
        sizeBytes,
        read: (offsetBytes, out) => {
          assert(offsetBytes % pageSize === 0 && out.length % pageSize === 0 && offsetBytes + out.length <= sizeBytes, "image reads are whole pages within the image")
          if (mainFd === null || !this.holdValid(hold)) return "the database was closed while its image was read (a step-down)"
          const problem = readCommittedPages(mainFd, walFd, wal, pageSize, offsetBytes / pageSize + 1, Buffer.from(out.buffer, out.byteOffset, out.byteLength))
          if (problem !== null) return problem
          // Read whole before a close could checkpoint into the main file.
          return this.holdValid(hold) ? null : "the database was closed while its image was read (a step-down)"
        },
        release
      }
    } catch (error) {
      release()
      throw error
    }
  }

  /** The committed view's database image (for a snapshot). */
  serialize(): Uint8Array {
    assert(this.open, "leader database is open")
    return this.committed.db.serialize()
  }

  /** Closes every connection. "discard": the main file ends up holding exactly the committed
   * state and no WAL is left. "keepWal": as a crash leaves it (the next start drops the WAL);
   * the discard stays due, and a later `close("discard")` does it (the machine's, before it
   * writes pages into the file or records it: the committed frames are only in that WAL). */
  close(mode: "discard" | "keepWal"): void {
    // The worker's connection must be closed before ours (CheckpointWorker.ts).
    const idle = this.checkpointIdle
    if (idle !== null) assert(waitIdle(idle, checkpointCloseWaitMsMax), `the checkpoint of ${this.databasePath} in the worker ended within ${checkpointCloseWaitMsMax} ms`)
    if (this.open) {
      this.open = false
      this.generation++
      // First every pin is voided and every pool reader's connection closed: one left open would
      // keep SQLite's in-process wal-index of the WAL cut below (and hold its checkpoint back).
      this.versions.newEpoch()
      this.readers.changed()
      this.readers.close()
      const readers = [...this.idleReaders, ...(this.pending === null ? [] : [this.pending.reader])]
      this.idleReaders.length = 0
      this.pending = null
      for (const reader of readers) reader.close()
      this.capture.close()
      // Closing the writer first while the committed view still reads keeps the WAL.
      closeConnectionsKeepingWal(this.writerConnection.db, this.committed.db)
      this.writerConnection.close()
      this.committed.close()
      this.discardUnfinished = { keep: this.committedWalEnd }
      if (mode === "keepWal") return
    }
    // A discard that failed part way (a full disk during the cut or the checkpoint) is finished
    // by the next call: returning at once would leave committed frames in a WAL beside a file
    // the page applier writes, and the next start deletes that WAL.
    const discard = this.discardUnfinished
    if (discard === null) return
    const disk = this.options.disk ?? nodeDisk
    cutWal(disk, this.databasePath, discard.keep)
    // SQLite writes the main file by itself here: where the simulator's disk fails it.
    if (disk.checkWritable !== undefined) runNow(disk.checkWritable(this.databasePath))
    const db = openDatabase(this.databasePath, { pageSize: this.options.pageSize, busyTimeoutMs: 0 })
    try {
      const result = checkpointTruncate(db)
      assert(result.busy === 0, "the step-down checkpoint completes")
    } finally {
      db.close()
    }
    for (const file of [`${this.databasePath}-wal`, `${this.databasePath}-shm`]) {
      runNow(unlinkIfExists(disk, file))
    }
    this.discardUnfinished = null
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
