// Own-copy reads while a full disk stops a follower's page applier part way through an entry.
// The applier waits (Applier.ts `untilWritten`) and retries the entry; meanwhile a read whose
// level the published applied index already satisfies runs in its caller's fiber. The file then
// holds some of the entry's pages and not the others — a state no leader ever had — so the read
// is refused (SqlBusy at the SQL surface) until the retry wrote the entry whole. The mutation
// (`readTornEntry`) shows what it would see: half of one transaction.
import { Effect, Exit } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import type { DiskFile, DiskService } from "../../src/storage/Disk.ts"
import { nodeDisk } from "../../src/storage/Disk.ts"
import { DiskFull } from "../../src/storage/errors.ts"
import type { SqliteMachineBugs } from "../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { pageSize, recordingLeader, tempDirectory } from "./helpers.ts"

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup()
})

/** The real disk, where a main file's `write` fails (ENOSPC) once `writesLeft` reaches 0. */
function diskFullAfter(budget: { writesLeft: number }): DiskService {
  const fail = (filePath: string) => Effect.fail(new DiskFull({ op: "write", path: filePath, cause: Object.assign(new Error("ENOSPC"), { code: "ENOSPC" }) }))
  return {
    ...nodeDisk,
    open: (filePath, mode) =>
      Effect.map(nodeDisk.open(filePath, mode), (file): DiskFile => ({
        ...file,
        write: (position, data) => (filePath.endsWith(".db") && budget.writesLeft-- <= 0 ? fail(filePath) : file.write(position, data))
      }))
  }
}

/** Applies a table of 200 rows, then an entry that marks the first and the last row (two leaf
 * pages far apart: two separate writes), the second write failing; reads in between. */
async function tornEntry(bugs: SqliteMachineBugs) {
  const dir = tempDirectory()
  cleanups.push(() => dir.remove())
  const recorder = recordingLeader(dir.path)
  cleanups.unshift(() => recorder.close())
  recorder.leader.exec(`BEGIN; CREATE TABLE t(x INTEGER PRIMARY KEY, y INTEGER, pad BLOB);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) INSERT INTO t SELECT i, 0, zeroblob(400) FROM n; COMMIT`)
  recorder.record()
  recorder.leader.exec("UPDATE t SET y = 1 WHERE x IN (1, 200)")
  recorder.record()
  const [table, marks] = recorder.entries
  expect(recorder.entries).toHaveLength(2)

  const budget = { writesLeft: Number.MAX_SAFE_INTEGER }
  const machine = await Effect.runPromise(SqliteMachine.open({ dataDir: `${dir.path}/node`, nodeId: 1, pageSize, fsync: "sync", disk: diskFullAfter(budget), bootSnapshot: null, ...(bugs ? { bugs } : {}) }))
  cleanups.unshift(() => machine.close())
  const marked = () => machine.withOwnCopy("main", (view) => Number(view.run("SELECT count(*) FROM t WHERE y = 1", []).rows.rows[0]![0]))

  expect(Effect.runSync(machine.apply(table!))._tag).toBe("Pages")
  await Effect.runPromise(machine.sync)
  expect(marked()).toEqual({ _tag: "Read", value: 0 })
  // The disk fills after the entry's first write.
  budget.writesLeft = 1
  const failed = Effect.runSyncExit(machine.apply(marks!))
  expect(Exit.isFailure(failed)).toBe(true)
  const duringRetry = marked()
  // Space is back: the applier's retry writes the entry whole.
  budget.writesLeft = Number.MAX_SAFE_INTEGER
  expect(Effect.runSync(machine.apply(marks!))._tag).toBe("Pages")
  await Effect.runPromise(machine.sync)
  return { duringRetry, after: marked() }
}

describe("an own-copy read while an entry's page write waits for disk space", () => {
  it("is refused until the retry wrote the entry whole", async () => {
    const { duringRetry, after } = await tornEntry({})
    expect(duringRetry._tag).toBe("Unavailable")
    expect(after).toEqual({ _tag: "Read", value: 2 })
  })

  it("mutation: served anyway, it sees half of one transaction (one row marked of the two)", async () => {
    const { duringRetry, after } = await tornEntry({ readTornEntry: true })
    expect(duringRetry).toEqual({ _tag: "Read", value: 1 })
    expect(after).toEqual({ _tag: "Read", value: 2 })
  })
})
