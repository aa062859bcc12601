// A cluster of tqlite nodes in one process: each node the real actor stack (RaftActor with its log
// writer and applier) over the SQLite state machine (SqliteMachine) and the SQL surface
// (ReplicatedDatabases), its Raft log and snapshots on a simulated disk (SegmentLog and Snapshots
// over SimDisk: a crash loses what was not fsynced) and its SQLite files in a real directory.
//
// Runs under the simulator's runtime (SimRuntime.ts) or any Effect runtime: every I/O call is
// synchronous (SQLite, the simulated disk, the state machine with fsync "off" or "sync"); the
// network delivers each message from a fiber that sleeps its delay on Effect's Clock.
//
// A crash closes the node's scope: its fibers stop between two calls, its writers close their
// connections leaving the WAL as a killed process would, and its simulated disks lose or tear
// unsynced writes: the one under its log and snapshots (SimDisk) and the one under its SQLite
// files (MirrorDisk: what tqlite writes itself — pages, applied-state, snapshot installs, WAL
// cuts — is modelled; SQLite's own writes are taken as durable, see MirrorDisk.ts).
import fs from "node:fs"
import path from "node:path"
import { Packr } from "msgpackr"
import { Context, Duration, Effect, Exit, Layer, Scope } from "effect"
import type { Envelope } from "../../../src/raft/messages.ts"
import type { RaftNode } from "../../../src/actors/RaftActor.ts"
import * as RaftActor from "../../../src/actors/RaftActor.ts"
import type { RaftConfig } from "../../../src/raft/config.ts"
import { defaultRaftConfig } from "../../../src/raft/config.ts"
import type { Recovered } from "../../../src/raft/storage.ts"
import { bootstrap } from "../../../src/raft/core.ts"
import type { Message } from "../../../src/raft/messages.ts"
import type { Entry, Membership, NodeId, SnapshotMeta } from "../../../src/raft/types.ts"
import type { FsyncMode } from "../../../src/sqlite/appliedState.ts"
import type { SqliteLimits } from "../../../src/sqlite/limits.ts"
import { sqliteLimits } from "../../../src/sqlite/limits.ts"
import type { ReaderBugs } from "../../../src/sqlite/readPool/pinning.ts"
import { inThreadReadPool, workerReadPool } from "../../../src/sqlite/readPool/ReadPool.ts"
import type { ReplicatedDatabases } from "../../../src/sqlite/ReplicatedDatabases.ts"
import * as Replicated from "../../../src/sqlite/ReplicatedDatabases.ts"
import type { SqliteApplyResult, SqliteMachineBugs } from "../../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../../src/sqlite/SqliteMachine.ts"
import { Disk } from "../../../src/storage/Disk.ts"
import { persistInGroupsResumable } from "../../../src/storage/LogStore.ts"
import type { PersistBatch } from "../../../src/storage/LogStore.ts"
import { SegmentLog } from "../../../src/storage/SegmentLog.ts"
import type { SnapshotsService } from "../../../src/storage/Snapshots.ts"
import { Snapshots, writeSnapshotFrom } from "../../../src/storage/Snapshots.ts"
import type { SnapshotSource } from "../../../src/actors/snapshotData.ts"
import { transferSnapshot } from "../snapshotTransfer.ts"
import type { Prng } from "../Prng.ts"
import type { CrashMode, SimDisk } from "../SimDisk.ts"
import { makeSimDisk } from "../SimDisk.ts"
import { makeMirrorDisk } from "../MirrorDisk.ts"

export type SqliteRaftNode = RaftNode<SqliteApplyResult, SqliteMachine>

export interface SqliteClusterOptions {
  /** Each node's SQLite files go to `<baseDir>/node-<id>`. */
  readonly baseDir: string
  readonly rng: Prng
  readonly tickMs: number
  readonly fsync: FsyncMode
  /** See SqliteMachineOptions.syncEveryEntries (default 1). */
  readonly syncEveryEntries?: number
  readonly snapshotEveryEntries: number
  readonly limits?: Partial<SqliteLimits>
  readonly raftConfig?: (id: NodeId, restarts: number) => Partial<RaftConfig>
  /** Network faults: a message is dropped with this probability, else delivered after 0 ..
   * delayMsMax ms (0: at once, in send order). */
  readonly dropProbability?: number
  readonly delayMsMax?: number
  readonly requestTimeoutMs?: number
  readonly mailboxCapacity?: number
  readonly trace?: (line: string) => void
  /** Where the Raft log and snapshots live: the simulated disk (default), or real files under
   * each node's data directory (Disk.layerNode: for real processes, run on the real runtime). */
  readonly disk?: "sim" | "node"
  /** Sees every entry every node applies (e.g. a safety checker). */
  readonly onApplied?: (id: NodeId, entry: Entry) => void
  /** Known bugs of the state machine (mutation tests of the checkers). */
  readonly machineBugs?: SqliteMachineBugs
  /** Bugs of the SQL surface (ReplicatedDatabases' `bugs`), for mutation tests. */
  readonly databasesBugs?: { readonly ownCopyReadsAtOnce?: boolean }
  /** Where reads run: in the main thread by default (the simulator's one deterministic thread
   * cannot wait for a worker), or worker threads (real-runtime tests). */
  readonly readPool?: "in-thread" | "workers"
  /** Known bugs of the readers (mutation tests of the checkers). */
  readonly readerBugs?: ReaderBugs
}

export interface SqliteNode {
  readonly id: NodeId
  readonly dataDir: string
  raft: SqliteRaftNode | null
  machine: SqliteMachine | null
  dbs: ReplicatedDatabases | null
  scope: Scope.CloseableScope | null
  /** Its snapshot store while it runs: where snapshots sent to it are received. */
  snapshots: SnapshotsService | null
  restarts: number
}

export type LiveNode = SqliteNode & { raft: SqliteRaftNode; machine: SqliteMachine; dbs: ReplicatedDatabases }

interface Stored {
  readonly disk: SimDisk
  /** Under the node's SQLite files (null with `disk: "node"`). */
  readonly sqliteDisk: SimDisk | null
  readonly bootstrap: Recovered | null
}

const logDir = "/data/log"
const snapshotDir = "/data/snapshots"
const packr = new Packr({ useRecords: false })

export class SqliteCluster {
  readonly nodes = new Map<NodeId, SqliteNode>()
  private readonly stored = new Map<NodeId, Stored>()
  /** "a->b": messages from a to b are lost. */
  readonly blocked = new Set<string>()
  /** Drops every message for which it returns true (tests: hold back appends, keep heartbeats). */
  dropIf: ((from: NodeId, message: Message) => boolean) | null = null
  faults = 0
  messages = 0
  /** Snapshots installed from a leader, and boots that restored databases from a snapshot. */
  installs = 0
  bootRestores = 0

  constructor(readonly options: SqliteClusterOptions) {}

  /** The simulated disk under a node's log and snapshots (its driver injects faults). */
  diskOf(id: NodeId): SimDisk | undefined {
    return this.stored.get(id)?.disk
  }

  /** The simulated disk under a node's SQLite files (undefined with `disk: "node"`). */
  sqliteDiskOf(id: NodeId): SimDisk | undefined {
    return this.stored.get(id)?.sqliteDisk ?? undefined
  }

  bootstrap(ids: ReadonlyArray<NodeId>): Effect.Effect<void> {
    const config: Membership = { members: ids.map((id) => ({ id, address: `node${id}`, role: "voter" as const })) }
    return Effect.gen(this, function*() {
      for (const id of ids) {
        const seed = this.options.rng.u32()
        const sqliteDisk = this.options.disk === "node" ? null : makeMirrorDisk({ seed: (seed ^ 0x5eed) >>> 0 })
        this.stored.set(id, { disk: makeSimDisk({ seed }), sqliteDisk, bootstrap: bootstrap(config) })
        const dataDir = path.join(this.options.baseDir, `node-${id}`)
        fs.mkdirSync(dataDir, { recursive: true })
        this.nodes.set(id, { id, dataDir, raft: null, machine: null, dbs: null, scope: null, snapshots: null, restarts: 0 })
        yield* this.start(id)
      }
    })
  }

  /** Boots a node from its disk and its SQLite directory, as after a power loss. */
  start(id: NodeId): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      const node = this.nodes.get(id)
      const stored = this.stored.get(id)
      if (node === undefined || stored === undefined || node.raft !== null) return
      stored.disk.driver.restart()
      stored.sqliteDisk?.driver.restart()
      const scope = yield* Scope.make()
      // A start that fails (a full disk while recovering) leaves the node down, as a process
      // that exited: what it opened is closed, and the caller may start it again later.
      const booted = yield* Effect.exit(this.boot(id, node, stored, scope))
      if (Exit.isFailure(booted)) {
        yield* Scope.close(scope, booted)
        return yield* Effect.failCause(booted.cause)
      }
    })
  }

  private boot(id: NodeId, node: SqliteNode, stored: Stored, scope: Scope.CloseableScope): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      const onNodeDisk = this.options.disk === "node"
      const dirs = onNodeDisk ? { log: path.join(node.dataDir, "raft-log"), snapshots: path.join(node.dataDir, "raft-snapshots") } : { log: logDir, snapshots: snapshotDir }
      const { log, snapshots } = yield* Effect.gen(function*() {
        const log = yield* SegmentLog.open({ dir: dirs.log, clusterId: "sqlite-sim", segmentBytesMax: 4 * 1024 * 1024 })
        const context = yield* Layer.build(Snapshots.layer({ dir: dirs.snapshots, chunkBytesMax: 1024 * 1024 }))
        return { log, snapshots: Context.get(context, Snapshots) }
      }).pipe(Effect.provide(onNodeDisk ? Disk.layerNode : Layer.succeed(Disk, stored.disk.service)), Scope.extend(scope), Effect.orDie)
      let loaded = yield* Effect.orDie(log.load)
      if (loaded.entries.length === 0 && loaded.hardState.term === 0 && stored.bootstrap !== null) {
        yield* Effect.orDie(log.persist([{ hardState: stored.bootstrap.hardState, entries: stored.bootstrap.entries }]))
        loaded = yield* Effect.orDie(log.load)
      }
      const own = yield* Effect.orDie(snapshots.latest)
      const snapshot = own !== null && (loaded.snapshot === null || own.index >= loaded.snapshot.index) ? own : loaded.snapshot
      const machine = yield* SqliteMachine.open({
        dataDir: node.dataDir,
        nodeId: id,
        pageSize: this.options.limits?.pageSize ?? 4096,
        fsync: this.options.fsync,
        ...(stored.sqliteDisk !== null ? { disk: stored.sqliteDisk.service } : {}),
        ...(this.options.machineBugs !== undefined ? { bugs: this.options.machineBugs } : {}),
        ...(this.options.syncEveryEntries !== undefined ? { syncEveryEntries: this.options.syncEveryEntries } : {}),
        bootSnapshot: snapshot === null ? null : { meta: snapshot, load: Effect.orDie(snapshots.source(snapshot)) },
        // One thread, in step with the simulated clock: nothing to release between chunks.
        betweenChunks: Effect.void
      })
      yield* Scope.addFinalizer(scope, Effect.sync(() => machine.close()))
      const onApplied = this.options.onApplied
      if (machine.stats.restores > 0) this.bootRestores++
      const stateMachine = Object.assign(Object.create(machine) as SqliteMachine, {
        apply: (entry: Entry) => (onApplied === undefined ? machine.apply(entry) : Effect.zipLeft(machine.apply(entry), Effect.sync(() => onApplied(id, entry)))),
        restore: (meta: SnapshotMeta, source: SnapshotSource) => Effect.zipLeft(machine.restore(meta, source), Effect.sync(() => void this.installs++))
      })
      const persist = persistInGroupsResumable(log)
      const raft = yield* RaftActor.make<SqliteApplyResult, SqliteMachine>({
        config: { ...defaultRaftConfig(id, id * 7919 + node.restarts * 104729), snapshotTrailingEntries: 8, ...this.options.raftConfig?.(id, node.restarts) },
        recovered: { ...loaded, snapshot },
        stateMachine,
        io: {
          persist: (batches: ReadonlyArray<PersistBatch>) => persist(batches),
          recover: log.recover,
          readEntries: log.read,
          saveSnapshot: (meta, produce) => writeSnapshotFrom(snapshots, meta, produce),
          adoptSnapshot: snapshots.adopt,
          snapshotSource: snapshots.source,
          send: (envelope) => this.send(id, envelope)
        },
        tickMs: this.options.tickMs,
        snapshotEveryEntries: this.options.snapshotEveryEntries,
        mailboxCapacity: this.options.mailboxCapacity ?? 4096,
        batchMax: 256,
        requestTimeoutMs: this.options.requestTimeoutMs ?? 100 * this.options.tickMs
      }).pipe(Scope.extend(scope))
      const limits = sqliteLimits(this.options.limits)
      const dbs = yield* Replicated.make({
        raft,
        machine,
        pollMs: this.options.tickMs,
        readPool: this.options.readPool === "workers" ? workerReadPool(limits, this.options.readerBugs) : inThreadReadPool(limits, this.options.readerBugs),
        // A reader mutation is in the pool's pinning: every read goes there to meet it.
        inlineBoundedReads: this.options.readerBugs === undefined,
        ...(this.options.databasesBugs !== undefined ? { bugs: this.options.databasesBugs } : {}),
        ...(this.options.limits !== undefined ? { limits: this.options.limits } : {})
      }).pipe(Scope.extend(scope))
      node.raft = raft
      node.machine = machine
      node.dbs = dbs
      node.scope = scope
      node.snapshots = snapshots
      this.options.trace?.(`n${id} START term=${loaded.hardState.term} log=${loaded.base.index}+${loaded.entries.length} snapshot=${snapshot?.index ?? 0}`)
    })
  }

  /** Stops the node where it is, then cuts its disk's power (`mode`: what unsynced writes do). */
  crash(id: NodeId, mode?: CrashMode): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      const node = this.nodes.get(id)
      if (node === undefined || node.scope === null) return
      this.faults++
      this.options.trace?.(`n${id} CRASH`)
      const scope = node.scope
      node.raft = null
      node.machine = null
      node.dbs = null
      node.scope = null
      node.snapshots = null
      node.restarts++
      yield* Scope.close(scope, Exit.void)
      if (this.options.disk !== "node") {
        const stored = this.stored.get(id)
        const lost = mode ?? this.options.rng.pick<CrashMode>(["lose", "prefix", "sectors"])
        stored?.disk.driver.crash(lost)
        stored?.sqliteDisk?.driver.crash(lost)
      }
    })
  }

  /** Cuts every link to and from `id` (both directions). */
  isolate(id: NodeId): void {
    for (const other of this.nodes.keys()) {
      if (other === id) continue
      this.blocked.add(`${id}->${other}`)
      this.blocked.add(`${other}->${id}`)
    }
  }

  heal(): void {
    this.blocked.clear()
  }

  private send(from: NodeId, envelope: Envelope): Effect.Effect<void> {
    const message = envelope.message
    this.messages++
    const drop = this.options.dropProbability ?? 0
    if (drop > 0 && this.options.rng.chance(drop)) return Effect.void
    const bytes = packr.pack(message)
    const deliver = Effect.suspend(() => {
      const node = this.nodes.get(message.to)
      if (node?.raft == null || node.snapshots === null || this.blocked.has(`${from}->${message.to}`) || this.dropIf?.(from, message) === true) return Effect.void
      const raft = node.raft
      if (envelope.snapshot === null) return raft.deliver({ message: packr.unpack(bytes) as Message, snapshot: null })
      return Effect.flatMap(transferSnapshot(envelope.snapshot, node.snapshots.inbox, 1024 * 1024), (snapshot) =>
        snapshot === null ? Effect.void : raft.deliver({ message: packr.unpack(bytes) as Message, snapshot }))
    })
    const delayMsMax = this.options.delayMsMax ?? 0
    if (this.blocked.has(`${from}->${message.to}`) || this.dropIf?.(from, message) === true) return Effect.void
    if (delayMsMax === 0) return deliver
    const delayMs = this.options.rng.int(1, delayMsMax)
    return Effect.asVoid(Effect.forkDaemon(Effect.zipRight(Effect.sleep(Duration.millis(delayMs)), deliver)))
  }

  up(): Array<LiveNode> {
    return [...this.nodes.values()].filter((n): n is LiveNode => n.raft !== null && n.machine !== null && n.dbs !== null)
  }

  /** The node that is leader with its barrier applied (ready to serve), if any. */
  readyLeader(): Effect.Effect<LiveNode | undefined> {
    return Effect.gen(this, function*() {
      for (const node of this.up()) {
        const status = yield* node.raft.status
        if (status.role === "leader" && node.machine.barrierTerm === status.term) return node
      }
      return undefined
    })
  }

  /** Waits (in `tickMs` steps, at most `ticksMax`) for a ready leader. */
  awaitLeader(ticksMax = 500, except?: NodeId): Effect.Effect<LiveNode> {
    return Effect.gen(this, function*() {
      for (let i = 0; i < ticksMax; i++) {
        const leader = yield* this.readyLeader()
        if (leader !== undefined && leader.id !== except) return leader
        yield* Effect.sleep(Duration.millis(this.options.tickMs))
      }
      return yield* Effect.dieMessage(`no ready leader within ${ticksMax} ticks`)
    })
  }

  /** Waits until every live node has applied the leader's commit index. */
  awaitConverged(ticksMax = 1000): Effect.Effect<boolean> {
    return Effect.gen(this, function*() {
      for (let i = 0; i < ticksMax; i++) {
        const leader = yield* this.readyLeader()
        if (leader !== undefined) {
          const commit = (yield* leader.raft.status).commitIndex
          let all = true
          for (const node of this.up()) if ((yield* node.raft.status).appliedIndex < commit || node.machine.appliedIndex < commit) all = false
          if (all) return true
        }
        yield* Effect.sleep(Duration.millis(this.options.tickMs))
      }
      return false
    })
  }

  /** Closes every node (as crashes that lose nothing unsynced... of the simulated disk: "lose"). */
  shutdown(): Effect.Effect<void> {
    return Effect.forEach([...this.nodes.keys()], (id) => this.crash(id, "lose"), { discard: true })
  }
}
