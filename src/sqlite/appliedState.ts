// The SQLite state machine's own small durable record, beside the database files: for each
// database, the Raft index its main file reflects (everything that changed the database up to
// that index is in the file and fsynced) and the index of the last change as of then. After a
// restart, entries at or below a database's file index are skipped for it and the rest replayed
// (page sets are idempotent), and a database whose file is older than the snapshot the node boots
// from is replaced from that snapshot.
//
// Written after every applier batch on a follower, so it must be cheap: instead of an atomic
// replace (write a temp file, fsync, rename, fsync the directory: two fsyncs and a rename), the
// file holds two fixed-size slots written alternately in place, each with a sequence number and a
// CRC32C; one fdatasync per write. A torn write damages only the slot being written; the reader
// takes the valid slot with the highest sequence number. An older record is always safe (it only
// means more replay); a record is never newer than the files, because the files are fsynced
// before it is written.
//
//   slot (slotBytes, two of them, at 0 and slotBytes):
//   0   u32  magic "TQAS"        4   u32  format version (1)
//   8   f64  sequence number     16  u32  JSON length       20  u32  CRC32C of bytes 8..20 and the JSON
//   24  …    JSON of AppliedState

import { crc32c } from "@node-rs/crc32"
import path from "node:path"
import { Effect } from "effect"
import { assert } from "../assert.ts"
import type { DiskFile, DiskService } from "../storage/Disk.ts"
import { writeOffLoop } from "../storage/Disk.ts"
import { traceDuration } from "../runtime/trace.ts"
import type { DiskFailure } from "../storage/errors.ts"
import { PageFileError } from "./errors.ts"

export interface DatabaseFileState {
  /** The main file holds every change up to this Raft index, durably. */
  readonly fileIndex: number
  /** The index of the last entry that changed the database, as of `fileIndex`. */
  readonly lastChangeIndex: number
}

export interface AppliedState {
  /** The applied index when the record was written (informational). */
  readonly appliedIndex: number
  readonly databases: Readonly<Record<string, DatabaseFileState>>
}

/** How the state machine makes its files durable: "sync" and "async" (the same: every fsync goes
 * through `Disk`, on the real disk on the thread pool), or "off" (no fsync at all: for tests
 * whose disk never loses what it was given). */
export type FsyncMode = "async" | "sync" | "off"

const magic = 0x53415154 // "TQAS" little-endian
const formatVersion = 1
const slotHeaderBytes = 24
export const appliedStateSlotBytes = 64 * 1024

export class AppliedStateFile {
  private seq: number
  /** A write whose fdatasync has not returned: the next one must not take the other slot. */
  private writing = false

  private constructor(
    readonly filePath: string,
    private readonly file: DiskFile,
    private readonly fsync: FsyncMode,
    seq: number
  ) {
    this.seq = seq
  }

  /** Opens (creating if needed) the record at `filePath`; `state` is the newest valid slot's. */
  static open(disk: DiskService, filePath: string, fsync: FsyncMode): Effect.Effect<{ readonly file: AppliedStateFile; readonly state: AppliedState | null }, PageFileError> {
    return Effect.gen(function*() {
      const created = !(yield* disk.exists(filePath))
      const file = yield* disk.open(filePath, "write")
      if (created) {
        yield* file.truncate(2 * appliedStateSlotBytes)
        if (fsync !== "off") {
          yield* file.sync
          yield* disk.fsyncDir(path.dirname(filePath))
        }
      }
      let best: { seq: number; state: AppliedState } | null = null
      for (const slot of [0, 1]) {
        const parsed = yield* readSlot(file, slot)
        if (parsed !== null && (best === null || parsed.seq > best.seq)) best = parsed
      }
      return { file: new AppliedStateFile(filePath, file, fsync, best?.seq ?? 0), state: best?.state ?? null }
    }).pipe(Effect.mapError((cause) => toPageFileError(cause)))
  }

  /** Writes `state` into the older slot and, unless fsync is "off", fdatasyncs. */
  write(state: AppliedState): Effect.Effect<void, PageFileError> {
    return Effect.suspend(() => {
      assert(!this.writing, "one applied-state write at a time")
      this.writing = true
      const written = this.writeSlot(state)
      const synced = this.fsync === "off" ? Effect.void : Effect.mapError(this.file.sync, toPageFileError)
      return Effect.ensuring(Effect.zipRight(written, synced), Effect.sync(() => {
        this.writing = false
      }))
    })
  }

  close(): void {
    Effect.runSync(Effect.ignore(this.file.close))
  }

  /** The slot write goes through the thread pool where the disk has one: a small synchronous
   * write blocks while the kernel throttles a process that dirtied much of the page cache (a
   * follower's pages, a snapshot being written), and this one runs once per applier batch. */
  private writeSlot(state: AppliedState): Effect.Effect<void, PageFileError> {
    const json = Buffer.from(JSON.stringify(state), "utf8")
    assert(slotHeaderBytes + json.length <= appliedStateSlotBytes, `applied state of ${json.length} bytes fits a slot`)
    this.seq++
    const slot = Buffer.alloc(slotHeaderBytes + json.length)
    slot.writeUInt32LE(magic, 0)
    slot.writeUInt32LE(formatVersion, 4)
    slot.writeDoubleLE(this.seq, 8)
    slot.writeUInt32LE(json.length, 16)
    json.copy(slot, slotHeaderBytes)
    slot.writeUInt32LE(crc32c(json, crc32c(slot.subarray(8, 20))), 20)
    const at = (this.seq % 2) * appliedStateSlotBytes
    const started = performance.now()
    return writeOffLoop(this.file, at, slot).pipe(
      Effect.tap(() => Effect.sync(() => traceDuration("machine.record.write.ms", started, 20))),
      Effect.mapError((error) => {
        // The slot may be torn now: the next write (a retry after a full disk) goes to the same
        // slot, never over the other one, which holds the last good record.
        this.seq--
        return toPageFileError(error)
      })
    )
  }
}

const readSlot = (file: DiskFile, slot: number): Effect.Effect<{ seq: number; state: AppliedState } | null, DiskFailure> =>
  Effect.gen(function*() {
    const at = slot * appliedStateSlotBytes
    const header = Buffer.from(yield* file.read(at, slotHeaderBytes))
    if (header.length !== slotHeaderBytes) return null
    if (header.readUInt32LE(0) !== magic || header.readUInt32LE(4) !== formatVersion) return null
    const length = header.readUInt32LE(16)
    if (length > appliedStateSlotBytes - slotHeaderBytes) return null
    const json = Buffer.from(yield* file.read(at + slotHeaderBytes, length))
    if (json.length !== length) return null
    if (crc32c(json, crc32c(header.subarray(8, 20))) !== header.readUInt32LE(20)) return null
    try {
      const state = JSON.parse(json.toString("utf8")) as AppliedState
      return { seq: header.readDoubleLE(8), state }
    } catch {
      return null
    }
  })

function toPageFileError(cause: DiskFailure | PageFileError): PageFileError {
  if (cause instanceof PageFileError) return cause
  return new PageFileError({ path: cause.path, operation: cause.op, cause })
}
