// A persist that fails for a full disk half-way — a torn write, after a segment roll, or with the
// new segment not created — is undone in place by `recover`: the same batches then persist, and a
// restart loads exactly the log a store that never failed holds. Other failures stay fatal.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { Disk } from "../../src/storage/Disk.ts"
import type { DiskFile, DiskService } from "../../src/storage/Disk.ts"
import { DiskError, DiskFull } from "../../src/storage/errors.ts"
import type { PersistBatch } from "../../src/storage/LogStore.ts"
import { makeMemoryLogStore } from "../../src/storage/LogStore.ts"
import { makeSimDisk } from "../sim/SimDisk.ts"
import { command, diffRecovered, openLog, quiet, reload } from "./workload.ts"

/** The simulated disk, with a switch: the `failAt`-th write from now writes half its bytes, then
 * fails with DiskFull (or with EIO when `kind` says so), and every later one fails outright
 * until `heal`. */
const faultyDisk = (seed: number) => {
  const sim = makeSimDisk({ seed })
  let countdown: number | null = null
  let failing = false
  let kind: "full" | "eio" = "full"
  const fault = (path: string) =>
    kind === "full"
      ? new DiskFull({ op: "write", path, cause: Object.assign(new Error("ENOSPC"), { code: "ENOSPC" }) })
      : new DiskError({ op: "write", path, code: "EIO", cause: null })
  const wrapFile = (file: DiskFile): DiskFile => ({
    ...file,
    write: (position, data) =>
      Effect.suspend(() => {
        if (failing) return Effect.fail(fault(file.path))
        if (countdown !== null && --countdown === 0) {
          failing = true
          const half = data.subarray(0, Math.floor(data.byteLength / 2))
          return Effect.zipRight(file.write(position, half), Effect.fail(fault(file.path)))
        }
        return file.write(position, data)
      })
  })
  const service: DiskService = { ...sim.service, open: (path, mode) => Effect.map(sim.service.open(path, mode), wrapFile) }
  return {
    layer: Layer.succeed(Disk, service),
    arm: (failAt: number, as: "full" | "eio" = "full") => {
      countdown = failAt
      kind = as
    },
    heal: () => {
      countdown = null
      failing = false
    },
    sim
  }
}

const entries = (from: number, to: number, term: number): PersistBatch => {
  const list = []
  for (let i = from; i <= to; i++) list.push(command(i, term, 300))
  return { entries: list }
}

describe("SegmentLog after a full disk", () => {
  for (const failAt of [1, 2, 3]) {
    it.effect(`a persist torn at its write #${failAt} is undone by recover and persists again; a restart agrees`, () =>
      Effect.gen(function*() {
        const disk = faultyDisk(failAt)
        const before: ReadonlyArray<PersistBatch> = [{ hardState: { term: 1, vote: 1, commit: 0 }, entries: [] }, entries(1, 8, 1)]
        // 30 entries of 300 bytes cross the 4 KiB segment bound twice: writes #2 and #3 go to
        // segments the failed call created.
        const failing: ReadonlyArray<PersistBatch> = [entries(9, 38, 1), { hardState: { term: 1, vote: 1, commit: 20 }, entries: [] }]
        yield* Effect.scoped(Effect.gen(function*() {
          const store = yield* openLog(disk.layer)
          yield* store.persist(before)
          disk.arm(failAt)
          const failed = yield* Effect.exit(store.persist(failing))
          expect(Exit.isFailure(failed) && failed.cause._tag === "Fail" && failed.cause.error._tag).toBe("DiskFull")
          const refused = yield* Effect.exit(store.persist(failing))
          expect(Exit.isFailure(refused) && refused.cause._tag === "Fail" && refused.cause.error._tag).toBe("LogStoreBroken")
          // Undoing needs no space: it works while the disk is still full.
          yield* quiet(store.recover)
          expect((yield* store.load).entries.map((e) => e.index)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
          disk.heal()
          yield* store.persist(failing)
          yield* store.persist([entries(39, 40, 2)])
        }))
        const model = makeMemoryLogStore()
        yield* model.persist([...before, ...failing, entries(39, 40, 2)])
        const restarted = yield* reload(disk.layer)
        expect(diffRecovered(restarted, yield* model.load)).toBeNull()
      }))
  }

  it.effect("a new segment that cannot be created (ENOSPC on open) is undone the same way", () =>
    Effect.gen(function*() {
      const disk = faultyDisk(7)
      yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* openLog(disk.layer)
        yield* store.persist([entries(1, 12, 1)])
        disk.sim.driver.setFull(true)
        const failed = yield* Effect.exit(store.persist([entries(13, 30, 1)]))
        expect(Exit.isFailure(failed) && failed.cause._tag === "Fail" && failed.cause.error._tag).toBe("DiskFull")
        yield* quiet(store.recover)
        disk.sim.driver.setFull(false)
        yield* store.persist([entries(13, 30, 1)])
      }))
      expect((yield* reload(disk.layer)).entries.map((e) => e.index)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1))
    }))

  it.effect("a failure that is not a full disk is not undone: the store stays broken until a restart", () =>
    Effect.gen(function*() {
      const disk = faultyDisk(8)
      yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* openLog(disk.layer)
        yield* store.recover // not broken: nothing to do
        yield* store.persist([entries(1, 4, 1)])
        disk.arm(1, "eio")
        yield* Effect.exit(store.persist([entries(5, 6, 1)]))
        disk.heal()
        const recovered = yield* Effect.exit(store.recover)
        expect(Exit.isFailure(recovered) && recovered.cause._tag === "Fail" && recovered.cause.error._tag).toBe("LogStoreBroken")
      }))
      // A restart cuts the torn tail and finds what was durable (plus, here, the one whole record
      // the torn write got into the file, which the simulated disk's cache still holds).
      const indexes = (yield* quiet(reload(disk.layer))).entries.map((e) => e.index)
      expect(indexes.slice(0, 4)).toEqual([1, 2, 3, 4])
      expect(indexes.length).toBeLessThan(6)
    }))
})
