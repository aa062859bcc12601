// The simulator's disk for SQLite files: tqlite's writes reach the real files and are lost or kept
// by a crash as the SimDisk model says; what another writer (SQLite) changed in a file is taken
// as durable.
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { makeMirrorDisk } from "./MirrorDisk.ts"

const root = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-mirror-"))
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
const run = <A, E>(effect: Effect.Effect<A, E>): A => Effect.runSync(effect)

describe("MirrorDisk", () => {
  it("mirrors writes onto the real file; a crash loses what was not synced, on the real file too", () => {
    const dir = path.join(root, "a")
    fs.mkdirSync(dir)
    const { service: disk, driver } = makeMirrorDisk({ seed: 1 })
    const filePath = path.join(dir, "f")
    const file = run(disk.open(filePath, "write"))
    run(disk.fsyncDir(dir))
    run(file.write(0, Buffer.from("durable")))
    run(file.sync)
    run(file.write(7, Buffer.from("+lost")))
    expect(fs.readFileSync(filePath, "utf8")).toBe("durable+lost")
    driver.crash("lose")
    driver.restart()
    expect(fs.readFileSync(filePath, "utf8")).toBe("durable")
    // A file created and never made durable by a directory fsync is gone.
    const other = path.join(dir, "g")
    const created = run(disk.open(other, "write"))
    run(created.write(0, Buffer.from("x")))
    run(created.sync)
    expect(fs.existsSync(other)).toBe(true)
    driver.crash("lose")
    driver.restart()
    expect(fs.existsSync(other)).toBe(false)
  })

  it("adopts another writer's changes as durable, and a short write on a full disk reaches the real file", () => {
    const dir = path.join(root, "b")
    fs.mkdirSync(dir)
    const { service: disk, driver } = makeMirrorDisk({ seed: 2 })
    const filePath = path.join(dir, "f")
    const file = run(disk.open(filePath, "write"))
    run(disk.fsyncDir(dir))
    run(file.write(0, Buffer.from("abc")))
    run(file.sync)
    run(file.close)
    // SQLite writes the file by itself (a checkpoint).
    fs.writeFileSync(filePath, "sqlite wrote this")
    expect(Buffer.from(run(disk.readFile(filePath))).toString()).toBe("sqlite wrote this")
    driver.setFull(true)
    const again = run(disk.open(filePath, "write"))
    expect(Effect.runSync(Effect.flip(again.write(13, Buffer.from("THIS and more"))))._tag).toBe("DiskFull")
    expect(fs.readFileSync(filePath, "utf8")).toBe("sqlite wrote THIS")
    driver.setFull(false)
    driver.crash("lose")
    driver.restart()
    // The adopted content survives; the unsynced short write does not.
    expect(fs.readFileSync(filePath, "utf8")).toBe("sqlite wrote this")
    // A file only the other writer knows (a -wal) is left alone by a crash.
    fs.writeFileSync(`${filePath}-wal`, "wal")
    driver.crash("lose")
    driver.restart()
    expect(fs.readFileSync(`${filePath}-wal`, "utf8")).toBe("wal")
  })
})
