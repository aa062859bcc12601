// `npm run bench -- sqlite [--seconds S] [--writers 1,8,64] [--checkpoint-mib M]`: writes per second of a 3-node
// tqlite cluster in one process (real disk with fsync: segment logs, SQLite files, the applied
// state record; an in-process network that still encodes every message with msgpackr) beside
// plain better-sqlite3 committing each INSERT with one fsync (WAL mode, synchronous=FULL), for 1,
// 8 and 64 concurrent writers. Each writer is a client session sending autocommit INSERTs one
// after another; the cluster answers each only once Raft committed it. Ticks are 50 ms
// (heartbeats, election timeouts of 0.5–1 s): the whole cluster shares one CPU here, and
// a saturated event loop must not cost the leader its leadership.
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import Database from "better-sqlite3"
import { Effect } from "effect"
import { SqliteCluster } from "../test/sim/full/SqliteCluster.ts"
import { Prng } from "../test/sim/Prng.ts"
import { option, runWriters } from "./load.ts"

interface Measured {
  readonly writes: number
  readonly errors: number
  readonly seconds: number
  readonly detail: string
}

const payload = Buffer.alloc(100, 7)

/** Plain better-sqlite3: every INSERT its own transaction, fsynced (synchronous=FULL). The
 * writers take turns on one connection (SQLite has one writer at a time anyway). */
async function plain(dir: string, writers: number, seconds: number): Promise<Measured> {
  const file = path.join(dir, `plain-${writers}.db`)
  const db = new Database(file)
  db.pragma("journal_mode=WAL")
  db.pragma("synchronous=FULL")
  db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, w INTEGER, v BLOB)")
  const insert = db.prepare("INSERT INTO t(w, v) VALUES (?, ?)")
  let writes = 0
  const deadline = performance.now() + seconds * 1000
  const started = performance.now()
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      while (performance.now() < deadline) {
        insert.run(w, payload)
        writes++
        await new Promise<void>((resolve) => setImmediate(resolve))
      }
    })
  )
  const elapsed = (performance.now() - started) / 1000
  db.close()
  return { writes, errors: 0, seconds: elapsed, detail: "" }
}

/** The cluster: `writers` sessions on the leader, each sending INSERTs for `seconds`. */
export async function cluster(dir: string, writers: number, seconds: number, walCheckpointBytes: number): Promise<Measured> {
  const base = fs.mkdtempSync(path.join(dir, `cluster-${writers}-`))
  return Effect.runPromise(
    Effect.scoped(
      Effect.gen(function*() {
        const nodes = new SqliteCluster({ baseDir: base, rng: new Prng(writers), tickMs: 50, fsync: "async", syncEveryEntries: 1000, snapshotEveryEntries: 1_000_000, disk: "node", limits: { walCheckpointBytes } })
        yield* nodes.bootstrap([1, 2, 3])
        const leader = yield* nodes.awaitLeader(1000)
        const setup = yield* leader.dbs.open("bench")
        yield* setup.execSql("CREATE TABLE t(id INTEGER PRIMARY KEY, w INTEGER, v BLOB)", [])
        const sessions = yield* Effect.forEach(Array.from({ length: writers }), () => leader.dbs.open("bench"))
        const outcome = yield* runWriters(writers, seconds, (w) => sessions[w]!.execSql("INSERT INTO t(w, v) VALUES (?, ?)", [w, payload]))
        const stats = leader.dbs.writer("bench")?.stats
        yield* nodes.shutdown()
        const entries = Math.max(1, stats?.entries ?? 1)
        const detail = `${stats?.entries ?? 0} entries, ${((stats?.statements ?? 0) / entries).toFixed(1)} statements/entry, ${((stats?.commitMsTotal ?? 0) / entries).toFixed(1)} ms/commit, ${stats?.checkpoints ?? 0} checkpoints (max ${(stats?.checkpointMsMax ?? 0).toFixed(1)} ms)${outcome.errors > 0 ? `, errors ${JSON.stringify(Object.fromEntries(outcome.errorTags))}` : ""}`
        return { writes: outcome.ok, errors: outcome.errors, seconds: outcome.seconds, detail }
      })
    )
  )
}

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const seconds = Number(option(args, "seconds") ?? 3)
  const writerCounts = (option(args, "writers") ?? "1,8,64").split(",").map(Number)
  const walCheckpointBytes = Number(option(args, "checkpoint-mib") ?? 4) * 1024 * 1024
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-bench-sqlite-"))
  process.stdout.write(`tqlite sqlite bench: ${seconds} s per run, files in ${dir} (fsync on), leader checkpoints past ${walCheckpointBytes / 1024 / 1024} MiB of WAL\n`)
  process.stdout.write(`${"writers".padStart(7)}  ${"plain w/s".padStart(10)}  ${"cluster w/s".padStart(11)}  ${"ratio".padStart(6)}  errors  cluster detail\n`)
  try {
    for (const writers of writerCounts) {
      const base = await plain(dir, writers, seconds)
      const replicated = await cluster(dir, writers, seconds, walCheckpointBytes)
      const plainRate = base.writes / base.seconds
      const clusterRate = replicated.writes / replicated.seconds
      process.stdout.write(
        `${String(writers).padStart(7)}  ${plainRate.toFixed(0).padStart(10)}  ${clusterRate.toFixed(0).padStart(11)}  ${(clusterRate / plainRate).toFixed(2).padStart(6)}  ${String(replicated.errors).padStart(6)}  ${replicated.detail}\n`
      )
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
