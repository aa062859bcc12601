// ClusterControl over a Raft node (src/actors/RaftActor.ts): LEADER and CLUSTER read the node's
// status and membership; ADD / ASSIGN / REMOVE are single-server membership changes answered
// once committed; TRANSFER asks the node to hand leadership over; DESCRIBE / WEIGHT keep this
// node's failure domain and weight in memory, as dqlite does.
import { Duration, Effect, Ref, Schedule } from "effect"
import type { NodeStatus } from "../actors/RaftActor.ts"
import type { RaftRequestError } from "../actors/raftErrors.ts"
import type { MembershipChange } from "../raft/membership.ts"
import type { LogIndex, NodeId, Role } from "../raft/types.ts"
import type { ClusterControl, ClusterServerAddress } from "../net/gateway/ClusterControl.ts"
import { ClusterControlError } from "../net/gateway/ClusterControl.ts"

/** The part of a RaftNode the cluster requests need. */
export interface RaftClusterNode {
  readonly id: NodeId
  readonly status: Effect.Effect<NodeStatus>
  /** The status without an Effect (RaftNode's): LEADER answered as plain code when given. */
  readonly statusNow?: () => NodeStatus
  readonly changeMembership: (change: MembershipChange) => Effect.Effect<LogIndex, RaftRequestError>
  readonly transferLeadership: (to: NodeId | null) => Effect.Effect<void, RaftRequestError>
}

export interface RaftClusterControlOptions {
  readonly node: RaftClusterNode
  readonly failureDomain?: bigint
  readonly weight?: bigint
}

/** What LEADER is answered with, from a node's status: the leader's id and the address in the
 * configuration (what clients dial), or null when no leader is known or this node is not a
 * member. Unlike dqlite 1.11, whose standbys and spares answer (0, "") — a dead end for a
 * client that was given only them — every member that knows the leader names it: clients ask
 * the named node again before trusting it, so a stale answer costs one more round trip. */
export function leaderOf(status: NodeStatus): ClusterServerAddress | null {
  if (!status.membership.members.some((m) => m.id === status.id)) return null
  const leaderId = status.role === "leader" ? status.id : status.leader
  if (leaderId === null) return null
  const leader = status.membership.members.find((m) => m.id === leaderId)
  return leader === undefined ? null : { id: leader.id, address: leader.address }
}

/** After a transfer: how often and how many times to look whether this node stepped down. */
const statusPollMs = 10
const statusPollsMax = 50

const fail = (reason: ClusterControlError["reason"], message: string) => Effect.fail(new ClusterControlError({ reason, message }))

/** A Raft request failure as the gateway reports it. */
export function clusterErrorOf(error: RaftRequestError): ClusterControlError {
  switch (error._tag) {
    case "RaftNotLeader":
      return new ClusterControlError({ reason: "NotLeader", message: error.detail })
    // The entry was overwritten by another leader's: not applied, and this node is not leading.
    case "ProposalDropped":
      return new ClusterControlError({ reason: "NotLeader", message: `the change at index ${error.index} was dropped by a new leader` })
    case "ChangePending":
      return new ClusterControlError({ reason: "ChangeInProgress", message: error.detail })
    case "OutcomeUnknown":
      return new ClusterControlError({ reason: "LeadershipLost", message: error.detail })
    case "InvalidRequest":
      if (error.detail.includes("already a member")) return new ClusterControlError({ reason: "IdInUse", message: error.detail })
      if (error.detail.includes("not a member")) return new ClusterControlError({ reason: "UnknownId", message: error.detail })
      return new ClusterControlError({ reason: "Failed", message: error.detail })
    case "Overloaded":
    case "StorageFull":
    case "RaftReplicaStale":
      return new ClusterControlError({ reason: "Failed", message: error.detail })
    case "RaftRequestTimeout":
      return new ClusterControlError({ reason: "Failed", message: `the change was not committed within ${error.timeoutMs} ms` })
  }
}

export const makeRaftClusterControl = (options: RaftClusterControlOptions): Effect.Effect<ClusterControl> =>
  Effect.gen(function*() {
    const node = options.node
    const metadata = yield* Ref.make({ failureDomain: options.failureDomain ?? 0n, weight: options.weight ?? 0n })

    /** Runs `f` with the status if this node leads; dqlite checks leadership first. */
    const asLeader = (f: (status: NodeStatus) => Effect.Effect<void, ClusterControlError>) =>
      Effect.flatMap(node.status, (status) => (status.role === "leader" ? f(status) : fail("NotLeader", "not leader")))

    const member = (status: NodeStatus, id: NodeId) => status.membership.members.find((m) => m.id === id)

    const change = (membershipChange: MembershipChange) =>
      Effect.asVoid(Effect.mapError(node.changeMembership(membershipChange), clusterErrorOf))

    const control: ClusterControl = {
      leader: Effect.map(node.status, leaderOf),
      ...(node.statusNow === undefined ? {} : { leaderNow: () => leaderOf(node.statusNow!()) }),
      servers: Effect.map(node.status, (status) =>
        status.membership.members.map((m) => ({ id: m.id, address: m.address, role: m.role }))),
      add: (id, address) =>
        asLeader((status) =>
          member(status, id) !== undefined
            ? fail("IdInUse", `node ${id} is already a member`)
            : change({ kind: "add", node: id, address, role: "spare" })),
      assign: (id, role: Role) =>
        asLeader((status) => {
          const existing = member(status, id)
          if (existing === undefined) return fail("UnknownId", `node ${id} is not a member`)
          if (existing.role === role) return fail("RoleNotValid", `node ${id} is already a ${role}`)
          return change({ kind: "assign", node: id, role })
        }),
      remove: (id) =>
        asLeader((status) =>
          member(status, id) === undefined ? fail("UnknownId", `node ${id} is not a member`) : change({ kind: "remove", node: id })),
      transfer: (id) =>
        asLeader((status) => {
          if (id !== null && member(status, id) === undefined) return fail("UnknownId", `node ${id} is not a member`)
          if (id === status.id) return fail("TransferFailed", "leadership transfer failed")
          // dqlite answers once this node is no longer the leader, whoever leads now. The status
          // is published just after the transfer's reply, so look a few times.
          const stillLeader = Effect.flatMap(node.status, (after) =>
            after.role === "leader" ? fail("TransferFailed", "leadership transfer failed") : Effect.void).pipe(
              Effect.retry({ times: statusPollsMax, schedule: Schedule.spaced(Duration.millis(statusPollMs)) })
            )
          return node.transferLeadership(id).pipe(
            Effect.catchAll((error) =>
              error._tag === "ProposalDropped" || error._tag === "OutcomeUnknown" || error._tag === "Overloaded"
                ? Effect.fail(clusterErrorOf(error))
                : Effect.void),
            Effect.zipRight(stillLeader)
          )
        }),
      describe: Ref.get(metadata),
      setWeight: (weight) => Ref.update(metadata, (m) => ({ ...m, weight }))
    }
    return control
  })
