// A leader's pending local commit lets its captured pages go once the writer has encoded its
// entry (LeaderDatabase.dropPendingPages, called by LeaderWriter.encodeLarge): 20 MiB less held
// per large transaction while it is replicated (issue 17's memory). The commit goes on as before:
// Raft's commit of it moves the committed view, which then reads the rows.
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import type { Entry } from "../../src/raft/types.ts"
import type { LeaderSlotOwner } from "../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { LeaderDatabase } from "../../src/sqlite/LeaderDatabase.ts"
import { inThreadReadPool } from "../../src/sqlite/readPool/ReadPool.ts"
import { encodeWriteEntry } from "../../src/sqlite/writeEntry.ts"
import { pageSize, tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))

describe("a pending local commit's pages", () => {
  it("go once its entry is encoded; the commit and the committed view are unchanged", async () => {
    const dir = tempDirectory("tqlite-pending-pages-")
    dirs.push(dir)
    const machine = await Effect.runPromise(SqliteMachine.open({ dataDir: dir.path, nodeId: 1, pageSize, fsync: "off", bootSnapshot: null }))
    await Effect.runPromise(machine.apply({ kind: "barrier", term: 1, index: 1 }))
    const epoch = machine.nextEpoch()
    const readPool = inThreadReadPool({ readWorkersMax: 1, readQueueMax: 8, queryTimeoutMs: 10_000, statementCacheMax: 16 })
    const owner = await Effect.runPromise(machine.lead("main", 1, (databasePath): LeaderSlotOwner => ({
      term: 1,
      origin: { node: 1, epoch },
      database: LeaderDatabase.open({ databasePath, pageSize, readersMax: 4, cachePages: 100, statementCacheMax: 16, readPool })
    })))
    const database = owner.database
    database.commitLocally(() => database.writer.db.exec("CREATE TABLE t(b BLOB); INSERT INTO t VALUES (randomblob(2097152))"))
    const local = database.captureLocalCommit(1)!
    const pages = local.pageSet.pages.length
    expect(pages).toBeGreaterThan(500)
    const data = encodeWriteEntry({ origin: { node: 1, epoch, seq: 1 }, previousChangeIndex: 0, database: "main", pageSet: local.pageSet })
    database.dropPendingPages(2) // another seq: nothing changes
    expect(database.pendingCommit!.pageSet.pages.length).toBe(pages)
    database.dropPendingPages(1)
    expect(database.pendingCommit!.seq).toBe(1)
    expect(database.pendingCommit!.pageSet.pages.length).toBe(0)
    expect(database.pendingCommit!.walEnd).toEqual(local.walEnd)
    const entry: Entry = { kind: "command", term: 1, index: 2, data }
    expect((await Effect.runPromise(machine.apply(entry)))._tag).toBe("Own")
    expect(database.pendingCommit).toBeNull()
    expect(database.committedView.prepare("SELECT length(b) AS n FROM t").get()).toEqual({ n: 2097152n })
    await Effect.runPromise(machine.release("main", owner, "keepWal", false))
    machine.close()
  })
})
