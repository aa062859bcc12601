import fs from "node:fs"
import path from "node:path"
import Database from "better-sqlite3"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { PageSizeMismatch } from "../../src/sqlite/errors.ts"
import type { SqliteDatabase } from "../../src/sqlite/openDatabase.ts"
import { checkpointTruncate, openDatabase } from "../../src/sqlite/openDatabase.ts"
import { PageApplier } from "../../src/sqlite/PageApplier.ts"
import { checkPageSet } from "../../src/sqlite/pageSet.ts"
import type { CapturedTransaction } from "../../src/sqlite/WalCapture.ts"
import { WalCapture } from "../../src/sqlite/WalCapture.ts"
import { dumpContent, pageSize, readOnly, tempDirectory, walFrames } from "./helpers.ts"

interface Fixture {
  readonly dir: ReturnType<typeof tempDirectory>
  readonly leaderPath: string
  readonly followerPath: string
  readonly leader: SqliteDatabase
  readonly capture: WalCapture
  readonly applier: PageApplier
}

let fixture: Fixture

beforeEach(() => {
  const dir = tempDirectory()
  const leaderPath = path.join(dir.path, "leader.db")
  const followerPath = path.join(dir.path, "follower.db")
  const leader = openDatabase(leaderPath, { pageSize })
  const capture = new WalCapture({ databasePath: leaderPath, pageSize })
  const applier = PageApplier.open({ databasePath: followerPath, pageSize })
  leader.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b BLOB)")
  for (const pageSet of capture.capture()) applier.apply(pageSet)
  fixture = { dir, leaderPath, followerPath, leader, capture, applier }
})

afterEach(() => {
  fixture.capture.close()
  fixture.applier.close()
  fixture.leader.close()
  fixture.dir.remove()
})

/** Captures, checks the invariants of what came back, applies it, and asserts the follower now
 * shows what the leader shows. */
function captureAndReplicate(expectedTransactions: number): Array<CapturedTransaction> {
  const transactions = fixture.capture.capture()
  expect(transactions).toHaveLength(expectedTransactions)
  for (const transaction of transactions) checkPageSet(transaction)
  for (const pageSet of transactions) fixture.applier.apply(pageSet)
  expect(readOnly(fixture.followerPath, dumpContent)).toBe(dumpContent(fixture.leader))
  return transactions
}

function walSize(): number {
  return fs.statSync(`${fixture.leaderPath}-wal`).size
}

describe("WalCapture", () => {
  it("a capture of one commit on an open WAL costs one fstat and two reads (header, frames)", () => {
    fixture.leader.exec("INSERT INTO t VALUES (1, 1, zeroblob(10))")
    captureAndReplicate(1)
    // Count the capture's system calls through node:fs (WalCapture calls them on the module).
    const counted = { fstatSync: 0, readSync: 0, openSync: 0 }
    const originals = { fstatSync: fs.fstatSync, readSync: fs.readSync, openSync: fs.openSync }
    for (const name of Object.keys(counted) as Array<keyof typeof counted>) {
      const original = originals[name] as (...args: Array<unknown>) => unknown
      ;(fs as unknown as Record<string, unknown>)[name] = (...args: Array<unknown>) => {
        counted[name]++
        return original.apply(fs, args)
      }
    }
    try {
      fixture.leader.exec("INSERT INTO t VALUES (2, 2, zeroblob(10))")
      expect(fixture.capture.capture()).toHaveLength(1)
    } finally {
      Object.assign(fs, originals)
    }
    // Two fstats before (one for the WAL's link count, one for its size).
    expect(counted).toEqual({ fstatSync: 1, readSync: 2, openSync: 0 })
  })

  it("captures each single-statement insert as one transaction, then nothing", () => {
    const insert = fixture.leader.prepare("INSERT INTO t(a, b) VALUES (random(), randomblob(?))")
    let previousEnd = fixture.capture.position?.offsetBytes ?? 0
    for (let i = 0; i < 20; i++) {
      insert.run(10 + i * 150)
      const [transaction] = captureAndReplicate(1)
      expect(transaction!.walEnd.offsetBytes).toBeGreaterThan(previousEnd)
      expect(transaction!.walEnd.offsetBytes).toBe(walSize()) // nothing else was written
      previousEnd = transaction!.walEnd.offsetBytes
      expect(fixture.capture.capture()).toEqual([])
    }
  })

  it("captures a multi-statement transaction as one, and several commits in order", () => {
    fixture.leader.exec(`BEGIN;
      INSERT INTO t(a, b) VALUES (random(), randomblob(3000));
      INSERT INTO t(a, b) VALUES (random(), randomblob(3000));
      UPDATE t SET a = a + 1;
      CREATE INDEX t_a ON t(a);
      COMMIT;`)
    captureAndReplicate(1)

    fixture.leader.exec("INSERT INTO t(a) VALUES (1)")
    fixture.leader.exec("INSERT INTO t(a) VALUES (2)")
    fixture.leader.exec("DELETE FROM t WHERE a = 1")
    const transactions = captureAndReplicate(3)
    const ends = transactions.map((transaction) => transaction.walEnd.offsetBytes)
    expect([...ends].sort((x, y) => x - y)).toEqual(ends)
    expect(new Set(ends).size).toBe(3)
  })

  it("captures nothing for a rolled-back transaction", () => {
    const before = fixture.capture.position
    fixture.leader.exec("BEGIN; INSERT INTO t(a) VALUES (42); UPDATE t SET a = 43; ROLLBACK;")
    expect(fixture.capture.capture()).toEqual([])
    expect(fixture.capture.position).toEqual(before)
    fixture.leader.exec("INSERT INTO t(a) VALUES (44)")
    captureAndReplicate(1)
  })

  describe("a transaction that spills the page cache", () => {
    function spill(rows: number): void {
      fixture.leader.pragma("cache_size = 8")
      fixture.leader.exec("BEGIN")
      const insert = fixture.leader.prepare("INSERT INTO t(a, b) VALUES (random(), randomblob(1500))")
      for (let i = 0; i < rows; i++) insert.run()
      fixture.leader.exec("UPDATE t SET a = -a WHERE id % 7 = 0")
    }

    it("is captured only once it commits, as one transaction", () => {
      const committedEnd = fixture.capture.position!.offsetBytes
      spill(600)
      // SQLite wrote frames before the commit: valid salts and checksums, no commit frame.
      const spilled = walFrames(fixture.leaderPath).filter((frame) => frame.offset >= committedEnd)
      expect(spilled.length).toBeGreaterThan(100)
      expect(spilled.every((frame) => frame.dbSizePages === 0)).toBe(true)
      expect(fixture.capture.capture()).toEqual([])

      fixture.leader.exec("COMMIT")
      const [transaction] = captureAndReplicate(1)
      expect(transaction!.dbSizePages).toBeGreaterThan(200)
      // A page spilled earlier is written again as the commit frame: one frame more than pages
      // (seen with SQLite 3.53.2: 303 frames, 302 pages). The page set keeps its last image.
      expect(transaction!.frameCount).toBeGreaterThan(transaction!.pages.length)
    })

    it("leaves nothing to capture when rolled back, and the next commit overwrites its frames", () => {
      const committedEnd = fixture.capture.position!.offsetBytes
      spill(600)
      fixture.leader.exec("ROLLBACK")
      const walBytesAfterRollback = walSize()
      expect(walBytesAfterRollback).toBeGreaterThan(committedEnd + 100 * (pageSize + 24))
      expect(fixture.capture.capture()).toEqual([])

      fixture.leader.pragma("cache_size = -2000")
      fixture.leader.exec("INSERT INTO t(a) VALUES (7)")
      const [transaction] = captureAndReplicate(1)
      // Written in place over the rolled-back frames, not after them.
      expect(transaction!.walEnd.offsetBytes).toBeLessThan(committedEnd + 10 * (pageSize + 24))
      expect(walSize()).toBe(walBytesAfterRollback)
      expect(readOnly(fixture.followerPath, (db) => db.prepare("SELECT count(*) AS n FROM t").get())).toEqual({ n: 1 })
    })
  })

  it("follows a TRUNCATE checkpoint: new salts, frames from offset 32", () => {
    fixture.leader.exec("INSERT INTO t(a, b) VALUES (1, randomblob(5000))")
    const [first] = captureAndReplicate(1)
    expect(checkpointTruncate(fixture.leader)).toMatchObject({ busy: 0 })
    expect(walSize()).toBe(0)
    expect(fixture.capture.capture()).toEqual([])

    fixture.leader.exec("INSERT INTO t(a) VALUES (2)")
    const [second] = captureAndReplicate(1)
    expect(second!.walEnd.checkpointSequence).toBe(first!.walEnd.checkpointSequence + 1)
    expect(second!.walEnd.salt1).toBe((first!.walEnd.salt1 + 1) >>> 0)
    expect(second!.walEnd.offsetBytes).toBe(32 + second!.frameCount * (pageSize + 24))
  })

  it("follows a restart over stale bytes (PASSIVE checkpoint, WAL not truncated)", () => {
    const insert = fixture.leader.prepare("INSERT INTO t(a, b) VALUES (random(), randomblob(2000))")
    for (let i = 0; i < 30; i++) insert.run()
    captureAndReplicate(30)
    const walBytesBefore = walSize()
    fixture.leader.pragma("wal_checkpoint(PASSIVE)")

    fixture.leader.exec("UPDATE t SET a = 0 WHERE id = 3")
    const [transaction] = captureAndReplicate(1)
    // The WAL kept its length: the new generation's frames sit over stale ones of the old.
    expect(walSize()).toBe(walBytesBefore)
    expect(transaction!.walEnd.offsetBytes).toBeLessThan(walBytesBefore)
    expect(walFrames(fixture.leaderPath).length).toBeGreaterThan(30)

    // Capturing again sees the stale frames (old salts) as the end.
    expect(fixture.capture.capture()).toEqual([])
    fixture.leader.exec("UPDATE t SET a = 1 WHERE id = 4")
    captureAndReplicate(1)
  })

  it("reads a long transaction across many reads and resumes from a given position", () => {
    const small = new WalCapture({ databasePath: fixture.leaderPath, pageSize, readFramesInitial: 1, readFramesMax: 3 })
    fixture.leader.exec("INSERT INTO t(a, b) VALUES (1, randomblob(200000))")
    const fromStart = small.capture()
    small.close()
    const [transaction] = captureAndReplicate(1)
    const viaSmallReads = fromStart[fromStart.length - 1]!
    expect(viaSmallReads.walEnd).toEqual(transaction!.walEnd)
    expect(viaSmallReads.pages.map((page) => page.pgno)).toEqual(transaction!.pages.map((page) => page.pgno))
    expect(viaSmallReads.pages.every((page, i) => Buffer.compare(page.data, transaction!.pages[i]!.data) === 0)).toBe(true)

    const resumed = new WalCapture({ databasePath: fixture.leaderPath, pageSize, start: transaction!.walEnd })
    expect(resumed.capture()).toEqual([])
    fixture.leader.exec("INSERT INTO t(a) VALUES (2)")
    expect(resumed.capture()).toHaveLength(1)
    resumed.close()
  })

  it("a large transaction (over 1 MiB: pages kept in place) captured in steps of a few frames equals one capture, and the follower gets the same file", () => {
    const stepped = new WalCapture({ databasePath: fixture.leaderPath, pageSize, start: fixture.capture.position! })
    fixture.leader.exec("INSERT INTO t(a, b) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 600) SELECT x, randomblob(3000) FROM c")
    const steps = stepped.captureSteps(7)
    let pauses = 0
    let next = steps.next()
    for (; next.done !== true; next = steps.next()) pauses++
    const viaSteps = next.value
    stepped.close()
    const whole = captureAndReplicate(1)
    expect(pauses).toBeGreaterThan(10)
    const bytes = (t: CapturedTransaction) => t.pages.length * pageSize
    expect(bytes(whole[0]!)).toBeGreaterThan(1024 * 1024)
    expect(viaSteps.map((t) => t.walEnd)).toEqual(whole.map((t) => t.walEnd))
    expect(viaSteps[0]!.pages.map((page) => page.pgno)).toEqual(whole[0]!.pages.map((page) => page.pgno))
    expect(viaSteps[0]!.pages.every((page, i) => Buffer.compare(page.data, whole[0]!.pages[i]!.data) === 0)).toBe(true)
    // The pages stay valid after the next capture reuses the capturer's read buffer.
    fixture.leader.exec("INSERT INTO t(a, b) VALUES (7, randomblob(100))")
    captureAndReplicate(1)
    expect(whole[0]!.pages.every((page) => page.data.byteLength === pageSize)).toBe(true)
    expect(viaSteps[0]!.pages.every((page, i) => Buffer.compare(page.data, whole[0]!.pages[i]!.data) === 0)).toBe(true)
  })

  it("(DESIGN claim) a connection open on the follower does not see pages applied behind its back", () => {
    fixture.leader.exec("INSERT INTO t(a) VALUES (1)")
    captureAndReplicate(1)
    const open = new Database(fixture.followerPath, { readonly: true, fileMustExist: true })
    const count = open.prepare("SELECT count(*) AS n FROM t")
    expect(count.get()).toEqual({ n: 1 })
    fixture.leader.exec("INSERT INTO t(a) VALUES (2)")
    captureAndReplicate(1) // a fresh connection sees 2 rows
    expect(count.get()).toEqual({ n: 1 }) // the open one keeps its cached pages
    open.close()
  })

  it("refuses a WAL whose page size is not the expected one", () => {
    const other = new WalCapture({ databasePath: fixture.leaderPath, pageSize: 1024 })
    fixture.leader.exec("INSERT INTO t(a) VALUES (1)")
    expect(() => other.capture()).toThrow(PageSizeMismatch)
    other.close()
  })

  it("sees nothing when there is no WAL yet", () => {
    const missing = new WalCapture({ databasePath: path.join(fixture.dir.path, "absent.db"), pageSize })
    expect(missing.capture()).toEqual([])
    missing.close()
  })
})
