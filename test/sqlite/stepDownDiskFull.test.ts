// A leader's step-down on a full disk (issue 13; the chaos suite's follower divergence and
// malformed databases). Stepping down cuts the writer's uncommitted frames from the WAL and
// checkpoints the committed ones into the main file; only then may the page applier write the
// next leader's pages there. When ENOSPC interrupts the cut, the committed frames still live only
// in the WAL, which every start deletes: the discard must be finished (on the applier's retry)
// before any page is written, whether the step-down came from the writer (`release`) or from
// another leader's entry arriving first.
import fs from "node:fs"
import path from "node:path"
import Database from "better-sqlite3"
import { Effect, Exit } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import type { SnapshotSink } from "../../src/actors/snapshotData.ts"
import type { DiskService } from "../../src/storage/Disk.ts"
import { nodeDisk } from "../../src/storage/Disk.ts"
import { DiskFull } from "../../src/storage/errors.ts"
import { LeaderDatabase } from "../../src/sqlite/LeaderDatabase.ts"
import { inThreadReadPool } from "../../src/sqlite/readPool/ReadPool.ts"
import type { LeaderSlotOwner } from "../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { encodeWriteEntry } from "../../src/sqlite/writeEntry.ts"
import { pageSize, snapshotSourceOf, tempDirectory } from "./helpers.ts"

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup()
})

const openLeaderDatabase = (databasePath: string, disk: DiskService = nodeDisk) =>
  LeaderDatabase.open({
    databasePath,
    disk,
    pageSize,
    readersMax: 4,
    cachePages: 100,
    statementCacheMax: 16,
    readPool: inThreadReadPool({ readWorkersMax: 1, readQueueMax: 8, queryTimeoutMs: 10_000, statementCacheMax: 16 })
  })

/** The real disk, except that SQLite's own writes (the step-down's checkpoint) fail with ENOSPC
 * while `full.on` (SQLite does its own I/O; tqlite asks the disk first). */
function fullDisk() {
  const full = { on: false }
  const disk: DiskService = {
    ...nodeDisk,
    checkWritable: (filePath) => (full.on ? Effect.fail(new DiskFull({ op: "write", path: filePath, cause: Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" }) })) : Effect.void)
  }
  return { full, disk }
}

/** Node 1 leads "db" in term 1 with three committed rows, all still in its WAL (never
 * checkpointed), and one local commit (99) that never committed. `foreign` is node 2's next
 * entry (term 2), computed on the committed state: it inserts 7. */
async function leaderWithCommittedWal(disk: DiskService) {
  const dir = tempDirectory()
  const otherDir = tempDirectory()
  const machine = await Effect.runPromise(SqliteMachine.open({ dataDir: dir.path, nodeId: 1, pageSize, fsync: "off", disk, bootSnapshot: null }))
  cleanups.push(() => {
    machine.close()
    dir.remove()
    otherDir.remove()
  })
  Effect.runSync(machine.apply({ kind: "barrier", term: 1, index: 1 }))
  const epoch = machine.nextEpoch()
  const owner = await Effect.runPromise(
    machine.lead("db", 1, (databasePath): LeaderSlotOwner => ({ term: 1, origin: { node: 1, epoch }, database: openLeaderDatabase(databasePath, disk) }))
  )
  cleanups.unshift(() => owner.database.close("keepWal"))
  let index = 1
  const commit = (sql: string, seq: number) => {
    owner.database.commitLocally(() => owner.database.writer.db.exec(sql))
    const local = owner.database.captureLocalCommit(seq)!
    const data = encodeWriteEntry({ origin: { node: 1, epoch, seq }, previousChangeIndex: machine.lastChangeIndex("db"), database: "db", pageSet: local.pageSet })
    expect(Effect.runSync(machine.apply({ kind: "command", term: 1, index: ++index, data }))._tag).toBe("Own")
  }
  commit("CREATE TABLE t(x)", 1)
  for (let v = 1; v <= 3; v++) commit(`INSERT INTO t VALUES (${v})`, v + 1)
  // Node 2 builds on the committed state (rows 1–3): a copy of it, one more row.
  const otherPath = path.join(otherDir.path, "db.db")
  fs.writeFileSync(otherPath, owner.database.serialize())
  const other = openLeaderDatabase(otherPath)
  other.commitLocally(() => other.writer.db.exec("INSERT INTO t VALUES (7)"))
  const foreignCommit = other.captureLocalCommit(1)!
  other.close("keepWal")
  const committedIndex = index
  // Uncommitted: frames in the WAL that the step-down must cut.
  owner.database.commitLocally(() => owner.database.writer.db.exec("INSERT INTO t VALUES (99)"))
  expect(owner.database.captureLocalCommit(5)).not.toBeNull()
  const foreign = encodeWriteEntry({ origin: { node: 2, epoch: 1, seq: 1 }, previousChangeIndex: machine.lastChangeIndex("db"), database: "db", pageSet: foreignCommit.pageSet })
  expect(fs.statSync(`${machine.databasePath("db")}-wal`).size).toBeGreaterThan(0)
  return { machine, owner, foreign, nextIndex: committedIndex + 1 }
}

/** The main file as the next start sees it: every WAL deleted first (as `recoverFiles` does). */
function rowsAfterRestart(machine: SqliteMachine): { readonly rows: Array<number>; readonly integrity: string } {
  const file = machine.databasePath("db")
  machine.close()
  fs.rmSync(`${file}-wal`, { force: true })
  fs.rmSync(`${file}-shm`, { force: true })
  const db = new Database(file, { readonly: true })
  try {
    const integrity = String(db.pragma("integrity_check", { simple: true }))
    const rows = (db.prepare("SELECT x FROM t ORDER BY x").raw().all() as Array<[number]>).map((row) => row[0])
    return { rows, integrity }
  } finally {
    db.close()
  }
}

describe("a step-down that meets a full disk", () => {
  it("release: the failed discard is finished before the next leader's pages are written", async () => {
    const { full, disk } = fullDisk()
    const { machine, owner, foreign, nextIndex } = await leaderWithCommittedWal(disk)
    full.on = true
    // Not the writer's failure: the step-down logs the full disk and leaves the rest to the applier.
    await Effect.runPromise(machine.release("db", owner, "discard", false))
    Effect.runSync(machine.apply({ kind: "barrier", term: 2, index: nextIndex }))
    const entry = { kind: "command" as const, term: 2, index: nextIndex + 1, data: foreign }
    // Still full: the applier's attempt fails (it retries after a backoff) and writes nothing.
    expect(() => Effect.runSync(machine.apply(entry))).toThrow(/disk full/)
    full.on = false
    expect(Effect.runSync(machine.apply(entry))).toEqual({ _tag: "Pages", database: "db" })
    expect(rowsAfterRestart(machine)).toEqual({ rows: [1, 2, 3, 7], integrity: "ok" })
  })

  it("another leader's entry first: the discard it starts is finished on the applier's retry", async () => {
    const { full, disk } = fullDisk()
    const { machine, foreign, nextIndex } = await leaderWithCommittedWal(disk)
    Effect.runSync(machine.apply({ kind: "barrier", term: 2, index: nextIndex }))
    const entry = { kind: "command" as const, term: 2, index: nextIndex + 1, data: foreign }
    full.on = true
    expect(() => Effect.runSync(machine.apply(entry))).toThrow(/disk full/)
    full.on = false
    expect(Effect.runSync(machine.apply(entry))).toEqual({ _tag: "Pages", database: "db" })
    expect(rowsAfterRestart(machine)).toEqual({ rows: [1, 2, 3, 7], integrity: "ok" })
  })

  it("a snapshot taken meanwhile holds the committed rows, not the main file without them", async () => {
    const { full, disk } = fullDisk()
    const { machine, owner } = await leaderWithCommittedWal(disk)
    full.on = true
    await Effect.runPromise(machine.release("db", owner, "discard", false))
    const chunks: Array<Uint8Array> = []
    const sink: SnapshotSink = { chunkBytesMax: 64 * 1024, write: (chunk) => Effect.sync(() => void chunks.push(chunk.slice())) }
    // Still full: the snapshot cannot be taken yet (the applier waits and asks again).
    expect(Exit.isFailure(await Effect.runPromiseExit(machine.snapshot(sink)))).toBe(true)
    chunks.length = 0
    full.on = false
    await Effect.runPromise(machine.snapshot(sink))
    const bytes = Buffer.concat(chunks)
    // Restore it into a fresh machine and read what it holds.
    const dir = tempDirectory()
    cleanups.push(() => dir.remove())
    const copy = await Effect.runPromise(SqliteMachine.open({ dataDir: dir.path, nodeId: 3, pageSize, fsync: "off", bootSnapshot: null }))
    const meta = { index: 10, term: 2, config: { members: [] } }
    await Effect.runPromise(copy.restore(meta, snapshotSourceOf(meta, bytes)))
    expect(rowsAfterRestart(copy)).toEqual({ rows: [1, 2, 3], integrity: "ok" })
  })
})
