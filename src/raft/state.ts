// The core's state, its inputs and its outputs (a Ready), plus the small helpers every role uses.
// The state is owned by whoever drives it: `step` updates it in place and returns it, so a driver
// never holds two versions (copy with structuredClone to keep one).
import type { RaftConfig } from "./config.ts"
import type { RaftLog } from "./log.ts"
import { lastIndex } from "./log.ts"
import type { MembershipChange } from "./membership.ts"
import type { Message, RequestVote } from "./messages.ts"
import type { Progress } from "./progress.ts"
import type { Entry, HardState, LogIndex, Membership, NodeId, SnapshotMeta, Term } from "./types.ts"

export type RaftRole = "follower" | "preCandidate" | "candidate" | "leader"

/** Ids of proposals, reads, membership changes and transfers are the driver's; the core echoes
 * them in events. */
export type RequestId = number

export type Input =
  /** One unit of time passed. */
  | { readonly _tag: "Tick" }
  /** `lease`: the driver's clock confirms the leader's lease right now (as for ReadIndex), so a
   * follower's ReadIndexRequest may be answered without a heartbeat round. */
  | { readonly _tag: "Message"; readonly message: Message; readonly lease?: boolean }
  /** Client commands, appended as one batch (one AppendEntries per follower). */
  | { readonly _tag: "Propose"; readonly proposals: ReadonlyArray<{ readonly id: RequestId; readonly data: Uint8Array }> }
  | { readonly _tag: "ChangeMembership"; readonly id: RequestId; readonly change: MembershipChange }
  /** Linearizable reads: each id gets a ReadReady with the index the state machine must reach.
   * In lease mode a leader whose lease holds answers at once; `lease: false` says the driver's
   * clock disagrees (its ticks ran late), so a heartbeat round confirms leadership instead. */
  | { readonly _tag: "ReadIndex"; readonly ids: ReadonlyArray<RequestId>; readonly lease?: boolean }
  /** Hand leadership to `to` (or to the most caught-up voter). */
  | { readonly _tag: "TransferLeadership"; readonly id: RequestId; readonly to: NodeId | null }
  /** Start an election now (pre-vote first when enabled). */
  | { readonly _tag: "Campaign" }
  /** Log entries up to `index` (whose entry has `term`) are durable. */
  | { readonly _tag: "Persisted"; readonly index: LogIndex; readonly term: Term }
  /** A snapshot of the state machine at meta.index is durable; the log below it may go.
   * `keepFrom`: the state machine's own durable state needs the entries from here on to catch
   * up at a restart without reading the snapshot (a leader's database file lags to its last
   * checkpoint); compaction stops before it, down to `snapshotKeepForReplayEntriesMax` below. */
  | { readonly _tag: "SnapshotTaken"; readonly meta: SnapshotMeta; readonly keepFrom?: LogIndex }
  /** The answer to a Ready's `loads` request `seq`: the entries read back from the log store,
   * contiguous from the request's `lo` (fewer, or none, when the read failed). */
  | { readonly _tag: "EntriesLoaded"; readonly seq: number; readonly entries: ReadonlyArray<Entry> }
  /** The state machine has applied (or restored a snapshot) up to `index`: entries handed to it
   * up to there no longer count against applyInflightBytesMax. */
  | { readonly _tag: "Applied"; readonly index: LogIndex }
  /** A leader tells each follower it owes the commit index (`commitOwed`) in an empty append:
   * the driver sends this a short, bounded delay after a commit that no append carried yet. */
  | { readonly _tag: "FlushCommit" }
  /** Nothing new; emit whatever committed entries are still waiting to be applied. */
  | { readonly _tag: "Drain" }

export type RejectReason = "not-leader" | "transferring" | "overloaded" | "config-pending" | "invalid"

export type RaftEvent =
  | { readonly _tag: "StateChanged"; readonly role: RaftRole; readonly term: Term; readonly leader: NodeId | null }
  | { readonly _tag: "Accepted"; readonly id: RequestId; readonly index: LogIndex; readonly term: Term }
  | { readonly _tag: "Rejected"; readonly id: RequestId; readonly reason: RejectReason; readonly leader: NodeId | null; readonly detail: string }
  | { readonly _tag: "ReadReady"; readonly id: RequestId; readonly index: LogIndex }
  | { readonly _tag: "TransferAborted"; readonly to: NodeId }

/** A request to read entries lo..hi (inclusive, all durable on this node) back from the log
 * store and step them in as EntriesLoaded with the same `seq`. */
export interface EntryLoad {
  readonly seq: number
  readonly lo: LogIndex
  readonly hi: LogIndex
}

/** What one step asks of the driver, in this order: persist (hard state, snapshot, truncation,
 * entries, compaction — one durable batch), send `messages` at any time (even before the batch
 * is durable: the leader's own appends), send `messagesAfterPersist` only once it is durable,
 * apply `committed` in order, and act on `events`; `loads` may be served at any time. */
export interface Ready {
  hardState: HardState | null
  snapshot: SnapshotMeta | null
  truncateFrom: LogIndex | null
  entries: Entry[]
  compactUpTo: { index: LogIndex; term: Term } | null
  messages: Message[]
  messagesAfterPersist: Message[]
  committed: Entry[]
  events: RaftEvent[]
  loads: EntryLoad[]
}

export function emptyReady(): Ready {
  return {
    hardState: null,
    snapshot: null,
    truncateFrom: null,
    entries: [],
    compactUpTo: null,
    messages: [],
    messagesAfterPersist: [],
    committed: [],
    events: [],
    loads: []
  }
}

/** Who asked a leader for a read index: its own driver (a request id), or a follower serving
 * reads from its own copy (the follower's context number). */
export type ReadRequester =
  | { readonly _tag: "Local"; readonly id: RequestId }
  | { readonly _tag: "Follower"; readonly from: NodeId; readonly context: number }

export interface PendingRead {
  readonly requester: ReadRequester
  readonly index: LogIndex
  readonly seq: number
  readonly acks: Set<NodeId>
}

export interface RaftState {
  readonly config: RaftConfig
  role: RaftRole
  term: Term
  vote: NodeId | null
  leader: NodeId | null
  log: RaftLog
  /** Latest durable snapshot (ours or installed from the leader). */
  snapshot: SnapshotMeta | null
  /** Configuration entries in the log above the snapshot, in index order. */
  configs: Array<{ readonly index: LogIndex; readonly config: Membership }>
  /** The configuration in effect: the last appended one. */
  membership: Membership
  membershipIndex: LogIndex
  electionElapsed: number
  heartbeatElapsed: number
  /** Ticks since this core started: the clock of leases (never reset, unlike the elapsed
   * counters). A node that has not yet ticked an election timeout since it started refuses
   * votes in lease mode: before a crash it may have acknowledged a leader whose lease still
   * counts on it. */
  ticks: number
  randomizedElectionTimeout: number
  /** State of the election-jitter generator (mulberry32). */
  rng: number
  votes: Map<NodeId, boolean>
  progress: Map<NodeId, Progress>
  transferee: NodeId | null
  uncommittedBytes: number
  /** Number of the latest heartbeat round (every broadcast has one; followers echo it). */
  readSeq: number
  /** On a leader: the tick at which each recent heartbeat round started, as the first round
   * number sent in that tick, oldest first; bounded to the rounds a lease can still use. */
  heartbeatRounds: Array<{ readonly seq: number; readonly tick: number }>
  /** On a leader: it sent TimeoutNow this term, so voters may skip their lease: no more lease
   * reads until it leads another term. */
  leaseRevoked: boolean
  reads: PendingRead[]
  readsWaitingForCommit: ReadRequester[]
  /** On a leader: reads waiting for the next heartbeat round (at most readRoundsInflightMax
   * rounds for reads are in flight; the next one, or the next tick's, takes them all). */
  readsQueued: ReadRequester[]
  /** On a follower: the read-index requests in flight (at most readRoundsInflightMax), by
   * context, with the reads each will serve and the ticks since it left. Rejected when the
   * follower's leader or term changes (they would never be answered). */
  forwardedReads: Array<{ readonly context: number; readonly ids: ReadonlyArray<RequestId>; elapsedTicks: number }>
  /** On a follower: reads that arrived while the in-flight requests were full; they all go in
   * the next request (never in one already sent: its answer may predate them). */
  readsToForward: RequestId[]
  /** Number of the follower's latest read-index request. */
  forwardSeq: number
  /** On a follower: the highest commit index its leader announced this term (appends and
   * heartbeats), and how many such announcements it has had (the driver notes the time when
   * this changes): a bounded-staleness read serves once applied that far, if the last one is
   * recent enough. Reset when the term changes. */
  leaderCommit: LogIndex
  leaderContacts: number
  /** Vote requests (pre-votes too) ignored only because this node had not yet ticked an election
   * timeout since it started: looked at again when that timeout has passed, as if they had
   * arrived then (a delay the protocol already allows), so a candidate of a whole-cluster
   * restart is answered at once instead of after its next election timeout. The newest one per
   * sender, so at most one per member. */
  deferredVotes: Array<RequestVote>
  /** Entries handed to the applier and not yet reported applied: one record per step that
   * handed some out (its last index and their bytes), and their total. */
  applyInflight: Array<{ readonly index: LogIndex; readonly bytes: number }>
  applyInflightBytes: number
  /** The one read-back of evicted entries in flight, and ticks since it was asked for. */
  entryLoad: { readonly seq: number; readonly lo: LogIndex; readonly hi: LogIndex; elapsedTicks: number } | null
  entryLoadSeq: number
  /** A read-back came back short: ask again only after the next tick (no busy loop on a store
   * that cannot answer for now). */
  entryLoadHeld: boolean
}

export interface StepResult {
  readonly state: RaftState
  readonly ready: Ready
}

/** A step's working context: the state and the Ready being filled. */
export interface Step {
  readonly s: RaftState
  readonly out: Ready
}

export function send(step: Step, message: Message): void {
  // The leader's replication traffic may leave before its own fsync (asynchronous persistence),
  // and read-index traffic promises nothing durable; nor does a heartbeat's answer (it claims no
  // log state; a term or vote it was sent in is made durable first by `finish`, which holds back
  // every message of such a step), so a read's heartbeat round never waits behind a follower's
  // fsync. Everything else answers for state that must be durable first.
  switch (message._tag) {
    case "AppendEntries":
    case "Heartbeat":
    case "HeartbeatResponse":
    case "InstallSnapshot":
    case "TimeoutNow":
    case "ReadIndexRequest":
    case "ReadIndexResponse":
      step.out.messages.push(message)
      return
    default:
      step.out.messagesAfterPersist.push(message)
  }
}

export function emit(step: Step, event: RaftEvent): void {
  step.out.events.push(event)
}

export function reject(step: Step, id: RequestId, reason: RejectReason, detail: string): void {
  emit(step, { _tag: "Rejected", id, reason, leader: step.s.leader, detail })
}

/** mulberry32: a tiny deterministic generator; its state is part of RaftState. */
export function nextRandom(s: RaftState): number {
  s.rng = (s.rng + 0x6d2b79f5) | 0
  let t = s.rng
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

export function resetRandomizedElectionTimeout(s: RaftState): void {
  s.randomizedElectionTimeout = s.config.electionTicks + Math.floor(nextRandom(s) * s.config.electionTicks)
}

/** The configuration in effect at `index`: the last config entry at or below it, else the
 * snapshot's. */
export function membershipAt(s: RaftState, index: LogIndex): { config: Membership; index: LogIndex } {
  for (let i = s.configs.length - 1; i >= 0; i--) {
    const c = s.configs[i]
    if (c !== undefined && c.index <= index) return c
  }
  return s.snapshot !== null ? { config: s.snapshot.config, index: s.snapshot.index } : { config: { members: [] }, index: 0 }
}

export function refreshMembership(s: RaftState): void {
  const current = membershipAt(s, lastIndex(s.log))
  s.membership = current.config
  s.membershipIndex = current.index
}
