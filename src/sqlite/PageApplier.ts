// Applies page sets to a follower's database main file, with no SQLite connection open on it
// (an open connection would keep serving its cached pages, and a write from it would destroy
// ours). Each page is written at (pgno − 1) × pageSize, then the file is truncated (or extended)
// to dbSizePages × pageSize. Pages are full images, so applying the same sequence again — or
// replaying a suffix after a crash in the middle of one — gives the same bytes.
//
// Not atomic: durability comes from `sync`, one fdatasync for as many page sets as the caller
// applied before it. Persist the applied Raft index only after `sync()` returned, and serve
// nothing from the file before replay has passed every index whose pages may already be in it.

import path from "node:path"
import { Effect } from "effect"
import { assert } from "../assert.ts"
import type { DiskFile, DiskService } from "../storage/Disk.ts"
import { nodeDisk, runNow, writeOffLoop } from "../storage/Disk.ts"
import type { CopyOnWrite } from "./CopyOnWrite.ts"
import { PageFileError, PageSizeMismatch } from "./errors.ts"
import type { Page, PageSet } from "./pageSet.ts"
import { checkPageSet } from "./pageSet.ts"
import { isValidPageSize } from "./walFormat.ts"

export interface PageApplierOptions {
  readonly databasePath: string
  readonly pageSize: number
  /** Where the file is (default: the real file system). */
  readonly disk?: DiskService
  /** The snapshot copy in flight of this file, if any (CopyOnWrite.ts): each page it still needs
   * is saved before it is overwritten or cut off. */
  readonly copyOnWrite?: () => CopyOnWrite | null
}

/** Consecutive pages are written with one write of at most this many pages. */
export const runPagesMax = 512

/** The first 16 bytes of every SQLite database file. */
const sqliteMagic = Buffer.from("SQLite format 3\0", "latin1")

export class PageApplier {
  readonly databasePath: string
  readonly pageSize: number
  private file: DiskFile | undefined
  private sizeBytes: number
  /** The file was created by us and its directory entry has not been fsynced yet. */
  private directoryUnsynced: boolean
  private dirty = false

  private constructor(private readonly options: PageApplierOptions, private readonly disk: DiskService, file: DiskFile, sizeBytes: number, created: boolean) {
    this.databasePath = options.databasePath
    this.pageSize = options.pageSize
    this.file = file
    this.sizeBytes = sizeBytes
    this.directoryUnsynced = created
  }

  /** Opens (or creates) the main file. An existing SQLite file must have the expected page size
   * in its header. */
  static open(options: PageApplierOptions): PageApplier {
    assert(isValidPageSize(options.pageSize), `valid page size ${options.pageSize}`)
    const disk = options.disk ?? nodeDisk
    const filePath = options.databasePath
    const created = !wrap(filePath, "stat", () => runNow(disk.exists(filePath)))
    const file = wrap(filePath, "open", () => runNow(disk.open(filePath, "write")))
    try {
      const sizeBytes = wrap(filePath, "fstat", () => runNow(file.size))
      if (sizeBytes >= 100) {
        const header = Buffer.from(wrap(filePath, "read", () => runNow(file.read(0, 18))))
        const raw = header.readUInt16BE(16)
        const actualBytes = raw === 1 ? 65536 : raw
        if (header.subarray(0, 16).equals(sqliteMagic) && actualBytes !== options.pageSize) {
          throw new PageSizeMismatch({ path: filePath, expectedBytes: options.pageSize, actualBytes })
        }
      }
      return new PageApplier(options, disk, file, sizeBytes, created)
    } catch (error) {
      Effect.runSync(Effect.ignore(file.close))
      throw error
    }
  }

  /** The file's size as this applier left it. */
  get fileSizeBytes(): number {
    return this.sizeBytes
  }

  /** Writes the pages and sets the size. Not durable until `sync`. A failure part way (a full
   * disk) leaves some pages written: apply the same page set again (pages are full images). */
  apply(pageSet: PageSet): void {
    const file = this.begin(pageSet)
    const copy = this.options.copyOnWrite?.() ?? null
    for (const run of this.runs(pageSet)) {
      copy?.preserve(file, this.pageOf(run.position), run.data.byteLength / this.pageSize)
      wrap(this.databasePath, "write", () => runNow(file.write(run.position, run.data)))
      this.sizeBytes = Math.max(this.sizeBytes, run.position + run.data.byteLength)
    }
    const cut = this.cutPages(pageSet)
    if (cut !== null) copy?.preserve(file, cut.firstPage, cut.pages)
    this.setSize(file, pageSet)
  }

  /** `apply`, each run of pages (≤ runPagesMax pages) written on the thread pool where the disk
   * has one: the event loop runs between and during the writes. A 20 MiB entry written in one
   * synchronous step held a follower's loop 50–500 ms (more while the kernel throttles a process
   * that dirtied much of the page cache: issue 17). Same failure rule as `apply`. */
  applyOffLoop(pageSet: PageSet): Effect.Effect<void, PageFileError> {
    return Effect.suspend(() => {
      const file = this.begin(pageSet)
      const copy = this.options.copyOnWrite?.() ?? null
      // Each run's old images are saved (off the loop too) before the run is written.
      const preserve = (firstPage: number, pages: number) => copy === null ? Effect.void : copy.preserveOffLoop(file, firstPage, pages)
      return Effect.zipRight(
        Effect.forEach(this.runs(pageSet), (run) =>
          Effect.zipRight(
            preserve(this.pageOf(run.position), run.data.byteLength / this.pageSize),
            Effect.map(
              Effect.mapError(writeOffLoop(file, run.position, run.data), (cause) => new PageFileError({ path: this.databasePath, operation: "write", cause })),
              () => {
                this.sizeBytes = Math.max(this.sizeBytes, run.position + run.data.byteLength)
              }
            )
          ), { discard: true }),
        Effect.zipRight(
          Effect.suspend(() => {
            const cut = this.cutPages(pageSet)
            return cut === null ? Effect.void : preserve(cut.firstPage, cut.pages)
          }),
          Effect.try({ try: () => this.setSize(file, pageSet), catch: (error) => error as PageFileError })
        )
      )
    })
  }

  private begin(pageSet: PageSet): DiskFile {
    const file = this.openFile()
    if (pageSet.pageSize !== this.pageSize) {
      throw new PageSizeMismatch({ path: this.databasePath, expectedBytes: this.pageSize, actualBytes: pageSet.pageSize })
    }
    checkPageSet(pageSet)
    // Dirty from the first write on: a failed apply may have written part of it.
    this.dirty = true
    return file
  }

  /** The page set as writes: each run of consecutive page numbers (at most runPagesMax pages) is
   * one contiguous range of the file. */
  private *runs(pageSet: PageSet): Generator<{ readonly position: number; readonly data: Uint8Array }> {
    const pages = pageSet.pages
    let runStart = 0
    while (runStart < pages.length) {
      let runEnd = runStart + 1
      while (
        runEnd < pages.length &&
        runEnd - runStart < runPagesMax &&
        pages[runEnd]!.pgno === pages[runEnd - 1]!.pgno + 1
      ) {
        runEnd++
      }
      const position = (pages[runStart]!.pgno - 1) * this.pageSize
      const data = runEnd - runStart === 1 ? pages[runStart]!.data : contiguousOrCopy(pages, runStart, runEnd, this.pageSize)
      yield { position, data }
      runStart = runEnd
    }
  }

  private pageOf(position: number): number {
    return position / this.pageSize + 1
  }

  /** The pages `setSize` is about to cut off (the file shrinks), or null. */
  private cutPages(pageSet: PageSet): { readonly firstPage: number; readonly pages: number } | null {
    const targetPages = pageSet.dbSizePages
    const currentPages = Math.ceil(this.sizeBytes / this.pageSize)
    return targetPages < currentPages ? { firstPage: targetPages + 1, pages: currentPages - targetPages } : null
  }

  private setSize(file: DiskFile, pageSet: PageSet): void {
    const targetBytes = pageSet.dbSizePages * this.pageSize
    if (this.sizeBytes !== targetBytes) {
      wrap(this.databasePath, "ftruncate", () => runNow(file.truncate(targetBytes)))
      this.sizeBytes = targetBytes
    }
  }

  /** One fdatasync for everything applied since the last one (and, the first time, an fsync of
   * the directory that holds a file we created). On the real disk it waits on the thread pool:
   * the node keeps serving meanwhile. Do not apply while it runs. */
  get sync(): Effect.Effect<void, PageFileError> {
    return Effect.suspend(() => {
      const file = this.openFile()
      const syncFile = this.dirty
        ? Effect.tap(file.sync, () => Effect.sync(() => {
          this.dirty = false
        }))
        : Effect.void
      const directory = path.dirname(this.databasePath)
      const syncDirectoryEntry = Effect.suspend(() =>
        this.directoryUnsynced
          ? Effect.tap(this.disk.fsyncDir(directory), () => Effect.sync(() => {
            this.directoryUnsynced = false
          }))
          : Effect.void
      )
      return Effect.zipRight(syncFile, syncDirectoryEntry).pipe(
        Effect.mapError((cause) => new PageFileError({ path: cause.path, operation: cause.op, cause }))
      )
    })
  }

  close(): void {
    if (this.file !== undefined) Effect.runSync(Effect.ignore(this.file.close))
    this.file = undefined
  }

  private openFile(): DiskFile {
    assert(this.file !== undefined, "page applier is open")
    return this.file
  }
}

/** fsync of a directory on `disk`, failing with a PageFileError. */
export const syncDirectory = (disk: DiskService, directory: string): Effect.Effect<void, PageFileError> =>
  Effect.mapError(disk.fsyncDir(directory), (cause) => new PageFileError({ path: directory, operation: "fsync", cause }))

/** The images of pages[start..end) as one buffer: a view when they lie back to back in one
 * buffer (a decoded entry's pages do), so a large entry is written without a copy of itself
 * (fresh memory for it held a follower's loop 0.2-0.6 s per 20 MiB on the dev VM: issue 17). */
function contiguousOrCopy(pages: ReadonlyArray<Page>, start: number, end: number, pageSize: number): Uint8Array {
  const first = pages[start]!.data
  let contiguous = true
  for (let i = start + 1; i < end && contiguous; i++) {
    const data = pages[i]!.data
    contiguous = data.buffer === first.buffer && data.byteOffset === first.byteOffset + (i - start) * pageSize
  }
  if (contiguous) return new Uint8Array(first.buffer, first.byteOffset, (end - start) * pageSize)
  return Buffer.concat(pages.slice(start, end).map((page) => page.data))
}

function wrap<A>(filePath: string, operation: string, run: () => A): A {
  try {
    return run()
  } catch (cause) {
    if (cause instanceof PageSizeMismatch) throw cause
    throw new PageFileError({ path: filePath, operation, cause })
  }
}
