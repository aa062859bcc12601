import { createHash } from "node:crypto"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import Database from "better-sqlite3"
import { Effect } from "effect"
import { expect } from "vitest"
import type { SnapshotSource } from "../../src/actors/snapshotData.ts"
import type { Entry } from "../../src/raft/types.ts"
import type { DiskService } from "../../src/storage/Disk.ts"
import type { CheckpointWorker } from "../../src/sqlite/CheckpointWorker.ts"
import { LeaderDatabase } from "../../src/sqlite/LeaderDatabase.ts"
import { inThreadReadPool } from "../../src/sqlite/readPool/ReadPool.ts"
import type { LeaderSlotOwner, SqliteMachineBugs } from "../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import type { SqliteDatabase } from "../../src/sqlite/openDatabase.ts"
import { openDatabase } from "../../src/sqlite/openDatabase.ts"
import { WalCapture } from "../../src/sqlite/WalCapture.ts"
import { encodeWriteEntry } from "../../src/sqlite/writeEntry.ts"

export const pageSize = 4096

/** A fresh directory under the OS temp dir; `remove()` deletes it. */
export function tempDirectory(prefix = "tqlite-sqlite-"): { readonly path: string; remove(): void } {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  return { path: directory, remove: () => fs.rmSync(directory, { recursive: true, force: true }) }
}

/** Everything a client could see: the schema and every row of every table, blobs as hex. */
export function dumpContent(db: SqliteDatabase): string {
  const schema = db
    .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name")
    .all() as Array<{ type: string; name: string; sql: string | null }>
  const out: Array<string> = [JSON.stringify(schema)]
  for (const entry of schema) {
    if (entry.type !== "table" || entry.name.startsWith("sqlite_")) continue
    const table = db.prepare("SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?").get(entry.name) as { wr: number }
    const query = table.wr === 1 ? `SELECT * FROM "${entry.name}"` : `SELECT rowid AS _rowid, * FROM "${entry.name}" ORDER BY rowid`
    const rows = (db.prepare(query).raw().all() as Array<Array<unknown>>).map((row) => JSON.stringify(row.map(showValue)))
    if (table.wr === 1) rows.sort()
    out.push(`${entry.name}:${rows.join("\n")}`)
  }
  return out.join("\n")
}

function showValue(value: unknown): unknown {
  if (Buffer.isBuffer(value)) {
    return value.length <= 64 ? `x'${value.toString("hex")}'` : `blob(${value.length}, sha1 ${createHash("sha1").update(value).digest("hex")})`
  }
  if (typeof value === "bigint") return `${value}n`
  return value
}

/** Opens a database file read-only, runs `read`, closes it. */
export function readOnly<A>(databasePath: string, read: (db: SqliteDatabase) => A): A {
  const db = new Database(databasePath, { readonly: true, fileMustExist: true })
  try {
    return read(db)
  } finally {
    db.close()
  }
}

export function integrityCheck(db: SqliteDatabase): string {
  return String(db.pragma("integrity_check", { simple: true }))
}

/** The WAL's frames as (pgno, dbSizePages) pairs, read naively: for test expectations. */
export function walFrames(databasePath: string): Array<{ pgno: number; dbSizePages: number; offset: number }> {
  const bytes = fs.readFileSync(`${databasePath}-wal`)
  const frames: Array<{ pgno: number; dbSizePages: number; offset: number }> = []
  for (let offset = 32; offset + 24 + pageSize <= bytes.length; offset += 24 + pageSize) {
    frames.push({ pgno: bytes.readUInt32BE(offset), dbSizePages: bytes.readUInt32BE(offset + 4), offset })
  }
  return frames
}

/** A small seeded PRNG (mulberry32) so a failing workload can be replayed from its seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A real leader's database "main" in `dir` whose transactions become the Raft entries a writer
 * would propose: `record()` captures what its WAL gained since the last call. `close()` when done. */
export function recordingLeader(dir: string): { readonly leader: SqliteDatabase; readonly entries: Array<Entry>; record(): void; close(): void } {
  const leaderPath = path.join(dir, "leader.db")
  const leader = openDatabase(leaderPath, { pageSize })
  const capture = new WalCapture({ databasePath: leaderPath, pageSize })
  const entries: Array<Entry> = []
  return {
    leader,
    entries,
    record: () => {
      for (const transaction of capture.capture()) {
        const index = entries.length + 1
        const data = encodeWriteEntry({ origin: { node: 9, epoch: 1, seq: index }, previousChangeIndex: index - 1, database: "main", pageSet: transaction })
        entries.push({ kind: "command", term: 1, index, data })
      }
    },
    close: () => {
      capture.close()
      leader.close()
    }
  }
}

/** A snapshot's bytes (the state machine's format: manifest, then the images) as a chunked
 * source, as a store would hand it to `restore`. */
export function snapshotSourceOf(meta: SnapshotSource["meta"], bytes: Uint8Array): SnapshotSource {
  return {
    meta,
    sizeBytes: bytes.byteLength,
    crc32c: 0,
    read: (offset, lengthMax) => Effect.succeed(bytes.subarray(offset, Math.min(bytes.byteLength, offset + lengthMax)))
  }
}

/** One local commit of `sql` on a leader's writer, captured as `seq` (pending until Raft marks it
 * committed with `markCommitted(seq)`). */
export function captureOneCommit(db: LeaderDatabase, sql: string, seq: number): number {
  db.writer.control("BEGIN IMMEDIATE")
  db.writer.run(sql, [])
  db.commitLocally(() => db.writer.control("COMMIT"))
  const commit = db.captureLocalCommit(seq)
  expect(commit).not.toBeNull()
  return commit!.seq
}

/** A machine in `dir` that leads database "main" at term 1 (its writer over an in-thread read
 * pool), and `commit(sql)`: one transaction committed locally, captured, encoded and applied
 * through the machine as the node's own entry. `disk`, `bugs` and `checkpointWorker` reach the
 * machine and the leader's database. */
export async function ledMachine(dir: string, options: { readonly disk?: DiskService; readonly bugs?: SqliteMachineBugs; readonly checkpointWorker?: CheckpointWorker } = {}) {
  const machine = await Effect.runPromise(SqliteMachine.open({
    dataDir: dir, nodeId: 1, pageSize, fsync: "sync", bootSnapshot: null,
    ...(options.disk !== undefined ? { disk: options.disk } : {}), ...(options.bugs !== undefined ? { bugs: options.bugs } : {})
  }))
  const log: Array<Entry> = [{ kind: "barrier", term: 1, index: 1 }]
  await Effect.runPromise(machine.apply(log[0]!))
  const epoch = machine.nextEpoch()
  const readPool = inThreadReadPool({ readWorkersMax: 1, readQueueMax: 8, queryTimeoutMs: 10_000, statementCacheMax: 16 })
  const owner = await Effect.runPromise(machine.lead("main", 1, (databasePath): LeaderSlotOwner => ({
    term: 1,
    origin: { node: 1, epoch },
    database: LeaderDatabase.open({
      databasePath, pageSize, readersMax: 4, cachePages: 100, statementCacheMax: 16, readPool,
      ...(options.disk !== undefined ? { disk: options.disk } : {}), ...(options.checkpointWorker !== undefined ? { checkpointWorker: options.checkpointWorker } : {})
    })
  })))
  const database = owner.database
  let seq = 0
  /** Commits locally and returns the entry the writer would propose (in `log`, not applied). */
  const commitLocally = (sql: string): Entry => {
    database.commitLocally(() => database.writer.db.exec(sql))
    const local = database.captureLocalCommit(++seq)!
    const data = encodeWriteEntry({ origin: { node: 1, epoch, seq }, previousChangeIndex: machine.lastChangeIndex("main"), database: "main", pageSet: local.pageSet })
    const entry: Entry = { kind: "command", term: 1, index: log.length + 1, data }
    log.push(entry)
    return entry
  }
  const commit = async (sql: string) => {
    expect((await Effect.runPromise(machine.apply(commitLocally(sql))))._tag).toBe("Own")
  }
  return { machine, owner, database, commit, commitLocally, log }
}
