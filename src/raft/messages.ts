// Messages between Raft peers. Plain data: net/ encodes them with msgpackr, the simulator
// encodes them too so the two never drift apart.
import type { Entry, LogIndex, NodeId, SnapshotMeta, Term } from "./types.ts"

interface Header {
  readonly from: NodeId
  readonly to: NodeId
  readonly term: Term
}

export interface RequestVote extends Header {
  readonly _tag: "RequestVote"
  /** A pre-vote asks "would you vote for me at `term`?" without anyone changing state. */
  readonly pre: boolean
  readonly lastIndex: LogIndex
  readonly lastTerm: Term
  /** Set when a leadership transfer asked for this election: voters skip their leader lease. */
  readonly transfer: boolean
}

export interface RequestVoteResponse extends Header {
  readonly _tag: "RequestVoteResponse"
  readonly pre: boolean
  readonly granted: boolean
}

export interface AppendEntries extends Header {
  readonly _tag: "AppendEntries"
  readonly prevIndex: LogIndex
  readonly prevTerm: Term
  readonly entries: ReadonlyArray<Entry>
  readonly commit: LogIndex
}

export interface AppendEntriesResponse extends Header {
  readonly _tag: "AppendEntriesResponse"
  readonly success: boolean
  /** On success, the follower's log matches the leader's up to here. On failure, the
   * prevIndex that was rejected. */
  readonly index: LogIndex
  /** On failure: where the leader should look next (fast backtracking). hintTerm is the term of
   * the follower's entry at the rejected prevIndex (0 when its log is shorter) and hintIndex the
   * first index of that term in its log (or its last index + 1 when shorter). */
  readonly hintIndex: LogIndex
  readonly hintTerm: Term
}

export interface Heartbeat extends Header {
  readonly _tag: "Heartbeat"
  /** min(follower's match, leader's commit): always safe for the follower to commit. */
  readonly commit: LogIndex
  /** ReadIndex round this heartbeat confirms (0 when none). */
  readonly context: number
  /** The leader's own commit index, whatever the follower holds, sent only while the leader's
   * lease holds (no other leader can exist, so every write acknowledged so far is at or below
   * it): what a bounded-staleness read on the follower must have applied. Absent otherwise. */
  readonly leaderCommit?: LogIndex
}

export interface HeartbeatResponse extends Header {
  readonly _tag: "HeartbeatResponse"
  readonly context: number
}

/** The snapshot's data travels beside this message (the driver attaches it); the core only
 * decides, from the metadata, whether to install it. */
export interface InstallSnapshot extends Header {
  readonly _tag: "InstallSnapshot"
  readonly meta: SnapshotMeta
}

export interface InstallSnapshotResponse extends Header {
  readonly _tag: "InstallSnapshotResponse"
  /** The follower's log now matches the leader's up to here. */
  readonly index: LogIndex
}

/** A follower asks its leader for a read index on behalf of its own reads (`context` numbers
 * the request on the follower). */
export interface ReadIndexRequest extends Header {
  readonly _tag: "ReadIndexRequest"
  readonly context: number
}

/** The leader's answer: once the follower has applied `index`, it may serve the reads of
 * `context` from its own state. `refused`: why it gives no index (the addressee is not, or no
 * longer, the leader; or too many reads wait); `index` is then 0. */
export interface ReadIndexResponse extends Header {
  readonly _tag: "ReadIndexResponse"
  readonly context: number
  readonly index: LogIndex
  readonly refused: "not-leader" | "overloaded" | null
  /** The term of the leader's entry at `index` (absent when refused). A follower whose own entry
   * at `index` has this term holds the leader's log up to it (log matching), which the leader
   * has committed: it may commit that far at once instead of waiting for the next append or
   * heartbeat to say so — a read right after a write then waits for no tick. */
  readonly indexTerm?: Term
}

/** Leadership transfer: "start an election now, skipping pre-vote". */
export interface TimeoutNow extends Header {
  readonly _tag: "TimeoutNow"
}

export type Message =
  | RequestVote
  | RequestVoteResponse
  | AppendEntries
  | AppendEntriesResponse
  | Heartbeat
  | HeartbeatResponse
  | InstallSnapshot
  | InstallSnapshotResponse
  | TimeoutNow
  | ReadIndexRequest
  | ReadIndexResponse

/** A snapshot's data as the core's drivers pass it along: never the bytes themselves, only
 * what identifies them (the drivers' richer object reads them in chunks from a file:
 * src/actors/snapshotData.ts). */
export interface SnapshotData {
  readonly sizeBytes: number
  /** CRC32C of all the data. */
  readonly crc32c: number
}

/** What travels between peers: a Raft message, plus the snapshot's data beside an
 * InstallSnapshot (the core never holds snapshot data; the peer links stream it in chunks). */
export interface Envelope {
  readonly message: Message
  readonly snapshot: SnapshotData | null
}
