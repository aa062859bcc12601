// What one committed entry costs the Raft actors and the log writers of a three-node cluster in
// Effect operations and fiber resumptions, counted by a Supervisor (as `npm run bench -- opcount`
// counts them): the node wiring (Node.wire) over the SQLite state machine, the log on the real
// disk, one writer making one-row INSERTs one after another, so every write is an entry of its
// own. Main before the Raft actor's path went plain: ~200 operations per entry in the Raft actors
// and ~165 in the log writers (opcount, ×1); each ran an Effect per message sent, per step and per
// acknowledgement released.
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { actorOf, counted, FiberCounts } from "../fiberCounts.ts"
import { SqliteCluster } from "../sim/full/SqliteCluster.ts"
import { Prng } from "../sim/Prng.ts"

const dirs: Array<string> = []
afterAll(() => dirs.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })))

describe("Raft actor and log writer: the cost of an entry on three nodes", () => {
  it.live("one write at a time costs the Raft actors at most 120 Effect operations an entry and the log writers at most 135", () => {
    // The fibers annotated as a Raft actor (raft-N) or a log writer (raft-N/log-writer).
    const counter = new FiberCounts(["raft", "log writer"] as const, (fiber) => {
      const actor = actorOf(fiber)
      if (actor === null) return null
      if (/^raft-\d+$/.test(actor)) return "raft"
      if (/^raft-\d+\/log-writer$/.test(actor)) return "log writer"
      return null
    })
    return counted(counter, Effect.scoped(Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-raft-cost-"))
      dirs.push(dir)
      // Ticks every 200 ms: heartbeats and ticks are batches of their own, counted here too; at
      // a write every few ms they add a few operations an entry, not dozens.
      const nodes = new SqliteCluster({ baseDir: dir, rng: new Prng(7), tickMs: 200, fsync: "async", syncEveryEntries: 1000, snapshotEveryEntries: 1_000_000, disk: "node", limits: {} })
      yield* nodes.bootstrap([1, 2, 3])
      const leader = yield* nodes.awaitLeader(200)
      const session = yield* leader.dbs.open("cost")
      yield* session.execSql("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", [])
      const payload = Buffer.alloc(100, 7)
      const insert = session.execSql("INSERT INTO t(v) VALUES (?)", [payload])
      for (let i = 0; i < 20; i++) yield* insert
      const before = leader.dbs.writer("cost")!.stats.entries
      const writes = 150
      counter.counting = true
      for (let i = 0; i < writes; i++) yield* insert
      counter.counting = false
      const entries = leader.dbs.writer("cost")!.stats.entries - before
      yield* nodes.shutdown()
      // One entry per write (nothing else writes), and every write went through.
      expect(entries).toBe(writes)
      const perEntry = (n: number) => n / entries
      const summary = `ops/entry raft ${perEntry(counter.ops.raft).toFixed(1)}, log writer ${perEntry(counter.ops["log writer"]).toFixed(1)}; resumptions/entry raft ${perEntry(counter.resumptions.raft).toFixed(2)}, log writer ${perEntry(counter.resumptions["log writer"]).toFixed(2)}`
      console.log(summary)
      // Counted at all: each node's Raft actor and log writer take part in every entry.
      expect(perEntry(counter.ops.raft), summary).toBeGreaterThan(10)
      expect(perEntry(counter.ops["log writer"]), summary).toBeGreaterThan(10)
      // Measured 57 and 103 here at load 17 (main: 212 and 166).
      expect(perEntry(counter.ops.raft), summary).toBeLessThanOrEqual(120)
      expect(perEntry(counter.ops["log writer"]), summary).toBeLessThanOrEqual(135)
      // Fewer batches too: a follower's persisted and applied marks wake its Raft actor only when
      // the core needs them at once (10.3 here; main 13.9).
      expect(perEntry(counter.resumptions.raft), summary).toBeLessThanOrEqual(12.5)
    })))
  }, 120_000)
})
