// End to end on one machine: a random workload on a leader, every committed transaction
// captured from its WAL, encoded, decoded and applied as pages to follower files; the followers
// must show the leader's content after every step, and after a TRUNCATE checkpoint of the
// leader, the files must be byte-identical.

import fs from "node:fs"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { SqliteDatabase } from "../../src/sqlite/openDatabase.ts"
import { checkpointTruncate, openDatabase } from "../../src/sqlite/openDatabase.ts"
import { PageApplier } from "../../src/sqlite/PageApplier.ts"
import type { PageSet } from "../../src/sqlite/pageSet.ts"
import { decodePageSet, encodePageSet, mergePageSets } from "../../src/sqlite/pageSet.ts"
import { WalCapture } from "../../src/sqlite/WalCapture.ts"
import { dumpContent, integrityCheck, pageSize, readOnly, seededRandom, tempDirectory } from "./helpers.ts"

const seed = 0x7a11e
const steps = 90
const databaseName = "main"

type Workload = (db: SqliteDatabase, random: () => number) => void

const between = (random: () => number, low: number, high: number): number => low + Math.floor(random() * (high - low + 1))

const workloads: Array<{ name: string; weight: number; run: Workload }> = [
  {
    name: "insert", weight: 6,
    run: (db, random) => {
      const insert = db.prepare("INSERT INTO t1(a, b, c) VALUES (random(), randomblob(?), ?)")
      db.transaction(() => {
        for (let i = between(random, 1, 25); i > 0; i--) insert.run(between(random, 0, 6000), `text ${random()}`)
      })()
    }
  },
  {
    name: "update", weight: 3,
    run: (db, random) => {
      db.prepare("UPDATE t1 SET a = random(), b = randomblob(?) WHERE id % ? = ?").run(between(random, 0, 300), between(random, 2, 9), between(random, 0, 1))
    }
  },
  { name: "delete", weight: 2, run: (db, random) => void db.prepare("DELETE FROM t1 WHERE id % ? = 0").run(between(random, 2, 6)) },
  {
    name: "withoutRowid", weight: 2,
    run: (db, random) => {
      const n = between(random, 1, 1000)
      db.exec(`CREATE TABLE IF NOT EXISTS extra_${n % 4}(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
               INSERT OR REPLACE INTO extra_${n % 4} VALUES ('k${n}', randomblob(${n}));`)
    }
  },
  { name: "dropTable", weight: 1, run: (db, random) => void db.exec(`DROP TABLE IF EXISTS extra_${between(random, 0, 3)}`) },
  { name: "createIndex", weight: 1, run: (db) => void db.exec("CREATE INDEX IF NOT EXISTS t1_a ON t1(a)") },
  { name: "dropIndex", weight: 1, run: (db) => void db.exec("DROP INDEX IF EXISTS t1_a") },
  {
    name: "savepoint", weight: 1,
    run: (db) => {
      // Two statements committed as one transaction through a savepoint, plus one rolled back.
      db.exec(`BEGIN; INSERT INTO t2 VALUES (random(), 'kept'); SAVEPOINT s;
               INSERT INTO t2 VALUES (random(), 'undone'); ROLLBACK TO s; RELEASE s; COMMIT;`)
      db.exec("BEGIN; DELETE FROM t1; ROLLBACK;")
    }
  },
  {
    name: "bigBlob", weight: 1,
    run: (db) => {
      const big = db.prepare("SELECT count(*) AS n FROM big").get() as { n: number }
      db.exec(big.n === 0 ? "INSERT INTO big VALUES (randomblob(2 * 1024 * 1024))" : "DELETE FROM big")
    }
  },
  { name: "vacuum", weight: 1, run: (db) => void db.exec("VACUUM") }
]

function pickWorkload(random: () => number): { name: string; run: Workload } {
  const total = workloads.reduce((sum, workload) => sum + workload.weight, 0)
  let pick = random() * total
  for (const workload of workloads) {
    pick -= workload.weight
    if (pick < 0) return workload
  }
  return workloads[0]!
}

interface Run {
  readonly dir: ReturnType<typeof tempDirectory>
  readonly leaderPath: string
  readonly followerPath: string
  readonly mergedFollowerPath: string
  /** Every captured transaction, encoded, in commit order, grouped by workload step. */
  readonly payloadsByStep: Array<Array<Uint8Array>>
  readonly mismatches: Array<string>
  readonly journalModes: Set<string>
  readonly workloadsRun: Set<string>
  shrank: boolean
  mergedPages: number
  unmergedPages: number
}

let run: Run

function applyDecoded(applier: PageApplier, payloads: ReadonlyArray<Uint8Array>): Array<PageSet> {
  const pageSets = payloads.map((payload) => {
    const decoded = decodePageSet(payload)
    expect(decoded.database).toBe(databaseName)
    return decoded.pageSet
  })
  for (const pageSet of pageSets) applier.apply(pageSet)
  return pageSets
}

beforeAll(() => {
  const dir = tempDirectory()
  run = {
    dir,
    leaderPath: path.join(dir.path, "leader.db"),
    followerPath: path.join(dir.path, "follower.db"),
    mergedFollowerPath: path.join(dir.path, "merged-follower.db"),
    payloadsByStep: [],
    mismatches: [],
    journalModes: new Set(),
    workloadsRun: new Set(),
    shrank: false,
    mergedPages: 0,
    unmergedPages: 0
  }
  const random = seededRandom(seed)
  const leader = openDatabase(run.leaderPath, { pageSize })
  const capture = new WalCapture({ databasePath: run.leaderPath, pageSize })
  const follower = PageApplier.open({ databasePath: run.followerPath, pageSize })
  const mergedFollower = PageApplier.open({ databasePath: run.mergedFollowerPath, pageSize })
  let mergeBatch: Array<PageSet> = []
  let previousSizePages = 0
  try {
    leader.exec(`CREATE TABLE t1(id INTEGER PRIMARY KEY, a INTEGER, b BLOB, c TEXT);
                 CREATE TABLE t2(x INTEGER, y TEXT);
                 CREATE TABLE big(data BLOB);`)
    for (let step = 0; step <= steps; step++) {
      if (step > 0) {
        const workload = pickWorkload(random)
        run.workloadsRun.add(workload.name)
        workload.run(leader, random)
      }
      const payloads = capture.capture().map((transaction) => encodePageSet(databaseName, transaction))
      run.payloadsByStep.push(payloads)
      const pageSets = applyDecoded(follower, payloads)
      for (const pageSet of pageSets) {
        if (pageSet.dbSizePages < previousSizePages) run.shrank = true
        previousSizePages = pageSet.dbSizePages
      }
      mergeBatch.push(...pageSets)
      if (step % 7 === 6 || step === steps) {
        if (mergeBatch.length > 0) {
          const merged = mergePageSets(mergeBatch)
          run.mergedPages += merged.pages.length
          run.unmergedPages += mergeBatch.reduce((sum, pageSet) => sum + pageSet.pages.length, 0)
          for (const pageSet of [decodePageSet(encodePageSet(databaseName, merged)).pageSet]) mergedFollower.apply(pageSet)
        }
        mergeBatch = []
        const mergedView = readOnly(run.mergedFollowerPath, dumpContent)
        if (mergedView !== dumpContent(leader)) run.mismatches.push(`merged follower differs after step ${step}`)
      }
      const leaderView = dumpContent(leader)
      const followerView = readOnly(run.followerPath, (db) => {
        run.journalModes.add(String(db.pragma("journal_mode", { simple: true })))
        return dumpContent(db)
      })
      if (followerView !== leaderView) run.mismatches.push(`follower differs after step ${step}`)
    }
    expect(checkpointTruncate(leader)).toMatchObject({ busy: 0 })
  } finally {
    capture.close()
    follower.close()
    mergedFollower.close()
    leader.close()
  }
})

afterAll(() => run.dir.remove())

describe("replication by pages", () => {
  it("follower shows the leader's content after every step (random(), randomblob() included)", () => {
    expect(run.mismatches).toEqual([])
    expect([...run.workloadsRun].sort()).toEqual(workloads.map((workload) => workload.name).sort())
    expect(run.payloadsByStep.flat().length).toBeGreaterThan(steps / 2)
    expect(run.shrank).toBe(true) // DELETE + VACUUM shrank the file at least once
  })

  it("follower opens in WAL mode: page 1 comes from the leader", () => {
    expect([...run.journalModes]).toEqual(["wal"])
  })

  it("after the leader's TRUNCATE checkpoint the follower file is byte-identical", () => {
    const leaderBytes = fs.readFileSync(run.leaderPath)
    expect(leaderBytes.length).toBeGreaterThan(10 * pageSize)
    expect(Buffer.compare(fs.readFileSync(run.followerPath), leaderBytes)).toBe(0)
    expect(Buffer.compare(fs.readFileSync(run.mergedFollowerPath), leaderBytes)).toBe(0)
    expect(run.mergedPages).toBeLessThan(run.unmergedPages)
    expect(readOnly(run.followerPath, integrityCheck)).toBe("ok")
  })

  it("is idempotent: applying the whole sequence again gives the same bytes", () => {
    const target = path.join(run.dir.path, "twice.db")
    const applier = PageApplier.open({ databasePath: target, pageSize })
    const all = run.payloadsByStep.flat()
    applyDecoded(applier, all)
    applyDecoded(applier, all)
    applier.close()
    expect(Buffer.compare(fs.readFileSync(target), fs.readFileSync(run.leaderPath))).toBe(0)
  })

  it("recovers from a crash in the middle of an apply by replaying a suffix", () => {
    const all = run.payloadsByStep.flat()
    const leaderBytes = fs.readFileSync(run.leaderPath)
    const random = seededRandom(seed + 1)
    for (let attempt = 0; attempt < 6; attempt++) {
      const target = path.join(run.dir.path, `crash-${attempt}.db`)
      const crashAt = between(random, 1, all.length - 1)
      const before = PageApplier.open({ databasePath: target, pageSize })
      applyDecoded(before, all.slice(0, crashAt))
      // The crash: part of the next page set's pages written, no truncation, no sync.
      const torn = decodePageSet(all[crashAt]!).pageSet
      before.apply({ ...torn, dbSizePages: Math.max(torn.dbSizePages, before.fileSizeBytes / pageSize), pages: torn.pages.slice(0, Math.ceil(torn.pages.length / 2)) })
      before.close()
      // The restart: replay from the last persisted applied index, which is at or before it.
      const replayFrom = Math.max(0, crashAt - between(random, 0, 3))
      const after = PageApplier.open({ databasePath: target, pageSize })
      applyDecoded(after, all.slice(replayFrom))
      after.close()
      expect(Buffer.compare(fs.readFileSync(target), leaderBytes), `crash at ${crashAt}, replay from ${replayFrom}`).toBe(0)
    }
  })
})
