// A follower's snapshot must not stop its applier (issue 17). A follower's applier used to wait
// for its whole snapshot copy (17 s at 2 GiB): its mailbox (4,096 batches) filled, then the Raft
// actor's `send` to it suspended (RaftActor: `applier.actor.send` once `offer` fails) and the
// follower stopped acknowledging; with both followers snapshotting the leader could not commit.
//
// Here a real SqliteMachine on the real disk takes a snapshot through an Applier whose mailbox
// holds 2 batches, into a sink that stops after its first image chunk until the test opens it.
// Meanwhile every later entry is sent, one batch each (updates all over the file, a large entry
// written off the loop, growth, a VACUUM that shrinks the file): each send must be taken and
// applied while the copy is held. Then the copy finishes, and the snapshot installed on a fresh
// machine must be byte-identical to the file as of the snapshot's index (a copy-on-write that
// drops the old images, `skipCopyOnWrite`, is caught).
import fs from "node:fs"
import path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect } from "effect"
import * as Applier from "../../src/actors/Applier.ts"
import type { SnapshotSink } from "../../src/actors/snapshotData.ts"
import type { Entry, SnapshotMeta } from "../../src/raft/types.ts"
import { largePayloadBytes } from "../../src/runtime/yieldToLoop.ts"
import type { SqliteApplyResult, SqliteMachineBugs } from "../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { pageSize, recordingLeader, seededRandom, snapshotSourceOf, tempDirectory } from "./helpers.ts"

/** Entries of a real leader: a table of ~2.5 MB, then (from `snapshotIndex` + 1 on) writes that
 * touch pages the copy has not reached, one large entry, growth, and a shrink. */
function workload(dir: string): { readonly entries: Array<Entry>; readonly snapshotIndex: number } {
  const { leader, entries, record, close } = recordingLeader(dir)
  const random = seededRandom(17)
  leader.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b BLOB)")
  record()
  for (let step = 0; step < 12; step++) {
    leader.prepare("INSERT INTO t(a, b) SELECT random(), randomblob(?) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) SELECT i FROM n)").run(1000 + Math.floor(random() * 3000))
    record()
  }
  const snapshotIndex = entries.length
  for (let step = 0; step < 10; step++) {
    leader.prepare("UPDATE t SET a = a + 1, b = randomblob(length(b)) WHERE id % 7 = ?").run(step % 7)
    record()
  }
  // Every row rewritten in one transaction: an entry applied off the loop (≥ largePayloadBytes).
  leader.exec("UPDATE t SET b = randomblob(length(b))")
  record()
  leader.exec("INSERT INTO t(a, b) SELECT 1, randomblob(5000) FROM t WHERE id < 100")
  record()
  leader.exec("DELETE FROM t WHERE id % 2 = 0")
  record()
  leader.exec("VACUUM")
  record()
  close()
  return { entries, snapshotIndex }
}

describe("a follower's snapshot while entries keep coming", () => {
  const root = tempDirectory("tqlite-follower-snapshot-")
  const { entries, snapshotIndex } = workload(root.path)

  /** Takes the snapshot at `snapshotIndex` through an Applier while every later entry is sent;
   * what was seen, and the installed snapshot's file beside the file as of its index. */
  const snapshotWhileApplying = (name: string, later: ReadonlyArray<Entry>, bugs?: SqliteMachineBugs, pace: "held" | "interleaved" = "held") =>
    Effect.gen(function*() {
      const dataDir = path.join(root.path, name)
      const machine = yield* SqliteMachine.open({ dataDir, nodeId: 2, pageSize, fsync: "sync", bootSnapshot: null, snapshotChunkBytes: 64 * 1024, ...(bugs !== undefined ? { bugs } : {}) })
      yield* Effect.addFinalizer(() => Effect.sync(() => machine.close()))
      for (const entry of entries.slice(0, snapshotIndex)) yield* machine.apply(entry)
      yield* machine.sync
      const reference = fs.readFileSync(machine.databasePath("main"))

      const gate = yield* Deferred.make<void>()
      const saved = yield* Deferred.make<SnapshotMeta>()
      const chunks: Array<Uint8Array> = []
      const sink: SnapshotSink = {
        chunkBytesMax: 64 * 1024,
        write: (chunk) =>
          Effect.suspend(() => {
            chunks.push(Uint8Array.from(chunk))
            // "held": the manifest, one chunk of the image, then the copy stops until the test goes
            // on. "interleaved": a short sleep per chunk, the applies (a large one's writes on the
            // thread pool) running between and beside the copy's reads.
            if (pace === "interleaved") return Effect.sleep(Duration.millis(2))
            return chunks.length === 2 ? Deferred.await(gate) : Effect.void
          })
      }
      const applier = yield* Applier.make<SqliteApplyResult, SqliteMachine>({
        name: "follower-applier",
        stateMachine: machine,
        mailboxCapacity: 2,
        batchMax: 1,
        saveSnapshot: (_, produce) => Effect.orDie(produce(sink)),
        onSnapshotSaved: (meta) => Deferred.succeed(saved, meta),
        appliedIndex: snapshotIndex
      })
      yield* applier.actor.send({ _tag: "Snapshot", meta: { index: snapshotIndex, term: 1, config: { members: [] } } })
      const last = later[later.length - 1]!.index
      // Every send is taken within the timeout and applied while the copy is held (it was not:
      // the applier waited for the copy, its two-batch mailbox filled and the third send hung).
      for (const entry of later) {
        yield* applier.actor.send({ _tag: "Apply", entries: [entry], waiters: new Map() }).pipe(
          Effect.timeoutFail({ duration: Duration.seconds(20), onTimeout: () => new Error(`the applier's mailbox did not take entry ${entry.index} while the follower's snapshot was copied`) }),
          Effect.orDie
        )
      }
      const waitedMs = yield* waitFor(() => applier.appliedNow() === last, Duration.seconds(20))
      const appliedWhileCopying = applier.appliedNow()
      const copyHeld = !(yield* Deferred.isDone(saved))
      yield* Deferred.succeed(gate, undefined)
      yield* Deferred.await(saved).pipe(Effect.timeoutFail({ duration: Duration.seconds(20), onTimeout: () => new Error("the snapshot was not saved") }), Effect.orDie)

      const bytes = Buffer.concat(chunks)
      const target = yield* SqliteMachine.open({ dataDir: path.join(root.path, `${name}-restored`), nodeId: 3, pageSize, fsync: "off", bootSnapshot: null })
      yield* Effect.addFinalizer(() => Effect.sync(() => target.close()))
      const meta: SnapshotMeta = { index: snapshotIndex, term: 1, config: { members: [] } }
      yield* target.restore(meta, snapshotSourceOf(meta, bytes))
      const restored = fs.readFileSync(target.databasePath("main"))
      const current = fs.readFileSync(machine.databasePath("main"))
      const leftover = fs.readdirSync(path.dirname(machine.databasePath("main"))).filter((file) => file.endsWith(".tmp"))
      return { last, waitedMs, appliedWhileCopying, copyHeld, reference, restored, current, stats: machine.stats, leftover }
    })

  it.scopedLive("its applier goes on applying during the copy, and the snapshot is exactly the state at its index", () =>
    Effect.gen(function*() {
      const large = entries.slice(snapshotIndex).find((entry) => entry.kind === "command" && entry.data.byteLength >= largePayloadBytes)
      expect(large).toBeDefined()
      const seen = yield* snapshotWhileApplying("plain", entries.slice(snapshotIndex))
      expect(seen.copyHeld).toBe(true)
      expect(seen.appliedWhileCopying).toBe(seen.last)
      expect(seen.stats.offLoopApplies).toBeGreaterThan(0)
      // Old images were saved, at most one per page of the image, and the side file is gone.
      expect(seen.stats.snapshotPagesSaved).toBeGreaterThan(0)
      expect(seen.stats.snapshotPagesSaved).toBeLessThanOrEqual(seen.reference.byteLength / pageSize)
      expect(seen.leftover).toEqual([])
      // The entries after the index changed the file (grown, then shrunk by the VACUUM) ...
      expect(Buffer.compare(seen.current, seen.reference)).not.toBe(0)
      expect(seen.current.byteLength).toBeLessThan(seen.reference.byteLength)
      // ... and the snapshot is the file as it was at its index, byte for byte.
      expect(seen.restored.byteLength).toBe(seen.reference.byteLength)
      expect(Buffer.compare(seen.restored, seen.reference)).toBe(0)
    }), 120_000)

  it.scopedLive("with the copy and the applies interleaved (saves on the thread pool racing the copy's reads), the snapshot is still exactly the state at its index", () =>
    Effect.gen(function*() {
      const seen = yield* snapshotWhileApplying("interleaved", entries.slice(snapshotIndex), undefined, "interleaved")
      expect(seen.appliedWhileCopying).toBe(seen.last)
      expect(seen.stats.snapshotPagesSaved).toBeGreaterThan(0)
      expect(Buffer.compare(seen.restored, seen.reference)).toBe(0)
      expect(seen.leftover).toEqual([])
    }), 120_000)

  it.scopedLive("mutation: without the copy-on-write of the pages not yet copied, the snapshot holds later pages", () =>
    Effect.gen(function*() {
      // Without the VACUUM: with the file shrunk under it, the copy would fail as skipped instead.
      const seen = yield* snapshotWhileApplying("no-cow", entries.slice(snapshotIndex, -1), { skipCopyOnWrite: true })
      expect(seen.appliedWhileCopying).toBe(seen.last)
      expect(Buffer.compare(seen.restored, seen.reference)).not.toBe(0)
    }), 120_000)

  it("cleans up", () => root.remove())
})

/** Polls `done` every millisecond until it holds (the time it took) or `timeout` passes (a defect). */
const waitFor = (done: () => boolean, timeout: Duration.Duration) =>
  Effect.gen(function*() {
    const started = performance.now()
    while (!done()) {
      if (performance.now() - started > Duration.toMillis(timeout)) return yield* Effect.dieMessage(`not reached within ${Duration.format(timeout)}`)
      yield* Effect.sleep(Duration.millis(1))
    }
    return performance.now() - started
  })
