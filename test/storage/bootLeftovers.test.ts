// A store's open does no work proportional to what an earlier run left behind (issue 17: restart
// < 5 s whatever the size). A node killed at 4 GiB left a half-taken snapshot of GiBs and a log
// whose old segments a compaction had made obsolete; the open read every one of those segments
// and unlinked them and the snapshot on the boot path (an unlink frees ~0.45 s of blocks per GiB
// on the dev VM). Counted here, not timed: the unlinks and the bytes read while the stores open,
// then that `removeLeftovers` deletes every leftover on the thread pool, and that the stores
// hold what they held.
import fs from "node:fs"
import path from "node:path"
import { Context, Effect, Layer } from "effect"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../tempDirs.ts"
import type { DiskService } from "../../src/storage/Disk.ts"
import { Disk, nodeDisk } from "../../src/storage/Disk.ts"
import { SegmentLog } from "../../src/storage/SegmentLog.ts"
import { Snapshots, snapshotFileName, writeSnapshotFrom } from "../../src/storage/Snapshots.ts"
import type { SnapshotMeta } from "../../src/raft/types.ts"

const newDir = tempDirs("tqlite-bootleftovers-")

const meta: SnapshotMeta = { index: 42, term: 2, config: { members: [{ id: 1, address: "a:1", role: "voter" }] } }

/** The node disk, recording every unlink (with the file's size, and whether on the pool) and the
 * bytes each file gave to whole-file reads (`readFile`, what a log replay reads a segment with). */
function recordingDisk() {
  const unlinks: Array<{ readonly file: string; readonly bytes: number; readonly pool: boolean }> = []
  const wholeReads = new Map<string, number>()
  const sizeOf = (file: string) => (fs.existsSync(file) ? fs.statSync(file).size : 0)
  const disk: DiskService = {
    ...nodeDisk,
    readFile: (file, into) =>
      Effect.tap(nodeDisk.readFile(file, into), (bytes) => Effect.sync(() => void wholeReads.set(path.basename(file), (wholeReads.get(path.basename(file)) ?? 0) + bytes.byteLength))),
    unlink: (file) => Effect.zipRight(Effect.sync(() => void unlinks.push({ file: path.basename(file), bytes: sizeOf(file), pool: false })), nodeDisk.unlink(file)),
    unlinkAsync: (file) => Effect.zipRight(Effect.sync(() => void unlinks.push({ file: path.basename(file), bytes: sizeOf(file), pool: true })), nodeDisk.unlinkAsync!(file))
  }
  return { disk, unlinks, wholeReads }
}

const command = (index: number, bytes = 1000) => ({ kind: "command" as const, term: 1, index, data: new Uint8Array(bytes).fill(index & 0xff) })

/** The node disk on which an unlink does nothing: what a node killed right after a compaction
 * leaves (the files it was about to remove are all still there). */
const noUnlinks: DiskService = {
  ...nodeDisk,
  unlink: () => Effect.void,
  unlinkAsync: () => Effect.void
}

/** A log of small segments (three entries each) compacted up to `compactTo` by the last persist,
 * as a node killed before it removed the obsolete segments leaves it. */
const logWithObsoleteSegments = (dir: string, last: number, compactTo: number) =>
  Effect.scoped(Effect.gen(function*() {
    const log = yield* SegmentLog.open({ dir, clusterId: "c", segmentBytesMax: 4096 })
    yield* log.persist([{ hardState: { term: 1, vote: 1, commit: 0 }, entries: [] }])
    for (let index = 1; index <= last; index++) yield* log.persist([{ entries: [command(index)] }])
    yield* log.persist([{ hardState: { term: 1, vote: 1, commit: last }, entries: [], compactUpTo: { index: compactTo, term: 1 } }])
  }).pipe(Effect.provideService(Disk, noUnlinks)))

const segments = (dir: string) => fs.readdirSync(dir).filter((name) => name.endsWith(".seg")).sort()

describe("the log's open with segments a compaction made obsolete", () => {
  it("reads none of them and unlinks none; removeLeftovers then unlinks each on the pool; the log is whole, before and after", async () => {
    const dir = newDir()
    await Effect.runPromise(logWithObsoleteSegments(dir, 60, 55))
    const before = segments(dir)
    expect(before.length).toBeGreaterThan(15) // the precondition: a dozen obsolete segments and more
    const { disk, unlinks, wholeReads } = recordingDisk()
    const result = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const log = yield* SegmentLog.open({ dir, clusterId: "c", segmentBytesMax: 4096 })
      const atOpen = { unlinks: unlinks.length, segmentsRead: [...wholeReads.keys()].filter((name) => name.endsWith(".seg")) }
      expect(atOpen.unlinks).toBe(0)
      const loaded = yield* log.loadBounded(1024 * 1024)
      const entries = yield* log.read(56, 60)
      yield* log.removeLeftovers!
      const afterRemoval = segments(dir)
      // Still a log: it appends and reads back.
      yield* log.persist([{ entries: [command(61)] }])
      return { atOpen, loaded, entries, afterRemoval, again: yield* log.read(56, 61) }
    }).pipe(Effect.provideService(Disk, disk))))
    expect(result.atOpen.unlinks).toBe(0)
    // Only the segments holding live entries (56..60: three entries a segment) are read whole.
    expect(result.atOpen.segmentsRead.length).toBeLessThanOrEqual(3)
    expect(result.loaded.base.index).toBe(55)
    expect(result.loaded.entries.map((e) => e.index)).toEqual([56, 57, 58, 59, 60])
    expect(result.entries.map((e) => e.index)).toEqual([56, 57, 58, 59, 60])
    expect(result.again.map((e) => e.index)).toEqual([56, 57, 58, 59, 60, 61])
    // Every obsolete segment went, on the thread pool.
    expect(result.afterRemoval.length).toBeLessThanOrEqual(3)
    expect(unlinks.length).toBe(before.length - result.afterRemoval.length)
    expect(unlinks.every((u) => u.pool && u.file.endsWith(".seg"))).toBe(true)
  })

  it("a crash before removeLeftovers leaves them, and the next open leaves them out again", async () => {
    const dir = newDir()
    await Effect.runPromise(logWithObsoleteSegments(dir, 30, 28))
    const reopen = Effect.scoped(Effect.gen(function*() {
      const log = yield* SegmentLog.open({ dir, clusterId: "c", segmentBytesMax: 4096 })
      const loaded = yield* log.loadBounded(1024 * 1024)
      return { base: loaded.base.index, indexes: loaded.entries.map((e) => e.index), commit: loaded.hardState.commit }
    }).pipe(Effect.provideService(Disk, nodeDisk)))
    const first = await Effect.runPromise(reopen)
    const second = await Effect.runPromise(reopen)
    expect(first).toEqual({ base: 28, indexes: [29, 30], commit: 30 })
    expect(second).toEqual(first)
    // Half of them removed (a crash in the middle of removeLeftovers, oldest or newest first):
    // the rest are still left out.
    const files = segments(dir)
    for (const name of files.slice(0, Math.floor(files.length / 2)).filter((_, i) => i % 2 === 1)) fs.rmSync(path.join(dir, name))
    expect(await Effect.runPromise(reopen)).toEqual(first)
  })
})

describe("the snapshot store's open with a snapshot half taken and a transfer half received", () => {
  it("unlinks neither (renamed away: the names are free at once); removeLeftovers unlinks both on the pool", async () => {
    const dir = newDir()
    const snapshotsDir = path.join(dir, "snapshots")
    const open = (disk: DiskService) => Effect.map(Layer.build(Snapshots.layer({ dir: snapshotsDir, retain: 1 }).pipe(Layer.provide(Layer.succeed(Disk, disk)))), (context) => Context.get(context, Snapshots))
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const snapshots = yield* open(nodeDisk)
      yield* writeSnapshotFrom(snapshots, meta, (sink) => sink.write(new Uint8Array(1000).fill(7)))
    })))
    // What a kill -9 leaves: the next snapshot's temporary file (named as `create` names its
    // first one) and an incoming transfer without its manifest.
    const next = { ...meta, index: 50 }
    const tmpName = `${snapshotFileName(next.index, next.term)}.0.tmp`
    fs.writeFileSync(path.join(snapshotsDir, tmpName), new Uint8Array(4 * 1024 * 1024))
    fs.writeFileSync(path.join(snapshotsDir, "incoming-00000000000000000060-00000000000000000003.part"), new Uint8Array(2 * 1024 * 1024))
    const { disk, unlinks } = recordingDisk()
    const result = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const snapshots = yield* open(disk)
      const atOpen = { unlinks: [...unlinks], names: fs.readdirSync(snapshotsDir).sort() }
      expect(atOpen.unlinks).toEqual([])
      const latest = yield* snapshots.latest
      // The same snapshot taken again (its temporary file named as the leftover was) commits.
      yield* writeSnapshotFrom(snapshots, next, (sink) => sink.write(new Uint8Array(500).fill(9)))
      const unlinksBeforeRemoval = unlinks.length
      yield* snapshots.removeLeftovers
      return { atOpen, latest, listed: yield* snapshots.list, removed: unlinks.slice(unlinksBeforeRemoval), names: fs.readdirSync(snapshotsDir).sort() }
    })))
    expect(result.atOpen.unlinks).toEqual([])
    expect(result.atOpen.names.filter((name) => name.endsWith(".tmp") || name.endsWith(".part"))).toEqual([])
    expect(result.latest?.index).toBe(42)
    expect(result.listed).toEqual([{ index: 50, term: 2 }])
    expect(result.removed.map((u) => ({ bytes: u.bytes, pool: u.pool })).sort((a, b) => a.bytes - b.bytes)).toEqual([
      { bytes: 2 * 1024 * 1024, pool: true },
      { bytes: 4 * 1024 * 1024, pool: true }
    ])
    expect(result.names).toEqual([snapshotFileName(50, 2)])
  })
})
