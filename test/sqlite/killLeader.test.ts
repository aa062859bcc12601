// kill -9 of a leader with an uncommitted transaction in its SQLite WAL and its Raft log (a child
// process running a 3-node cluster on real files dies by SIGKILL). On restart the WAL is dropped,
// the nodes replay from their logs, and the uncommitted transaction is gone on every node while
// every acknowledged row is there.
import { spawnSync } from "node:child_process"
import fs from "node:fs"
import path from "node:path"
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { SqliteCluster } from "../sim/full/SqliteCluster.ts"
import { Prng } from "../sim/Prng.ts"
import { contentOf, integrityOf } from "./clusterHelpers.ts"
import { tempDirectory } from "./helpers.ts"

const dir = tempDirectory("tqlite-kill-")
afterAll(() => dir.remove())

describe("kill -9 of the leader", () => {
  it("drops the uncommitted transaction on every node; acknowledged rows survive", async () => {
    const script = path.join(import.meta.dirname, "crashingCluster.ts")
    const child = spawnSync(process.execPath, ["--import", "tsx", script, dir.path], { encoding: "utf8", timeout: 60_000 })
    expect(child.stderr).toBe("")
    expect(child.signal).toBe("SIGKILL")
    const died = JSON.parse(child.stdout.trim()) as { leader: number; committed: Array<string>; lastIndex: number; commitIndex: number }
    expect(died.lastIndex).toBeGreaterThan(died.commitIndex) // the entry is in the leader's log, uncommitted
    const leaderFile = path.join(dir.path, `node-${died.leader}`, "databases", "main.db")
    expect(fs.statSync(`${leaderFile}-wal`).size).toBeGreaterThan(5000) // …and its frames in the WAL

    const outcome = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function*() {
          const cluster = new SqliteCluster({ baseDir: dir.path, rng: new Prng(6), tickMs: 10, fsync: "async", snapshotEveryEntries: 100_000, disk: "node" })
          // The old leader comes back cut off, so it cannot win with its longer log.
          for (const other of [1, 2, 3]) {
            if (other === died.leader) continue
            cluster.blocked.add(`${died.leader}->${other}`)
            cluster.blocked.add(`${other}->${died.leader}`)
          }
          yield* cluster.bootstrap([1, 2, 3])
          const oldLeaderAfterBoot = contentOf(leaderFile)
          const leader = yield* cluster.awaitLeader(1000, died.leader)
          const s = yield* leader.dbs.open("main")
          yield* s.execSql("INSERT INTO kv VALUES ('after-restart', x'01')", [])
          cluster.heal()
          const converged = yield* cluster.awaitConverged(1000)
          const files = [1, 2, 3].map((id) => path.join(dir.path, `node-${id}`, "databases", "main.db"))
          const keys = (yield* s.querySql("SELECT k FROM kv ORDER BY k", [])).rows.map((row) => row[0])
          yield* Effect.sleep(50)
          const contents = files.filter((f) => !f.includes(`node-${leader.id}`)).map(contentOf)
          const integrity = files.map(integrityOf)
          yield* cluster.shutdown()
          return { oldLeaderAfterBoot, converged, keys, contents, integrity }
        })
      )
    )
    expect(outcome.oldLeaderAfterBoot).not.toContain("uncommitted")
    expect(outcome.converged).toBe(true)
    expect(outcome.keys).toEqual([...died.committed, "after-restart"].sort())
    expect(outcome.contents.length).toBe(2)
    for (const content of outcome.contents) {
      expect(content).not.toContain("uncommitted")
      expect(content).toContain("after-restart")
      expect(content).toContain("committed-19")
    }
    expect(new Set(outcome.contents).size).toBe(1)
    expect(outcome.integrity).toEqual(["ok", "ok", "ok"])
  }, 60_000)
})
