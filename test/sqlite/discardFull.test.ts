// A leader steps down while its disk is full: `release("discard")` cannot checkpoint its cut WAL
// into the main file. The committed frames are still only in that WAL, so nothing may write pages
// into the main file beside it, record the file as holding them, or serve it, before the discard
// is finished (the chaos suite's follower with fewer rows and its malformed databases; an
// own-copy read, whose reader deletes a WAL it finds beside the file: the SQLite simulator's
// malformed follower with follower reads, seeds 15 and 24).
// And the leader's own checkpoint on a full disk: reported busy and retried, never thrown into
// the writer.
import fs from "node:fs"
import path from "node:path"
import { Effect, Exit } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import type { DiskService } from "../../src/storage/Disk.ts"
import { nodeDisk } from "../../src/storage/Disk.ts"
import { DiskFull } from "../../src/storage/errors.ts"
import { LeaderDatabase } from "../../src/sqlite/LeaderDatabase.ts"
import { inThreadReadPool } from "../../src/sqlite/readPool/ReadPool.ts"
import type { LeaderSlotOwner } from "../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { encodeWriteEntry } from "../../src/sqlite/writeEntry.ts"
import { integrityCheck, pageSize, readOnly, tempDirectory } from "./helpers.ts"

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup()
})

const readPool = () => inThreadReadPool({ readWorkersMax: 1, readQueueMax: 8, queryTimeoutMs: 10_000, statementCacheMax: 16 })
const openLeader = (databasePath: string, disk: DiskService = nodeDisk) => LeaderDatabase.open({ databasePath, pageSize, readersMax: 4, cachePages: 100, statementCacheMax: 16, readPool: readPool(), disk })

/** A local commit of `sql` on `database`, captured: its page set. */
function commit(database: LeaderDatabase, sql: string, seq: number) {
  database.commitLocally(() => database.writer.db.exec(sql))
  const local = database.captureLocalCommit(seq)
  expect(local).not.toBeNull()
  return local!.pageSet
}

/** The real disk, where SQLite's own writes (the step-down checkpoint) fail while `full()`. */
function fullForSqlite(full: () => boolean): DiskService {
  return {
    ...nodeDisk,
    checkWritable: (filePath) => (full() ? Effect.fail(new DiskFull({ op: "write", path: filePath, cause: Object.assign(new Error("ENOSPC"), { code: "ENOSPC" }) })) : Effect.void)
  }
}

/** A leader on a disk that fails SQLite's own writes while `full`: its entry at index 2 (rows 1,
 * 2, 3) committed with its frames only in the WAL, and a local commit Raft never commits (666). */
async function leaderWithCommittedWal() {
  const dir = tempDirectory()
  cleanups.push(() => dir.remove())
  const fixture = {
    dir,
    full: false,
    disk: undefined as unknown as DiskService,
    machine: undefined as unknown as SqliteMachine,
    committedImage: new Uint8Array() as Uint8Array,
    owner: undefined as unknown as LeaderSlotOwner
  }
  fixture.disk = fullForSqlite(() => fixture.full)
  fixture.machine = await openMachine(fixture)
  cleanups.unshift(() => fixture.machine.close())
  const machine = fixture.machine
  Effect.runSync(machine.apply({ kind: "barrier", term: 1, index: 1 }))
  const epoch = machine.nextEpoch()
  const owner = await Effect.runPromise(machine.lead("db", 1, (databasePath): LeaderSlotOwner => ({ term: 1, origin: { node: 1, epoch }, database: openLeader(databasePath, fixture.disk) })))
  fixture.owner = owner
  // Index 2: the leader's own entry, committed; its frames are only in the WAL.
  const own = commit(owner.database, "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)", 1)
  const ownEntry = encodeWriteEntry({ origin: { node: 1, epoch, seq: 1 }, previousChangeIndex: 0, database: "db", pageSet: own })
  expect(Effect.runSync(machine.apply({ kind: "command", term: 1, index: 2, data: ownEntry }))._tag).toBe("Own")
  fixture.committedImage = owner.database.serialize()
  // A local commit Raft never commits: the WAL must be cut before it.
  commit(owner.database, "INSERT INTO t VALUES (666)", 2)
  return fixture
}

const openMachine = (fixture: { readonly dir: { readonly path: string }; readonly disk: DiskService }) =>
  Effect.runPromise(SqliteMachine.open({ dataDir: fixture.dir.path, nodeId: 1, pageSize, fsync: "sync", disk: fixture.disk, bootSnapshot: null }))

/** The next leader's (node 2, term 2) entry inserting 4, computed on the committed state. */
function nextLeaderEntry(committedImage: Uint8Array) {
  const other = tempDirectory()
  cleanups.push(() => other.remove())
  const otherPath = path.join(other.path, "db.db")
  fs.writeFileSync(otherPath, committedImage)
  const otherLeader = openLeader(otherPath)
  cleanups.unshift(() => otherLeader.close("keepWal"))
  const next = commit(otherLeader, "INSERT INTO t VALUES (4)", 1)
  return encodeWriteEntry({ origin: { node: 2, epoch: 1, seq: 1 }, previousChangeIndex: 2, database: "db", pageSet: next })
}

/** A restart deletes any WAL and trusts applied-state: the rows the main file alone holds, after
 * its integrity check. */
async function rowsAfterRestart(fixture: Awaited<ReturnType<typeof leaderWithCommittedWal>>) {
  fixture.machine.close()
  fixture.machine = await openMachine(fixture)
  return readOnly(fixture.machine.databasePath("db"), (db) => {
    expect(integrityCheck(db)).toBe("ok")
    return (db.prepare("SELECT x FROM t ORDER BY x").raw().all() as Array<[number]>).map((row) => row[0])
  })
}

describe("a step-down discard that a full disk interrupts", () => {
  it("is finished before another leader's pages are written, so the file holds every committed row", async () => {
    const fixture = await leaderWithCommittedWal()
    const { machine, owner } = fixture
    const nextEntry = nextLeaderEntry(fixture.committedImage)

    fixture.full = true
    // Step-down with the disk full: the cut's fsync fails.
    const released = await Effect.runPromiseExit(machine.release("db", owner, "discard", true))
    fixture.full = false
    // The next leader's barrier and entry arrive once space is back.
    Effect.runSync(machine.apply({ kind: "barrier", term: 2, index: 3 }))
    expect(Effect.runSync(machine.apply({ kind: "command", term: 2, index: 4, data: nextEntry }))._tag).toBe("Pages")
    await Effect.runPromise(machine.sync)
    expect(fs.existsSync(`${machine.databasePath("db")}-wal`)).toBe(false)
    expect(await rowsAfterRestart(fixture)).toEqual([1, 2, 3, 4])
    // The failed release was not a defect that stops the caller (the writer's role check).
    expect(Exit.isSuccess(released)).toBe(true)
  })

  it("is finished before an own-copy read opens the file (whose reader deletes a WAL beside it), or the read is refused while the disk is full", async () => {
    const fixture = await leaderWithCommittedWal()
    const { machine, owner } = fixture
    const nextEntry = nextLeaderEntry(fixture.committedImage)

    fixture.full = true
    expect(Exit.isSuccess(await Effect.runPromiseExit(machine.release("db", owner, "discard", true)))).toBe(true)
    const rowsOf = () => machine.withOwnCopy("db", (view) => view.run("SELECT x FROM t ORDER BY x", []).rows.rows.map((row) => Number(row[0])))
    // Still full: the file alone is not the committed state, so no read is served from it.
    expect(rowsOf()._tag).toBe("Unavailable")
    expect(fs.existsSync(`${machine.databasePath("db")}-wal`)).toBe(true)
    fixture.full = false
    // Now the read finishes the discard first and sees every committed row, not the cut one.
    expect(rowsOf()).toEqual({ _tag: "Read", value: [1, 2, 3] })
    // The reader's own -wal (SQLite opens one beside the file) holds nothing.
    expect(fs.statSync(`${machine.databasePath("db")}-wal`, { throwIfNoEntry: false })?.size ?? 0).toBe(0)
    // The next leader's pages land on a file holding the committed state.
    Effect.runSync(machine.apply({ kind: "barrier", term: 2, index: 3 }))
    expect(Effect.runSync(machine.apply({ kind: "command", term: 2, index: 4, data: nextEntry }))._tag).toBe("Pages")
    await Effect.runPromise(machine.sync)
    expect(rowsOf()).toEqual({ _tag: "Read", value: [1, 2, 3, 4] })
    expect(await rowsAfterRestart(fixture)).toEqual([1, 2, 3, 4])
  })

  it("a writer's discard-and-reopen that a full disk stopped: no own-copy read opens the file (and deletes its WAL) before the writer releases it", async () => {
    const fixture = await leaderWithCommittedWal()
    const { machine, owner } = fixture
    fixture.full = true
    // A transaction refused after its local commit (TOOBIG): the writer cuts it and reopens.
    expect(() => owner.database.reopenDiscarding()).toThrow()
    const rowsOf = () => machine.withOwnCopy("db", (view) => view.run("SELECT x FROM t ORDER BY x", []).rows.rows.map((row) => Number(row[0])))
    expect(rowsOf()._tag).toBe("Unavailable")
    expect(fs.statSync(`${machine.databasePath("db")}-wal`).size).toBeGreaterThan(0)
    fixture.full = false
    await Effect.runPromise(machine.release("db", owner, "discard", false))
    expect(rowsOf()).toEqual({ _tag: "Read", value: [1, 2, 3] })
  })

  it("a leader's checkpoint on a full disk is reported busy (the WAL stays, the committed view stays pinned), and completes once space is back", () => {
    const dir = tempDirectory()
    cleanups.push(() => dir.remove())
    let full = false
    const database = openLeader(path.join(dir.path, "db.db"), fullForSqlite(() => full))
    cleanups.unshift(() => database.close("keepWal"))
    commit(database, "CREATE TABLE t(x); INSERT INTO t VALUES (1)", 1)
    database.markCommitted(1)
    full = true
    const refused = database.checkpoint()
    expect(refused.busy).toBe(true)
    expect(database.walBytes()).toBeGreaterThan(0)
    // Still pinned: a local commit made now is not visible on the committed view.
    commit(database, "INSERT INTO t VALUES (2)", 2)
    expect(Number(database.committedView.run("SELECT count(*) FROM t", []).rows.rows[0]?.[0])).toBe(1)
    database.markCommitted(2)
    full = false
    expect(database.checkpoint().busy).toBe(false)
    expect(database.walBytes()).toBe(0)
  })
})
