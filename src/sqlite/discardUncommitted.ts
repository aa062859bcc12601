// Step-down (and crash recovery) on a former leader: the local SQLite has committed transactions
// that Raft may never commit, and they must vanish. They are all WAL frames after the last
// Raft-committed one, because tqlite checkpoints only frames that are Raft-committed. So:
// 1. close the connections without letting SQLite checkpoint: the last read-write connection
//    to close checkpoints the WAL into the main file and deletes it (better-sqlite3 cannot turn
//    that off), but not while a read-only connection still holds the database open, and a
//    read-only connection cannot checkpoint. So close the writer first, then the reader.
// 2. cut the WAL just after the last Raft-committed commit frame;
// 3. delete the -shm wal-index so the next open rebuilds it from the cut WAL.
// The database then shows exactly the Raft-committed state.
//
// The cut is not fsynced: nothing depends on the WAL surviving a power loss. The step-down
// checkpoints it at once (SQLite fsyncs the WAL before copying frames, then the main file), and a
// node that starts deletes every WAL and replays its Raft log from the index applied-state says
// the main file reflects.

import { Effect } from "effect"
import fs from "node:fs"
import type { DiskFile, DiskService } from "../storage/Disk.ts"
import { nodeDisk, runNow, unlinkIfExists } from "../storage/Disk.ts"
import { assert } from "../assert.ts"
import { PageFileError, WalCutError } from "./errors.ts"
import type { SqliteDatabase } from "./openDatabase.ts"
import type { WalPosition } from "./WalCapture.ts"
import { parseWalFrameHeader, parseWalHeader, walFrameBytes, walHeaderBytes } from "./walFormat.ts"

export interface DiscardUncommittedOptions {
  /** The read-write connection (every other read-write connection is already closed). */
  readonly writer: SqliteDatabase
  /** A read-only connection to the same file, open. */
  readonly reader: SqliteDatabase
  /** The end of the last Raft-committed transaction, or undefined when no frame of the WAL
   * was ever committed by Raft (the main file alone is the committed state). */
  readonly keep: WalPosition | undefined
  /** Where the WAL is (default: the real file system). */
  readonly disk?: DiskService
}

export interface WalCutResult {
  readonly walBytesBefore: number
  readonly walBytesAfter: number
}

/** The whole step-down procedure: close both connections so the WAL survives, cut it, delete
 * the -shm. */
export function discardUncommitted(options: DiscardUncommittedOptions): WalCutResult {
  const databasePath = options.writer.name
  closeConnectionsKeepingWal(options.writer, options.reader)
  return cutWal(options.disk ?? nodeDisk, databasePath, options.keep)
}

/** Closes the writer while the reader holds the database open, then the reader, and checks the
 * WAL is still there. Throws WalCutError("WalNotPreserved") if SQLite removed it. */
export function closeConnectionsKeepingWal(writer: SqliteDatabase, reader: SqliteDatabase): void {
  assert(writer.open && reader.open, "both connections open")
  assert(!writer.readonly && reader.readonly, "a read-write writer and a read-only reader")
  assert(writer.name === reader.name, `writer and reader on one file (${writer.name} vs ${reader.name})`)
  const walPath = `${writer.name}-wal`
  // A read makes the reader attach to the WAL and hold its shared lock on the database file,
  // which is what stops the writer's close from checkpointing. Measured: a read-only
  // connection that has not read anything yet does not stop it.
  reader.prepare("SELECT count(*) FROM sqlite_schema").get()
  const walExisted = fs.existsSync(walPath)
  writer.close()
  const walAfterWriter = fs.existsSync(walPath)
  reader.close()
  const walAfterReader = fs.existsSync(walPath)
  if (walExisted && !(walAfterWriter && walAfterReader)) {
    throw new WalCutError({
      reason: "WalNotPreserved",
      path: walPath,
      detail: `the WAL was removed when closing the ${walAfterWriter ? "reader" : "writer"}`
    })
  }
}

/** Cuts the WAL of a database with no connection open just after `keep` and deletes the -shm
 * (through `disk`; synchronous). Refuses (WalCutError, WAL untouched) when `keep` is not a commit
 * boundary of this WAL. When the WAL is of a later generation than `keep` (SQLite restarted it,
 * which it does only after checkpointing every frame), the main file already holds `keep` and the
 * whole WAL is uncommitted: it is emptied. */
export function cutWal(disk: DiskService, databasePath: string, keep: WalPosition | undefined): WalCutResult {
  const walPath = `${databasePath}-wal`
  const file = openIfExists(disk, walPath)
  if (file === undefined) {
    if (keep !== undefined && keep.offsetBytes > walHeaderBytes) {
      throw new WalCutError({ reason: "WalTooShort", path: walPath, detail: "the WAL does not exist" })
    }
    removeShm(disk, databasePath)
    return { walBytesBefore: 0, walBytesAfter: 0 }
  }
  try {
    const walBytesBefore = fileCall(walPath, "fstat", () => runNow(file.size))
    const cutBytes = cutOffset(file, walPath, walBytesBefore, keep)
    if (cutBytes < walBytesBefore) fileCall(walPath, "ftruncate", () => runNow(file.truncate(cutBytes)))
    removeShm(disk, databasePath)
    return { walBytesBefore, walBytesAfter: Math.min(cutBytes, walBytesBefore) }
  } finally {
    runNow(Effect.ignore(file.close))
  }
}

/** Where to cut: after `keep` when the WAL is `keep`'s generation (checked to be a commit frame
 * with the same running checksum), else 0. */
function cutOffset(fd: DiskFile, walPath: string, walBytes: number, keep: WalPosition | undefined): number {
  const headerBytes = Buffer.alloc(walHeaderBytes)
  const headerRead = walBytes >= walHeaderBytes ? readAt(fd, walPath, headerBytes, 0) : 0
  const parsed = headerRead === walHeaderBytes ? parseWalHeader(headerBytes) : undefined
  const header = parsed?.ok === true ? parsed.header : undefined
  const sameGeneration =
    keep !== undefined &&
    header !== undefined &&
    header.salt1 === keep.salt1 &&
    header.salt2 === keep.salt2 &&
    header.checkpointSequence === keep.checkpointSequence
  if (keep === undefined || !sameGeneration) {
    // A WAL shorter than a header was emptied by a TRUNCATE checkpoint (or never written): the
    // main file holds everything. A full-size header that does not validate is damage.
    if (keep !== undefined && header === undefined && walBytes >= walHeaderBytes && keep.offsetBytes > walHeaderBytes) {
      throw new WalCutError({ reason: "WalTooShort", path: walPath, detail: "the WAL header is not valid" })
    }
    return 0
  }
  assert(header !== undefined, "same generation implies a header")
  if (keep.offsetBytes > walBytes) {
    throw new WalCutError({
      reason: "WalTooShort",
      path: walPath,
      detail: `the WAL is ${walBytes} bytes, the committed position ends at ${keep.offsetBytes}`
    })
  }
  const frameBytes = walFrameBytes(header.pageSize)
  const framesBefore = (keep.offsetBytes - walHeaderBytes) / frameBytes
  if (!Number.isInteger(framesBefore) || framesBefore < 0) {
    throw new WalCutError({ reason: "NotACommitBoundary", path: walPath, detail: `offset ${keep.offsetBytes} is not a frame boundary` })
  }
  const expected =
    framesBefore === 0
      ? { checksum1: header.checksum1, checksum2: header.checksum2, commit: true, salted: true }
      : lastFrameBefore(fd, walPath, keep.offsetBytes - frameBytes, header.salt1, header.salt2)
  if (!expected.commit || !expected.salted || expected.checksum1 !== keep.checksum1 || expected.checksum2 !== keep.checksum2) {
    throw new WalCutError({
      reason: "NotACommitBoundary",
      path: walPath,
      detail: `the frame ending at ${keep.offsetBytes} is not the commit frame captured there`
    })
  }
  return keep.offsetBytes
}

function lastFrameBefore(
  fd: DiskFile,
  walPath: string,
  frameOffset: number,
  salt1: number,
  salt2: number
): { checksum1: number; checksum2: number; commit: boolean; salted: boolean } {
  const bytes = Buffer.alloc(24)
  readAt(fd, walPath, bytes, frameOffset)
  const frame = parseWalFrameHeader(bytes)
  return {
    checksum1: frame.checksum1,
    checksum2: frame.checksum2,
    commit: frame.dbSizePages !== 0,
    salted: frame.salt1 === salt1 && frame.salt2 === salt2
  }
}

function readAt(file: DiskFile, walPath: string, into: Buffer, position: number): number {
  const bytes = fileCall(walPath, "read", () => runNow(file.read(position, into.length)))
  into.set(bytes)
  return bytes.byteLength
}

function openIfExists(disk: DiskService, filePath: string): DiskFile | undefined {
  if (!fileCall(filePath, "stat", () => runNow(disk.exists(filePath)))) return undefined
  return fileCall(filePath, "open", () => runNow(disk.open(filePath, "write")))
}

function removeShm(disk: DiskService, databasePath: string): void {
  const shmPath = `${databasePath}-shm`
  fileCall(shmPath, "unlink", () => {
    runNow(unlinkIfExists(disk, shmPath))
  })
}

function fileCall<A>(filePath: string, operation: string, run: () => A): A {
  try {
    return run()
  } catch (cause) {
    throw new PageFileError({ path: filePath, operation, cause })
  }
}
