// The smallest embedding, run from a scratch project that installed the packed tarball (see
// check.sh): a one-node cluster through `Tqlite.layer`, a write and a read, then a clean stop.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { Tqlite } from "tqlite"

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-package-"))
const address = `127.0.0.1:${process.argv[2] ?? "9301"}`

const program = Effect.gen(function*() {
  const db = yield* Tqlite
  yield* db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v)")
  yield* db.execute("INSERT INTO kv VALUES (?, ?)", ["answer", 42])
  const { rows } = yield* db.query("SELECT v FROM kv WHERE k = ?", ["answer"])
  return rows[0]?.[0]
})

const value = await Effect.runPromise(program.pipe(Effect.provide(Tqlite.layer({ dataDir, address, join: [] })), Effect.scoped))
fs.rmSync(dataDir, { recursive: true, force: true })
if (Number(value) !== 42) {
  console.error(`package check: expected 42, read ${String(value)}`)
  process.exit(1)
}
console.log("package check: tqlite installed from its tarball with Effect v3 as peers: wrote and read 42")
