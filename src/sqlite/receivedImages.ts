// A snapshot being received, its database images written into files of their own as the bytes
// arrive, beside the snapshot store's file (which stays the snapshot of record: the node boots
// from it after a crash and sends it when it leads). Installing the snapshot then renames those
// files into place instead of copying every image out of the store's file: a 1 GiB join spent
// 3.6 s in that copy and its fdatasync (issue 17).
//
// The stream is databaseSnapshot.ts's: a manifest, then the images in manifest order. The
// manifest is kept in memory (it is small, bounded by manifestBytesMax); each image goes to
// `<database file>.received`. Bytes arrive in order, once each (the caller passes what extended
// the store's file). Each file is fdatasynced before `finish` returns, so a rename of it is an
// install of durable bytes; the files are not needed across a restart (the machine deletes them
// at start and installs from the store's file then).
import { Effect, Fiber } from "effect"
import { assert } from "../assert.ts"
import type { SnapshotMeta } from "../raft/types.ts"
import type { DiskFile, DiskService } from "../storage/Disk.ts"
import { unlinkIfExists } from "../storage/Disk.ts"
import type { DiskFailure } from "../storage/errors.ts"
import { WriteBehind } from "../storage/writeBehind.ts"
import type { DatabaseEntry } from "./databaseSnapshot.ts"
import { decodeManifest, manifestLength, manifestPrefixBytes } from "./databaseSnapshot.ts"

export const receivedSuffix = ".received"

/** Bytes written to one image file between background fdatasyncs (one at a time): the dirty
 * data `finish` still has to sync stays bounded, as the store's `incomingSyncBytes` does. */
export const receivedSyncBytes = 64 * 1024 * 1024

/** A snapshot received whole: its images durable in their `.received` files. */
export interface ReceivedImages {
  readonly meta: SnapshotMeta
  readonly sizeBytes: number
  readonly entries: ReadonlyArray<DatabaseEntry>
}

export interface ImageSplitterOptions {
  readonly disk: DiskService
  /** Where database `name`'s image goes (ends in `receivedSuffix`; unique to the snapshot, so a
   * later transfer never writes a file an install is renaming). */
  readonly fileOf: (name: string) => string
  readonly meta: SnapshotMeta
  readonly sizeBytes: number
  /** The size of the pieces the images are written in without waiting (`WriteBehind`). Default 1 MiB. */
  readonly writeBytes?: number
  /** Mutation for the crash tests: the files are not fdatasynced before `finish` returns. */
  readonly skipSync?: boolean
}

/** Splits one snapshot's bytes, in order, into per-database files. */
export class ImageSplitter {
  private written = 0
  private readonly head = new Uint8Array(manifestPrefixBytes)
  private manifest: Uint8Array | null = null
  private manifestBytes = 0
  private entries: ReadonlyArray<DatabaseEntry> | null = null
  /** The image being written: its entry's position in the manifest, file and stream offset. */
  private current: { readonly index: number; readonly file: DiskFile; readonly start: number; syncStarted: number } | null = null
  private syncing: Fiber.RuntimeFiber<void, DiskFailure> | null = null
  /** Files written whole, still open until `finish` syncs them. */
  private readonly done: Array<DiskFile> = []
  private readonly opened: Array<string> = []
  /** The images' writes, which `write` does not wait for: flushed before each fdatasync and
   * before a file closes. */
  private readonly writes: WriteBehind

  constructor(readonly options: ImageSplitterOptions) {
    assert(Number.isSafeInteger(options.sizeBytes) && options.sizeBytes >= 0, `snapshot size ${options.sizeBytes}`)
    this.writes = new WriteBehind(options.writeBytes ?? 1024 * 1024)
  }

  /** Bytes handed to the images' files so far. */
  get bytesWritten(): number {
    return this.writes.bytesIssued
  }

  get offset(): number {
    return this.written
  }

  /** Writes `data`, the stream's bytes from `at` (which must be where the last write ended). */
  write(at: number, data: Uint8Array): Effect.Effect<void, DiskFailure> {
    const self = this
    return Effect.gen(function*() {
      assert(at === self.written, `received image bytes at ${at}, expected ${self.written}`)
      assert(at + data.byteLength <= self.options.sizeBytes, `received image bytes past the snapshot's ${self.options.sizeBytes}`)
      let rest = data
      while (rest.byteLength > 0) {
        if (self.entries === null) {
          rest = self.takeManifest(rest)
          continue
        }
        const taken = yield* self.writeImage(rest)
        rest = rest.subarray(taken)
      }
      // Images of size 0 (and the end of the last one) are opened and closed as their turn comes.
      if (self.entries !== null) yield* self.advance()
    })
  }

  /** Buffers manifest bytes; returns what follows the manifest. A bad manifest throws
   * (PageSetDecodeError, or an AssertionError for a size that does not add up): the caller gives
   * the split up and installs from the store's file, whose checksum decides. */
  private takeManifest(data: Uint8Array): Uint8Array {
    if (this.manifest === null) {
      // Its first 12 bytes say its length.
      const n = Math.min(data.byteLength, manifestPrefixBytes - this.manifestBytes)
      this.head.set(data.subarray(0, n), this.manifestBytes)
      this.manifestBytes += n
      this.written += n
      if (this.manifestBytes < manifestPrefixBytes) return data.subarray(n)
      this.manifest = new Uint8Array(manifestLength(this.head))
      this.manifest.set(this.head)
      data = data.subarray(n)
    }
    const n = Math.min(data.byteLength, this.manifest.byteLength - this.manifestBytes)
    this.manifest.set(data.subarray(0, n), this.manifestBytes)
    this.manifestBytes += n
    this.written += n
    if (this.manifestBytes === this.manifest.byteLength) {
      this.entries = decodeManifest(this.manifest)
      let total = this.manifest.byteLength
      for (const entry of this.entries) total += entry.sizeBytes
      assert(total === this.options.sizeBytes, `snapshot manifest says ${total} bytes, the transfer ${this.options.sizeBytes}`)
    }
    return data.subarray(n)
  }

  /** The stream offset where image `index` starts. */
  private startOf(index: number): number {
    let at = this.manifest!.byteLength
    for (let i = 0; i < index; i++) at += this.entries![i]!.sizeBytes
    return at
  }

  /** Opens the next image's file once the current one is whole (and any empty ones after it). */
  private advance(): Effect.Effect<void, DiskFailure> {
    const self = this
    return Effect.gen(function*() {
      const entries = self.entries!
      while (true) {
        const c = self.current
        if (c !== null) {
          if (self.written < c.start + entries[c.index]!.sizeBytes) return
          self.done.push(c.file)
          self.current = null
        }
        const next = c === null ? self.done.length : c.index + 1
        if (next >= entries.length) return
        const filePath = self.options.fileOf(entries[next]!.name)
        assert(filePath.endsWith(receivedSuffix), `a received image file ends in ${receivedSuffix}`)
        self.opened.push(filePath)
        const file = yield* self.options.disk.open(filePath, "write")
        yield* file.truncate(0)
        const start = self.startOf(next)
        self.current = { index: next, file, start, syncStarted: start }
      }
    })
  }

  /** Writes what of `data` belongs to the current image; returns how many bytes it took. */
  private writeImage(data: Uint8Array): Effect.Effect<number, DiskFailure> {
    const self = this
    return Effect.gen(function*() {
      yield* self.advance()
      const c = self.current
      assert(c !== null, `received image bytes at ${self.written} past the last image`)
      const end = c.start + self.entries![c.index]!.sizeBytes
      const piece = data.subarray(0, end - self.written)
      yield* self.writes.write(c.file, self.written - c.start, piece)
      self.written += piece.byteLength
      if (self.written - c.syncStarted >= receivedSyncBytes && self.options.skipSync !== true) {
        // In the background, one at a time, so the final sync has little left to write.
        if (self.syncing !== null) yield* Fiber.join(self.syncing)
        c.syncStarted = self.written
        self.syncing = yield* Effect.forkDaemon(Effect.zipRight(self.writes.flush, c.file.sync))
      }
      return piece.byteLength
    })
  }

  /** Every byte arrived: makes every image file durable and closes it. */
  readonly finish: Effect.Effect<ReceivedImages, DiskFailure> = Effect.suspend(() => {
    const self = this
    return Effect.gen(function*() {
      assert(self.written === self.options.sizeBytes && self.entries !== null && self.current === null, `received images finished at ${self.written} of ${self.options.sizeBytes}`)
      if (self.syncing !== null) yield* Fiber.join(self.syncing)
      self.syncing = null
      yield* self.writes.flush
      for (const file of self.done.splice(0)) {
        if (self.options.skipSync !== true) yield* file.sync
        yield* file.close
      }
      return { meta: self.options.meta, sizeBytes: self.options.sizeBytes, entries: self.entries }
    })
  })

  /** Gives the transfer up: closes and deletes every file it wrote. */
  readonly abandon: Effect.Effect<void> = Effect.suspend(() => {
    const self = this
    return Effect.gen(function*() {
      if (self.syncing !== null) yield* Effect.ignore(Fiber.join(self.syncing))
      self.syncing = null
      yield* Effect.ignore(self.writes.flush)
      const files = [...self.done.splice(0), ...(self.current === null ? [] : [self.current.file])]
      self.current = null
      for (const file of files) yield* Effect.ignore(file.close)
      for (const filePath of self.opened.splice(0)) yield* Effect.ignore(unlinkIfExists(self.options.disk, filePath))
    })
  })
}
