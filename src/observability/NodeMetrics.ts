// A node's metrics on Effect's `Metric` registry, every series labeled `node_id` so nodes that
// share a process (tests, the simulator) stay apart. Events are recorded where they happen
// (a log persist, a proposal, a gateway request); levels (role, indexes, sizes, peer links) are
// set from the node's status when the endpoint is scraped, so they cost nothing in between.
//
// Each series is made once with its labels inside the metric key: an update is then one hook
// call, with no per-update label merging or registry lookup (`Metric.tagged` would do both).
import type { Exit, MetricKeyType } from "effect"
import { Cause, Clock, Effect, Metric, MetricBoundaries, MetricKey, MetricLabel } from "effect"
import type { DiskPart } from "../actors/DiskFullWatch.ts"
import type { NodeCondition, NodeStatus } from "../actors/RaftActor.ts"
import type { GatewayObserver, ObservedRequestType } from "../net/gateway/GatewayObserver.ts"
import type { LinkStats } from "../net/peers/PeerLink.ts"
import type { RaftRole } from "../raft/state.ts"
import type { NodeId } from "../raft/types.ts"

export const nodeIdLabel = "node_id"

/** Latency buckets in seconds, 100 µs … 10 s: fsyncs sit at the low end, commits under load and
 * elections at the high end. */
export const latencySecondsBoundaries = MetricBoundaries.fromIterable([
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
])

export const raftRoles: ReadonlyArray<RaftRole> = ["follower", "preCandidate", "candidate", "leader"]

/** Distinct error codes counted apart; any further code is counted as "other" (a SQLite
 * extended code is one of a few hundred, so this only guards against a misbehaving surface). */
export const errorCodesMax = 256

export interface StorageSizes {
  readonly logBytes: number
  readonly snapshotBytes: number
  readonly databaseBytes: number
}

export interface NodeMetrics {
  readonly nodeId: NodeId
  /** Runs a log persist (append + fsync), recording its duration. */
  readonly timePersist: <A, E, R>(persist: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Runs a proposal to its applied result: counts it, records proposal → applied latency on
   * success, and counts a failure by its error's `_tag`. */
  readonly timeProposal: <A, E, R>(propose: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** `timeProposal` for a proposal answered by callback (`RaftNode.proposeNow`): `propose` is
   * given `onDone` wrapped to record the outcome; counted only when `propose` took it (true). */
  readonly timeProposalNow: <A, E>(onDone: (exit: Exit.Exit<A, E>) => void, propose: (onDone: (exit: Exit.Exit<A, E>) => void) => boolean) => boolean
  readonly gateway: GatewayObserver
  readonly setStatus: (status: NodeStatus) => Effect.Effect<void>
  /** Full-disk and dead-actor levels from the node's condition. */
  readonly setCondition: (condition: NodeCondition) => Effect.Effect<void>
  readonly setPeers: (links: ReadonlyArray<LinkStats>) => Effect.Effect<void>
  readonly setStorage: (sizes: StorageSizes) => Effect.Effect<void>
}

const labeled = <Type extends MetricKeyType.MetricKeyType<any, any>>(key: MetricKey.MetricKey<Type>, labels: Record<string, string>) =>
  Metric.fromMetricKey(MetricKey.taggedWithLabels(key, Object.entries(labels).map(([k, v]) => MetricLabel.make(k, v))))

const gauge = (name: string, description: string, labels: Record<string, string>) =>
  labeled(MetricKey.gauge(name, { description }), labels)

const counter = (name: string, description: string, labels: Record<string, string>) =>
  labeled(MetricKey.counter(name, { description, incremental: true }), labels)

const histogram = (name: string, description: string, labels: Record<string, string>) =>
  labeled(MetricKey.histogram(name, latencySecondsBoundaries, description), labels)

/** `clock` times the callback-answered proposals (the effectful ones read the running fiber's). */
export const make = (nodeId: NodeId, clock: Clock.Clock = Clock.make()): NodeMetrics => {
  const node = { [nodeIdLabel]: String(nodeId) }
  const persistSeconds = histogram("tqlite_log_persist_seconds", "Time to make a batch of log writes durable (append and fsync)", node)
  const commitSeconds = histogram("tqlite_commit_seconds", "Time from a proposal to its entry being committed and applied on this node (leader)", node)
  const proposals = counter("tqlite_proposals_total", "Entries proposed to Raft on this node", node)
  const proposalFailures = new Map<string, Metric.Metric.Counter<number>>()
  const proposalFailure = (tag: string) =>
    cached(proposalFailures, tag, 64, () => counter("tqlite_proposal_failures_total", "Proposals that failed, by error", { ...node, error: tag }))

  const roles = new Map(raftRoles.map((role) => [role, gauge("tqlite_raft_role", "1 for the node's current Raft role, 0 for the others", { ...node, role })]))
  const term = gauge("tqlite_raft_term", "Current Raft term", node)
  const commitIndex = gauge("tqlite_raft_commit_index", "Highest log index known committed", node)
  const appliedIndex = gauge("tqlite_raft_applied_index", "Highest log index applied to the state machine", node)
  const lastIndex = gauge("tqlite_raft_last_log_index", "Index of the last entry in the log", node)
  const leaderKnown = gauge("tqlite_raft_leader_known", "1 when the node knows a leader for the current term", node)
  const leaderId = gauge("tqlite_raft_leader_id", "Id of the known leader, 0 when none", node)
  const member = gauge("tqlite_raft_member", "1 when the node is in the cluster's configuration", node)
  const voters = gauge("tqlite_raft_voters", "Voters in the configuration the node knows", node)

  const diskParts: ReadonlyArray<DiskPart> = ["log", "snapshots", "state machine"]
  const diskFull = gauge("tqlite_disk_full", "1 while some part of the node cannot write for a full disk (ENOSPC/EDQUOT), else 0", node)
  const diskFullByPart = new Map(diskParts.map((part) => [part, gauge("tqlite_disk_full_part", "1 while this part cannot write for a full disk", { ...node, part })]))
  const actorsStopped = gauge("tqlite_actors_stopped", "Actors of the node that gave up (the node is shutting down or must be restarted)", node)

  const logBytes = gauge("tqlite_log_size_bytes", "Bytes of the Raft log's files on disk", node)
  const snapshotBytes = gauge("tqlite_snapshot_size_bytes", "Bytes of the snapshot store's files on disk", node)
  const databaseBytes = gauge("tqlite_database_size_bytes", "Bytes of the SQLite files on disk", node)

  const peerConnected = new Map<NodeId, Metric.Metric.Gauge<number>>()
  const peerQueued = new Map<NodeId, Metric.Metric.Gauge<number>>()
  const linked = new Set<NodeId>()

  const requests = new Map<ObservedRequestType, Metric.Metric.Counter<number>>()
  const errors = new Map<string, Metric.Metric.Counter<number>>()
  const connections = gauge("tqlite_client_connections", "Client connections being served", node)
  // Shown from the first scrape, as zeros, rather than appearing at their first event.
  for (const metric of [persistSeconds, commitSeconds, proposals, connections, diskFull, actorsStopped]) metric.register()

  return {
    nodeId,
    // On the running fiber's clock, updated in place (as timeProposalNow): this runs once per
    // log write on every node.
    timePersist: (persist) =>
      Effect.clockWith((fiberClock) => {
        const start = fiberClock.unsafeCurrentTimeNanos()
        return Effect.map(persist, (result) => {
          persistSeconds.unsafeUpdate(secondsBetween(start, fiberClock.unsafeCurrentTimeNanos()), [])
          return result
        })
      }),
    timeProposal: (propose) =>
      Effect.flatMap(Clock.currentTimeNanos, (start) =>
        Effect.zipRight(
          Metric.increment(proposals),
          propose.pipe(
            Effect.tapBoth({
              onSuccess: () => Effect.flatMap(Clock.currentTimeNanos, (end) => Metric.update(commitSeconds, secondsBetween(start, end))),
              onFailure: (error) => Effect.suspend(() => Metric.increment(proposalFailure(tagOf(error))))
            })
          )
        )),
    timeProposalNow: (onDone, propose) => {
      const start = clock.unsafeCurrentTimeNanos()
      // Updated in place, not through Effect.runSync: this runs once per write on its hot path.
      const taken = propose((exit) => {
        if (exit._tag === "Success") commitSeconds.unsafeUpdate(secondsBetween(start, clock.unsafeCurrentTimeNanos()), [])
        else proposalFailure(tagOf(Cause.squash(exit.cause))).unsafeUpdate(1, [])
        onDone(exit)
      })
      if (taken) proposals.unsafeUpdate(1, [])
      return taken
    },
    gateway: {
      // Updated in place, as timeProposalNow: once per client request.
      request: (type) =>
        cached(requests, type, 64, () => counter("tqlite_client_requests_total", "dqlite protocol requests received, by type", { ...node, type })).unsafeUpdate(1, []),
      failure: (code) => {
        const key = errors.size >= errorCodesMax && !errors.has(String(code)) ? "other" : String(code)
        cached(errors, key, errorCodesMax + 1, () =>
          counter("tqlite_client_errors_total", "FAILURE responses sent to clients, by dqlite / SQLite error code", { ...node, code: key })).unsafeUpdate(1, [])
      },
      connections: (delta) => Metric.modify(connections, delta)
    },
    setStatus: (status) =>
      Effect.gen(function*() {
        for (const [role, metric] of roles) yield* Metric.set(metric, role === status.role ? 1 : 0)
        yield* Metric.set(term, status.term)
        yield* Metric.set(commitIndex, status.commitIndex)
        yield* Metric.set(appliedIndex, status.appliedIndex)
        yield* Metric.set(lastIndex, status.lastIndex)
        yield* Metric.set(leaderKnown, status.leader === null ? 0 : 1)
        yield* Metric.set(leaderId, status.leader ?? 0)
        yield* Metric.set(member, status.membership.members.some((m) => m.id === nodeId) ? 1 : 0)
        yield* Metric.set(voters, status.membership.members.filter((m) => m.role === "voter").length)
      }),
    setCondition: (condition) =>
      Effect.gen(function*() {
        yield* Metric.set(diskFull, condition.diskFull.length > 0 ? 1 : 0)
        for (const [part, metric] of diskFullByPart) yield* Metric.set(metric, condition.diskFull.some((e) => e.part === part) ? 1 : 0)
        yield* Metric.set(actorsStopped, condition.stopped.length)
      }),
    setPeers: (links) =>
      Effect.gen(function*() {
        const now = new Set<NodeId>()
        for (const link of links) {
          now.add(link.peer)
          linked.add(link.peer)
          const labels = { ...node, peer_id: String(link.peer) }
          yield* Metric.set(cached(peerConnected, link.peer, 1024, () => gauge("tqlite_peer_connected", "1 while the link to a peer has a handshaken connection", labels)), link.connected ? 1 : 0)
          yield* Metric.set(cached(peerQueued, link.peer, 1024, () => gauge("tqlite_peer_queued_messages", "Messages waiting in the link to a peer", labels)), link.queued)
        }
        // A peer that left the configuration has no link any more: its series says disconnected.
        for (const peer of linked) {
          if (now.has(peer)) continue
          yield* Metric.set(peerConnected.get(peer)!, 0)
          yield* Metric.set(peerQueued.get(peer)!, 0)
        }
      }),
    setStorage: (sizes) =>
      Effect.gen(function*() {
        yield* Metric.set(logBytes, sizes.logBytes)
        yield* Metric.set(snapshotBytes, sizes.snapshotBytes)
        yield* Metric.set(databaseBytes, sizes.databaseBytes)
      })
  }
}

/** The metric for `key`, made on first use. `max` bounds the map; the callers' keys come from
 * small closed sets, so reaching it is a bug (a defect where the metric is updated). */
function cached<K, M>(map: Map<K, M>, key: K, max: number, create: () => M): M {
  let metric = map.get(key)
  if (metric === undefined) {
    if (map.size >= max) throw new Error(`metric label set over its bound of ${max}`)
    metric = create()
    map.set(key, metric)
  }
  return metric
}

function secondsBetween(startNanos: bigint, endNanos: bigint): number {
  return Number(endNanos - startNanos) / 1e9
}

function tagOf(error: unknown): string {
  return typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string" ? error._tag : "unknown"
}
