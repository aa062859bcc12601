// How the state machine treats the leading writer's entries now that it never calls back into
// the writer: it recognizes them by origin and pending seq, moves the read view itself, and says
// `OwnCopy` for a second copy of an entry already applied (the writer re-proposed it after an
// unknown outcome), which is how the writer learns that its entry committed.
import { inThreadReadPool } from "../../src/sqlite/readPool/ReadPool.ts"
import { Effect } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import { LeaderDatabase } from "../../src/sqlite/LeaderDatabase.ts"
import type { LeaderSlotOwner } from "../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { encodeWriteEntry } from "../../src/sqlite/writeEntry.ts"
import { pageSize, tempDirectory } from "./helpers.ts"

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup()
})

function setup() {
  const dir = tempDirectory()
  const machine = Effect.runSync(SqliteMachine.open({ dataDir: dir.path, nodeId: 1, pageSize, fsync: "off", bootSnapshot: null }))
  cleanups.push(() => {
    machine.close()
    dir.remove()
  })
  Effect.runSync(machine.apply({ kind: "barrier", term: 1, index: 1 }))
  const epoch = machine.nextEpoch()
  const owner = Effect.runSync(
    machine.lead("db", 1, (databasePath): LeaderSlotOwner => ({
      term: 1,
      origin: { node: 1, epoch },
      database: LeaderDatabase.open({ databasePath, pageSize, readersMax: 4, cachePages: 100, statementCacheMax: 16, readPool: inThreadReadPool({ readWorkersMax: 1, readQueueMax: 8, queryTimeoutMs: 10_000, statementCacheMax: 16 }) })
    }))
  )
  cleanups.unshift(() => owner.database.close("keepWal"))
  /** A local commit of `sql` as the entry the writer would propose. */
  const localCommit = (sql: string, seq: number, origin = { node: 1, epoch }) => {
    owner.database.commitLocally(() => owner.database.writer.db.exec(sql))
    const commit = owner.database.captureLocalCommit(seq)
    expect(commit).not.toBeNull()
    const data = encodeWriteEntry({ origin: { ...origin, seq }, previousChangeIndex: machine.lastChangeIndex("db"), database: "db", pageSet: commit!.pageSet })
    return { data, pageSet: commit!.pageSet }
  }
  // Number(): main returns integers as bigint, this branch as number.
  const count = () => Number(owner.database.committedView.run("SELECT count(*) AS n FROM sqlite_schema", []).rows.rows[0]?.[0])
  return { machine, owner, localCommit, count }
}

describe("the machine and the leading writer's entries", () => {
  it("applies the writer's entry as its own, moves the read view, and calls a second copy OwnCopy", () => {
    const { machine, owner, localCommit, count } = setup()
    const { data } = localCommit("CREATE TABLE t(x)", 1)
    expect(count()).toBe(0)
    const first = Effect.runSync(machine.apply({ kind: "command", term: 1, index: 2, data }))
    expect(first).toEqual({ _tag: "Own", database: "db", seq: 1 })
    // The read view moved when the entry was applied, not when the writer heard of it.
    expect(owner.database.pendingCommit).toBeNull()
    expect(count()).toBe(1)
    const copy = Effect.runSync(machine.apply({ kind: "command", term: 1, index: 3, data }))
    expect(copy).toEqual({ _tag: "OwnCopy", database: "db", seq: 1 })
    expect(machine.stats).toMatchObject({ own: 1, skipped: 1 })
    expect(machine.lastChangeIndex("db")).toBe(2)
  })

  it("does not call an entry of another writer epoch with the same seq OwnCopy", () => {
    const { machine, localCommit } = setup()
    const { data, pageSet } = localCommit("CREATE TABLE t(x)", 1)
    expect(Effect.runSync(machine.apply({ kind: "command", term: 1, index: 2, data }))._tag).toBe("Own")
    // Same pages and seq, but an earlier writer's origin: a stranger's entry, skipped by the chain
    // check, never taken for this writer's commit.
    const stranger = encodeWriteEntry({ origin: { node: 1, epoch: 999, seq: 1 }, previousChangeIndex: 0, database: "db", pageSet })
    expect(Effect.runSync(machine.apply({ kind: "command", term: 1, index: 3, data: stranger }))._tag).toBe("Skipped")
    // Nor one of another term.
    expect(Effect.runSync(machine.apply({ kind: "command", term: 2, index: 4, data }))._tag).toBe("Skipped")
  })
})
