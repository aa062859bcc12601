// Automatic role management, run by every node and acting only while it leads: every round
// (Clock-driven) it builds the cluster view — who the leader heard from lately (voters and
// standbys, from the Raft status), which spares answer a DESCRIBE probe, each member's failure
// domain and weight, who is caught up — asks decide.ts for the one change to make, and proposes
// it. The Raft core allows one configuration change at a time, so a round that finds a change
// pending does nothing. It also logs the catch-up progress of lagging members at a bounded rate.
import type { Scope } from "effect"
import { Clock, Duration, Effect, Schedule } from "effect"
import type { NodeStatus, RaftNode } from "../../actors/RaftActor.ts"
import { make as makeClient } from "../../net/client/Client.ts"
import type { NodeMetadata } from "../../net/gateway/ClusterControl.ts"
import type { PeerTlsOptions } from "../../net/peers/sockets.ts"
import type { NodeId, Role } from "../../raft/types.ts"
import type { ClusterView, MemberView, RoleTargets } from "./decide.ts"
import { decideRoleChange, defaultRoleTargets, keepsQuorum } from "./decide.ts"

export interface RoleManagerOptions {
  readonly targets: RoleTargets
  /** How often the leader reconsiders roles. */
  readonly intervalMs: number
  /** A member not heard from (voters, standbys) or not answering probes (spares) for this long
   * counts as offline. */
  readonly unreachableAfterMs: number
  /** Bound on one DESCRIBE probe (connect and answer). */
  readonly probeTimeoutMs: number
  /** Probes run at once, at most. */
  readonly probesConcurrentMax: number
  /** A standby within this many entries of the leader's last index counts as caught up. */
  readonly caughtUpLagEntriesMax: number
  /** Bound on how often the catch-up progress of one member is logged. */
  readonly progressLogIntervalMs: number
}

/** go-dqlite's targets (3 voters, 3 standbys); rounds every second rather than its 30 s,
 * since a round costs one status read and a few probes. */
export const defaultRoleManagerOptions: RoleManagerOptions = {
  targets: defaultRoleTargets,
  intervalMs: 1_000,
  unreachableAfterMs: 10_000,
  probeTimeoutMs: 1_000,
  probesConcurrentMax: 8,
  caughtUpLagEntriesMax: 64,
  progressLogIntervalMs: 5_000
}

export function validateRoleManagerOptions(options: RoleManagerOptions): RoleManagerOptions {
  const positive = ["intervalMs", "unreachableAfterMs", "probeTimeoutMs", "probesConcurrentMax", "progressLogIntervalMs"] as const
  for (const key of positive) {
    if (!Number.isSafeInteger(options[key]) || options[key] <= 0) throw new RangeError(`roles: ${key} must be a positive integer, got ${options[key]}`)
  }
  if (!Number.isSafeInteger(options.caughtUpLagEntriesMax) || options.caughtUpLagEntriesMax < 0) {
    throw new RangeError(`roles: caughtUpLagEntriesMax must be a non-negative integer, got ${options.caughtUpLagEntriesMax}`)
  }
  if (!Number.isSafeInteger(options.targets.voters) || options.targets.voters < 1) throw new RangeError(`roles: voters must be at least 1, got ${options.targets.voters}`)
  if (!Number.isSafeInteger(options.targets.standbys) || options.targets.standbys < 0) throw new RangeError(`roles: standbys must be 0 or more, got ${options.targets.standbys}`)
  return options
}

/** On a leader: whether giving `node` the role `role` (or removing it: role "spare") leaves the
 * voters it hears from a majority — the guard on operators' and leaving nodes' demotions. */
export function keepsReachableQuorum(status: NodeStatus, change: { readonly node: NodeId; readonly role: "voter" | "standby" | "spare" }, unreachableAfterMs: number): boolean {
  const view: ClusterView = {
    leader: status.id,
    members: status.membership.members.map((m) => {
      const peer = status.peers.find((p) => p.id === m.id)
      const online = m.id === status.id || (peer !== undefined && peer.silentMs < unreachableAfterMs)
      return { id: m.id, role: m.role, online, caughtUp: online, failureDomain: 0n, weight: 0n }
    })
  }
  return keepsQuorum(view, change)
}

export interface RoleManagerDeps {
  readonly raft: Pick<RaftNode<unknown, unknown>, "status" | "changeMembership">
  /** This node's own failure domain and weight. */
  readonly selfMetadata: Effect.Effect<NodeMetadata>
  readonly tls: PeerTlsOptions | null
}

interface Probe {
  readonly answeredAtMs: number
  readonly metadata: NodeMetadata
}

/** Starts the manager in the caller's scope. */
export const start = (deps: RoleManagerDeps, partial: Partial<RoleManagerOptions> = {}): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const options = validateRoleManagerOptions({ ...defaultRoleManagerOptions, ...partial, targets: { ...defaultRoleManagerOptions.targets, ...partial.targets } })
    const client = yield* makeClient({
      servers: [],
      database: "tqlite-roles",
      tls: deps.tls,
      connectTimeoutMs: options.probeTimeoutMs,
      requestTimeoutMs: options.probeTimeoutMs,
      retriesMax: 0
    })
    const probes = new Map<NodeId, Probe>()
    /** Each member's role as the last round saw it. */
    let rolesSeen = new Map<NodeId, Role>()
    const progressLoggedAtMs = new Map<NodeId, number>()

    const probe = (id: NodeId, address: string) =>
      client.describe(address).pipe(
        Effect.timeout(Duration.millis(options.probeTimeoutMs)),
        Effect.flatMap((metadata) => Effect.map(Clock.currentTimeMillis, (now) => void probes.set(id, { answeredAtMs: now, metadata }))),
        Effect.ignore
      )

    const viewOf = (status: NodeStatus, self: NodeMetadata, nowMs: number): ClusterView => {
      const members: MemberView[] = status.membership.members.map((m) => {
        if (m.id === status.id) return { id: m.id, role: m.role, online: true, caughtUp: true, failureDomain: self.failureDomain, weight: self.weight }
        const peer = status.peers.find((p) => p.id === m.id)
        const answered = probes.get(m.id)
        const online = m.role === "spare"
          ? answered !== undefined && nowMs - answered.answeredAtMs < options.unreachableAfterMs
          : peer !== undefined && peer.silentMs < options.unreachableAfterMs
        const caughtUp = peer !== undefined && peer.replication === "replicate" && status.lastIndex - peer.matchIndex <= options.caughtUpLagEntriesMax
        return { id: m.id, role: m.role, online, caughtUp, failureDomain: answered?.metadata.failureDomain ?? 0n, weight: answered?.metadata.weight ?? 0n }
      })
      return { leader: status.id, members }
    }

    const logProgress = (status: NodeStatus, view: ClusterView, nowMs: number) =>
      Effect.forEach(view.members, (m) => {
        const peer = status.peers.find((p) => p.id === m.id)
        if (peer === undefined || m.caughtUp || !m.online) return Effect.void
        // Not heard from since this node leads (a new leader counts every peer as fresh): nothing
        // is known of its log, and a dead peer must not read as "catching up: log at 0 (0%)".
        if (peer.matchIndex === 0 && peer.replication === "probe") return Effect.void
        if (nowMs - (progressLoggedAtMs.get(m.id) ?? -Infinity) < options.progressLogIntervalMs) return Effect.void
        progressLoggedAtMs.set(m.id, nowMs)
        const percent = status.commitIndex === 0 ? 100 : Math.min(100, Math.floor((peer.matchIndex / status.commitIndex) * 100))
        const how = peer.replication === "snapshot" ? "receiving a snapshot" : `log at ${peer.matchIndex} of the leader's commit ${status.commitIndex} (${percent}%)`
        return Effect.logInfo(`${m.role} ${m.id} catching up: ${how}`)
      }, { discard: true })

    const round = Effect.gen(function*() {
      const status = yield* deps.raft.status
      if (status.role !== "leader") {
        probes.clear()
        rolesSeen = new Map()
        return
      }
      const others = status.membership.members.filter((m) => m.id !== status.id)
      yield* Effect.forEach(others, (m) => probe(m.id, m.address), { concurrency: options.probesConcurrentMax, discard: true })
      for (const id of [...probes.keys()]) if (!others.some((m) => m.id === id)) probes.delete(id)
      const nowMs = yield* Clock.currentTimeMillis
      // Probes took time: read the status again so the view is as fresh as possible.
      const fresh = yield* deps.raft.status
      if (fresh.role !== "leader") return
      // A member that became a spare since the last round (a voter stepping back on its way out,
      // or a demotion) counts as online only once it answers a probe again: a leaver's answer
      // from before it left must not get it staged as a standby while it shuts down.
      for (const m of fresh.membership.members) {
        const before = rolesSeen.get(m.id)
        if (m.role === "spare" && before !== undefined && before !== "spare") probes.delete(m.id)
      }
      rolesSeen = new Map(fresh.membership.members.map((m) => [m.id, m.role]))
      const view = viewOf(fresh, yield* deps.selfMetadata, nowMs)
      yield* logProgress(fresh, view, nowMs)
      const change = decideRoleChange(view, options.targets)
      if (change === null) return
      const from = fresh.membership.members.find((m) => m.id === change.node)?.role ?? "?"
      yield* Effect.logInfo(`roles: node ${change.node} ${from} → ${change.role} (${change.reason})`)
      const done = yield* Effect.either(deps.raft.changeMembership({ kind: "assign", node: change.node, role: change.role }))
      if (done._tag === "Left") yield* Effect.logInfo(`roles: changing node ${change.node} to ${change.role} did not happen: ${done.left._tag}`)
    })

    yield* round.pipe(
      Effect.catchAllCause((cause) => Effect.logWarning("roles: round failed", cause)),
      Effect.repeat(Schedule.spaced(Duration.millis(options.intervalMs))),
      Effect.annotateLogs("component", "roles"),
      Effect.forkScoped
    )
  })
