// A tqlite node as users run it: the node wiring (Node.ts) with the replicated SQLite state
// machine, the dqlite wire-protocol gateway on the node's address, and cluster control over
// Raft. `join` asks a member to add this node as a spare; the leader's role manager
// (roles/RoleManager.ts) makes it a standby, and a voter once it has caught up, as needed.
import * as path from "node:path"
import type { Scope } from "effect"
import { Clock, Data, Duration, Effect, Either, Schedule } from "effect"
import { make as makeClient } from "../net/client/Client.ts"
import type { ClientError } from "../net/client/errors.ts"
import { makeClientHandlerSlot } from "../net/gateway/Gateway.ts"
import type { ClusterControl } from "../net/gateway/ClusterControl.ts"
import { ClusterControlError } from "../net/gateway/ClusterControl.ts"
import { makeRaftClusterControl } from "./raftClusterControl.ts"
import type { DiscoveryFailed } from "../net/peers/discover.ts"
import { discoverCluster } from "../net/peers/discover.ts"
import type { PeerTlsOptions } from "../net/peers/sockets.ts"
import * as Replicated from "../sqlite/ReplicatedDatabases.ts"
import type { HealthLimits } from "../observability/health.ts"
import * as MetricsServer from "../observability/MetricsServer.ts"
import { nodeIdLabel } from "../observability/NodeMetrics.ts"
import * as NodeObserver from "../observability/NodeObserver.ts"
import type { NodeId, Role } from "../raft/types.ts"
import type { SqliteLimits } from "../sqlite/limits.ts"
import type { SqliteApplyResult } from "../sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../sqlite/SqliteMachine.ts"
import { Disk } from "../storage/Disk.ts"
import { SegmentLog } from "../storage/SegmentLog.ts"
import type { NodeIdentity } from "./identity.ts"
import { identityFileName, readIdentity } from "./identity.ts"
import type { TqliteNode } from "./Node.ts"
import * as Node from "./Node.ts"
import * as Leadership from "./leadership.ts"
import * as RoleManager from "./roles/RoleManager.ts"
import { checkNodeBounds } from "../limits.ts"

export interface SqlNodeOptions {
  readonly dataDir: string
  readonly address: string
  /** Members to join through; empty: found a new cluster (or restart an existing node). */
  readonly join: ReadonlyArray<string>
  /** How long a first start keeps trying to reach a `join` member (retried with a bounded
   * backoff) before it gives up; 0 tries once. Default 120 s. A restart of a node that already
   * has its data dir tries once and starts anyway: it knows its cluster. */
  readonly joinTimeoutMs?: number
  readonly tickMs?: number
  /** Mutual TLS between peers and TLS for clients (certificate, key, cluster CA). */
  readonly tls?: PeerTlsOptions
  /** "host:port" for the HTTP endpoint serving /metrics and /health (port 0: a free one);
   * absent: no endpoint (metrics are still recorded, in Effect's registry). */
  readonly metrics?: string
  /** Overrides of the bounds /health applies (defaults: health.ts `healthLimitsFor`). */
  readonly health?: Partial<HealthLimits>
  /** This node's failure domain (dqlite's): the role manager spreads voters across domains. */
  readonly failureDomain?: bigint
  /** Role management targets and timings (defaults: RoleManager.defaultRoleManagerOptions). */
  readonly roles?: Partial<RoleManager.RoleManagerOptions>
  /** Bound on each step of a graceful shutdown (hand leadership over; step back to spare). */
  readonly handOverTimeoutMs?: number
  /** On shutdown, step back to spare when a replacement exists (default true). Tests that
   * stand in a crash for a scope close turn it off. */
  readonly leaveOnShutdown?: boolean
  /** Storage bounds (defaults: Node.ts and SegmentLog's); tests shrink them to get closed
   * segments and snapshots from little data. */
  readonly storage?: { readonly snapshotEveryEntries?: number; readonly segmentBytesMax?: number }
  /** A follower fdatasyncs the pages it applied (and records their index in `applied-state`)
   * once this many entries were applied since the last time (SqliteMachine's
   * `syncEveryEntries`). Default {@link defaultSyncEveryEntries}. */
  readonly syncEveryEntries?: number
  /** Bounds of the SQL surface (defaults: src/sqlite/limits.ts). */
  readonly sqlite?: Partial<SqliteLimits>
}

export interface SqlNode {
  readonly node: TqliteNode<SqliteApplyResult, SqliteMachine>
  readonly databases: Replicated.ReplicatedDatabases
  /** Where /metrics and /health are served, or null without `metrics`. */
  readonly metricsAddress: string | null
}

/** Why not 1: at 1, a follower's applier adds two fdatasyncs (pages, then `applied-state`) to
 * every batch, beside its log's one, and on a shared device they queue with the log fsyncs that
 * a write waits for (measured: ~7 flushes per single-writer write on three nodes instead of 3).
 * Nothing waits for them (a crash replays from the last recorded index: at most this many
 * entries); the simulator swarms 1, 8 and 64. */
export const defaultSyncEveryEntries = 64

/** Why a SQL node did not start: the node's own reasons, finding the cluster to join (nobody
 * answered, or it is another cluster than this data dir's), the metrics endpoint's address, the
 * join request to the leader, and SQLite refusing to open a database file. */
export type SqlNodeStartError = Node.NodeStartError | DiscoveryFailed | JoinOtherCluster | MetricsServer.MetricsServerFailed | ClientError

export const start = (options: SqlNodeOptions): Effect.Effect<SqlNode, SqlNodeStartError, Scope.Scope | Disk> =>
  Effect.gen(function*() {
    const tickMs = options.tickMs ?? Node.defaultTickMs
    // Every bound the node will run with, its cross-layer relations checked before anything
    // opens (src/limits.ts); Node.make checks its own part again.
    const nodeOverrides = Node.boundsOverridesOf({ tickMs, ...options.storage })
    const bounds = yield* checkNodeBounds({ ...nodeOverrides, ...(options.sqlite !== undefined ? { sqlite: options.sqlite } : {}) })
    const slot = makeClientHandlerSlot()
    const joining = options.join.length > 0
    const found = yield* readIdentity(options.dataDir)
    const existing = joining && found !== null && found.address !== options.address ? yield* forgetIfNeverJoined(options, found) : found
    const cluster = joining ? yield* findCluster(options, existing) : null
    const disk = yield* Disk
    const node = yield* Node.make<SqliteApplyResult, SqliteMachine>({
      dataDir: options.dataDir,
      address: options.address,
      start: cluster === null ? { _tag: "Bootstrap" } : { _tag: "Join", clusterId: cluster.clusterId },
      stateMachine: (identity, snapshot) =>
        Effect.acquireRelease(
          SqliteMachine.open({ dataDir: path.join(options.dataDir, "sqlite"), nodeId: identity.nodeId, pageSize: bounds.sqlite.pageSize, fsync: "sync", disk, bootSnapshot: snapshot, syncEveryEntries: options.syncEveryEntries ?? defaultSyncEveryEntries }),
          (machine) => Effect.sync(() => machine.close())
        ),
      tickMs,
      ...options.storage,
      onClientConnection: slot.handler,
      ...(options.tls !== undefined ? { tls: options.tls } : {})
    })
    // WALs and half-installed images the machine's open set aside: unlinked on the thread pool
    // now that the node serves, never on the boot path (src/storage/leftovers.ts).
    yield* node.stateMachine.removeLeftovers.pipe(
      Effect.catchAll((error) => Effect.logWarning(`could not remove database files left by an earlier run (the next start tries again): ${String(error)}`)),
      Effect.forkScoped
    )
    return yield* Effect.annotateLogs(serve(options, node, slot, tickMs, joining), nodeIdLabel, String(node.identity.nodeId))
  })

/** The node's SQL surface, gateway, join and metrics endpoint, once the node itself runs. */
const serve = (
  options: SqlNodeOptions,
  node: TqliteNode<SqliteApplyResult, SqliteMachine>,
  slot: ReturnType<typeof makeClientHandlerSlot>,
  tickMs: number,
  joining: boolean
): Effect.Effect<SqlNode, MetricsServer.MetricsServerFailed | ClientError, Scope.Scope> =>
  Effect.gen(function*() {
    const metrics = node.observability.metrics
    // Proposals are timed where the node hands Raft to SQLite: proposal → committed and applied.
    const raft: typeof node.raft = {
      ...node.raft,
      propose: (data) => metrics.timeProposal(node.raft.propose(data)),
      proposeNow: (data, onDone) => metrics.timeProposalNow(onDone, (timed) => node.raft.proposeNow(data, timed))
    }
    const databases = yield* Replicated.make({ raft, machine: node.stateMachine, pollMs: tickMs, ...(options.sqlite !== undefined ? { limits: options.sqlite } : {}) })
    const control = yield* makeRaftClusterControl({ node: node.raft, ...(options.failureDomain !== undefined ? { failureDomain: options.failureDomain } : {}) })
    const unreachableAfterMs = options.roles?.unreachableAfterMs ?? RoleManager.defaultRoleManagerOptions.unreachableAfterMs
    const leadership = yield* Leadership.watch(node.raft.status, node.raft.changes)
    slot.bind({
      databases,
      cluster: quorumGuarded(control, node, unreachableAfterMs),
      observer: metrics.gateway,
      leadershipEnd: leadership.currentEnd,
      // DUMP streams the leader's committed image; the WAL part is empty since the image already
      // holds every committed page (as dqlite >= 1.12 sends it).
      dumper: { dump: databases.committedImage }
    })
    // Up before joining, so /health can say "not a member" while the join is under way.
    const metricsAddress = options.metrics === undefined ? null : (yield* MetricsServer.serve({
      address: options.metrics,
      endpoints: NodeObserver.endpoints({
        metrics,
        contact: node.observability.contact,
        status: node.raft.status,
        // The SQL surface adds why a leader cannot serve (a database it cannot open).
        condition: Effect.zipWith(node.raft.condition, databases.cannotLead, (condition, cannotLead) => ({ ...condition, cannotLead })),
        links: Effect.map(node.transport.stats, (stats) => stats.links),
        directories: {
          log: path.join(options.dataDir, "log"),
          snapshots: path.join(options.dataDir, "snapshots"),
          databases: path.join(options.dataDir, "sqlite")
        },
        healthLimits: { ...node.observability.healthLimits, ...options.health }
      })
    })).address
    if (joining && !(yield* isMember(node))) yield* join(node, options.join, options.tls ?? null)
    yield* RoleManager.start({ raft: node.raft, selfMetadata: control.describe, tls: options.tls ?? null }, options.roles ?? {})
    // Registered last, so it runs first when the scope closes (SIGTERM): links, databases and
    // the Raft actor are all still up while leadership moves and the node steps back.
    const stepTimeoutMs = options.handOverTimeoutMs ?? 3_000
    const stepBack = options.leaveOnShutdown === false ? Effect.void : leave(node, options.tls ?? null, stepTimeoutMs)
    yield* Effect.addFinalizer(() => Effect.zipRight(handOver(node, stepTimeoutMs), stepBack))
    return { node, databases, metricsAddress }
  })

/** A leader hands leadership to its most caught-up voter, so the cluster does not wait an
 * election timeout for the next one. Bounded; a failure only costs that election. */
const handOver = (node: TqliteNode<SqliteApplyResult, SqliteMachine>, timeoutMs: number) =>
  Effect.gen(function*() {
    const before = yield* node.raft.status
    if (before.role !== "leader" || before.membership.members.filter((m) => m.role === "voter").length < 2) return
    yield* Effect.logInfo(`shutting down: handing leadership over (term ${before.term})`)
    // Interruptible: this runs in a finalizer, where a timeout could not otherwise stop the wait.
    const handed = yield* Effect.either(node.raft.transferLeadership(null).pipe(Effect.interruptible, Effect.timeout(Duration.millis(timeoutMs))))
    const after = yield* node.raft.status
    if (handed._tag === "Right" && after.role !== "leader") {
      yield* Effect.logInfo(`leadership handed over to node ${after.leader ?? "?"} (term ${before.term} → ${after.term})`)
    } else {
      const why = handed._tag === "Left" ? handed.left._tag === "TimeoutException" ? `no answer within ${timeoutMs} ms` : JSON.stringify(handed.left) : "still leader"
      yield* Effect.logWarning(`leadership hand-over before shutdown failed (${why}); the cluster will elect`)
    }
  })

/** Leaving for good or for a while, a voter (or standby) that has someone to take its place asks
 * the leader to make it a spare, so the role manager promotes the replacement now rather than
 * after the unreachable timeout (go-dqlite's hand-over). The leader refuses if that would leave
 * its reachable voters short of a majority. Bounded; a failure only costs that timeout. */
const leave = (node: TqliteNode<SqliteApplyResult, SqliteMachine>, secure: PeerTlsOptions | null, timeoutMs: number) =>
  Effect.gen(function*() {
    const status = yield* node.raft.status
    const self = status.membership.members.find((m) => m.id === status.id)
    if (self === undefined || self.role === "spare" || status.role === "leader") return
    const replacements = status.membership.members.filter((m) => m.id !== status.id && (m.role === "spare" || (self.role === "voter" && m.role === "standby")))
    if (replacements.length === 0) return
    const others = status.membership.members.filter((m) => m.id !== status.id).map((m) => m.address)
    const demoted = yield* Effect.either(Effect.scoped(Effect.gen(function*() {
      const client = yield* makeClient({ servers: others, database: "tqlite-control", tls: secure, connectTimeoutMs: timeoutMs, requestTimeoutMs: timeoutMs, retriesMax: 2 })
      yield* client.assign(BigInt(status.id), "spare")
    })).pipe(Effect.interruptible, Effect.timeout(Duration.millis(timeoutMs))))
    if (demoted._tag === "Right") yield* Effect.logInfo(`left the ${self.role}s: node ${status.id} is now a spare, so a replacement can take its place`)
    else yield* Effect.logWarning(`could not step back to spare before shutdown (${JSON.stringify(demoted.left)}); the leader will after its unreachable timeout`)
  })

/** The cluster control with a guard on demotions and removals: a leader refuses one that would
 * leave the voters it hears from short of a majority (dqlite does not check; we prefer to). */
const quorumGuarded = (control: ClusterControl, node: TqliteNode<SqliteApplyResult, SqliteMachine>, unreachableAfterMs: number): ClusterControl => {
  const guard = (id: NodeId, role: Role) =>
    Effect.flatMap(node.raft.status, (status) =>
      status.role === "leader" && !RoleManager.keepsReachableQuorum(status, { node: id, role }, unreachableAfterMs)
        ? Effect.fail(new ClusterControlError({ reason: "Failed", message: `changing node ${id} would leave the reachable voters without a majority` }))
        : Effect.void)
  return {
    ...control,
    assign: (id, role) => Effect.zipRight(guard(id, role), control.assign(id, role)),
    remove: (id) => Effect.zipRight(guard(id, "spare"), control.remove(id))
  }
}

const isMember = (node: TqliteNode<SqliteApplyResult, SqliteMachine>) =>
  Effect.map(node.raft.status, (status) => status.membership.members.some((m) => m.id === node.identity.nodeId))

/** The cluster id from the first member that answers. */
const firstAnswer = (addresses: ReadonlyArray<string>, secure: PeerTlsOptions | null) =>
  Effect.firstSuccessOf(addresses.map((address) => discoverCluster(address, secure)))

export const joinTimeoutMsDefault = 120_000
const joinRetryMsMax = 5_000

/** The data dir belongs to another cluster than the one `--join` names: starting would lead (or
 * follow) the old cluster while the operator meant the new one. */
export class JoinOtherCluster extends Data.TaggedError("JoinOtherCluster")<{ readonly dataDir: string; readonly own: string; readonly joined: string; readonly address: string }> {
  override get message() {
    return `the data dir ${this.dataDir} belongs to cluster ${this.own}, but ${this.address} is a member of cluster ${this.joined}`
  }
}

/** A data dir whose node never joined may take a new address: its first start wrote the
 * identity, then the join failed (say, the address was wrong for the peers). "Never joined" is
 * the cluster's word, not the disk's: a spare's log stays empty even after it joined, so the node
 * must not be in the cluster's member list, and its own log must hold nothing. Then the old
 * identity, log, snapshots and databases move aside into `abandoned-<UTC>/` (nothing deleted) and
 * the node starts fresh. Otherwise the identity stays, and the start fails IdentityMismatch as
 * before. */
const forgetIfNeverJoined = (options: SqlNodeOptions, existing: NodeIdentity) =>
  Effect.gen(function*() {
    const secure = options.tls ?? null
    const answer = yield* Effect.either(firstAnswer(options.join, secure))
    if (Either.isLeft(answer) || answer.right.clusterId !== existing.clusterId) return existing
    const members = yield* Effect.either(Effect.scoped(Effect.flatMap(
      makeClient({ servers: options.join, database: "tqlite-control", tls: secure }),
      (client) => Effect.timeout(client.cluster, Duration.seconds(10))
    )))
    if (Either.isLeft(members) || members.right.some((s) => s.id === BigInt(existing.nodeId))) return existing
    const log = yield* Effect.either(Effect.scoped(Effect.flatMap(
      SegmentLog.open({ dir: path.join(options.dataDir, "log"), clusterId: existing.clusterId }),
      (store) => store.load
    )))
    if (Either.isLeft(log) || log.right.entries.length > 0 || log.right.snapshot !== null || log.right.hardState.term > 0) return existing
    const disk = yield* Disk
    const aside = path.join(options.dataDir, `abandoned-${new Date().toISOString().replace(/[:.]/g, "-")}`)
    yield* disk.mkdir(aside)
    for (const name of [identityFileName, "log", "snapshots", "sqlite"]) {
      if (yield* disk.exists(path.join(options.dataDir, name))) yield* disk.rename(path.join(options.dataDir, name), path.join(aside, name))
    }
    yield* Effect.logInfo(`the data dir ${options.dataDir} never joined cluster ${existing.clusterId} (node ${existing.nodeId} at ${existing.address} is not a member and its log is empty): starting as a new node at ${options.address}; the old files are in ${aside}`)
    return null
  })

/** The cluster `--join` names. A first start retries with a bounded backoff (saying so) until
 * a member answers or the join timeout passes. A node that already has an identity tries once:
 * if a member answers, its cluster must be this node's; if none does, the node starts from its
 * own data (null) — a restart never waits on the members it was once told to join. */
const findCluster = (options: SqlNodeOptions, existing: NodeIdentity | null) =>
  Effect.gen(function*() {
    const secure = options.tls ?? null
    if (existing !== null) {
      const answer = yield* Effect.either(firstAnswer(options.join, secure))
      if (Either.isLeft(answer)) return null
      if (answer.right.clusterId !== existing.clusterId) {
        return yield* new JoinOtherCluster({ dataDir: options.dataDir, own: existing.clusterId, joined: answer.right.clusterId, address: options.join.join(",") })
      }
      return answer.right
    }
    const timeoutMs = options.joinTimeoutMs ?? joinTimeoutMsDefault
    const started = yield* Clock.currentTimeMillis
    let delayMs = 200
    for (let attempt = 1; ; attempt++) {
      const answer = yield* Effect.either(firstAnswer(options.join, secure))
      if (Either.isRight(answer)) return answer.right
      const elapsedMs = (yield* Clock.currentTimeMillis) - started
      if (elapsedMs + delayMs > timeoutMs) return yield* answer.left
      yield* Effect.logWarning(`no member of ${options.join.join(",")} answers yet (attempt ${attempt}: ${answer.left.detail}); retrying in ${(delayMs / 1000).toFixed(1)} s, for at most ${Math.round(timeoutMs / 1000)} s in all`)
      yield* Effect.sleep(Duration.millis(delayMs))
      delayMs = Math.min(delayMs * 2, joinRetryMsMax)
    }
  })

/** Asks the cluster (through whichever member leads) to add this node as a spare; retried with
 * backoff while the cluster elects or is busy with another change. Promotion is the leader's
 * role manager's job, once this node has caught up. */
const join = (node: TqliteNode<SqliteApplyResult, SqliteMachine>, members: ReadonlyArray<string>, secure: PeerTlsOptions | null) =>
  Effect.scoped(
    Effect.gen(function*() {
      const client = yield* makeClient({ servers: members, database: "tqlite-control", tls: secure })
      const id = BigInt(node.identity.nodeId)
      const retry = Schedule.exponential(Duration.millis(100)).pipe(Schedule.union(Schedule.spaced(Duration.seconds(2))), Schedule.intersect(Schedule.recurs(30)))
      const servers = yield* client.cluster.pipe(Effect.retry(retry))
      if (!servers.some((s) => s.id === id)) yield* client.add(id, node.identity.address).pipe(Effect.retry(retry))
      yield* Effect.logInfo(`node ${node.identity.nodeId} joined the cluster as a spare; the leader promotes it as needed`)
    })
  )
