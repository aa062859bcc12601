// One tqlite node wired from its parts: storage (segment log, snapshot store), the peer
// transport, and the Raft actor stack driving a pluggable state machine. `wire` is the one
// function that builds a node; it takes everything the node touches outside its memory as one
// record, `NodeIo` (disk, transport, clock and ticker period, random seed) — TigerBeetle's
// `ReplicaType(StateMachine, MessageBus, Storage, Time)`. `make` is production: the data
// directory's lock and identity, then `wire` with TCP, the real disk and the system clock. The
// full and SQLite simulators and `npm run bench -- raft` call `wire` with their own records.
// Everything lives in the caller's scope: closing it stops the node.
import * as path from "node:path"
import type { Scope } from "effect"
import { Clock, Context, Duration, Effect, Layer, Schedule } from "effect"
import type { StateMachine } from "../actors/Applier.ts"
import type { RaftNode } from "../actors/RaftActor.ts"
import * as RaftActor from "../actors/RaftActor.ts"
import type { ClientConnectionHandler, TransportService } from "../net/peers/PeerTransport.ts"
import type { ListenFailed } from "../net/peers/errors.ts"
import type { Envelope } from "../raft/messages.ts"
import type { RecoveredBounded } from "../raft/storage.ts"
import type { PeerTlsOptions } from "../net/peers/sockets.ts"
import { makeTcp } from "../net/peers/PeerTransport.ts"
import type { RaftConfig } from "../raft/config.ts"
import { defaultRaftConfig } from "../raft/config.ts"
import { bootstrap } from "../raft/core.ts"
import type { Membership, NodeId, SnapshotMeta } from "../raft/types.ts"
import { slotSizeBytes } from "../raft/types.ts"
import type { DiskService } from "../storage/Disk.ts"
import { Disk } from "../storage/Disk.ts"
import type { LogStoreService } from "../storage/LogStore.ts"
import { persistInGroupsResumable } from "../storage/LogStore.ts"
import { SegmentLog } from "../storage/SegmentLog.ts"
import { Snapshots, writeSnapshotFrom } from "../storage/Snapshots.ts"
import type { BootLog, BootSnapshot, SnapshotInbox } from "../actors/snapshotData.ts"
import type { SnapshotError, StorageError } from "../storage/errors.ts"
import type { HealthLimits } from "../observability/health.ts"
import { healthLimitsFor, leaderQuorumContact } from "../observability/health.ts"
import * as NodeMetrics from "../observability/NodeMetrics.ts"
import { nodeIdLabel } from "../observability/NodeMetrics.ts"
import * as PeerContact from "../observability/PeerContact.ts"
import { lockDataDir } from "./dataDirLock.ts"
import type { NodeIdentity } from "./identity.ts"
import { generateClusterId, generateNodeId, loadOrCreateIdentity } from "./identity.ts"
import { checkNoUnfinishedRepair } from "./repair.ts"
import type { NodeBoundsInvalid, NodeBoundsOverrides } from "../limits.ts"
import type { DataDirInUse, DataDirLockFailed } from "./dataDirLock.ts"
import type { IdentityCorrupted, IdentityMismatch } from "./identity.ts"
import type { RepairUnfinished } from "./repair.ts"
import { checkNodeBounds, nodeBoundsDefault } from "../limits.ts"

/** The driver's tick when none is given. With the core's default electionTicks (10, each node
 * drawing its timeout from [10, 20) ticks) a leader's death is noticed after 0.5–1 s, and its
 * heartbeats (every tick) come ten times per shortest election timeout. Measured
 * (`npm run bench -- failover`, docs/performance.md): 100 ms ticks cost 1.7–2 s per failover. */
export const defaultTickMs = nodeBoundsDefault.raftActor.tickMs

/** Why a node did not start, each a tagged error of the layer that refused: the bounds table, the
 * data directory's lock and identity, an unfinished repair, the log and snapshot store
 * (corruption, a full or failing disk, another cluster's or an unknown format's files), the
 * listener. A state machine's own start errors come on top (`E`). */
export type NodeStartError =
  | NodeBoundsInvalid
  | DataDirInUse
  | DataDirLockFailed
  | IdentityCorrupted
  | IdentityMismatch
  | RepairUnfinished
  | StorageError
  | SnapshotError
  | ListenFailed

export interface NodeOptions<R, SM, E = never> {
  readonly dataDir: string
  /** "host:port" this node listens on for peers and clients. */
  readonly address: string
  /** A brand-new data directory either founds a cluster (this node its only voter) or waits,
   * empty, to be added to an existing one (`join`). Ignored when the directory has a log. */
  readonly start: { readonly _tag: "Bootstrap" } | { readonly _tag: "Join"; readonly clusterId: string }
  /** Makes the state machine (in the node's scope), restored to `snapshot` when there is one;
   * `load` opens its data (read in chunks) only if the state machine needs it. */
  readonly stateMachine: (
    identity: NodeIdentity,
    snapshot: BootSnapshot | null
  ) => Effect.Effect<SM & StateMachine<R>, E, Scope.Scope>
  readonly tickMs?: number
  readonly raft?: Partial<Omit<RaftConfig, "id" | "seed">>
  readonly snapshotEveryEntries?: number
  /** Size at which a log segment is closed (default: SegmentLog's). */
  readonly segmentBytesMax?: number
  readonly requestTimeoutMs?: number
  readonly onClientConnection?: ClientConnectionHandler
  /** Mutual TLS between peers, and TLS for clients on the same address. */
  readonly tls?: PeerTlsOptions
}


/** The peer transport as the wiring uses it: TCP in production, the simulated network in the
 * simulators, direct calls in the in-process benchmark. */
export interface NodeTransport {
  /** The address peers reach the node at (TCP: port 0 resolved). */
  readonly address: string
  /** Hands a message to the peer link; never waits for long. */
  readonly send: (envelope: Envelope) => Effect.Effect<void>
  /** `send` in plain code where it can: true when done (sent, queued or dropped), false when
   * only `send` can. Absent: every message goes through `send`. */
  readonly sendNow?: (envelope: Envelope) => boolean
  /** Registers the handler of inbound envelopes. */
  readonly serve: (onEnvelope: (envelope: Envelope) => Effect.Effect<void>) => Effect.Effect<void>
  /** Registers, beside `serve`'s, the same handler in plain code, for a transport that delivers
   * from a callback or a loop of its own (no Effect per message). Optional. */
  readonly serveNow?: (onEnvelope: (envelope: Envelope) => void) => Effect.Effect<void>
  /** The members to keep links to (every member but this node, at its configured address). */
  readonly setPeers: (peers: ReadonlyMap<NodeId, string>) => Effect.Effect<void>
}

/** Everything a node touches outside its own memory, as one record: what production, the
 * simulators and the benchmarks pass differently to the same wiring. */
export interface NodeIo<T extends NodeTransport, TE = never> {
  /** Where the log and the snapshot store live (the state machine is given its own disk). */
  readonly disk: DiskService
  /** Opens the peer transport; snapshots sent to the node are received into `inbox` (the node's
   * snapshot store). Called once, in the node's scope. */
  readonly transport: (inbox: SnapshotInbox) => Effect.Effect<T, TE, Scope.Scope>
  /** Every timer of the node (its ticker, request timeouts, the lease, peer sync) reads this. */
  readonly clock: Clock.Clock
  /** The ticker's period: one Tick input to the Raft core every `tickMs` of `clock`. */
  readonly tickMs: number
  /** Seeds the core's election jitter (the only randomness of the node's Raft). */
  readonly randomSeed: number
}

/** Bounds of the Raft actor stack (defaults: the bounds table's `raftActor`, src/limits.ts). */
export interface ActorBounds {
  readonly mailboxCapacity: number
  readonly batchMax: number
  readonly requestTimeoutMs: number
  readonly snapshotEveryEntries: number
  readonly commitFlushMs?: number
}

/** What the node is made of, beside its I/O. */
export interface NodeParts<R, SM, E = never> {
  readonly identity: NodeIdentity
  /** Written as the log's first entry when the log is empty (no entries, term 0): the founding
   * members. null: the node waits, empty, to be added to a cluster. */
  readonly founding: Membership | null
  /** Makes the state machine (in the node's scope), restored to `snapshot` when there is one;
   * `load` opens its data (read in chunks) only if the state machine needs it. */
  readonly stateMachine: (
    snapshot: BootSnapshot | null
  ) => Effect.Effect<SM & StateMachine<R>, E, Scope.Scope>
  readonly storage: {
    readonly logDir: string
    readonly snapshotsDir: string
    /** Size at which a log segment is closed (default: SegmentLog's). */
    readonly segmentBytesMax?: number
    /** Committed snapshots kept (default: the store's). */
    readonly snapshotsRetained?: number
    /** The snapshot store's chunk size (default: the store's). */
    readonly snapshotChunkBytesMax?: number
  }
  readonly raft?: Partial<Omit<RaftConfig, "id" | "seed">>
  readonly bounds?: Partial<ActorBounds>
  /** Sees what the node recovered from its disk before its actors start (the simulators'
   * safety checker and traces). */
  readonly onRecovered?: (recovered: RecoveredBounded) => Effect.Effect<void>
  /** Counts entries read back from the log after the core evicted them (the simulators). */
  readonly onReadBack?: (entries: number) => void
}

export interface TqliteNode<R, SM, T extends NodeTransport = TransportService> {
  readonly identity: NodeIdentity
  readonly raft: RaftNode<R, SM>
  readonly stateMachine: SM
  readonly transport: T
  /** What the node started from (its log and the snapshot it booted from). */
  readonly recovered: RecoveredBounded
  /** What the metrics endpoint reads: the node's metrics, who it heard from when, and the
   * contact and lag bounds its health check applies. */
  readonly observability: {
    readonly metrics: NodeMetrics.NodeMetrics
    readonly contact: PeerContact.PeerContact
    readonly healthLimits: HealthLimits
  }
}

/** The node's options as overrides of the bounds table (src/limits.ts). */
export function boundsOverridesOf(options: {
  readonly raft?: Partial<Omit<RaftConfig, "id" | "seed">>
  readonly tickMs?: number
  readonly snapshotEveryEntries?: number
  readonly requestTimeoutMs?: number
  readonly segmentBytesMax?: number
}): NodeBoundsOverrides {
  const { bugs: _bugs, ...raft } = options.raft ?? {}
  return {
    raft,
    raftActor: {
      ...(options.tickMs !== undefined ? { tickMs: options.tickMs } : {}),
      ...(options.snapshotEveryEntries !== undefined ? { snapshotEveryEntries: options.snapshotEveryEntries } : {}),
      ...(options.requestTimeoutMs !== undefined ? { requestTimeoutMs: options.requestTimeoutMs } : {})
    },
    log: options.segmentBytesMax !== undefined ? { segmentBytesMax: options.segmentBytesMax } : {}
  }
}

/** Production: the bounds checked, the data directory's lock and identity, then {@link wire} with
 * TCP on the node's address, the disk in the context (Disk.layerNode), the system clock and a
 * time-based seed. */
export const make = <R, SM, E = never>(options: NodeOptions<R, SM, E>): Effect.Effect<TqliteNode<R, SM>, NodeStartError | E, Scope.Scope | Disk> =>
  Effect.gen(function*() {
    // Cross-layer relations between bounds (src/limits.ts) are checked before anything opens;
    // those of the SQL surface by SqlNode, which knows its bounds.
    yield* checkNodeBounds(boundsOverridesOf(options), { sql: false })
    yield* lockDataDir(options.dataDir)
    yield* checkNoUnfinishedRepair(options.dataDir)
    const { identity, created } = yield* loadOrCreateIdentity(options.dataDir, options.address, () => ({
      nodeId: generateNodeId(),
      clusterId: options.start._tag === "Join" ? options.start.clusterId : generateClusterId()
    }))
    const io: NodeIo<TransportService, ListenFailed> = {
      disk: yield* Disk,
      transport: (inbox) =>
        makeTcp({
          nodeId: identity.nodeId,
          clusterId: identity.clusterId,
          listen: identity.address,
          ...(options.onClientConnection !== undefined ? { onClientConnection: options.onClientConnection } : {}),
          ...(options.tls !== undefined ? { tls: options.tls } : {}),
          snapshotInbox: inbox
        }),
      clock: yield* Effect.clock,
      tickMs: options.tickMs ?? defaultTickMs,
      randomSeed: identity.nodeId ^ Date.now()
    }
    const node = yield* wire<R, SM, E, TransportService, ListenFailed>({
      identity,
      // Only a brand-new data directory founds a cluster: one that lost its log is not re-founded.
      founding: created && options.start._tag === "Bootstrap" ? { members: [{ id: identity.nodeId, address: identity.address, role: "voter" }] } : null,
      stateMachine: (snapshot) => options.stateMachine(identity, snapshot),
      storage: {
        logDir: path.join(options.dataDir, "log"),
        snapshotsDir: path.join(options.dataDir, "snapshots"),
        ...(options.segmentBytesMax !== undefined ? { segmentBytesMax: options.segmentBytesMax } : {}),
        // One snapshot kept (plus one a peer link is still sending, pinned): disk use stays near
        // the databases' size plus one copy of them, plus the log's retention.
        snapshotsRetained: 1
      },
      ...(options.raft !== undefined ? { raft: options.raft } : {}),
      bounds: {
        ...(options.snapshotEveryEntries !== undefined ? { snapshotEveryEntries: options.snapshotEveryEntries } : {}),
        ...(options.requestTimeoutMs !== undefined ? { requestTimeoutMs: options.requestTimeoutMs } : {})
      }
    }, io)
    yield* Effect.logInfo(`node ${identity.nodeId} of cluster ${identity.clusterId} on ${node.transport.address}${created ? " (new)" : ""}`).pipe(
      Effect.annotateLogs(nodeIdLabel, String(identity.nodeId))
    )
    return node
  })

/** Runs one step of a node's start, logs (debug) how long it took and adds it to `steps`: where a
 * restart's time goes (issue 17: a restart must take < 5 s whatever the size), said once at info
 * when the node is wired. */
const bootStep = <A, E, R>(what: string, step: Effect.Effect<A, E, R>, steps?: Array<string>): Effect.Effect<A, E, R> =>
  Effect.flatMap(Effect.timed(step), ([took, value]) => {
    const ms = Math.round(Duration.toMillis(took))
    steps?.push(`${what} ${ms} ms`)
    return Effect.as(Effect.logDebug(`boot: ${what} in ${ms} ms`), value)
  })

/** Builds one node from its parts and its I/O: opens the log and snapshot store on `io.disk`,
 * founds the log if asked, boots from the newest snapshot (checked whole first), makes the state
 * machine, opens the transport, starts the Raft actor stack on `io.clock`, and keeps the peer
 * links in step with the membership. The one wiring of production, simulators and benchmarks. */
export const wire = <R, SM, E, T extends NodeTransport, TE>(
  parts: NodeParts<R, SM, E>,
  io: NodeIo<T, TE>
): Effect.Effect<TqliteNode<R, SM, T>, StorageError | SnapshotError | E | TE, Scope.Scope> =>
  // Every log line of the node (and of the fibers it forks) names it; every timer reads its clock.
  wireOnClock(parts, io).pipe(Effect.withClock(io.clock), Effect.annotateLogs(nodeIdLabel, String(parts.identity.nodeId)))

const wireOnClock = <R, SM, E, T extends NodeTransport, TE>(
  parts: NodeParts<R, SM, E>,
  io: NodeIo<T, TE>
): Effect.Effect<TqliteNode<R, SM, T>, StorageError | SnapshotError | E | TE, Scope.Scope> =>
  Effect.gen(function*() {
    const { identity } = parts
    const bounds: ActorBounds = { ...nodeBoundsDefault.raftActor, ...parts.bounds }
    const bootStarted = performance.now()
    const steps: Array<string> = []
    const { log, snapshots } = yield* Effect.gen(function*() {
      const log = yield* bootStep("log opened", SegmentLog.open({
        dir: parts.storage.logDir,
        clusterId: identity.clusterId,
        ...(parts.storage.segmentBytesMax !== undefined ? { segmentBytesMax: parts.storage.segmentBytesMax } : {})
      }), steps)
      const context = yield* bootStep("snapshot store opened", Layer.build(Snapshots.layer({
        dir: parts.storage.snapshotsDir,
        ...(parts.storage.snapshotsRetained !== undefined ? { retain: parts.storage.snapshotsRetained } : {}),
        ...(parts.storage.snapshotChunkBytesMax !== undefined ? { chunkBytesMax: parts.storage.snapshotChunkBytesMax } : {})
      })), steps)
      return { log, snapshots: Context.get(context, Snapshots) }
    }).pipe(Effect.provideService(Disk, io.disk))
    const config = { ...defaultRaftConfig(identity.nodeId, io.randomSeed), ...parts.raft }
    // Only the entry cache's worth of the log's data is read at start (the rest stays on disk
    // until a follower or the applier needs it), so a restart costs no memory for a long log.
    let loaded = yield* bootStep("log loaded", log.loadBounded(config.entryCacheBytesMax), steps)
    if (parts.founding !== null && loaded.entries.length === 0 && loaded.hardState.term === 0) {
      const boot = bootstrap(parts.founding)
      yield* log.persist([{ hardState: boot.hardState, entries: boot.entries }])
      loaded = yield* log.loadBounded(config.entryCacheBytesMax)
    }
    // The snapshot store holds the node's own snapshots, the log the last one installed from a
    // leader: start from the newer.
    const own = yield* snapshots.latest
    const snapshotMeta = own !== null && (loaded.snapshot === null || own.index >= loaded.snapshot.index) ? own : loaded.snapshot
    const recovered: RecoveredBounded = { ...loaded, snapshot: snapshotMeta }
    if (parts.onRecovered !== undefined) yield* parts.onRecovered(recovered)
    // The snapshot the node boots from is checked whole (one read of the file) before any of
    // it is used: before the state machine installs from it (then the node refuses to start on
    // a bit flip: SnapshotCorrupted naming file and offset), and before it is sent to a
    // follower. When the state machine's files are current (the usual restart) nothing waits
    // for it: it runs in the background, the loop free between chunks, once the node serves —
    // a restart no longer reads the whole database first (issue 17: restart < 5 s).
    const verifyBoot = snapshotMeta === null
      ? Effect.void
      : yield* Effect.cached(bootStep("boot snapshot verified", Effect.scoped(Effect.flatMap(snapshots.open(snapshotMeta), (reader) => reader.verify))))
    const snapshot = snapshotMeta === null ? null : { meta: snapshotMeta, load: Effect.orDie(Effect.zipRight(verifyBoot, snapshots.source(snapshotMeta))), log: bootLogOf(log, loaded) }
    const stateMachine = yield* bootStep("state machine opened", parts.stateMachine(snapshot), steps)
    const isBootSnapshot = (meta: SnapshotMeta) => snapshotMeta !== null && meta.index === snapshotMeta.index && meta.term === snapshotMeta.term
    const snapshotSource = (meta: SnapshotMeta) => (isBootSnapshot(meta) ? Effect.zipRight(verifyBoot, snapshots.source(meta)) : snapshots.source(meta))
    // A state machine that prepares its install while a snapshot arrives sees its bytes too.
    const alongside = stateMachine.receiveAlongside?.bind(stateMachine)
    const inbox: SnapshotInbox = alongside === undefined
      ? snapshots.inbox
      : { receive: (meta, sizeBytes, crc32c) => Effect.flatMap(snapshots.inbox.receive(meta, sizeBytes, crc32c), alongside) }
    const transport = yield* bootStep("transport opened", io.transport(inbox), steps)
    const metrics = NodeMetrics.make(identity.nodeId, io.clock)
    const contact = PeerContact.make()
    const healthLimits = healthLimitsFor({ tickMs: io.tickMs, electionTicks: config.electionTicks })
    const persist = persistInGroupsResumable(log)
    const onReadBack = parts.onReadBack
    const raft = yield* RaftActor.make<R, SM>({
      config,
      recovered,
      stateMachine,
      io: {
        persist: (batches) => metrics.timePersist(persist(batches)),
        recover: log.recover,
        readEntries: onReadBack === undefined ? log.read : (lo, hi) => Effect.tap(log.read(lo, hi), (entries) => Effect.sync(() => onReadBack(entries.length))),
        saveSnapshot: (meta, produce) => writeSnapshotFrom(snapshots, meta, produce),
        adoptSnapshot: snapshots.adopt,
        snapshotSource,
        send: transport.send,
        ...(transport.sendNow !== undefined ? { sendNow: transport.sendNow } : {})
      },
      tickMs: io.tickMs,
      snapshotEveryEntries: bounds.snapshotEveryEntries,
      mailboxCapacity: bounds.mailboxCapacity,
      batchMax: bounds.batchMax,
      requestTimeoutMs: bounds.requestTimeoutMs,
      ...(bounds.commitFlushMs !== undefined ? { commitFlushMs: Math.min(bounds.commitFlushMs, io.tickMs / 2) } : {})
    })
    // Who was heard when: a follower's contact with its leader, a leader's with its voters. Read
    // on the delivering fiber's clock: the system clock in production, the simulation's in the
    // simulators (where only health, which they do not serve, would read it).
    yield* transport.serve((envelope) => Effect.zipRight(contact.heard(envelope.message.from), raft.deliver(envelope)))
    if (transport.serveNow !== undefined) {
      yield* transport.serveNow((envelope) => {
        contact.heardAt(envelope.message.from, io.clock.unsafeCurrentTimeMillis())
        raft.deliverNow(envelope)
      })
    }
    yield* syncPeers(identity.nodeId, raft, transport, healthLimits.contactMaxMs).pipe(Effect.repeat(Schedule.spaced(Duration.millis(io.tickMs))), Effect.forkScoped)
    // A boot snapshot not needed to start is verified now, beside the serving node. Corrupt, it
    // is never sent (snapshotSource fails with the same error); the node's own files did not
    // come from it. The next snapshot replaces it.
    yield* verifyBoot.pipe(
      Effect.catchAll((error) => Effect.logError(`the boot snapshot ${snapshotMeta?.index ?? ""} is corrupt and will not be sent to any follower: ${String(error)}`)),
      Effect.forkScoped
    )
    // What the open set aside (segments before the base, a snapshot half taken or received) is
    // unlinked now, on the thread pool, with the node already serving: never on the boot path
    // (~0.45 s per GiB). A failure only leaves them for the next start.
    yield* Effect.zipRight(log.removeLeftovers ?? Effect.void, snapshots.removeLeftovers).pipe(
      Effect.catchAll((error) => Effect.logWarning(`could not remove files left by an earlier run (the next start tries again): ${String(error)}`)),
      Effect.forkScoped
    )
    yield* Effect.logInfo(`boot: wired in ${Math.round(performance.now() - bootStarted)} ms (${steps.join(", ")})`)
    return { identity: { ...identity, address: transport.address }, raft, stateMachine, transport, recovered, observability: { metrics, contact, healthLimits } }
  })

/** Bytes of entries the state machine reads from the log per call while it replays at boot
 * (BootLog): at least one entry, however large. */
const bootReplayReadBytesMax = 8 * 1024 * 1024

/** The log as the state machine reads it at boot: a range of the recovered entries whose sizes
 * (known for evicted ones too) stay under `bootReplayReadBytesMax`, read back from the files. */
function bootLogOf(log: LogStoreService, loaded: RecoveredBounded): BootLog {
  const firstIndex = loaded.base.index + 1
  return {
    firstIndex,
    lastIndex: loaded.base.index + loaded.entries.length,
    readFrom: (lo, hiMax) => {
      let hi = lo
      let bytes = slotSizeBytes(loaded.entries[lo - firstIndex]!)
      while (hi < hiMax && hi + 1 - firstIndex < loaded.entries.length) {
        const next = slotSizeBytes(loaded.entries[hi + 1 - firstIndex]!)
        if (bytes + next > bootReplayReadBytesMax) break
        bytes += next
        hi++
      }
      return log.read(lo, hi)
    }
  }
}

/** One round of the peer sync: links follow the membership (every member but this node, at the
 * address the configuration names); a leadership won, a quorum lost or regained is logged once. */
const syncPeers = <R, SM>(self: NodeId, raft: RaftNode<R, SM>, transport: NodeTransport, contactMaxMs: number): Effect.Effect<void> => {
  let linked = ""
  let ledInTerm = 0
  let quorumLost = false
  return Effect.gen(function*() {
    const status = yield* raft.status
    // One line per leadership won: operators (and the shutdown tests) follow terms by it.
    if (status.role === "leader" && status.term !== ledInTerm) {
      ledInTerm = status.term
      quorumLost = false
      yield* Effect.logInfo(`node ${self} leads the cluster (term ${status.term})`)
    }
    // A leader out of touch with its quorum says so once, and once more when it is back (it
    // steps down if the silence lasts an election timeout: check-quorum).
    const contactNow = leaderQuorumContact(status, contactMaxMs)
    if (contactNow !== null && contactNow.quorum === quorumLost) {
      quorumLost = !contactNow.quorum
      yield* quorumLost
        ? Effect.logWarning(`leader lost contact with a quorum: heard from ${contactNow.heard} of ${contactNow.voters} voters within ${contactMaxMs} ms; it steps down if this lasts`)
        : Effect.logInfo(`leader in contact with a quorum again (${contactNow.heard} of ${contactNow.voters} voters)`)
    }
    const peers = new Map<NodeId, string>(status.membership.members.filter((m) => m.id !== self).map((m) => [m.id, m.address]))
    const key = JSON.stringify([...peers])
    if (key === linked) return
    linked = key
    yield* transport.setPeers(peers)
  })
}
