// A long read on the leader and the writer's checkpoints (issue 12's long-query target): one node
// on the real runtime, reads in worker threads, checkpoints in the checkpoint worker. A streamed
// read left open holds its snapshot (SQLite cannot reset the WAL under it); meanwhile writes
// push the WAL far past walCheckpointBytes. Counted, not timed: the checkpoints that waited for
// readers (each one the worker's busy timeout, 250 ms, with the writer waiting) — at most one,
// then only tries that do not wait, one per further walCheckpointBytes of WAL; none at all once
// the read has been going for checkpointLongReadMs. Once the read ends, the next entry's
// checkpoint resets the WAL. The `checkpointWithoutBackoff` mutation (the writer core's back-off
// dropped before every input, no read's age told, as before either existed) waits at every entry.
import { Effect, Exit, Scope } from "effect"
import fs from "node:fs"
import { afterAll, describe, expect, it } from "vitest"
import type { SqlSession } from "../../src/sqlite/Sql.ts"
import { SqliteCluster } from "../sim/full/SqliteCluster.ts"
import { Prng } from "../sim/Prng.ts"
import { tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))

const walCheckpointBytes = 64 * 1024
/** Writes while the read holds its snapshot: each one entry of ~20 KiB of WAL (a 16 KiB blob). */
const writesHeld = 24

interface Counts {
  readonly waited: number
  readonly busy: number
  readonly attempts: number
  readonly walBytesHeld: number
  readonly walBytesAfter: number
}

/** `holdFirstMs`: how long the read is held before the writes start. */
function run(options: { readonly mutated?: boolean; readonly checkpointLongReadMs: number; readonly holdFirstMs?: number }): Promise<Counts> {
  const { checkpointLongReadMs, holdFirstMs = 0, mutated = false } = options
  const dir = tempDirectory("tqlite-checkpoint-backoff-")
  dirs.push(dir)
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const cluster = new SqliteCluster({
      baseDir: dir.path,
      rng: new Prng(5),
      tickMs: 10,
      fsync: "off",
      snapshotEveryEntries: 100_000,
      disk: "node",
      readPool: "workers",
      limits: { walCheckpointBytes, checkpointLongReadMs, queryTimeoutMs: 60_000 },
      ...(mutated ? { databasesBugs: { checkpointWithoutBackoff: true } } : {})
    })
    yield* Effect.addFinalizer(() => cluster.shutdown())
    yield* cluster.bootstrap([1])
    const leader = yield* cluster.awaitLeader()
    const s: SqlSession = yield* leader.dbs.open("main")
    yield* s.execSql("CREATE TABLE t(x INTEGER, b BLOB)", [])
    yield* s.execSql("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 20000) INSERT INTO t SELECT n, NULL FROM c", [])
    const writer = leader.dbs.writer("main")
    expect(writer).toBeDefined()
    const walPath = `${leader.machine.databasePath("main")}-wal`
    // Settled first: whatever the WAL holds now is checkpointed, no reader in the way.
    yield* s.execSql("INSERT INTO t VALUES (0, NULL)", [])
    const start = { ...writer!.stats }

    // The long read: a streamed scan taken one batch and left open (its reader keeps the
    // snapshot until the scope closes).
    const readScope = yield* Scope.make()
    const stream = yield* Effect.provideService(s.querySqlStream!("SELECT x, b FROM t", []), Scope.Scope, readScope)
    expect(stream.first.done).toBe(false)
    if (holdFirstMs > 0) yield* Effect.sleep(holdFirstMs)
    for (let i = 1; i <= writesHeld; i++) yield* s.execSql("INSERT INTO t VALUES (?, randomblob(16384))", [-i])
    const held = { ...writer!.stats }
    const walBytesHeld = fs.statSync(walPath).size
    yield* Scope.close(readScope, Exit.void)

    // The read ended: the next entries' checkpoint (waiting for readers again) resets the WAL.
    for (let i = 1; i <= 3; i++) yield* s.execSql("INSERT INTO t VALUES (?, NULL)", [i])
    const walBytesAfter = fs.statSync(walPath).size
    return {
      waited: held.checkpointsBusyWaited - start.checkpointsBusyWaited,
      busy: held.checkpointsBusy - start.checkpointsBusy,
      attempts: held.checkpoints - start.checkpoints,
      walBytesHeld,
      walBytesAfter
    }
  })))
}

describe("checkpoints beside a long read on the leader", () => {
  it("wait for the reader once, then only try without waiting, and reset the WAL once it ends", async () => {
    // The read's age never counts here: the back-off alone.
    const counts = await run({ checkpointLongReadMs: 600_000 })
    console.log(`with the back-off: ${JSON.stringify(counts)}`)
    // The WAL grew far past the bound while the read held it (nothing can reset it then).
    expect(counts.walBytesHeld).toBeGreaterThan(5 * walCheckpointBytes)
    // One checkpoint waited for the reader; the others did not wait, one per further
    // walCheckpointBytes of WAL at most.
    expect(counts.waited).toBe(1)
    expect(counts.busy).toBeGreaterThanOrEqual(2)
    expect(counts.attempts).toBeLessThanOrEqual(1 + Math.ceil(counts.walBytesHeld / walCheckpointBytes))
    expect(counts.attempts).toBeLessThan(writesHeld / 2)
    // Reset once the reader was gone (the WAL is truncated to nothing, then the last writes).
    expect(counts.walBytesAfter).toBeLessThan(walCheckpointBytes)
  }, 60_000)

  it("never wait for a read that has been going for checkpointLongReadMs", async () => {
    const counts = await run({ checkpointLongReadMs: 300, holdFirstMs: 600 })
    console.log(`read held first: ${JSON.stringify(counts)}`)
    expect(counts.walBytesHeld).toBeGreaterThan(5 * walCheckpointBytes)
    expect(counts.waited).toBe(0)
    expect(counts.busy).toBeGreaterThanOrEqual(2)
    expect(counts.attempts).toBeLessThanOrEqual(1 + Math.ceil(counts.walBytesHeld / walCheckpointBytes))
    expect(counts.walBytesAfter).toBeLessThan(walCheckpointBytes)
  }, 60_000)

  it("without the back-off (mutation), every entry past the bound waits for the reader", async () => {
    const counts = await run({ mutated: true, checkpointLongReadMs: 300 })
    console.log(`without it: ${JSON.stringify(counts)}`)
    expect(counts.walBytesHeld).toBeGreaterThan(5 * walCheckpointBytes)
    // Each of these waited the busy timeout with the writer waiting behind it.
    expect(counts.waited).toBeGreaterThan(writesHeld / 2)
    expect(counts.walBytesAfter).toBeLessThan(walCheckpointBytes)
  }, 60_000)
})
