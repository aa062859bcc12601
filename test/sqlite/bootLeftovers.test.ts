// The SQLite machine's open with what a kill left beside a database (issue 17: restart < 5 s
// whatever the size): a leader's WAL (GiBs after a bulk load when checkpoints were held back), an
// install's temporary image and a received one. The open only renames them away (SQLite and the
// installs never see them: a WAL under its name would be replayed into the file); nothing is
// unlinked before the node serves. `removeLeftovers` then unlinks them on the thread pool.
import fs from "node:fs"
import path from "node:path"
import Database from "better-sqlite3"
import { Effect } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import type { DiskService } from "../../src/storage/Disk.ts"
import { nodeDisk } from "../../src/storage/Disk.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { receivedSuffix } from "../../src/sqlite/receivedImages.ts"
import { pageSize, tempDirectory } from "./helpers.ts"

const dirs: Array<{ readonly remove: () => void }> = []
afterEach(() => dirs.splice(0).forEach((dir) => dir.remove()))

describe("SqliteMachine open with leftovers beside a database", () => {
  it("renames the WAL, temporary and received images away without unlinking; removeLeftovers unlinks them on the pool", async () => {
    const dir = tempDirectory()
    dirs.push(dir)
    const dataDir = `${dir.path}/node`
    const databases = path.join(dataDir, "databases")
    fs.mkdirSync(databases, { recursive: true })
    // A database file, and what a killed node left beside it.
    const db = new Database(path.join(databases, "app.db"))
    db.pragma(`page_size = ${pageSize}`)
    db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
    db.close()
    const leftovers: Record<string, number> = { "app.db-wal": 3 * 1024 * 1024, "app.db-shm": 32 * 1024, "app.db.tmp": 2 * 1024 * 1024, [`app.db${receivedSuffix}`]: 1024 * 1024 }
    for (const [name, bytes] of Object.entries(leftovers)) fs.writeFileSync(path.join(databases, name), new Uint8Array(bytes).fill(0x5a))

    const unlinks: Array<{ readonly file: string; readonly pool: boolean; readonly bytes: number }> = []
    const record = (file: string, pool: boolean) => Effect.sync(() => void unlinks.push({ file: path.basename(file), pool, bytes: fs.statSync(file).size }))
    const disk: DiskService = {
      ...nodeDisk,
      unlink: (file) => Effect.zipRight(record(file, false), nodeDisk.unlink(file)),
      unlinkAsync: (file) => Effect.zipRight(record(file, true), nodeDisk.unlinkAsync!(file))
    }
    const machine = await Effect.runPromise(SqliteMachine.open({ dataDir, nodeId: 1, pageSize, fsync: "sync", disk, bootSnapshot: null }))
    try {
      const atOpen = { unlinks: [...unlinks], names: fs.readdirSync(databases).sort() }
      expect(atOpen.unlinks).toEqual([])
      // None is under a name SQLite or an install would use.
      for (const name of Object.keys(leftovers)) expect(atOpen.names).not.toContain(name)
      expect(atOpen.names).toContain("app.db")
      await Effect.runPromise(machine.removeLeftovers)
      expect(fs.readdirSync(databases)).toEqual(["app.db"])
      expect(unlinks.map((u) => ({ pool: u.pool, bytes: u.bytes })).sort((a, b) => a.bytes - b.bytes)).toEqual(
        Object.values(leftovers).sort((a, b) => a - b).map((bytes) => ({ pool: true, bytes }))
      )
    } finally {
      machine.close()
    }
  })
})
