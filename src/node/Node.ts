// One tqlite node wired from its parts: identity and storage in the data directory (segment log,
// snapshot store), the peer transport on its address, and the Raft actor stack driving a
// pluggable state machine. Everything lives in the caller's scope: closing it stops the node.
import * as path from "node:path"
import type { Scope } from "effect"
import { Context, Duration, Effect, Layer, Schedule } from "effect"
import type { StateMachine } from "../actors/Applier.ts"
import type { RaftNode } from "../actors/RaftActor.ts"
import * as RaftActor from "../actors/RaftActor.ts"
import type { ClientConnectionHandler, TransportService } from "../net/peers/PeerTransport.ts"
import type { PeerTlsOptions } from "../net/peers/sockets.ts"
import { makeTcp } from "../net/peers/PeerTransport.ts"
import type { RaftConfig } from "../raft/config.ts"
import { defaultRaftConfig, entryCacheBytesMaxDefault } from "../raft/config.ts"
import { bootstrap } from "../raft/core.ts"
import type { Membership, NodeId, SnapshotMeta } from "../raft/types.ts"
import type { Disk } from "../storage/Disk.ts"
import { persistInGroupsResumable } from "../storage/LogStore.ts"
import { SegmentLog } from "../storage/SegmentLog.ts"
import { Snapshots, writeSnapshotFrom } from "../storage/Snapshots.ts"
import type { SnapshotSource } from "../actors/snapshotData.ts"
import type { HealthLimits } from "../observability/health.ts"
import { healthLimitsFor, leaderQuorumContact } from "../observability/health.ts"
import * as NodeMetrics from "../observability/NodeMetrics.ts"
import { nodeIdLabel } from "../observability/NodeMetrics.ts"
import * as PeerContact from "../observability/PeerContact.ts"
import { lockDataDir } from "./dataDirLock.ts"
import { assertEntryBounds } from "./entryBounds.ts"
import { defaultPeerLimits } from "../net/peers/limits.ts"
import type { NodeIdentity } from "./identity.ts"
import { generateClusterId, generateNodeId, loadOrCreateIdentity } from "./identity.ts"
import { checkNoUnfinishedRepair } from "./repair.ts"

/** The driver's tick when none is given. With the core's default electionTicks (10, each node
 * drawing its timeout from [10, 20) ticks) a leader's death is noticed after 0.5–1 s, and its
 * heartbeats (every tick) come ten times per shortest election timeout. Measured
 * (`npm run bench -- failover`, docs/performance.md): 100 ms ticks cost 1.7–2 s per failover. */
export const defaultTickMs = 50

export interface NodeOptions<R, SM> {
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
    snapshot: { readonly meta: SnapshotMeta; readonly load: Effect.Effect<SnapshotSource> } | null
  ) => Effect.Effect<SM & StateMachine<R>, unknown, Scope.Scope>
  /** The largest entry data the state machine proposes (SqlNode: a transaction of
   * `transactionBytesMax` with its header): asserted at start to pass every bound on its way
   * (entryBounds.ts). */
  readonly entryBytesMax?: number
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

export interface TqliteNode<R, SM> {
  readonly identity: NodeIdentity
  readonly raft: RaftNode<R, SM>
  readonly stateMachine: SM
  readonly transport: TransportService
  /** What the metrics endpoint reads: the node's metrics, who it heard from when, and the
   * contact and lag bounds its health check applies. */
  readonly observability: {
    readonly metrics: NodeMetrics.NodeMetrics
    readonly contact: PeerContact.PeerContact
    readonly healthLimits: HealthLimits
  }
}

/** Runs one step of a node's start and logs (debug) how long it took: where a restart's time
 * goes (issue 17: a restart must take < 5 s whatever the size). */
const bootStep = <A, E, R>(what: string, step: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.flatMap(Effect.timed(step), ([took, value]) => Effect.as(Effect.logDebug(`boot: ${what} in ${Math.round(Duration.toMillis(took))} ms`), value))

export const make = <R, SM>(options: NodeOptions<R, SM>): Effect.Effect<TqliteNode<R, SM>, unknown, Scope.Scope | Disk> =>
  Effect.gen(function*() {
    yield* lockDataDir(options.dataDir)
    yield* checkNoUnfinishedRepair(options.dataDir)
    const { identity, created } = yield* loadOrCreateIdentity(options.dataDir, options.address, () => ({
      nodeId: generateNodeId(),
      clusterId: options.start._tag === "Join" ? options.start.clusterId : generateClusterId()
    }))
    // Every log line of the node (and of the fibers it forks) names it.
    return yield* Effect.annotateLogs(wire(options, identity, created), nodeIdLabel, String(identity.nodeId))
  })

const wire = <R, SM>(options: NodeOptions<R, SM>, identity: NodeIdentity, created: boolean): Effect.Effect<TqliteNode<R, SM>, unknown, Scope.Scope | Disk> =>
  Effect.gen(function*() {
    const metrics = NodeMetrics.make(identity.nodeId)
    const contact = PeerContact.make()
    const log = yield* bootStep("log opened", SegmentLog.open({
      dir: path.join(options.dataDir, "log"),
      clusterId: identity.clusterId,
      ...(options.segmentBytesMax !== undefined ? { segmentBytesMax: options.segmentBytesMax } : {})
    }))
    // One snapshot kept (plus one a peer link is still sending, pinned): disk use stays near the
    // databases' size plus one copy of them, plus the log's retention.
    const snapshots = Context.get(yield* Layer.build(Snapshots.layer({ dir: path.join(options.dataDir, "snapshots"), retain: 1 })), Snapshots)
    // Only the entry cache's worth of the log's data is read at start (the rest stays on disk
    // until a follower or the applier needs it), so a restart costs no memory for a long log.
    const cacheBytesMax = options.raft?.entryCacheBytesMax ?? entryCacheBytesMaxDefault
    let recovered = yield* bootStep("log loaded", log.loadBounded(cacheBytesMax))
    if (created && options.start._tag === "Bootstrap") {
      const founding: Membership = { members: [{ id: identity.nodeId, address: identity.address, role: "voter" }] }
      const boot = bootstrap(founding)
      yield* log.persist([{ hardState: boot.hardState, entries: boot.entries }])
      recovered = yield* log.loadBounded(cacheBytesMax)
    }
    // The snapshot store holds the node's own snapshots, the log the last one installed from a
    // leader: start from the newer.
    const own = yield* snapshots.latest
    const snapshotMeta = own !== null && (recovered.snapshot === null || own.index >= recovered.snapshot.index) ? own : recovered.snapshot
    // The snapshot the node boots from is checked whole (one read of the file) before any of
    // it is used: before the state machine installs from it (then the node refuses to start on
    // a bit flip: SnapshotCorrupted naming file and offset), and before it is sent to a
    // follower. When the state machine's files are current (the usual restart) nothing waits
    // for it: it runs in the background, the loop free between chunks, once the node serves —
    // a restart no longer reads the whole database first (issue 17: restart < 5 s).
    const verifyBoot = snapshotMeta === null
      ? Effect.void
      : yield* Effect.cached(bootStep("boot snapshot verified", Effect.scoped(Effect.flatMap(snapshots.open(snapshotMeta), (reader) => reader.verify))))
    const snapshot = snapshotMeta === null ? null : { meta: snapshotMeta, load: Effect.orDie(Effect.zipRight(verifyBoot, snapshots.source(snapshotMeta))) }
    const stateMachine = yield* bootStep("state machine opened", options.stateMachine(identity, snapshot))
    const isBootSnapshot = (meta: SnapshotMeta) => snapshotMeta !== null && meta.index === snapshotMeta.index && meta.term === snapshotMeta.term
    const snapshotSource = (meta: SnapshotMeta) => (isBootSnapshot(meta) ? Effect.zipRight(verifyBoot, snapshots.source(meta)) : snapshots.source(meta))
    const transport = yield* makeTcp({
      nodeId: identity.nodeId,
      clusterId: identity.clusterId,
      listen: identity.address,
      ...(options.onClientConnection !== undefined ? { onClientConnection: options.onClientConnection } : {}),
      ...(options.tls !== undefined ? { tls: options.tls } : {}),
      snapshotInbox: snapshots.inbox
    })
    const tickMs = options.tickMs ?? defaultTickMs
    const config = { ...defaultRaftConfig(identity.nodeId, identity.nodeId ^ Date.now()), ...options.raft }
    if (options.entryBytesMax !== undefined) assertEntryBounds(options.entryBytesMax, config, defaultPeerLimits)
    const healthLimits = healthLimitsFor({ tickMs, electionTicks: config.electionTicks })
    const persist = persistInGroupsResumable(log)
    const raft = yield* RaftActor.make<R, SM>({
      config,
      recovered: { ...recovered, snapshot: snapshotMeta },
      stateMachine,
      io: {
        persist: (batches) => metrics.timePersist(persist(batches)),
        recover: log.recover,
        readEntries: log.read,
        saveSnapshot: (meta, produce) => writeSnapshotFrom(snapshots, meta, produce),
        adoptSnapshot: snapshots.adopt,
        snapshotSource,
        send: transport.send
      },
      tickMs,
      snapshotEveryEntries: options.snapshotEveryEntries ?? 10_000,
      mailboxCapacity: 4096,
      batchMax: 512,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000
    })
    // Who was heard when: a follower's contact with its leader, a leader's with its voters.
    yield* transport.serve((envelope) => Effect.zipRight(contact.heard(envelope.message.from), raft.deliver(envelope)))
    // Links follow the membership: every member but us, at the address the configuration names.
    let linked = ""
    let ledInTerm = 0
    let quorumLost = false
    const syncPeers = Effect.gen(function*() {
      const status = yield* raft.status
      // One line per leadership won: operators (and the shutdown tests) follow terms by it.
      if (status.role === "leader" && status.term !== ledInTerm) {
        ledInTerm = status.term
        quorumLost = false
        yield* Effect.logInfo(`node ${identity.nodeId} leads the cluster (term ${status.term})`)
      }
      // A leader out of touch with its quorum says so once, and once more when it is back (it
      // steps down if the silence lasts an election timeout: check-quorum).
      const contactNow = leaderQuorumContact(status, healthLimits.contactMaxMs)
      if (contactNow !== null && contactNow.quorum === quorumLost) {
        quorumLost = !contactNow.quorum
        yield* quorumLost
          ? Effect.logWarning(`leader lost contact with a quorum: heard from ${contactNow.heard} of ${contactNow.voters} voters within ${healthLimits.contactMaxMs} ms; it steps down if this lasts`)
          : Effect.logInfo(`leader in contact with a quorum again (${contactNow.heard} of ${contactNow.voters} voters)`)
      }
      const peers = new Map<NodeId, string>(status.membership.members.filter((m) => m.id !== identity.nodeId).map((m) => [m.id, m.address]))
      const key = JSON.stringify([...peers])
      if (key === linked) return
      linked = key
      yield* transport.setPeers(peers)
    })
    yield* syncPeers.pipe(Effect.repeat(Schedule.spaced(Duration.millis(tickMs))), Effect.forkScoped)
    // A boot snapshot not needed to start is verified now, beside the serving node. Corrupt, it
    // is never sent (snapshotSource fails with the same error); the node's own files did not
    // come from it. The next snapshot replaces it.
    yield* verifyBoot.pipe(
      Effect.catchAll((error) => Effect.logError(`the boot snapshot ${snapshotMeta?.index ?? ""} is corrupt and will not be sent to any follower: ${String(error)}`)),
      Effect.forkScoped
    )
    yield* Effect.logInfo(`node ${identity.nodeId} of cluster ${identity.clusterId} on ${transport.address}${created ? " (new)" : ""}`)
    return { identity: { ...identity, address: transport.address }, raft, stateMachine, transport, observability: { metrics, contact, healthLimits } }
  })
