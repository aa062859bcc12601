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
// manifest, then the images): a closed database's main file is read in chunks while the applier
// (the only writer of closed files) waits, releasing the event loop between chunks; a leading one
// is serialized from its committed read view (still one buffer: see src/sqlite/README.md).
// Installing one streams every image into `<file>.tmp` and fsyncs it, then renames them all,
// fsyncs the directory and writes `applied-state` last. A crash before the renames leaves the old
// files (the temp files go at start); a crash after some of them leaves files the record says are
// older than the snapshot the log installed, so the next start installs that snapshot again
// (`needsBootSnapshot`): the node serves either the old state or the new one, never a mix.
import { Effect } from "effect"
import fs from "node:fs"
import path from "node:path"
import type { PreparedSnapshot, StateMachine } from "../actors/Applier.ts"
import { assert } from "../assert.ts"
import type { Entry, LogIndex, NodeId, SnapshotMeta, Term } from "../raft/types.ts"
import type { AppliedState, DatabaseFileState, FsyncMode } from "./appliedState.ts"
import { AppliedStateFile } from "./appliedState.ts"
import type { SnapshotSink, SnapshotSource } from "../actors/snapshotData.ts"
import { readExactly, SnapshotSkipped, yieldEventLoop } from "../actors/snapshotData.ts"
import type { DatabaseEntry } from "./databaseSnapshot.ts"
import { decodeManifest, encodeManifest, manifestLength, manifestPrefixBytes } from "./databaseSnapshot.ts"
import type { LeaderDatabase } from "./LeaderDatabase.ts"
import type { Connection } from "./connection.ts"
import { OwnCopyReaders } from "./OwnCopyReaders.ts"
import type { CommittedWal } from "./leadingImage.ts"
import { indexCommittedWal, readCommittedPages } from "./leadingImage.ts"
import { PageApplier, syncDirectory } from "./PageApplier.ts"
import type { WalPosition } from "./WalCapture.ts"
import { walFrameBytes, walHeaderBytes } from "./walFormat.ts"
import { SqlNotLeader } from "./Sql.ts"
import { decodeWriteEntry } from "./writeEntry.ts"

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
  /** Pages applied to closed databases are fdatasynced (and the index they reflect recorded)
   * once this many entries were applied since the last time, not after every applier batch.
   * Safe because nothing depends on the files being durable: after a crash the node replays
   * from the index recorded last, from its Raft log or, if the log was compacted past it, from
   * its newest snapshot (which holds the files' content as of its index). It bounds that replay.
   * Default 1 (every batch). */
  readonly syncEveryEntries?: number
  /** The snapshot the node boots from (the RaftActor's recovered snapshot), read only if a
   * database file is older than it. */
  readonly bootSnapshot: { readonly meta: SnapshotMeta; readonly load: Effect.Effect<SnapshotSource> } | null
  /** Runs between two chunks of a snapshot being taken or installed (default: release the event
   * loop once, so sockets and timers run; the simulator passes Effect.void to stay in step). */
  readonly betweenChunks?: Effect.Effect<void>
  /** Bytes per chunk read or written while taking or installing a snapshot (default 1 MiB). */
  readonly snapshotChunkBytes?: number
  /** Known bugs, switched on only by the simulator's mutation tests to prove its checkers
   * catch them. `dropFollowerPage`: pages of another node's entry are applied without the
   * highest-numbered one (a follower that silently loses part of a write). */
  readonly bugs?: { readonly dropFollowerPage?: boolean; readonly ownCopyStaleCache?: boolean }
  /** Prepared statements cached by each own-copy reader (default 64). */
  readonly ownCopyStatementCacheMax?: number
}

export interface SqliteMachineStats {
  own: number
  pages: number
  skipped: number
  replayed: number
  syncs: number
  restores: number
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
}

const databasesDirName = "databases"
const appliedStateFileName = "applied-state"

export class SqliteMachine implements StateMachine<SqliteApplyResult> {
  readonly nodeId: NodeId
  readonly pageSize: number
  readonly databasesDir: string
  /** The index of the last entry applied (or the snapshot restored). */
  appliedIndex: LogIndex
  /** The term of the newest barrier entry applied: a leader of that term has applied everything
   * committed before it won. */
  barrierTerm: Term = 0
  readonly stats: SqliteMachineStats = { own: 0, pages: 0, skipped: 0, replayed: 0, syncs: 0, restores: 0 }
  /** Called for each skipped entry (the simulator counts them: they should not happen). */
  onSkipped: ((database: string, index: LogIndex, reason: string) => void) | null = null
  private readonly slots = new Map<string, Slot>()
  private readonly lock = Effect.unsafeMakeSemaphore(1)
  private epochs = 0
  private closed = false
  /** The applied index at the last sync of the page files. */
  private syncedIndex: LogIndex = 0
  /** Connections reading closed databases' files (OwnCopyReaders.ts). */
  private readonly ownCopy: OwnCopyReaders
  /** Closed files are read only once this index is applied: after a restart, a file may hold
   * pages of entries past the index it is recorded at, which only the replay up to the log's end
   * makes whole again (set by the SQL surface to the log's last index at boot). */
  ownCopyFromIndex: LogIndex = 0

  private constructor(
    private readonly options: SqliteMachineOptions,
    private readonly stateFile: AppliedStateFile,
    appliedIndex: LogIndex
  ) {
    this.nodeId = options.nodeId
    this.pageSize = options.pageSize
    this.databasesDir = path.join(options.dataDir, databasesDirName)
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
      const databasesDir = path.join(options.dataDir, databasesDirName)
      fs.mkdirSync(databasesDir, { recursive: true })
      const { file, state } = AppliedStateFile.open(path.join(options.dataDir, appliedStateFileName), options.fsync)
      const boot = options.bootSnapshot
      const machine = new SqliteMachine(options, file, boot?.meta.index ?? 0)
      machine.recoverFiles(state)
      if (boot !== null && machine.needsBootSnapshot(state, boot.meta.index)) {
        yield* machine.installFrom(yield* boot.load, boot.meta.index, { onlyOlder: true })
        machine.stats.restores++
      }
      return machine
    })
  }

  // ---- StateMachine -------------------------------------------------------------------------

  readonly apply = (entry: Entry): Effect.Effect<SqliteApplyResult> => Effect.sync(() => this.applyEntry(entry))

  /** After each applier batch: fdatasync the files pages were written to, then record the index
   * they reflect. */
  readonly sync: Effect.Effect<void> = this.lock.withPermits(1)(
    Effect.suspend(() => {
      if (this.appliedIndex - this.syncedIndex < (this.options.syncEveryEntries ?? 1)) return Effect.void
      const dirty = [...this.slots.values()].filter((slot) => slot.owner === null && slot.applier !== null)
      if (dirty.length === 0) return Effect.void
      const appliedIndex = this.appliedIndex
      // Counted as synced only once the files and the record are written: a sync that failed (a
      // full disk: the applier retries it) must run again, not be skipped as already done.
      const record = () => {
        for (const slot of dirty) {
          slot.fileIndex = appliedIndex
          slot.fileLastChangeIndex = slot.lastChangeIndex
        }
        for (const slot of this.slots.values()) {
          // A closed database without new pages reflects the applied index as well.
          if (slot.owner === null && slot.applier === null && fs.existsSync(slot.path)) {
            slot.fileIndex = appliedIndex
            slot.fileLastChangeIndex = slot.lastChangeIndex
          }
        }
      }
      switch (this.options.fsync) {
        case "off":
        case "sync":
          return Effect.sync(() => {
            for (const slot of dirty) {
              if (this.options.fsync === "sync") slot.applier!.sync()
              slot.applier!.close()
              slot.applier = null
            }
            record()
            this.stateFile.writeSync(this.appliedState())
            this.syncedIndex = appliedIndex
            this.stats.syncs++
          })
        case "async":
          return Effect.promise(async () => {
            await Promise.all(dirty.map((slot) => slot.applier!.syncAsync()))
            for (const slot of dirty) {
              slot.applier!.close()
              slot.applier = null
            }
            record()
            await this.stateFile.writeAsync(this.appliedState())
            this.syncedIndex = appliedIndex
            this.stats.syncs++
          })
      }
    })
  )

  /** Streams the databases as of the applied index into `sink` (databaseSnapshot.ts), the
   * applier waiting meanwhile (see prepareSnapshot for the rest). */
  readonly snapshot = (sink: SnapshotSink): Effect.Effect<void, unknown> =>
    Effect.flatMap(this.prepareSnapshot, (job) => Effect.ensuring(job.write(sink), job.release))

  /** In the applier: fixes what the snapshot holds — each closed database's main file (its
   * descriptor opened now), each leading one's main file plus its committed WAL prefix (its
   * checkpoints held) — and returns the job that streams it. On a node that leads a database the
   * job runs while the applier goes on (`concurrent`): its own writers' entries only move read
   * views, and any change to a file being copied (a closed database applying pages or starting to
   * lead, a leading one closing) fails the job as skipped. On a follower every entry writes pages
   * into the files, so the applier waits for the job instead. */
  readonly prepareSnapshot: Effect.Effect<PreparedSnapshot> = Effect.sync(() => {
    const parts = this.snapshotParts()
    const concurrent = parts.some((part) => part.hold !== null)
    let released = false
    const release = () => {
      if (released) return
      released = true
      for (const part of parts) {
        part.hold?.release()
        fs.closeSync(part.mainFd)
        if (part.walFd !== null) fs.closeSync(part.walFd)
      }
    }
    let used = false
    return {
      concurrent,
      release: Effect.sync(release),
      write: (sink: SnapshotSink) =>
        Effect.suspend(() => {
          assert(!used, "a prepared snapshot is written once")
          used = true
          return this.writeParts(parts, sink, concurrent)
        }).pipe(Effect.ensuring(Effect.sync(release)))
    }
  })

  private snapshotParts(): Array<SnapshotPart> {
    const parts: Array<SnapshotPart> = []
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
        parts.push({ slot, entry: { name: slot.name, lastChangeIndex: slot.lastChangeIndex, sizeBytes: dbSizePages * this.pageSize }, mainFd, walFd, hold, database, walEnd, leads: slot.leads, changes: slot.changes })
        continue
      }
      let mainFd: number
      try {
        mainFd = fs.openSync(slot.path, "r")
      } catch {
        continue // no file yet: a database with no page written
      }
      const sizeBytes = fs.fstatSync(mainFd).size
      parts.push({ slot, entry: { name: slot.name, lastChangeIndex: slot.lastChangeIndex, sizeBytes }, mainFd, walFd: null, hold: null, database: null, walEnd: undefined, leads: slot.leads, changes: slot.changes })
    }
    return parts
  }

  private writeParts(parts: ReadonlyArray<SnapshotPart>, sink: SnapshotSink, concurrent: boolean): Effect.Effect<void, unknown> {
    const self = this
    const pageSize = this.pageSize
    return Effect.gen(function*() {
      yield* sink.write(encodeManifest(parts.map((part) => part.entry)))
      const chunkBytes = Math.max(pageSize, Math.floor(Math.min(sink.chunkBytesMax, self.chunkBytes) / pageSize) * pageSize)
      const buffer = Buffer.allocUnsafe(chunkBytes)
      const skipped = (part: SnapshotPart, why: string) => new SnapshotSkipped({ reason: `${part.slot.name}: ${why}` })
      for (const part of parts) {
        const { slot, entry } = part
        // What may have changed the file under the copy.
        const moved = () =>
          self.slots.get(slot.name) !== slot || slot.leads !== part.leads || (part.hold === null ? (concurrent && slot.changes !== part.changes) || slot.owner !== null : !part.database!.holdValid(part.hold))
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
          if (part.hold !== null) {
            const problem = readCommittedPages(part.mainFd, part.walFd, wal, pageSize, at / pageSize + 1, out)
            if (problem !== null) return yield* skipped(part, problem)
          } else if (fs.readSync(part.mainFd, out, 0, length, at) !== length) {
            return yield* skipped(part, "its file shrank while it was copied")
          }
          if (moved()) return yield* skipped(part, "its file changed while it was copied")
          yield* sink.write(out)
          at += length
          yield* self.betweenChunks
        }
        if (moved()) return yield* skipped(part, "its file changed while it was copied")
      }
    })
  }

  readonly restore = (meta: SnapshotMeta, source: SnapshotSource): Effect.Effect<void> =>
    this.lock.withPermits(1)(
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
        return Effect.zipRight(this.installFrom(source, meta.index, { onlyOlder: false }), Effect.sync(() => void this.stats.restores++))
      })
    )

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
        yield* Effect.acquireUseRelease(
          Effect.sync(() => fs.openSync(tmp, "w", 0o644)),
          (fd) =>
            Effect.gen(function*() {
              for (let at = 0; at < entry.sizeBytes;) {
                const data = yield* Effect.orDie(source.read(start + at, Math.min(chunkBytes, entry.sizeBytes - at)))
                assert(data.byteLength > 0, `snapshot ${index} ends inside ${entry.name}`)
                yield* Effect.sync(() => {
                  let done = 0
                  while (done < data.byteLength) done += fs.writeSync(fd, data, done, data.byteLength - done, at + done)
                })
                at += data.byteLength
                yield* self.betweenChunks
              }
              if (sync) yield* Effect.sync(() => fs.fsyncSync(fd))
            }),
          (fd) => Effect.sync(() => fs.closeSync(fd))
        )
      }
      assert(offset === source.sizeBytes, `snapshot ${index} holds ${source.sizeBytes} bytes, its manifest ${offset}`)
      // 2. the switch: renames, then the directory, then the record of what the files reflect.
      yield* Effect.sync(() => self.switchTo(entries, index, options))
    })
  }

  private switchTo(entries: ReadonlyArray<DatabaseEntry>, index: LogIndex, options: { readonly onlyOlder: boolean }): void {
    const byName = new Map(entries.map((entry) => [entry.name, entry]))
    for (const slot of [...this.slots.values()]) {
      if (byName.has(slot.name) || (options.onlyOlder && slot.fileIndex >= index)) continue
      this.ownCopy.close(slot.name)
      slot.applier?.close()
      fs.rmSync(slot.path, { force: true })
      this.slots.delete(slot.name)
    }
    for (const entry of entries) {
      const slot = this.slotFor(entry.name)
      if (options.onlyOlder && slot.fileIndex >= index) continue
      // The own-copy reader goes first: its connection must not outlive the file it maps.
      this.ownCopy.close(slot.name)
      slot.applier?.close()
      slot.applier = null
      slot.changes++
      fs.renameSync(`${slot.path}.tmp`, slot.path)
      fs.rmSync(`${slot.path}-wal`, { force: true })
      fs.rmSync(`${slot.path}-shm`, { force: true })
      slot.fileIndex = index
      slot.fileLastChangeIndex = entry.lastChangeIndex
      slot.lastChangeIndex = entry.lastChangeIndex
    }
    if (this.options.fsync !== "off") syncDirectory(this.databasesDir)
    this.appliedIndex = index
    this.stateFile.writeSync(this.appliedState())
  }

  // ---- leading ------------------------------------------------------------------------------

  /** A fresh writer epoch: unique among this process's writers. */
  nextEpoch(): number {
    return ++this.epochs
  }

  /** Switches `name` to leading for a writer of `term`: closes the page applier (syncing it),
   * records the index the main file now reflects, and lets `makeOwner` open the connections. */
  lead<O extends LeaderSlotOwner>(name: string, term: Term, makeOwner: (databasePath: string, lastChangeIndex: LogIndex) => O): Effect.Effect<O, SqlNotLeader> {
    return this.lock.withPermits(1)(
      Effect.suspend(() => {
        if (this.closed) return Effect.fail(new SqlNotLeader({ leader: null, message: `node ${this.nodeId} is shutting down` }))
        return Effect.succeed(this.leadNow(name, term, makeOwner))
      })
    )
  }

  private leadNow<O extends LeaderSlotOwner>(name: string, term: Term, makeOwner: (databasePath: string, lastChangeIndex: LogIndex) => O): O {
    {
      {
        assert(term === this.barrierTerm, `leading in term ${term} after its barrier (${this.barrierTerm})`)
        const slot = this.slotFor(name)
        assert(slot.owner === null, `${name} has no writer yet`)
        assert(slot.unsettledTerm < term, `${name}: a writer of term ${slot.unsettledTerm} left a proposal unsettled`)
        if (slot.applier !== null) {
          if (this.options.fsync !== "off") slot.applier.sync()
          slot.applier.close()
          slot.applier = null
        }
        if (fs.existsSync(slot.path)) {
          slot.fileIndex = this.appliedIndex
          slot.fileLastChangeIndex = slot.lastChangeIndex
        }
        // The own-copy reader goes first: its -shm mapping must not outlive the files below.
        this.ownCopy.close(name)
        fs.rmSync(`${slot.path}-wal`, { force: true })
        fs.rmSync(`${slot.path}-shm`, { force: true })
        const owner = makeOwner(slot.path, slot.lastChangeIndex)
        slot.leads++
        slot.owner = owner
        slot.ownSeqApplied = 0
        return owner
      }
    }
  }

  /** The writer leaves: "discard" cuts its uncommitted frames and leaves the main file holding
   * the committed state; "keepWal" closes as a crash would (shutdown). `unresolved`: a proposal
   * of the writer may still be in the log with its fate unknown. */
  release(name: string, owner: LeaderSlotOwner, mode: "discard" | "keepWal", unresolved: boolean): Effect.Effect<void> {
    return this.lock.withPermits(1)(
      Effect.sync(() => {
        const slot = this.slots.get(name)
        if (slot === undefined || slot.owner !== owner) return
        slot.owner = null
        if (unresolved) slot.unsettledTerm = Math.max(slot.unsettledTerm, owner.term)
        owner.database.close(mode)
        slot.changes++
        if (mode === "discard") {
          slot.fileIndex = this.appliedIndex
          slot.fileLastChangeIndex = slot.lastChangeIndex
          void this.persistQuietly()
        }
      })
    )
  }

  /** The leader checkpointed `name`: its main file now holds every change applied so far. */
  checkpointed(name: string, owner: LeaderSlotOwner): Effect.Effect<void> {
    return this.lock.withPermits(1)(
      Effect.sync(() => {
        const slot = this.slots.get(name)
        if (slot === undefined || slot.owner !== owner) return
        slot.fileIndex = this.appliedIndex
        slot.fileLastChangeIndex = slot.lastChangeIndex
        void this.persistQuietly()
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
   * whose pages the file may already hold; "closed": the node is shutting down. */
  withOwnCopy<A>(
    name: string,
    read: (view: Connection) => A
  ): { readonly _tag: "Read"; readonly value: A } | { readonly _tag: "Replaying"; readonly appliedIndex: LogIndex; readonly neededIndex: LogIndex } | { readonly _tag: "Closed" } {
    if (this.closed) return { _tag: "Closed" }
    const slot = this.slots.get(name)
    const owner = slot?.owner ?? null
    if (owner !== null && owner.database.isOpen) return { _tag: "Read", value: read(owner.database.committedView) }
    if (this.appliedIndex < this.ownCopyFromIndex) return { _tag: "Replaying", appliedIndex: this.appliedIndex, neededIndex: this.ownCopyFromIndex }
    return { _tag: "Read", value: this.ownCopy.read(name, this.databasePath(name), slot?.changes ?? 0, read) }
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
      owner.database.close("discard")
      slot.owner = null
      slot.changes++
    }
    slot.applier ??= PageApplier.open({ databasePath: slot.path, pageSize: this.pageSize })
    const pageSet = this.options.bugs?.dropFollowerPage === true && decoded.pageSet.pages.length > 1
      ? { ...decoded.pageSet, pages: decoded.pageSet.pages.slice(0, -1) }
      : decoded.pageSet
    slot.applier.apply(pageSet)
    slot.changes++
    slot.lastChangeIndex = entry.index
    this.stats.pages++
    return { _tag: "Pages", database: name }
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
        changes: 0
      }
      this.slots.set(name, slot)
    }
    return slot
  }

  /** At start: every WAL, wal-index and temp file goes; every database file gets a slot with
   * what the record says its file reflects (0 when the record does not know it). */
  private recoverFiles(state: AppliedState | null): void {
    for (const file of fs.readdirSync(this.databasesDir)) {
      if (file.endsWith("-wal") || file.endsWith("-shm") || file.endsWith(".tmp")) fs.rmSync(path.join(this.databasesDir, file), { force: true })
    }
    for (const file of fs.readdirSync(this.databasesDir)) {
      const name = nameOfFile(file)
      if (name === null) continue
      const slot = this.slotFor(name)
      const known: DatabaseFileState | undefined = state?.databases[name]
      slot.fileIndex = known?.fileIndex ?? 0
      slot.fileLastChangeIndex = known?.lastChangeIndex ?? 0
      slot.lastChangeIndex = slot.fileLastChangeIndex
    }
  }

  private needsBootSnapshot(state: AppliedState | null, snapshotIndex: LogIndex): boolean {
    if (state === null) return true
    for (const slot of this.slots.values()) if (slot.fileIndex < snapshotIndex) return true
    return false
  }

  private appliedState(): AppliedState {
    const databases: Record<string, DatabaseFileState> = {}
    for (const slot of this.slots.values()) {
      if (slot.fileIndex > 0) databases[slot.name] = { fileIndex: slot.fileIndex, lastChangeIndex: slot.fileLastChangeIndex }
    }
    return { appliedIndex: this.appliedIndex, databases }
  }

  /** Best effort: an older record is always safe (it only means more replay after a crash), so
   * a failure here (a full disk while a leader steps down) must not fail the caller. */
  private persistQuietly(): Promise<void> | void {
    if (this.closed) return
    if (this.options.fsync === "async") return this.stateFile.writeAsync(this.appliedState()).catch(() => undefined)
    try {
      this.stateFile.writeSync(this.appliedState())
    } catch {
      // The next successful write (the applier's next sync) records the newer state.
    }
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
