// Disk.layerNode against the real file system (a temporary directory), and the segment log and
// snapshot store running on it.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Disk, writeFileAtomic } from "../../src/storage/Disk.ts"
import { toDiskFailure } from "../../src/storage/Disk.ts"
import { Snapshots } from "../../src/storage/Snapshots.ts"
import { command, membership, openLog, reload } from "./workload.ts"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-disk-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

describe("Disk.layerNode", () => {
  it.scoped("files: write at offsets, read, size, truncate, sync, list, rename, unlink", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const disk = yield* Disk
      const file = yield* disk.open(path.join(dir, "a"), "write")
      yield* file.write(0, new Uint8Array([1, 2, 3]))
      yield* file.write(5, new Uint8Array([6]))
      expect(yield* file.size).toBe(6)
      expect(yield* file.read(0, 10)).toEqual(new Uint8Array([1, 2, 3, 0, 0, 6]))
      yield* file.truncate(2)
      yield* file.sync
      yield* file.close
      yield* file.close // closing twice is harmless
      expect(yield* disk.readFile(path.join(dir, "a"))).toEqual(new Uint8Array([1, 2]))
      yield* writeFileAtomic(disk, path.join(dir, "b"), new Uint8Array([9]))
      expect(yield* disk.list(dir)).toEqual(["a", "b"])
      yield* disk.rename(path.join(dir, "b"), path.join(dir, "c"))
      yield* disk.unlink(path.join(dir, "a"))
      yield* disk.fsyncDir(dir)
      yield* disk.mkdir(path.join(dir, "x", "y"))
      expect(yield* disk.list(dir)).toEqual(["c", "x"])
      expect(yield* disk.exists(path.join(dir, "x", "y"))).toBe(true)
      expect(yield* disk.exists(path.join(dir, "nope"))).toBe(false)
    }).pipe(Effect.provide(Disk.layerNode)))

  it.scoped("errors are typed: ENOENT is a DiskError with op, path and code; ENOSPC is DiskFull", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const disk = yield* Disk
      const missing = path.join(dir, "missing")
      expect(yield* Effect.flip(disk.open(missing, "read"))).toMatchObject({ _tag: "DiskError", op: "open", path: missing, code: "ENOENT" })
      expect(yield* Effect.flip(disk.unlink(missing))).toMatchObject({ _tag: "DiskError", code: "ENOENT" })
      const full = toDiskFailure("write", "/x", Object.assign(new Error("no space"), { code: "ENOSPC" }))
      expect(full._tag).toBe("DiskFull")
      expect(toDiskFailure("write", "/x", Object.assign(new Error("quota"), { code: "EDQUOT" }))._tag).toBe("DiskFull")
    }).pipe(Effect.provide(Disk.layerNode)))

  it.scoped("/dev/full reports DiskFull on sync", () =>
    Effect.gen(function* () {
      if (!fs.existsSync("/dev/full")) return
      const disk = yield* Disk
      const file = yield* disk.open("/dev/full", "write")
      const error = yield* Effect.flip(Effect.zipRight(file.write(0, new Uint8Array(10)), file.sync))
      yield* file.close
      expect(error._tag).toBe("DiskFull")
    }).pipe(Effect.provide(Disk.layerNode)))

  it.scoped("the segment log and the snapshot store on the real disk", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const options = { dir: path.join(dir, "log"), clusterId: "real", segmentBytesMax: 8192 }
      yield* Effect.scoped(Effect.gen(function* () {
        const store = yield* openLog(Disk.layerNode, options)
        for (let i = 1; i <= 200; i += 4) {
          yield* store.persist([{ hardState: { term: 1, vote: 1, commit: i - 1 }, entries: [command(i, 1, 300), command(i + 1, 1), command(i + 2, 1), command(i + 3, 1, 1)] }])
        }
        yield* store.persist([{ entries: [], compactUpTo: { index: 150, term: 1 } }])
      }))
      const recovered = yield* reload(Disk.layerNode, options)
      expect(recovered.base).toEqual({ index: 150, term: 1 })
      expect(recovered.entries).toEqual(Array.from({ length: 50 }, (_, i) => command(151 + i, 1, [300, 16, 16, 1][(150 + i) % 4]!)))
      expect(fs.readdirSync(options.dir).filter((n) => n.endsWith(".seg")).length).toBeLessThan(5)

      const snapshots = yield* Effect.provide(Snapshots, Snapshots.layer({ dir: path.join(dir, "snapshots") }).pipe(Layer.provide(Disk.layerNode)))
      yield* Effect.scoped(Effect.gen(function* () {
        const writer = yield* snapshots.create({ index: 150, term: 1, config: membership })
        yield* writer.write(new Uint8Array(5000).fill(3))
        yield* writer.commit()
      }))
      expect(yield* snapshots.latest).toEqual({ index: 150, term: 1, config: membership })
    }))
})
