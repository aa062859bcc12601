// Run by openFullDisk.test.ts inside a mount namespace of its own, with `dir` on a small tmpfs:
// makes a WAL database, fills the file system, opens the database again as the writer's
// discard-and-reopen does, frees the space, opens it once more; prints what happened as JSON.
import * as fs from "node:fs"
import * as path from "node:path"
import { isDiskFull } from "../../src/actors/DiskFullWatch.ts"
import { openDatabase } from "../../src/sqlite/openDatabase.ts"

const dir = process.argv[2]!
const databasePath = path.join(dir, "full.db")
const pageSize = 4096
const made = openDatabase(databasePath, { pageSize })
made.exec("CREATE TABLE t (v BLOB)")
for (let i = 0; i < 50; i++) made.prepare("INSERT INTO t VALUES (randomblob(1000))").run()
made.close() // the last connection: SQLite checkpoints and deletes the WAL and its index

const filler = path.join(dir, "filler")
const fd = fs.openSync(filler, "a")
for (const size of [64 * 1024, 512]) {
  try {
    for (;;) fs.writeSync(fd, Buffer.alloc(size, 1))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOSPC") throw error
  }
}
fs.closeSync(fd)

const attempt = () => {
  try {
    const db = openDatabase(databasePath, { pageSize })
    const rows = (db.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n
    db.close()
    return { opened: true, rows }
  } catch (error) {
    const cause = (error as { cause?: { code?: unknown } }).cause
    return { opened: false, error: String(error), causeCode: cause?.code ?? null, diskFull: isDiskFull(error) }
  }
}
const whileFull = attempt()
fs.rmSync(filler)
const afterFreed = attempt()
process.stdout.write(JSON.stringify({ whileFull, afterFreed }) + "\n")
