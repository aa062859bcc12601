// Power lost at every disk operation of a follower's apply-and-sync, of a snapshot install (copied
// from the store's file, or renamed into place from the images split off as it arrived) and of
// a leader's step-down (WAL cut, removal, record), on the simulator's disk for SQLite files
// (test/sim/MirrorDisk.ts), in each crash mode: whatever survives, the node restarts, replays its
// log from the index applied-state records, and ends with the reference content. Each crash point is proven by a bug of the durable-state code (SqliteMachineBugs) that
// this sweep must catch.
import fs from "node:fs"
import path from "node:path"
import Database from "better-sqlite3"
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import type { Entry, SnapshotMeta } from "../../src/raft/types.ts"
import type { IncomingSnapshot, SnapshotSource } from "../../src/actors/snapshotData.ts"
import { encodeManifest } from "../../src/sqlite/databaseSnapshot.ts"
import type { SqliteMachineBugs } from "../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import type { LeaderSlotOwner } from "../../src/sqlite/SqliteMachine.ts"
import { LeaderDatabase } from "../../src/sqlite/LeaderDatabase.ts"
import { inThreadReadPool } from "../../src/sqlite/readPool/ReadPool.ts"
import { encodeWriteEntry } from "../../src/sqlite/writeEntry.ts"
import type { CrashMode } from "../sim/SimDisk.ts"
import { makeMirrorDisk } from "../sim/MirrorDisk.ts"
import { pageSize, recordingLeader, seededRandom, snapshotSourceOf, tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))
const newDir = () => {
  const dir = tempDirectory("tqlite-machine-crash-")
  dirs.push(dir)
  return dir.path
}

/** Entries of a real leader's workload, captured from its WAL as a writer proposes them. */
function workload(dir: string, steps: number): Array<Entry> {
  const { leader, entries, record, close } = recordingLeader(dir)
  const random = seededRandom(11)
  leader.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b BLOB)")
  record()
  for (let step = 0; step < steps; step++) {
    if (random() < 0.7) leader.prepare("INSERT INTO t(a, b) VALUES (random(), randomblob(?))").run(1 + Math.floor(random() * 6000))
    else leader.prepare("UPDATE t SET b = randomblob(?) WHERE id % 3 = ?").run(1 + Math.floor(random() * 500), step % 3)
    record()
  }
  close()
  return entries
}

const rowsOf = (file: string): string => {
  if (!fs.existsSync(file)) return "no file"
  const db = new Database(file, { readonly: true, fileMustExist: true })
  try {
    const integrity = String(db.pragma("integrity_check", { simple: true }))
    if (integrity !== "ok") return `integrity: ${integrity}`
    return JSON.stringify(db.prepare("SELECT id, a, length(b) FROM t ORDER BY id").raw().all(), (_, v: unknown) => (typeof v === "bigint" ? String(v) : v))
  } catch (error) {
    return `unreadable: ${String(error)}`
  } finally {
    db.close()
  }
}

const run = <A, E>(effect: Effect.Effect<A, E>): A => Effect.runSync(effect)

/** Applies `entries` to a machine on a fresh MirrorDisk, one sync every `syncEvery`, with the
 * power lost at disk operation `crashAt` (counted from the machine's open); then restarts it and
 * replays every entry (as the Raft log would): the content at the end. */
function applyCrashReplay(options: {
  readonly entries: ReadonlyArray<Entry>
  readonly syncEvery: number
  readonly crashAt: number | null
  readonly mode: CrashMode
  readonly bugs?: SqliteMachineBugs
  readonly restoreAt?: RestoreAt
}): { readonly rows: string; readonly opsUsed: number; readonly installsByRename: number } {
  const dataDir = newDir()
  const disk = makeMirrorDisk({ seed: 5 })
  const open = () => run(SqliteMachine.open({ dataDir, nodeId: 2, pageSize, fsync: "sync", disk: disk.service, bootSnapshot: null, betweenChunks: Effect.void, ...(options.bugs !== undefined ? { bugs: options.bugs } : {}) }))
  const machine = open()
  const opsBefore = disk.driver.ops()
  if (options.crashAt !== null) disk.driver.crashAtOp(opsBefore + options.crashAt, options.mode)
  try {
    if (options.restoreAt !== undefined) {
      const meta = { index: options.restoreAt.index, term: 1, config: { members: [] } }
      const source = options.restoreAt.byRename === true ? receiveAlongside(machine, meta, options.restoreAt.data) : snapshotSourceOf(meta, options.restoreAt.data)
      run(machine.restore(meta, source))
    }
    for (const entry of options.entries) {
      if (entry.index <= (options.restoreAt?.index ?? 0)) continue
      run(machine.apply(entry))
      if (entry.index % options.syncEvery === 0) run(machine.sync)
    }
    run(machine.sync)
  } catch {
    // The power went out: what the disk kept is what the restart finds.
  }
  const opsUsed = disk.driver.ops() - opsBefore
  const installsByRename = machine.stats.installsByRename
  machine.close()
  if (options.crashAt !== null && !disk.driver.isCrashed()) disk.driver.crash(options.mode)
  disk.driver.restart()
  const restarted = open()
  for (const entry of options.entries) run(restarted.apply(entry))
  run(restarted.sync)
  const file = restarted.databasePath("main")
  restarted.close()
  return { rows: rowsOf(file), opsUsed, installsByRename }
}

interface RestoreAt {
  readonly index: number
  readonly data: Uint8Array
  /** The snapshot arrives as a transfer the machine sees alongside the store (receiveAlongside),
   * so its install renames the images it split off instead of copying them. */
  readonly byRename?: boolean
}

/** `data` received as a transfer in 4 KiB chunks, through the machine's receiveAlongside over an
 * in-memory stand-in for the snapshot store's incoming file: the source its finish returns. */
function receiveAlongside(machine: SqliteMachine, meta: SnapshotMeta, data: Uint8Array): SnapshotSource {
  let written = 0
  const store: IncomingSnapshot = {
    meta,
    sizeBytes: data.byteLength,
    crc32c: 0,
    offset: Effect.sync(() => written),
    writeAt: (offset, chunk) => Effect.sync(() => (written = Math.max(written, Math.min(offset + chunk.byteLength, data.byteLength)))),
    finish: Effect.sync(() => snapshotSourceOf(meta, data)),
    pause: Effect.void
  }
  const incoming = run(machine.receiveAlongside(store))
  for (let at = 0; at < data.byteLength; at += 4096) run(incoming.writeAt(at, data.subarray(at, at + 4096)))
  return run(Effect.orDie(incoming.finish))
}

/** Every crash point and mode: the crash points where the end content is not the reference. */
function sweep(entries: ReadonlyArray<Entry>, syncEvery: number, bugs: SqliteMachineBugs | undefined, reference: string, restoreAt?: RestoreAt): Array<string> {
  const { opsUsed } = applyCrashReplay({ entries, syncEvery, crashAt: null, mode: "lose", ...(restoreAt !== undefined ? { restoreAt } : {}) })
  expect(opsUsed).toBeGreaterThan(5)
  const wrong: Array<string> = []
  for (let crashAt = 0; crashAt <= opsUsed; crashAt++) {
    for (const mode of ["lose", "prefix", "sectors"] as const) {
      const { rows } = applyCrashReplay({ entries, syncEvery, crashAt, mode, ...(bugs !== undefined ? { bugs } : {}), ...(restoreAt !== undefined ? { restoreAt } : {}) })
      if (rows !== reference) wrong.push(`op ${crashAt} ${mode}: ${rows.slice(0, 80)}`)
    }
  }
  return wrong
}

describe("power lost at every disk operation under the SQLite files", () => {
  const base = newDir()
  const entries = workload(base, 14)
  const reference = applyCrashReplay({ entries, syncEvery: 1, crashAt: null, mode: "lose" }).rows

  it("during apply and sync: replay always ends with the reference content; recording before the pages are synced is caught", () => {
    expect(reference).toMatch(/^\[\[/)
    expect(sweep(entries, 3, undefined, reference)).toEqual([])
    expect(sweep(entries, 3, { skipPageSync: true }, reference).length).toBeGreaterThan(0)
  }, 120_000)

  it("during a snapshot install: the node ends with the reference content; an install without fsync is caught", async () => {
    // The snapshot: the database as of entry 6, made by a machine on the real disk (whose
    // applied-state writes go through the thread pool: run as promises).
    const source = newDir()
    const maker = await Effect.runPromise(SqliteMachine.open({ dataDir: source, nodeId: 3, pageSize, fsync: "off", bootSnapshot: null }))
    for (const entry of entries.slice(0, 6)) await Effect.runPromise(maker.apply(entry))
    await Effect.runPromise(maker.sync)
    const image = fs.readFileSync(maker.databasePath("main"))
    maker.close()
    const manifest = encodeManifest([{ name: "main", lastChangeIndex: 6, sizeBytes: image.byteLength }])
    const data = new Uint8Array(manifest.byteLength + image.byteLength)
    data.set(manifest, 0)
    data.set(image, manifest.byteLength)
    const restoreAt = { index: 6, data }
    expect(sweep(entries, 4, undefined, reference, restoreAt)).toEqual([])
    expect(sweep(entries, 4, { installUnsynced: true }, reference, restoreAt).length).toBeGreaterThan(0)
    // Received alongside the transfer and renamed into place: the same guarantee, and it is a
    // rename (no copy); renaming images whose bytes were never fdatasynced is caught.
    const byRename = { ...restoreAt, byRename: true }
    expect(applyCrashReplay({ entries, syncEvery: 4, crashAt: null, mode: "lose", restoreAt: byRename }).installsByRename).toBe(1)
    expect(applyCrashReplay({ entries, syncEvery: 4, crashAt: null, mode: "lose", restoreAt }).installsByRename).toBe(0)
    expect(sweep(entries, 4, undefined, reference, byRename)).toEqual([])
    expect(sweep(entries, 4, { receivedUnsynced: true }, reference, byRename).length).toBeGreaterThan(0)
  }, 240_000)

  it("during a snapshot copied while entries are applied (copy-on-write): the node ends with the reference content, no side file survives; the copy is the state at its index, and dropping the copy-on-write is caught", () => {
    const clean = snapshotCrash(entries, null, "lose")
    expect(clean.rows).toBe(reference)
    expect(clean.pagesSaved).toBeGreaterThan(0)
    expect(clean.copiedWhileApplying).toBeGreaterThan(0)
    expect(clean.image).not.toBeNull()
    expect(Buffer.compare(clean.image!, clean.imageAtIndex)).toBe(0)
    const mutated = snapshotCrash(entries, null, "lose", { skipCopyOnWrite: true })
    expect(mutated.image === null || Buffer.compare(mutated.image, mutated.imageAtIndex) !== 0).toBe(true)
    expect(clean.used).toBeGreaterThan(5)
    const wrong: Array<string> = []
    for (let crashAt = 0; crashAt <= clean.used; crashAt++) {
      for (const mode of ["lose", "prefix", "sectors"] as const) {
        const { rows, leftover } = snapshotCrash(entries, crashAt, mode)
        if (rows !== reference || leftover.length > 0) wrong.push(`op ${crashAt} ${mode}: ${rows.slice(0, 80)} ${leftover.join(",")}`)
      }
    }
    expect(wrong).toEqual([])
  }, 240_000)

  it("during a step-down's WAL cut and its removal: the restarted node replays to the committed rows; recording the file before the discard is caught", () => {
    const committed = discardCrash(null, "lose").rows
    expect(committed).toMatch(/^\[\[/)
    expect(committed).not.toMatch(/666/)
    const { used } = discardCrash(null, "lose")
    expect(used).toBeGreaterThan(2)
    const wrong = (bugs?: SqliteMachineBugs) => {
      const out: Array<string> = []
      for (let crashAt = 0; crashAt <= used; crashAt++) {
        for (const mode of ["lose", "prefix", "sectors"] as const) {
          const { rows } = discardCrash(crashAt, mode, bugs)
          if (rows !== committed) out.push(`op ${crashAt} ${mode}: ${rows.slice(0, 80)}`)
        }
      }
      return out
    }
    expect(wrong()).toEqual([])
    expect(wrong({ recordBeforeDiscard: true }).length).toBeGreaterThan(0)
  }, 120_000)

  it("during a shutdown's release and the entry applied after it: the restarted node replays to every committed row; the release that forgets the WAL is caught", () => {
    const committed = discardCrash(null, "lose", undefined, "shutdown").rows
    expect(committed).toMatch(/^\[\[.*666/)
    const { used } = discardCrash(null, "lose", undefined, "shutdown")
    expect(used).toBeGreaterThan(4)
    const wrong = (bugs?: SqliteMachineBugs) => {
      const out: Array<string> = []
      for (let crashAt = 0; crashAt <= used; crashAt++) {
        for (const mode of ["lose", "prefix", "sectors"] as const) {
          const { rows } = discardCrash(crashAt, mode, bugs, "shutdown")
          if (rows !== committed) out.push(`op ${crashAt} ${mode}: ${rows.slice(0, 80)}`)
        }
      }
      return out
    }
    expect(wrong()).toEqual([])
    expect(wrong({ forgetKeptWal: true }).length).toBeGreaterThan(0)
  }, 120_000)
})

/** A follower on the MirrorDisk applies the first `snapshotIndex` entries and syncs, prepares a
 * snapshot, and streams it in 4 KiB chunks into memory while the rest of the entries are applied,
 * one per chunk (a sync every 3), so pages the copy has not reached are overwritten during it;
 * the power is lost at disk operation `crashAt` of the copy and applies. Then the node restarts
 * and replays its log: the content at the end, side files left after the restart, and (when the
 * copy ended) the image it copied beside the file as of its index. */
function snapshotCrash(entries: ReadonlyArray<Entry>, crashAt: number | null, mode: CrashMode, bugs?: SqliteMachineBugs) {
  const snapshotIndex = 6
  const dataDir = newDir()
  const disk = makeMirrorDisk({ seed: 13 })
  const open = () => run(SqliteMachine.open({ dataDir, nodeId: 2, pageSize, fsync: "sync", disk: disk.service, bootSnapshot: null, betweenChunks: Effect.void, snapshotChunkBytes: 4096, ...(bugs !== undefined ? { bugs } : {}) }))
  const machine = open()
  for (const entry of entries.slice(0, snapshotIndex)) run(machine.apply(entry))
  run(machine.sync)
  const imageAtIndex = fs.readFileSync(machine.databasePath("main"))
  const later = entries.slice(snapshotIndex)
  const chunks: Array<Uint8Array> = []
  let copiedWhileApplying = 0
  const applyNext = () => {
    const entry = later.shift()
    if (entry === undefined) return
    run(machine.apply(entry))
    if (entry.index % 3 === 0) run(machine.sync)
  }
  const opsBefore = disk.driver.ops()
  if (crashAt !== null) disk.driver.crashAtOp(opsBefore + crashAt, mode)
  let image: Buffer | null = null
  try {
    const job = run(machine.prepareSnapshot)
    expect(job.concurrent).toBe(true)
    const sink = {
      chunkBytesMax: 4096,
      write: (chunk: Uint8Array) =>
        Effect.sync(() => {
          chunks.push(Uint8Array.from(chunk))
          if (chunks.length > 1 && later.length > 0) copiedWhileApplying++
          applyNext()
        })
    }
    const exit = Effect.runSyncExit(Effect.ensuring(job.write(sink), job.release))
    if (exit._tag === "Success") image = Buffer.concat(chunks.slice(1))
    while (later.length > 0) applyNext()
    run(machine.sync)
  } catch {
    // The power went out: what the disk kept is what the restart finds.
  }
  const used = disk.driver.ops() - opsBefore
  const pagesSaved = machine.stats.snapshotPagesSaved
  machine.close()
  if (crashAt !== null && !disk.driver.isCrashed()) disk.driver.crash(mode)
  disk.driver.restart()
  const restarted = open()
  const leftover = fs.readdirSync(path.dirname(restarted.databasePath("main"))).filter((file) => file.endsWith(".tmp"))
  for (const entry of entries) run(restarted.apply(entry))
  run(restarted.sync)
  const file = restarted.databasePath("main")
  restarted.close()
  return { rows: rowsOf(file), used, image, imageAtIndex, pagesSaved, copiedWhileApplying, leftover }
}

/** A leader with committed transactions in its WAL (some checkpointed) and one local commit Raft
 * never committed steps down (release "discard") on the MirrorDisk, with the power lost at disk
 * operation `crashAt` of the step-down; then the node restarts and replays its log. `how`
 * "shutdown": the node shuts down instead (release "keepWal") and its applier goes on to apply
 * that last commit's entry (Raft committed it) and sync, as in a node's scope closing (seed 49);
 * the power is lost at `crashAt` of the release, apply and sync. */
function discardCrash(crashAt: number | null, mode: CrashMode, bugs?: SqliteMachineBugs, how: "discard" | "shutdown" = "discard"): { readonly rows: string; readonly used: number } {
  const dataDir = newDir()
  const disk = makeMirrorDisk({ seed: 9 })
  const open = () => run(SqliteMachine.open({ dataDir, nodeId: 1, pageSize, fsync: "sync", disk: disk.service, bootSnapshot: null, ...(bugs !== undefined ? { bugs } : {}) }))
  const machine = open()
  const log: Array<Entry> = [{ kind: "barrier", term: 1, index: 1 }]
  run(machine.apply(log[0]!))
  const epoch = machine.nextEpoch()
  const readPool = inThreadReadPool({ readWorkersMax: 1, readQueueMax: 8, queryTimeoutMs: 10_000, statementCacheMax: 16 })
  const owner = run(machine.lead("main", 1, (databasePath): LeaderSlotOwner => ({
    term: 1,
    origin: { node: 1, epoch },
    database: LeaderDatabase.open({ databasePath, pageSize, readersMax: 4, cachePages: 100, statementCacheMax: 16, readPool, disk: disk.service })
  })))
  const database = owner.database
  const commit = (sql: string, seq: number): Entry => {
    database.commitLocally(() => database.writer.db.exec(sql))
    const local = database.captureLocalCommit(seq)!
    const data = encodeWriteEntry({ origin: { node: 1, epoch, seq }, previousChangeIndex: machine.lastChangeIndex("main"), database: "main", pageSet: local.pageSet })
    return { kind: "command", term: 1, index: log.length + 1, data }
  }
  const commitAndApply = (sql: string, seq: number) => {
    const entry = commit(sql, seq)
    log.push(entry)
    expect(run(machine.apply(entry))._tag).toBe("Own")
  }
  commitAndApply("CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b BLOB); INSERT INTO t(a, b) VALUES (1, randomblob(3000))", 1)
  commitAndApply("INSERT INTO t(a, b) VALUES (2, randomblob(5000))", 2)
  // A checkpoint: the main file holds these, the WAL restarts.
  expect(database.checkpoint().busy).toBe(false)
  run(machine.checkpointed("main", owner))
  commitAndApply("INSERT INTO t(a, b) VALUES (3, randomblob(7000))", 3)
  commitAndApply("UPDATE t SET b = randomblob(100) WHERE a = 1", 4)
  const last = commit("INSERT INTO t(a, b) VALUES (666, randomblob(9000))", 5)
  if (how === "shutdown") log.push(last)
  const opsBefore = disk.driver.ops()
  if (crashAt !== null) disk.driver.crashAtOp(opsBefore + crashAt, mode)
  try {
    if (how === "discard") run(machine.release("main", owner, "discard", true))
    else {
      run(machine.release("main", owner, "keepWal", false))
      run(machine.apply(last))
      run(machine.sync)
    }
  } catch {
    // The power went out during the step-down.
  }
  const used = disk.driver.ops() - opsBefore
  machine.close()
  if (crashAt !== null && !disk.driver.isCrashed()) disk.driver.crash(mode)
  disk.driver.restart()
  const restarted = open()
  for (const entry of log) run(restarted.apply(entry))
  run(restarted.sync)
  const file = restarted.databasePath("main")
  restarted.close()
  return { rows: rowsOf(file), used }
}
