// One seed of the SQLite simulator: every node the real actor stack with the SQLite state machine
// (SqliteCluster.ts), clients running a random SQL workload through the SQL surface — inserts with
// random() and blobs up to a few MiB, updates, deletes, interactive transactions that commit or
// roll back, schema changes, linearizable reads — under partitions, message loss and delay,
// crashes, whole-cluster power loss and leadership transfers. Then everything heals and stops,
// and the checks run:
// - safety (one leader per term, no two nodes apply different entries at an index);
// - durability and no phantoms: every insert a client was told succeeded is there, every one it
//   was told definitely failed (not leader, busy, SQL error, rolled back) is not;
// - reads see every insert acknowledged before they started;
// - convergence: every node's database has the same content, integrity_check ok, and after a
//   checkpoint of the leader the files are byte-identical.
// SQLite runs for real on files (under /dev/shm when it exists); the values random() and
// randomblob() produce differ between runs but their sizes do not, so a seed replays exactly.
import { crc32c } from "@node-rs/crc32"
import { makeTrace } from "../trace.ts"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import Database from "better-sqlite3"
import { Cause, Duration, Effect, Exit, Schedule } from "effect"
import type { Scope } from "effect"
import { isDiskFull } from "../../../src/actors/DiskFullWatch.ts"
import type { NodeId } from "../../../src/raft/types.ts"
import type { RowStream, SqlFailure, SqlSession, SqlValue } from "../../../src/sqlite/Sql.ts"
import type { SqliteMachineBugs } from "../../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../../src/sqlite/SqliteMachine.ts"
import { decodeManifest, manifestLength } from "../../../src/sqlite/databaseSnapshot.ts"
import type { Entry } from "../../../src/raft/types.ts"
import { makeMirrorDisk } from "../MirrorDisk.ts"
import type { Violation } from "../checkers/safety.ts"
import { SafetyChecker } from "../checkers/safety.ts"
import type { SeedResult } from "../fast/runSeed.ts"
import { Prng } from "../Prng.ts"
import type { LiveNode } from "./SqliteCluster.ts"
import { SqliteCluster } from "./SqliteCluster.ts"
import { runSimulated } from "./SimRuntime.ts"

export interface SqliteSeedOptions {
  readonly seed: number
  readonly trace?: (line: string) => void
  readonly faultTicks?: number
  /** Ticks after healing while clients keep issuing, before they stop (liveness window). */
  readonly healTicks?: number
  /** A known bug, to prove the checkers catch it: a follower that loses a page of a write
   * (convergence), or a workload that records its outcomes wrongly — a definite failure taken
   * for an acknowledgement (durability) or an acknowledgement for a failure (no phantoms). */
  readonly mutation?: SqliteMutation
  /** Keep the seed's files (for a post-mortem). */
  readonly keepFiles?: boolean
  /** "disk": most faults are full disks, on the leader's log and SQLite files at once more often
   * than not (the mutation tests of the disk-full paths); "all" (default): the usual mix;
   * "no-disk": the mix before full disks were simulated (no full disk). */
  readonly faultMix?: "all" | "disk" | "no-disk"
  /** Half the linearizable reads go to the picked node's own copy (ReplicatedDatabases.read), so
   * followers serve them too, under the same checks. Off by default: the CI seeds keep their
   * schedules; test/sim/sqlite/followerReads.test.ts runs seeds with it. */
  readonly followerReads?: boolean
  /** With followerReads: this many more clients that only read, each at a node that does not
   * lead, back to back, so a follower has reads arriving while its read round is in flight
   * (the coalescing of read rounds under test). Their own generator: the other clients draw
   * what they drew before. */
  readonly followerReaders?: number
  /** Reads go the way the gateway sends QUERY_SQL: `querySqlStream`, its batches taken one at a
   * time with a tick between them (writes commit meanwhile), in batches of at most two rows, so a
   * read's pinned snapshot must hold across batches and be released on every exit. Off by
   * default (the CI seeds keep their schedules); test/sim/sqlite/streamReads.test.ts runs it. */
  readonly streamReads?: boolean
  /** RaftConfig.carryCommit, on or off (absent: the config's default). */
  readonly carryCommit?: boolean
  /** Every insert's blob is a page (4 KiB) larger than drawn, so each insert writes overflow
   * pages that no later write rewrites (later writes do rewrite a table's leaf and interior
   * pages, each change as a whole page image). An entry whose pages a node never wrote then
   * stays visible to the final integrity check instead of being overwritten by the next write
   * to the same leaf (the skip-failed-entry mutation). Same draws, only sizes change. */
  readonly overflowInserts?: boolean
  /** A partition cuts the leader off alone (TigerBeetle's isolate-single mode), the same draws
   * made: its pending writes are then cut at its step-down, while clients that found it leading
   * keep sending it writes and reads for its lease's last ticks — the window in which a reader
   * that serves an uncommitted snapshot is seen to (the serve-uncommitted mutation). */
  readonly isolateLeader?: boolean
  /** Every node takes its snapshots a page (4 KiB chunk) per simulated millisecond, so entries
   * are applied while a follower's copy runs and overwrite pages it has not reached (the
   * copy-on-write of CopyOnWrite.ts). Off by default: it changes every seed's schedule. */
  readonly pacedSnapshots?: boolean
}

export type SqliteMutation =
  | "drop-follower-page"
  | "ack-failed"
  | "fail-acked"
  | "serve-uncommitted"
  // Bugs of the durable state under the SQLite files, caught through the simulated disk's power
  // losses and full episodes (SqliteMachineBugs says what each does).
  | "skip-page-sync"
  | "skip-failed-entry"
  | "checkpoint-early"
  | "forget-failed-discard"
  | "install-unsynced"
  | "own-copy-reads-at-once"
  // An own-copy read opens the file while a step-down discard a full disk interrupted is
  // unfinished (its reader deletes the WAL holding the committed frames): with followerReads.
  | "read-before-discard"
  // The Raft core answers a read with the index of a read round already in flight when it
  // arrived (RaftBugs.readJoinsInflightRound).
  | "read-joins-inflight-round"
  // A writer's shutdown (release "keepWal") leaves its database as a closed file reflecting the
  // applied index while its committed frames are only in the WAL (SqliteMachineBugs.forgetKeptWal).
  | "forget-kept-wal"
  // A follower's snapshot copied while entries are applied keeps no old images of the pages it
  // has not copied yet (SqliteMachineBugs.skipCopyOnWrite): with pacedSnapshots, whose end
  // check reads every stored snapshot (the convergence checks alone missed it in 12 seeds: the
  // entries after a snapshot's index, replayed after any install, rewrite its later pages).
  | "skip-copy-on-write"

const machineBugOf: Partial<Record<SqliteMutation, SqliteMachineBugs>> = {
  "drop-follower-page": { dropFollowerPage: true },
  "skip-page-sync": { skipPageSync: true },
  "skip-failed-entry": { skipFailedEntry: true },
  "checkpoint-early": { checkpointEarly: true },
  "forget-failed-discard": { forgetFailedDiscard: true },
  "install-unsynced": { installUnsynced: true },
  "read-before-discard": { readBeforeDiscard: true },
  "forget-kept-wal": { forgetKeptWal: true },
  "skip-copy-on-write": { skipCopyOnWrite: true }
}

export const sqliteMutations: ReadonlyArray<SqliteMutation> = ["drop-follower-page", "ack-failed", "fail-acked", "serve-uncommitted", "skip-page-sync", "skip-failed-entry", "checkpoint-early", "forget-failed-discard", "install-unsynced", "own-copy-reads-at-once", "read-joins-inflight-round", "read-before-discard", "forget-kept-wal", "skip-copy-on-write"]

const tickMs = 10
const database = "app"

type Outcome = "acked" | "failed" | "unknown"

function simBaseDir(seed: number): string {
  const root = fs.existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir()
  return fs.mkdtempSync(path.join(root, `tqlite-sqlite-sim-${seed}-`))
}

export interface SqliteSeedResult extends SeedResult {
  /** Reads a node that did not lead served from its own copy, successfully (`followerReads`). */
  readonly ownCopyReads: number
  /** Reads answered in more than one batch (`streamReads`). */
  readonly streamedReads: number
  /** pacedSnapshots: stored snapshots checked to hold exactly the database at their index. */
  readonly snapshotsChecked: number
}

export function runSqliteSeed(options: SqliteSeedOptions): SqliteSeedResult {
  const recorder = makeTrace(options.trace)
  const trace = recorder.line
  const root = new Prng(options.seed)
  const swarm = root.fork("swarm")
  const size = swarm.pick([1, 3, 3, 5])
  const knobs = {
    dropProbability: swarm.pick([0, 0.02, 0.1]),
    delayMsMax: swarm.pick([1, 10, 20, 40]),
    snapshotEveryEntries: swarm.pick([10, 40, 1000]),
    walCheckpointBytes: swarm.pick([64 * 1024, 1024 * 1024, 16 * 1024 * 1024]),
    transactionTimeoutMs: swarm.pick([100, 1000]),
    faultEveryTicks: swarm.pick([10, 30, 60]),
    clients: swarm.int(1, 6),
    syncEveryEntries: swarm.pick([1, 1, 8, 64])
  }
  const baseDir = simBaseDir(options.seed)
  const checker = new SafetyChecker()
  /** Every committed entry, as first applied by any node (pacedSnapshots: the snapshot check). */
  const appliedEntries = new Map<number, Entry>()
  const cluster = new SqliteCluster({
    baseDir,
    rng: root.fork("cluster"),
    tickMs,
    fsync: "sync",
    snapshotEveryEntries: knobs.snapshotEveryEntries,
    ...(options.pacedSnapshots === true ? { pacedSnapshots: true } : {}),
    dropProbability: knobs.dropProbability,
    delayMsMax: knobs.delayMsMax,
    limits: {
      walCheckpointBytes: knobs.walCheckpointBytes,
      transactionTimeoutMs: knobs.transactionTimeoutMs,
      writeTimeoutMs: 1000,
      commitTimeoutMs: 3000,
      ...(options.streamReads === true ? { streamBatchRowsMax: 2 } : {})
    },
    requestTimeoutMs: 50 * tickMs,
    trace,
    onApplied: (id, entry) => {
      checker.onApplied(id, entry)
      if (options.pacedSnapshots === true && !appliedEntries.has(entry.index)) appliedEntries.set(entry.index, entry)
    },
    syncEveryEntries: knobs.syncEveryEntries,
    ...(options.mutation !== undefined && machineBugOf[options.mutation] !== undefined ? { machineBugs: machineBugOf[options.mutation]! } : {}),
    ...(options.mutation === "serve-uncommitted" ? { readerBugs: { serveUncommitted: true } } : {}),
    ...(options.mutation === "own-copy-reads-at-once" ? { databasesBugs: { ownCopyReadsAtOnce: true } } : {}),
    raftConfig: () => ({
      ...(options.carryCommit !== undefined ? { carryCommit: options.carryCommit } : {}),
      ...(options.mutation === "read-joins-inflight-round" ? { bugs: { readJoinsInflightRound: true } } : {})
    })
  })
  // Its own stream, so the default workload draws exactly what it drew before.
  const readRoute = options.followerReads === true ? root.fork("read-route") : null
  let ownCopyReads = 0
  let streamedReads = 0
  const violations: Array<Violation> = []
  const inserts = new Map<number, Outcome>()
  const acknowledged: Array<number> = []
  /** Inserts issued and not yet answered, and those of them some read saw: a read may see one
   * only if Raft committed it, so every insert a read saw must be in the final database. */
  const inFlight = new Set<number>()
  const seenInFlight = new Map<number, number>()
  let operations = 0
  let completedAfterHeal = 0
  let skipped = 0
  /** Pages saved by copy-on-write for snapshots copied while entries were applied. */
  let snapshotPagesSaved = 0
  /** pacedSnapshots: stored snapshots found to hold exactly the database at their index. */
  let snapshotsChecked = 0
  let checkpoints = 0
  let issuing = true
  let healed = false
  const faultTicks = options.faultTicks ?? 300
  const healTicks = options.healTicks ?? 200
  trace(`sqlite seed ${options.seed} size=${size} ${JSON.stringify(knobs)}`)

  /** A streamed result's rows, its batches taken a tick apart. */
  const collectStream = (open: Effect.Effect<RowStream, SqlFailure, Scope.Scope>) =>
    Effect.gen(function*() {
      const stream = yield* open
      if (!stream.first.done) streamedReads++
      const rows = [...stream.first.rows]
      let batch = stream.first
      while (!batch.done) {
        yield* Effect.sleep(Duration.millis(tickMs))
        batch = yield* stream.next
        rows.push(...batch.rows)
      }
      return { columns: stream.columns, declaredTypes: stream.declaredTypes, rows }
    })

  /** Runs `sql` statements in order on a fresh session at `node`; the first failure stops it. */
  const run = (node: LiveNode, statements: ReadonlyArray<readonly [string, ReadonlyArray<SqlValue>]>, pause: Effect.Effect<void>) =>
    Effect.scoped(
      Effect.gen(function*() {
        const session: SqlSession = yield* node.dbs.open(database)
        let last: unknown = null
        for (const [sql, params] of statements) {
          // As the gateway does: the synchronous fast path first (reads at once under the lease).
          const now = session.querySqlNow?.(sql, params)
          const stream = options.streamReads === true ? session.querySqlStream : undefined
          if (now !== undefined) last = yield* now
          else if (stream !== undefined) last = yield* Effect.scoped(collectStream(stream(sql, params)))
          else last = yield* session.querySql(sql, params)
          yield* pause
        }
        return last
      })
    )

  const classify = (exit: Exit.Exit<unknown, SqlFailure>): Outcome => {
    const outcome = classifyExit(exit)
    if (options.mutation === "ack-failed" && outcome === "failed") return "acked"
    if (options.mutation === "fail-acked" && outcome === "acked") return "failed"
    return outcome
  }

  const client = (id: number, rng: Prng) =>
    Effect.gen(function*() {
      let guess: NodeId | null = null
      let opSeq = 0
      while (issuing) {
        yield* Effect.sleep(Duration.millis(rng.int(0, 3) * tickMs))
        const up = cluster.up()
        if (up.length === 0) continue
        const node = up.find((n) => n.id === guess) ?? rng.pick(up)
        const op = id * 1_000_000 + ++opSeq
        const roll = rng.float()
        const blobBytes = (rng.chance(0.02) ? rng.int(512 * 1024, 3 * 1024 * 1024) : rng.int(0, 3000)) + (options.overflowInserts === true ? 4096 : 0)
        const insert: readonly [string, ReadonlyArray<SqlValue>] = [
          "INSERT INTO events(op, client, r, at, b) VALUES (?, ?, 1000000000 + abs(random() % 1000000000), datetime('now'), randomblob(?))",
          [op, id, blobBytes]
        ]
        const key = rng.int(1, 20)
        const pause = Effect.sleep(Duration.millis(rng.int(0, 2) * tickMs))
        operations++
        let exit: Exit.Exit<unknown, SqlFailure>
        let inserted: number | null = null
        let rolledBack = false
        if (roll < 0.4) {
          inserted = op
          inFlight.add(op)
          exit = yield* Effect.exit(run(node, [insert], Effect.void))
          inFlight.delete(op)
        } else if (roll < 0.55) {
          const statement = rng.pick([
            `INSERT OR REPLACE INTO scratch(k, v, r, b) VALUES (${key}, 0, 1000000000 + abs(random() % 1000000000), randomblob(${rng.int(0, 5000)}))`,
            `UPDATE scratch SET v = v + 1, r = 1000000000 + abs(random() % 1000000000) WHERE k = ${key}`,
            `DELETE FROM scratch WHERE k = ${key}`
          ])
          exit = yield* Effect.exit(run(node, [[statement, []]], Effect.void))
        } else if (roll < 0.7) {
          inserted = op
          rolledBack = rng.chance(0.3)
          exit = yield* Effect.exit(
            run(node, [["BEGIN", []], insert, [`UPDATE scratch SET v = v + 1 WHERE k = ${key}`, []], [rolledBack ? "ROLLBACK" : "COMMIT", []]], pause)
          )
        } else if (roll < 0.75) {
          const n = rng.int(0, 3)
          const statement = rng.pick([
            "CREATE INDEX IF NOT EXISTS scratch_v ON scratch(v)",
            "DROP INDEX IF EXISTS scratch_v",
            `CREATE TABLE IF NOT EXISTS extra_${n}(x INTEGER PRIMARY KEY, y BLOB)`,
            `DROP TABLE IF EXISTS extra_${n}`,
            `INSERT INTO extra_${n}(y) VALUES (randomblob(${rng.int(0, 20_000)}))`
          ])
          exit = yield* Effect.exit(run(node, [[statement, []]], Effect.void))
        } else {
          // A linearizable read must see every insert acknowledged before it started, and may
          // see one still in flight only if it is committed (checked at the end).
          const sample: Array<number> = []
          for (let i = 0; i < 10 && acknowledged.length > 0; i++) sample.push(rng.pick(acknowledged))
          const distinct = [...new Set(sample)]
          const pending = [...inFlight]
          const asked = [...distinct, ...pending]
          // Streamed: ordered through a temporary b-tree, a plan the leader does not run at once on
          // its committed view (boundedReads.ts), so the read goes to the reader pool's stream.
          const sql = `SELECT op FROM events WHERE op IN (${asked.length === 0 ? "NULL" : asked.join(",")})${options.streamReads === true ? " ORDER BY +op" : ""}`
          if (readRoute !== null && readRoute.chance(0.5)) {
            // Any live node, not the one the client found leading: followers serve these.
            const reader = readRoute.pick(cluster.up().length > 0 ? cluster.up() : [node])
            const follows = (yield* reader.raft.status).role !== "leader"
            exit = yield* Effect.exit(Effect.map(reader.dbs.read(database, sql, [], { level: "linearizable" }), (rows) => rows ?? { rows: [] }))
            if (follows && Exit.isSuccess(exit)) ownCopyReads++
          } else {
            exit = yield* Effect.exit(run(node, [[sql, []]], Effect.void))
          }
          if (Exit.isSuccess(exit)) {
            const seen = new Set((exit.value as { rows: ReadonlyArray<ReadonlyArray<unknown>> }).rows.map((row) => Number(row[0])))
            const seenAcked = distinct.filter((op) => seen.has(op)).length
            if (seenAcked !== distinct.length) violations.push({ invariant: "linearizability", detail: `client ${id} read ${seenAcked} of ${distinct.length} acknowledged inserts` })
            for (const op of pending) if (seen.has(op)) seenInFlight.set(op, id)
          }
        }
        const outcome = classify(exit)
        if (inserted !== null) {
          const recorded = rolledBack && outcome === "acked" ? "failed" : outcome
          inserts.set(inserted, recorded)
          if (recorded === "acked") acknowledged.push(inserted)
        }
        if (Exit.isFailure(exit)) guess = null
        else guess = node.id
        if (exit._tag === "Failure" && exit.cause._tag === "Fail" && exit.cause.error._tag === "SqlNotLeader") guess = exit.cause.error.leader
        if (Exit.isFailure(exit) && exit.cause._tag !== "Fail") violations.push({ invariant: "crash", detail: `client ${id}: ${String(exit.cause).slice(0, 500)}` })
        if (healed && outcome !== "unknown") completedAfterHeal++
      }
    })

  /** Reads only, at any node that does not lead, with no pause or a tick's: overlapping reads
   * on one follower, checked as the clients' reads are. */
  const followerReader = (id: number, rng: Prng) =>
    Effect.gen(function*() {
      while (issuing) {
        yield* Effect.sleep(Duration.millis(rng.int(0, 1) * tickMs))
        const followers: Array<LiveNode> = []
        for (const node of cluster.up()) if ((yield* node.raft.status).role !== "leader") followers.push(node)
        if (followers.length === 0) continue
        const reader = rng.pick(followers)
        const sample: Array<number> = []
        for (let i = 0; i < 10 && acknowledged.length > 0; i++) sample.push(rng.pick(acknowledged))
        const distinct = [...new Set(sample)]
        const sql = `SELECT op FROM events WHERE op IN (${distinct.length === 0 ? "NULL" : distinct.join(",")})`
        const exit = yield* Effect.exit(reader.dbs.read(database, sql, [], { level: "linearizable" }))
        if (Exit.isFailure(exit)) {
          if (exit.cause._tag !== "Fail") violations.push({ invariant: "crash", detail: `reader ${id}: ${String(exit.cause).slice(0, 500)}` })
          continue
        }
        operations++
        ownCopyReads++
        const seen = new Set((exit.value?.rows ?? []).map((row) => Number(row[0])))
        const seenAcked = distinct.filter((op) => seen.has(op)).length
        if (seenAcked !== distinct.length) violations.push({ invariant: "linearizability", detail: `reader ${id} at n${reader.id} read ${seenAcked} of ${distinct.length} acknowledged inserts` })
      }
    })

  const program = Effect.gen(function*() {
    const ids = Array.from({ length: size }, (_, i) => i + 1)
    yield* cluster.bootstrap(ids)
    const setup = yield* cluster.awaitLeader(1000)
    yield* run(setup, [
      ["CREATE TABLE IF NOT EXISTS events(op INTEGER PRIMARY KEY, client INTEGER, r INTEGER, at TEXT, b BLOB)", []],
      ["CREATE TABLE IF NOT EXISTS scratch(k INTEGER PRIMARY KEY, v INTEGER, r INTEGER, b BLOB)", []]
    ], Effect.void).pipe(Effect.retry({ times: 200, schedule: Schedule.spaced(Duration.millis(tickMs)) }), Effect.orDie)
    const clients: Array<Effect.Effect<void>> = []
    for (let i = 1; i <= knobs.clients; i++) clients.push(client(i, root.fork(`client${i}`)))
    if (options.followerReads === true) {
      const readers = new Prng(options.seed ^ 0x72647273)
      for (let i = 1; i <= (options.followerReaders ?? 0); i++) clients.push(followerReader(i, readers.fork(`reader${i}`)))
    }
    const running = yield* Effect.forkDaemon(Effect.all(clients, { concurrency: "unbounded", discard: true }))
    const faults = root.fork("faults")
    const restartAt = new Map<NodeId, number>()
    /** Nodes whose disk is full, until the tick their space comes back. */
    const fullUntil = new Map<NodeId, number>()
    const setFull = (id: NodeId, part: "log" | "sqlite" | "both", full: boolean) => {
      if (part !== "sqlite") cluster.diskOf(id)?.driver.setFull(full)
      if (part !== "log") cluster.sqliteDiskOf(id)?.driver.setFull(full)
      if (full) fullUntil.set(id, tick + faults.int(5, 80))
      else fullUntil.delete(id)
    }
    const lastSeen = new Map<NodeId, string>()
    let tick = 0
    const step = Effect.gen(function*() {
      tick++
      yield* Effect.sleep(Duration.millis(tickMs))
      for (const node of cluster.up()) {
        const status = yield* node.raft.status
        if (status.role === "leader") checker.onLeader(status.term, node.id)
        const seen = `${status.role}/${status.term}/${status.leader ?? "-"}`
        if (lastSeen.get(node.id) !== seen) {
          lastSeen.set(node.id, seen)
          trace(`${tick} n${node.id} ${seen} commit=${status.commitIndex}`)
        }
      }
      for (const [id, at] of restartAt) {
        if (at > tick) continue
        restartAt.delete(id)
        const started = yield* Effect.exit(cluster.start(id))
        if (Exit.isSuccess(started)) continue
        // A node that cannot recover on a full disk exits; its supervisor starts it again later.
        if (!isDiskFull(Cause.squash(started.cause))) return yield* Effect.failCause(started.cause)
        trace(`${tick} n${id} START FAILED: disk full`)
        restartAt.set(id, tick + 10)
      }
      for (const [id, at] of fullUntil) {
        if (at > tick) continue
        setFull(id, "both", false)
        trace(`${tick} SPACE n${id}`)
      }
    })
    for (let t = 0; t < faultTicks; t++) {
      yield* step
      if (t % knobs.faultEveryTicks !== 0 || t === 0) continue
      const nodes = [...cluster.nodes.values()]
      const diskFaults = options.faultMix === "disk" && faults.chance(0.6)
      const roll = diskFaults ? 1 : faults.float()
      if (roll < 0.25) {
        cluster.faults++
        cluster.blocked.clear()
        let side = new Set(nodes.filter(() => faults.chance(0.5)).map((n) => n.id))
        if (options.isolateLeader === true) {
          const leader = yield* cluster.readyLeader()
          if (leader !== undefined) side = new Set([leader.id])
        }
        for (const a of nodes) for (const b of nodes) if (side.has(a.id) !== side.has(b.id)) cluster.blocked.add(`${a.id}->${b.id}`)
        trace(`${tick} PARTITION {${[...side].join(",")}}`)
      } else if (roll < 0.4) {
        cluster.blocked.clear()
        trace(`${tick} HEAL`)
      } else if (roll < 0.65) {
        const victim = faults.pick(nodes)
        if (victim.raft !== null) {
          yield* cluster.crash(victim.id)
          restartAt.set(victim.id, tick + faults.int(1, 100))
        }
      } else if (roll < 0.7) {
        trace(`${tick} POWER LOSS`)
        for (const node of nodes) {
          yield* cluster.crash(node.id)
          restartAt.set(node.id, tick + faults.int(1, 20))
        }
      } else if (roll < 0.75) {
        // A follower misses a long stretch: it comes back to a compacted log and needs a snapshot.
        const leader = yield* cluster.readyLeader()
        const victim = nodes.find((n) => n.raft !== null && n.id !== leader?.id)
        if (victim !== undefined && leader !== undefined) {
          trace(`${tick} LAG n${victim.id}`)
          yield* cluster.crash(victim.id)
          restartAt.set(victim.id, tick + faults.int(60, 150))
        }
      } else if (roll < 0.85) {
        const leader = yield* cluster.readyLeader()
        if (leader !== undefined) {
          cluster.faults++
          trace(`${tick} TRANSFER from n${leader.id}`)
          yield* Effect.forkDaemon(Effect.ignore(leader.raft.transferLeadership(null)))
        }
      } else if (options.faultMix !== "no-disk") {
        // A full disk (the log's, the SQLite files', or both), on the leader half the time: the
        // leader steps down and discards while SQLite cannot write, followers' page writes stop
        // part way; space comes back by itself later.
        const leader = yield* cluster.readyLeader()
        const victim = leader !== undefined && faults.chance(diskFaults ? 0.8 : 0.5) ? leader : faults.pick(nodes)
        const part = faults.pick<"log" | "sqlite" | "both">(diskFaults ? ["both"] : ["log", "sqlite", "both", "both"])
        cluster.faults++
        setFull(victim.id, part, true)
        trace(`${tick} DISK FULL n${victim.id} ${part}`)
      }
    }
    // Liveness: heal and restart everything; operations must complete and replicas converge.
    cluster.blocked.clear()
    for (const id of [...fullUntil.keys()]) setFull(id, "both", false)
    for (const id of restartAt.keys()) yield* cluster.start(id)
    restartAt.clear()
    healed = true
    trace(`${tick} HEAL ALL`)
    for (let t = 0; t < healTicks; t++) yield* step
    issuing = false
    for (let t = 0; t < 600 && running.unsafePoll() === null; t++) yield* step
    if (running.unsafePoll() === null) violations.push({ invariant: "liveness", detail: "clients did not finish after healing" })
    const converged = yield* cluster.awaitConverged(1500)
    if (!converged) {
      violations.push({ invariant: "liveness", detail: "no convergence after healing" })
      return
    }
    const leader = yield* cluster.readyLeader()
    if (leader === undefined) return violations.push({ invariant: "liveness", detail: "no leader at the end" })
    // Checkpoint the leader: its file then holds exactly what every follower applied.
    const writer = leader.dbs.writer(database)
    if (writer !== undefined) {
      writer.requestCheckpoint()
      // A snapshot in flight holds checkpoints off (busy: asked again after a later commit, and
      // none comes now): a paced one (a page per ms) for many ticks, so it is asked again.
      const checkpointTicksMax = options.pacedSnapshots === true ? 400 : 20
      for (let t = 0; t < checkpointTicksMax && leader.dbs.writer(database)?.database.walBytes() !== 0; t++) {
        if (options.pacedSnapshots === true && t % 10 === 9) leader.dbs.writer(database)?.requestCheckpoint()
        yield* step
      }
    }
    yield* Effect.sync(() => checkFiles(leader))
    if (options.pacedSnapshots === true) yield* Effect.sync(() => checkSnapshots())
    for (const node of cluster.up()) {
      skipped += node.machine.stats.skipped
      snapshotPagesSaved += node.machine.stats.snapshotPagesSaved
      checkpoints += node.dbs.writer(database)?.stats.checkpoints ?? 0
    }
  }).pipe(Effect.ensuring(cluster.shutdown()))

  const checkFiles = (leader: LiveNode) => {
    const files = cluster.up().map((node) => ({ id: node.id, file: node.machine.databasePath(database) }))
    const contents = new Map<number, string>()
    const bytes = new Map<number, Buffer>()
    for (const { id, file } of files) {
      if (!fs.existsSync(file)) {
        violations.push({ invariant: "convergence", detail: `node ${id} has no database file` })
        continue
      }
      const db = new Database(file, { readonly: true, fileMustExist: true })
      try {
        const integrity = String(db.pragma("integrity_check", { simple: true }))
        if (integrity !== "ok") violations.push({ invariant: "convergence", detail: `node ${id}: integrity_check ${integrity.slice(0, 200)}` })
        contents.set(id, contentDigest(db))
        if (id === leader.id) checkInserts(db)
      } finally {
        db.close()
      }
      bytes.set(id, fs.readFileSync(file))
    }
    const leaderContent = contents.get(leader.id)
    const leaderBytes = bytes.get(leader.id)
    for (const [id, content] of contents) {
      if (content !== leaderContent) violations.push({ invariant: "convergence", detail: `node ${id}'s content differs from leader ${leader.id}'s` })
      else if (leaderBytes !== undefined && Buffer.compare(bytes.get(id)!, leaderBytes) !== 0) {
        violations.push({ invariant: "convergence", detail: `node ${id}'s file is not byte-identical to leader ${leader.id}'s after its checkpoint` })
      }
    }
  }

  const checkInserts = (db: Database.Database) => {
    const present = new Set((db.prepare("SELECT op FROM events").raw().all() as Array<[number]>).map((row) => row[0]))
    for (const [op, outcome] of inserts) {
      if (outcome === "acked" && !present.has(op)) violations.push({ invariant: "durability", detail: `acknowledged insert ${op} is missing` })
      if (outcome === "failed" && present.has(op)) violations.push({ invariant: "linearizability", detail: `insert ${op} was reported failed but is there` })
    }
    for (const [op, reader] of seenInFlight) {
      if (!present.has(op)) violations.push({ invariant: "linearizability", detail: `client ${reader} read insert ${op} while it was in flight, and it was never committed (a dirty read)` })
    }
  }

  /** pacedSnapshots: every snapshot a live node's store holds (read from its simulated disk)
   * has the content of the database as of its index, rebuilt by applying the committed entries
   * 1..index to a fresh machine (a copy that took later pages, `skip-copy-on-write`, differs). */
  const checkSnapshots = () => {
    const references = new Map<number, string>()
    const contentOf = (file: string): string => {
      if (!fs.existsSync(file)) return "no file"
      const db = new Database(file, { readonly: true, fileMustExist: true })
      try {
        const integrity = String(db.pragma("integrity_check", { simple: true }))
        return integrity === "ok" ? contentDigest(db) : `integrity: ${integrity.slice(0, 100)}`
      } catch (error) {
        return `unreadable: ${String(error).slice(0, 100)}`
      } finally {
        db.close()
      }
    }
    const referenceAt = (index: number): string | null => {
      const known = references.get(index)
      if (known !== undefined) return known
      for (let i = 1; i <= index; i++) if (!appliedEntries.has(i)) return null
      const dataDir = fs.mkdtempSync(path.join(baseDir, "reference-"))
      const machine = Effect.runSync(SqliteMachine.open({ dataDir, nodeId: 99, pageSize: 4096, fsync: "off", disk: makeMirrorDisk({ seed: 1 }).service, bootSnapshot: null }))
      try {
        for (let i = 1; i <= index; i++) Effect.runSync(machine.apply(appliedEntries.get(i)!))
        Effect.runSync(machine.sync)
        const content = contentOf(machine.databasePath(database))
        references.set(index, content)
        return content
      } finally {
        machine.close()
      }
    }
    for (const node of cluster.up()) {
      const disk = cluster.diskOf(node.id)
      if (disk === undefined) continue
      for (const name of Effect.runSync(Effect.orDie(disk.service.list(snapshotDirectory)))) {
        const match = /^snapshot-(\d{20})-(\d{20})\.snap$/.exec(name)
        if (match === null) continue
        const index = Number(match[1])
        const image = snapshotImage(disk.driver.fileBytes(path.posix.join(snapshotDirectory, name)), database)
        const reference = referenceAt(index)
        if (image === null || reference === null) continue
        const imageFile = path.join(baseDir, `snapshot-${node.id}-${index}.db`)
        fs.writeFileSync(imageFile, image)
        const content = contentOf(imageFile)
        fs.rmSync(imageFile, { force: true })
        if (content !== reference) violations.push({ invariant: "convergence", detail: `node ${node.id}'s snapshot at ${index} is not the database as of ${index}: ${content.slice(0, 120)}` })
        else snapshotsChecked++
      }
    }
  }

  let exit: Exit.Exit<unknown, unknown>
  try {
    exit = runSimulated(program, { tasksPerInstantMax: 5_000_000 })
    if (Exit.isFailure(exit)) violations.push({ invariant: "crash", detail: String(exit.cause).slice(0, 2000) })
    else if (completedAfterHeal === 0) violations.push({ invariant: "liveness", detail: "no operation completed after healing" })
  } finally {
    if (options.keepFiles !== true) fs.rmSync(baseDir, { recursive: true, force: true })
  }
  violations.push(...checker.violations)
  const acked = [...inserts.values()].filter((o) => o === "acked").length
  trace(`end elections=${checker.elections} applied=${checker.appliedIndexMax} ops=${operations} acked-inserts=${acked} skipped=${skipped} installs=${cluster.installs} boot-restores=${cluster.bootRestores} checkpoints=${checkpoints} cow-pages=${snapshotPagesSaved}${options.pacedSnapshots === true ? ` snapshots-checked=${snapshotsChecked}` : ""} violations=${violations.length}`)
  return {
    seed: options.seed,
    elections: checker.elections,
    committed: checker.appliedIndexMax,
    faults: cluster.faults,
    operations,
    violations,
    linearizabilityUndecided: false,
    traceHash: recorder.hash(),
    ownCopyReads,
    streamedReads,
    snapshotsChecked
  }
}

/** The content of every table, schema included, as one string (blobs by length and a hash). */
function contentDigest(db: Database.Database): string {
  const schema = db.prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY type, name").raw().all() as Array<[string, string, string | null]>
  const out: Array<string> = [JSON.stringify(schema)]
  for (const [type, name] of schema) {
    if (type !== "table" || name.startsWith("sqlite_")) continue
    const rows = db.prepare(`SELECT * FROM "${name}" ORDER BY 1`).raw().all() as Array<Array<unknown>>
    for (const row of rows) out.push(JSON.stringify(row.map((v) => (Buffer.isBuffer(v) ? `blob:${v.length}:${crc32c(v).toString(16)}` : typeof v === "bigint" ? String(v) : v))))
  }
  return out.join("\n")
}

function classifyExit(exit: Exit.Exit<unknown, SqlFailure>): Outcome {
  if (Exit.isSuccess(exit)) return "acked"
  if (exit.cause._tag !== "Fail") return "unknown"
  switch (exit.cause.error._tag) {
    case "SqlNotLeader":
    case "SqlBusy":
    case "SqlError":
    case "SqlStale":
      return "failed"
    case "SqlLeadershipLost":
      return "unknown"
  }
}

/** Where SqliteCluster keeps a node's snapshot store on its simulated disk. */
const snapshotDirectory = "/data/snapshots"

/** The image of `name` in a snapshot store's file (src/storage/Snapshots.ts: header, data,
 * trailer; the data is the state machine's manifest then its images), or null when the file is
 * not whole or the database is not in it. */
function snapshotImage(file: Uint8Array, name: string): Uint8Array | null {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength)
  if (file.byteLength < 16 + 4 + 24) return null
  const dataStart = 16 + view.getUint32(12, true) + 4
  const dataBytes = Number(view.getBigUint64(file.byteLength - 24 + 8, true))
  if (dataStart + dataBytes + 24 !== file.byteLength) return null
  const data = file.subarray(dataStart, dataStart + dataBytes)
  const length = manifestLength(data)
  let offset = length
  for (const entry of decodeManifest(data.subarray(0, length))) {
    if (entry.name === name) return data.subarray(offset, offset + entry.sizeBytes)
    offset += entry.sizeBytes
  }
  return null
}
