// Run as a child process by killLeader.test.ts: a 3-node cluster (real files: Raft logs, snapshots,
// SQLite) commits some rows, then its leader runs one more INSERT that reaches its SQLite WAL and
// its Raft log but not the followers (appends held back), prints what it did, and the process
// dies by SIGKILL with every connection open.
import { Duration, Effect } from "effect"
import { SqliteCluster } from "../sim/full/SqliteCluster.ts"
import { Prng } from "../sim/Prng.ts"

const baseDir = process.argv[2]
if (baseDir === undefined) throw new Error("usage: crashingCluster.ts <base dir>")

const program = Effect.gen(function*() {
  const cluster = new SqliteCluster({ baseDir, rng: new Prng(5), tickMs: 10, fsync: "async", snapshotEveryEntries: 100_000, disk: "node" })
  yield* cluster.bootstrap([1, 2, 3])
  const leader = yield* cluster.awaitLeader()
  const s = yield* leader.dbs.open("main")
  yield* s.execSql("CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB)", [])
  const committed: Array<string> = []
  for (let i = 0; i < 20; i++) {
    yield* s.execSql("INSERT INTO kv VALUES (?, randomblob(3000))", [`committed-${i}`])
    committed.push(`committed-${i}`)
  }
  cluster.dropIf = (from, message) => from === leader.id && message._tag === "AppendEntries"
  yield* Effect.fork(s.execSql("INSERT INTO kv VALUES ('uncommitted', randomblob(5000))", []))
  const writer = leader.dbs.writer("main")!
  for (let i = 0; i < 200; i++) {
    const seen = writer.database.writer.run("SELECT count(*) FROM kv WHERE k = 'uncommitted'", []).rows.rows[0]?.[0]
    if (seen === 1n) break
    yield* Effect.sleep(Duration.millis(5))
  }
  // Let the leader's log writer make the entry durable in its own log.
  yield* Effect.sleep(Duration.millis(100))
  const status = yield* leader.raft.status
  return { leader: leader.id, committed, lastIndex: status.lastIndex, commitIndex: status.commitIndex }
})

Effect.runPromise(Effect.scoped(program)).then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`, () => process.kill(process.pid, "SIGKILL"))
  },
  (error: unknown) => {
    process.stderr.write(`crashingCluster failed: ${String(error)}\n`)
    process.exit(1)
  }
)
