// Reads back, on the leader, the transactions SQLite committed to a database's WAL since the
// last capture, as page sets ready to be proposed to Raft.
//
// The capturer remembers where the last transaction it returned ended (a `WalPosition`: the WAL
// generation's salts, the byte offset after the commit frame and the running checksum there)
// and on each `capture()`:
// 1. re-reads the 32-byte header: if its salts or checkpoint sequence differ from the remembered
//    ones, SQLite restarted the WAL after a complete checkpoint, and the new generation's frames
//    start at offset 32 over stale bytes, chained from the new header's checksum;
// 2. walks frames from the remembered offset, each one valid only if its salts equal the
//    header's and its checksum continues the chain, and cuts a transaction at each commit frame;
// 3. stops at the first invalid or incomplete frame and drops the frames after the last commit.
// The file size is only a bound for reading, never the end of the data: a transaction that spills
// its page cache writes valid-looking frames before it commits (or rolls back, leaving them with
// no commit frame), and the next commit overwrites them in place.
//
// Precondition owned by the caller: capture after every write transaction and before every
// checkpoint. A checkpoint that restarts the WAL makes the frames of the old generation
// unreadable, so anything committed there and not yet captured would be lost to the followers.

import fs from "node:fs"
import { assert } from "../assert.ts"
import { PageFileError, PageSizeMismatch } from "./errors.ts"
import type { Page, PageSet } from "./pageSet.ts"
import type { WalChecksum, WalHeader } from "./walFormat.ts"
import { parseWalHeader, walChecksumWords, walFrameBytes, walFrameHeaderBytes, walHeaderBytes } from "./walFormat.ts"

/** Where a captured transaction ends in the WAL: enough to resume reading after it, and to cut
 * the WAL back to it on step-down (see discardUncommitted.ts). */
export interface WalPosition {
  readonly salt1: number
  readonly salt2: number
  readonly checkpointSequence: number
  /** Byte offset just after the commit frame (32 when the generation has no frame yet). */
  readonly offsetBytes: number
  /** The running checksum at `offsetBytes`. */
  readonly checksum1: number
  readonly checksum2: number
}

/** One committed transaction: its pages (see PageSet's invariants) and where it ended. */
export interface CapturedTransaction extends PageSet {
  readonly walEnd: WalPosition
  /** Frames the transaction wrote, duplicates and pages past the final size included. */
  readonly frameCount: number
}

export interface WalCaptureOptions {
  /** The database's main file; the WAL is this path plus "-wal". */
  readonly databasePath: string
  readonly pageSize: number
  /** Resume after this position (e.g. the end of the last proposed transaction). Without it,
   * the capturer starts at the beginning of whatever generation the WAL holds. */
  readonly start?: WalPosition
  /** Frames read by the first read of a capture; each further read doubles, up to
   * `readFramesMax`. Small, so that a stale tail after a restart costs little. */
  readonly readFramesInitial?: number
  readonly readFramesMax?: number
}

/** Captures of at least this many page bytes keep their pages in the buffer they were read
 * into (see copyTransactions). */
const largeCaptureBytes = 1024 * 1024

export class WalCapture {
  readonly walPath: string
  readonly pageSize: number
  private readonly frameBytes: number
  private readonly readFramesInitial: number
  private readonly readFramesMax: number
  private readonly headerBuffer = Buffer.allocUnsafeSlow(walHeaderBytes)
  /** Reused across captures: reading into fresh memory costs page faults on every capture. */
  private readBuffer: Buffer
  private readWords: Int32Array
  private fd: number | undefined = undefined
  private shipped: WalPosition | undefined

  constructor(options: WalCaptureOptions) {
    this.walPath = `${options.databasePath}-wal`
    this.pageSize = options.pageSize
    this.frameBytes = walFrameBytes(options.pageSize)
    this.readFramesInitial = options.readFramesInitial ?? 16
    this.readFramesMax = options.readFramesMax ?? 2048
    assert(this.readFramesInitial >= 1 && this.readFramesInitial <= this.readFramesMax, "read sizes in order")
    this.shipped = options.start
    this.readBuffer = Buffer.allocUnsafeSlow(this.readFramesInitial * this.frameBytes)
    this.readWords = new Int32Array(this.readBuffer.buffer, this.readBuffer.byteOffset, this.readBuffer.length >>> 2)
  }

  /** The end of the last transaction returned by `capture()` (or the `start` option). */
  get position(): WalPosition | undefined {
    return this.shipped
  }

  /** The transactions committed since the last capture, oldest first (often none or one). */
  capture(): Array<CapturedTransaction> {
    const steps = this.captureSteps(this.readFramesMax)
    for (;;) {
      const next = steps.next()
      if (next.done === true) return next.value
    }
  }

  /** `capture()` as steps: the generator pauses after each read of at most `readFramesStep`
   * frames (and the check of their checksums), so a caller can free the event loop in between
   * (LeaderDatabase.captureLocalCommitInSteps, for a large transaction). The WAL must not change
   * while it runs (the writer waits for it), and nothing else may capture meanwhile. */
  *captureSteps(readFramesStep: number): Generator<void, Array<CapturedTransaction>> {
    assert(Number.isSafeInteger(readFramesStep) && readFramesStep >= 1, "a step reads at least one frame")
    const opened = this.openWal()
    if (opened === undefined) return []
    const { fd, sizeBytes } = opened
    if (sizeBytes < walHeaderBytes) return []
    this.read(fd, this.headerBuffer, 0)
    const parsed = parseWalHeader(this.headerBuffer)
    if (!parsed.ok) return []
    const header = parsed.header
    if (header.pageSize !== this.pageSize) {
      throw new PageSizeMismatch({ path: this.walPath, expectedBytes: this.pageSize, actualBytes: header.pageSize })
    }
    const start = this.resumePoint(header)
    const transactions = yield* this.walkFrames(fd, header, start, sizeBytes, readFramesStep)
    const last = transactions[transactions.length - 1]
    if (last !== undefined) this.shipped = last.walEnd
    return transactions
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd)
    this.fd = undefined
  }

  /** Where this generation's unread frames start: the remembered position when the header is
   * still the same generation, else offset 32 chained from the header's checksum. */
  private resumePoint(header: WalHeader): WalPosition {
    const shipped = this.shipped
    if (
      shipped !== undefined &&
      shipped.salt1 === header.salt1 &&
      shipped.salt2 === header.salt2 &&
      shipped.checkpointSequence === header.checkpointSequence
    ) {
      return shipped
    }
    return {
      salt1: header.salt1,
      salt2: header.salt2,
      checkpointSequence: header.checkpointSequence,
      offsetBytes: walHeaderBytes,
      checksum1: header.checksum1,
      checksum2: header.checksum2
    }
  }

  /** Reads and checks frames from `start` into the reused read buffer, then copies the pages of
   * every committed transaction out of it (the buffer is overwritten by the next capture). */
  private *walkFrames(fd: number, header: WalHeader, start: WalPosition, sizeBytes: number, readFramesStep: number): Generator<void, Array<CapturedTransaction>> {
    const frameBytes = this.frameBytes
    const frameWords = frameBytes >>> 2
    const framesInFile = Math.floor((sizeBytes - start.offsetBytes) / frameBytes)
    const commits: Array<{ frameEnd: number; dbSizePages: number; checksum: WalChecksum }> = []
    let running: WalChecksum = start
    let framesChecked = 0
    let readFrames = this.readFramesInitial
    let valid = true
    // Sized once for every frame the file may hold: growing by doubling would copy what was
    // read so far at each step (a fresh buffer each time: page faults on the event loop).
    this.ensureCapacity(framesInFile * frameBytes, 0)
    while (valid && framesChecked < framesInFile) {
      if (framesChecked > 0) yield
      const framesToRead = Math.min(readFrames, readFramesStep, framesInFile - framesChecked)
      readFrames = Math.min(readFrames * 2, this.readFramesMax)
      this.ensureCapacity((framesChecked + framesToRead) * frameBytes, framesChecked * frameBytes)
      const buffer = this.readBuffer
      const words = this.readWords
      const bytesRead = this.read(fd, buffer.subarray(framesChecked * frameBytes, (framesChecked + framesToRead) * frameBytes), start.offsetBytes + framesChecked * frameBytes)
      const framesRead = Math.floor(bytesRead / frameBytes)
      for (let i = framesChecked; i < framesChecked + framesRead; i++) {
        const at = i * frameBytes
        if (buffer.readUInt32BE(at) === 0 || buffer.readUInt32BE(at + 8) !== header.salt1 || buffer.readUInt32BE(at + 12) !== header.salt2) {
          valid = false
          break
        }
        const afterHeader = walChecksumWords(words, i * frameWords, i * frameWords + 2, header.checksumBigEndian, running)
        const checksum = walChecksumWords(words, i * frameWords + 6, (i + 1) * frameWords, header.checksumBigEndian, afterHeader)
        if (checksum.checksum1 !== buffer.readUInt32BE(at + 16) || checksum.checksum2 !== buffer.readUInt32BE(at + 20)) {
          valid = false
          break
        }
        running = checksum
        const dbSizePages = buffer.readUInt32BE(at + 4)
        if (dbSizePages !== 0) commits.push({ frameEnd: i + 1, dbSizePages, checksum })
      }
      if (valid && framesRead < framesToRead) valid = false // the file shrank under us
      framesChecked += framesRead
    }
    const transactions = this.copyTransactions(start, commits)
    // Do not keep a buffer sized for one huge transaction forever (one captured in place was
    // handed over already).
    if (this.readBuffer.length > 2 * this.readFramesMax * frameBytes) this.ensureCapacity(0, 0, true)
    return transactions
  }

  /** Copies the committed frames out of the read buffer, one allocation for the whole capture,
   * keeping one image per page (the last), sorted, without pages past the final size. */
  private copyTransactions(
    start: WalPosition,
    commits: ReadonlyArray<{ frameEnd: number; dbSizePages: number; checksum: WalChecksum }>
  ): Array<CapturedTransaction> {
    const lastCommit = commits[commits.length - 1]
    if (lastCommit === undefined) return []
    const frameBytes = this.frameBytes
    const pageSize = this.pageSize
    const buffer = this.readBuffer
    // A large capture keeps its pages where they were read: the read buffer goes with them (the
    // next capture starts a new one) instead of every page being copied into fresh memory, one
    // whole-transaction copy less on the event loop (issue 17).
    const inPlace = lastCommit.frameEnd * pageSize >= largeCaptureBytes
    if (inPlace) this.ensureCapacity(0, 0, true)
    const copies = inPlace ? Buffer.alloc(0) : Buffer.allocUnsafeSlow(lastCommit.frameEnd * pageSize)
    let copied = 0
    const transactions: Array<CapturedTransaction> = []
    let frameStart = 0
    for (const commit of commits) {
      const lastFrameOf = new Map<number, number>()
      for (let i = frameStart; i < commit.frameEnd; i++) {
        const pgno = buffer.readUInt32BE(i * frameBytes)
        if (pgno <= commit.dbSizePages) lastFrameOf.set(pgno, i)
      }
      const pgnos = [...lastFrameOf.keys()].sort((a, b) => a - b)
      const pages: Array<Page> = pgnos.map((pgno) => {
        const frame = lastFrameOf.get(pgno)!
        const from = frame * frameBytes + walFrameHeaderBytes
        if (inPlace) return { pgno, data: buffer.subarray(from, from + pageSize) }
        buffer.copy(copies, copied, from, from + pageSize)
        copied += pageSize
        return { pgno, data: copies.subarray(copied - pageSize, copied) }
      })
      const walEnd: WalPosition = {
        salt1: start.salt1,
        salt2: start.salt2,
        checkpointSequence: start.checkpointSequence,
        offsetBytes: start.offsetBytes + commit.frameEnd * frameBytes,
        checksum1: commit.checksum.checksum1,
        checksum2: commit.checksum.checksum2
      }
      transactions.push({ pageSize, dbSizePages: commit.dbSizePages, pages, walEnd, frameCount: commit.frameEnd - frameStart })
      frameStart = commit.frameEnd
    }
    return transactions
  }

  /** Grows (or, with `shrink`, resets) the read buffer, keeping its first `keepBytes`. A fresh
   * allocUnsafeSlow buffer is unpooled and aligned, so its words can be read as an Int32Array. */
  private ensureCapacity(bytes: number, keepBytes: number, shrink = false): void {
    if (!shrink && bytes <= this.readBuffer.length) return
    const initialBytes = this.readFramesInitial * this.frameBytes
    const grown = shrink ? initialBytes : Math.max(bytes, 2 * this.readBuffer.length)
    const next = Buffer.allocUnsafeSlow(grown)
    if (keepBytes > 0) this.readBuffer.copy(next, 0, 0, keepBytes)
    this.readBuffer = next
    this.readWords = new Int32Array(next.buffer, next.byteOffset, next.length >>> 2)
  }

  /** The WAL's descriptor and size: one fstat when it is open already (a capture per write). */
  private openWal(): { readonly fd: number; readonly sizeBytes: number } | undefined {
    if (this.fd !== undefined) {
      const stats = this.fstat(this.fd)
      // SQLite deletes the WAL when its last connection closes; a new one is a new file.
      if (stats.nlink > 0) return { fd: this.fd, sizeBytes: stats.size }
      this.close()
    }
    try {
      this.fd = fs.openSync(this.walPath, "r")
    } catch (cause) {
      if (isErrorCode(cause, "ENOENT")) return undefined
      throw new PageFileError({ path: this.walPath, operation: "open", cause })
    }
    return { fd: this.fd, sizeBytes: this.fstat(this.fd).size }
  }

  private fstat(fd: number): fs.Stats {
    try {
      return fs.fstatSync(fd)
    } catch (cause) {
      throw new PageFileError({ path: this.walPath, operation: "fstat", cause })
    }
  }

  private read(fd: number, into: Uint8Array, position: number): number {
    let done = 0
    try {
      while (done < into.length) {
        const n = fs.readSync(fd, into, done, into.length - done, position + done)
        if (n === 0) break
        done += n
      }
    } catch (cause) {
      throw new PageFileError({ path: this.walPath, operation: "read", cause })
    }
    return done
  }
}

function isErrorCode(cause: unknown, code: string): boolean {
  return typeof cause === "object" && cause !== null && (cause as { code?: unknown }).code === code
}
