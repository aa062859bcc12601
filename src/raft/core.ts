// The Raft core: step(state, input) → { state, ready }. No I/O, no clock, no hidden randomness:
// time arrives as Tick inputs and election jitter comes from a seeded generator kept in the state.
// The term checks common to all roles live here; each role's handling lives in its own file.
import { assert, assertNever } from "../assert.ts"
import { campaign, handleVoteRequest, handleVoteResponse } from "./candidate.ts"
import type { RaftConfig } from "./config.ts"
import { validateRaftConfig } from "./config.ts"
import { forwardReads, handleAppendEntries, handleHeartbeat, handleInstallSnapshot, readIndexAnswered, tickForwardedReads } from "./follower.ts"
import {
  changeMembership,
  handleAppendResponse,
  handleHeartbeatResponse,
  handleSnapshotResponse,
  maybeCommit,
  propose,
  readIndex,
  refuseRead,
  tickLeader,
  transferLeadership,
  broadcastAppend,
  commitOwed,
  flushCommit
} from "./leader.ts"

export { commitOwed }
import { entriesLoaded, scheduleEntryLoad, tickEntryLoad } from "./entryCache.ts"
import { compactTo, entryAt, evict, lastIndex, makeLog, slotAt, termAt } from "./log.ts"
import { isVoter } from "./membership.ts"
import type { Message, RequestVote } from "./messages.ts"
import { becomeFollower } from "./roles.ts"
import type { Input, RaftState, Step, StepResult } from "./state.ts"
import type { Recovered, RecoveredBounded } from "./storage.ts"
import { emit, emptyReady, refreshMembership, reject, resetRandomizedElectionTimeout, send } from "./state.ts"
import type { LogIndex, Membership, SnapshotMeta, Term } from "./types.ts"
import { entrySizeBytes } from "./types.ts"


export const emptyRecovered: Recovered = {
  hardState: { term: 0, vote: null, commit: 0 },
  base: { index: 0, term: 0 },
  entries: [],
  snapshot: null
}

/** The first entry of a brand-new cluster, written to the log of each founding member. */
export function bootstrap(config: Membership): Recovered {
  return {
    hardState: { term: 1, vote: null, commit: 0 },
    base: { index: 0, term: 0 },
    entries: [{ kind: "config", term: 1, index: 1, config }],
    snapshot: null
  }
}

export function initialState(config: RaftConfig, recovered: RecoveredBounded): RaftState {
  validateRaftConfig(config)
  const snapshotIndex = recovered.snapshot?.index ?? 0
  assert(recovered.base.index <= snapshotIndex, "log compacted past the latest snapshot")
  const log = makeLog(recovered.base, recovered.entries, recovered.hardState.commit)
  log.applied = Math.max(snapshotIndex, log.base.index)
  log.committed = Math.max(log.committed, log.applied)
  // Everything recovered is durable: hold no more of it than the cache allows.
  evict(log, config.entryCacheBytesMax)
  assert(log.applied <= lastIndex(log) || log.entries.length === 0, "snapshot beyond the log")
  const state: RaftState = {
    config,
    role: "follower",
    term: recovered.hardState.term,
    vote: recovered.hardState.vote,
    leader: null,
    log,
    snapshot: recovered.snapshot,
    configs: recovered.entries.flatMap((e) =>
      e.kind === "config" && e.index > snapshotIndex ? [{ index: e.index, config: e.config }] : []
    ),
    membership: { members: [] },
    membershipIndex: 0,
    electionElapsed: 0,
    heartbeatElapsed: 0,
    ticks: 0,
    randomizedElectionTimeout: config.electionTicks,
    rng: config.seed | 0,
    votes: new Map(),
    progress: new Map(),
    transferee: null,
    uncommittedBytes: 0,
    readSeq: 0,
    heartbeatRounds: [],
    leaseRevoked: false,
    reads: [],
    readsWaitingForCommit: [],
    readsQueued: [],
    forwardedReads: [],
    readsToForward: [],
    forwardSeq: 0,
    leaderCommit: 0,
    leaderContacts: 0,
    deferredVotes: [],
    applyInflight: [],
    applyInflightBytes: 0,
    entryLoad: null,
    entryLoadSeq: 0,
    entryLoadHeld: false
  }
  refreshMembership(state)
  resetRandomizedElectionTimeout(state)
  return state
}

export function step(state: RaftState, input: Input): StepResult {
  const st: Step = { s: state, out: emptyReady() }
  const before = { role: state.role, term: state.term, vote: state.vote, leader: state.leader }
  dispatch(st, input)
  finish(st, before)
  return { state, ready: st.out }
}

function dispatch(st: Step, input: Input): void {
  const s = st.s
  switch (input._tag) {
    case "Tick":
      s.ticks++
      tickEntryLoad(st)
      if (s.deferredVotes.length > 0 && (s.ticks === s.config.electionTicks || s.config.bugs?.deferredVotesEarly === true)) answerDeferredVotes(st)
      if (s.role === "leader") tickLeader(st)
      else {
        tickForwardedReads(st)
        tickElection(st)
      }
      return
    case "Message":
      stepMessage(st, input.message, input.lease === true)
      return
    case "Propose":
      if (s.role !== "leader") for (const p of input.proposals) reject(st, p.id, "not-leader", "not the leader")
      else propose(st, input.proposals)
      return
    case "ChangeMembership":
      if (s.role !== "leader") reject(st, input.id, "not-leader", "not the leader")
      else changeMembership(st, input.id, input.change)
      return
    case "ReadIndex":
      if (s.role !== "leader") forwardReads(st, input.ids)
      else readIndex(st, input.ids.map((id) => ({ _tag: "Local", id })), input.lease !== false)
      return
    case "TransferLeadership":
      if (s.role !== "leader") reject(st, input.id, "not-leader", "not the leader")
      else transferLeadership(st, input.id, input.to)
      return
    case "Campaign":
      if (s.role !== "leader") campaign(st, s.config.preVote ? "pre" : "real", false)
      return
    case "Persisted":
      persisted(st, input.index, input.term)
      return
    case "SnapshotTaken":
      snapshotTaken(st, input.meta, input.keepFrom)
      return
    case "EntriesLoaded":
      entriesLoaded(st, input.seq, input.entries)
      return
    case "Applied":
      applied(s, input.index)
      return
    case "FlushCommit":
      if (s.role === "leader") flushCommit(st)
      return
    case "Drain":
      return
    default:
      assertNever(input)
  }
}

function tickElection(st: Step): void {
  const s = st.s
  s.electionElapsed++
  if (s.electionElapsed >= s.randomizedElectionTimeout && isVoter(s.membership, s.config.id)) {
    campaign(st, s.config.preVote ? "pre" : "real", false)
  }
}

/** Keeps a vote request refused only for the start-up rule, the newest per sender. */
function deferVote(s: RaftState, m: RequestVote): void {
  assert(s.ticks < s.config.electionTicks, "a vote is deferred only during the start-up window")
  s.deferredVotes = s.deferredVotes.filter((d) => d.from !== m.from)
  s.deferredVotes.push(m)
  // Senders outside the configuration are possible (a removed node): bounded all the same.
  if (s.deferredVotes.length > deferredVotesMax) s.deferredVotes.shift()
}

const deferredVotesMax = 16

/** The start-up window is over: the deferred requests are stepped as if they arrived now, so
 * every rule (terms, a leader heard meanwhile, log freshness, one vote per term) applies anew. */
function answerDeferredVotes(st: Step): void {
  const s = st.s
  const deferred = s.deferredVotes
  s.deferredVotes = []
  // The mutation: stepped inside the window as if it did not apply to them.
  const early = s.config.bugs?.deferredVotesEarly === true && s.ticks < s.config.electionTicks
  for (const m of deferred) stepMessage(st, m, false, early)
  assert(s.deferredVotes.length === 0, "nothing deferred after the start-up window")
}

/** Term checks common to every role (Raft §5.1, plus pre-vote and check-quorum leases). */
function stepMessage(st: Step, m: Message, lease = false, outsideStartWindow = false): void {
  const s = st.s
  if (m.to !== s.config.id) return
  if (m.term > s.term) {
    if (m._tag === "RequestVote") {
      // A follower that heard from a live leader within an election timeout ignores elections
      // (pre-votes and real ones), so a node rejoining with a higher term cannot depose a healthy
      // leader, and a leader's read lease stays valid. Only a transfer the leader asked for
      // (TimeoutNow, after which it stops serving lease reads) passes. In lease mode a node that
      // has not yet ticked an election timeout since it started refuses too: it may have
      // acknowledged a lease-holding leader just before it crashed.
      const heardLeader = s.leader !== null && s.electionElapsed < s.config.electionTicks
      const justStarted = s.config.readMode === "lease" && s.ticks < s.config.electionTicks && !outsideStartWindow
      const inLease = s.config.checkQuorum && (heardLeader || justStarted)
      if (inLease && !m.transfer) {
        if (!heardLeader) deferVote(s, m)
        return
      }
    }
    const preVoteTraffic = (m._tag === "RequestVote" && m.pre) || (m._tag === "RequestVoteResponse" && m.pre && m.granted)
    if (!preVoteTraffic) {
      // The transferee speaking in a newer term means the transfer worked: it is campaigning or
      // leading. Stepping down for it is not an abort, so no TransferAborted.
      if (m.from === s.transferee) s.transferee = null
      const fromLeader = m._tag === "AppendEntries" || m._tag === "Heartbeat" || m._tag === "InstallSnapshot"
      becomeFollower(st, m.term, fromLeader ? m.from : null)
    }
  } else if (m.term < s.term) {
    if ((s.config.checkQuorum || s.config.preVote) && (m._tag === "AppendEntries" || m._tag === "Heartbeat")) {
      // Tell a stale leader about the newer term so it steps down.
      send(st, { _tag: "AppendEntriesResponse", from: s.config.id, to: m.from, term: s.term, success: false, index: 0, hintIndex: 0, hintTerm: 0 })
    } else if (m._tag === "RequestVote" && m.pre) {
      send(st, { _tag: "RequestVoteResponse", from: s.config.id, to: m.from, term: s.term, pre: true, granted: false })
    } else if (m._tag === "ReadIndexRequest") {
      // The asker is behind: the newer term in the refusal moves it on, failing its reads fast.
      refuseRead(st, { _tag: "Follower", from: m.from, context: m.context }, "not-leader", "not the leader")
    }
    return
  }
  switch (m._tag) {
    case "RequestVote":
      handleVoteRequest(st, m)
      return
    case "RequestVoteResponse":
      handleVoteResponse(st, m)
      return
    case "AppendEntries":
    case "Heartbeat":
    case "InstallSnapshot":
      assert(s.role !== "leader", `two leaders in term ${s.term}: ${s.config.id} and ${m.from}`)
      if (s.role !== "follower") becomeFollower(st, s.term, m.from)
      if (m._tag === "AppendEntries") handleAppendEntries(st, m)
      else if (m._tag === "Heartbeat") handleHeartbeat(st, m)
      else handleInstallSnapshot(st, m)
      return
    case "AppendEntriesResponse":
      if (s.role === "leader") handleAppendResponse(st, m)
      return
    case "HeartbeatResponse":
      if (s.role === "leader") handleHeartbeatResponse(st, m)
      return
    case "InstallSnapshotResponse":
      if (s.role === "leader") handleSnapshotResponse(st, m)
      return
    case "TimeoutNow":
      if (s.role !== "leader") campaign(st, "real", true)
      return
    case "ReadIndexRequest": {
      const requester = { _tag: "Follower", from: m.from, context: m.context } as const
      if (s.role === "leader") readIndex(st, [requester], lease)
      else refuseRead(st, requester, "not-leader", "not the leader")
      return
    }
    case "ReadIndexResponse":
      readIndexAnswered(st, m)
      return
    default:
      assertNever(m)
  }
}

function persisted(st: Step, index: LogIndex, term: Term): void {
  const s = st.s
  // Entries written before a truncation no longer exist: only a matching term counts.
  if (index <= s.log.stable || index > lastIndex(s.log) || termAt(s.log, index) !== term) return
  s.log.stable = index
  if (s.role === "leader" && maybeCommit(st)) broadcastAppend(st, true)
}

function snapshotTaken(st: Step, meta: SnapshotMeta, keepFrom: LogIndex | undefined): void {
  const s = st.s
  assert(meta.index <= s.log.applied, `snapshot at ${meta.index} beyond applied ${s.log.applied}`)
  if (s.snapshot !== null && meta.index <= s.snapshot.index) return
  s.snapshot = meta
  s.configs = s.configs.filter((c) => c.index > meta.index)
  let keepBelow = meta.index - s.config.snapshotTrailingEntries
  // What the state machine's files need to restart from the log, within its bound.
  if (keepFrom !== undefined) keepBelow = Math.min(keepBelow, Math.max(keepFrom - 1, meta.index - s.config.snapshotKeepForReplayEntriesMax))
  const target = Math.max(s.log.base.index, keepBelow)
  if (target > s.log.base.index) {
    compactTo(s.log, target)
    st.out.compactUpTo = { ...s.log.base }
  }
}

/** Closes a step: hard state to persist, committed entries to apply, state-change event. */
function finish(st: Step, before: { role: string; term: Term; vote: number | null; leader: number | null }): void {
  const s = st.s
  const out = st.out
  if (s.term !== before.term || s.vote !== before.vote) {
    out.hardState = { term: s.term, vote: s.vote, commit: s.log.committed }
    // Nothing may leave the node before the new term or vote is durable.
    out.messagesAfterPersist = [...out.messages, ...out.messagesAfterPersist]
    out.messages = []
  }
  const applyTo = Math.min(s.log.committed, s.log.stable, s.log.applied + s.config.applyEntriesMax)
  let handedBytes = 0
  for (let i = s.log.applied + 1; i <= applyTo; i++) {
    // The applier has enough to do: hand out more once it reports progress.
    if (s.applyInflightBytes + handedBytes >= s.config.applyInflightBytesMax && (s.applyInflightBytes > 0 || handedBytes > 0)) break
    const entry = entryAt(s.log, i)
    if (entry === undefined) {
      // Evicted and not loaded in this step: the applier waits for the read-back.
      assert(slotAt(s.log, i)?.kind === "evicted", `committed entry ${i} missing`)
      break
    }
    assert(entry.index === i, `committed entry ${i} is at ${entry.index}`)
    out.committed.push(entry)
    handedBytes += entrySizeBytes(entry)
    s.log.applied = i
  }
  if (handedBytes > 0) {
    s.applyInflight.push({ index: s.log.applied, bytes: handedBytes })
    s.applyInflightBytes += handedBytes
  }
  // Read-back entries live for one step; then the cache goes back under its bound and whatever
  // still waits for evicted entries asks for them.
  s.log.loaded = null
  evict(s.log, s.config.entryCacheBytesMax)
  scheduleEntryLoad(st)
  if (s.role !== before.role || s.term !== before.term || s.leader !== before.leader) {
    emit(st, { _tag: "StateChanged", role: s.role, term: s.term, leader: s.leader })
  }
}

function applied(s: RaftState, index: LogIndex): void {
  while (s.applyInflight.length > 0 && s.applyInflight[0]!.index <= index) {
    s.applyInflightBytes -= s.applyInflight.shift()!.bytes
  }
  assert(s.applyInflightBytes >= 0, "apply bytes in flight below zero")
}

/** Committed entries are still waiting to be applied (call step with Drain). */
export function applyPending(state: RaftState): boolean {
  return Math.min(state.log.committed, state.log.stable) > state.log.applied
}

/** The metadata for a snapshot of the state machine at `index` (which must be applied). */
export function snapshotMetaAt(state: RaftState, index: LogIndex): SnapshotMeta {
  assert(index <= state.log.applied, "snapshot of an index not yet applied")
  const term = termAt(state.log, index)
  assert(term !== undefined, `term of ${index} unknown (compacted?)`)
  let config = state.snapshot?.config ?? { members: [] }
  for (const c of state.configs) if (c.index <= index) config = c.config
  return { index, term, config }
}
