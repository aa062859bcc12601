// LogStore `read`: entries read back from the segment files (the Raft driver's read-backs of
// entries its core evicted from memory) are exactly the live entries of the log — after any
// sequence of appends, truncations, compactions and snapshot installs, across segment rolls and
// restarts, and after a full-disk persist was undone. The offset index behind it is proven by
// comparing every read with the in-memory model, and by a mutation: a store whose index points
// one record off is caught (LogCorrupted, never a wrong entry).
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import type { Entry } from "../../src/raft/types.ts"
import { Disk } from "../../src/storage/Disk.ts"
import type { DiskService } from "../../src/storage/Disk.ts"
import { DiskFull } from "../../src/storage/errors.ts"
import type { LogStoreService, PersistBatch } from "../../src/storage/LogStore.ts"
import { makeMemoryLogStore } from "../../src/storage/LogStore.ts"
import { makeSimDisk } from "../sim/SimDisk.ts"
import { command, generateWorkload, openLog, quiet, testLogOptions } from "./workload.ts"

/** Reads the whole live log in chunks of `chunk` entries and compares it with the model's. */
const expectReadsMatch = (store: LogStoreService, model: LogStoreService, chunk: number) =>
  Effect.gen(function*() {
    const expected = (yield* model.load).entries
    const first = expected[0]?.index ?? 1
    const last = first + expected.length - 1
    const read: Array<Entry> = []
    for (let lo = first; lo <= last; lo += chunk) read.push(...(yield* store.read(lo, Math.min(last, lo + chunk - 1))))
    expect(read.map(describeEntry)).toEqual(expected.map(describeEntry))
    const recovered = yield* model.load
    // Below the base and beyond the end: EntriesUnavailable, not an empty answer.
    const below = yield* Effect.exit(store.read(recovered.base.index, recovered.base.index))
    expect(Exit.isFailure(below) && below.cause._tag === "Fail" && below.cause.error._tag).toBe("EntriesUnavailable")
    const beyond = yield* Effect.exit(store.read(last + 1, last + 1))
    expect(Exit.isFailure(beyond) && beyond.cause._tag === "Fail" && beyond.cause.error._tag).toBe("EntriesUnavailable")
  })

const describeEntry = (e: Entry) =>
  e.kind === "command" ? `${e.index}/${e.term}/${Buffer.from(e.data).toString("hex")}` : e.kind === "config" ? `${e.index}/${e.term}/config/${e.config.members.length}` : `${e.index}/${e.term}/barrier`

describe("SegmentLog read", () => {
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    it.effect(`seed ${seed}: reads after every call of a random workload match the model, and after a restart`, () =>
      Effect.gen(function*() {
        const sim = makeSimDisk({ seed })
        const model = makeMemoryLogStore()
        const calls = generateWorkload({ seed, calls: 60 })
        yield* Effect.scoped(Effect.gen(function*() {
          const store = yield* openLog(sim.layer)
          for (const call of calls) {
            yield* store.persist(call)
            yield* model.persist(call)
            yield* expectReadsMatch(store, model, 1 + (seed % 5))
          }
        }))
        yield* Effect.scoped(Effect.gen(function*() {
          const store = yield* openLog(sim.layer)
          yield* expectReadsMatch(store, model, 7)
        }))
      }))
  }

  it.effect("after a full-disk persist was undone, reads see the durable log, then the retried one", () =>
    Effect.gen(function*() {
      const sim = makeSimDisk({ seed: 9 })
      let full = false
      const service: DiskService = {
        ...sim.service,
        open: (path, mode) =>
          Effect.map(sim.service.open(path, mode), (file) => ({
            ...file,
            write: (position, data) =>
              full
                ? Effect.zipRight(file.write(position, data.subarray(0, data.byteLength >> 1)), Effect.fail(new DiskFull({ op: "write", path, cause: null })))
                : file.write(position, data)
          }))
      }
      const layer = Layer.succeed(Disk, service)
      const batch = (from: number, to: number, term: number): PersistBatch => ({ entries: Array.from({ length: to - from + 1 }, (_, i) => command(from + i, term, 300)) })
      const model = makeMemoryLogStore()
      yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* openLog(layer)
        yield* store.persist([batch(1, 10, 1)])
        yield* model.persist([batch(1, 10, 1)])
        full = true
        // A truncation and new entries across segment rolls, torn by the full disk.
        const failing: ReadonlyArray<PersistBatch> = [{ truncateFrom: 6, entries: batch(6, 30, 2).entries }]
        const failed = yield* Effect.exit(store.persist(failing))
        expect(Exit.isFailure(failed)).toBe(true)
        const broken = yield* Effect.exit(store.read(1, 3))
        expect(Exit.isFailure(broken) && broken.cause._tag === "Fail" && broken.cause.error._tag).toBe("LogStoreBroken")
        yield* quiet(store.recover)
        yield* expectReadsMatch(store, model, 4)
        full = false
        yield* store.persist(failing)
        yield* model.persist(failing)
        yield* expectReadsMatch(store, model, 4)
      }))
    }))

  it.effect("mutation: an offset index one record off is caught as LogCorrupted, not served", () =>
    Effect.gen(function*() {
      const sim = makeSimDisk({ seed: 11 })
      const entries = Array.from({ length: 5 }, (_, i) => command(i + 1, 1, 100))
      yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* openLog(sim.layer)
        yield* store.persist([{ entries }])
        expect((yield* store.read(2, 3)).map((e) => e.index)).toEqual([2, 3])
      }))
      // The same files, read through an index shifted by one record (what a bug in the index's
      // bookkeeping would do): the record's own header (index, term, checksum) refuses it.
      yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* openLog(sim.layer, { ...testLogOptions(), bugs: { readOneRecordOff: true } })
        const read = yield* Effect.exit(store.read(2, 3))
        expect(Exit.isFailure(read) && read.cause._tag === "Fail" && read.cause.error._tag).toBe("LogCorrupted")
      }))
    }))
})
