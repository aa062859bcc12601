// The committed image of a leading database, built the way a snapshot streams it (main file +
// the WAL's committed frames laid over it), equals what SQLite itself serializes at that point —
// with a main file that holds most pages (a checkpoint earlier), committed frames that rewrite
// some of them, and a later transaction in the WAL past the committed end, which must not show.
// A WAL restarted under the copy is refused.
import fs from "node:fs"
import path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { indexCommittedWal, readCommittedPages } from "../../src/sqlite/leadingImage.ts"
import { openDatabase } from "../../src/sqlite/openDatabase.ts"
import { WalCapture } from "../../src/sqlite/WalCapture.ts"
import { pageSize, tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))

function imageOf(databasePath: string, walEnd: Parameters<typeof indexCommittedWal>[2]): Buffer | string {
  const mainFd = fs.openSync(databasePath, "r")
  const walFd = fs.openSync(`${databasePath}-wal`, "r")
  try {
    const wal = indexCommittedWal(walFd, pageSize, walEnd, 7)
    if (typeof wal === "string") return wal
    const out = Buffer.alloc(wal.dbSizePages * pageSize)
    // In odd-sized pieces, as chunks would cut it.
    const piecePages = 5
    for (let first = 1; first <= wal.dbSizePages; first += piecePages) {
      const pages = Math.min(piecePages, wal.dbSizePages - first + 1)
      const problem = readCommittedPages(mainFd, walFd, wal, pageSize, first, out.subarray((first - 1) * pageSize, (first - 1 + pages) * pageSize))
      if (problem !== null) return problem
    }
    return out
  } finally {
    fs.closeSync(mainFd)
    fs.closeSync(walFd)
  }
}

describe("the committed image of a leading database", () => {
  it("is the main file with the committed frames over it, and nothing past the committed end", () => {
    const dir = tempDirectory("tqlite-leading-image-")
    dirs.push(dir)
    const databasePath = path.join(dir.path, "main.db")
    const db = openDatabase(databasePath, { pageSize })
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    const insert = db.prepare("INSERT INTO t(v) VALUES (randomblob(300))")
    db.transaction(() => {
      for (let i = 0; i < 3000; i++) insert.run()
    })()
    db.pragma("wal_checkpoint(TRUNCATE)")
    expect(fs.statSync(databasePath).size).toBeGreaterThan(200 * pageSize)
    const capture = new WalCapture({ databasePath, pageSize })
    // Committed frames that rewrite pages the main file holds, and grow the database.
    db.exec("UPDATE t SET v = randomblob(300) WHERE id % 37 = 0")
    db.transaction(() => {
      for (let i = 0; i < 200; i++) insert.run()
    })()
    db.exec("DELETE FROM t WHERE id % 11 = 0")
    const committed = capture.capture()
    const walEnd = committed[committed.length - 1]!.walEnd
    const expected = Buffer.from(db.serialize())
    // A later transaction (not committed by Raft, say) past walEnd.
    db.exec("UPDATE t SET v = x'00' WHERE id % 5 = 0")
    const image = imageOf(databasePath, walEnd)
    expect(typeof image).not.toBe("string")
    expect((image as Buffer).byteLength).toBe(expected.byteLength)
    expect(Buffer.compare(image as Buffer, expected)).toBe(0)

    // A checkpoint that restarts the WAL voids the position: refused, never a wrong image.
    db.pragma("wal_checkpoint(TRUNCATE)")
    db.exec("INSERT INTO t(v) VALUES (x'01')")
    expect(imageOf(databasePath, walEnd)).toMatch(/restarted|checksum|salts|shorter/)
    capture.close()
    db.close()
  })
})
