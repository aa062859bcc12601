// Run as a child process by discardUncommitted.test.ts: a leader commits transaction A (which
// the test will treat as Raft-committed) and B (not), prints where A and B end in the WAL, and
// dies by SIGKILL with its connections open, as a crashed node would.

import { openDatabase } from "../../src/sqlite/openDatabase.ts"
import { WalCapture } from "../../src/sqlite/WalCapture.ts"

const databasePath = process.argv[2]
if (databasePath === undefined) throw new Error("usage: crashingLeader.ts <database path>")
const pageSize = 4096
const db = openDatabase(databasePath, { pageSize })
const capture = new WalCapture({ databasePath, pageSize })
db.exec("CREATE TABLE t(name TEXT, payload BLOB); INSERT INTO t VALUES ('A', randomblob(10000));")
const a = capture.capture()
db.exec("INSERT INTO t VALUES ('B', randomblob(10000)); UPDATE t SET payload = NULL WHERE name = 'A';")
const b = capture.capture()
process.stdout.write(`${JSON.stringify({ a: a[a.length - 1]?.walEnd, b: b[b.length - 1]?.walEnd })}\n`, () => {
  process.kill(process.pid, "SIGKILL")
})
