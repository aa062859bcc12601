// The replicated state machine of a tqlite node: its named SQLite databases, one file each under
// `<dataDir>/databases/`, driven by the applier actor (src/actors/Applier.ts).
//
// Each committed write entry (writeEntry.ts) carries the pages one transaction (or one batch of
// them) wrote to one database. A database is in one of two modes on a node:
// - closed (every follower, and a leader's databases until it needs them): no SQLite connection is
//   open on it; entries are applied as pages into the main file (PageApplier), fdatasynced once
//   per applier batch (`sync`), after which `applied-state` (appliedState.ts) records the index
//   the file reflects. A restart skips entries at or below it and replays the rest.
// - leading: this node's writer (LeaderWriter) owns the connections (LeaderDatabase). The entries
//   it proposed are already in its WAL: applying one only marks it committed (the pending read
//   view becomes the committed one). No other entry for that database can arrive while it leads:
//   the writer opens only once this node's barrier entry is applied (every earlier entry applied,
//   and any proposal of an earlier writer settled), and one leader appends for its whole term.
//   When another leader's entry arrives anyway (this node lost leadership and its writer has not
//   noticed yet), the database is closed on the spot, its uncommitted frames cut, then the pages
//   are applied; the writer notices the database closed at its next step and stops.
// - The machine never calls back into the writer: it recognizes the writer's entries by their
//   origin (LeaderSlotOwner is data), moves the read view itself (LeaderDatabase.markCommitted),
//   and the writer learns a commit from its proposal's result (`Own`, or `OwnCopy` for a copy
//   proposed again after an unknown outcome).
//
// Snapshots are the database files as of the applied index, streamed (databaseSnapshot.ts: a
// manifest, then the images) in chunks, the event loop released between them, while the applier
// goes on: a closed database's main file is read with the images of pages applied since laid over
// it (CopyOnWrite.ts: the page applier saves a page the copy has not reached before overwriting
// it); a leading one is its main file plus the WAL's committed frames (leadingImage.ts).
// Installing one received from the leader renames the images `receiveAlongside` split off as the
// bytes arrived (receivedImages.ts, durable by then); any other install streams every image
// into `<file>.tmp` and fsyncs it. Then it renames them all,
// fsyncs the directory and writes `applied-state` last. A crash before the renames leaves the old
// files (the temp files are set aside at start); a crash after some of them leaves files the record says are
// older than the snapshot the log installed, so the next start installs that snapshot again
// (`needsBootSnapshot`): the node serves either the old state or the new one, never a mix.
import { Cause, Effect } from "effect"
// Snapshots read the files they copy through descriptors of their own (node:fs, reads only);
// everything tqlite writes goes through `Disk`.
import fs from "node:fs"
import path from "node:path"
import type { DiskService } from "../storage/Disk.ts"
import { nodeDisk, runNow, unlinkIfExists, withFile, writeOffLoop } from "../storage/Disk.ts"
import type { Leftovers } from "../storage/leftovers.ts"
import { leftoversOf } from "../storage/leftovers.ts"
import type { PreparedSnapshot, StateMachine } from "../actors/Applier.ts"
import { applyLater } from "../actors/Applier.ts"
import { assert } from "../assert.ts"
import type { Entry, LogIndex, NodeId, SnapshotMeta, Term } from "../raft/types.ts"
import type { AppliedState, DatabaseFileState, FsyncMode } from "./appliedState.ts"
import { AppliedStateFile } from "./appliedState.ts"
import type { BootLog, BootSnapshot, IncomingSnapshot, SnapshotSink, SnapshotSource } from "../actors/snapshotData.ts"
import { readExactly, SnapshotSkipped, yieldEventLoop } from "../actors/snapshotData.ts"
import type { DatabaseEntry } from "./databaseSnapshot.ts"
import { decodeManifest, encodeManifest, manifestLength, manifestPrefixBytes } from "./databaseSnapshot.ts"
import type { LeaderDatabase } from "./LeaderDatabase.ts"
import type { Connection } from "./connection.ts"
import { OwnCopyReaders } from "./OwnCopyReaders.ts"
import type { CommittedWal } from "./leadingImage.ts"
import { indexCommittedWal, readCommittedPages } from "./leadingImage.ts"
import { PageApplier } from "./PageApplier.ts"
import { CopyOnWrite, copyOnWritePathOf } from "./CopyOnWrite.ts"
import type { DiskFailure } from "../storage/errors.ts"
import type { PageFileError } from "./errors.ts"
import type { WalPosition } from "./WalCapture.ts"
import { walFrameBytes, walHeaderBytes } from "./walFormat.ts"
import { isDiskFull } from "../actors/DiskFullWatch.ts"
import { SqlNotLeader } from "./Sql.ts"
import { decodeWriteEntry } from "./writeEntry.ts"
import type { ReceivedImages } from "./receivedImages.ts"
import { ImageSplitter, receivedSuffix } from "./receivedImages.ts"
import { trace, traceDuration, tracing } from "../runtime/trace.ts"
import { largePayloadBytes } from "../runtime/yieldToLoop.ts"
import { Mutex } from "../runtime/Mutex.ts"
import type { PageSet } from "./pageSet.ts"

export type SqliteApplyResult =
  /** Our own writer's entry: its frames were already in the WAL. */
  | { readonly _tag: "Own"; readonly database: string; readonly seq: number }
  /** Another copy of our own writer's entry `seq`, already applied (it was proposed again after
   * an unknown outcome): skipped, and the writer learns its entry committed. */
  | { readonly _tag: "OwnCopy"; readonly database: string; readonly seq: number }
  /** Written as pages into the main file (or already there, on replay). */
  | { readonly _tag: "Pages"; readonly database: string }
  /** Not applied: it was computed on a state that is no longer the database's (see writeEntry.ts). */
  | { readonly _tag: "Skipped"; readonly database: string; readonly reason: string }
  /** A barrier or configuration entry. */
  | { readonly _tag: "None" }

/** The writer that leads a database, as the state machine sees it: data only, no callbacks. The
 * writer learns its commits from the results of its proposals, and notices the database closed
 * when the machine takes it away. */
export interface LeaderSlotOwner {
  readonly term: Term
  /** Whose entries are this writer's (with `term`): they are in its WAL already. */
  readonly origin: { readonly node: NodeId; readonly epoch: number }
  readonly database: LeaderDatabase
}

export interface SqliteMachineOptions {
  readonly dataDir: string
  readonly nodeId: NodeId
  readonly pageSize: number
  readonly fsync: FsyncMode
  /** Where the machine's own files are written: pages, applied-state, snapshot installs, WAL
   * cuts (default: the real file system). SQLite's own I/O does not go through it. */
  readonly disk?: DiskService
  /** Pages applied to closed databases are fdatasynced (and the index they reflect recorded)
   * once this many entries were applied since the last time, not after every applier batch.
   * Safe because nothing depends on the files being durable: after a crash the node replays
   * from the index recorded last, from its Raft log or, if the log was compacted past it, from
   * its newest snapshot (which holds the files' content as of its index). It bounds that replay.
   * Default 1 (every batch). */
  readonly syncEveryEntries?: number
  /** …or once entries of this many bytes were applied since then, whichever comes first
   * (default `syncEveryBytesDefault`): 64 entries of 20 MiB left 1.3 GB of pages dirty. */
  readonly syncEveryBytes?: number
  /** The snapshot the node boots from (the RaftActor's recovered snapshot), read only if a
   * database file is older than it and the log (`bootSnapshot.log`) does not reach back to
   * the oldest file's index (then the files are brought up to the snapshot from the log). */
  readonly bootSnapshot: BootSnapshot | null
  /** Runs between two chunks of a snapshot being taken or installed (default: release the event
   * loop once, so sockets and timers run; the simulator passes Effect.void to stay in step). */
  readonly betweenChunks?: Effect.Effect<void>
  /** Bytes per chunk read or written while taking or installing a snapshot (default 1 MiB). */
  readonly snapshotChunkBytes?: number
  /** Known bugs, switched on only by the simulator's mutation tests to prove its checkers
   * catch them. `dropFollowerPage`: pages of another node's entry are applied without the
   * highest-numbered one (a follower that silently loses part of a write). */
  readonly bugs?: SqliteMachineBugs
  /** Prepared statements cached by each own-copy reader (default 64). */
  readonly ownCopyStatementCacheMax?: number
}

/** Known bugs of the durable-state code, each switched on by one mutation of the SQLite
 * simulator (test/sim/sqlite/mutations.test.ts) to prove its simulated disk catches it. */
export interface SqliteMachineBugs {
  /** Pages of another node's entry are applied without the highest-numbered one. */
  readonly dropFollowerPage?: boolean
  /** An own-copy reader keeps its page cache across applied pages (OwnCopyReaders' stale cache). */
  readonly ownCopyStaleCache?: boolean
  /** `sync` records the applied index without fdatasyncing the pages first (power loss during
   * apply). */
  readonly skipPageSync?: boolean
  /** An entry whose page write failed (a full disk) counts as applied on its retry (the page
   * applier resuming past a failed write). */
  readonly skipFailedEntry?: boolean
  /** A leader records its main file as holding each of its commits at once, before any
   * checkpoint copied them from the WAL (power loss before a checkpoint). */
  readonly checkpointEarly?: boolean
  /** A step-down discard that a full disk interrupted is forgotten (the bug before the fix). */
  readonly forgetFailedDiscard?: boolean
  /** An own-copy read opens the main file while a step-down discard that a full disk
   * interrupted is unfinished (its reader deletes the WAL that holds the committed frames). */
  readonly readBeforeDiscard?: boolean
  /** An own-copy read is served from a file holding part of an entry whose page write failed. */
  readonly readTornEntry?: boolean
  /** Snapshot images are installed without fdatasyncing them (power loss after an install). */
  readonly installUnsynced?: boolean
  /** Images split off a snapshot as it arrives are renamed into place without having been
   * fdatasynced (power loss after an install by rename). */
  readonly receivedUnsynced?: boolean
  /** A leader's checkpoint is recorded without fdatasyncing the main file it wrote without
   * SQLite's own fsyncs (power loss after a checkpoint). */
  readonly skipCheckpointSync?: boolean
  /** A step-down records its main file as current before the discard (WAL cut, checkpoint) made
   * it so (power loss during the WAL cut). */
  readonly recordBeforeDiscard?: boolean
  /** A writer leaving as a crash would (`release` "keepWal": a node's shutdown) leaves its
   * database as a closed file reflecting the applied index, its committed frames still in the
   * WAL the restart deletes (the bug before the fix: SQLite simulator seed 49). */
  readonly forgetKeptWal?: boolean
  /** A snapshot copying a closed database's file while entries are applied gets no
   * copy-on-write of the pages it has not copied yet (CopyOnWrite.ts): it holds later pages. */
  readonly skipCopyOnWrite?: boolean
  /** Not a durability bug: a follower's snapshot job is not `concurrent` (the applier waits for
   * the whole copy: the behaviour before the copy-on-write), for the test that shows what it cost. */
  readonly followerSnapshotWaits?: boolean
  /** Not a durability bug: the boot always restores from the snapshot (the behaviour before the
   * log replay), for tests that compare the two. */
  readonly neverReplayAtBoot?: boolean
}

export interface SqliteMachineStats {
  own: number
  pages: number
  skipped: number
  replayed: number
  syncs: number
  restores: number
  /** Boots that brought files older than the boot snapshot up to it from the log instead. */
  bootReplays: number
  /** Snapshots this machine was asked to take (prepared). */
  snapshots: number
  /** Entries whose pages were written off the event loop (PageApplier.applyOffLoop). */
  offLoopApplies: number
  /** Restores that renamed images received alongside the transfer into place (no copy). */
  installsByRename: number
  /** Pages saved for snapshots being copied while entries overwrote them (CopyOnWrite.ts). */
  snapshotPagesSaved: number
}

interface Slot {
  readonly name: string
  readonly path: string
  /** Durable: the main file reflects every change up to here (see appliedState.ts). */
  fileIndex: LogIndex
  fileLastChangeIndex: LogIndex
  /** The last entry that changed the database, as applied. */
  lastChangeIndex: LogIndex
  applier: PageApplier | null
  owner: LeaderSlotOwner | null
  /** A writer left in this term with a proposal whose fate was unknown: only a barrier of a
   * later term settles it. */
  unsettledTerm: Term
  /** The last of the owner's local commits applied (0 when none). */
  ownSeqApplied: number
  /** Counts the writers that led it: a snapshot streaming a closed file checks none began. */
  leads: number
  /** Counts what changed its main file outside a writer (pages applied, a snapshot installed,
   * a writer's discard): a snapshot copying it concurrently checks nothing did. */
  changes: number
  /** A writer's step-down discard that failed part way (a full disk while cutting or
   * checkpointing its WAL): the committed frames are still only in that WAL, so nothing writes,
   * records or reads the main file before `finishDiscard` ran it to the end. */
  discarding: LeaderDatabase | null
  /** The index the main file reflects once `discarding` is finished: the applied index when the
   * discard began. Not the applied index at finish time: an entry of this database whose apply
   * failed (a full disk) is counted in it before its pages are written, and an own-copy read may
   * finish the discard while the applier waits to retry that entry. */
  discardReflectsIndex: LogIndex
  /** An entry of this database whose page write failed part way (a full disk), until its retry
   * wrote it whole, or a large entry whose pages are being written off the loop
   * (`applyLargeEntry`): the file holds part of its pages, a state no leader ever had, which no
   * read may see (0 when none). */
  tornEntryIndex: LogIndex
  /** The snapshot copying this closed database's main file, if any: the page applier saves the
   * pages it still needs before overwriting them (CopyOnWrite.ts). */
  copy: CopyOnWrite | null
}

/** One database of a snapshot being taken: its manifest entry and how its image is read. */
interface SnapshotPart {
  readonly slot: Slot
  readonly entry: DatabaseEntry
  readonly mainFd: number
  /** Leading: its WAL and the hold on its checkpoints (the image is main file + committed frames). */
  readonly walFd: number | null
  readonly hold: { readonly walEnd: WalPosition | undefined; readonly generation: number; readonly release: () => void } | null
  readonly database: LeaderDatabase | null
  readonly walEnd: WalPosition | undefined
  readonly leads: number
  readonly changes: number
  /** Closed: the copy-on-write that keeps the image as of the snapshot's index while pages are
   * applied (registered on the slot until this part is copied). */
  readonly copy: CopyOnWrite | null
}

const databasesDirName = "databases"
/** `syncEveryBytes`'s default. Issue 17's write stalls: a follower applying a load of 20 MiB
 * entries synced every 64 entries, 1.3 GB of dirty pages at once, and the kernel's writeback of
 * them throttled every process's writes (the log's small appends held the loop 0.3–0.8 s after a
 * load). 64 MiB: a few such entries; the sync runs on the thread pool, the applier waits for it. */
export const syncEveryBytesDefault = 64 * 1024 * 1024
const appliedStateFileName = "applied-state"

export class SqliteMachine implements StateMachine<SqliteApplyResult> {
  readonly nodeId: NodeId
  readonly pageSize: number
  readonly databasesDir: string
  readonly disk: DiskService
  /** The index of the last entry applied (or the snapshot restored). */
  appliedIndex: LogIndex
  /** The term of the newest barrier entry applied: a leader of that term has applied everything
   * committed before it won. */
  barrierTerm: Term = 0
  /** What the open found left by an interrupted run (WALs, half-installed images), renamed
   * away: unlinked by `removeLeftovers` once the node serves. */
  private leftovers: Leftovers | null = null

  /** Unlinks, on the thread pool, the files the open set aside (see `leftovers`); the SQL node
   * runs it once the node serves. */
  readonly removeLeftovers: Effect.Effect<void, DiskFailure> = Effect.suspend(() => this.leftovers?.remove ?? Effect.void)

  readonly stats: SqliteMachineStats = { own: 0, pages: 0, skipped: 0, replayed: 0, syncs: 0, restores: 0, bootReplays: 0, snapshots: 0, offLoopApplies: 0, installsByRename: 0, snapshotPagesSaved: 0 }
  /** Called for each skipped entry (the simulator counts them: they should not happen). */
  onSkipped: ((database: string, index: LogIndex, reason: string) => void) | null = null
  private readonly slots = new Map<string, Slot>()
  /** Held by what changes files or slots across a wait (a large entry's apply, a sync, a
   * restore, a writer's lead, release and checkpoint record); free means the plain paths
   * (`applyNow`, `syncNow`) may run. */
  private readonly lock = new Mutex()
  private epochs = 0
  private closed = false
  /** The applied index at the last sync of the page files. */
  private syncedIndex: LogIndex = 0
  /** Bytes of the entries applied since the last sync (`syncEveryBytes`). */
  private appliedBytesUnsynced = 0
  /** Connections reading closed databases' files (OwnCopyReaders.ts). */
  private readonly ownCopy: OwnCopyReaders
  /** Closed files are read only once this index is applied: after a restart, a file may hold
   * pages of entries past the index it is recorded at, which only the replay up to the log's end
   * makes whole again (set by the SQL surface to the log's last index at boot). */
  ownCopyFromIndex: LogIndex = 0
  /** What `applied-state` says now (null before the machine wrote or read one). */
  private recorded: AppliedState | null = null
  /** The last entry whose pages could not be written (for the `skipFailedEntry` bug). */
  private failedApplyIndex: LogIndex = 0
  /** A snapshot arriving from the leader, its images split into files of their own
   * (receivedImages.ts), and the last one received whole, until `restore` renames it in. */
  private receiving: ImageSplitter | null = null
  private receivedTransfers = 0
  private received: { readonly images: ReceivedImages; readonly fileOf: (name: string) => string } | null = null

  private constructor(
    private readonly options: SqliteMachineOptions,
    private readonly stateFile: AppliedStateFile,
    appliedIndex: LogIndex
  ) {
    this.nodeId = options.nodeId
    this.pageSize = options.pageSize
    this.databasesDir = path.join(options.dataDir, databasesDirName)
    this.disk = options.disk ?? nodeDisk
    this.appliedIndex = appliedIndex
    this.ownCopy = new OwnCopyReaders({
      pageSize: options.pageSize,
      statementCacheMax: options.ownCopyStatementCacheMax ?? 64,
      readersMax: 32,
      ...(options.bugs?.ownCopyStaleCache === true ? { bugs: { keepStaleCache: true } } : {})
    })
  }

  /** Opens the node's data directory: drops every WAL (its frames are in the Raft log if they
   * were committed), and restores from the boot snapshot any database whose file is older. */
  static open(options: SqliteMachineOptions): Effect.Effect<SqliteMachine> {
    return Effect.gen(function*() {
      const disk = options.disk ?? nodeDisk
      const databasesDir = path.join(options.dataDir, databasesDirName)
      if (!(yield* disk.exists(databasesDir))) {
        yield* disk.mkdir(databasesDir)
        if (options.fsync !== "off") yield* disk.fsyncDir(options.dataDir)
      }
      const { file, state } = yield* AppliedStateFile.open(disk, path.join(options.dataDir, appliedStateFileName), options.fsync)
      const boot = options.bootSnapshot
      const machine = new SqliteMachine(options, file, boot?.meta.index ?? 0)
      machine.recorded = state
      yield* machine.recoverFiles(state)
      if (boot !== null && machine.needsBootSnapshot(state, boot.meta.index)) {
        const started = performance.now()
        // dqlite's way when it can: the files are the state, and the log holds every entry since
        // the oldest of them; the snapshot is read only when it cannot.
        const floor = machine.replayFloor(state)
        const log = boot.log
        if (floor !== null && log !== undefined && log.firstIndex <= floor + 1 && log.lastIndex >= boot.meta.index && machine.options.bugs?.neverReplayAtBoot !== true) {
          yield* machine.replayAtBoot(log, floor, boot.meta.index)
          machine.stats.bootReplays++
          yield* Effect.logDebug(`boot: databases older than snapshot ${boot.meta.index} brought up to it from the log (entries ${floor + 1}..${boot.meta.index}) in ${Math.round(performance.now() - started)} ms`)
        } else {
          // Why the snapshot is read (the slow path of a restart): said once, at info.
          const why = floor === null
            ? (state === null ? "no applied-state record" : "a database file the record does not know")
            : log === undefined
            ? "no log given"
            : log.firstIndex > floor + 1
            ? `the log starts at ${log.firstIndex}, after the oldest file's index ${floor}`
            : `the log ends at ${log.lastIndex}, before the snapshot`
          yield* machine.installFrom(yield* boot.load, boot.meta.index, { onlyOlder: true })
          machine.stats.restores++
          yield* Effect.logInfo(`boot: databases older than snapshot ${boot.meta.index} restored from it in ${Math.round(performance.now() - started)} ms (${why})`)
        }
      }
      return machine
    }).pipe(Effect.orDie)
  }

  // ---- StateMachine -------------------------------------------------------------------------

  readonly apply = (entry: Entry): Effect.Effect<SqliteApplyResult> =>
    Effect.suspend(() => {
      const result = this.applyNow(entry)
      if (result !== applyLater) return Effect.succeed(result)
      if (entry.kind === "command") this.appliedBytesUnsynced += entry.data.byteLength
      return this.applyLargeEntry(entry)
    })

  /** `apply` in plain code (the applier's steady state), but for a large entry: `applyLater`. */
  readonly applyNow = (entry: Entry): SqliteApplyResult | typeof applyLater => {
    if (entry.kind === "command" && entry.data.byteLength >= largePayloadBytes) return applyLater
    if (entry.kind === "command") this.appliedBytesUnsynced += entry.data.byteLength
    if (!tracing) return this.applyEntry(entry)
    const started = performance.now()
    const result = this.applyEntry(entry)
    traceDuration("machine.apply.ms", started)
    return result
  }

  /** `applyEntry` for an entry of `largePayloadBytes` or more: its pages are written a run at a
   * time on the thread pool (PageApplier.applyOffLoop), the event loop free meanwhile. While they
   * are, the file holds part of the entry: own-copy reads are refused as for a torn entry
   * (`tornEntryIndex`), each run's old images are saved first for a snapshot copying the file
   * (CopyOnWrite.ts, on the pool too), and the machine's lock is held so that no writer leads or leaves the database
   * in between. Uninterruptible: an entry counted as applied is written whole before anything
   * (a shutdown's sync) may record it. */
  private applyLargeEntry(entry: Entry): Effect.Effect<SqliteApplyResult> {
    return this.lock.withLock(Effect.uninterruptible(Effect.suspend(() => {
      const started = performance.now()
      const step = this.beginApply(entry)
      traceDuration("machine.apply.ms", started)
      if (step._tag !== "Write") return Effect.succeed(step)
      const { slot, pageSet } = step
      slot.tornEntryIndex = entry.index
      slot.changes++
      this.stats.offLoopApplies++
      return Effect.matchEffect(slot.applier!.applyOffLoop(pageSet), {
        onFailure: (error) => {
          // As `applyEntry`: the pages written so far stay torn until the retry.
          this.failedApplyIndex = entry.index
          return Effect.die(error)
        },
        onSuccess: () => Effect.sync(() => this.endApply(slot, entry.index))
      })
    })))
  }

  /** After each applier batch: fdatasync the files pages were written to, then record the index
   * they reflect. */
  readonly sync: Effect.Effect<void> = this.lock.withLock(Effect.suspend(() => this.syncFiles(this.options.syncEveryEntries ?? 1)))

  /** `sync` in plain code when no file is due for an fdatasync and nothing holds the lock (a
   * leader's batches; a follower's between two syncs): true when done, false when `sync` must
   * run. Synchronous, so nothing can take the lock meanwhile. */
  readonly syncNow = (): boolean => !this.lock.isHeld && this.syncFilesNow(this.options.syncEveryEntries ?? 1) === null

  /** `sync`'s work, once at least `everyEntries` entries were applied since the last one. */
  private syncFiles(everyEntries: number): Effect.Effect<void> {
    return Effect.suspend(() => this.syncFilesNow(everyEntries) ?? Effect.void)
  }

  /** `syncFiles` in plain code as far as it goes: null when no file is due, else the Effect that
   * fdatasyncs the files and records them. */
  private syncFilesNow(everyEntries: number): Effect.Effect<void> | null {
    // The applier's retry loop (a full disk) finishes an interrupted step-down discard here.
    for (const slot of this.slots.values()) this.finishDiscard(slot, this.appliedIndex)
    if (this.appliedIndex - this.syncedIndex < everyEntries && this.appliedBytesUnsynced < (this.options.syncEveryBytes ?? syncEveryBytesDefault)) return null
    const dirty = [...this.slots.values()].filter((slot) => slot.owner === null && slot.applier !== null)
    if (dirty.length === 0) {
      this.appliedBytesUnsynced = 0 // none of it in a file of ours to sync (a leader's own WAL)
      return null
    }
    const appliedIndex = this.appliedIndex
    // Counted as synced only once the files and the record are written: a sync that failed (a
    // full disk: the applier retries it) must run again, not be skipped as already done. The
    // files first, then the record: a record is never newer than the files it describes.
    return Effect.gen(this, function*() {
      trace("machine.sync.start", appliedIndex)
      for (const slot of dirty) {
        if (this.options.fsync !== "off" && this.options.bugs?.skipPageSync !== true) yield* slot.applier!.sync
        slot.applier!.close()
        slot.applier = null
        slot.fileIndex = appliedIndex
        slot.fileLastChangeIndex = slot.lastChangeIndex
      }
      for (const slot of this.slots.values()) {
        // A closed database without new pages reflects the applied index as well.
        if (slot.owner === null && slot.applier === null && slot.discarding === null && runNow(this.disk.exists(slot.path))) {
          slot.fileIndex = appliedIndex
          slot.fileLastChangeIndex = slot.lastChangeIndex
        }
      }
      yield* this.writeRecord()
      this.syncedIndex = appliedIndex
      this.appliedBytesUnsynced = 0
      this.stats.syncs++
      trace("machine.synced", appliedIndex)
    }).pipe(Effect.orDie)
  }

  /** The first entry a restart needs from the log to bring every file up without the snapshot
   * (see `replayFloor`; a file the record does not know yet cannot be replayed anyway). */
  readonly replayFrom = (): LogIndex => {
    const recorded = this.recorded
    if (recorded === null) return this.appliedIndex + 1
    let floor = recorded.appliedIndex
    for (const file of Object.values(recorded.databases)) floor = Math.min(floor, file.fileIndex)
    return floor + 1
  }

  /** The index the log must reach back to (plus one) for the files to be brought up to a later
   * index by replaying it: the oldest index a file is recorded to reflect, or the record's
   * applied index when that is older (a database created after it has no file yet). null when
   * there is no record, or a file the record does not know (it may hold anything). */
  private replayFloor(state: AppliedState | null): LogIndex | null {
    if (state === null) return null
    let floor = state.appliedIndex
    for (const slot of this.slots.values()) {
      if (slot.fileIndex === 0) return null
      floor = Math.min(floor, slot.fileIndex)
    }
    return floor
  }

  /** At boot, instead of the boot snapshot: applies the log's entries `floor + 1`..`to` (entries
   * at or below a file's index are skipped per database, as in any restart's replay), a bounded
   * read at a time, then syncs the files and records them. */
  private replayAtBoot(log: BootLog, floor: LogIndex, to: LogIndex): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      this.appliedIndex = floor
      while (this.appliedIndex < to) {
        const entries = yield* Effect.orDie(log.readFrom(this.appliedIndex + 1, to))
        assert(entries.length > 0 && entries[0]!.index === this.appliedIndex + 1, `boot replay read ${entries[0]?.index ?? "nothing"} after ${this.appliedIndex}`)
        for (const entry of entries) {
          if (entry.index > to) break
          assert(entry.index === this.appliedIndex + 1, `boot replay: entry ${entry.index} after ${this.appliedIndex}`)
          this.applyEntry(entry)
        }
      }
      assert(this.appliedIndex === to, `boot replay ended at ${this.appliedIndex}, not ${to}`)
      yield* this.syncFiles(0)
    })
  }

  /** Streams the databases as of the applied index into `sink` (databaseSnapshot.ts), the
   * applier waiting meanwhile (see prepareSnapshot for the rest). */
  readonly snapshot = (sink: SnapshotSink): Effect.Effect<void, unknown> =>
    Effect.flatMap(this.prepareSnapshot, (job) => Effect.ensuring(job.write(sink), job.release))

  /** In the applier: fixes what the snapshot holds — each closed database's main file (its
   * descriptor opened now, and a copy-on-write registered on it), each leading one's main file
   * plus its committed WAL prefix (its checkpoints held) — and returns the job that streams it.
   * The job runs while the applier goes on (`concurrent`), on a follower too (issue 17: its
   * applier waited for the whole copy, its mailbox filled and its Raft actor blocked): a leader's
   * own entries only move read views, and pages applied to a closed file save first the images
   * the copy has not reached (CopyOnWrite.ts). Any other change to a file being copied (a closed
   * one starting to lead or replaced by an install, a leading one closing, a failed save) fails
   * the job as skipped. */
  readonly prepareSnapshot: Effect.Effect<PreparedSnapshot> = Effect.sync(() => {
    this.stats.snapshots++
    const parts = this.snapshotParts()
    let released = false
    const release = Effect.suspend(() => {
      if (released) return Effect.void
      released = true
      for (const part of parts) {
        part.hold?.release()
        fs.closeSync(part.mainFd)
        if (part.walFd !== null) fs.closeSync(part.walFd)
      }
      return Effect.forEach(parts, (part) => this.endCopy(part), { discard: true })
    })
    let used = false
    return {
      concurrent: this.options.bugs?.followerSnapshotWaits === true ? parts.some((part) => part.hold !== null) : true,
      release,
      write: (sink: SnapshotSink) =>
        Effect.suspend(() => {
          assert(!used, "a prepared snapshot is written once")
          used = true
          return this.writeParts(parts, sink)
        }).pipe(Effect.ensuring(release))
    }
  })

  /** A closed part's copy is over (copied, failed or released): nothing is saved for it any
   * more, and its side file goes. */
  private endCopy(part: SnapshotPart): Effect.Effect<void> {
    return Effect.suspend(() => {
      const copy = part.copy
      if (copy === null) return Effect.void
      if (part.slot.copy === copy) part.slot.copy = null
      this.stats.snapshotPagesSaved += copy.savedPages
      copy.savedPages = 0
      return copy.close
    })
  }

  private snapshotParts(): Array<SnapshotPart> {
    // First, before any descriptor or hold is taken: a step-down's discard that a full disk
    // interrupted (throws while the disk is still full; the applier waits it out and asks again).
    for (const slot of this.slots.values()) this.finishDiscard(slot, this.appliedIndex)
    const parts: Array<SnapshotPart> = []
    try {
      this.collectParts(parts)
    } catch (error) {
      // Nothing may stay held or registered (the applier retries a prepare that failed).
      for (const part of parts) {
        part.hold?.release()
        fs.closeSync(part.mainFd)
        if (part.walFd !== null) fs.closeSync(part.walFd)
        if (part.copy !== null && part.slot.copy === part.copy) part.slot.copy = null
      }
      throw error
    }
    return parts
  }

  private collectParts(parts: Array<SnapshotPart>): void {
    for (const slot of [...this.slots.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const owner = slot.owner
      if (owner !== null) {
        const database = owner.database
        const hold = database.holdForSnapshot()
        const mainFd = fs.openSync(slot.path, "r")
        const walEnd = hold.walEnd
        let walFd: number | null = null
        let dbSizePages = Math.ceil(fs.fstatSync(mainFd).size / this.pageSize)
        if (walEnd !== undefined && walEnd.offsetBytes > walHeaderBytes) {
          walFd = fs.openSync(`${slot.path}-wal`, "r")
          // The last committed frame says the database's size; the job checks the whole prefix.
          const frameHeader = Buffer.alloc(8)
          fs.readSync(walFd, frameHeader, 0, 8, walEnd.offsetBytes - walFrameBytes(this.pageSize))
          dbSizePages = frameHeader.readUInt32BE(4)
        }
        parts.push({ slot, entry: { name: slot.name, lastChangeIndex: slot.lastChangeIndex, sizeBytes: dbSizePages * this.pageSize }, mainFd, walFd, hold, database, walEnd, leads: slot.leads, changes: slot.changes, copy: null })
        continue
      }
      let mainFd: number
      try {
        mainFd = fs.openSync(slot.path, "r")
      } catch {
        continue // no file yet: a database with no page written
      }
      const sizeBytes = fs.fstatSync(mainFd).size
      assert(slot.copy === null, `${slot.name}: one snapshot copy at a time`)
      // From now on the page applier saves what this copy still needs before overwriting it.
      const copy = new CopyOnWrite(this.disk, copyOnWritePathOf(slot.path), this.pageSize, Math.ceil(sizeBytes / this.pageSize), this.options.bugs?.skipCopyOnWrite === true)
      slot.copy = copy
      parts.push({ slot, entry: { name: slot.name, lastChangeIndex: slot.lastChangeIndex, sizeBytes }, mainFd, walFd: null, hold: null, database: null, walEnd: undefined, leads: slot.leads, changes: slot.changes, copy })
    }
  }

  private writeParts(parts: ReadonlyArray<SnapshotPart>, sink: SnapshotSink): Effect.Effect<void, unknown> {
    const self = this
    const pageSize = this.pageSize
    return Effect.gen(function*() {
      trace("snapshot.take.start", self.appliedIndex)
      yield* sink.write(encodeManifest(parts.map((part) => part.entry)))
      const chunkBytes = Math.max(pageSize, Math.floor(Math.min(sink.chunkBytesMax, self.chunkBytes) / pageSize) * pageSize)
      const buffer = Buffer.allocUnsafe(chunkBytes)
      const skipped = (part: SnapshotPart, why: string) => new SnapshotSkipped({ reason: `${part.slot.name}: ${why}` })
      for (const part of parts) {
        const { slot, entry } = part
        // What may have changed the file under the copy (pages applied to a closed file do not:
        // their old images are saved for it).
        const moved = () =>
          self.slots.get(slot.name) !== slot || slot.leads !== part.leads || (part.hold === null ? slot.owner !== null || part.copy!.broken !== null : !part.database!.holdValid(part.hold))
        let wal: CommittedWal | null = null
        if (part.walFd !== null) {
          const indexed = indexCommittedWal(part.walFd, pageSize, part.walEnd!)
          if (typeof indexed === "string") return yield* skipped(part, indexed)
          if (indexed.dbSizePages * pageSize !== entry.sizeBytes) return yield* skipped(part, "the WAL's last commit changed size")
          wal = indexed
        }
        for (let at = 0; at < entry.sizeBytes;) {
          const length = Math.min(chunkBytes, entry.sizeBytes - at)
          const out = buffer.subarray(0, length)
          const readStarted = performance.now()
          if (part.hold !== null) {
            const problem = readCommittedPages(part.mainFd, part.walFd, wal, pageSize, at / pageSize + 1, out)
            if (problem !== null) return yield* skipped(part, problem)
          } else {
            // Pages applied since the snapshot's index: their old images are laid over them.
            const problem = part.copy!.overlay(at / pageSize + 1, out, fs.readSync(part.mainFd, out, 0, length, at))
            if (problem !== null) return yield* skipped(part, problem)
          }
          // On the loop: a cold file (a database larger than the page cache) waits on the device.
          traceDuration("snapshot.take.read.ms", readStarted)
          if (moved()) return yield* skipped(part, "its file changed while it was copied")
          const writeStarted = performance.now()
          yield* sink.write(out)
          traceDuration("snapshot.take.chunk.ms", writeStarted)
          at += length
          yield* self.betweenChunks
        }
        if (moved()) return yield* skipped(part, "its file changed while it was copied")
        yield* self.endCopy(part)
      }
      trace("snapshot.take.end", self.appliedIndex)
    })
  }

  readonly restore = (meta: SnapshotMeta, source: SnapshotSource): Effect.Effect<void> =>
    this.lock.withLock(
      Effect.suspend(() => {
        for (const slot of this.slots.values()) {
          const owner = slot.owner
          if (owner === null) continue
          // The writer notices the database closed and stops. This node no longer leads the
          // writer's term (it is being sent a snapshot), so marking it unsettled costs nothing.
          owner.database.close("keepWal")
          slot.unsettledTerm = Math.max(slot.unsettledTerm, owner.term)
          slot.owner = null
        }
        const received = this.claimReceived(meta, source.sizeBytes)
        const install = received === null ? this.installFrom(source, meta.index, { onlyOlder: false }) : this.installReceived(received.images, received.fileOf)
        return Effect.zipRight(install, Effect.sync(() => void this.stats.restores++))
      })
    )

  /** The transport writes a snapshot from the leader through this (Node wiring): each image also
   * goes into a file of its own as it arrives, durable when the transfer finishes, so `restore`
   * renames it into place. A transfer resumed part way (its start is only in the store's file),
   * or one whose split fails, is installed by copying from the store's file instead. */
  readonly receiveAlongside = (incoming: IncomingSnapshot): Effect.Effect<IncomingSnapshot> =>
    Effect.gen(this, function*() {
      yield* this.stopReceiving
      const start = yield* incoming.offset
      if (start !== 0 || this.closed) return incoming
      const { index, term } = incoming.meta
      // Unique per transfer: a snapshot offered again (a Raft retry) never writes the files an
      // install of its earlier copy is renaming.
      const transfer = ++this.receivedTransfers
      const fileOf = (name: string) => `${this.databasePath(name)}.${index}-${term}-${transfer}${receivedSuffix}`
      const splitter = new ImageSplitter({ disk: this.disk, fileOf, meta: incoming.meta, sizeBytes: incoming.sizeBytes, ...(this.options.bugs?.receivedUnsynced === true ? { skipSync: true } : {}) })
      this.receiving = splitter
      const live = () => this.receiving === splitter
      const giveUp = Effect.suspend(() => (live() ? this.stopReceiving : Effect.void))
      const writeAt = (offset: number, chunk: Uint8Array): Effect.Effect<number, unknown> =>
        Effect.gen(this, function*() {
          const before = yield* incoming.offset
          // The bytes that extend the store's file (writeAt's rule), split at the same time.
          const extends_ = live() && before === splitter.offset && offset <= before && offset + chunk.byteLength > before
          if (!extends_) return yield* incoming.writeAt(offset, chunk)
          const fresh = chunk.subarray(before - offset, Math.min(chunk.byteLength, incoming.sizeBytes - offset))
          // Neither waits for its disk write (WriteBehind): one after the other costs no fork.
          const after = yield* incoming.writeAt(offset, chunk)
          const split = yield* Effect.exit(splitter.write(before, fresh))
          if (split._tag === "Failure" || after !== before + fresh.byteLength) {
            yield* Effect.logDebug(`snapshot ${index}: images not split as they arrive (installed by copy): ${split._tag === "Failure" ? String(Cause.squash(split.cause)) : `store at ${after}`}`)
            yield* giveUp
          }
          return after
        })
      const finish = Effect.gen(this, function*() {
        const source = yield* incoming.finish
        if (!live()) return source
        this.receiving = null
        const done = yield* Effect.exit(splitter.finish)
        if (done._tag === "Failure") {
          yield* splitter.abandon
          return source
        }
        if (this.received !== null) yield* this.dropReceived(this.received.images, this.received.fileOf)
        this.received = { images: done.value, fileOf }
        return source
      }).pipe(Effect.tapErrorCause(() => giveUp))
      const pause = Effect.zipRight(giveUp, incoming.pause)
      return { ...incoming, writeAt, finish, pause }
    })

  private readonly stopReceiving: Effect.Effect<void> = Effect.suspend(() => {
    const splitter = this.receiving
    this.receiving = null
    return splitter === null ? Effect.void : splitter.abandon
  })

  /** The images received alongside snapshot `meta`, taken for its install (null: copy it). */
  private claimReceived(meta: SnapshotMeta, sizeBytes: number): { readonly images: ReceivedImages; readonly fileOf: (name: string) => string } | null {
    const received = this.received
    if (received === null || received.images.meta.index !== meta.index || received.images.meta.term !== meta.term || received.images.sizeBytes !== sizeBytes) return null
    this.received = null
    return received
  }

  private dropReceived(images: ReceivedImages, fileOf: (name: string) => string): Effect.Effect<void> {
    return Effect.forEach(images.entries, (entry) => Effect.ignore(unlinkIfExists(this.disk, fileOf(entry.name))), { discard: true })
  }

  /** Installs by renaming the received images (durable: the splitter fdatasynced each) into
   * place; the switch is the one a copied install makes (switchTo). */
  private installReceived(images: ReceivedImages, fileOf: (name: string) => string): Effect.Effect<void> {
    const index = images.meta.index
    return Effect.gen(this, function*() {
      trace("snapshot.install.start", index)
      yield* Effect.orDie(this.switchTo(images.entries, index, { onlyOlder: false }, (entry) => fileOf(entry.name)))
      this.stats.installsByRename++
      trace("snapshot.install.end", index)
    })
  }

  private get chunkBytes(): number {
    return this.options.snapshotChunkBytes ?? 1024 * 1024
  }

  private get betweenChunks(): Effect.Effect<void> {
    return this.options.betweenChunks ?? yieldEventLoop
  }

  /** Replaces database files by the snapshot in `source` (all of them, or with `onlyOlder` only
   * those whose file is older than the snapshot), streaming each image into its temp file; then
   * renames, drops databases the snapshot does not have, and records the index last. A failure
   * to read the source is a defect (the store checked it whole at start or on receipt). */
  private installFrom(source: SnapshotSource, index: LogIndex, options: { readonly onlyOlder: boolean }): Effect.Effect<void> {
    const self = this
    const chunkBytes = this.chunkBytes
    return Effect.gen(function*() {
      trace("snapshot.install.start", index)
      const prefix = yield* Effect.orDie(readExactly(source, 0, manifestPrefixBytes, chunkBytes))
      const manifestBytes = manifestLength(prefix)
      const entries = decodeManifest(yield* Effect.orDie(readExactly(source, 0, manifestBytes, chunkBytes)))
      const sync = self.options.fsync !== "off"
      const wanted = (name: string) => !options.onlyOlder || (self.slots.get(name)?.fileIndex ?? 0) < index
      // 1. every image into its temp file, durable; nothing visible changes yet.
      let offset = manifestBytes
      for (const entry of entries) {
        const start = offset
        offset += entry.sizeBytes
        if (!wanted(entry.name)) continue
        const tmp = `${self.databasePath(entry.name)}.tmp`
        yield* Effect.orDie(withFile(self.disk, tmp, "write", (file) =>
          Effect.gen(function*() {
            yield* file.truncate(0)
            for (let at = 0; at < entry.sizeBytes;) {
              const data = yield* Effect.orDie(source.read(start + at, Math.min(chunkBytes, entry.sizeBytes - at)))
              assert(data.byteLength > 0, `snapshot ${index} ends inside ${entry.name}`)
              yield* writeOffLoop(file, at, data)
              at += data.byteLength
              yield* self.betweenChunks
            }
            if (sync && self.options.bugs?.installUnsynced !== true) yield* file.sync
          })))
      }
      assert(offset === source.sizeBytes, `snapshot ${index} holds ${source.sizeBytes} bytes, its manifest ${offset}`)
      // 2. the switch: renames, then the directory, then the record of what the files reflect.
      yield* Effect.orDie(self.switchTo(entries, index, options))
      trace("snapshot.install.end", index)
    })
  }

  private switchTo(
    entries: ReadonlyArray<DatabaseEntry>,
    index: LogIndex,
    options: { readonly onlyOlder: boolean },
    imageFile: (entry: DatabaseEntry, slot: Slot) => string = (_, slot) => `${slot.path}.tmp`
  ): Effect.Effect<void, DiskFailure | PageFileError> {
    return Effect.gen(this, function*() {
      const disk = this.disk
      const byName = new Map(entries.map((entry) => [entry.name, entry]))
      for (const slot of [...this.slots.values()]) {
        if (byName.has(slot.name) || (options.onlyOlder && slot.fileIndex >= index)) continue
        this.ownCopy.close(slot.name)
        slot.applier?.close()
        // An unfinished discard's WAL goes with its file (the snapshot replaces both).
        for (const file of [slot.path, `${slot.path}-wal`, `${slot.path}-shm`]) yield* unlinkIfExists(disk, file)
        this.slots.delete(slot.name)
      }
      for (const entry of entries) {
        const slot = this.slotFor(entry.name)
        if (options.onlyOlder && slot.fileIndex >= index) continue
        // The own-copy reader goes first: its connection must not outlive the file it maps.
        this.ownCopy.close(slot.name)
        slot.applier?.close()
        slot.applier = null
        slot.discarding = null
        slot.tornEntryIndex = 0
        slot.changes++
        // A copy of the file being replaced would save pages of the new one: it fails.
        slot.copy?.breakWith("a snapshot was installed over it")
        yield* disk.rename(imageFile(entry, slot), slot.path)
        yield* unlinkIfExists(disk, `${slot.path}-wal`)
        yield* unlinkIfExists(disk, `${slot.path}-shm`)
        slot.fileIndex = index
        slot.fileLastChangeIndex = entry.lastChangeIndex
        slot.lastChangeIndex = entry.lastChangeIndex
      }
      if (this.options.fsync !== "off") yield* disk.fsyncDir(this.databasesDir)
      this.appliedIndex = index
      yield* this.writeRecord()
    })
  }

  // ---- leading ------------------------------------------------------------------------------

  /** A fresh writer epoch: unique among this process's writers. */
  nextEpoch(): number {
    return ++this.epochs
  }

  /** Switches `name` to leading for a writer of `term`: closes the page applier (syncing it),
   * records the index the main file now reflects, and lets `makeOwner` open the connections. */
  lead<O extends LeaderSlotOwner>(name: string, term: Term, makeOwner: (databasePath: string, lastChangeIndex: LogIndex) => O): Effect.Effect<O, SqlNotLeader> {
    return this.lock.withLock(
      Effect.suspend(() => {
        if (this.closed) return Effect.fail(new SqlNotLeader({ leader: null, message: `node ${this.nodeId} is shutting down` }))
        return this.leadNow(name, term, makeOwner)
      })
    )
  }

  private leadNow<O extends LeaderSlotOwner>(name: string, term: Term, makeOwner: (databasePath: string, lastChangeIndex: LogIndex) => O): Effect.Effect<O> {
    return Effect.gen(this, function*() {
      assert(term === this.barrierTerm, `leading in term ${term} after its barrier (${this.barrierTerm})`)
      const slot = this.slotFor(name)
      assert(slot.owner === null, `${name} has no writer yet`)
      assert(slot.unsettledTerm < term, `${name}: a writer of term ${slot.unsettledTerm} left a proposal unsettled`)
      this.finishDiscard(slot, this.appliedIndex)
      if (slot.applier !== null) {
        // Synced before SQLite opens the file: from here on SQLite writes it by itself.
        if (this.options.fsync !== "off") yield* Effect.orDie(slot.applier.sync)
        slot.applier.close()
        slot.applier = null
      }
      if (runNow(this.disk.exists(slot.path))) {
        slot.fileIndex = this.appliedIndex
        slot.fileLastChangeIndex = slot.lastChangeIndex
        // Recorded (the file was just fdatasynced): a restart before this writer's first
        // checkpoint replays from here, and the log keeps what that needs (`replayFrom`).
        yield* this.persistQuietly()
      }
      // The own-copy reader goes first: its -shm mapping must not outlive the files below.
      this.ownCopy.close(name)
      for (const file of [`${slot.path}-wal`, `${slot.path}-shm`]) {
        runNow(unlinkIfExists(this.disk, file))
      }
      const owner = makeOwner(slot.path, slot.lastChangeIndex)
      slot.leads++
      slot.owner = owner
      slot.ownSeqApplied = 0
      return owner
    })
  }

  /** The writer leaves: "discard" cuts its uncommitted frames and leaves the main file holding
   * the committed state; "keepWal" closes as a crash would (shutdown). `unresolved`: a proposal
   * of the writer may still be in the log with its fate unknown. */
  release(name: string, owner: LeaderSlotOwner, mode: "discard" | "keepWal", unresolved: boolean): Effect.Effect<void> {
    return this.lock.withLock(
      Effect.suspend(() => {
        const slot = this.slots.get(name)
        if (slot === undefined || slot.owner !== owner) return Effect.void
        slot.owner = null
        if (unresolved) slot.unsettledTerm = Math.max(slot.unsettledTerm, owner.term)
        slot.discarding = owner.database
        slot.discardReflectsIndex = this.appliedIndex
        if (mode === "keepWal") {
          // Nothing written now, as a crash. But the changes since the file's last checkpoint
          // are only in the WAL: the discard stays due (`discarding`), finished before pages
          // are written into the file or a sync records it (seed 49: the applier wrote the
          // writer's last entry over the stale file during shutdown, then recorded the file
          // as current, and the restart deleted the WAL holding 15 committed entries).
          owner.database.close(mode)
          if (this.options.bugs?.forgetKeptWal === true) slot.discarding = null
          slot.changes++
          return Effect.void
        }
        if (this.options.bugs?.recordBeforeDiscard === true) {
          slot.fileIndex = this.appliedIndex
          slot.fileLastChangeIndex = slot.lastChangeIndex
          Effect.runSync(this.persistQuietly())
        }
        try {
          this.finishDiscard(slot, this.appliedIndex)
        } catch (error) {
          // Not the writer's problem (its caller is the role check): the applier finishes the
          // discard, retrying while the disk is full, before anything touches the file.
          if (!isDiskFull(error)) throw error
          if (this.options.bugs?.forgetFailedDiscard === true) slot.discarding = null
          return Effect.logWarning(`disk full: the step-down discard of ${name} did not finish; it is finished before its file is written or read`, error)
        }
        return this.persistQuietly()
      })
    )
  }

  /** The leader checkpointed `name`: its main file now holds every change applied so far. The
   * checkpoint ran without SQLite's fsyncs (LeaderDatabase.checkpoint), so the file is
   * fdatasynced here, on the thread pool, before the record says so: a record is never newer
   * than the file it describes. */
  checkpointed(name: string, owner: LeaderSlotOwner, at?: { readonly fileIndex: LogIndex; readonly lastChangeIndex: LogIndex }): Effect.Effect<void> {
    return this.lock.withLock(
      Effect.suspend(() => {
        const slot = this.slots.get(name)
        if (slot === undefined || slot.owner !== owner) return Effect.void
        // What the file held when the checkpoint ran (default: now; the writer may have gone on
        // since, its commits only in the WAL).
        const fileIndex = at?.fileIndex ?? this.appliedIndex
        const lastChangeIndex = at?.lastChangeIndex ?? slot.lastChangeIndex
        // A record of an older checkpoint that lost the race for the lock changes nothing.
        if (fileIndex < slot.fileIndex) return Effect.void
        const record = Effect.suspend(() => {
          slot.fileIndex = fileIndex
          slot.fileLastChangeIndex = lastChangeIndex
          return this.persistQuietly()
        })
        if (this.options.fsync === "off" || this.options.bugs?.skipCheckpointSync === true) return record
        // A failed fdatasync (a full disk cannot fail it; an I/O error may) records nothing: an
        // older record only means more replay.
        return Effect.flatMap(
          Effect.either(withFile(this.disk, slot.path, "read", (file) => file.sync)),
          (synced) => (synced._tag === "Right" ? record : Effect.logWarning(`the checkpoint of ${name} was not recorded: its fdatasync failed`, synced.left))
        )
      })
    )
  }

  /** The last change applied to `name` (0 when none). */
  lastChangeIndex(name: string): LogIndex {
    return this.slots.get(name)?.lastChangeIndex ?? 0
  }

  /** Runs `read` on the committed view of `name` when this node's writer leads it. */
  withCommittedView<A>(name: string, read: (database: LeaderDatabase) => A): A | undefined {
    const owner = this.slots.get(name)?.owner
    if (owner === null || owner === undefined || !owner.database.isOpen) return undefined
    return read(owner.database)
  }

  /** Runs `read` on this node's own copy of `name` as of the entries applied so far: the
   * writer's committed view while this node's writer still holds the database (a leader, or one
   * that has just lost leadership), else the main file through an own-copy reader. Call it
   * synchronously from the node's thread only (DESIGN in OwnCopyReaders.ts): no page may be
   * written while `read` runs. "replaying": a restart's replay has not yet passed every entry
   * whose pages the file may already hold; "closed": the node is shutting down; "unavailable":
   * the file does not hold a committed state while a full disk lasts (a step-down discard that
   * cannot be finished yet, or an entry whose page write failed part way, until its retry), or
   * while a large entry's pages are being written off the loop. */
  withOwnCopy<A>(
    name: string,
    read: (view: Connection) => A
  ): { readonly _tag: "Read"; readonly value: A } | { readonly _tag: "Replaying"; readonly appliedIndex: LogIndex; readonly neededIndex: LogIndex } | { readonly _tag: "Closed" } | { readonly _tag: "Unavailable"; readonly reason: string } {
    if (this.closed) return { _tag: "Closed" }
    const slot = this.slots.get(name)
    const owner = slot?.owner ?? null
    if (owner !== null && owner.database.isOpen) return { _tag: "Read", value: read(owner.database.committedView) }
    // A writer that still holds the database with its connections closed (a discard-and-reopen
    // that a full disk stopped, until the writer releases it): its committed frames are in the
    // WAL, which the reader would delete.
    if (owner !== null) return { _tag: "Unavailable", reason: `the writer of ${name} is closing` }
    if (this.appliedIndex < this.ownCopyFromIndex) return { _tag: "Replaying", appliedIndex: this.appliedIndex, neededIndex: this.ownCopyFromIndex }
    if (slot !== undefined && slot.discarding !== null && this.options.bugs?.readBeforeDiscard !== true) {
      // The committed frames of the writer that left are still only in its cut WAL: the file alone
      // is an older state, and the reader deletes a WAL it finds beside the file before opening
      // it, which would lose them for good (the simulator's malformed follower, seeds 15 and 24).
      // So the discard is finished first, as before the page applier writes the file.
      try {
        this.finishDiscard(slot, slot.discardReflectsIndex)
      } catch (error) {
        if (!isDiskFull(error)) throw error
        return { _tag: "Unavailable", reason: `the step-down discard of ${name} waits for disk space (its committed frames are in its WAL)` }
      }
    }
    if (slot !== undefined && slot.tornEntryIndex !== 0 && this.options.bugs?.readTornEntry !== true) {
      const why = this.failedApplyIndex === slot.tornEntryIndex ? "whose page write failed (a full disk); the applier retries it" : "whose pages are being written"
      return { _tag: "Unavailable", reason: `the file of ${name} holds part of entry ${slot.tornEntryIndex}, ${why}` }
    }
    return { _tag: "Read", value: this.ownCopy.read(name, () => this.databasePath(name), slot?.changes ?? 0, read) }
  }

  /** Own-copy reader activity (tests, metrics). */
  get ownCopyStats(): { readonly opens: number; readonly refreshes: number } {
    return { opens: this.ownCopy.opens, refreshes: this.ownCopy.refreshes }
  }

  /** Names of the databases this node knows. */
  databaseNames(): Array<string> {
    return [...this.slots.keys()].sort()
  }

  /** The main file of `name` (for tools and tests; read it only while the database is closed). */
  databasePath(name: string): string {
    return path.join(this.databasesDir, fileNameOf(name))
  }

  isLeading(name: string): boolean {
    return (this.slots.get(name)?.owner ?? null) !== null
  }

  /** Closes the page appliers and the record (connections belong to the writers, which release
   * their databases first). */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.ownCopy.closeAll()
    for (const slot of this.slots.values()) {
      slot.applier?.close()
      slot.applier = null
    }
    this.stateFile.close()
  }

  // ---- internals ----------------------------------------------------------------------------

  private applyEntry(entry: Entry): SqliteApplyResult {
    const step = this.beginApply(entry)
    if (step._tag !== "Write") return step
    const slot = step.slot
    try {
      slot.applier!.apply(step.pageSet)
    } catch (error) {
      this.failedApplyIndex = entry.index
      // Pages written so far stay in the file while the applier waits to retry the entry; an
      // own-copy read running meanwhile (in its caller's fiber) must not see them. Counted as a
      // change: the file was written (a snapshot copying it concurrently checks `changes`).
      slot.tornEntryIndex = entry.index
      slot.changes++
      throw error
    }
    slot.changes++
    return this.endApply(slot, entry.index)
  }

  /** The entry's pages are in the file (not yet synced). */
  private endApply(slot: Slot, index: LogIndex): SqliteApplyResult {
    slot.tornEntryIndex = 0
    slot.lastChangeIndex = index
    this.stats.pages++
    return { _tag: "Pages", database: slot.name }
  }

  /** Everything of an entry's apply but writing its pages: a result when there are none to write
   * (or a bug skips them), else the slot (its page applier open) and the pages. */
  private beginApply(entry: Entry): SqliteApplyResult | { readonly _tag: "Write"; readonly slot: Slot; readonly pageSet: PageSet } {
    assert(!this.closed, "machine is open")
    this.appliedIndex = entry.index
    if (entry.kind === "barrier") {
      this.barrierTerm = Math.max(this.barrierTerm, entry.term)
      return { _tag: "None" }
    }
    if (entry.kind === "config") return { _tag: "None" }
    const decoded = decodeWriteEntry(entry.data)
    const name = decoded.database
    const slot = this.slotFor(name)
    if (entry.index <= slot.fileIndex) {
      this.stats.replayed++
      return { _tag: "Pages", database: name }
    }
    const owner = slot.owner
    const ours = owner !== null && owner.database.isOpen && entry.term === owner.term && decoded.origin.node === owner.origin.node && decoded.origin.epoch === owner.origin.epoch
    if (ours && owner.database.pendingCommit?.seq === decoded.origin.seq) {
      assert(decoded.previousChangeIndex === slot.lastChangeIndex, `${name}: own entry ${entry.index} builds on ${decoded.previousChangeIndex}, last change ${slot.lastChangeIndex}`)
      // The pending read view becomes the committed one now, before anything (a snapshot, a
      // read) can see this index applied.
      owner.database.markCommitted(decoded.origin.seq)
      slot.ownSeqApplied = decoded.origin.seq
      slot.lastChangeIndex = entry.index
      if (this.options.bugs?.checkpointEarly === true) {
        slot.fileIndex = entry.index
        slot.fileLastChangeIndex = entry.index
        Effect.runSync(this.persistQuietly())
      }
      this.stats.own++
      return { _tag: "Own", database: name, seq: decoded.origin.seq }
    }
    if (decoded.previousChangeIndex !== slot.lastChangeIndex) {
      const reason = `computed on the state after ${decoded.previousChangeIndex}, the last change applied is ${slot.lastChangeIndex}`
      this.stats.skipped++
      this.onSkipped?.(name, entry.index, reason)
      if (ours && decoded.origin.seq <= slot.ownSeqApplied) return { _tag: "OwnCopy", database: name, seq: decoded.origin.seq }
      return { _tag: "Skipped", database: name, reason }
    }
    if (owner !== null) {
      // Another leader's entry: this node lost leadership and its writer has not noticed yet.
      // Stop it now, before writing pages: its uncommitted frames are cut and the main file
      // then holds exactly the state this entry was computed on (the chain check passed).
      // The writer notices the database closed and stops. The entry is of a later term, so this
      // node no longer leads the writer's: marking it unsettled costs nothing.
      slot.unsettledTerm = Math.max(slot.unsettledTerm, owner.term)
      slot.owner = null
      slot.changes++
      slot.discarding = owner.database
      slot.discardReflectsIndex = entry.index - 1
    }
    // Every change up to the one before this entry is in the file once the discard is done.
    this.finishDiscard(slot, entry.index - 1)
    slot.applier ??= PageApplier.open({ databasePath: slot.path, pageSize: this.pageSize, disk: this.disk, copyOnWrite: () => slot.copy })
    const pageSet = this.options.bugs?.dropFollowerPage === true && decoded.pageSet.pages.length > 1
      ? { ...decoded.pageSet, pages: decoded.pageSet.pages.slice(0, -1) }
      : decoded.pageSet
    if (this.options.bugs?.skipFailedEntry === true && this.failedApplyIndex === entry.index) {
      slot.lastChangeIndex = entry.index
      slot.tornEntryIndex = 0
      return { _tag: "Pages", database: name }
    }
    return { _tag: "Write", slot, pageSet }
  }

  /** Runs an interrupted step-down discard to its end (throws again while the disk is full):
   * the WAL cut after the last committed frame and checkpointed, so the main file holds every
   * change up to `reflectsIndex`. */
  private finishDiscard(slot: Slot, reflectsIndex: LogIndex): void {
    const database = slot.discarding
    if (database === null) return
    database.close("discard")
    slot.discarding = null
    slot.changes++
    slot.fileIndex = reflectsIndex
    slot.fileLastChangeIndex = slot.lastChangeIndex
  }

  private slotFor(name: string): Slot {
    let slot = this.slots.get(name)
    if (slot === undefined) {
      slot = {
        name,
        path: path.join(this.databasesDir, fileNameOf(name)),
        fileIndex: 0,
        fileLastChangeIndex: 0,
        lastChangeIndex: 0,
        applier: null,
        owner: null,
        unsettledTerm: 0,
        ownSeqApplied: 0,
        leads: 0,
        changes: 0,
        discarding: null,
        discardReflectsIndex: 0,
        tornEntryIndex: 0,
        copy: null
      }
      this.slots.set(name, slot)
    }
    return slot
  }

  /** At start: every WAL, wal-index and temp file goes; every database file gets a slot with
   * what the record says its file reflects (0 when the record does not know it). */
  private recoverFiles(state: AppliedState | null): Effect.Effect<void, DiskFailure> {
    return Effect.gen(this, function*() {
      const names = yield* this.disk.list(this.databasesDir)
      this.leftovers = leftoversOf(this.disk, this.databasesDir, names)
      for (const file of names) {
        // Received images too: what the restart must install comes from the snapshot store.
        // Renamed away only (a GiB WAL or image unlinked here held the boot ~0.45 s per GiB):
        // SQLite and the installs never see them again; `removeLeftovers` unlinks them later.
        if (file.endsWith("-wal") || file.endsWith("-shm") || file.endsWith(".tmp") || file.endsWith(receivedSuffix)) yield* this.leftovers.discard(file)
      }
      for (const file of yield* this.disk.list(this.databasesDir)) {
        const name = nameOfFile(file)
        if (name === null) continue
        const slot = this.slotFor(name)
        const known: DatabaseFileState | undefined = state?.databases[name]
        slot.fileIndex = known?.fileIndex ?? 0
        slot.fileLastChangeIndex = known?.lastChangeIndex ?? 0
        slot.lastChangeIndex = slot.fileLastChangeIndex
      }
    })
  }

  private needsBootSnapshot(state: AppliedState | null, snapshotIndex: LogIndex): boolean {
    if (state === null) return true
    for (const slot of this.slots.values()) if (slot.fileIndex < snapshotIndex) return true
    return false
  }

  /** Writes `applied-state` and remembers what it says: the log must keep what a restart
   * replays from the record, not from the newer indexes only memory knows (a writer's `lead`
   * moves a file's index without a record). */
  private writeRecord(): Effect.Effect<void, DiskFailure | PageFileError> {
    const state = this.appliedState()
    return Effect.map(this.stateFile.write(state), () => {
      this.recorded = state
    })
  }

  private appliedState(): AppliedState {
    const databases: Record<string, DatabaseFileState> = {}
    for (const slot of this.slots.values()) {
      if (slot.fileIndex > 0) databases[slot.name] = { fileIndex: slot.fileIndex, lastChangeIndex: slot.fileLastChangeIndex }
    }
    return { appliedIndex: this.appliedIndex, databases }
  }

  /** Best effort: an older record is always safe (it only means more replay after a crash), so
   * a failure here (a full disk while a leader steps down) must not fail the caller; the next
   * successful write (the applier's next sync) records the newer state. */
  private persistQuietly(): Effect.Effect<void> {
    if (this.closed) return Effect.void
    return Effect.ignore(Effect.suspend(() => this.writeRecord()))
  }
}

/** A database name as a file name: itself when plain, else `~` and its UTF-8 bytes in hex; every
 * main file ends in ".db", so no name collides with another's -wal, -shm or .tmp file. */
export function fileNameOf(name: string): string {
  if (/^[A-Za-z0-9_][A-Za-z0-9._-]{0,100}$/.test(name)) return `${name}.db`
  return `~${Buffer.from(name, "utf8").toString("hex")}.db`
}

function nameOfFile(file: string): string | null {
  if (!file.endsWith(".db")) return null
  const stem = file.slice(0, -3)
  if (stem.startsWith("~")) return Buffer.from(stem.slice(1), "hex").toString("utf8")
  return stem.length > 0 ? stem : null
}
