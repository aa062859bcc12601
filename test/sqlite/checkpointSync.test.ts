// A leader's checkpoint runs without SQLite's own fsyncs (they held the event loop 100–350 ms for
// a 20 MiB WAL: issue 17's write stalls), so the machine fdatasyncs the main file itself, off the
// loop, before `applied-state` says the file holds the checkpointed commits. Mutation: the
// `skipCheckpointSync` bug records without that fdatasync, and this test sees it.
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import type { DiskFile, DiskService } from "../../src/storage/Disk.ts"
import { nodeDisk } from "../../src/storage/Disk.ts"
import type { LeaderSlotOwner, SqliteMachineBugs } from "../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import path from "node:path"
import type { AppliedState } from "../../src/sqlite/appliedState.ts"
import { AppliedStateFile } from "../../src/sqlite/appliedState.ts"
import { ledMachine, tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))

/** The real disk, recording each fdatasync and each write by the path it concerns. */
function recordingDisk(ops: Array<string>): DiskService {
  const wrap = (file: DiskFile): DiskFile => ({
    ...file,
    write: (position, data) => Effect.zipRight(Effect.sync(() => void ops.push(`write ${file.path}`)), file.write(position, data)),
    writeAsync: (position, data) => Effect.zipRight(Effect.sync(() => void ops.push(`write ${file.path}`)), file.writeAsync!(position, data)),
    sync: Effect.zipRight(file.sync, Effect.sync(() => void ops.push(`sync ${file.path}`)))
  })
  return { ...nodeDisk, open: (path, mode) => Effect.map(nodeDisk.open(path, mode), wrap) }
}

/** A leader commits two transactions, checkpoints and records it; the disk operations of the record. */
async function checkpointOps(
  bugs?: SqliteMachineBugs,
  records?: (machine: SqliteMachine, owner: LeaderSlotOwner) => Effect.Effect<void>
): Promise<{ readonly ops: ReadonlyArray<string>; readonly databasePath: string; readonly recorded: AppliedState | null; readonly appliedIndex: number }> {
  const dir = tempDirectory("tqlite-checkpoint-sync-")
  dirs.push(dir)
  const ops: Array<string> = []
  const disk = recordingDisk(ops)
  const { machine, owner, database, commit } = await ledMachine(dir.path, { disk, ...(bugs !== undefined ? { bugs } : {}) })
  for (const sql of ["CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB); INSERT INTO t(b) VALUES (randomblob(3000))", "INSERT INTO t(b) VALUES (randomblob(50000))"]) await commit(sql)
  expect(database.checkpoint().busy).toBe(false)
  ops.length = 0
  await Effect.runPromise(records !== undefined ? records(machine, owner) : machine.checkpointed("main", owner))
  const databasePath = machine.databasePath("main")
  const appliedIndex = machine.appliedIndex
  await Effect.runPromise(machine.release("main", owner, "keepWal", false))
  machine.close()
  const { file, state } = await Effect.runPromise(AppliedStateFile.open(nodeDisk, path.join(dir.path, "applied-state"), "sync"))
  file.close()
  return { ops: [...ops], databasePath, recorded: state, appliedIndex }
}

/** Whether the main file was fdatasynced before the record (applied-state) was written. */
const syncedBeforeRecord = ({ ops, databasePath }: { readonly ops: ReadonlyArray<string>; readonly databasePath: string }): boolean => {
  const synced = ops.indexOf(`sync ${databasePath}`)
  const recorded = ops.findIndex((op) => op.startsWith("write ") && op.endsWith("applied-state"))
  return recorded >= 0 && synced >= 0 && synced < recorded
}

describe("a leader's checkpoint", () => {
  it("is recorded only after the machine fdatasynced the main file (SQLite's own fsyncs are off)", async () => {
    const recorded = await checkpointOps()
    expect(recorded.ops.some((op) => op.endsWith("applied-state"))).toBe(true)
    expect(syncedBeforeRecord(recorded)).toBe(true)
    // Mutation: recording without the fdatasync is seen.
    expect(syncedBeforeRecord(await checkpointOps({ skipCheckpointSync: true }))).toBe(false)
  })

  it("is recorded at the index it ran at, and an older record arriving late changes nothing (the writer goes on meanwhile)", async () => {
    // Entries 1 (barrier) to 3 applied; the checkpoint ran at 3. A record that names 2 (an older
    // checkpoint's, late for the lock) after it leaves 3; one naming 3 while the machine applied
    // more says 3, not the applied index.
    const late = await checkpointOps(undefined, (machine, owner) =>
      Effect.zipRight(
        machine.checkpointed("main", owner, { fileIndex: 3, lastChangeIndex: 3 }),
        machine.checkpointed("main", owner, { fileIndex: 2, lastChangeIndex: 2 })
      ))
    expect(late.recorded?.databases["main"]).toEqual({ fileIndex: 3, lastChangeIndex: 3 })
    const early = await checkpointOps(undefined, (machine, owner) => machine.checkpointed("main", owner, { fileIndex: 2, lastChangeIndex: 2 }))
    expect(early.appliedIndex).toBe(3)
    expect(early.recorded?.databases["main"]).toEqual({ fileIndex: 2, lastChangeIndex: 2 })
  })
})
