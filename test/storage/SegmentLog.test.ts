import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, FastCheck } from "effect"
import { AssertionError } from "../../src/assert.ts"
import { decodeRecordAt, recordHeaderBytes, scanSegment } from "../../src/storage/format.ts"
import type { LogStoreService, PersistBatch, Recovered } from "../../src/storage/LogStore.ts"
import { makeMemoryLogStore } from "../../src/storage/LogStore.ts"
import { metadataFileName, segmentFileName } from "../../src/storage/SegmentLog.ts"
import { makeSimDisk } from "../sim/SimDisk.ts"
import { command, diffRecovered, generateWorkload, membership, modelAfter, openLog, reload, testLogOptions } from "./workload.ts"

const dir = "/data/log"
const segmentPath = (seq: number) => `${dir}/${segmentFileName(seq)}`
const segments = (names: ReadonlyArray<string>) => names.filter((n) => n.endsWith(".seg"))

const expectSame = (actual: Recovered, expected: Recovered) => {
  expect(diffRecovered(actual, expected)).toBeNull()
}

const appendRange = (store: LogStoreService, from: number, to: number, term: number, bytes = 200) => {
  const entries = []
  for (let i = from; i <= to; i++) entries.push(command(i, term, bytes))
  return store.persist([{ entries }])
}

describe("SegmentLog format", () => {
  it.effect("a new directory loads as an empty log and is initialised", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 1 })
      const recovered = yield* reload(sim.layer)
      expect(recovered).toEqual({ hardState: { term: 0, vote: null, commit: 0 }, base: { index: 0, term: 0 }, entries: [], snapshot: null })
      expect(sim.driver.list(dir)).toEqual([segmentFileName(1), metadataFileName])
    }))

  it.effect("round trip: every entry kind, hard state and reload", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 2 })
      const batches: ReadonlyArray<PersistBatch> = [
        { hardState: { term: 3, vote: 2, commit: 0 }, entries: [{ kind: "barrier", index: 1, term: 3 }] },
        { entries: [command(2, 3, 0), command(3, 3, 1000), { kind: "config", index: 4, term: 3, config: membership }] },
        { hardState: { term: 3, vote: 2, commit: 4 }, entries: [] }
      ]
      yield* Effect.scoped(Effect.flatMap(openLog(sim.layer), (store) => store.persist(batches)))
      const memory = makeMemoryLogStore()
      yield* memory.persist(batches)
      const expected = yield* memory.load
      expectSame(yield* reload(sim.layer), expected)
      expect((yield* reload(sim.layer)).hardState).toEqual({ term: 3, vote: 2, commit: 4 })
    }))

  it.effect("load inside the same process sees what was persisted", () =>
    Effect.scoped(Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 3 })
      const store = yield* openLog(sim.layer)
      yield* appendRange(store, 1, 50, 1)
      const loaded = yield* store.load
      expect(loaded.entries.map((e) => e.index)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1))
    })))

  it.effect("segments roll at the size bound and closed segments are never written again", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 4 })
      yield* Effect.scoped(Effect.gen(function* () {
        const store = yield* openLog(sim.layer)
        for (let i = 1; i <= 60; i++) yield* appendRange(store, i, i, 1)
        const closed = sim.driver.fileBytes(segmentPath(1))
        expect(closed.byteLength).toBeLessThanOrEqual(4096)
        yield* appendRange(store, 61, 80, 1)
        expect(sim.driver.fileBytes(segmentPath(1))).toEqual(closed)
      }))
      expect(segments(sim.driver.list(dir)).length).toBeGreaterThanOrEqual(4)
      expect((yield* reload(sim.layer)).entries.length).toBe(80)
    }))

  it.effect("one record larger than a segment gets a segment of its own", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 5 })
      yield* Effect.scoped(Effect.gen(function* () {
        const store = yield* openLog(sim.layer)
        yield* appendRange(store, 1, 3, 1, 100)
        yield* appendRange(store, 4, 4, 1, 20_000)
        yield* appendRange(store, 5, 6, 1, 100)
      }))
      const recovered = yield* reload(sim.layer)
      expect(recovered.entries.map((e) => e.index)).toEqual([1, 2, 3, 4, 5, 6])
      expect(segments(sim.driver.list(dir)).length).toBe(3)
    }))

  it.effect("truncation across segment boundaries, then appending, survives reload", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 6 })
      yield* Effect.scoped(Effect.gen(function* () {
        const store = yield* openLog(sim.layer)
        yield* appendRange(store, 1, 100, 1)
        expect(segments(sim.driver.list(dir)).length).toBeGreaterThan(4)
        yield* store.persist([{ hardState: { term: 2, vote: 1, commit: 10 }, truncateFrom: 12, entries: [command(12, 2), command(13, 2)] }])
      }))
      let recovered = yield* reload(sim.layer)
      expect(recovered.entries.length).toBe(13)
      expect(recovered.entries[10]!.term).toBe(1)
      expect(recovered.entries[11]).toEqual(command(12, 2))
      // truncate again, into what was appended after the first truncation, and reload after each
      yield* Effect.scoped(Effect.flatMap(openLog(sim.layer), (store) =>
        store.persist([{ truncateFrom: 13, entries: [command(13, 3, 5)] }])))
      recovered = yield* reload(sim.layer)
      expect(recovered.entries.map((e) => `${e.index}/${e.term}`).slice(-3)).toEqual(["11/1", "12/2", "13/3"])
    }))

  it.effect("prefix removal deletes whole segments below the base, across boundaries, and reloads", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 7 })
      const store0 = makeMemoryLogStore()
      yield* Effect.scoped(Effect.gen(function* () {
        const store = yield* openLog(sim.layer)
        yield* appendRange(store, 1, 100, 1)
        yield* appendRange(store0, 1, 100, 1)
        const before = segments(sim.driver.list(dir))
        yield* store.persist([{ entries: [], compactUpTo: { index: 60, term: 1 } }])
        yield* store0.persist([{ entries: [], compactUpTo: { index: 60, term: 1 } }])
        yield* store.removeLeftovers!
        const after = segments(sim.driver.list(dir))
        expect(after.length).toBeLessThan(before.length)
        // only the oldest ones went, in order
        expect(after).toEqual(before.slice(before.length - after.length))
      }))
      let recovered = yield* reload(sim.layer)
      expect(recovered.base).toEqual({ index: 60, term: 1 })
      expectSame(recovered, yield* store0.load)
      // compact to the very end: everything but the active segment goes
      yield* Effect.scoped(Effect.flatMap(openLog(sim.layer), (store) => Effect.zipRight(store.persist([{ entries: [command(101, 1)], compactUpTo: { index: 101, term: 1 } }]), store.removeLeftovers!)))
      recovered = yield* reload(sim.layer)
      expect(recovered.base).toEqual({ index: 101, term: 1 })
      expect(recovered.entries).toEqual([])
      expect(segments(sim.driver.list(dir)).length).toBe(1)
    }))

  it.effect("a compaction that frees many segments unlinks none inside the persist: the log's remover unlinks them all in the background, oldest first, with no later persist", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 17 })
      yield* Effect.scoped(Effect.gen(function* () {
        const store = yield* openLog(sim.layer)
        yield* appendRange(store, 1, 100, 1)
        const before = segments(sim.driver.list(dir))
        expect(before.length).toBeGreaterThan(5)
        yield* store.persist([{ entries: [], compactUpTo: { index: 95, term: 1 } }])
        // The persist returned with every segment still there (no unlink made it wait)…
        expect(segments(sim.driver.list(dir))).toEqual(before)
        // …and the remover, woken by it, takes them while nothing else is persisted.
        const seen: Array<ReadonlyArray<string>> = []
        for (let i = 0; i < 200; i++) {
          const now = segments(sim.driver.list(dir))
          if (now.length !== seen.at(-1)?.length) seen.push(now)
          yield* Effect.yieldNow()
        }
        const left = segments(sim.driver.list(dir))
        expect(left.length).toBeLessThan(before.length - 3)
        // Oldest first: every state seen on the way was a suffix of the one before.
        for (const state of [...seen, left]) expect(state).toEqual(before.slice(before.length - state.length))
        // What is left holds every live entry.
        expect((yield* store.read(96, 100)).map((e) => e.index)).toEqual([96, 97, 98, 99, 100])
      }))
      // None obsolete is left: an open finds the same set and nothing to skip.
      const kept = segments(sim.driver.list(dir))
      const recovered = yield* reload(sim.layer)
      expect(recovered.base).toEqual({ index: 95, term: 1 })
      expect(segments(sim.driver.list(dir))).toEqual(kept)
    }))

  it.effect("an installed snapshot resets the log", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 8 })
      const snapshot = { index: 500, term: 4, config: membership }
      yield* Effect.scoped(Effect.gen(function* () {
        const store = yield* openLog(sim.layer)
        yield* appendRange(store, 1, 40, 1)
        yield* store.persist([{ hardState: { term: 4, vote: 2, commit: 500 }, snapshot, entries: [command(501, 4)] }])
      }))
      const recovered = yield* reload(sim.layer)
      expect(recovered.snapshot).toEqual(snapshot)
      expect(recovered.base).toEqual({ index: 500, term: 4 })
      expect(recovered.entries).toEqual([command(501, 4)])
    }))

  it.effect("a broken contract is a defect, and the store refuses to go on after it", () =>
    Effect.scoped(Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 9 })
      const store = yield* openLog(sim.layer)
      yield* appendRange(store, 1, 3, 1)
      const gap = yield* Effect.exit(store.persist([{ entries: [command(5, 1)] }]))
      expect(Exit.isFailure(gap) && gap.cause._tag === "Die" && gap.cause.defect instanceof AssertionError).toBe(true)
      const after = yield* Effect.flip(store.persist([{ entries: [command(4, 1)] }]))
      expect(after._tag).toBe("LogStoreBroken")
    })))

  it.effect("the memory store and the segment log agree on random workloads, reloaded after each call", () =>
    Effect.gen(function* () {
      for (const seed of [11, 12, 13]) {
        const calls = generateWorkload({ seed, calls: 60 })
        const sim = makeSimDisk({ seed })
        for (let c = 0; c < calls.length; c++) {
          yield* Effect.scoped(Effect.flatMap(openLog(sim.layer), (store) => store.persist(calls[c]!)))
          const expected = modelAfter(calls.slice(0, c + 1))
          const diff = diffRecovered(yield* reload(sim.layer), expected)
          if (diff !== null) expect.fail(`seed ${seed}, after call ${c}: ${diff}`)
        }
      }
    }))

  it.effect.prop(
    "property: any workload, any segment size, reopened at any call, reloads as the model says",
    { seed: FastCheck.integer({ min: 0, max: 2 ** 31 - 1 }), segmentBytesMax: FastCheck.integer({ min: 4096, max: 20_000 }), reopenEvery: FastCheck.integer({ min: 1, max: 10 }) },
    ({ reopenEvery, seed, segmentBytesMax }) =>
      Effect.gen(function* () {
        const calls = generateWorkload({ seed, calls: 50 })
        const sim = makeSimDisk({ seed })
        const options = { ...testLogOptions(), segmentBytesMax }
        for (let c = 0; c < calls.length; c += reopenEvery) {
          yield* Effect.scoped(Effect.gen(function* () {
            const store = yield* openLog(sim.layer, options)
            for (const call of calls.slice(c, c + reopenEvery)) yield* store.persist(call)
          }))
        }
        const diff = diffRecovered(yield* reload(sim.layer, options), modelAfter(calls))
        if (diff !== null) expect.fail(`seed ${seed}: ${diff}`)
      }),
    { fastCheck: { numRuns: 25 } }
  )

  it.effect("a long-lived store agrees with the memory store on a long random workload", () =>
    Effect.gen(function* () {
      const calls = generateWorkload({ seed: 21, calls: 400 })
      const sim = makeSimDisk({ seed: 21 })
      const memory = makeMemoryLogStore()
      yield* Effect.scoped(Effect.gen(function* () {
        const store = yield* openLog(sim.layer)
        for (const call of calls) {
          yield* store.persist(call)
          yield* memory.persist(call)
        }
        expectSame(yield* store.load, yield* memory.load)
      }))
      expectSame(yield* reload(sim.layer), yield* memory.load)
      // prefix removal kept the directory small
      expect(segments(sim.driver.list(dir)).length).toBeLessThan(30)
    }))
})

describe("SegmentLog refuses what it cannot trust", () => {
  it.effect("another cluster's directory", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 30 })
      yield* reload(sim.layer)
      const error = yield* Effect.flip(reload(sim.layer, { ...testLogOptions(), clusterId: "another" }))
      expect(error._tag).toBe("ClusterIdMismatch")
      expect(error.message).toContain("cluster-test")
    }))

  it.effect("an unknown format version", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 31 })
      yield* reload(sim.layer)
      const meta = sim.driver.fileBytes(`${dir}/${metadataFileName}`)
      new DataView(meta.buffer).setUint32(8, 99, true)
      sim.driver.writeFile(`${dir}/${metadataFileName}`, meta)
      const error = yield* Effect.flip(reload(sim.layer))
      expect(error).toMatchObject({ _tag: "UnknownFormatVersion", version: 99, supported: [1] })
    }))

  it.effect("damaged metadata", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 32 })
      yield* reload(sim.layer)
      sim.driver.flipBit(`${dir}/${metadataFileName}`, 17)
      const error = yield* Effect.flip(reload(sim.layer))
      expect(error).toMatchObject({ _tag: "LogCorrupted", file: `${dir}/${metadataFileName}` })
    }))

  it.effect("segments without metadata", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 33 })
      yield* Effect.scoped(Effect.flatMap(openLog(sim.layer), (store) => appendRange(store, 1, 5, 1)))
      yield* Effect.scoped(Effect.flatMap(Effect.succeed(sim.service), (disk) => disk.unlink(`${dir}/${metadataFileName}`)))
      const error = yield* Effect.flip(reload(sim.layer))
      expect(error).toMatchObject({ _tag: "LogCorrupted", reason: "metadata file is missing but the directory holds log segments" })
    }))

  it.effect("a missing segment in the middle, or missing earlier segments still needed", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 34 })
      yield* Effect.scoped(Effect.flatMap(openLog(sim.layer), (store) => appendRange(store, 1, 100, 1)))
      yield* sim.service.unlink(segmentPath(3))
      const error = yield* Effect.flip(reload(sim.layer))
      expect(error).toMatchObject({ _tag: "LogCorrupted", file: segmentPath(3) })
      expect(error.message).toContain("segment is missing")
    }))

  it.effect("a flipped bit anywhere in a closed segment names the file and the record's offset", () =>
    Effect.gen(function* () {
      const base = makeSimDisk({ seed: 35 })
      yield* Effect.scoped(Effect.flatMap(openLog(base.layer), (store) => appendRange(store, 1, 60, 1)))
      const closed = base.driver.fileBytes(segmentPath(2))
      const records = scanSegment(closed, false).records
      expect(records.length).toBeGreaterThan(3)
      // every byte of a few records, header and payload
      for (const record of [records[0]!, records[1]!, records[records.length - 1]!]) {
        for (let offset = record.offset; offset < record.offset + record.bytes; offset += 7) {
          const sim = makeSimDisk({ seed: 35 })
          yield* Effect.scoped(Effect.flatMap(openLog(sim.layer), (store) => appendRange(store, 1, 60, 1)))
          sim.driver.flipBit(segmentPath(2), offset, offset % 8)
          const error = yield* Effect.flip(reload(sim.layer))
          if (error._tag !== "LogCorrupted") expect.fail(`flip at ${offset}: ${error._tag}`)
          expect(error.file).toBe(segmentPath(2))
          expect(error.offset).toBe(record.offset)
        }
      }
    }))

  it.effect("a flip in the active segment followed by a later write is refused", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 36 })
      yield* Effect.scoped(Effect.gen(function* () {
        const store = yield* openLog(sim.layer, { ...testLogOptions(), segmentBytesMax: 1 << 20 })
        for (let i = 1; i <= 10; i++) yield* appendRange(store, i, i, 1)
      }))
      const active = sim.driver.fileBytes(segmentPath(1))
      const records = scanSegment(active, true).records
      const victim = records[records.length - 3]! // entry 8; entries 9 and 10 are later writes
      sim.driver.flipBit(segmentPath(1), victim.offset + recordHeaderBytes + 3)
      const error = yield* Effect.flip(reload(sim.layer, { ...testLogOptions(), segmentBytesMax: 1 << 20 }))
      expect(error).toMatchObject({ _tag: "LogCorrupted", file: segmentPath(1), offset: victim.offset })
      expect(error.message).toContain("later write")
    }))

  it.effect("a bad last write of the active segment is a torn tail: cut off, and the log goes on", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 37 })
      const options = { ...testLogOptions(), segmentBytesMax: 1 << 20 }
      yield* Effect.scoped(Effect.gen(function* () {
        const store = yield* openLog(sim.layer, options)
        for (let i = 1; i <= 10; i++) yield* appendRange(store, i, i, 1)
        yield* appendRange(store, 11, 13, 1) // one write of three records
      }))
      const records = scanSegment(sim.driver.fileBytes(segmentPath(1)), true).records
      const entry12 = records.find((r) => r.index === 12)!
      // damage entry 12: entry 13 (same write) follows; entries 11 survives
      sim.driver.flipBit(segmentPath(1), entry12.offset + recordHeaderBytes)
      const recovered = yield* reload(sim.layer, options)
      expect(recovered.entries.map((e) => e.index)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
      // the tail was cut on disk, and appending continues from there
      expect(sim.driver.fileBytes(segmentPath(1)).byteLength).toBe(entry12.offset)
      yield* Effect.scoped(Effect.flatMap(openLog(sim.layer, options), (store) => appendRange(store, 12, 12, 2)))
      expect((yield* reload(sim.layer, options)).entries.map((e) => `${e.index}/${e.term}`).slice(-2)).toEqual(["11/1", "12/2"])
    }))

  it.effect("DiskFull from a persist is reported, and the store stops until restarted", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 38 })
      yield* Effect.scoped(Effect.gen(function* () {
        const store = yield* openLog(sim.layer)
        yield* appendRange(store, 1, 3, 1)
        sim.driver.setFull(true)
        const error = yield* Effect.flip(appendRange(store, 4, 4, 1))
        expect(error._tag).toBe("DiskFull")
        sim.driver.setFull(false)
        expect((yield* Effect.flip(appendRange(store, 4, 4, 1)))._tag).toBe("LogStoreBroken")
      }))
      expect((yield* reload(sim.layer)).entries.length).toBe(3)
    }))
})

describe("record scanning rules", () => {
  it("a decoded record checks out, a flipped one does not", () => {
    const sim = makeSimDisk({ seed: 40 })
    return Effect.runPromise(Effect.gen(function* () {
      yield* Effect.scoped(Effect.flatMap(openLog(sim.layer), (store) => appendRange(store, 1, 2, 1)))
      const bytes = sim.driver.fileBytes(segmentPath(1))
      const first = decodeRecordAt(bytes, 0)
      expect(first.ok).toBe(true)
      bytes[5]! ^= 0x10
      expect(decodeRecordAt(bytes, 0)).toEqual({ ok: false, reason: "bad record magic" })
    }))
  })
})
