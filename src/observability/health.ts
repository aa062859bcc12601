// Whether a node can serve: the verdict behind `/health`. A node is healthy when its machinery
// runs (no actor gave up, the Raft loop and the applier make progress, no part is stuck on a
// full disk), it is a member of the configuration, knows a leader, is in contact (a follower
// heard its leader recently; a leader heard a quorum of voters recently) and has applied what it
// knows committed, up to a small lag. Pure: the caller brings the status, the node's condition,
// the contact times and the clock reading.
import type { NodeCondition, NodeStatus } from "../actors/RaftActor.ts"
import type { NodeId } from "../raft/types.ts"

export interface HealthLimits {
  /** Entries the applied index may trail the commit index by. */
  readonly appliedLagMax: number
  /** How recent the last message from the leader (or, on the leader, from each voter of a
   * quorum) must be. */
  readonly contactMaxMs: number
  /** How long the Raft loop may go without finishing a mailbox batch (it gets a tick every
   * tickMs), and the applier without advancing while it trails the commit index. */
  readonly stallMaxMs: number
}

/** Contact within one base election timeout: a follower that long without a heartbeat is about
 * to start an election anyway, and a check-quorum leader that long without a quorum steps down. */
/** A stall is declared after three election timeouts: long enough that a busy event loop or a
 * long fsync is not mistaken for one, short enough that a balancer moves on quickly. */
export const healthLimitsFor = (options: { readonly tickMs: number; readonly electionTicks: number }): HealthLimits => ({
  appliedLagMax: 100,
  contactMaxMs: options.tickMs * options.electionTicks,
  stallMaxMs: 3 * options.tickMs * options.electionTicks
})

export type WantedRole = "leader" | "follower"

export interface HealthInput {
  readonly status: NodeStatus
  /** The node's machinery; absent: not checked. */
  readonly condition?: NodeCondition
  readonly nowMs: number
  readonly lastHeardMs: (peer: NodeId) => number | null
  /** `/health?role=…`: also require this role. */
  readonly want: WantedRole | null
}

export interface HealthReport {
  readonly status: "ok" | "unavailable"
  /** Why the node is unavailable; null when ok. */
  readonly reason: string | null
  readonly nodeId: NodeId
  readonly role: NodeStatus["role"]
  readonly term: number
  readonly leaderId: NodeId | null
  readonly commitIndex: number
  readonly appliedIndex: number
  /** What the state machine has applied (a snapshot once installed); `appliedIndex` when the
   * node does not say. */
  readonly machineAppliedIndex: number
  readonly lastIndex: number
  /** Ms since the leader was last heard (0 on the leader itself); null when never. */
  readonly leaderContactAgeMs: number | null
}

export function evaluateHealth(input: HealthInput, limits: HealthLimits): HealthReport {
  const { status, nowMs } = input
  const self = status.id
  const leaderContactAgeMs = status.leader === null
    ? null
    : status.leader === self
    ? 0
    : ageOf(input.lastHeardMs(status.leader), nowMs)
  const report = (reason: string | null): HealthReport => ({
    status: reason === null ? "ok" : "unavailable",
    reason,
    nodeId: self,
    role: status.role,
    term: status.term,
    leaderId: status.leader,
    commitIndex: status.commitIndex,
    appliedIndex: status.appliedIndex,
    machineAppliedIndex: status.machineAppliedIndex ?? status.appliedIndex,
    lastIndex: status.lastIndex,
    leaderContactAgeMs
  })
  const machinery = input.condition === undefined ? null : conditionProblem(input.condition, status, nowMs, limits)
  if (machinery !== null) return report(machinery)
  if (!status.membership.members.some((m) => m.id === self)) return report("not a member of the cluster configuration")
  if (status.leader === null) return report(`no known leader (role ${status.role}, term ${status.term})`)
  if (status.role === "leader") {
    const voters = status.membership.members.filter((m) => m.role === "voter")
    const heard = voters.filter((m) => m.id === self || isRecent(input.lastHeardMs(m.id), nowMs, limits.contactMaxMs)).length
    if (heard * 2 <= voters.length) {
      return report(`leader heard from ${heard} of ${voters.length} voters within ${limits.contactMaxMs} ms, not a quorum`)
    }
  } else if (leaderContactAgeMs === null || leaderContactAgeMs > limits.contactMaxMs) {
    const age = leaderContactAgeMs === null ? "never" : `${leaderContactAgeMs} ms ago`
    return report(`leader ${status.leader} last heard ${age} (limit ${limits.contactMaxMs} ms)`)
  }
  const lag = status.commitIndex - status.appliedIndex
  if (lag > limits.appliedLagMax) {
    return report(`applied index ${status.appliedIndex} trails commit index ${status.commitIndex} by ${lag} (limit ${limits.appliedLagMax})`)
  }
  if (input.want === "leader" && status.role !== "leader") return report(`role is ${status.role}, not leader`)
  if (input.want === "follower" && status.role !== "follower") return report(`role is ${status.role}, not follower`)
  return report(null)
}

/** What keeps the node's own machinery from serving, most fundamental first; null when none. */
function conditionProblem(condition: NodeCondition, status: NodeStatus, nowMs: number, limits: HealthLimits): string | null {
  if (condition.stopped.length > 0) return `stopped: ${condition.stopped.join("; ")}`
  if (condition.cannotLead !== undefined && condition.cannotLead !== null) return condition.cannotLead
  if (condition.diskFull.length > 0) {
    const parts = condition.diskFull.map((e) => `the ${e.part} cannot write (${e.op} ${e.path}) for ${Math.max(0, nowMs - e.sinceMs)} ms`)
    return `disk full: ${parts.join("; ")}`
  }
  const raftIdleMs = nowMs - condition.raftActiveMs
  if (raftIdleMs > limits.stallMaxMs) return `the Raft loop has made no progress for ${raftIdleMs} ms (limit ${limits.stallMaxMs} ms)`
  const applierIdleMs = nowMs - condition.applierActiveMs
  if (status.commitIndex > status.appliedIndex && applierIdleMs > limits.stallMaxMs) {
    return `the applier has not advanced for ${applierIdleMs} ms (applied ${status.appliedIndex}, committed ${status.commitIndex}; limit ${limits.stallMaxMs} ms)`
  }
  return null
}

/** A `role` query parameter: absent, or one of the roles a check may ask for. */
export function parseWantedRole(value: string | undefined): { readonly ok: true; readonly want: WantedRole | null } | { readonly ok: false; readonly reason: string } {
  if (value === undefined || value === "") return { ok: true, want: null }
  if (value === "leader" || value === "follower") return { ok: true, want: value }
  return { ok: false, reason: `role must be "leader" or "follower", not ${JSON.stringify(value)}` }
}

function ageOf(lastMs: number | null, nowMs: number): number | null {
  return lastMs === null ? null : Math.max(0, nowMs - lastMs)
}

function isRecent(lastMs: number | null, nowMs: number, maxMs: number): boolean {
  return lastMs !== null && nowMs - lastMs <= maxMs
}

/** On a leader: how many voters (itself included) answered within `windowMs`, by the core's own
 * count of silent ticks. Null on any other node. */
export function leaderQuorumContact(status: NodeStatus, windowMs: number): { readonly heard: number; readonly voters: number; readonly quorum: boolean } | null {
  if (status.role !== "leader") return null
  const voters = status.membership.members.filter((m) => m.role === "voter")
  const heard = voters.filter((m) => m.id === status.id || (status.peers.find((p) => p.id === m.id)?.silentMs ?? Infinity) < windowMs).length
  return { heard, voters: voters.length, quorum: heard * 2 > voters.length }
}
