// `npm run bench -- readpool [--reads N]`: the cost of one hop to a reader worker thread. A
// `SELECT 1` (and a 100-row read) through the worker pool (LeaderDatabase.read: pin, wait for
// nothing pending, run, post the rows back) against the same statement on a connection in the
// main thread (Connection.run) and through the in-thread pool (same pinning, no thread hop).
// Sequential reads: the latency of one read, not the pool's throughput.
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { parseArgs } from "node:util"
import { Effect } from "effect"
import { LeaderDatabase } from "../src/sqlite/LeaderDatabase.ts"
import type { ReadPoolService } from "../src/sqlite/readPool/ReadPool.ts"
import { inThreadReadPool, workerReadPool } from "../src/sqlite/readPool/ReadPool.ts"

const limits = { readWorkersMax: 3, readQueueMax: 256, queryTimeoutMs: 30_000, statementCacheMax: 64 }

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const { values } = parseArgs({ args: [...args], options: { reads: { type: "string", default: "5000" } } })
  const reads = Number(values.reads)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-bench-readpool-"))
  try {
    const statements = [["SELECT 1", "SELECT 1"], ["100 rows", "SELECT x, 'row ' || x FROM t LIMIT 100"]] as const
    for (const [label, sql] of statements) {
      for (const [kind, pool] of [["worker", workerReadPool(limits)], ["in-thread pool", inThreadReadPool(limits)]] as const) {
        const db = open(path.join(dir, `${kind.replace(" ", "-")}-${label.replace(" ", "-")}.db`), pool as ReadPoolService)
        try {
          for (let i = 0; i < 200; i++) await Effect.runPromise(db.read(sql, [])) // warm (thread start, JIT)
          const started = performance.now()
          for (let i = 0; i < reads; i++) await Effect.runPromise(db.read(sql, []))
          const viaPoolUs = ((performance.now() - started) * 1000) / reads
          const direct = db.committedView
          for (let i = 0; i < 200; i++) direct.run(sql, [])
          const startedDirect = performance.now()
          for (let i = 0; i < reads; i++) direct.run(sql, [])
          const directUs = ((performance.now() - startedDirect) * 1000) / reads
          console.log(`${label.padEnd(9)} ${kind.padEnd(15)} ${viaPoolUs.toFixed(1).padStart(7)} µs/read   main-thread Connection.run ${directUs.toFixed(1).padStart(6)} µs   hop ≈ ${(viaPoolUs - directUs).toFixed(1)} µs`)
        } finally {
          db.close("discard")
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

function open(databasePath: string, readPool: ReadPoolService): LeaderDatabase {
  const db = LeaderDatabase.open({ databasePath, pageSize: 4096, readersMax: 4, cachePages: 100, statementCacheMax: 64, readPool })
  db.writer.control("BEGIN IMMEDIATE")
  db.writer.run("CREATE TABLE t(x INTEGER PRIMARY KEY)", [])
  db.writer.run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) INSERT INTO t SELECT x FROM c", [])
  db.commitLocally(() => db.writer.control("COMMIT"))
  db.markCommitted(db.captureLocalCommit(1)!.seq)
  return db
}
