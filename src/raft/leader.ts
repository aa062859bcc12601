// The leader: pipelined replication with fast backtracking, commit by quorum of the current
// term, heartbeats, check-quorum, ReadIndex, leadership transfer, proposals, membership changes.
import { assert } from "../assert.ts"
import { lastIndex, lastIndexOfTerm, slice, slotAt, termAt } from "./log.ts"
import type { MembershipChange } from "./membership.ts"
import { applyChange, isReplicated, isVoter } from "./membership.ts"
import type { AppendEntriesResponse, HeartbeatResponse, InstallSnapshotResponse } from "./messages.ts"
import type { Progress } from "./progress.ts"
import {
  addInflight,
  becomeProbe,
  becomeReplicate,
  becomeSnapshot,
  freeFirstInflight,
  freeInflightsUpTo,
  inflightFull,
  makeProgress
} from "./progress.ts"
import { heartbeatRoundTick, leaseHolds, recordHeartbeatRound } from "./lease.ts"
import { committedIndex, quorumSize } from "./quorum.ts"
import { appendEntry, becomeFollower } from "./roles.ts"
import type { RaftState, ReadRequester, RequestId, Step } from "./state.ts"
import { emit, reject, send } from "./state.ts"
import type { LogIndex, NodeId } from "./types.ts"
import { entrySizeBytes, slotSizeBytes, voters } from "./types.ts"

// ---- replication ----

export function broadcastAppend(step: Step, allowEmpty: boolean): void {
  for (const id of step.s.progress.keys()) replicateTo(step, id, allowEmpty)
}

/** Sends what the follower's progress allows: one probe, or a pipeline of appends up to the
 * in-flight bound. `allowEmpty` sends an empty append when there is nothing new (to carry the
 * commit index or to find out where the follower is). */
export function replicateTo(step: Step, to: NodeId, allowEmpty: boolean): void {
  const pr = step.s.progress.get(to)
  if (pr === undefined) return
  let sent = sendAppend(step, to, pr, allowEmpty)
  while (sent && pr.state === "replicate" && pr.next <= lastIndex(step.s.log)) {
    sent = sendAppend(step, to, pr, false)
  }
}

function sendAppend(step: Step, to: NodeId, pr: Progress, allowEmpty: boolean): boolean {
  const s = step.s
  const cfg = s.config
  if (pr.state === "snapshot") return false
  if (pr.state === "probe" && pr.probeSent) return false
  if (pr.state === "replicate" && inflightFull(pr, cfg.inflightAppendsMax, cfg.inflightBytesMax)) return false
  const last = lastIndex(s.log)
  assert(pr.next <= last + 1, `progress next ${pr.next} beyond last ${last} + 1`)
  const prevIndex = pr.next - 1
  const prevTerm = termAt(s.log, prevIndex)
  if (prevTerm === undefined) {
    sendSnapshot(step, to, pr)
    return false
  }
  const entries = pr.next <= last ? slice(s.log, pr.next, last, cfg.appendEntriesMax, cfg.appendBytesMax) : []
  if (entries.length === 0 && !allowEmpty) return false
  send(step, { _tag: "AppendEntries", from: cfg.id, to, term: s.term, prevIndex, prevTerm, entries, commit: s.log.committed })
  // The follower adopts the commit index up to the append's last entry.
  pr.commitSent = Math.max(pr.commitSent, Math.min(s.log.committed, prevIndex + entries.length))
  const lastSent = entries[entries.length - 1]
  if (pr.state === "replicate") {
    if (lastSent !== undefined) {
      pr.next = lastSent.index + 1
      addInflight(pr, lastSent.index, entries.reduce((n, e) => n + entrySizeBytes(e), 0))
    }
  } else {
    pr.probeSent = true
  }
  return true
}

function sendSnapshot(step: Step, to: NodeId, pr: Progress): void {
  const s = step.s
  assert(s.snapshot !== null, `follower ${to} needs compacted entries but there is no snapshot`)
  becomeSnapshot(pr, s.snapshot.index)
  send(step, { _tag: "InstallSnapshot", from: s.config.id, to, term: s.term, meta: s.snapshot })
}

export function handleAppendResponse(step: Step, m: AppendEntriesResponse): void {
  const s = step.s
  const pr = s.progress.get(m.from)
  if (pr === undefined) return
  pr.recentActive = true
  pr.silentTicks = 0
  if (!m.success) {
    if (pr.state === "snapshot") return
    if (pr.state === "replicate" && m.index <= pr.match) return // stale
    if (pr.state === "probe" && m.index !== pr.next - 1) return // answer to an older probe
    let next = m.hintIndex
    if (m.hintTerm > 0) {
      const last = lastIndexOfTerm(s.log, m.hintTerm)
      if (last !== undefined) next = last + 1
    }
    // Always make progress: strictly below the rejected prevIndex + 1, never below match + 1.
    becomeProbe(pr)
    pr.next = Math.max(pr.match + 1, Math.min(next, m.index))
    replicateTo(step, m.from, true)
    return
  }
  const advanced = m.index > pr.match
  if (advanced) pr.match = m.index
  if (pr.next < m.index + 1) pr.next = m.index + 1
  freeInflightsUpTo(pr, m.index)
  if (pr.state === "probe") becomeReplicate(pr)
  else if (pr.state === "snapshot" && pr.match >= pr.snapshotIndex) becomeReplicate(pr)
  // A new commit index goes out with the next append to each follower (new entries now, the
  // next proposal's, or a heartbeat's commit): an empty append just for it only when none went
  // within the driver's short delay (FlushCommit) or by the next tick — one message less per
  // follower and entry, and its read, decode and answer (issue 12). Without carryCommit: an
  // empty append to every follower at once.
  if (advanced && maybeCommit(step)) broadcastAppend(step, s.config.carryCommit !== true)
  if (s.role !== "leader") return
  replicateTo(step, m.from, false)
  if (s.transferee === m.from && pr.match === lastIndex(s.log)) sendTimeoutNow(step, m.from)
}

/** Whether a follower lacks a commit index it could adopt now, and an empty append to it would
 * go out (replicating, room in its window: with its window full, the acknowledgements of what is
 * in flight bring the next append, which carries the commit). */
function owesCommit(s: RaftState, pr: Progress): boolean {
  // Up to what was sent to it: a follower adopts the commit over entries it holds unpersisted.
  return pr.state === "replicate" && pr.commitSent < Math.min(pr.next - 1, s.log.committed) &&
    !inflightFull(pr, s.config.inflightAppendsMax, s.config.inflightBytesMax)
}

/** A leader owes some follower the commit index: the driver sends FlushCommit after its delay. */
export function commitOwed(s: RaftState): boolean {
  if (s.role !== "leader" || s.config.carryCommit !== true) return false
  for (const pr of s.progress.values()) if (owesCommit(s, pr)) return true
  return false
}

/** Tells every follower owed the commit index, in an empty append each. */
export function flushCommit(step: Step): void {
  const s = step.s
  if (s.config.carryCommit !== true) return
  for (const [id, pr] of s.progress) if (owesCommit(s, pr)) replicateTo(step, id, true)
}

export function handleSnapshotResponse(step: Step, m: InstallSnapshotResponse): void {
  const s = step.s
  const pr = s.progress.get(m.from)
  if (pr === undefined) return
  pr.recentActive = true
  pr.silentTicks = 0
  if (m.index > pr.match) pr.match = m.index
  becomeProbe(pr)
  if (maybeCommit(step)) broadcastAppend(step, true)
  if (s.role === "leader") replicateTo(step, m.from, true)
}

export function handleHeartbeatResponse(step: Step, m: HeartbeatResponse): void {
  const s = step.s
  const pr = s.progress.get(m.from)
  if (pr === undefined) return
  pr.recentActive = true
  pr.silentTicks = 0
  pr.probeSent = false
  // An append may have been lost: make room so the follower can be probed again.
  if (pr.state === "replicate" && inflightFull(pr, s.config.inflightAppendsMax, s.config.inflightBytesMax)) {
    freeFirstInflight(pr)
  }
  if (pr.match < lastIndex(s.log)) replicateTo(step, m.from, true)
  if (m.context > 0) {
    const sentAt = heartbeatRoundTick(s, m.context)
    if (sentAt !== undefined && sentAt > pr.leaseTick) pr.leaseTick = sentAt
    if (isVoter(s.membership, m.from)) acknowledgeReads(step, m.from, m.context)
  }
}

/** Advances commit to the highest index a quorum of voters holds, if it is of this term. The
 * leader counts itself only up to what it has persisted. */
export function maybeCommit(step: Step): boolean {
  const s = step.s
  const self = s.config.id
  const index = committedIndex(voters(s.membership), (id) => (id === self ? s.log.stable : s.progress.get(id)?.match ?? 0))
  if (index <= s.log.committed) return false
  if (termAt(s.log, index) !== s.term && s.config.bugs?.commitOldTerm !== true) return false
  for (let i = s.log.committed + 1; i <= index; i++) {
    const slot = slotAt(s.log, i)
    if (slot !== undefined) s.uncommittedBytes -= slotSizeBytes(slot)
  }
  s.log.committed = index
  afterCommit(step)
  return true
}

function afterCommit(step: Step): void {
  const s = step.s
  if (s.readsWaitingForCommit.length > 0) {
    const waiting = s.readsWaitingForCommit
    s.readsWaitingForCommit = []
    serveReads(step, waiting)
  }
  // A leader that the committed configuration no longer counts as a voter hands over.
  if (s.membershipIndex <= s.log.committed && !isVoter(s.membership, s.config.id)) {
    becomeFollower(step, s.term, null)
  }
}

// ---- time ----

export function tickLeader(step: Step): void {
  const s = step.s
  s.heartbeatElapsed++
  s.electionElapsed++
  for (const pr of s.progress.values()) pr.silentTicks++
  if (s.electionElapsed >= s.config.electionTicks) {
    s.electionElapsed = 0
    // (The leaseTooLong bug keeps leading while its stretched lease holds, as a leader that
    // trusts its lease would.)
    const trustsLease = s.config.bugs?.leaseTooLong === true && leaseHolds(s)
    if (s.config.checkQuorum && !quorumActive(step) && !trustsLease) {
      becomeFollower(step, s.term, null)
      return
    }
    for (const pr of s.progress.values()) pr.recentActive = false
    if (s.transferee !== null) {
      emit(step, { _tag: "TransferAborted", to: s.transferee })
      s.transferee = null
    }
  }
  for (const [id, pr] of s.progress) {
    if (pr.state !== "snapshot") continue
    pr.snapshotElapsed++
    if (pr.snapshotElapsed >= s.config.snapshotRetryTicks) {
      becomeProbe(pr)
      replicateTo(step, id, true)
    }
  }
  if (s.heartbeatElapsed >= s.config.heartbeatTicks) {
    s.heartbeatElapsed = 0
    heartbeatRound(step)
  }
  // A commit index owed since before this tick waits no longer, whatever the driver's delay.
  flushCommit(step)
}

function quorumActive(step: Step): boolean {
  const s = step.s
  const ids = voters(s.membership)
  const active = ids.filter((id) => id === s.config.id || s.progress.get(id)?.recentActive === true).length
  return active >= quorumSize(ids.length)
}

/** Sends a heartbeat round under a new number, remembered with the tick it left at: an
 * answer to it confirms the reads registered before it and renews the lease. Every round (a
 * tick's too) takes the reads queued so far, at the commit index of now. */
function heartbeatRound(step: Step): number {
  const s = step.s
  s.readSeq++
  recordHeartbeatRound(s, s.readSeq)
  if (s.readsQueued.length > 0) {
    const acks = new Set<NodeId>(isVoter(s.membership, s.config.id) ? [s.config.id] : [])
    for (const requester of s.readsQueued) s.reads.push({ requester, index: s.log.committed, seq: s.readSeq, acks })
    s.readsQueued = []
  }
  broadcastHeartbeat(step, s.readSeq)
  return s.readSeq
}

/** Heartbeat rounds with reads waiting for their quorum (the reads are in round order). */
function readRoundsInflight(s: RaftState): number {
  let rounds = 0
  let seq = -1
  for (const read of s.reads) {
    if (read.seq !== seq) rounds++
    seq = read.seq
  }
  return rounds
}

/** Starts a round for the queued reads if one more may be in flight (else the next answered
 * round or the next tick's heartbeat takes them). */
function roundForQueuedReads(step: Step): void {
  const s = step.s
  if (s.readsQueued.length > 0 && readRoundsInflight(s) < s.config.readRoundsInflightMax) heartbeatRound(step)
}

function broadcastHeartbeat(step: Step, context: number): void {
  const s = step.s
  const lease = leaseHolds(s)
  for (const [to, pr] of s.progress) {
    const beat = { _tag: "Heartbeat", from: s.config.id, to, term: s.term, commit: Math.min(pr.match, s.log.committed), context } as const
    pr.commitSent = Math.max(pr.commitSent, beat.commit)
    send(step, lease ? { ...beat, leaderCommit: s.log.committed } : beat)
  }
}

// ---- client requests ----

export function propose(step: Step, proposals: ReadonlyArray<{ readonly id: RequestId; readonly data: Uint8Array }>): void {
  const s = step.s
  let appended = 0
  for (const proposal of proposals) {
    if (s.transferee !== null) {
      reject(step, proposal.id, "transferring", `leadership is moving to ${s.transferee}`)
      continue
    }
    const index = lastIndex(s.log) + 1
    const entry = { kind: "command", term: s.term, index, data: proposal.data } as const
    const size = entrySizeBytes(entry)
    if (s.uncommittedBytes > 0 && s.uncommittedBytes + size > s.config.uncommittedBytesMax) {
      reject(step, proposal.id, "overloaded", `${s.uncommittedBytes} bytes await commit`)
      continue
    }
    appendEntry(step, entry)
    emit(step, { _tag: "Accepted", id: proposal.id, index, term: s.term })
    appended++
  }
  if (appended > 0) broadcastAppend(step, false)
}

export function changeMembership(step: Step, id: RequestId, change: MembershipChange): void {
  const s = step.s
  if (s.transferee !== null) return reject(step, id, "transferring", `leadership is moving to ${s.transferee}`)
  if (s.membershipIndex > s.log.committed) return reject(step, id, "config-pending", "a configuration change is in progress")
  if (termAt(s.log, s.log.committed) !== s.term) {
    return reject(step, id, "config-pending", "the leader has not committed an entry of its term yet")
  }
  const next = applyChange(s.membership, change)
  if (typeof next === "string") return reject(step, id, "invalid", next)
  const index = lastIndex(s.log) + 1
  appendEntry(step, { kind: "config", term: s.term, index, config: next })
  emit(step, { _tag: "Accepted", id, index, term: s.term })
  // Track exactly the members that now receive the log.
  for (const member of next.members) {
    if (member.id !== s.config.id && isReplicated(member) && !s.progress.has(member.id)) {
      s.progress.set(member.id, makeProgress(index))
    }
  }
  for (const peer of [...s.progress.keys()]) {
    const member = next.members.find((m) => m.id === peer)
    if (member === undefined || !isReplicated(member)) s.progress.delete(peer)
  }
  if (s.transferee !== null && !s.progress.has(s.transferee)) s.transferee = null
  broadcastAppend(step, false)
}

export function readIndex(step: Step, requesters: ReadonlyArray<ReadRequester>, lease: boolean): void {
  const s = step.s
  if (lease && leaseHolds(s)) {
    // No other leader can exist yet: the commit index is the read index, no round needed.
    for (const requester of requesters) readReady(step, requester, s.log.committed)
    return
  }
  if (termAt(s.log, s.log.committed) !== s.term) {
    // Until an entry of this term commits, the leader's commit index may be stale.
    for (const requester of requesters) {
      if (s.readsWaitingForCommit.length >= s.config.readsPendingMax) refuseRead(step, requester, "overloaded", "too many reads waiting")
      else s.readsWaitingForCommit.push(requester)
    }
    return
  }
  serveReads(step, requesters)
}

/** A read's index is known: this node's driver serves it once applied, or the follower that
 * asked serves it from its own copy once it has applied that far. */
function readReady(step: Step, requester: ReadRequester, index: LogIndex): void {
  if (requester._tag === "Local") {
    emit(step, { _tag: "ReadReady", id: requester.id, index })
    return
  }
  const s = step.s
  const indexTerm = termAt(s.log, index)
  send(step, { _tag: "ReadIndexResponse", from: s.config.id, to: requester.from, term: s.term, context: requester.context, index, refused: null, ...(indexTerm !== undefined ? { indexTerm } : {}) })
}

export function refuseRead(step: Step, requester: ReadRequester, reason: "not-leader" | "overloaded", detail: string): void {
  const s = step.s
  if (requester._tag === "Local") {
    reject(step, requester.id, reason, detail)
    return
  }
  send(step, { _tag: "ReadIndexResponse", from: s.config.id, to: requester.from, term: s.term, context: requester.context, index: 0, refused: reason })
}

function serveReads(step: Step, requesters: ReadonlyArray<ReadRequester>): void {
  const s = step.s
  const index = s.log.committed
  const voterIds = voters(s.membership)
  if (voterIds.length === 1 && voterIds[0] === s.config.id) {
    for (const requester of requesters) readReady(step, requester, index)
    return
  }
  const last = s.reads[s.reads.length - 1]
  for (const requester of requesters) {
    if (s.reads.length + s.readsQueued.length >= s.config.readsPendingMax) refuseRead(step, requester, "overloaded", "too many reads waiting")
    else if (s.config.bugs?.readJoinsInflightRound === true && last !== undefined) s.reads.push({ ...last, requester })
    else s.readsQueued.push(requester)
  }
  roundForQueuedReads(step)
}

function acknowledgeReads(step: Step, from: NodeId, context: number): void {
  const s = step.s
  for (const read of s.reads) {
    if (read.seq > context) break
    read.acks.add(from)
  }
  const needed = quorumSize(voters(s.membership).length)
  let served = 0
  while (served < s.reads.length) {
    const read = s.reads[served]
    if (read === undefined || read.acks.size < needed) break
    readReady(step, read.requester, read.index)
    served++
  }
  if (served === 0) return
  s.reads = s.reads.slice(served)
  roundForQueuedReads(step)
}

export function transferLeadership(step: Step, id: RequestId, to: NodeId | null): void {
  const s = step.s
  const target = to ?? mostCaughtUpVoter(step)
  if (target === null || target === s.config.id || !isVoter(s.membership, target) || !s.progress.has(target)) {
    return reject(step, id, "invalid", `no voter ${target ?? "available"} to transfer leadership to`)
  }
  s.transferee = target
  s.electionElapsed = 0 // the transfer is abandoned after one election timeout
  const pr = s.progress.get(target)
  if (pr !== undefined && pr.match === lastIndex(s.log)) sendTimeoutNow(step, target)
  else replicateTo(step, target, true)
}

function mostCaughtUpVoter(step: Step): NodeId | null {
  const s = step.s
  let best: NodeId | null = null
  let bestMatch = -1
  for (const id of voters(s.membership)) {
    const match = s.progress.get(id)?.match
    if (id !== s.config.id && match !== undefined && match > bestMatch) {
      best = id
      bestMatch = match
    }
  }
  return best
}

function sendTimeoutNow(step: Step, to: NodeId): void {
  // The transferee's election skips the voters' lease: ours is over for this term (even if the
  // transfer is later abandoned, this TimeoutNow may still arrive).
  step.s.leaseRevoked = true
  send(step, { _tag: "TimeoutNow", from: step.s.config.id, to, term: step.s.term })
}
