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
import fs from "node:fs"
import path from "node:path"
import { assert } from "../assert.ts"
import { PageFileError } from "./errors.ts"
import { syncDirectory } from "./PageApplier.ts"

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

/** How the state machine makes its files durable: "async" (fdatasync on the thread pool, for
 * a real node), "sync" (blocking), "off" (no fsync at all: the simulator, whose crashes do not
 * lose page-cache data of these files). */
export type FsyncMode = "async" | "sync" | "off"

const magic = 0x53415154 // "TQAS" little-endian
const formatVersion = 1
const slotHeaderBytes = 24
export const appliedStateSlotBytes = 64 * 1024

export class AppliedStateFile {
  private seq: number
  private chain: Promise<void> = Promise.resolve()

  private constructor(
    readonly filePath: string,
    private readonly fd: number,
    private readonly fsync: FsyncMode,
    seq: number
  ) {
    this.seq = seq
  }

  /** Opens (creating if needed) the record at `filePath`; `state` is the newest valid slot's. */
  static open(filePath: string, fsync: FsyncMode): { readonly file: AppliedStateFile; readonly state: AppliedState | null } {
    const created = !fs.existsSync(filePath)
    const fd = call(filePath, "open", () => fs.openSync(filePath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644))
    if (created) {
      call(filePath, "ftruncate", () => fs.ftruncateSync(fd, 2 * appliedStateSlotBytes))
      if (fsync !== "off") {
        call(filePath, "fsync", () => fs.fsyncSync(fd))
        syncDirectory(path.dirname(filePath))
      }
    }
    let best: { seq: number; state: AppliedState } | null = null
    for (const slot of [0, 1]) {
      const parsed = readSlot(fd, filePath, slot)
      if (parsed !== null && (best === null || parsed.seq > best.seq)) best = parsed
    }
    return { file: new AppliedStateFile(filePath, fd, fsync, best?.seq ?? 0), state: best?.state ?? null }
  }

  /** Writes `state` into the older slot and, unless fsync is "off", fdatasyncs, blocking. */
  writeSync(state: AppliedState): void {
    this.writeSlot(state)
    if (this.fsync !== "off") call(this.filePath, "fdatasync", () => fs.fdatasyncSync(this.fd))
  }

  /** Like writeSync, with the fdatasync on the thread pool. Writes are chained: each starts
   * after the previous one's fdatasync, so two never share a slot in flight. */
  writeAsync(state: AppliedState): Promise<void> {
    const next = this.chain.then(
      () =>
        new Promise<void>((resolve, reject) => {
          try {
            this.writeSlot(state)
          } catch (error) {
            reject(error)
            return
          }
          if (this.fsync === "off") return resolve()
          fs.fdatasync(this.fd, (cause) => (cause === null ? resolve() : reject(new PageFileError({ path: this.filePath, operation: "fdatasync", cause }))))
        })
    )
    this.chain = next.catch(() => undefined)
    return next
  }

  close(): void {
    fs.closeSync(this.fd)
  }

  private writeSlot(state: AppliedState): void {
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
    let done = 0
    try {
      while (done < slot.length) {
        const n = call(this.filePath, "write", () => fs.writeSync(this.fd, slot, done, slot.length - done, at + done))
        assert(n > 0, "write makes progress")
        done += n
      }
    } catch (error) {
      // The slot may be torn now: the next write (a retry after a full disk) goes to the same
      // slot, never over the other one, which holds the last good record.
      this.seq--
      throw error
    }
  }
}

function readSlot(fd: number, filePath: string, slot: number): { seq: number; state: AppliedState } | null {
  const header = Buffer.alloc(slotHeaderBytes)
  const at = slot * appliedStateSlotBytes
  if (call(filePath, "read", () => fs.readSync(fd, header, 0, slotHeaderBytes, at)) !== slotHeaderBytes) return null
  if (header.readUInt32LE(0) !== magic || header.readUInt32LE(4) !== formatVersion) return null
  const length = header.readUInt32LE(16)
  if (length > appliedStateSlotBytes - slotHeaderBytes) return null
  const json = Buffer.alloc(length)
  if (call(filePath, "read", () => fs.readSync(fd, json, 0, length, at + slotHeaderBytes)) !== length) return null
  if (crc32c(json, crc32c(header.subarray(8, 20))) !== header.readUInt32LE(20)) return null
  try {
    const state = JSON.parse(json.toString("utf8")) as AppliedState
    return { seq: header.readDoubleLE(8), state }
  } catch {
    return null
  }
}

function call<A>(filePath: string, operation: string, run: () => A): A {
  try {
    return run()
  } catch (cause) {
    throw new PageFileError({ path: filePath, operation, cause })
  }
}
