// A follower's apply of a large entry (≥ largePayloadBytes) writes its pages on the thread pool,
// a run at a time (SqliteMachine.applyLargeEntry, PageApplier.applyOffLoop): the event loop runs
// while they are written — a 20 MiB entry written in one synchronous step held a follower's loop
// 50–500 ms (issue 17) — and an own-copy read meanwhile is refused (the file holds part of the
// entry), never served half of it. Without the change the apply is one synchronous step: the
// timer below cannot run before it ends.
import path from "node:path"
import { Effect } from "effect"
import type { DiskFile, DiskService } from "../../src/storage/Disk.ts"
import { nodeDisk } from "../../src/storage/Disk.ts"
import { afterEach, describe, expect, it } from "vitest"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { largePayloadBytes } from "../../src/runtime/yieldToLoop.ts"
import { pageSize, recordingLeader, tempDirectory } from "./helpers.ts"

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup()
})

/** A recording leader in a fresh directory (both cleaned up), its table t(id, b BLOB) recorded. */
function leaderWithTable() {
  const dir = tempDirectory()
  cleanups.push(() => dir.remove())
  const recorder = recordingLeader(dir.path)
  cleanups.unshift(() => recorder.close())
  recorder.leader.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
  recorder.record()
  return { dir, recorder }
}

describe("large entries applied off the event loop", () => {
  it("gives the loop turns while the pages are written, refuses own-copy reads meanwhile, and ends with the whole entry", async () => {
    const { dir, recorder } = leaderWithTable()
    // 8 MiB of blobs in one transaction: ~2,000 pages, several runs of ≤ 512 pages.
    recorder.leader.exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8) INSERT INTO t SELECT i, randomblob(1024 * 1024) FROM n")
    recorder.record()
    const [table, big] = recorder.entries
    expect(recorder.entries).toHaveLength(2)
    expect(big!.kind === "command" && big!.data.byteLength >= largePayloadBytes).toBe(true)

    const machine = await Effect.runPromise(SqliteMachine.open({ dataDir: `${dir.path}/node`, nodeId: 1, pageSize, fsync: "sync", bootSnapshot: null }))
    cleanups.unshift(() => machine.close())
    const rows = () => machine.withOwnCopy("main", (view) => Number(view.run("SELECT count(*) FROM t", []).rows.rows[0]![0]))
    await Effect.runPromise(machine.apply(table!))
    await Effect.runPromise(machine.sync)
    expect(rows()).toEqual({ _tag: "Read", value: 0 })

    let applied = false
    const seenWhileApplying: Array<ReturnType<typeof rows>> = []
    const turns = setInterval(() => {
      if (!applied) seenWhileApplying.push(rows())
    }, 0)
    try {
      const result = await Effect.runPromise(Effect.tap(machine.apply(big!), () => Effect.sync(() => (applied = true))))
      expect(result).toEqual({ _tag: "Pages", database: "main" })
    } finally {
      clearInterval(turns)
    }
    // The loop ran timers while the pages were written, and no read saw part of them.
    expect(seenWhileApplying.length).toBeGreaterThan(0)
    for (const seen of seenWhileApplying) {
      expect(seen._tag).toBe("Unavailable")
      if (seen._tag === "Unavailable") expect(seen.reason).toMatch(/being written/)
    }
    expect(machine.stats.offLoopApplies).toBe(1)
    await Effect.runPromise(machine.sync)
    expect(rows()).toEqual({ _tag: "Read", value: 8 })
    const blobs = machine.withOwnCopy("main", (view) => view.run("SELECT count(*) FROM t WHERE length(b) = 1048576", []).rows.rows[0]![0])
    expect(blobs).toEqual({ _tag: "Read", value: 8n })
  })

  it("writes the applied-state record on the thread pool (a small synchronous write blocks under writeback throttling)", async () => {
    const { dir, recorder } = leaderWithTable()
    const writes: Array<string> = []
    const disk: DiskService = {
      ...nodeDisk,
      open: (filePath, mode) =>
        Effect.map(nodeDisk.open(filePath, mode), (file): DiskFile => ({
          ...file,
          write: (position, data) => Effect.zipRight(Effect.sync(() => void writes.push(`sync ${path.basename(filePath)}`)), file.write(position, data)),
          writeAsync: (position, data) => Effect.zipRight(Effect.sync(() => void writes.push(`pool ${path.basename(filePath)}`)), file.writeAsync!(position, data))
        }))
    }
    const machine = await Effect.runPromise(SqliteMachine.open({ dataDir: `${dir.path}/node`, nodeId: 1, pageSize, fsync: "sync", disk, bootSnapshot: null }))
    cleanups.unshift(() => machine.close())
    writes.length = 0
    await Effect.runPromise(machine.apply(recorder.entries[0]!))
    await Effect.runPromise(machine.sync)
    expect(writes.filter((w) => w.endsWith("applied-state"))).toEqual(["pool applied-state"])
  })
})
