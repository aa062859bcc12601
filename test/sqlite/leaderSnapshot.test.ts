// A snapshot of a database this node leads never stops its writer: the job streams the main file
// with the committed WAL frames laid over it while the writer goes on committing (and its
// checkpoints report busy), the event loop turns throughout, and the image installed elsewhere is
// exactly the committed state at the snapshot's index — none of the commits made during the copy.
import fs from "node:fs"
import path from "node:path"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { Context, Effect, Fiber, Layer } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import { LeaderDatabase } from "../../src/sqlite/LeaderDatabase.ts"
import { inThreadReadPool } from "../../src/sqlite/readPool/ReadPool.ts"
import type { LeaderSlotOwner } from "../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { encodeWriteEntry } from "../../src/sqlite/writeEntry.ts"
import { Disk } from "../../src/storage/Disk.ts"
import { Snapshots, writeSnapshotFrom } from "../../src/storage/Snapshots.ts"
import { pageSize, tempDirectory } from "./helpers.ts"

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup()
})

describe("a snapshot of a leading database", () => {
  it("runs beside the writer, and installs exactly the committed state at its index", async () => {
    const dir = tempDirectory("tqlite-leader-snapshot-")
    const machine = Effect.runSync(SqliteMachine.open({ dataDir: dir.path, nodeId: 1, pageSize, fsync: "off", bootSnapshot: null }))
    cleanups.push(() => {
      machine.close()
      dir.remove()
    })
    let index = 1
    Effect.runSync(machine.apply({ kind: "barrier", term: 1, index }))
    const epoch = machine.nextEpoch()
    const owner = Effect.runSync(
      machine.lead("db", 1, (databasePath): LeaderSlotOwner => ({
        term: 1,
        origin: { node: 1, epoch },
        database: LeaderDatabase.open({ databasePath, pageSize, readersMax: 4, cachePages: 1000, statementCacheMax: 16, readPool: inThreadReadPool({ readWorkersMax: 1, readQueueMax: 8, queryTimeoutMs: 10_000, statementCacheMax: 16 }) })
      }))
    )
    cleanups.unshift(() => owner.database.close("keepWal"))
    let seq = 0
    /** One write as the leader makes it: local commit, captured, applied as its own entry. */
    const write = (sql: string) => {
      seq++
      owner.database.commitLocally(() => owner.database.writer.db.exec(sql))
      const commit = owner.database.captureLocalCommit(seq)!
      const data = encodeWriteEntry({ origin: { node: 1, epoch, seq }, previousChangeIndex: machine.lastChangeIndex("db"), database: "db", pageSet: commit.pageSet })
      index++
      expect(Effect.runSync(machine.apply({ kind: "command", term: 1, index, data }))._tag).toBe("Own")
    }
    write("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    for (let i = 0; i < 24; i++) write("INSERT INTO t(v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) SELECT randomblob(2000) FROM n")
    // Most pages into the main file, then committed frames that rewrite some of them.
    expect(owner.database.checkpoint().busy).toBe(false)
    write("UPDATE t SET v = randomblob(2000) WHERE id % 13 = 0")
    write("INSERT INTO t(v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) SELECT randomblob(2000) FROM n")
    const expected = Buffer.from(owner.database.serialize())
    expect(expected.byteLength).toBeGreaterThan(20_000_000)

    const snapshotsDir = path.join(dir.path, "snapshots")
    const snapshots = await Effect.runPromise(Effect.scoped(Effect.map(Layer.build(Snapshots.layer({ dir: snapshotsDir, retain: 1 }).pipe(Layer.provide(Disk.layerNode))), (c) => Context.get(c, Snapshots))))
    const meta = { index, term: 1, config: { members: [{ id: 1, address: "a:1", role: "voter" as const }] } }
    const job = Effect.runSync(machine.prepareSnapshot)
    expect(job.concurrent).toBe(true)

    const delay = monitorEventLoopDelay({ resolution: 1 })
    delay.enable()
    const started = performance.now()
    const fiber = Effect.runFork(Effect.ensuring(writeSnapshotFrom(snapshots, meta, job.write), job.release))
    // The writer goes on while the copy runs: commits apply, checkpoints wait.
    let writesDuring = 0
    let checkpointsHeld = 0
    while (fiber.unsafePoll() === null) {
      write(`INSERT INTO t(v) VALUES (randomblob(100))`)
      writesDuring++
      // Held while the job copies; the last turns may come after it released the hold (the
      // store then fsyncs and renames the file), when a checkpoint runs.
      if (owner.database.checkpoint().busy) checkpointsHeld++
      await new Promise((resolve) => setImmediate(resolve))
    }
    const exit = await Effect.runPromise(Fiber.await(fiber))
    const tookMs = performance.now() - started
    delay.disable()
    expect(exit._tag).toBe("Success")
    console.log(`leader snapshot of ${(expected.byteLength / 1e6).toFixed(1)} MB: ${tookMs.toFixed(0)} ms, ${writesDuring} writes applied meanwhile, event loop max delay ${(delay.max / 1e6).toFixed(1)} ms`)
    expect(writesDuring).toBeGreaterThan(5)
    expect(checkpointsHeld).toBeGreaterThan(5)
    expect(owner.database.checkpoint().busy).toBe(false) // released after the copy
    // A job whose store failed before it ever wrote still gives the checkpoints back.
    const unused = Effect.runSync(machine.prepareSnapshot)
    write(`INSERT INTO t(v) VALUES (randomblob(100))`)
    expect(owner.database.checkpoint().busy).toBe(true)
    Effect.runSync(unused.release)
    expect(owner.database.checkpoint().busy).toBe(false)

    // Installed on another node: the committed state at `index`, byte for byte.
    const other = tempDirectory("tqlite-leader-snapshot-target-")
    const target = Effect.runSync(SqliteMachine.open({ dataDir: other.path, nodeId: 2, pageSize, fsync: "off", bootSnapshot: null }))
    cleanups.push(() => {
      target.close()
      other.remove()
    })
    await Effect.runPromise(Effect.flatMap(Effect.orDie(snapshots.source(meta)), (source) => target.restore(meta, source)))
    const installed = fs.readFileSync(target.databasePath("db"))
    expect(installed.byteLength).toBe(expected.byteLength)
    expect(Buffer.compare(installed, expected)).toBe(0)
  }, 120_000)
})
