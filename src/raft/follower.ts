// What a follower does with its leader's messages: append with the consistency check, truncate
// a conflicting suffix, follow the commit index, install snapshots. And reads served from the
// follower's own copy: it asks the leader for a read index (no data travels) and serves once it
// has applied that far (the driver waits for that, as for the leader's own reads).
import { assert } from "../assert.ts"
import { firstIndexOfTerm, lastIndex, matchTerm, restore, termAt, truncateFrom } from "./log.ts"
import { isReplicated } from "./membership.ts"
import type { AppendEntries, Heartbeat, InstallSnapshot, ReadIndexResponse } from "./messages.ts"
import { appendEntry } from "./roles.ts"
import type { RaftState, RequestId, Step } from "./state.ts"
import { emit, refreshMembership, reject, send } from "./state.ts"
import type { LogIndex } from "./types.ts"

/** The leader's commit index as of a heartbeat it sent under its lease: every write acknowledged
 * before that heartbeat left is at or below it. (Appends carry a commit index too, but a new
 * leader's may be stale, and a deposed one's is: only the lease vouches for it.) */
function heardLeader(s: RaftState, commit: LogIndex): void {
  s.leaderContacts++
  if (commit > s.leaderCommit) s.leaderCommit = commit
}

/** Reads asked of a node that does not lead: forwarded to the leader it follows in read-index
 * requests, at most `readRoundsInflightMax` in flight; reads arriving while they are full wait
 * and all go in the next request, sent once one is answered or timed out. A read is answered
 * only by a request sent after it arrived: the leader's index then covers every write
 * acknowledged before the read began. Refused without a known leader, on a spare (it holds no
 * data), and past `readsPendingMax` reads waiting. */
export function forwardReads(step: Step, ids: ReadonlyArray<RequestId>): void {
  const s = step.s
  const self = s.membership.members.find((m) => m.id === s.config.id)
  const refuse = (reason: "not-leader" | "overloaded", detail: string) => {
    for (const id of ids) reject(step, id, reason, detail)
  }
  if (!s.config.followerReads) return refuse("not-leader", "not the leader")
  if (s.role !== "follower" || s.leader === null || s.leader === s.config.id) return refuse("not-leader", "no leader known")
  if (self === undefined || !isReplicated(self)) return refuse("not-leader", "this node holds no copy of the data")
  if (forwardedWaiting(s) + ids.length > s.config.readsPendingMax) return refuse("overloaded", "too many reads waiting")
  if (s.config.bugs?.followerReadsLocal === true) {
    for (const id of ids) emit(step, { _tag: "ReadReady", id, index: s.log.committed })
    return
  }
  const inflight = s.forwardedReads[s.forwardedReads.length - 1]
  if (s.config.bugs?.readJoinsInflightRound === true && inflight !== undefined) {
    s.forwardedReads[s.forwardedReads.length - 1] = { ...inflight, ids: [...inflight.ids, ...ids] }
    return
  }
  for (const id of ids) s.readsToForward.push(id)
  forwardWaiting(step)
}

function forwardedWaiting(s: RaftState): number {
  let waiting = s.readsToForward.length
  for (const forwarded of s.forwardedReads) waiting += forwarded.ids.length
  return waiting
}

/** Sends the reads waiting as one request, if one more may be in flight (a request unanswered
 * for `readIndexTimeoutTicks` no longer counts: see tickForwardedReads). */
function forwardWaiting(step: Step): void {
  const s = step.s
  if (s.readsToForward.length === 0 || s.leader === null) return
  let inflight = 0
  for (const forwarded of s.forwardedReads) if (forwarded.elapsedTicks < s.config.readIndexTimeoutTicks) inflight++
  if (inflight >= s.config.readRoundsInflightMax) return
  s.forwardSeq++
  s.forwardedReads.push({ context: s.forwardSeq, ids: s.readsToForward, elapsedTicks: 0 })
  s.readsToForward = []
  send(step, { _tag: "ReadIndexRequest", from: s.config.id, to: s.leader, term: s.term, context: s.forwardSeq })
}

/** The leader's read index for one forwarded request (same term: the reads are still waiting,
 * since a term change rejected them). */
export function readIndexAnswered(step: Step, m: ReadIndexResponse): void {
  const s = step.s
  const at = s.forwardedReads.findIndex((f) => f.context === m.context)
  const forwarded = s.forwardedReads[at]
  if (forwarded === undefined) return
  s.forwardedReads.splice(at, 1)
  // The leader committed `index`; if our entry there has the leader's term, our log matches its
  // log up to it, so it is committed here too (the reads then wait only for it to be applied).
  if (m.refused === null && m.indexTerm !== undefined && m.index <= lastIndex(s.log) && termAt(s.log, m.index) === m.indexTerm) commitTo(step, m.index)
  for (const id of forwarded.ids) {
    if (m.refused === null) emit(step, { _tag: "ReadReady", id, index: m.index })
    else reject(step, id, m.refused, m.refused === "overloaded" ? "the leader has too many reads waiting" : "the leader it asked no longer leads")
  }
  forwardWaiting(step)
}

/** A tick on a follower. A request unanswered for `readIndexTimeoutTicks` stops holding back
 * the reads waiting (the message or its answer may be lost, or the round trip is just slow):
 * they leave in a new request now. Its own reads stay with it, since a late answer still serves
 * them (its index is as good as when it was sent); after an election timeout without one they
 * fail (not-leader: the caller asks again), so a lost request holds nothing forever. */
export function tickForwardedReads(step: Step): void {
  const s = step.s
  if (s.forwardedReads.length === 0) return
  let expired = false
  s.forwardedReads = s.forwardedReads.filter((forwarded) => {
    forwarded.elapsedTicks++
    if (forwarded.elapsedTicks === s.config.readIndexTimeoutTicks) expired = true
    if (forwarded.elapsedTicks < s.config.electionTicks) return true
    for (const id of forwarded.ids) reject(step, id, "not-leader", "the leader did not answer the read-index request")
    return false
  })
  if (expired) forwardWaiting(step)
}

/** The reads this node forwarded will not be answered (its term or leader changed). */
export function abandonForwardedReads(step: Step, detail: string): void {
  const s = step.s
  for (const forwarded of s.forwardedReads) {
    for (const id of forwarded.ids) reject(step, id, "not-leader", detail)
  }
  for (const id of s.readsToForward) reject(step, id, "not-leader", detail)
  s.forwardedReads = []
  s.readsToForward = []
}

export function handleAppendEntries(step: Step, m: AppendEntries): void {
  const s = step.s
  s.electionElapsed = 0
  s.leader = m.from
  const reply = (success: boolean, index: LogIndex, hintIndex = 0, hintTerm = 0) =>
    send(step, {
      _tag: "AppendEntriesResponse",
      from: s.config.id,
      to: m.from,
      term: s.term,
      success,
      index,
      hintIndex,
      hintTerm
    })
  if (m.prevIndex < s.log.committed) {
    // Everything up to commit already matches: say so, and the leader moves on from there.
    reply(true, s.log.committed)
    return
  }
  if (!matchTerm(s.log, m.prevIndex, m.prevTerm)) {
    const last = lastIndex(s.log)
    if (m.prevIndex > last) {
      reply(false, m.prevIndex, last + 1, 0)
    } else {
      const term = termAt(s.log, m.prevIndex)
      assert(term !== undefined, "prevIndex at or above commit is in the log")
      reply(false, m.prevIndex, firstIndexOfTerm(s.log, m.prevIndex, term), term)
    }
    return
  }
  let i = 0
  for (; i < m.entries.length; i++) {
    const entry = m.entries[i]
    if (entry === undefined || termAt(s.log, entry.index) !== entry.term) break
  }
  if (i < m.entries.length) {
    const first = m.entries[i]
    assert(first !== undefined, "conflict entry present")
    if (first.index <= lastIndex(s.log)) truncateSuffix(step, first.index)
    for (; i < m.entries.length; i++) {
      const entry = m.entries[i]
      if (entry !== undefined) appendEntry(step, entry)
    }
  }
  const lastNew = m.prevIndex + m.entries.length
  commitTo(step, Math.min(m.commit, lastNew))
  reply(true, lastNew)
}

export function handleHeartbeat(step: Step, m: Heartbeat): void {
  const s = step.s
  s.electionElapsed = 0
  s.leader = m.from
  if (m.leaderCommit !== undefined) heardLeader(s, m.leaderCommit)
  // The leader sends min(our match, its commit), which is always in our log.
  commitTo(step, Math.min(m.commit, lastIndex(s.log)))
  send(step, { _tag: "HeartbeatResponse", from: s.config.id, to: m.from, term: s.term, context: m.context })
}

export function handleInstallSnapshot(step: Step, m: InstallSnapshot): void {
  const s = step.s
  s.electionElapsed = 0
  s.leader = m.from
  const meta = m.meta
  const reply = (index: LogIndex) =>
    send(step, { _tag: "InstallSnapshotResponse", from: s.config.id, to: m.from, term: s.term, index })
  if (meta.index <= s.log.committed) {
    reply(s.log.committed)
    return
  }
  if (matchTerm(s.log, meta.index, meta.term)) {
    // We already hold the entries the snapshot covers: just follow the commit.
    commitTo(step, meta.index)
    reply(meta.index)
    return
  }
  assert(step.out.entries.length === 0 && step.out.truncateFrom === null, "snapshot restore mixed with appends in one step")
  restore(s.log, meta.index, meta.term)
  s.snapshot = meta
  s.configs = []
  refreshMembership(s)
  step.out.snapshot = meta
  reply(meta.index)
}

function commitTo(step: Step, index: LogIndex): void {
  if (index > step.s.log.committed) step.s.log.committed = index
}

function truncateSuffix(step: Step, index: LogIndex): void {
  const s = step.s
  assert(step.out.entries.length === 0, "truncation after appends in one step")
  truncateFrom(s.log, index)
  s.configs = s.configs.filter((c) => c.index < index)
  refreshMembership(s)
  step.out.truncateFrom = step.out.truncateFrom === null ? index : Math.min(step.out.truncateFrom, index)
}
