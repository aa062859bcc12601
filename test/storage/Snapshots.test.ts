import { describe, expect, it } from "@effect/vitest"
import { crc32c } from "@node-rs/crc32"
import { Chunk, Effect, Layer, Stream } from "effect"
import type { SnapshotMeta } from "../../src/raft/types.ts"
import { Disk } from "../../src/storage/Disk.ts"
import type { DiskFile, DiskService } from "../../src/storage/Disk.ts"
import { Snapshots, snapshotFileName } from "../../src/storage/Snapshots.ts"
import type { SnapshotsService } from "../../src/storage/Snapshots.ts"
import { makeSimDisk } from "../sim/SimDisk.ts"
import type { CrashMode, SimDisk } from "../sim/SimDisk.ts"
import { membership, payloadFor } from "./workload.ts"

const dir = "/data/snapshots"
const chunkBytesMax = 1000
const meta = (index: number, term = 1): SnapshotMeta => ({ index, term, config: membership })

/** Small, so that the crash sweeps below also cross the background syncs of a snapshot taken. */
const takeSyncBytes = 2000

const openStore = (sim: SimDisk) =>
  Effect.provide(Snapshots, Snapshots.layer({ dir, chunkBytesMax, takeSyncBytes }).pipe(Layer.provide(sim.layer)))

/** Writes a snapshot of `size` bytes of payloadFor(index, term) in chunks and commits it. */
const writeSnapshot = (store: SnapshotsService, m: SnapshotMeta, size: number) =>
  Effect.scoped(Effect.gen(function* () {
    const data = payloadFor(m.index, m.term, size)
    const writer = yield* store.create(m)
    for (let offset = 0; offset < size; offset += chunkBytesMax) {
      yield* writer.write(data.subarray(offset, Math.min(size, offset + chunkBytesMax)))
    }
    yield* writer.commit()
  }))

const readAll = (store: SnapshotsService, m: { index: number; term: number }) =>
  Effect.scoped(Effect.gen(function* () {
    const reader = yield* store.open(m)
    yield* reader.verify
    const chunks = yield* Stream.runCollect(reader.chunks())
    const out = new Uint8Array(reader.sizeBytes)
    for (const chunk of chunks) {
      expect(chunk.data.byteLength).toBeLessThanOrEqual(chunkBytesMax)
      out.set(chunk.data, chunk.offset)
    }
    return out
  }))

describe("Snapshots", () => {
  it.effect("write in chunks, commit, find as latest, read back in chunks by offset", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 1 })
      const store = yield* openStore(sim)
      expect(yield* store.latest).toBeNull()
      yield* writeSnapshot(store, meta(100, 2), 4500)
      expect(yield* store.latest).toEqual(meta(100, 2))
      expect(yield* readAll(store, meta(100, 2))).toEqual(payloadFor(100, 2, 4500))
      yield* Effect.scoped(Effect.gen(function* () {
        const reader = yield* store.open(meta(100, 2))
        expect(reader.sizeBytes).toBe(4500)
        expect((yield* reader.read(4000)).byteLength).toBe(500)
        expect(yield* reader.read(1234, 10)).toEqual(payloadFor(100, 2, 4500).subarray(1234, 1244))
        expect((yield* reader.read(4500)).byteLength).toBe(0)
        const resumed = yield* Stream.runCollect(reader.chunks(3000))
        expect(Chunk.toReadonlyArray(resumed).map((c) => c.offset)).toEqual([3000, 4000])
      }))
    }))

  it.effect("an empty snapshot", () =>
    Effect.gen(function* () {
      const store = yield* openStore(makeSimDisk({ seed: 2 }))
      yield* writeSnapshot(store, meta(5), 0)
      expect(yield* readAll(store, meta(5))).toEqual(new Uint8Array(0))
    }))

  it.effect("nothing is visible before commit; an abandoned writer leaves no file", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 3 })
      const store = yield* openStore(sim)
      yield* Effect.scoped(Effect.gen(function* () {
        const writer = yield* store.create(meta(7))
        yield* writer.write(new Uint8Array(10))
        expect(yield* store.latest).toBeNull()
      }))
      expect(sim.driver.list(dir)).toEqual([])
      expect((yield* Effect.flip(Effect.scoped(store.open(meta(7)))))._tag).toBe("SnapshotMissing")
    }))

  it.effect("old snapshots are pruned to the bound", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 4 })
      const store = yield* openStore(sim)
      for (const index of [10, 20, 30, 40]) yield* writeSnapshot(store, meta(index), 100)
      expect(sim.driver.list(dir)).toEqual([snapshotFileName(30, 1), snapshotFileName(40, 1)])
      expect(yield* store.list).toEqual([{ index: 30, term: 1 }, { index: 40, term: 1 }])
    }))

  it.effect("writeAt resumes a transfer: repeats are ignored, gaps write nothing, the offset tells the sender where to go on", () =>
    Effect.gen(function* () {
      const store = yield* openStore(makeSimDisk({ seed: 5 }))
      const data = payloadFor(9, 9, 2500)
      yield* Effect.scoped(Effect.gen(function* () {
        const writer = yield* store.create(meta(9, 9))
        expect(yield* writer.writeAt(0, data.subarray(0, 1000))).toBe(1000)
        expect(yield* writer.writeAt(2000, data.subarray(2000, 2500))).toBe(1000) // a gap
        expect(yield* writer.writeAt(0, data.subarray(0, 1000))).toBe(1000) // a repeat
        expect(yield* writer.writeAt(500, data.subarray(500, 1500))).toBe(1500) // an overlap
        expect(yield* writer.writeAt(1500, data.subarray(1500, 2500))).toBe(2500)
        yield* writer.commit({ sizeBytes: 2500, crc32c: crc32c(data) })
      }))
      expect(yield* readAll(store, meta(9, 9))).toEqual(data)
    }))

  it.effect("a snapshot being taken is synced in the background, one sync at a time: its unsynced bytes stay bounded", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 8 })
      // Around the simulator's disk: per snapshot file, bytes written, bytes a finished sync
      // covers (those written before it started), syncs running; each sync takes a few turns of
      // the scheduler, so a writer that does not wait for it runs ahead.
      let written = 0
      let covered = 0
      let dirtyMax = 0
      let running = 0
      let runningMax = 0
      let syncs = 0
      const watched = (file: DiskFile): DiskFile => ({
        ...file,
        write: (position, data) =>
          Effect.tap(file.write(position, data), () => {
            written = Math.max(written, position + data.byteLength)
            dirtyMax = Math.max(dirtyMax, written - covered)
          }),
        sync: Effect.suspend(() => {
          const upTo = written
          running++
          syncs++
          runningMax = Math.max(runningMax, running)
          return Effect.zipRight(Effect.repeatN(Effect.yieldNow(), 5), file.sync).pipe(
            Effect.tap(() => void (covered = Math.max(covered, upTo))),
            Effect.ensuring(Effect.sync(() => void running--))
          )
        })
      })
      const disk: DiskService = {
        ...sim.service,
        open: (path, mode) => Effect.map(sim.service.open(path, mode), (f) => (path.endsWith(".tmp") ? watched(f) : f))
      }
      const size = 40 * chunkBytesMax
      const store = yield* Effect.provide(Snapshots, Snapshots.layer({ dir, chunkBytesMax, takeSyncBytes }).pipe(Layer.provide(Layer.succeed(Disk, disk))))
      yield* writeSnapshot(store, meta(12), size)
      expect(yield* readAll(store, meta(12))).toEqual(payloadFor(12, 1, size))
      // Without the background syncs the whole snapshot (40,000 bytes) would be dirty until the
      // commit's sync; with them, at most the bytes since the previous sync started plus one chunk.
      expect(dirtyMax).toBeLessThanOrEqual(2 * takeSyncBytes + chunkBytesMax)
      expect(syncs).toBeGreaterThanOrEqual(size / takeSyncBytes)
      expect(runningMax).toBe(1)
    }))

  it.effect("commit refuses data that does not match the sender's size and checksum", () =>
    Effect.gen(function* () {
      const store = yield* openStore(makeSimDisk({ seed: 6 }))
      const error = yield* Effect.flip(Effect.scoped(Effect.gen(function* () {
        const writer = yield* store.create(meta(3))
        yield* writer.write(new Uint8Array(100))
        yield* writer.commit({ sizeBytes: 100, crc32c: 12345 })
      })))
      expect(error._tag).toBe("SnapshotCorrupted")
      expect(yield* store.latest).toBeNull()
    }))

  it.effect("damage is reported: header at open, data at verify", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 7 })
      const store = yield* openStore(sim)
      yield* writeSnapshot(store, meta(11), 3000)
      const file = `${dir}/${snapshotFileName(11, 1)}`
      sim.driver.flipBit(file, 1000)
      const verify = yield* Effect.flip(Effect.scoped(Effect.flatMap(store.open(meta(11)), (r) => r.verify)))
      expect(verify).toMatchObject({ _tag: "SnapshotCorrupted", reason: "data checksum mismatch" })
      sim.driver.flipBit(file, 1000)
      sim.driver.flipBit(file, 20)
      expect(yield* Effect.flip(store.latest)).toMatchObject({ _tag: "SnapshotCorrupted", file })
    }))
})

describe("Snapshots crash at every point", () => {
  const sizes = [2500, 0, 3100, 1000, 4200]
  const metas = sizes.map((_, i) => meta(100 * (i + 1), i + 1))

  const run = (sim: SimDisk) =>
    Effect.gen(function* () {
      let acked = -1
      yield* Effect.exit(Effect.gen(function* () {
        const store = yield* openStore(sim)
        acked = 0
        for (let i = 0; i < metas.length; i++) {
          yield* writeSnapshot(store, metas[i]!, sizes[i]!)
          acked++
        }
      }))
      return acked
    })

  for (const mode of ["lose", "prefix", "sectors"] as const satisfies ReadonlyArray<CrashMode>) {
    it.effect(`crash mode "${mode}": the latest snapshot is the last committed or the one in flight, and intact`, () =>
      Effect.gen(function* () {
        const dry = makeSimDisk({ seed: 0 })
        expect(yield* run(dry)).toBe(metas.length)
        const totalOps = dry.driver.ops()
        for (let n = 0; n < totalOps; n++) {
          const sim = makeSimDisk({ seed: n })
          sim.driver.crashAtOp(n, mode)
          const acked = yield* run(sim)
          expect(sim.driver.isCrashed()).toBe(true)
          sim.driver.restart()
          const store = yield* openStore(sim)
          const latest = yield* store.latest
          const allowed = [acked > 0 ? metas[acked - 1]! : null, acked >= 0 ? metas[acked] ?? null : null]
          if (!allowed.some((m) => JSON.stringify(m) === JSON.stringify(latest))) {
            expect.fail(`op ${n}: latest ${JSON.stringify(latest)} after ${acked} commits`)
          }
          // every snapshot still there is complete and right
          for (const m of yield* store.list) {
            const i = metas.findIndex((x) => x.index === m.index)
            expect(yield* readAll(store, m)).toEqual(payloadFor(m.index, m.term, sizes[i]!))
          }
          // and the store goes on
          yield* writeSnapshot(store, meta(9000, 9), 1500)
          expect(yield* store.latest).toEqual(meta(9000, 9))
        }
      }), 60_000)
  }
})

describe("Snapshots receiving, crash at every point", () => {
  const old = meta(100, 1)
  const incoming = meta(500, 2)
  const size = 7300
  const data = payloadFor(incoming.index, incoming.term, size)
  const openReceiving = (sim: SimDisk) => Effect.provide(Snapshots, Snapshots.layer({ dir, chunkBytesMax, incomingSyncBytes: 2 * chunkBytesMax }).pipe(Layer.provide(sim.layer)))

  /** Receives `incoming` from where the store's file is, finishes and adopts it. */
  const receive = (store: SnapshotsService) =>
    Effect.gen(function* () {
      const transfer = yield* store.inbox.receive(incoming, size, crc32c(data))
      let offset = yield* transfer.offset
      const resumedAt = offset
      while (offset < size) offset = yield* transfer.writeAt(offset, data.subarray(offset, Math.min(size, offset + chunkBytesMax)))
      yield* transfer.finish
      yield* store.adopt(incoming)
      return resumedAt
    })

  const run = (sim: SimDisk) =>
    Effect.gen(function* () {
      const store = yield* openReceiving(sim)
      yield* writeSnapshot(store, old, 2500)
      const before = sim.driver.ops()
      yield* Effect.exit(receive(store))
      return before
    })

  for (const mode of ["lose", "prefix", "sectors"] as const satisfies ReadonlyArray<CrashMode>) {
    it.effect(`crash mode "${mode}": the latest snapshot is the old one or the received one, intact; receiving again resumes and completes`, () =>
      Effect.gen(function* () {
        const dry = makeSimDisk({ seed: 0 })
        const start = yield* run(dry)
        const totalOps = dry.driver.ops()
        let resumed = 0
        for (let n = start; n < totalOps; n++) {
          const sim = makeSimDisk({ seed: n })
          sim.driver.crashAtOp(n, mode)
          yield* run(sim)
          expect(sim.driver.isCrashed()).toBe(true)
          sim.driver.restart()
          const store = yield* openReceiving(sim)
          const latest = yield* store.latest
          if (!(JSON.stringify(latest) === JSON.stringify(old) || JSON.stringify(latest) === JSON.stringify(incoming))) {
            expect.fail(`op ${n}: latest ${JSON.stringify(latest)}`)
          }
          for (const m of yield* store.list) {
            const expected = m.index === old.index ? payloadFor(old.index, old.term, 2500) : data
            expect(yield* readAll(store, m)).toEqual(expected)
          }
          if (latest?.index === incoming.index) continue
          // The leader offers it again: the store resumes from what survived, and completes.
          const resumedAt = yield* receive(store)
          if (resumedAt > 0) resumed++
          expect(yield* store.latest).toEqual(incoming)
          expect(yield* readAll(store, incoming)).toEqual(data)
        }
        // Some crashes left a durable prefix that the next transfer did not receive again.
        expect(resumed).toBeGreaterThan(0)
      }), 60_000)
  }
})
