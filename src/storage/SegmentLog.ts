// The Raft log in segment files on a `Disk`: an append-only stream of checksummed records
// (format.ts) whose replay (logState.ts) is the log. Everything the Raft driver persists — entries,
// hard state, truncations, compactions, installed snapshots — is a record, so one write and one
// fdatasync make a whole group durable, and a crash leaves a prefix of the records (minus, at
// worst, a torn last write, which start-up cuts off).
//
// Directory layout:
//   tqlite-log.meta                 format version + cluster id (metadata.ts), written once
//   log-00000000000000000001.seg    segments, numbered from 1; the highest is the active one
//
// Segment rules that make recovery decidable:
// - every segment starts with a checkpoint record (the state when it began), so the segments
//   before it can be deleted once the base passes every entry they hold;
// - a segment is fdatasynced before the next one is created, so only the active (last) segment
//   can end in a torn write; damage anywhere else is `LogCorrupted`;
// - a new segment is made durable (fdatasync + directory fsync) before `persist` returns;
// - deleting old segments needs no directory fsync: a segment that comes back after a crash is
//   replayed and deleted again (segments always form a run that replays to the same state).
import * as path from "node:path"
import { Cause, Effect, Layer, Queue } from "effect"
import type { Scope } from "effect"
import { assert } from "../assert.ts"
import { Mutex } from "../runtime/Mutex.ts"
import { yieldToLoop } from "../runtime/yieldToLoop.ts"
import { trace } from "../runtime/trace.ts"
import type { RecoveredBounded } from "../raft/storage.ts"
import type { Entry, LogIndex, LogSlot } from "../raft/types.ts"
import { Disk, ensureDir, unlinkOffLoop, withFile, writeDurable, writeFileAtomic, writeOffLoop } from "./Disk.ts"
import type { DiskFile, DiskService } from "./Disk.ts"
import { ClusterIdMismatch, EntriesUnavailable, LogCorrupted, LogStoreBroken, UnknownFormatVersion } from "./errors.ts"
import type { DiskFailure, StorageError } from "./errors.ts"
import {
  checkpointDraft,
  compactDraft,
  decodeCheckpoint,
  decodeMembership,
  decodeRecordAt,
  recordHeaderBytes,
  decodeVote,
  encodeRecordHeader,
  encodeRecords,
  entryDraft,
  hardStateDraft,
  RecordKind,
  recordBytes,
  scanSegment,
  snapshotDraft,
  truncateDraft
} from "./format.ts"
import type { Checkpoint, RecordDraft, RecordView } from "./format.ts"
import { EntryPositions } from "./entryPositions.ts"
import type { EntryPosition } from "./entryPositions.ts"
import { LogState } from "./logState.ts"
import type { LogOperation, Problem } from "./logState.ts"
import { applyOrDie, assertPersistBounds, LogStore, operationsOf, recoveredOf } from "./LogStore.ts"
import type { LogStoreService, PersistBatch, Recovered } from "./LogStore.ts"
import { decodeMetadata, encodeMetadata, supportedFormatVersions } from "./metadata.ts"

export interface SegmentLogOptions {
  /** The log's directory (created if missing). */
  readonly dir: string
  /** This cluster's id: a directory initialised for another cluster is refused. */
  readonly clusterId: string
  /** A segment is closed when the next record would take it past this size; a record larger than
   * this gets a segment of its own. Default {@link segmentBytesMaxDefault}. */
  readonly segmentBytesMax?: number
  /** Deliberate bugs, for proving that tests catch them. Never set outside tests. */
  readonly bugs?: {
    /** `read` looks every entry up one position too far in the offset index. */
    readonly readOneRecordOff?: boolean
  }
}

export const segmentBytesMaxDefault = 64 * 1024 * 1024
export const metadataFileName = "tqlite-log.meta"
const segmentNamePattern = /^log-(\d{20})\.seg$/
/** Groups up to this size are encoded into one reused buffer. */
const scratchBytesMax = 4 * 1024 * 1024
/** Records whose payload is at least this large are written without copying the payload. */
/** Groups of records from this size are written on the thread pool (see `flush`). */
const offLoopWriteBytesMin = 256 * 1024
/** A synchronous append that took this long was throttled by the kernel (it lands in the page
 * cache in microseconds otherwise)… */
export const slowSyncAppendMs = 20
/** …and the appends of the next this many ms go to the thread pool too, whatever their size:
 * under writeback pressure (nodes writing snapshots after a bulk load) a small synchronous
 * append held a node's event loop 0.7–2.6 s with ~no CPU (issue 17, bench/stallCauses.ts), and
 * the pressure lasts seconds. Quiet again for this long, small appends are synchronous again
 * (the measured hot path). */
export const offLoopAfterSlowAppendMs = 5_000
const largeRecordPayloadBytes = 1024 * 1024

export function segmentFileName(seq: number): string {
  return `log-${String(seq).padStart(20, "0")}.seg`
}

export function parseSegmentFileName(name: string): number | null {
  const match = segmentNamePattern.exec(name)
  return match === null ? null : Number(match[1])
}

export const SegmentLog = {
  /** Opens (or initialises) the log in `options.dir` and recovers it; the active segment is
   * closed when the scope closes. Fails with `LogCorrupted`, `UnknownFormatVersion`,
   * `ClusterIdMismatch` or a disk error instead of starting on a log it cannot trust. */
  open: (options: SegmentLogOptions): Effect.Effect<LogStoreService, StorageError, Disk | Scope.Scope> =>
    Effect.gen(function* () {
      const disk = yield* Disk
      const segmentBytesMax = options.segmentBytesMax ?? segmentBytesMaxDefault
      assert(segmentBytesMax >= 4096 && segmentBytesMax < 2 ** 32, `segmentBytesMax ${segmentBytesMax} outside [4096, 2^32)`)
      assert(options.clusterId.length > 0, "clusterId must not be empty")
      const recovery = yield* openDirectory(disk, options.dir, options.clusterId, segmentBytesMax)
      const writer = yield* Effect.acquireRelease(
        Effect.map(disk.open(recovery.active.path, "write"), (file) =>
          new Writer(disk, options.dir, options.clusterId, segmentBytesMax, recovery, file, options.bugs?.readOneRecordOff === true ? 1 : 0)),
        (writer) => Effect.ignore(writer.close())
      )
      // Segments a compaction retired are unlinked in the background, one at a time on the
      // thread pool (the writer wakes it; a sliding queue of one coalesces the wake-ups).
      const wake = yield* Queue.sliding<void>(1)
      writer.onLeftovers = () => void Queue.unsafeOffer(wake, undefined)
      yield* Queue.take(wake).pipe(
        Effect.zipRight(writer.removeLeftovers()),
        Effect.catchAll((error) => Effect.logWarning(`log: could not remove an obsolete segment (tried again after the next compaction, or at the next start): ${String(error)}`)),
        Effect.forever,
        Effect.forkScoped
      )
      // A lock of a few Effect operations, not a semaphore's ~25: persist runs once per entry.
      const mutex = new Mutex()
      return {
        load: mutex.withLock(writer.load()),
        loadBounded: (dataBytesMax) => mutex.withLock(writer.loadBounded(dataBytesMax)),
        persist: (batches) => mutex.withLock(writer.persist(batches)),
        recover: mutex.withLock(writer.recover()),
        // Under the same lock as persist: the positions and the files agree, and no segment is
        // removed under the read (a read-back is bounded by the core's entryLoadBytesMax).
        read: (lo, hi) => mutex.withLock(writer.read(lo, hi)),
        // Not under the lock: the files it removes are no longer part of the log.
        removeLeftovers: writer.removeLeftovers()
      }
    }),

  layer: (options: SegmentLogOptions): Layer.Layer<LogStore, StorageError, Disk> =>
    Layer.scoped(LogStore, SegmentLog.open(options))
}

// --- the writer ----------------------------------------------------------------------------

interface SegmentInfo {
  readonly seq: number
  readonly path: string
  /** Replaying from this segment needs the entries up to here from earlier segments: its
   * checkpoint's last index, lowered by every later truncation. */
  neededUpTo: LogIndex
}

/** Where the files stood when a `persist` began: what the last successful one left durable. */
interface RevertPoint {
  readonly seq: number
  readonly path: string
  readonly bytes: number
}

/** One persist call's progress through its operations (SegmentLog's writeAll). */
interface Staging {
  readonly operations: ReadonlyArray<LogOperation>
  at: number
  pending: Array<RecordDraft>
  pendingBytes: number
  rolled: boolean
  written: boolean
  /** The operation at `at` needs a new segment first. */
  stopped: boolean
}

class Writer {
  private segments: Array<SegmentInfo>
  private state: LogState
  /** Where each live entry's record is (the offset index for `read`). */
  private positions: EntryPositions
  private activeBytes: number
  private activeRecords: number
  private broken: LogStoreBroken | null = null
  /** Set with `broken` when the failed persist can be undone in place (a full disk before any
   * old segment was removed). */
  private revertTo: RevertPoint | null = null
  private scratch = new Uint8Array(0)
  /** Small appends go to the thread pool until then (performance.now(); see slowSyncAppendMs). */
  private smallAppendsOffLoopUntilMs = 0
  /** Segments the open found no longer part of the log (before the base, or left by an
   * interrupted removal), oldest first: `removeLeftovers` unlinks them on the thread pool once
   * the node serves, instead of the open holding the boot for them (~0.45 s per GiB). */
  private leftovers: Array<string>
  private removingLeftovers = false

  constructor(
    private readonly disk: DiskService,
    private readonly dir: string,
    private readonly clusterId: string,
    private readonly segmentBytesMax: number,
    recovery: Recovery,
    private file: DiskFile,
    /** 0, or 1 for the readOneRecordOff mutation. */
    private readonly readShift: number
  ) {
    this.segments = recovery.segments
    this.state = recovery.state.termsOnly()
    this.positions = recovery.positions
    this.activeBytes = recovery.active.bytes
    this.activeRecords = recovery.active.records
    this.leftovers = [...recovery.leftovers]
  }

  /** Unlinks the segments the open left (see `leftovers`), one at a time on the thread pool, in
   * any order: each is before the first segment the log replays from, so a crash half-way
   * leaves a gap the next open reads as leftovers again. */
  removeLeftovers(): Effect.Effect<void, DiskFailure> {
    const self = this
    return Effect.suspend(() => {
      // One removal at a time (the node's call after boot and the background remover): the one
      // running goes on until the list is empty, new arrivals included.
      if (self.removingLeftovers) return Effect.void
      self.removingLeftovers = true
      return Effect.gen(function*() {
        for (let file = self.leftovers[0]; file !== undefined; file = self.leftovers[0]) {
          // A full-disk `recover` reopens the directory meanwhile and may list one again.
          // Taken off the list only once gone: a failure leaves it for the next call. No
          // directory fsync: a segment that comes back after a crash is left out again.
          if (yield* self.disk.exists(file)) yield* unlinkOffLoop(self.disk, file)
          if (self.leftovers[0] === file) self.leftovers.shift()
        }
      }).pipe(Effect.ensuring(Effect.sync(() => void (self.removingLeftovers = false))))
    })
  }

  private start(recovery: Recovery, file: DiskFile): void {
    this.segments = recovery.segments
    this.state = recovery.state.termsOnly()
    this.positions = recovery.positions
    this.activeBytes = recovery.active.bytes
    this.activeRecords = recovery.active.records
    this.file = file
    for (const leftover of recovery.leftovers) if (!this.leftovers.includes(leftover)) this.leftovers.push(leftover)
  }

  /**
   * Undoes a persist that failed for a full disk, then reloads. Why this is safe:
   * - every byte before the revert point was fdatasynced by the persist that wrote it (that call
   *   succeeded), and every segment before it was closed durably; nothing before it is touched;
   * - everything after it — records of the failed call, segments it created — was never reported
   *   durable: the Raft core still holds those entries as unstable and nothing that depends on
   *   them (an acknowledgement, a vote) has left. Cutting them and writing them again is what a
   *   crash followed by a restart would do, without the restart;
   * - after a failed write or fsync the page cache may not match the disk for the pages that
   *   call dirtied ("fsyncgate"): those pages are exactly the ones cut off (truncate, then
   *   fdatasync), so no byte of unknown state stays in the log;
   * - the state is then rebuilt by the same replay a restart runs (openDirectory), not from
   *   memory, so the writer continues from what the disk holds;
   * - old segments are never removed inside a persist (a background remover unlinks those a
   *   compaction retired), so every failed persist left only its own writes to undo.
   */
  recover(): Effect.Effect<void, StorageError> {
    const self = this
    return Effect.gen(function* () {
      if (self.broken === null) return
      const point = self.revertTo
      if (point === null) return yield* self.broken
      yield* Effect.ignore(self.file.close)
      let removed = false
      for (const segment of self.segments) {
        if (segment.seq <= point.seq || !(yield* self.disk.exists(segment.path))) continue
        yield* self.disk.unlink(segment.path)
        removed = true
      }
      if (removed) yield* self.disk.fsyncDir(self.dir)
      yield* rewriteTail(self.disk, point.path, point.bytes, new Uint8Array(0))
      const recovery = yield* openDirectory(self.disk, self.dir, self.clusterId, self.segmentBytesMax)
      assert(recovery.active.path === point.path, `recovered log continues in ${recovery.active.path}, not ${point.path}`)
      const file = yield* self.disk.open(recovery.active.path, "write")
      self.start(recovery, file)
      self.broken = null
      self.revertTo = null
      // Debug: it runs before every retry; the episode's start and end are logged by the writer.
      yield* Effect.logDebug(`log: undid a persist that failed for a full disk (${point.path} back to byte ${point.bytes})`)
    })
  }

  close(): Effect.Effect<void, DiskFailure> {
    return this.file.close
  }

  load(): Effect.Effect<Recovered, StorageError> {
    return Effect.suspend(() => {
      if (this.broken !== null) return Effect.fail(this.broken)
      // Re-read what is on disk: exactly what a restart would see.
      const seqs = this.segments.map((s) => s.seq)
      return Effect.map(replaySegments(this.disk, this.dir, seqs, true), (replay) => recoveredOf(replay.state))
    })
  }

  /** The durable state with the data of only the newest `dataBytesMax` bytes of commands (at
   * least the last one): older commands come as EvictedEntry, read from the offset index without
   * touching their records. Configs and barriers always come whole. */
  loadBounded(dataBytesMax: number): Effect.Effect<RecoveredBounded, StorageError> {
    const self = this
    return Effect.gen(function* () {
      if (self.broken !== null) return yield* self.broken
      const state = self.state
      const first = state.base.index + 1
      const last = state.lastIndex
      let tailFrom = last + 1
      let bytes = 0
      while (tailFrom > first) {
        const position = self.positions.at(tailFrom - 1)
        assert(position !== undefined, `no position for live entry ${tailFrom - 1}`)
        const data = position.kind === RecordKind.command ? position.bytes - recordHeaderBytes : 0
        if (tailFrom <= last && bytes + data > dataBytesMax) break
        bytes += data
        tailFrom--
      }
      const entries: Array<LogSlot> = []
      for (let index = first; index < tailFrom; index++) {
        const position = self.positions.at(index)!
        const term = state.termAt(index)!
        if (position.kind === RecordKind.command) entries.push({ kind: "evicted", index, term, sizeBytes: position.bytes })
        else if (position.kind === RecordKind.barrier) entries.push({ kind: "barrier", index, term })
        else entries.push(...(yield* self.read(index, index)))
      }
      entries.push(...(yield* self.read(tailFrom, last)))
      return { hardState: state.hardState, base: state.base, entries, snapshot: state.snapshot }
    })
  }

  persist(batches: ReadonlyArray<PersistBatch>): Effect.Effect<void, StorageError> {
    // Uninterruptible until the staged records are being written: staging changes `state`
    // before anything is on disk, so an interruption in between must be seen (below).
    return Effect.uninterruptibleMask((restore) => Effect.suspend((): Effect.Effect<void, StorageError> => {
      if (this.broken !== null) return Effect.fail(this.broken)
      assertPersistBounds(batches)
      const active = this.segments[this.segments.length - 1]!
      const point: RevertPoint = { seq: active.seq, path: active.path, bytes: this.activeBytes }
      // Whatever went wrong half-way (a disk error, a broken contract, an interruption), the
      // files and `state` may disagree now: refuse everything until a restart recovers — or,
      // for a full disk, until `recover` has put the files back to `point`.
      const markBroken = (cause: Cause.Cause<DiskFailure>): void => {
        this.broken = new LogStoreBroken({ cause })
        const fullDisk = cause._tag === "Fail" && cause.error._tag === "DiskFull"
        this.revertTo = fullDisk ? point : null
      }
      let run: Staging
      try {
        run = this.startStaging(batches)
      } catch (defect) {
        markBroken(Cause.die(defect))
        throw defect
      }
      const fast = this.durableInOne(run)
      // The usual group: one uninterruptible write (a failure is Fail or Die, never Interrupt).
      if (fast !== null) {
        return Effect.matchCauseEffect(fast, {
          onFailure: (cause) => Effect.zipRight(Effect.sync(() => markBroken(cause)), Effect.failCause(cause)),
          onSuccess: () => Effect.sync(() => this.retireObsoleteSegments())
        })
      }
      return Effect.onExit(restore(this.stageThenWrite(run)), (exit) =>
        Effect.sync(() => {
          if (exit._tag === "Failure") markBroken(exit.cause)
          else this.retireObsoleteSegments()
        }))
    }))
  }

  /** The records of `batches`, staged in plain code (persist runs once per entry on every
   * node: the usual group costs one durable write and a handful of Effect operations). */
  private startStaging(batches: ReadonlyArray<PersistBatch>): Staging {
    const operations: Array<LogOperation> = []
    for (const batch of batches) for (const operation of operationsOf(batch)) operations.push(operation)
    const run: Staging = { operations, at: 0, pending: [], pendingBytes: 0, rolled: false, written: false, stopped: false }
    run.stopped = this.stage(run)
    return run
  }

  /** The usual group — every record staged in the active segment, none large, nothing to
   * remove — as one durable write (`writeDurable`: its write and fdatasync in one pool call);
   * null otherwise. Every earlier write was synced by the persist that made it, as
   * writeDurable needs. */
  private durableInOne(run: Staging): Effect.Effect<void, DiskFailure> | null {
    if (run.stopped || !run.written || run.rolled) return null
    for (const draft of run.pending) if (draft.payload.byteLength >= largeRecordPayloadBytes) return null
    return this.flushDurable(run.pending)
  }

  /** Writes what is staged: when staging stopped at a full segment, flushes, rolls and goes on
   * staging; at the end, flush and fdatasync (and the directory's after a roll). */
  private stageThenWrite(run: Staging): Effect.Effect<void, DiskFailure> {
    if (run.stopped) {
      return Effect.zipRight(
        Effect.zipRight(this.flush(run.pending), this.roll()),
        Effect.suspend(() => {
          run.rolled = true
          run.pending = [this.checkpointDraft()]
          run.pendingBytes = recordBytes(run.pending[0]!)
          run.stopped = this.stage(run)
          return this.stageThenWrite(run)
        })
      )
    }
    const { pending, written, rolled } = run
    let write: Effect.Effect<void, DiskFailure> = written ? Effect.zipRight(this.flush(pending), this.file.sync) : this.flush(pending)
    if (rolled) write = Effect.zipRight(write, this.disk.fsyncDir(this.dir))
    return write
  }

  /** Applies and drafts `run.operations` from `run.at`, in plain code. True when it stopped
   * because the next record needs a new segment (the operation at `run.at` is not applied yet). */
  private stage(run: Staging): boolean {
    const operations = run.operations
    for (; run.at < operations.length; run.at++) {
      const operation = operations[run.at]!
      if (this.state.isNoop(operation)) {
        applyOrDie(this.state, operation)
        trackPosition(this.positions, operation, null)
        continue
      }
      const draft = draftOf(operation)
      const size = recordBytes(draft)
      const activeHasEntries = this.activeRecords + run.pending.length > 1
      if (activeHasEntries && this.activeBytes + run.pendingBytes + size > this.segmentBytesMax) return true
      applyOrDie(this.state, operation)
      if (operation._tag === "truncate") this.lowerNeeded(operation.from - 1)
      const active = this.segments[this.segments.length - 1]!
      trackPosition(this.positions, operation, { seq: active.seq, offset: this.activeBytes + run.pendingBytes, bytes: size, kind: draft.kind })
      run.pending.push(draft)
      run.pendingBytes += size
      run.written = true
    }
    return false
  }

  /** Entries lo..hi, read back from their records (one read per segment they span). Every record
   * is checked — checksum, kind, index and the term the log state knows — before it is returned:
   * a wrong offset in the index is `LogCorrupted`, never a wrong entry. */
  read(lo: LogIndex, hi: LogIndex): Effect.Effect<ReadonlyArray<Entry>, StorageError> {
    const self = this
    return Effect.gen(function* () {
      if (self.broken !== null) return yield* self.broken
      if (lo > hi) return []
      if (lo <= self.state.base.index || hi > self.state.lastIndex) {
        return yield* new EntriesUnavailable({ lo, hi, base: self.state.base.index, last: self.state.lastIndex })
      }
      const out: Array<Entry> = []
      let index = lo
      while (index <= hi) {
        const first = self.positions.at(index + self.readShift)
        if (first === undefined) return yield* new EntriesUnavailable({ lo, hi, base: self.state.base.index, last: self.state.lastIndex })
        // The run of entries in the same segment, contiguous on disk as they were appended.
        let end = index
        let endByte = first.offset + first.bytes
        while (end < hi) {
          const next = self.positions.at(end + 1 + self.readShift)
          if (next === undefined || next.seq !== first.seq || next.offset !== endByte) break
          end++
          endByte = next.offset + next.bytes
        }
        const segment = self.segments.find((s) => s.seq === first.seq)
        assert(segment !== undefined, `entry ${index} is in segment ${first.seq}, which the log no longer has`)
        const bytes = yield* self.readRange(segment.path, first.offset, endByte - first.offset)
        let at = 0
        for (let i = index; i <= end; i++) {
          const entry = entryOfRecord(bytes, at, i, self.state.termAt(i))
          if (typeof entry === "string") return yield* new LogCorrupted({ file: segment.path, offset: first.offset + at, reason: entry })
          out.push(entry)
          at += self.positions.at(i + self.readShift)!.bytes
        }
        index = end + 1
      }
      return out
    })
  }

  /** The active segment is read through the writer's own handle; a closed one is opened. */
  private readRange(file: string, position: number, length: number): Effect.Effect<Uint8Array, DiskFailure> {
    if (file === this.file.path) return this.file.read(position, length)
    return Effect.acquireUseRelease(this.disk.open(file, "read"), (handle) => handle.read(position, length), (handle) => Effect.ignore(handle.close))
  }

  private flush(drafts: ReadonlyArray<RecordDraft>): Effect.Effect<void, DiskFailure> {
    if (drafts.length === 0) return Effect.void
    // A large record is written as header + its payload in place: copying it behind the header
    // would cost one more whole-entry copy on the event loop (issue 17: 20 MiB entries).
    const largeAt = drafts.findIndex((draft) => draft.payload.byteLength >= largeRecordPayloadBytes)
    if (largeAt >= 0) {
      const large = drafts[largeAt]!
      const before = this.flush(drafts.slice(0, largeAt))
      return Effect.zipRight(before, Effect.suspend(() => {
        const header = encodeRecordHeader(large, this.activeBytes)
        const position = this.activeBytes
        this.activeBytes += header.byteLength + large.payload.byteLength
        this.activeRecords += 1
        return Effect.zipRight(
          Effect.zipRight(writeOffLoop(this.file, position, header), this.writeInSlices(position + header.byteLength, large.payload)),
          this.flush(drafts.slice(largeAt + 1))
        )
      }))
    }
    const { position, bytes } = this.encodeAtEnd(drafts)
    // A large group on the thread pool: a write that dirties the page cache blocks while the
    // kernel throttles a process that wrote much (a follower's pages, a snapshot) — 1 s of a
    // follower's event loop on one log append in issue 17's 1 GiB scale run. A small one stays
    // synchronous, as the hot path was measured (a pool hop costs more than the write), and so
    // that it never queues behind the pool's fdatasyncs, which take seconds under that same
    // pressure (a 2 GiB run lost its leader repeatedly with every append on the pool; not
    // proven to be the cause: the machine's load was 12) — except for a while after one was
    // throttled itself (slowSyncAppendMs): then the loop waiting in write(2) is the worse of
    // the two. The scratch buffer is reused only after this completes.
    if (bytes.byteLength >= offLoopWriteBytesMin) return writeOffLoop(this.file, position, bytes)
    const nowMs = performance.now()
    if (nowMs < this.smallAppendsOffLoopUntilMs) return writeOffLoop(this.file, position, bytes)
    return Effect.tap(this.file.write(position, bytes), () => {
      const ms = performance.now() - nowMs
      if (ms < slowSyncAppendMs) return
      trace("log.write.slow", Math.round(ms))
      this.smallAppendsOffLoopUntilMs = performance.now() + offLoopAfterSlowAppendMs
    })
  }

  /** `drafts` encoded (into the scratch buffer) as the active segment's next records, and the
   * segment's end moved past them: the caller writes `bytes` at `position`. */
  private encodeAtEnd(drafts: ReadonlyArray<RecordDraft>): { readonly position: number; readonly bytes: Uint8Array } {
    const bytes = encodeRecords(drafts, this.activeBytes, this.scratchFor(drafts))
    const position = this.activeBytes
    this.activeBytes += bytes.byteLength
    this.activeRecords += drafts.length
    return { position, bytes }
  }

  /** `flush` and `sync` of a group of small records, in one call off the event loop
   * (`writeDurable`): no write(2) on the loop and one pool hop instead of two when small appends
   * are off the loop (`slowSyncAppendMs`). */
  private flushDurable(drafts: ReadonlyArray<RecordDraft>): Effect.Effect<void, DiskFailure> {
    const { position, bytes } = this.encodeAtEnd(drafts)
    // The scratch buffer is reused only once this completes (persist calls do not overlap).
    return writeDurable(this.file, position, bytes)
  }

  /** Writes `data` at `position` a slice at a time, the event loop free between two slices: a
   * write lands in the page cache synchronously, and 20 MiB of it took 130–270 ms on the dev VM
   * (fresh cache pages), long enough to cost a leader its followers' acknowledgements. */
  private writeInSlices(position: number, data: Uint8Array): Effect.Effect<void, DiskFailure> {
    const file = this.file
    const step = (offset: number): Effect.Effect<void, DiskFailure> => {
      if (offset >= data.byteLength) return Effect.void
      const end = Math.min(data.byteLength, offset + largeRecordPayloadBytes)
      const written = writeOffLoop(file, position + offset, data.subarray(offset, end))
      return end >= data.byteLength ? written : Effect.zipRight(written, Effect.zipRight(yieldToLoop, Effect.suspend(() => step(end))))
    }
    return step(0)
  }

  /** A reusable write buffer for small groups (the disk is done with it when `write` returns);
   * large groups get a buffer of their own so a rare big one does not pin memory. */
  private scratchFor(drafts: ReadonlyArray<RecordDraft>): Uint8Array | undefined {
    let total = 0
    for (const draft of drafts) total += recordBytes(draft)
    if (total > scratchBytesMax) return undefined
    if (this.scratch.byteLength < total) {
      let size = Math.max(this.scratch.byteLength, 4096)
      while (size < total) size *= 2
      this.scratch = new Uint8Array(size)
    }
    return this.scratch
  }

  /** Closes the active segment (durably) and opens the next one. */
  private roll(): Effect.Effect<void, DiskFailure> {
    const self = this
    return Effect.gen(function* () {
      yield* self.file.sync
      yield* self.file.close
      const last = self.segments[self.segments.length - 1]!
      const seq = last.seq + 1
      const segmentPath = path.join(self.dir, segmentFileName(seq))
      assert(!(yield* self.disk.exists(segmentPath)), `segment ${segmentPath} exists before it is created`)
      self.file = yield* self.disk.open(segmentPath, "write")
      self.segments.push({ seq, path: segmentPath, neededUpTo: self.state.lastIndex })
      self.activeBytes = 0
      self.activeRecords = 0
    })
  }

  private checkpointDraft(): RecordDraft {
    const active = this.segments[this.segments.length - 1]!
    return checkpointDraft({
      segment: active.seq,
      hardState: this.state.hardState,
      base: this.state.base,
      snapshot: this.state.snapshot,
      lastIndex: this.state.lastIndex,
      lastTerm: this.state.lastTerm
    })
  }

  private lowerNeeded(upTo: LogIndex): void {
    for (const segment of this.segments) segment.neededUpTo = Math.min(segment.neededUpTo, upTo)
  }

  /** After a persist made a compaction durable: the oldest segments the base no longer needs
   * leave the log and go to `leftovers`, which the log's remover unlinks on the thread pool in the
   * background, oldest first (`onLeftovers` wakes it). A snapshot after a load of large entries
   * compacts a whole GiB of log at once: unlinked in the persist it held the log (and, on the
   * loop, the event loop) ~0.45 s per GiB; one per persist instead left a GiB of them on disk
   * while no write came, for the next start to read whole (7.5 s of a follower's 10 s restart
   * at 2 GiB, issue 17). A crash before they are gone leaves segments the next open skips. */
  private retireObsoleteSegments(): void {
    if (!this.hasObsoleteSegment()) return
    while (this.hasObsoleteSegment()) this.leftovers.push(this.segments.shift()!.path)
    this.onLeftovers()
  }

  /** Wakes the background remover (set by `SegmentLog.open`). */
  onLeftovers: () => void = () => {}

  private hasObsoleteSegment(): boolean {
    return this.segments.length > 1 && this.segments[1]!.neededUpTo <= this.state.base.index
  }
}

/** Mirrors one applied operation in the offset index (`at` is where its record went, or null
 * when it wrote none). */
function trackPosition(positions: EntryPositions, operation: LogOperation, at: EntryPosition | null): void {
  switch (operation._tag) {
    case "append":
      assert(at !== null, "an appended entry has a record")
      positions.append(operation.entry.index, at)
      return
    case "truncate":
      positions.truncate(operation.from)
      return
    case "compact":
      positions.compact(operation.base.index)
      return
    case "snapshot":
      positions.reset(operation.meta.index + 1)
      return
    case "hardState":
      return
  }
}

/** The entry in the record at `at` of `bytes`, or why it is not entry `index` of term `term`. */
function entryOfRecord(bytes: Uint8Array, at: number, index: LogIndex, term: number | undefined): Entry | string {
  const decoded = decodeRecordAt(bytes, at)
  if (!decoded.ok) return `reading back entry ${index}: ${decoded.reason}`
  const record = decoded.record
  if (record.index !== index || record.term !== term) {
    return `reading back entry ${index} (term ${term}): the record there holds index ${record.index}, term ${record.term}`
  }
  switch (record.kind) {
    case RecordKind.command:
      return { kind: "command", index, term, data: record.payload }
    case RecordKind.config: {
      const config = decodeMembership(record.payload)
      return config === null ? `reading back entry ${index}: config entry holds no readable membership` : { kind: "config", index, term, config }
    }
    case RecordKind.barrier:
      return { kind: "barrier", index, term }
    default:
      return `reading back entry ${index}: the record there is not an entry (kind ${record.kind})`
  }
}

function draftOf(operation: LogOperation): RecordDraft {
  switch (operation._tag) {
    case "hardState":
      return hardStateDraft(operation.hardState)
    case "snapshot":
      return snapshotDraft(operation.meta)
    case "truncate":
      return truncateDraft(operation.from)
    case "append":
      return entryDraft(operation.entry)
    case "compact":
      return compactDraft(operation.base)
  }
}

// --- opening and recovery --------------------------------------------------------------------

interface Recovery {
  readonly state: LogState
  readonly positions: EntryPositions
  readonly segments: Array<SegmentInfo>
  readonly active: { readonly path: string; readonly bytes: number; readonly records: number }
  /** Segment files no longer part of the log, to unlink (`Writer.removeLeftovers`). */
  readonly leftovers: ReadonlyArray<string>
}

function openDirectory(disk: DiskService, dir: string, clusterId: string, segmentBytesMax: number): Effect.Effect<Recovery, StorageError> {
  return Effect.gen(function* () {
    yield* ensureDir(disk, dir)
    let names = yield* disk.list(dir)
    for (const name of names) {
      if (name.endsWith(".tmp")) yield* disk.unlink(path.join(dir, name))
    }
    if (!names.includes(metadataFileName)) {
      yield* initialise(disk, dir, clusterId, segmentSeqs(names))
      names = yield* disk.list(dir)
    } else {
      yield* checkMetadata(disk, path.join(dir, metadataFileName), clusterId)
    }
    const seqs = segmentSeqs(names)
    if (seqs.length === 0) {
      return yield* new LogCorrupted({ file: dir, offset: 0, reason: "the directory has metadata but no log segment" })
    }
    // Terms and positions only: the entries stay on disk (load and loadBounded read them). The
    // segments wholly before the base are not read at all (their checkpoints say so).
    const skipped = yield* segmentsBeforeBase(disk, dir, seqs)
    const replay = yield* replaySegments(disk, dir, seqs.slice(skipped), false, segmentBytesMax)
    return yield* repair(disk, dir, { ...replay, leftovers: [...seqs.slice(0, skipped).map((seq) => path.join(dir, segmentFileName(seq))), ...replay.leftovers] })
  })
}

/** How many of the oldest segments (of `seqs`, ascending) a replay need not read: those wholly
 * before the base the newest segment records (its checkpoint, or a compaction or snapshot record
 * in it). Each segment opens with a checkpoint of the whole log state at that point, so a replay
 * may start at any segment whose checkpoint's last index is at or below that base (every entry
 * before it is compacted, and the base only grows). Reads the newest segment (the replay reads it
 * anyway) and one checkpoint per older segment, newest first, never their entries: a node killed
 * after a compaction left its old segments behind, and its restart read them all (1.8 GB, 7.5 s
 * of a 10 s restart at 2 GiB: issue 17) only to delete them. Anything not read as a valid
 * checkpoint stops the search: the replay then reads from there, as before, and reports it. */
function segmentsBeforeBase(disk: DiskService, dir: string, seqs: ReadonlyArray<number>): Effect.Effect<number, DiskFailure> {
  return Effect.gen(function*() {
    // Only within the last consecutive run (what replaySegments reads).
    let firstOfRun = seqs.length - 1
    while (firstOfRun > 0 && seqs[firstOfRun - 1] === seqs[firstOfRun]! - 1) firstOfRun--
    if (seqs.length - firstOfRun < 2) return 0
    const newest = scanSegment(yield* disk.readFile(path.join(dir, segmentFileName(seqs[seqs.length - 1]!))), true)
    const opening = newest.records[0]
    const checkpoint = opening?.kind === RecordKind.checkpoint ? decodeCheckpoint(opening) : null
    if (checkpoint === null) return 0
    let baseIndex = checkpoint.base.index
    for (const record of newest.records) {
      if (record.kind === RecordKind.compact || record.kind === RecordKind.snapshot) baseIndex = Math.max(baseIndex, record.index)
    }
    if (checkpoint.lastIndex <= baseIndex) return seqs.length - 1
    for (let i = seqs.length - 2; i > firstOfRun; i--) {
      const checkpoint = yield* readCheckpoint(disk, path.join(dir, segmentFileName(seqs[i]!)))
      if (checkpoint === null || checkpoint.segment !== seqs[i]) return 0
      if (checkpoint.lastIndex <= baseIndex) return i
    }
    return 0
  })
}

/** The checkpoint that opens a segment file (its first record), or null when that is not a
 * valid checkpoint. Reads the record only. */
function readCheckpoint(disk: DiskService, file: string): Effect.Effect<Checkpoint | null, DiskFailure> {
  return withFile(disk, file, "read", (handle) =>
    Effect.gen(function*() {
      const header = yield* handle.read(0, recordHeaderBytes)
      if (header.byteLength < recordHeaderBytes) return null
      const payloadBytes = new DataView(header.buffer, header.byteOffset, header.byteLength).getUint32(8, true)
      if (payloadBytes > checkpointBytesMax) return null
      const decoded = decodeRecordAt(yield* handle.read(0, recordHeaderBytes + payloadBytes), 0)
      return decoded.ok && decoded.record.kind === RecordKind.checkpoint ? decodeCheckpoint(decoded.record) : null
    }))
}

/** A checkpoint record's payload is a few hundred bytes (the membership is its largest part): a
 * length above this is not one. */
const checkpointBytesMax = 16 * 1024 * 1024

function segmentSeqs(names: ReadonlyArray<string>): Array<number> {
  const seqs: Array<number> = []
  for (const name of names) {
    const seq = parseSegmentFileName(name)
    if (seq !== null) seqs.push(seq)
  }
  return seqs.sort((a, b) => a - b)
}

function checkMetadata(disk: DiskService, file: string, clusterId: string): Effect.Effect<void, StorageError> {
  return Effect.gen(function* () {
    const decoded = decodeMetadata(yield* disk.readFile(file))
    switch (decoded._tag) {
      case "unknownVersion":
        return yield* new UnknownFormatVersion({ file, version: decoded.version, supported: supportedFormatVersions })
      case "corrupt":
        return yield* new LogCorrupted({ file, offset: decoded.offset, reason: decoded.reason })
      case "ok":
        if (decoded.metadata.clusterId !== clusterId) {
          return yield* new ClusterIdMismatch({ file, expected: clusterId, found: decoded.metadata.clusterId })
        }
    }
  })
}

/** A directory without metadata is new — or the remains of an initialisation that crashed
 * (only segment 1, holding at most its checkpoint). Anything else is refused. The metadata file
 * is written last, so its presence means the directory was fully initialised. */
function initialise(disk: DiskService, dir: string, clusterId: string, seqs: ReadonlyArray<number>): Effect.Effect<void, StorageError> {
  return Effect.gen(function* () {
    const metadataPath = path.join(dir, metadataFileName)
    if (seqs.length > 0) {
      const first = path.join(dir, segmentFileName(seqs[0]!))
      const leftover = seqs.length === 1 && seqs[0] === 1 &&
        scanSegment(yield* disk.readFile(first), true).records.length <= 1
      if (!leftover) {
        return yield* new LogCorrupted({
          file: metadataPath,
          offset: 0,
          reason: "metadata file is missing but the directory holds log segments"
        })
      }
    }
    const segmentPath = path.join(dir, segmentFileName(1))
    const state = new LogState({ keepEntries: false })
    const bytes = encodeRecords([
      checkpointDraft({
        segment: 1,
        hardState: state.hardState,
        base: state.base,
        snapshot: null,
        lastIndex: 0,
        lastTerm: 0
      })
    ], 0)
    yield* Effect.acquireUseRelease(
      disk.open(segmentPath, "write"),
      (file) =>
        Effect.gen(function* () {
          yield* file.truncate(0)
          yield* file.write(0, bytes)
          yield* file.sync
        }),
      (file) => Effect.ignore(file.close)
    )
    yield* disk.fsyncDir(dir)
    yield* writeFileAtomic(disk, metadataPath, encodeMetadata(clusterId))
  })
}

interface Replay {
  readonly state: LogState
  readonly positions: EntryPositions
  readonly segments: Array<SegmentInfo>
  /** Segments before a gap in the numbering: left over from an interrupted prefix removal. */
  readonly leftovers: ReadonlyArray<string>
  readonly last: {
    readonly path: string
    readonly records: number
    readonly validBytes: number
    readonly fileBytes: number
    readonly damage: { readonly offset: number; readonly reason: string } | null
  }
}

/**
 * Replays the segments into a log state. Only the last run of consecutively numbered segments is
 * read: anything before a gap is what an interrupted prefix removal left behind, which is only
 * acceptable if that run alone accounts for every live entry (checked: no unread entry remains).
 */
function replaySegments(disk: DiskService, dir: string, seqs: ReadonlyArray<number>, keepEntries: boolean, segmentBytesMax = segmentBytesMaxDefault): Effect.Effect<Replay, StorageError> {
  return Effect.gen(function* () {
    let firstOfRun = seqs.length - 1
    while (firstOfRun > 0 && seqs[firstOfRun - 1] === seqs[firstOfRun]! - 1) firstOfRun--
    const run = seqs.slice(firstOfRun)
    const state = new LogState({ keepEntries })
    const positions = new EntryPositions(1)
    const segments: Array<SegmentInfo> = []
    let last: Replay["last"] | null = null
    // Without entries kept, nothing refers to a segment's bytes once it is scanned: one buffer
    // of a full segment's size serves them all (allocated untouched: only what the largest
    // segment fills is ever backed), so each segment is read into memory already touched (fresh
    // memory per segment cost 2 of the 3 s of opening a 300 MB log on the dev VM). A larger
    // segment (one record above the size) is read on its own. One segment alone gains nothing
    // from it, and a 64 MiB buffer per open made the crash tests, which reopen small logs
    // thousands of times, spend half their time in GC (V8 counts it as external memory).
    const reused = keepEntries || run.length < 2 ? undefined : new Uint8Array(Buffer.allocUnsafeSlow(segmentBytesMax).buffer, 0, segmentBytesMax)
    for (let i = 0; i < run.length; i++) {
      const seq = run[i]!
      const file = path.join(dir, segmentFileName(seq))
      const isLast = i === run.length - 1
      const buffer: Uint8Array = yield* disk.readFile(file, reused)
      const scan = scanSegment(buffer, isLast)
      if (scan.damage !== null && !scan.damage.tornTail) {
        return yield* new LogCorrupted({
          file,
          offset: scan.damage.offset,
          reason: isLast
            ? `${scan.damage.reason}, and a valid record of a later write follows it`
            : `${scan.damage.reason} in a closed segment`
        })
      }
      const first = scan.records[0]
      if (first === undefined) {
        // Nothing valid: only the active segment, torn while its first write was in flight.
        if (!isLast) return yield* new LogCorrupted({ file, offset: 0, reason: "closed segment holds no record" })
        if (i === 0 && seq !== 1) {
          return yield* new LogCorrupted({ file, offset: 0, reason: "segment has no checkpoint and the segments before it are missing" })
        }
        segments.push({ seq, path: file, neededUpTo: state.lastIndex })
      } else {
        const checkpoint = first.kind === RecordKind.checkpoint ? decodeCheckpoint(first) : null
        if (checkpoint === null) return yield* new LogCorrupted({ file, offset: 0, reason: "segment does not start with a readable checkpoint" })
        if (checkpoint.segment !== seq) {
          return yield* new LogCorrupted({ file, offset: 0, reason: `checkpoint belongs to segment ${checkpoint.segment}` })
        }
        if (i === 0) {
          state.startAt(checkpoint)
          positions.reset(checkpoint.lastIndex + 1)
        } else {
          const disagreement = checkpointDisagreement(state, checkpoint)
          if (disagreement !== null) {
            return yield* new LogCorrupted({ file, offset: 0, reason: `checkpoint disagrees with the segments before: ${disagreement}` })
          }
        }
        segments.push({ seq, path: file, neededUpTo: checkpoint.lastIndex })
        for (let r = 1; r < scan.records.length; r++) {
          const record = scan.records[r]!
          const problem = applyRecord(state, record, keepEntries)
          if (problem !== null) return yield* new LogCorrupted({ file, offset: record.offset, reason: problem })
          trackRecordPosition(positions, record, seq)
          if (record.kind === RecordKind.truncate) {
            for (const segment of segments) segment.neededUpTo = Math.min(segment.neededUpTo, record.index - 1)
          }
        }
      }
      if (isLast) {
        last = {
          path: file,
          records: scan.records.length,
          validBytes: scan.validBytes,
          fileBytes: buffer.byteLength,
          damage: scan.damage
        }
      }
    }
    const unread = state.firstUnknown()
    if (unread !== null) {
      return yield* new LogCorrupted({
        file: path.join(dir, segmentFileName(run[0]! - 1)),
        offset: 0,
        reason: `segment is missing: entries from ${unread} were in it`
      })
    }
    assert(last !== null, "a replay reads at least one segment")
    const leftovers = seqs.slice(0, firstOfRun).map((seq) => path.join(dir, segmentFileName(seq)))
    return { state, positions, segments, leftovers, last }
  })
}

/** Mirrors one replayed record in the offset index (as trackPosition does for a written one). */
function trackRecordPosition(positions: EntryPositions, record: RecordView, seq: number): void {
  switch (record.kind) {
    case RecordKind.command:
    case RecordKind.config:
    case RecordKind.barrier:
      positions.append(record.index, { seq, offset: record.offset, bytes: recordBytes(record), kind: record.kind })
      return
    case RecordKind.truncate:
      positions.truncate(record.index)
      return
    case RecordKind.compact:
      positions.compact(record.index)
      return
    case RecordKind.snapshot:
      positions.reset(record.index + 1)
      return
    default:
      return
  }
}

function checkpointDisagreement(state: LogState, checkpoint: Checkpoint): string | null {
  const hs = state.hardState
  const cp = checkpoint.hardState
  if (hs.term !== cp.term || hs.vote !== cp.vote || hs.commit !== cp.commit) return "hard state"
  if (state.base.index !== checkpoint.base.index || state.base.term !== checkpoint.base.term) return "base"
  if ((state.snapshot?.index ?? null) !== (checkpoint.snapshot?.index ?? null) ||
    (state.snapshot?.term ?? null) !== (checkpoint.snapshot?.term ?? null)) return "snapshot"
  // The last term is unknown (NaN) while the replay started at a later segment and that entry
  // lives in a segment already removed.
  if (state.lastIndex !== checkpoint.lastIndex) return "last index"
  if (!Number.isNaN(state.lastTerm) && state.lastTerm !== checkpoint.lastTerm) return "last term"
  return null
}

/** `copy`: the entry is kept, so its payload must not pin the segment's buffer. */
function applyRecord(state: LogState, record: RecordView, copy: boolean): Problem {
  switch (record.kind) {
    case RecordKind.command:
      return state.append({ kind: "command", index: record.index, term: record.term, data: copy ? record.payload.slice() : record.payload })
    case RecordKind.config: {
      const config = decodeMembership(record.payload)
      if (config === null) return "config entry holds no readable membership"
      return state.append({ kind: "config", index: record.index, term: record.term, config })
    }
    case RecordKind.barrier:
      return state.append({ kind: "barrier", index: record.index, term: record.term } satisfies Entry)
    case RecordKind.hardState: {
      const vote = decodeVote(record.payload)
      if (vote === undefined) return "hard state record has a malformed vote"
      return state.setHardState({ term: record.term, vote, commit: record.index })
    }
    case RecordKind.truncate:
      return state.truncate(record.index)
    case RecordKind.compact:
      return state.compact({ index: record.index, term: record.term })
    case RecordKind.snapshot: {
      const config = decodeMembership(record.payload)
      if (config === null) return "snapshot record holds no readable membership"
      return state.installSnapshot({ index: record.index, term: record.term, config })
    }
    case RecordKind.checkpoint:
      return "a checkpoint in the middle of a segment"
  }
}

/** Cuts a torn tail off the active segment (or rewrites its checkpoint when nothing of it
 * survived), deletes leftover and obsolete segments, and returns what the writer starts from. */
function repair(disk: DiskService, dir: string, replay: Replay): Effect.Effect<Recovery, StorageError> {
  return Effect.gen(function* () {
    const { last, state } = replay
    const segments = replay.segments
    let bytes = last.validBytes
    let records = last.records
    if (records === 0) {
      const active = segments[segments.length - 1]!
      const checkpoint = encodeRecords([
        checkpointDraft({
          segment: active.seq,
          hardState: state.hardState,
          base: state.base,
          snapshot: state.snapshot,
          lastIndex: state.lastIndex,
          lastTerm: state.lastTerm
        })
      ], 0)
      yield* Effect.logWarning(`log: ${last.path} held no complete record (${last.fileBytes} bytes); rewriting its checkpoint`)
      yield* rewriteTail(disk, last.path, 0, checkpoint)
      bytes = checkpoint.byteLength
      records = 1
    } else if (last.validBytes < last.fileBytes) {
      yield* Effect.logWarning(
        `log: cutting a torn tail of ${last.fileBytes - last.validBytes} bytes off ${last.path} at byte ${last.validBytes}` +
          (last.damage === null ? "" : ` (${last.damage.reason})`)
      )
      yield* rewriteTail(disk, last.path, last.validBytes, new Uint8Array(0))
    }
    // Leftover and obsolete segments are not unlinked here: the node would wait for them
    // (~0.45 s per GiB) before it serves. Out of the log, they go later (`removeLeftovers`).
    const leftovers = [...replay.leftovers]
    while (segments.length > 1 && segments[1]!.neededUpTo <= state.base.index) leftovers.push(segments.shift()!.path)
    return { state, positions: replay.positions, segments, active: { path: last.path, bytes, records }, leftovers }
  })
}

function rewriteTail(disk: DiskService, file: string, length: number, append: Uint8Array): Effect.Effect<void, DiskFailure> {
  return Effect.acquireUseRelease(
    disk.open(file, "write"),
    (handle) =>
      Effect.gen(function* () {
        yield* handle.truncate(length)
        if (append.byteLength > 0) yield* handle.write(length, append)
        yield* handle.sync
      }),
    (handle) => Effect.ignore(handle.close)
  )
}
