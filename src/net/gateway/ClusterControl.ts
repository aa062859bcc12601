// What the gateway needs from the cluster to answer LEADER, CLUSTER, ADD, ASSIGN, REMOVE,
// TRANSFER, DESCRIBE and WEIGHT. The node wiring implements it over its RaftNode
// (raftClusterControl.ts); protocol tests use a fake.
import type { Effect } from "effect"
import { Data } from "effect"
import type { NodeId, Role } from "../../raft/types.ts"

/** A server as clients dial it: `address` must be byte-identical to the string clients use,
 * because go-dqlite decides "this is the leader" by comparing the two. */
export interface ClusterServerAddress {
  readonly id: NodeId
  readonly address: string
}

export interface ClusterServer extends ClusterServerAddress {
  readonly role: Role
}

/** DESCRIBE's answer: this node's failure domain and weight (dqlite defaults 0 and 0). */
export interface NodeMetadata {
  readonly failureDomain: bigint
  readonly weight: bigint
}

/** Why a cluster request failed; the gateway turns each reason into dqlite's code and text:
 * - `NotLeader` → 10250 "not leader" (clients look for the leader again);
 * - `LeadershipLost` → 10506 "leadership lost" (the change may or may not have happened);
 * - `ChangeInProgress` → 5 "a configuration change is already in progress";
 * - `IdInUse` → 1 "server ID already in use" (ADD of a member);
 * - `UnknownId` → 1 "server ID is not valid" (REMOVE, TRANSFER, ASSIGN of a non-member);
 * - `RoleNotValid` → 1 "server role is not valid" (ASSIGN of the role it has, or a bad role);
 * - `TransferFailed` → 1 "leadership transfer failed" (still leader when the transfer ended);
 * - `Failed` → 1 with `message` (anything else, e.g. a timeout). */
export type ClusterControlFailure =
  | "NotLeader"
  | "LeadershipLost"
  | "ChangeInProgress"
  | "IdInUse"
  | "UnknownId"
  | "RoleNotValid"
  | "TransferFailed"
  | "Failed"

export class ClusterControlError extends Data.TaggedError("ClusterControlError")<{
  readonly reason: ClusterControlFailure
  readonly message: string
}> {}

export interface ClusterControl {
  /** The leader as this node knows it, or null when it knows none — and also when this node
   * is a standby, a spare or not a member, which dqlite answers with (0, "") even if it knows. */
  readonly leader: Effect.Effect<ClusterServerAddress | null>
  /** `leader` as plain code, when the implementation can answer without an Effect (the
   * gateway's plain path for LEADER); absent: `leader` is used. */
  readonly leaderNow?: () => ClusterServerAddress | null
  /** The current configuration, in configuration order, this node included. */
  readonly servers: Effect.Effect<ReadonlyArray<ClusterServer>>
  /** Adds a spare; succeeds once the configuration entry is committed. Leader only. */
  readonly add: (id: NodeId, address: string) => Effect.Effect<void, ClusterControlError>
  /** Changes a member's role; for voter, after it has caught up. Leader only. */
  readonly assign: (id: NodeId, role: Role) => Effect.Effect<void, ClusterControlError>
  /** Removes a member; succeeds once committed. Leader only. */
  readonly remove: (id: NodeId) => Effect.Effect<void, ClusterControlError>
  /** Hands leadership to `id` (null: let Raft pick a voter); succeeds once this node is no
   * longer the leader. Leader only. */
  readonly transfer: (id: NodeId | null) => Effect.Effect<void, ClusterControlError>
  readonly describe: Effect.Effect<NodeMetadata>
  /** Sets this node's weight (kept in memory, as dqlite does). */
  readonly setWeight: (weight: bigint) => Effect.Effect<void>
}
