// Applies page sets to a follower's database main file, with no SQLite connection open on it
// (an open connection would keep serving its cached pages, and a write from it would destroy
// ours). Each page is written at (pgno − 1) × pageSize, then the file is truncated (or extended)
// to dbSizePages × pageSize. Pages are full images, so applying the same sequence again — or
// replaying a suffix after a crash in the middle of one — gives the same bytes.
//
// Not atomic: durability comes from `sync()`, one fdatasync for as many page sets as the caller
// applied before it. Persist the applied Raft index only after `sync()` returned, and serve
// nothing from the file before replay has passed every index whose pages may already be in it.

import fs from "node:fs"
import path from "node:path"
import { assert } from "../assert.ts"
import { PageFileError, PageSizeMismatch } from "./errors.ts"
import type { PageSet } from "./pageSet.ts"
import { checkPageSet } from "./pageSet.ts"
import { isValidPageSize } from "./walFormat.ts"

export interface PageApplierOptions {
  readonly databasePath: string
  readonly pageSize: number
}

/** Consecutive pages are written with one pwritev of at most this many buffers (IOV_MAX is 1024
 * on Linux). */
const writevBuffersMax = 512

/** The first 16 bytes of every SQLite database file. */
const sqliteMagic = Buffer.from("SQLite format 3\0", "latin1")

export class PageApplier {
  readonly databasePath: string
  readonly pageSize: number
  private fd: number | undefined
  private sizeBytes: number
  /** The file was created by us and its directory entry has not been fsynced yet. */
  private directoryUnsynced: boolean
  private dirty = false

  private constructor(options: PageApplierOptions, fd: number, sizeBytes: number, created: boolean) {
    this.databasePath = options.databasePath
    this.pageSize = options.pageSize
    this.fd = fd
    this.sizeBytes = sizeBytes
    this.directoryUnsynced = created
  }

  /** Opens (or creates) the main file. An existing SQLite file must have the expected page size
   * in its header. */
  static open(options: PageApplierOptions): PageApplier {
    assert(isValidPageSize(options.pageSize), `valid page size ${options.pageSize}`)
    const filePath = options.databasePath
    const created = !fs.existsSync(filePath)
    const fd = wrap(filePath, "open", () => fs.openSync(filePath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644))
    try {
      const sizeBytes = wrap(filePath, "fstat", () => fs.fstatSync(fd).size)
      if (sizeBytes >= 100) {
        const header = Buffer.alloc(18)
        wrap(filePath, "read", () => fs.readSync(fd, header, 0, 18, 0))
        const raw = header.readUInt16BE(16)
        const actualBytes = raw === 1 ? 65536 : raw
        if (header.subarray(0, 16).equals(sqliteMagic) && actualBytes !== options.pageSize) {
          throw new PageSizeMismatch({ path: filePath, expectedBytes: options.pageSize, actualBytes })
        }
      }
      return new PageApplier(options, fd, sizeBytes, created)
    } catch (error) {
      fs.closeSync(fd)
      throw error
    }
  }

  /** The file's size as this applier left it. */
  get fileSizeBytes(): number {
    return this.sizeBytes
  }

  /** Writes the pages and sets the size. Not durable until `sync()`. */
  apply(pageSet: PageSet): void {
    const fd = this.openFd()
    if (pageSet.pageSize !== this.pageSize) {
      throw new PageSizeMismatch({ path: this.databasePath, expectedBytes: this.pageSize, actualBytes: pageSet.pageSize })
    }
    checkPageSet(pageSet)
    const pages = pageSet.pages
    let runStart = 0
    while (runStart < pages.length) {
      // A run of consecutive page numbers is one contiguous range of the file.
      let runEnd = runStart + 1
      while (
        runEnd < pages.length &&
        runEnd - runStart < writevBuffersMax &&
        pages[runEnd]!.pgno === pages[runEnd - 1]!.pgno + 1
      ) {
        runEnd++
      }
      const position = (pages[runStart]!.pgno - 1) * this.pageSize
      const buffers = pages.slice(runStart, runEnd).map((page) => page.data)
      this.writeFully(fd, buffers, position)
      this.sizeBytes = Math.max(this.sizeBytes, position + buffers.length * this.pageSize)
      runStart = runEnd
    }
    const targetBytes = pageSet.dbSizePages * this.pageSize
    if (this.sizeBytes !== targetBytes) {
      wrap(this.databasePath, "ftruncate", () => fs.ftruncateSync(fd, targetBytes))
      this.sizeBytes = targetBytes
    }
    this.dirty = true
  }

  /** One fdatasync for everything applied since the last one (and, the first time, an fsync of
   * the directory that holds a file we created). */
  sync(): void {
    const fd = this.openFd()
    if (this.dirty) wrap(this.databasePath, "fdatasync", () => fs.fdatasyncSync(fd))
    this.dirty = false
    if (this.directoryUnsynced) {
      syncDirectory(path.dirname(this.databasePath))
      this.directoryUnsynced = false
    }
  }

  /** Like `sync()`, with the fdatasync (and the directory fsync) on the thread pool, so a node
   * keeps serving its network and Raft traffic while the disk works. Do not apply meanwhile. */
  async syncAsync(): Promise<void> {
    const fd = this.openFd()
    if (this.dirty) {
      this.dirty = false
      try {
        await new Promise<void>((resolve, reject) => fs.fdatasync(fd, (cause) => (cause === null ? resolve() : reject(cause))))
      } catch (cause) {
        this.dirty = true
        throw new PageFileError({ path: this.databasePath, operation: "fdatasync", cause })
      }
    }
    if (this.directoryUnsynced) {
      const directory = path.dirname(this.databasePath)
      const handle = await fs.promises.open(directory, "r")
      try {
        await handle.sync()
      } finally {
        await handle.close()
      }
      this.directoryUnsynced = false
    }
  }

  /** Applies the page sets in order, then syncs once. */
  applyAll(pageSets: Iterable<PageSet>): void {
    for (const pageSet of pageSets) this.apply(pageSet)
    this.sync()
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd)
    this.fd = undefined
  }

  private openFd(): number {
    assert(this.fd !== undefined, "page applier is open")
    return this.fd
  }

  private writeFully(fd: number, buffers: Array<Uint8Array>, position: number): void {
    const totalBytes = buffers.length * this.pageSize
    const written =
      buffers.length === 1
        ? wrap(this.databasePath, "write", () => fs.writeSync(fd, buffers[0]!, 0, this.pageSize, position))
        : wrap(this.databasePath, "writev", () => fs.writevSync(fd, buffers, position))
    if (written === totalBytes) return
    // A short write (rare: signals, quotas): finish page by page from where it stopped.
    assert(written >= 0 && written < totalBytes, "short write within the range")
    const firstIncomplete = Math.floor(written / this.pageSize)
    for (let i = firstIncomplete; i < buffers.length; i++) {
      const data = buffers[i]!
      let done = i === firstIncomplete ? written - i * this.pageSize : 0
      while (done < this.pageSize) {
        const at = position + i * this.pageSize + done
        const n = wrap(this.databasePath, "write", () => fs.writeSync(fd, data, done, this.pageSize - done, at))
        assert(n > 0, "write makes progress")
        done += n
      }
    }
  }
}

export function syncDirectory(directory: string): void {
  const fd = wrap(directory, "open", () => fs.openSync(directory, "r"))
  try {
    wrap(directory, "fsync", () => fs.fsyncSync(fd))
  } finally {
    fs.closeSync(fd)
  }
}

function wrap<A>(filePath: string, operation: string, run: () => A): A {
  try {
    return run()
  } catch (cause) {
    if (cause instanceof PageSizeMismatch) throw cause
    throw new PageFileError({ path: filePath, operation, cause })
  }
}
