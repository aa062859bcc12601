// Role transitions. Each resets exactly the state the new role must not inherit.
import { assert } from "../assert.ts"
import { append, lastIndex, slotAt } from "./log.ts"
import { isReplicated } from "./membership.ts"
import { makeProgress } from "./progress.ts"
import type { Step } from "./state.ts"
import { emit, refreshMembership, resetRandomizedElectionTimeout } from "./state.ts"
import type { Entry, NodeId, Term } from "./types.ts"
import { entrySizeBytes, slotSizeBytes } from "./types.ts"
import { abandonForwardedReads } from "./follower.ts"
import { broadcastAppend, refuseRead } from "./leader.ts"

export function becomeFollower(step: Step, term: Term, leader: NodeId | null): void {
  const s = step.s
  assert(term >= s.term, "a node never goes back in term")
  if (term > s.term) {
    s.term = term
    s.vote = null
    s.leaderCommit = 0
    s.leaderContacts = 0
    abandonForwardedReads(step, `term ${term} began`)
  }
  s.role = "follower"
  s.leader = leader
  resetTimers(step)
  abandonLeadership(step)
}

export function becomePreCandidate(step: Step): void {
  const s = step.s
  // A pre-candidate keeps its term and vote: it only asks whether it could win.
  s.role = "preCandidate"
  s.leader = null
  abandonForwardedReads(step, "lost contact with the leader")
  resetTimers(step)
  abandonLeadership(step)
}

export function becomeCandidate(step: Step): void {
  const s = step.s
  s.term += 1
  s.vote = s.config.id
  s.role = "candidate"
  s.leader = null
  abandonForwardedReads(step, "lost contact with the leader")
  resetTimers(step)
  abandonLeadership(step)
}

export function becomeLeader(step: Step): void {
  const s = step.s
  assert(s.role === "candidate", "only a candidate becomes leader")
  s.role = "leader"
  s.leader = s.config.id
  resetTimers(step)
  s.progress = new Map()
  const next = lastIndex(s.log) + 1
  for (const member of s.membership.members) {
    if (member.id !== s.config.id && isReplicated(member)) s.progress.set(member.id, makeProgress(next))
  }
  s.transferee = null
  s.reads = []
  s.readsWaitingForCommit = []
  s.readsQueued = []
  s.heartbeatRounds = []
  s.leaseRevoked = false
  s.uncommittedBytes = 0
  for (let i = s.log.committed + 1; i <= lastIndex(s.log); i++) {
    const slot = slotAt(s.log, i)
    if (slot !== undefined) s.uncommittedBytes += slotSizeBytes(slot)
  }
  // The barrier lets the new leader commit an entry of its own term, which commits everything
  // before it and lets ReadIndex and membership changes proceed.
  appendEntry(step, { kind: "barrier", term: s.term, index: next })
  broadcastAppend(step, true)
}

/** Appends one entry to the log and to the batch to persist; a config entry takes effect now. */
export function appendEntry(step: Step, entry: Entry): void {
  const s = step.s
  append(s.log, entry)
  step.out.entries.push(entry)
  if (s.role === "leader") s.uncommittedBytes += entrySizeBytes(entry)
  if (entry.kind === "config") {
    s.configs.push({ index: entry.index, config: entry.config })
    refreshMembership(s)
  }
}

function resetTimers(step: Step): void {
  step.s.electionElapsed = 0
  step.s.heartbeatElapsed = 0
  step.s.votes = new Map()
  resetRandomizedElectionTimeout(step.s)
}

/** Whatever only a leader tracks goes away; waiting reads learn they will not be served here. */
function abandonLeadership(step: Step): void {
  const s = step.s
  if (s.transferee !== null) emit(step, { _tag: "TransferAborted", to: s.transferee })
  s.transferee = null
  s.progress = new Map()
  for (const read of s.reads) refuseRead(step, read.requester, "not-leader", "leadership lost")
  for (const requester of s.readsWaitingForCommit) refuseRead(step, requester, "not-leader", "leadership lost")
  for (const requester of s.readsQueued) refuseRead(step, requester, "not-leader", "leadership lost")
  s.reads = []
  s.readsWaitingForCommit = []
  s.readsQueued = []
  s.uncommittedBytes = 0
}
