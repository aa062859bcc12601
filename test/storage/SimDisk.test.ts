import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { makeSimDisk } from "../sim/SimDisk.ts"

const bytes = (...values: Array<number>) => new Uint8Array(values)

describe("SimDisk", () => {
  it.effect("a crash loses unsynced writes and keeps synced ones", () =>
    Effect.gen(function* () {
      const { service: disk, driver } = makeSimDisk({ seed: 1 })
      yield* disk.mkdir("/d")
      const file = yield* disk.open("/d/f", "write")
      yield* disk.fsyncDir("/d")
      yield* file.write(0, bytes(1, 2, 3))
      yield* file.sync
      yield* file.write(3, bytes(4, 5))
      expect(driver.fileBytes("/d/f")).toEqual(bytes(1, 2, 3, 4, 5))
      driver.crash("lose")
      driver.restart()
      expect(driver.fileBytes("/d/f")).toEqual(bytes(1, 2, 3))
      // the handle died with the process
      expect((yield* Effect.flip(file.write(0, bytes(9))))._tag).toBe("DiskError")
    }))

  it.effect("a created file without a directory fsync can vanish, even when its data was synced", () =>
    Effect.gen(function* () {
      const { service: disk, driver } = makeSimDisk({ seed: 2 })
      yield* disk.mkdir("/d")
      const file = yield* disk.open("/d/new", "write")
      yield* file.write(0, bytes(7))
      yield* file.sync
      driver.crash("lose")
      driver.restart()
      expect(driver.exists("/d/new")).toBe(false)
      const again = yield* disk.open("/d/new", "write")
      yield* again.write(0, bytes(7))
      yield* again.sync
      yield* disk.fsyncDir("/d")
      driver.crash("lose")
      driver.restart()
      expect(driver.fileBytes("/d/new")).toEqual(bytes(7))
    }))

  it.effect("rename is atomic: after a crash the old or the new content, nothing else", () =>
    Effect.gen(function* () {
      const seen = new Set<string>()
      for (let seed = 0; seed < 40; seed++) {
        const { service: disk, driver } = makeSimDisk({ seed })
        driver.writeFile("/d/target", bytes(1, 1, 1))
        const tmp = yield* disk.open("/d/target.tmp", "write")
        yield* tmp.write(0, bytes(2, 2, 2, 2))
        yield* tmp.sync
        yield* disk.rename("/d/target.tmp", "/d/target")
        driver.crash("prefix")
        driver.restart()
        seen.add(driver.fileBytes("/d/target").join(","))
      }
      expect([...seen].sort()).toEqual(["1,1,1", "2,2,2,2"])
    }))

  it.effect("the same seed replays the same crash; prefix mode sometimes tears a write at a byte", () =>
    Effect.gen(function* () {
      const run = (seed: number) =>
        Effect.gen(function* () {
          const { service: disk, driver } = makeSimDisk({ seed })
          driver.writeFile("/d/f", new Uint8Array(0))
          const file = yield* disk.open("/d/f", "write")
          yield* file.write(0, new Uint8Array(1000).fill(5))
          driver.crash("prefix")
          return driver.fileBytes("/d/f").byteLength
        })
      const lengths: Array<number> = []
      for (let seed = 0; seed < 60; seed++) {
        const length = yield* run(seed)
        expect(yield* run(seed)).toBe(length)
        lengths.push(length)
      }
      expect(lengths).toContain(0)
      expect(lengths).toContain(1000)
      expect(lengths.some((n) => n > 0 && n < 1000)).toBe(true)
    }))

  it.effect("sectors mode keeps some sectors of an unsynced write and not others", () =>
    Effect.gen(function* () {
      let holes = 0
      for (let seed = 0; seed < 30; seed++) {
        const { service: disk, driver } = makeSimDisk({ seed })
        driver.writeFile("/d/f", new Uint8Array(0))
        const file = yield* disk.open("/d/f", "write")
        yield* file.write(0, new Uint8Array(4096).fill(9))
        driver.crash("sectors")
        const after = driver.fileBytes("/d/f")
        const sectors = []
        for (let s = 0; s < after.byteLength; s += 512) sectors.push(after[s])
        if (sectors.includes(0) && sectors.includes(9) && sectors.indexOf(9) > sectors.indexOf(0)) holes++
      }
      expect(holes).toBeGreaterThan(0)
    }))

  it.effect("crashAtOp crashes instead of running that call, and every call fails until restart", () =>
    Effect.gen(function* () {
      const { service: disk, driver } = makeSimDisk({ seed: 3 })
      yield* disk.mkdir("/d")
      const file = yield* disk.open("/d/f", "write")
      yield* disk.fsyncDir("/d")
      driver.crashAtOp(driver.ops() + 1, "lose")
      yield* file.write(0, bytes(1))
      expect((yield* Effect.flip(file.sync))._tag).toBe("DiskError")
      expect(driver.isCrashed()).toBe(true)
      expect((yield* Effect.flip(disk.list("/d")))._tag).toBe("DiskError")
      driver.restart()
      expect(driver.fileBytes("/d/f")).toEqual(bytes())
    }))

  it.effect("flipBit, setFull and typed errors", () =>
    Effect.gen(function* () {
      const { service: disk, driver } = makeSimDisk({ seed: 4 })
      driver.writeFile("/d/f", bytes(0, 0))
      driver.flipBit("/d/f", 1, 3)
      expect(yield* disk.readFile("/d/f")).toEqual(bytes(0, 8))
      expect(yield* Effect.flip(disk.readFile("/d/missing"))).toMatchObject({ _tag: "DiskError", code: "ENOENT" })
      driver.setFull(true)
      const file = yield* disk.open("/d/f", "write")
      expect((yield* Effect.flip(file.write(2, bytes(1))))._tag).toBe("DiskFull")
      expect(yield* disk.list("/")).toEqual(["d"])
    }))

  it.effect("a full disk writes what overwrites existing bytes, then fails (a short write); checkWritable fails while full", () =>
    Effect.gen(function* () {
      const { service: disk, driver } = makeSimDisk({ seed: 5 })
      driver.writeFile("/d/f", bytes(1, 2, 3))
      const file = yield* disk.open("/d/f", "write")
      driver.setFull(true)
      expect((yield* Effect.flip(file.write(1, bytes(7, 8, 9, 10))))._tag).toBe("DiskFull")
      expect(driver.fileBytes("/d/f")).toEqual(bytes(1, 7, 8))
      expect((yield* Effect.flip(disk.checkWritable!("/d/f")))._tag).toBe("DiskFull")
      driver.setFull(false)
      yield* disk.checkWritable!("/d/f")
      yield* file.write(1, bytes(7, 8, 9, 10))
      expect(driver.fileBytes("/d/f")).toEqual(bytes(1, 7, 8, 9, 10))
    }))
})
