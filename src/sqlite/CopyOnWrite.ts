// Copy-on-write of a closed database's pages while a snapshot copies its main file, so a
// follower's applier goes on applying during the copy (issue 17: it waited for the whole copy,
// 17 s at 2 GiB; its mailbox filled, its Raft actor blocked and stopped acknowledging).
//
// The copier reads the main file front to back (SqliteMachine.writeParts); the page applier goes
// on writing entries into it (PageApplier). Before the applier overwrites a page the copy has not
// passed yet, or cuts it off by shrinking the file, it saves the page's current image into a side
// file `<file>.cow.tmp`. Only the first overwrite saves a page, so what is saved is the page as of
// the snapshot's index; the copier lays the saved images over what it read from the main file.
//
// Bounds: each page of the image is saved at most once, so the side file never holds more than
// the image (on disk, never in memory); in memory one 4-byte slot per page of the image
// (`copyOnWriteIndexBytesPerPage`, 1 MiB per GiB), allocated at the first save. Saves are read and
// written a run of at most `runPagesMax` pages at a time (the applier's own runs).
//
// Crash safety: the side file is scratch. It is never synced, nothing durable refers to it, it is
// deleted when its database's copy ends and at start (every `.tmp` in the databases directory),
// and the main file and `applied-state` are written exactly as without it. So a crash at any point
// leaves what it would have left without a snapshot running (test/sqlite/machineCrash.test.ts).
//
// A save that fails (a full disk, an I/O error) never fails the apply: the copy is marked broken,
// and the copier fails as skipped (the Raft actor asks again later).
import { Effect } from "effect"
import { assert } from "../assert.ts"
import type { DiskFile, DiskService } from "../storage/Disk.ts"
import { readOffLoop, runNow, unlinkOffLoop, writeOffLoop } from "../storage/Disk.ts"
import { runPagesMax } from "./PageApplier.ts"

/** Memory per page of the image being copied: the slot map (an Int32Array). */
export const copyOnWriteIndexBytesPerPage = Int32Array.BYTES_PER_ELEMENT

/** The side file of a database's main file at `databasePath`. Ends in `.tmp`: removed at start. */
export const copyOnWritePathOf = (databasePath: string): string => `${databasePath}.cow.tmp`

/** Consecutive pages to save, into consecutive slots of the side file. */
interface SaveRun {
  readonly firstPage: number
  readonly pages: number
  readonly firstSlot: number
}

export class CopyOnWrite {
  /** Per page number (1-based) of the image: 0 not saved; n > 0 saved in slot n − 1 of the side
   * file; n < 0 being saved (off the loop) into slot −n − 1 — the main file still holds it: its
   * overwrite waits for the save. */
  private slots: Int32Array | null = null
  private slotsUsed = 0
  /** Pages 1..copiedPages are copied (read and overlaid): they need no saving any more. */
  private copiedPages = 0
  private side: DiskFile | null = null
  private closed = false
  /** Saves running on the thread pool: the side file's descriptor is closed only after them (a
   * descriptor number closed under a pending write may be reused by another file). */
  private savesInFlight = 0
  /** Why the copy can no longer be trusted (a save failed); the copier fails as skipped. */
  broken: string | null = null
  /** Pages saved so far (measurements, tests). */
  savedPages = 0

  constructor(
    private readonly disk: DiskService,
    readonly sidePath: string,
    readonly pageSize: number,
    /** Pages of the image the snapshot copies (the file's size when it was prepared). */
    readonly imagePages: number,
    /** `skipCopyOnWrite` (a known bug for the mutation tests): nothing is saved. */
    private readonly skip = false
  ) {}

  /** Before pages `firstPage`..`firstPage + pages − 1` of the main file (`file`) are overwritten
   * or cut off: saves each one the copy still needs, synchronously. */
  preserve(file: DiskFile, firstPage: number, pages: number): void {
    for (const run of this.claim(firstPage, pages)) {
      if (this.broken !== null) return
      try {
        const image = runNow(file.read(this.positionOf(run.firstPage), run.pages * this.pageSize))
        if (!this.checkRead(run, image)) return
        runNow(this.sideFile().write(run.firstSlot * this.pageSize, image))
        this.markSaved(run)
      } catch (error) {
        this.breakWith(`saving pages ${run.firstPage}..${run.firstPage + run.pages - 1} failed: ${String(error)}`)
      }
    }
  }

  /** `preserve` with the reads and writes on the thread pool where the disk has one (a large
   * entry applied off the loop). The pages are claimed at once: the copier reads them from the
   * main file until they are saved, and the caller overwrites them only after this returns. */
  preserveOffLoop(file: DiskFile, firstPage: number, pages: number): Effect.Effect<void> {
    return Effect.suspend(() => {
      const runs = this.claim(firstPage, pages)
      if (runs.length === 0) return Effect.void
      this.savesInFlight++
      const saves = Effect.forEach(runs, (run) =>
        Effect.suspend(() => {
          if (this.broken !== null) return Effect.void
          return Effect.flatMap(readOffLoop(file, this.positionOf(run.firstPage), run.pages * this.pageSize), (image) =>
            this.checkRead(run, image)
              ? Effect.map(writeOffLoop(this.sideFile(), run.firstSlot * this.pageSize, image), () => this.markSaved(run))
              : Effect.void)
        }).pipe(Effect.catchAllCause((cause) => Effect.sync(() => this.breakWith(`saving pages from ${run.firstPage} failed: ${String(cause)}`)))), { discard: true })
      return Effect.ensuring(saves, Effect.suspend(() => {
        this.savesInFlight--
        return this.closed && this.savesInFlight === 0 ? this.closeSide() : Effect.void
      }))
    })
  }

  /** The copier read the image's pages from `firstPage` into `out` (`bytesRead` of them from the
   * main file): lays the saved images over it, then counts those pages as copied. A problem (a
   * page neither in the file nor saved, a broken copy) is returned, and the copy must fail. */
  overlay(firstPage: number, out: Uint8Array, bytesRead: number): string | null {
    assert(firstPage === this.copiedPages + 1, `overlay of page ${firstPage} after ${this.copiedPages} copied`)
    // A main file is whole pages (the page applier sets its size in pages); anything else is not
    // copied, rather than copied wrong.
    if (out.byteLength % this.pageSize !== 0) return `a chunk of ${out.byteLength} bytes is not whole pages`
    const pages = out.byteLength / this.pageSize
    assert(firstPage + pages - 1 <= this.imagePages, `overlay past the image's ${this.imagePages} pages`)
    for (let i = 0; i < pages; i++) {
      const slot = this.slots?.[firstPage + i] ?? 0
      if (slot > 0) {
        const image = runNow(this.sideFile().read((slot - 1) * this.pageSize, this.pageSize))
        if (image.byteLength !== this.pageSize) return `page ${firstPage + i}'s saved image is short`
        out.set(image, i * this.pageSize)
      } else if ((i + 1) * this.pageSize > bytesRead) {
        return `page ${firstPage + i} is neither in the file nor saved`
      }
    }
    this.copiedPages = firstPage + pages - 1
    return this.broken
  }

  breakWith(reason: string): void {
    this.broken ??= reason
  }

  /** Nothing is saved any more; the side file is closed and deleted (on the thread pool: it may
   * hold up to the image). */
  get close(): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.closed) return Effect.void
      this.closed = true
      return this.savesInFlight === 0 ? this.closeSide() : Effect.void // the last save closes it
    })
  }

  private closeSide(): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.slots = null
      const side = this.side
      this.side = null
      if (side === null) return Effect.void
      return Effect.zipRight(Effect.ignore(side.close), Effect.ignore(unlinkOffLoop(this.disk, this.sidePath)))
    })
  }

  /** The runs of pages in the range that the copy still needs and nobody saved, each given
   * slots in the side file and marked as being saved. */
  private claim(firstPage: number, pages: number): Array<SaveRun> {
    if (this.skip || this.closed || this.broken !== null) return []
    const from = Math.max(firstPage, this.copiedPages + 1)
    const to = Math.min(firstPage + pages - 1, this.imagePages)
    const runs: Array<SaveRun> = []
    for (let page = from; page <= to; page++) {
      if ((this.slots?.[page] ?? 0) !== 0) continue
      this.slots ??= new Int32Array(this.imagePages + 1)
      const slot = this.slotsUsed++
      // Each page once: the side file never outgrows the image.
      assert(this.slotsUsed <= this.imagePages, `side file of ${this.slotsUsed} pages for an image of ${this.imagePages}`)
      this.slots[page] = -(slot + 1)
      const last = runs[runs.length - 1]
      if (last !== undefined && last.firstPage + last.pages === page && last.firstSlot + last.pages === slot && last.pages < runPagesMax) {
        runs[runs.length - 1] = { ...last, pages: last.pages + 1 }
      } else {
        runs.push({ firstPage: page, pages: 1, firstSlot: slot })
      }
    }
    return runs
  }

  /** A page of the image that the main file no longer holds was never saved: impossible while
   * every shrink saves what it cuts; the copy fails rather than the apply. */
  private checkRead(run: SaveRun, image: Uint8Array): boolean {
    if (image.byteLength === run.pages * this.pageSize) return true
    this.breakWith(`pages ${run.firstPage}..${run.firstPage + run.pages - 1} are past the file's end unsaved`)
    return false
  }

  private markSaved(run: SaveRun): void {
    const slots = this.slots
    if (slots === null) return // closed meanwhile
    for (let i = 0; i < run.pages; i++) slots[run.firstPage + i] = run.firstSlot + i + 1
    this.savedPages += run.pages
  }

  private positionOf(page: number): number {
    return (page - 1) * this.pageSize
  }

  private sideFile(): DiskFile {
    assert(!this.closed, "copy-on-write is open")
    this.side ??= runNow(this.disk.open(this.sidePath, "write"))
    return this.side
  }
}
