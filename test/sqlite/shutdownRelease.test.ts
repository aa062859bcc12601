// A node's shutdown releases each leading database as a crash would (`release` "keepWal": nothing
// written, the WAL left for the restart to delete), while its applier may still apply an entry or
// two (the scope closes the SQL surface before the Raft actor). The SQLite simulator's seed 49: a
// one-node cluster whose main file was last checkpointed at 138, its commits 139–153 only in the
// WAL, was shut down with the writer's entry 154 proposed; the applier then wrote 154's pages over
// the stale main file and its sync recorded the file as reflecting 154. The restart deleted the
// WAL and replayed nothing: 15 acknowledged entries lost and a malformed database.
//
// Here, the same file states on a real disk: the main file checkpointed and recorded at 2, commits
// 3–6 in the WAL only, then the release, then an entry applied and synced (the writer's own last
// one, or another database's: a sync then recorded every closed file as current), then a restart
// replaying the whole log. The content must be every commit's. Mutation: `forgetKeptWal` (the
// code before the fix) loses the WAL's commits.
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import type { Entry } from "../../src/raft/types.ts"
import type { SqliteMachineBugs } from "../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { openDatabase } from "../../src/sqlite/openDatabase.ts"
import { WalCapture } from "../../src/sqlite/WalCapture.ts"
import { encodeWriteEntry } from "../../src/sqlite/writeEntry.ts"
import path from "node:path"
import { integrityCheck, ledMachine, pageSize, readOnly, tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))

/** Entry `index`: one transaction of another node's writer on database "other" (its first). */
function otherDatabaseEntry(dir: string, index: number): Entry {
  const leaderPath = path.join(dir, "other-leader.db")
  const leader = openDatabase(leaderPath, { pageSize })
  const capture = new WalCapture({ databasePath: leaderPath, pageSize })
  try {
    leader.exec("CREATE TABLE o(x INTEGER); INSERT INTO o VALUES (1)")
    const [transaction] = capture.capture()
    const data = encodeWriteEntry({ origin: { node: 2, epoch: 1, seq: 1 }, previousChangeIndex: 0, database: "other", pageSet: transaction! })
    return { kind: "command", term: 1, index, data }
  } finally {
    capture.close()
    leader.close()
  }
}

/** Shuts a leading machine down after `after`, restarts it, replays its log; what "main" holds. */
async function shutdownAndRestart(after: "own-entry" | "other-database", bugs?: SqliteMachineBugs): Promise<{ readonly rows: number; readonly integrity: string }> {
  const dir = tempDirectory("tqlite-shutdown-release-")
  dirs.push(dir)
  const { machine, owner, database, commit, commitLocally, log } = await ledMachine(dir.path, bugs !== undefined ? { bugs } : {})
  await commit("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB); INSERT INTO t(b) VALUES (randomblob(3000))")
  expect(database.checkpoint().busy).toBe(false)
  await Effect.runPromise(machine.checkpointed("main", owner))
  // Entries 3–6: committed and applied, their frames only in the WAL.
  for (let i = 0; i < 4; i++) await commit(`INSERT INTO t(b) VALUES (randomblob(${2000 + i * 3000}))`)
  // Entry 7: the writer's next commit, proposed but not applied when the node shuts down.
  const pending = after === "own-entry" ? commitLocally("INSERT INTO t(b) VALUES (randomblob(9000)); UPDATE t SET b = randomblob(100) WHERE id = 2") : otherDatabaseEntry(dir.path, log.length + 1)
  if (after === "other-database") log.push(pending)
  await Effect.runPromise(machine.release("main", owner, "keepWal", false))
  // The applier goes on while the node's scope closes: the entry applied, the batch synced.
  expect((await Effect.runPromise(machine.apply(pending)))._tag).toBe("Pages")
  await Effect.runPromise(machine.sync)
  machine.close()
  // The restart (no snapshot: the whole log replays; entries a file reflects are skipped).
  const restarted = await Effect.runPromise(SqliteMachine.open({ dataDir: dir.path, nodeId: 1, pageSize, fsync: "sync", bootSnapshot: null }))
  for (const entry of log) await Effect.runPromise(restarted.apply(entry))
  await Effect.runPromise(restarted.sync)
  const databasePath = restarted.databasePath("main")
  restarted.close()
  try {
    return readOnly(databasePath, (db) => ({ integrity: integrityCheck(db), rows: Number((db.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n) }))
  } catch (error) {
    return { rows: -1, integrity: String(error) }
  }
}

describe("a writer released as a crash would (a node's shutdown)", () => {
  it("keeps the WAL's committed frames when the writer's last entry is applied during the shutdown", async () => {
    expect(await shutdownAndRestart("own-entry")).toEqual({ rows: 6, integrity: "ok" })
    // Mutation: the bug before the fix writes the entry over the stale file and records it.
    expect(await shutdownAndRestart("own-entry", { forgetKeptWal: true })).not.toEqual({ rows: 6, integrity: "ok" })
  })

  it("keeps them when another database's entry is applied and synced during the shutdown", async () => {
    expect(await shutdownAndRestart("other-database")).toEqual({ rows: 5, integrity: "ok" })
    expect(await shutdownAndRestart("other-database", { forgetKeptWal: true })).toEqual({ rows: 1, integrity: "ok" })
  })
})
