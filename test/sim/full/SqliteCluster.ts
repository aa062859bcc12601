// A cluster of tqlite nodes in one process: each node built by the node wiring (Node.wire: the
// real actor stack, RaftActor with its log writer and applier) over the SQLite state machine
// (SqliteMachine), with the SQL surface (ReplicatedDatabases) on top, its Raft log and snapshots on a simulated disk (SegmentLog and Snapshots
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
import { Duration, Effect, Exit, Logger, Scope } from "effect"
import type { Envelope } from "../../../src/raft/messages.ts"
import type { RaftNode } from "../../../src/actors/RaftActor.ts"
import type { RaftConfig } from "../../../src/raft/config.ts"
import type { Message } from "../../../src/raft/messages.ts"
import type { Entry, Membership, NodeId, SnapshotMeta } from "../../../src/raft/types.ts"
import type { NodeIo, NodeTransport } from "../../../src/node/Node.ts"
import * as Node from "../../../src/node/Node.ts"
import type { FsyncMode } from "../../../src/sqlite/appliedState.ts"
import type { SqliteLimits } from "../../../src/sqlite/limits.ts"
import { sqliteLimits } from "../../../src/sqlite/limits.ts"
import type { ReaderBugs } from "../../../src/sqlite/readPool/pinning.ts"
import { inThreadReadPool, workerReadPool } from "../../../src/sqlite/readPool/ReadPool.ts"
import type { ReplicatedDatabases } from "../../../src/sqlite/ReplicatedDatabases.ts"
import * as Replicated from "../../../src/sqlite/ReplicatedDatabases.ts"
import type { SqliteApplyResult, SqliteMachineBugs } from "../../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../../src/sqlite/SqliteMachine.ts"
import { nodeDisk } from "../../../src/storage/Disk.ts"
import type { SnapshotInbox, SnapshotSource } from "../../../src/actors/snapshotData.ts"
import { applyLater } from "../../../src/actors/Applier.ts"
import { transferSnapshot } from "../snapshotTransfer.ts"
import type { Prng } from "../Prng.ts"
import type { CrashMode, SimDisk } from "../SimDisk.ts"
import { makeSimDisk } from "../SimDisk.ts"
import { makeMirrorDisk } from "../MirrorDisk.ts"
import { nodeLogLevel } from "./FullCluster.ts"

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
  /** Snapshots are taken a 4 KiB chunk per simulated millisecond (runSqliteSeed's
   * `pacedSnapshots`): entries are applied while they are copied. */
  readonly pacedSnapshots?: boolean
  /** With pacedSnapshots: simulated ms per 4 KiB chunk (default 1). */
  readonly snapshotChunkMs?: number
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
  readonly databasesBugs?: { readonly ownCopyReadsAtOnce?: boolean; readonly proposeThroughWorker?: boolean; readonly savepointFirstStatement?: boolean; readonly checkpointWithoutBackoff?: boolean }
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
  /** While it runs: where snapshots sent to it are received (its snapshot store's inbox), and
   * the handler its wiring registered for inbound messages. */
  inbox: SnapshotInbox | null
  deliver: ((envelope: Envelope) => Effect.Effect<void>) | null
  /** The wiring's plain handler (NodeTransport.serveNow), used when a message is delivered at
   * once (no delay). */
  deliverNow?: ((envelope: Envelope) => void) | null
  restarts: number
}

export type LiveNode = SqliteNode & { raft: SqliteRaftNode; machine: SqliteMachine; dbs: ReplicatedDatabases }

interface Stored {
  readonly disk: SimDisk
  /** Under the node's SQLite files (null with `disk: "node"`). */
  readonly sqliteDisk: SimDisk | null
  /** The founding members, written as the log's first entry at first start. */
  readonly founding: Membership | null
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
        this.stored.set(id, { disk: makeSimDisk({ seed }), sqliteDisk, founding: config })
        const dataDir = path.join(this.options.baseDir, `node-${id}`)
        fs.mkdirSync(dataDir, { recursive: true })
        this.nodes.set(id, { id, dataDir, raft: null, machine: null, dbs: null, scope: null, inbox: null, deliver: null, restarts: 0 })
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

  /** The node wiring (Node.wire) with this node's simulated disk and network, the SQLite state
   * machine on its own (mirrored) disk, and the SQL surface on top, as SqlNode puts it. */
  private boot(id: NodeId, node: SqliteNode, stored: Stored, scope: Scope.CloseableScope): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      const onNodeDisk = this.options.disk === "node"
      const options = this.options
      const io: NodeIo<NodeTransport> = {
        disk: onNodeDisk ? nodeDisk : stored.disk.service,
        transport: (inbox) => Effect.succeed(this.transportOf(id, node, inbox)),
        clock: yield* Effect.clock,
        tickMs: options.tickMs,
        randomSeed: id * 7919 + node.restarts * 104729
      }
      let machine: SqliteMachine | null = null
      const wired = yield* Node.wire({
        identity: { nodeId: id, clusterId: "sqlite-sim", address: `node${id}` },
        founding: stored.founding,
        stateMachine: (snapshot) =>
          Effect.gen(this, function*() {
            const opened = yield* Effect.acquireRelease(
              SqliteMachine.open({
                dataDir: node.dataDir,
                nodeId: id,
                pageSize: options.limits?.pageSize ?? 4096,
                fsync: options.fsync,
                ...(stored.sqliteDisk !== null ? { disk: stored.sqliteDisk.service } : {}),
                ...(options.machineBugs !== undefined ? { bugs: options.machineBugs } : {}),
                ...(options.syncEveryEntries !== undefined ? { syncEveryEntries: options.syncEveryEntries } : {}),
                bootSnapshot: snapshot,
                // One thread, in step with the simulated clock: nothing to release between chunks.
                ...(options.pacedSnapshots === true
                  ? { betweenChunks: Effect.sleep(Duration.millis(options.snapshotChunkMs ?? 1)), snapshotChunkBytes: 4096 }
                  : { betweenChunks: Effect.void })
              }),
              (opened) => Effect.sync(() => opened.close())
            )
            machine = opened
            if (opened.stats.restores > 0) this.bootRestores++
            const onApplied = options.onApplied
            return Object.assign(Object.create(opened) as SqliteMachine, {
              apply: (entry: Entry) => (onApplied === undefined ? opened.apply(entry) : Effect.zipLeft(opened.apply(entry), Effect.sync(() => onApplied(id, entry)))),
              // The applier's plain path calls applyNow, not apply: the checker must see those too
              // (without this it saw only large entries and retries, and checked next to nothing).
              applyNow: (entry: Entry) => {
                const result = opened.applyNow(entry)
                if (result !== applyLater) onApplied?.(id, entry)
                return result
              },
              restore: (meta: SnapshotMeta, source: SnapshotSource) => Effect.zipLeft(opened.restore(meta, source), Effect.sync(() => void this.installs++))
            })
          }),
        storage: onNodeDisk
          ? { logDir: path.join(node.dataDir, "raft-log"), snapshotsDir: path.join(node.dataDir, "raft-snapshots"), segmentBytesMax: 4 * 1024 * 1024, snapshotChunkBytesMax: 1024 * 1024 }
          : { logDir, snapshotsDir: snapshotDir, segmentBytesMax: 4 * 1024 * 1024, snapshotChunkBytesMax: 1024 * 1024 },
        raft: { snapshotTrailingEntries: 8, ...options.raftConfig?.(id, node.restarts) },
        bounds: {
          snapshotEveryEntries: options.snapshotEveryEntries,
          mailboxCapacity: options.mailboxCapacity ?? 4096,
          batchMax: Math.min(256, options.mailboxCapacity ?? 4096),
          requestTimeoutMs: options.requestTimeoutMs ?? 100 * options.tickMs
        }
      }, io).pipe(Effect.orDie, Logger.withMinimumLogLevel(nodeLogLevel), Scope.extend(scope))
      const opened = machine as SqliteMachine | null
      if (opened === null) return yield* Effect.dieMessage("the wiring returned without making the state machine")
      const limits = sqliteLimits(options.limits)
      const dbs = yield* Replicated.make({
        raft: wired.raft,
        machine: opened,
        pollMs: options.tickMs,
        readPool: options.readPool === "workers" ? workerReadPool(limits, options.readerBugs) : inThreadReadPool(limits, options.readerBugs),
        // A reader mutation is in the pool's pinning: every read goes there to meet it.
        inlineBoundedReads: options.readerBugs === undefined,
        ...(options.databasesBugs !== undefined ? { bugs: options.databasesBugs } : {}),
        ...(options.limits !== undefined ? { limits: options.limits } : {})
      }).pipe(Scope.extend(scope))
      node.raft = wired.raft
      node.machine = opened
      node.dbs = dbs
      node.scope = scope
      const recovered = wired.recovered
      options.trace?.(`n${id} START term=${recovered.hardState.term} log=${recovered.base.index}+${recovered.entries.length} snapshot=${recovered.snapshot?.index ?? 0}`)
    })
  }

  /** The node's end of the simulated network: `send` below; deliveries go to the handler the
   * wiring registers, snapshots into the inbox of its snapshot store. */
  private transportOf(id: NodeId, node: SqliteNode, inbox: SnapshotInbox): NodeTransport {
    node.inbox = inbox
    return {
      address: `node${id}`,
      send: (envelope) => this.send(id, envelope),
      sendNow: (envelope) => this.sendNow(id, envelope),
      serve: (onEnvelope) => Effect.sync(() => void (node.deliver = onEnvelope)),
      serveNow: (onEnvelope) => Effect.sync(() => void (node.deliverNow = onEnvelope)),
      setPeers: () => Effect.void
    }
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
      node.inbox = null
      node.deliver = null
      node.deliverNow = null
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

  /** `send` in plain code for what it delivers at once (no delay, no snapshot): the same steps
   * in the same order (the same draws of the random source); false otherwise. */
  private sendNow(from: NodeId, envelope: Envelope): boolean {
    const message = envelope.message
    if ((this.options.delayMsMax ?? 0) !== 0 || envelope.snapshot !== null || this.nodes.get(message.to)?.deliverNow == null) return false
    this.messages++
    const drop = this.options.dropProbability ?? 0
    if (drop > 0 && this.options.rng.chance(drop)) return true
    const bytes = packr.pack(message)
    if (this.blocked.has(`${from}->${message.to}`) || this.dropIf?.(from, message) === true) return true
    const node = this.nodes.get(message.to)
    if (node?.raft == null || node.inbox === null || node.deliver === null || node.deliverNow == null || this.blocked.has(`${from}->${message.to}`) || this.dropIf?.(from, message) === true) return true
    node.deliverNow({ message: packr.unpack(bytes) as Message, snapshot: null })
    return true
  }

  private send(from: NodeId, envelope: Envelope): Effect.Effect<void> {
    const message = envelope.message
    this.messages++
    const drop = this.options.dropProbability ?? 0
    if (drop > 0 && this.options.rng.chance(drop)) return Effect.void
    const bytes = packr.pack(message)
    const deliver = Effect.suspend(() => {
      const node = this.nodes.get(message.to)
      if (node?.raft == null || node.inbox === null || node.deliver === null || this.blocked.has(`${from}->${message.to}`) || this.dropIf?.(from, message) === true) return Effect.void
      const deliver = node.deliver
      if (envelope.snapshot === null) return deliver({ message: packr.unpack(bytes) as Message, snapshot: null })
      return Effect.flatMap(transferSnapshot(envelope.snapshot, node.inbox, 1024 * 1024), (snapshot) =>
        snapshot === null ? Effect.void : deliver({ message: packr.unpack(bytes) as Message, snapshot }))
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
