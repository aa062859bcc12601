// Three RaftActor nodes with the SQLite state machine, in simulated time: non-deterministic SQL
// on the leader gives the same data on every node, and after a leader checkpoint the same bytes.
import fs from "node:fs"
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { contentOf, exec, filesOf, integrityOf, makeCluster, query, rowsOf, session, simulate, sleepTicks } from "./clusterHelpers.ts"
import { tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))
const newDir = () => {
  const dir = tempDirectory("tqlite-cluster-")
  dirs.push(dir)
  return dir.path
}

describe("replicated SQLite on three nodes", () => {
  it("random(), datetime('now'), randomblob() give byte-identical data on every node", () => {
    const base = newDir()
    const result = simulate(
      Effect.gen(function*() {
        const cluster = makeCluster(base)
        yield* cluster.bootstrap([1, 2, 3])
        const leader = yield* cluster.awaitLeader()
        const s = yield* session(leader)
        yield* exec(s, "CREATE TABLE t(id INTEGER PRIMARY KEY, r INTEGER, at TEXT, b BLOB)")
        for (let i = 0; i < 40; i++) {
          yield* exec(s, "INSERT INTO t(r, at, b) VALUES (random(), datetime('now'), randomblob(?))", [100 + i * 37])
        }
        yield* exec(s, "UPDATE t SET r = random() WHERE id % 3 = 0")
        yield* exec(s, "DELETE FROM t WHERE id % 7 = 0")
        const count = rowsOf(yield* query(s, "SELECT count(*) FROM t"))
        expect(yield* cluster.awaitConverged()).toBe(true)
        const contents = filesOf(cluster).map((f) => contentOf(f.path))
        // Checkpoint the leader: its file then holds exactly what the followers applied.
        leader.dbs.writer("main")!.requestCheckpoint()
        yield* exec(s, "INSERT INTO t(r) VALUES (1)")
        yield* sleepTicks(5)
        expect(yield* cluster.awaitConverged()).toBe(true)
        leader.dbs.writer("main")!.requestCheckpoint()
        yield* sleepTicks(5)
        const bytes = filesOf(cluster).map((f) => fs.readFileSync(f.path))
        const integrity = filesOf(cluster).map((f) => integrityOf(f.path))
        const stats = leader.dbs.writer("main")!.stats
        yield* cluster.shutdown()
        return { count, contents, bytes, integrity, stats }
      })
    )
    expect(result.count).toEqual([[35n]])
    expect(result.contents[0]!.length).toBeGreaterThan(1000)
    expect(new Set(result.contents).size).toBe(1)
    expect(result.bytes[0]!.length).toBeGreaterThan(8 * 4096)
    expect(Buffer.compare(result.bytes[0]!, result.bytes[1]!)).toBe(0)
    expect(Buffer.compare(result.bytes[0]!, result.bytes[2]!)).toBe(0)
    expect(result.integrity).toEqual(["ok", "ok", "ok"])
    expect(result.stats.checkpoints).toBeGreaterThanOrEqual(1)
  })
})
