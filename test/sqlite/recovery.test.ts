// Catching up and starting over: a follower that was down for 10,000 writes installs a snapshot;
// the transaction size bound; a follower that crashed in the middle of applying replays to the
// same bytes.
import fs from "node:fs"
import path from "node:path"
import { Effect, Exit, Fiber } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import type { SqlFailure } from "../../src/sqlite/Sql.ts"
import type { BootSnapshot } from "../../src/actors/snapshotData.ts"
import type { LeaderSlotOwner, SqliteMachineBugs } from "../../src/sqlite/SqliteMachine.ts"
import { LeaderDatabase } from "../../src/sqlite/LeaderDatabase.ts"
import { inThreadReadPool } from "../../src/sqlite/readPool/ReadPool.ts"
import type { Entry } from "../../src/raft/types.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { decodeWriteEntry } from "../../src/sqlite/writeEntry.ts"
import { contentOf, exec, filesOf, integrityOf, makeCluster, query, rowsOf, session, simulate, sleepTicks } from "./clusterHelpers.ts"
import { pageSize, recordingLeader, seededRandom, snapshotSourceOf, tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))
const newDir = () => {
  const dir = tempDirectory("tqlite-recovery-")
  dirs.push(dir)
  return dir.path
}

const errorOf = <A>(exit: Exit.Exit<A, SqlFailure>) => (Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : null)

describe("catching up", () => {
  it("a follower down for 10,000 writes gets a snapshot and converges", () => {
    const base = newDir()
    const result = simulate(
      Effect.gen(function*() {
        const cluster = makeCluster(base, { snapshotEveryEntries: 40 })
        yield* cluster.bootstrap([1, 2, 3])
        const leader = yield* cluster.awaitLeader()
        const s = yield* session(leader)
        yield* exec(s, "CREATE TABLE w(id INTEGER PRIMARY KEY, client INTEGER, r INTEGER, b BLOB)")
        yield* cluster.awaitConverged()
        const down = cluster.up().find((n) => n.id !== leader.id)!.id
        yield* cluster.crash(down)
        const clients = 50
        yield* Effect.forEach(
          Array.from({ length: clients }, (_, c) => c),
          (c) =>
            Effect.gen(function*() {
              const sc = yield* session(leader)
              for (let i = 0; i < 10_000 / clients; i++) yield* exec(sc, "INSERT INTO w(client, r, b) VALUES (?, random(), randomblob(16))", [c])
            }),
          { concurrency: "unbounded", discard: true }
        )
        const entries = leader.machine.stats.own
        yield* cluster.start(down)
        const converged = yield* cluster.awaitConverged(3000)
        const restarted = cluster.nodes.get(down)!.machine!
        const count = rowsOf(yield* query(s, "SELECT count(*) FROM w"))
        const contents = filesOf(cluster).map((f) => contentOf(f.path))
        const integrity = filesOf(cluster).map((f) => integrityOf(f.path))
        const restores = restarted.stats.restores
        // Its images arrived beside the store's file and were renamed into place, not copied.
        const installsByRename = restarted.stats.installsByRename
        // Fewer than snapshotEveryEntries applied after the snapshot it installed: it takes none
        // of its own (it took one at once, of the state it had just installed, before the fix).
        const snapshotsTaken = restarted.stats.snapshots
        yield* cluster.shutdown()
        return { converged, count, contents, integrity, restores, installsByRename, entries, snapshotsTaken }
      })
    )
    expect(result.converged).toBe(true)
    expect(result.count).toEqual([[10_000n]])
    expect(result.entries).toBeLessThan(2_000) // group commit
    expect(result.restores).toBeGreaterThanOrEqual(1)
    expect(result.installsByRename).toBe(result.restores)
    expect(result.snapshotsTaken).toBe(0)
    expect(new Set(result.contents).size).toBe(1)
    expect(result.integrity).toEqual(["ok", "ok", "ok"])
  })
})

describe("the transaction size bound", () => {
  it("a transaction over transactionBytesMax fails with SQLITE_TOOBIG and changes nothing", () => {
    const base = newDir()
    const bound = 256 * 1024
    const result = simulate(
      Effect.gen(function*() {
        const cluster = makeCluster(base, { limits: { transactionBytesMax: bound } })
        yield* cluster.bootstrap([1, 2, 3])
        const leader = yield* cluster.awaitLeader()
        const s = yield* session(leader)
        yield* exec(s, "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)")
        // 1. One statement that grows the database past the bound.
        const single = errorOf(yield* Effect.exit(exec(s, "INSERT INTO big(b) VALUES (randomblob(?))", [2 * bound])))
        // 2. The same inside a group-commit batch: it fails alone.
        cluster.dropIf = (from, m) => from === leader.id && m._tag === "AppendEntries"
        const first = yield* Effect.fork(exec(s, "INSERT INTO big(b) VALUES (randomblob(10))"))
        yield* sleepTicks(2)
        const sessions = yield* Effect.forEach([0, 1, 2, 3, 4], () => session(leader))
        const batch = yield* Effect.forEach(sessions, (si, i) =>
          Effect.fork(Effect.exit(exec(si, "INSERT INTO big(b) VALUES (randomblob(?))", [i === 2 ? 2 * bound : 100]))))
        yield* sleepTicks(2)
        cluster.dropIf = null
        yield* Fiber.join(first)
        const batchExits = yield* Effect.forEach(batch, Fiber.join)
        // 3. A transaction that rewrites existing pages (the database does not grow): caught after
        //    its local commit, cut out of the WAL.
        yield* exec(s, "DELETE FROM big")
        for (let i = 0; i < 3; i++) {
          yield* exec(s, "BEGIN")
          for (let j = 0; j < 50; j++) yield* exec(s, "INSERT INTO big(b) VALUES (randomblob(2000))")
          yield* exec(s, "COMMIT")
        }
        const before = rowsOf(yield* query(s, "SELECT count(*), sum(length(b)) FROM big"))
        const digestBefore = rowsOf(yield* query(s, "SELECT group_concat(hex(substr(b, 1, 8)), '') FROM big"))
        const rewrite = errorOf(yield* Effect.exit(exec(s, "UPDATE big SET b = randomblob(2000)")))
        const digestAfter = rowsOf(yield* query(s, "SELECT group_concat(hex(substr(b, 1, 8)), '') FROM big"))
        const stillWorks = yield* exec(s, "INSERT INTO big(b) VALUES (randomblob(10))")
        yield* cluster.awaitConverged()
        const contents = filesOf(cluster).map((f) => contentOf(f.path))
        const resets = leader.dbs.writer("main")!.stats.resets
        yield* cluster.shutdown()
        return { single, batchExits, before, digestBefore, rewrite, digestAfter, stillWorks, contents, resets }
      })
    )
    expect(result.single).toMatchObject({ _tag: "SqlError", code: 18 })
    expect(result.batchExits.map((e) => (Exit.isSuccess(e) ? "ok" : errorOf(e)?._tag))).toEqual(["ok", "ok", "SqlError", "ok", "ok"])
    expect(errorOf(result.batchExits[2]!)).toMatchObject({ code: 18 })
    expect(result.before).toEqual([[150n, 300_000n]])
    expect(result.rewrite).toMatchObject({ _tag: "SqlError", code: 18 })
    expect(result.digestAfter).toEqual(result.digestBefore)
    expect(result.resets).toBe(1)
    expect(result.stillWorks.rowsAffected).toBe(1)
    expect(new Set(result.contents).size).toBe(1)
  })
})

describe("a follower crashing in the middle of applying", () => {
  it("replays from the index its file reflects and ends with the same bytes", async () => {
    const base = newDir()
    // Entries from a real leader: a workload captured from its WAL, as a writer would propose them.
    const { leader, entries, record, close } = recordingLeader(base)
    const random = seededRandom(7)
    leader.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b BLOB)")
    record()
    for (let step = 0; step < 60; step++) {
      const roll = random()
      if (roll < 0.6) leader.prepare("INSERT INTO t(a, b) VALUES (random(), randomblob(?))").run(1 + Math.floor(random() * 9000))
      else if (roll < 0.8) leader.prepare("UPDATE t SET b = randomblob(?) WHERE id % 3 = ?").run(1 + Math.floor(random() * 500), step % 3)
      else leader.prepare("DELETE FROM t WHERE id % 4 = ?").run(step % 4)
      record()
    }
    close()
    expect(entries.length).toBeGreaterThan(50)
    const last = entries.length

    const applyRange = (machine: SqliteMachine, from: number, to: number, syncEvery: number) =>
      Effect.gen(function*() {
        for (let i = from; i <= to; i++) {
          yield* machine.apply(entries[i - 1]!)
          if (i % syncEvery === 0) yield* machine.sync
        }
      })
    const open = (dir: string) => SqliteMachine.open({ dataDir: dir, nodeId: 2, pageSize, fsync: "sync", bootSnapshot: null })

    const reference = await Effect.runPromise(open(path.join(base, "reference")))
    await Effect.runPromise(Effect.zipRight(applyRange(reference, 1, last, 5), reference.sync))
    reference.close()

    const crashedDir = path.join(base, "crashed")
    const crashed = await Effect.runPromise(open(crashedDir))
    await Effect.runPromise(applyRange(crashed, 1, 30, 10)) // synced and recorded up to 30
    await Effect.runPromise(applyRange(crashed, 31, 37, 1000)) // applied, never synced nor recorded
    crashed.close()
    // …and the apply of 38 was torn: half its pages reached the file.
    const torn = entries[37]!
    if (torn.kind !== "command") throw new Error("entry 38 is a command")
    const file = crashed.databasePath("main")
    const tornPages = decodeWriteEntry(torn.data).pageSet.pages
    expect(tornPages.length).toBeGreaterThan(1)
    const fd = fs.openSync(file, "r+")
    for (const page of tornPages.slice(0, Math.ceil(tornPages.length / 2))) fs.writeSync(fd, page.data, 0, pageSize, (page.pgno - 1) * pageSize)
    fs.closeSync(fd)

    const restarted = await Effect.runPromise(open(crashedDir))
    // The Raft core replays every committed entry it still has (here: all of them).
    await Effect.runPromise(Effect.zipRight(applyRange(restarted, 1, last, 7), restarted.sync))
    const replayed = restarted.stats.replayed
    restarted.close()
    expect(replayed).toBe(30)
    expect(Buffer.compare(fs.readFileSync(file), fs.readFileSync(reference.databasePath("main")))).toBe(0)
    expect(integrityOf(file)).toBe("ok")
    expect(contentOf(file)).toBe(contentOf(reference.databasePath("main")))
  })
})

describe("a restart whose files are older than its boot snapshot", () => {
  it("brings them up to it from the log when the log reaches back to them, else restores the snapshot; same bytes either way", async () => {
    const base = newDir()
    const { leader, entries, record, close } = recordingLeader(base)
    const random = seededRandom(21)
    leader.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b BLOB)")
    record()
    for (let step = 0; step < 50; step++) {
      if (random() < 0.7) leader.prepare("INSERT INTO t(a, b) VALUES (random(), randomblob(?))").run(1 + Math.floor(random() * 9000))
      else leader.prepare("UPDATE t SET b = randomblob(?) WHERE id % 3 = ?").run(1 + Math.floor(random() * 500), step % 3)
      record()
    }
    close()
    const last = entries.length
    const open = (dir: string, bootSnapshot: BootSnapshot | null = null, bugs?: SqliteMachineBugs) =>
      SqliteMachine.open({ dataDir: dir, nodeId: 2, pageSize, fsync: "sync", bootSnapshot, ...(bugs !== undefined ? { bugs } : {}) })
    const applyRange = (machine: SqliteMachine, from: number, to: number) =>
      Effect.gen(function*() {
        for (let i = from; i <= to; i++) yield* machine.apply(entries[i - 1]!)
        yield* machine.sync
      })

    // The reference applied everything and took the snapshot at `last`.
    const reference = await Effect.runPromise(open(path.join(base, "reference")))
    await Effect.runPromise(applyRange(reference, 1, last))
    const chunks: Array<Buffer> = []
    await Effect.runPromise(reference.snapshot({ chunkBytesMax: 64 * 1024, write: (chunk) => Effect.sync(() => void chunks.push(Buffer.from(chunk))) }))
    reference.close()
    const snapshotBytes = Buffer.concat(chunks)
    const meta = { index: last, term: 1, config: { members: [{ id: 2, address: "a:1", role: "voter" as const }] } }

    /** A node whose files reflect entry 30 restarts with the snapshot at `last` and a log from `logFirst`. */
    const restart = async (name: string, logFirst: number | null, bugs?: SqliteMachineBugs) => {
      const dir = path.join(base, name)
      const before = await Effect.runPromise(open(dir))
      await Effect.runPromise(applyRange(before, 1, 30))
      before.close()
      let snapshotReads = 0
      let logReads = 0
      const source = snapshotSourceOf(meta, snapshotBytes)
      const boot: BootSnapshot = {
        meta,
        load: Effect.succeed({ ...source, read: (offset, lengthMax) => Effect.zipRight(Effect.sync(() => void snapshotReads++), source.read(offset, lengthMax)) }),
        ...(logFirst === null ? {} : {
          log: {
            firstIndex: logFirst,
            lastIndex: last,
            readFrom: (lo: number, hiMax: number) => Effect.sync(() => {
              logReads++
              return entries.slice(lo - 1, Math.min(hiMax, lo + 6))
            })
          }
        })
      }
      const restarted = await Effect.runPromise(open(dir, boot, bugs))
      const stats = { ...restarted.stats, appliedIndex: restarted.appliedIndex, snapshotReads, logReads }
      const file = restarted.databasePath("main")
      restarted.close()
      // Once more, with no boot snapshot at all: the record says the file is current.
      const again = await Effect.runPromise(open(dir, { ...boot, load: Effect.die("the snapshot is not read again") }))
      const restoresAgain = again.stats.restores + again.stats.bootReplays
      again.close()
      return { stats, restoresAgain, file }
    }

    const referenceFile = path.join(base, "reference", "databases", "main.db")
    const replayed = await restart("replayed", 1)
    expect(replayed.stats).toMatchObject({ bootReplays: 1, restores: 0, snapshotReads: 0, appliedIndex: last, replayed: 0 })
    expect(replayed.stats.logReads).toBeGreaterThanOrEqual(Math.ceil((last - 30) / 7))
    expect(replayed.restoresAgain).toBe(0)
    expect(Buffer.compare(fs.readFileSync(replayed.file), fs.readFileSync(referenceFile))).toBe(0)
    expect(integrityOf(replayed.file)).toBe("ok")
    // The log starts at the file's next entry: still enough.
    expect((await restart("exact", 31)).stats).toMatchObject({ bootReplays: 1, restores: 0, snapshotReads: 0 })
    // The log does not reach back to the file (compacted past 31): the snapshot is restored.
    const restored = await restart("restored", 32)
    expect(restored.stats).toMatchObject({ bootReplays: 0, restores: 1, logReads: 0, appliedIndex: last })
    expect(restored.stats.snapshotReads).toBeGreaterThan(0)
    expect(Buffer.compare(fs.readFileSync(restored.file), fs.readFileSync(referenceFile))).toBe(0)
    // No log given, or the old behaviour: restored, same bytes.
    expect((await restart("no-log", null)).stats).toMatchObject({ bootReplays: 0, restores: 1 })
    const old = await restart("old", 1, { neverReplayAtBoot: true })
    expect(old.stats).toMatchObject({ bootReplays: 0, restores: 1 })
    expect(Buffer.compare(fs.readFileSync(old.file), fs.readFileSync(referenceFile))).toBe(0)
  })
})

describe("the log a restart replays from", () => {
  it("reaches back far enough when kept from replayFrom(), also after a writer took the database over", async () => {
    const base = newDir()
    const { leader, entries, record, close } = recordingLeader(base)
    leader.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    record()
    for (let i = 0; i < 12; i++) {
      leader.prepare("INSERT INTO t(b) VALUES (randomblob(?))").run(500 + i * 300)
      record()
    }
    close()
    const barrier: Entry = { kind: "barrier", term: 1, index: entries.length + 1 }
    const log = [...entries, barrier]
    const last = log.length
    const open = (dir: string, bootSnapshot: BootSnapshot | null = null) =>
      SqliteMachine.open({ dataDir: dir, nodeId: 2, pageSize, fsync: "sync", bootSnapshot, syncEveryEntries: 1000 })
    // The snapshot at `last`, from a machine that applied everything.
    const reference = await Effect.runPromise(open(path.join(base, "reference")))
    for (const entry of log) await Effect.runPromise(reference.apply(entry))
    await Effect.runPromise(Effect.zipRight(reference.sync, Effect.void))
    const chunks: Array<Buffer> = []
    await Effect.runPromise(reference.snapshot({ chunkBytesMax: 64 * 1024, write: (chunk) => Effect.sync(() => void chunks.push(Buffer.from(chunk))) }))
    reference.close()
    const meta = { index: last, term: 1, config: { members: [{ id: 2, address: "a:1", role: "voter" as const }] } }

    // A follower: applied 1..4 and recorded them, then the rest without a record (it syncs
    // every 1000 entries), then it leads (its writer takes the database over) and dies.
    const dir = path.join(base, "node")
    const machine = await Effect.runPromise(open(dir))
    for (const entry of log.slice(0, 4)) await Effect.runPromise(machine.apply(entry))
    await Effect.runPromise(machine.sync.pipe(Effect.zipRight(Effect.void)))
    for (const entry of log.slice(4)) await Effect.runPromise(machine.apply(entry))
    const readPool = inThreadReadPool({ readWorkersMax: 1, readQueueMax: 8, queryTimeoutMs: 10_000, statementCacheMax: 16 })
    const epoch = machine.nextEpoch()
    const owner = await Effect.runPromise(machine.lead("main", 1, (databasePath): LeaderSlotOwner => ({
      term: 1,
      origin: { node: 2, epoch },
      database: LeaderDatabase.open({ databasePath, pageSize, readersMax: 4, cachePages: 100, statementCacheMax: 16, readPool })
    })))
    const keepFrom = machine.replayFrom()
    owner.database.close("keepWal") // as a kill -9 leaves it
    machine.close()

    // The log compacted up to keepFrom − 1: the restart replays it, the snapshot unread.
    const source = snapshotSourceOf(meta, Buffer.concat(chunks))
    const restarted = await Effect.runPromise(open(dir, {
      meta,
      load: Effect.succeed(source),
      log: { firstIndex: keepFrom, lastIndex: last, readFrom: (lo: number, hiMax: number) => Effect.succeed(log.slice(lo - 1, Math.min(hiMax, lo + 3))) }
    }))
    const stats = { ...restarted.stats }
    const file = restarted.databasePath("main")
    restarted.close()
    expect(keepFrom).toBeLessThanOrEqual(last + 1)
    expect(stats).toMatchObject({ restores: 0 })
    expect(contentOf(file)).toBe(contentOf(path.join(base, "reference", "databases", "main.db")))
  })
})
