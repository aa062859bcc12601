// The node disk's thread-pool reads and writes (DiskFile.readAsync / writeAsync) and the snapshot
// store's use of them: every chunk of a snapshot taken, received or sent moves off the event
// loop (a synchronous write into the page cache blocked the loop 100–430 ms per 1 MiB chunk
// while the kernel throttled dirty pages: issue 17's write stalls after a bulk load).
import fs from "node:fs"
import path from "node:path"
import { crc32c } from "@node-rs/crc32"
import { Context, Deferred, Effect, Fiber, Layer } from "effect"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../tempDirs.ts"
import type { DiskFile, DiskService } from "../../src/storage/Disk.ts"
import { Disk, nodeDisk, readOffLoop, withFile, writeOffLoop } from "../../src/storage/Disk.ts"
import { SegmentLog, slowSyncAppendMs } from "../../src/storage/SegmentLog.ts"
import { Snapshots, writeSnapshotFrom } from "../../src/storage/Snapshots.ts"
import type { SnapshotMeta } from "../../src/raft/types.ts"

const newDir = tempDirs("tqlite-offloop-")

const meta: SnapshotMeta = { index: 42, term: 2, config: { members: [{ id: 1, address: "a:1", role: "voter" }] } }

/** The node disk, counting the synchronous and the thread-pool reads and writes of its files. */
function countingDisk(): { readonly disk: DiskService; readonly counts: Record<"read" | "write" | "readAsync" | "writeAsync" | "writeDurable" | "sync", number> } {
  const counts = { read: 0, write: 0, readAsync: 0, writeAsync: 0, writeDurable: 0, sync: 0 }
  const wrap = (file: DiskFile): DiskFile => ({
    ...file,
    writeDurable: (position, data) => Effect.zipRight(Effect.sync(() => void counts.writeDurable++), file.writeDurable!(position, data)),
    sync: Effect.zipRight(Effect.sync(() => void counts.sync++), file.sync),
    read: (position, length) => Effect.zipRight(Effect.sync(() => void counts.read++), file.read(position, length)),
    write: (position, data) => Effect.zipRight(Effect.sync(() => void counts.write++), file.write(position, data)),
    readAsync: (position, length) => Effect.zipRight(Effect.sync(() => void counts.readAsync++), file.readAsync!(position, length)),
    writeAsync: (position, data) => Effect.zipRight(Effect.sync(() => void counts.writeAsync++), file.writeAsync!(position, data))
  })
  return { disk: { ...nodeDisk, open: (filePath, mode) => Effect.map(nodeDisk.open(filePath, mode), wrap) }, counts }
}

/** The node disk, recording each unlink: on the thread pool or not. */
function unlinkRecordingDisk(): { readonly disk: DiskService; readonly unlinks: Array<{ readonly file: string; readonly pool: boolean }> } {
  const unlinks: Array<{ readonly file: string; readonly pool: boolean }> = []
  return {
    disk: {
      ...nodeDisk,
      unlink: (file) => Effect.zipRight(Effect.sync(() => void unlinks.push({ file: path.basename(file), pool: false })), nodeDisk.unlink(file)),
      unlinkAsync: (file) => Effect.zipRight(Effect.sync(() => void unlinks.push({ file: path.basename(file), pool: true })), nodeDisk.unlinkAsync!(file))
    },
    unlinks
  }
}

describe("large files deleted off the loop (a 1 GiB unlink held the calling thread ~0.45 s)", () => {
  it("a pruned snapshot and an obsolete log segment are unlinked on the thread pool", async () => {
    const dir = newDir()
    const { disk, unlinks } = unlinkRecordingDisk()
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const snapshots = Context.get(yield* Layer.build(Snapshots.layer({ dir: path.join(dir, "snapshots"), retain: 1 }).pipe(Layer.provide(Layer.succeed(Disk, disk)))), Snapshots)
      yield* writeSnapshotFrom(snapshots, meta, (sink) => sink.write(new Uint8Array(1000)))
      yield* writeSnapshotFrom(snapshots, { ...meta, index: 50 }, (sink) => sink.write(new Uint8Array(1000)))
      const log = yield* SegmentLog.open({ dir: path.join(dir, "log"), clusterId: "c", segmentBytesMax: 4096 })
      for (let index = 1; index <= 40; index++) yield* log.persist([{ entries: [{ kind: "command", term: 1, index, data: new Uint8Array(500) }] }])
      yield* log.persist([{ entries: [], compactUpTo: { index: 35, term: 1 } }])
      // The log's remover unlinks them in the background, woken by that persist.
      for (let i = 0; i < 200 && !unlinks.some((u) => u.file.endsWith(".seg")); i++) yield* Effect.sleep("10 millis")
    }).pipe(Effect.provideService(Disk, disk))))
    const pruned = unlinks.filter((u) => u.file.startsWith("snapshot-"))
    const segments = unlinks.filter((u) => u.file.endsWith(".seg"))
    expect(pruned).toEqual([{ file: expect.stringMatching(/^snapshot-0+42-/), pool: true }])
    expect(segments.length).toBeGreaterThanOrEqual(1)
    expect(segments.every((u) => u.pool)).toBe(true)
  })
})

describe("thread-pool reads and writes", () => {
  it("write and read the same bytes as the synchronous calls, short at the end of the file", async () => {
    const file = path.join(newDir(), "f")
    const data = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 7) & 0xff)
    const back = await Effect.runPromise(withFile(nodeDisk, file, "write", (handle) =>
      Effect.gen(function*() {
        yield* writeOffLoop(handle, 5, data)
        const whole = yield* readOffLoop(handle, 5, data.byteLength)
        const past = yield* readOffLoop(handle, 5 + data.byteLength - 10, 100)
        const sync = yield* handle.read(0, 5 + data.byteLength)
        return { whole, past, sync }
      })))
    expect(Buffer.compare(back.whole, data)).toBe(0)
    expect(Buffer.compare(back.past, data.subarray(data.byteLength - 10))).toBe(0)
    expect(Buffer.compare(back.sync.subarray(5), data)).toBe(0)
    expect(fs.statSync(file).size).toBe(5 + data.byteLength)
  })

  it("carry every chunk of a snapshot written to and read from the store", async () => {
    const dir = newDir()
    const { disk, counts } = countingDisk()
    const chunk = 64 * 1024
    const bytes = new Uint8Array(10 * chunk + 99).map((_, i) => (i * 13) & 0xff)
    const read = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const snapshots = Context.get(yield* Layer.build(Snapshots.layer({ dir, chunkBytesMax: chunk }).pipe(Layer.provide(Layer.succeed(Disk, disk)))), Snapshots)
      yield* writeSnapshotFrom(snapshots, meta, (sink) => sink.write(bytes))
      const writes = counts.writeAsync
      const source = yield* snapshots.source(meta)
      const parts: Array<Uint8Array> = []
      for (let at = 0; at < source.sizeBytes;) {
        const data = yield* source.read(at, chunk)
        parts.push(data)
        at += data.byteLength
      }
      return { writes, reads: counts.readAsync, back: Buffer.concat(parts) }
    })))
    // 11 data chunks through the pool; the header and trailer are small synchronous writes.
    expect(read.writes).toBe(11)
    expect(read.reads).toBe(11)
    expect(Buffer.compare(read.back, bytes)).toBe(0)
  })

  it("carry the log's large appends (small ones: written and synced in one pool call), which read back the same", async () => {
    const dir = newDir()
    const { disk, counts } = countingDisk()
    const large = new Uint8Array(3 * 1024 * 1024).map((_, i) => (i * 31) & 0xff)
    const back = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const log = yield* SegmentLog.open({ dir, clusterId: "c" })
      const writesBefore = counts.write
      const asyncBefore = counts.writeAsync
      const durableBefore = counts.writeDurable
      yield* log.persist([{ hardState: { term: 1, vote: 1, commit: 0 }, entries: [{ kind: "command", term: 1, index: 1, data: new Uint8Array([1, 2, 3]) }] }])
      yield* log.persist([{ entries: [{ kind: "command", term: 1, index: 2, data: large }] }])
      const appends = { sync: counts.write - writesBefore, pool: counts.writeAsync - asyncBefore, durable: counts.writeDurable - durableBefore }
      return { appends, entries: yield* log.read(1, 2) }
    }).pipe(Effect.provideService(Disk, disk))))
    // A large record (header and 1 MiB slices) went through the pool; the small group was one
    // durable write on the pool (the hot path), nothing written on the event loop.
    expect(back.appends.pool).toBe(4)
    expect(back.appends.durable).toBe(1)
    expect(back.appends.sync).toBe(0)
    expect(back.entries.map((e) => e.index)).toEqual([1, 2])
    const second = back.entries[1]!
    expect(second.kind === "command" && Buffer.compare(second.data, large)).toBe(0)
  })

  it("after a small synchronous append was throttled, the next small ones go to the pool for a while", async () => {
    // Small groups are synchronous writes only right after a segment roll now (else one durable
    // pool call each): 3,000-byte entries in segments of at most 4,096 bytes roll before each one.
    const dir = newDir()
    const { disk, counts } = countingDisk()
    // The kernel's throttling, as a synchronous write of the log's segment that takes 40 ms.
    let throttled = false
    const slowDisk: DiskService = {
      ...disk,
      open: (filePath, mode) =>
        Effect.map(disk.open(filePath, mode), (file): DiskFile => ({
          ...file,
          write: (position, data) =>
            Effect.zipRight(Effect.sync(() => {
              if (!throttled || !filePath.endsWith(".seg")) return
              const until = performance.now() + slowSyncAppendMs * 2
              while (performance.now() < until) { /* held, as in balance_dirty_pages */ }
            }), file.write(position, data))
        }))
    }
    const entry = (index: number) => ({ kind: "command" as const, term: 1, index, data: new Uint8Array(3000).fill(index) })
    const appends = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const log = yield* SegmentLog.open({ dir, clusterId: "c", segmentBytesMax: 4096 })
      const before = () => ({ sync: counts.write, pool: counts.writeAsync })
      const delta = (from: { sync: number; pool: number }) => ({ sync: counts.write - from.sync, pool: counts.writeAsync - from.pool })
      // The first entry fills the first segment (no roll: one durable pool call).
      yield* log.persist([{ hardState: { term: 1, vote: 1, commit: 0 }, entries: [entry(1)] }])
      let at = before()
      yield* log.persist([{ entries: [entry(2)] }])
      const quiet = delta(at)
      throttled = true
      at = before()
      yield* log.persist([{ entries: [entry(3)] }])
      const slow = delta(at)
      throttled = false
      at = before()
      yield* log.persist([{ entries: [entry(4)] }])
      yield* log.persist([{ entries: [entry(5)] }])
      const after = delta(at)
      const entries = yield* log.read(1, 5)
      return { quiet, slow, after, indexes: entries.map((e) => e.index) }
    }).pipe(Effect.provideService(Disk, slowDisk))))
    expect(appends.quiet).toEqual({ sync: 1, pool: 0 })
    // The throttled append itself was synchronous; the next ones (within offLoopAfterSlowAppendMs)
    // went to the pool, and the log reads back whole.
    expect(appends.slow).toEqual({ sync: 1, pool: 0 })
    expect(appends.after).toEqual({ sync: 0, pool: 2 })
    expect(appends.indexes).toEqual([1, 2, 3, 4, 5])
  })

  it("write a small group and make it durable in one thread-pool call, through an O_DSYNC descriptor, no fdatasync", async () => {
    const dir = newDir()
    const { disk, counts } = countingDisk()
    const entry = (index: number) => ({ kind: "command" as const, term: 1, index, data: new Uint8Array(300).fill(index) })
    const result = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const log = yield* SegmentLog.open({ dir, clusterId: "c" })
      const before = { ...counts }
      yield* log.persist([{ hardState: { term: 1, vote: 1, commit: 0 }, entries: [entry(1), entry(2)] }])
      yield* log.persist([{ entries: [entry(3)] }, { hardState: { term: 1, vote: 1, commit: 2 }, entries: [entry(4)] }])
      const delta = { write: counts.write - before.write, writeAsync: counts.writeAsync - before.writeAsync, writeDurable: counts.writeDurable - before.writeDurable, sync: counts.sync - before.sync }
      // The descriptors open on the segment: one of them was opened with O_DSYNC (octal 010000).
      const flags: Array<number> = []
      for (const fd of fs.readdirSync("/proc/self/fd")) {
        let target = ""
        try {
          target = fs.readlinkSync(`/proc/self/fd/${fd}`)
        } catch {
          continue
        }
        if (!target.endsWith(".seg")) continue
        const line = fs.readFileSync(`/proc/self/fdinfo/${fd}`, "utf8").split("\n").find((l) => l.startsWith("flags:"))!
        flags.push(Number.parseInt(line.split(/\s+/)[1]!, 8))
      }
      const entries = yield* log.read(1, 4)
      return { delta, dsync: flags.filter((f) => (f & fs.constants.O_DSYNC) !== 0).length, entries: entries.map((e) => e.index) }
    }).pipe(Effect.provideService(Disk, disk))))
    expect(result.delta).toEqual({ write: 0, writeAsync: 0, writeDurable: 2, sync: 0 })
    expect(result.dsync).toBe(1)
    expect(result.entries).toEqual([1, 2, 3, 4])
    // What was written is what a fresh open recovers.
    const reloaded = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const log = yield* SegmentLog.open({ dir, clusterId: "c" })
      return yield* log.load
    }).pipe(Effect.provideService(Disk, nodeDisk))))
    expect(reloaded.entries.map((e) => e.index)).toEqual([1, 2, 3, 4])
    expect(reloaded.hardState).toEqual({ term: 1, vote: 1, commit: 2 })
  })

  it("a receiver goes on writing while the incoming file's fdatasync runs; one sync at a time", async () => {
    const dir = newDir()
    const chunk = 64 * 1024
    const data = new Uint8Array(6 * chunk).map((_, i) => (i * 11) & 0xff)
    const result = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      // The incoming file's fdatasyncs wait for the gate once it is armed.
      const gate = yield* Deferred.make<void>()
      let armed = false
      let syncsWaiting = 0
      const gated = (file: DiskFile): DiskFile =>
        file.path.endsWith(".part")
          ? { ...file, sync: Effect.suspend(() => (armed ? Effect.zipRight(Effect.sync(() => void syncsWaiting++), Effect.zipRight(Deferred.await(gate), file.sync)) : file.sync)) }
          : file
      const disk: DiskService = { ...nodeDisk, open: (filePath, mode) => Effect.map(nodeDisk.open(filePath, mode), gated) }
      const store = Context.get(yield* Layer.build(Snapshots.layer({ dir, chunkBytesMax: chunk, incomingSyncBytes: 2 * chunk }).pipe(Layer.provide(Layer.succeed(Disk, disk)))), Snapshots)
      const transfer = yield* store.inbox.receive({ ...meta, index: 77 }, data.byteLength, crc32c(data))
      armed = true
      const write = (n: number) => transfer.writeAt(n * chunk, data.subarray(n * chunk, (n + 1) * chunk))
      yield* write(0)
      yield* write(1) // 2 chunks: a sync starts, and waits at the gate
      yield* write(2) // not held by it
      const held = yield* Effect.fork(write(3)) // 2 more: the next sync waits for the first
      // The first sync reaches the gate once its write-behind flush ends on the pool: waited for
      // (bounded), not assumed within a fixed sleep (under load it took longer than 50 ms).
      for (let i = 0; i < 500 && syncsWaiting === 0; i++) yield* Effect.sleep("10 millis")
      yield* Effect.sleep("50 millis")
      const heldWhileGated = (yield* Fiber.poll(held))._tag === "None"
      const waitingWhileGated = syncsWaiting
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(held)
      yield* write(4)
      yield* write(5)
      const source = yield* transfer.finish
      const back: Array<Uint8Array> = []
      for (let at = 0; at < source.sizeBytes;) {
        const part = yield* source.read(at, chunk)
        back.push(part)
        at += part.byteLength
      }
      return { heldWhileGated, waitingWhileGated, back: Buffer.concat(back) }
    })))
    expect(result.waitingWhileGated).toBe(1)
    expect(result.heldWhileGated).toBe(true)
    expect(Buffer.compare(result.back, data)).toBe(0)
  })
})
