// Writes behind the receive loop (src/storage/writeBehind.ts): a received snapshot's bytes are
// copied into a bounded set of buffers and written on the pool while the loop reads on; every
// fdatasync and close waits for the writes issued before it (issue 17: a receiver spent most of
// its time waiting for each 1 MiB pwrite while the disk was busy).
import path from "node:path"
import { crc32c } from "@node-rs/crc32"
import { Context, Effect, Fiber, Layer } from "effect"
import { unpack } from "msgpackr"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../tempDirs.ts"
import type { DiskFile, DiskService } from "../../src/storage/Disk.ts"
import { Disk, nodeDisk } from "../../src/storage/Disk.ts"
import { DiskError } from "../../src/storage/errors.ts"
import { Snapshots } from "../../src/storage/Snapshots.ts"
import { WriteBehind } from "../../src/storage/writeBehind.ts"
import type { SnapshotMeta } from "../../src/raft/types.ts"

const newDir = tempDirs("tqlite-writebehind-")

const meta: SnapshotMeta = { index: 7, term: 1, config: { members: [{ id: 1, address: "a:1", role: "voter" }] } }

/** A file in memory whose thread-pool writes end only when the test lets them (`release`), and
 * which records when each write ended and each sync ran. */
function gatedFile(failAt: number | null = null) {
  const bytes = new Uint8Array(1 << 16)
  const waiting: Array<() => void> = []
  const events: Array<string> = []
  let issued = 0
  const file: DiskFile = {
    path: "gated",
    read: (position, length) => Effect.succeed(bytes.slice(position, position + length)),
    write: (position, data) => Effect.sync(() => void bytes.set(data, position)),
    writeAsync: (position, data) =>
      Effect.gen(function*() {
        const n = issued++
        yield* Effect.async<void>((resume) => void waiting.push(() => resume(Effect.void)))
        if (n === failAt) return yield* new DiskError({ op: "write", path: "gated", code: "EIO", cause: "injected" })
        bytes.set(data, position)
        events.push(`wrote ${position}`)
      }),
    size: Effect.succeed(bytes.byteLength),
    truncate: () => Effect.void,
    sync: Effect.sync(() => void events.push("sync")),
    close: Effect.void
  }
  return { file, bytes, events, release: () => waiting.splice(0).forEach((go) => go()), waitingCount: () => waiting.length }
}

const settle = Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 5)))

describe("WriteBehind", () => {
  it("a write returns before the disk took it, at most buffersMax are queued and one is on the disk at a time, the caller's bytes are its own again at once, flush waits for all", async () => {
    await Effect.runPromise(Effect.gen(function*() {
      const gated = gatedFile()
      const writes = new WriteBehind(16, 3)
      const data = new Uint8Array(16)
      for (let i = 0; i < 3; i++) {
        data.fill(i + 1)
        yield* writes.write(gated.file, i * 16, data)
      }
      data.fill(99) // reused by the caller: the queued writes hold copies
      yield* settle
      expect(writes.inFlight).toBe(3)
      expect(gated.waitingCount()).toBe(1)
      // The fourth waits for a buffer.
      const fourth = yield* Effect.fork(writes.write(gated.file, 48, new Uint8Array(16).fill(4)))
      yield* settle
      expect(fourth.unsafePoll()).toBeNull()
      gated.release()
      yield* Fiber.join(fourth)
      const flushed = yield* Effect.fork(writes.flush)
      yield* settle
      expect(flushed.unsafePoll()).toBeNull() // three writes are still queued
      for (let i = 0; i < 3; i++) {
        expect(gated.waitingCount()).toBe(1)
        gated.release()
        yield* settle
      }
      yield* Fiber.join(flushed)
      expect(writes.inFlight).toBe(0)
      for (let i = 0; i < 4; i++) expect([...gated.bytes.subarray(i * 16, i * 16 + 16)]).toEqual(new Array(16).fill(i + 1))
      expect(writes.bytesIssued).toBe(64)
    }))
  })

  it("a failed write fails the next write and the flush", async () => {
    await Effect.runPromise(Effect.gen(function*() {
      const gated = gatedFile(0)
      const writes = new WriteBehind(16, 2)
      yield* writes.write(gated.file, 0, new Uint8Array(16))
      yield* settle
      gated.release()
      yield* settle
      const next = yield* Effect.either(writes.write(gated.file, 16, new Uint8Array(16)))
      expect(next._tag).toBe("Left")
      const flushed = yield* Effect.either(writes.flush)
      expect(flushed._tag).toBe("Left")
    }))
  })
})

describe("a snapshot received through the store", () => {
  it("never records bytes as durable whose writes had not ended when the file was fdatasynced, and arrives intact", async () => {
    const dir = newDir()
    // The node disk with each pool write delayed (a busy device). At each fdatasync of the
    // incoming file: where the first write still queued starts. At each manifest written: the
    // bytes it records as durable, which must lie before that point of the sync before it.
    const pending = new Map<object, number>()
    let dataStart = Infinity
    let lastSyncPendingFrom = -1
    let syncs = 0
    const violations: Array<string> = []
    let manifests = 0
    const slowWrites = (file: DiskFile): DiskFile => ({
      ...file,
      write: (position, data) =>
        Effect.suspend(() => {
          if (file.path.includes("incoming.manifest")) {
            const synced = (unpack(data.subarray(0, data.byteLength - 4)) as { syncedBytes: number }).syncedBytes
            manifests++
            if (synced > 0 && dataStart + synced > lastSyncPendingFrom) violations.push(`manifest says ${synced} bytes durable; a write at ${lastSyncPendingFrom} was queued at the sync`)
          }
          return file.write(position, data)
        }),
      writeAsync: (position, data) =>
        Effect.gen(function*() {
          const token = {}
          if (file.path.endsWith(".part")) {
            dataStart = Math.min(dataStart, position)
            pending.set(token, position)
          }
          yield* Effect.sleep(2)
          yield* file.writeAsync!(position, data)
          pending.delete(token)
        }),
      sync: Effect.suspend(() => {
        if (file.path.endsWith(".part")) {
          syncs++
          lastSyncPendingFrom = Math.min(Infinity, ...pending.values())
        }
        return file.sync
      })
    })
    const disk: DiskService = { ...nodeDisk, open: (filePath, mode) => Effect.map(nodeDisk.open(filePath, mode), slowWrites) }
    const chunk = 64 * 1024
    const size = 40 * chunk + 123
    const data = new Uint8Array(size)
    for (let i = 0; i < size; i++) data[i] = (i * 2654435761) >>> 24
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(Snapshots.layer({ dir, chunkBytesMax: chunk, incomingSyncBytes: 4 * chunk }).pipe(Layer.provide(Layer.succeed(Disk, disk))))
      const store = Context.get(context, Snapshots)
      const incoming = yield* store.inbox.receive(meta, size, crc32c(data))
      let returnedAhead = 0
      for (let at = 0; at < size; at += chunk) {
        yield* incoming.writeAt(at, data.subarray(at, at + chunk))
        if (pending.size > 0) returnedAhead++
      }
      const source = yield* incoming.finish
      // The receive loop ran ahead of the disk (the point of it), and no sync overtook a write.
      expect(returnedAhead).toBeGreaterThan(0)
      expect(syncs).toBeGreaterThan(5)
      expect(manifests).toBeGreaterThan(5)
      expect(violations).toEqual([])
      const back = new Uint8Array(size)
      for (let at = 0; at < size;) {
        const piece = yield* source.read(at, chunk)
        back.set(piece, at)
        at += piece.byteLength
      }
      expect(crc32c(back)).toBe(crc32c(data))
    })))
  })
})
