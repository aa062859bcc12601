// A leader's checkpoint in the checkpoint worker (CheckpointWorker.ts, LeaderDatabase
// .checkpointOffLoop): a WAL of ~20 MiB copied into the main file while the event loop runs
// timers (the writer's own checkpoint held it 35–400 ms for that: issue 17), the same end state
// as the writer's checkpoint (WAL emptied, every committed row in the main file, the committed
// view pinned again), and a step-down in the middle of one waits for the worker before it closes
// the connections (else the worker's connection could be the last one open).
import { Effect, Fiber } from "effect"
import fs from "node:fs"
import { afterAll, describe, expect, it } from "vitest"
import { CheckpointWorker } from "../../src/sqlite/CheckpointWorker.ts"
import { integrityCheck, ledMachine, readOnly, tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
const workers: Array<CheckpointWorker> = []
afterAll(() => {
  workers.forEach((w) => w.close())
  dirs.forEach((d) => d.remove())
})

/** A leader with `blobs` × 1 MiB committed in its WAL (one entry per blob), led through a
 * machine, its checkpoints in a worker. */
async function leaderWithWal(blobs: number) {
  const dir = tempDirectory("tqlite-checkpoint-offloop-")
  dirs.push(dir)
  const worker = new CheckpointWorker()
  workers.push(worker)
  const { machine, owner, database, commit } = await ledMachine(dir.path, { checkpointWorker: worker })
  for (const sql of ["CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)", ...Array.from({ length: blobs }, () => "INSERT INTO t(b) VALUES (randomblob(1048576))")]) await commit(sql)
  return { machine, owner, database, worker, databasePath: machine.databasePath("main") }
}

/** Descriptors of this process open on `filePath` (every thread's: Linux). */
function descriptorsOf(filePath: string): number {
  let count = 0
  for (const fd of fs.readdirSync("/proc/self/fd")) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === filePath) count++
    } catch {
      // closed meanwhile
    }
  }
  return count
}

describe("a leader's checkpoint in the checkpoint worker", () => {
  it("copies the WAL while the event loop runs, and ends as the writer's own checkpoint does", async () => {
    const { machine, owner, database, worker, databasePath } = await leaderWithWal(20)
    expect(database.checkpointsOffLoop).toBe(true)
    expect(fs.statSync(`${databasePath}-wal`).size).toBeGreaterThan(20 * 1024 * 1024)
    let turns = 0
    let done = false
    const timer = setInterval(() => {
      if (!done) turns++
    }, 0)
    const outcome = await Effect.runPromise(database.checkpointOffLoop()).finally(() => {
      done = true
      clearInterval(timer)
    })
    expect(outcome.busy).toBe(false)
    expect(worker.runs).toBe(1)
    // The loop ran timers while the worker copied 20 MiB (the writer's own checkpoint is one
    // synchronous call: no timer runs inside it).
    expect(turns).toBeGreaterThan(0)
    expect(fs.statSync(`${databasePath}-wal`).size).toBe(0)
    expect(database.committedView.inTransaction).toBe(true)
    // The main file alone holds every committed row.
    await Effect.runPromise(machine.release("main", owner, "keepWal", false))
    fs.rmSync(`${databasePath}-wal`, { force: true })
    fs.rmSync(`${databasePath}-shm`, { force: true })
    expect(readOnly(databasePath, (db) => [integrityCheck(db), db.prepare("SELECT count(*) AS n FROM t WHERE length(b) = 1048576").get()])).toEqual(["ok", { n: 20 }])
    machine.close()
  })

  it("a step-down during the checkpoint waits for the worker, then leaves exactly the committed state", async () => {
    const { machine, owner, database, databasePath } = await leaderWithWal(20)
    const openBefore = descriptorsOf(databasePath)
    const running = Effect.runFork(database.checkpointOffLoop())
    // The step-down arrives once the worker has the database open (one more descriptor of the
    // main file in this process), while it copies: the machine's release closes the connections,
    // and close waits for the worker's connection to close first. Without that wait the
    // step-down's own checkpoint meets the worker's and is refused (an assertion).
    const deadline = Date.now() + 10_000
    while (descriptorsOf(databasePath) <= openBefore && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 1))
    expect(descriptorsOf(databasePath)).toBeGreaterThan(openBefore)
    await Effect.runPromise(machine.release("main", owner, "discard", false))
    const outcome = await Effect.runPromise(Fiber.join(running))
    expect(typeof outcome.busy).toBe("boolean")
    expect(database.isOpen).toBe(false)
    expect(fs.existsSync(`${databasePath}-wal`)).toBe(false)
    expect(readOnly(databasePath, (db) => [integrityCheck(db), db.prepare("SELECT count(*) AS n FROM t").get()])).toEqual(["ok", { n: 20 }])
    machine.close()
  })
})
