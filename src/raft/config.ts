// Every bound of the Raft core in one place, validated at start. Times are in ticks: the driver
// turns Clock into Tick inputs, so the core never reads a clock.
import type { NodeId } from "./types.ts"

export interface RaftConfig {
  /** This node's id. */
  readonly id: NodeId
  /** Base election timeout; each node draws its timeout from [electionTicks, 2 × electionTicks). */
  readonly electionTicks: number
  /** A leader sends heartbeats this often; must be well below electionTicks. */
  readonly heartbeatTicks: number
  /** Run a pre-vote round before a real election, so a node that was cut off cannot disrupt. */
  readonly preVote: boolean
  /** A leader that has not heard from a quorum within an election timeout steps down; followers
   * that heard from a leader within an election timeout ignore vote requests. */
  readonly checkQuorum: boolean
  /** Most entries carried by one AppendEntries. */
  readonly appendEntriesMax: number
  /** Most payload bytes carried by one AppendEntries (one entry may exceed it alone). */
  readonly appendBytesMax: number
  /** Most AppendEntries in flight (unacknowledged) to one follower while pipelining. */
  readonly inflightAppendsMax: number
  /** Most bytes in flight to one follower while pipelining. */
  readonly inflightBytesMax: number
  /** A leader refuses proposals (Overloaded: the proposer backs off and tries again) while this
   * many bytes are appended but not committed. It bounds what a leader holds of entries waiting
   * for its log writer's fsync and for a quorum (the cache keeps every entry not yet durable);
   * on a follower the same is bounded by the leader's inflightBytesMax. */
  readonly uncommittedBytesMax: number
  /** How a leader confirms a linearizable read. "lease": at once while its check-quorum lease
   * holds (a quorum of voters acknowledged a heartbeat sent less than electionTicks −
   * leaseDriftTicks ago, and an entry of its term is committed), else by a heartbeat round.
   * "readIndex": always a heartbeat round (strict: safe whatever the clocks do). */
  readonly readMode: ReadMode
  /** Ticks a lease leaves unused out of the election timeout, for clock drift between nodes:
   * the lease lasts electionTicks − leaseDriftTicks of the leader's ticks, while a follower
   * refuses votes for electionTicks of its own. At least 1 (a tick's own granularity), below
   * electionTicks. */
  readonly leaseDriftTicks: number
  /** Most ReadIndex requests waiting for a quorum round at a time (on a follower: waiting for
   * the leader's read index). */
  readonly readsPendingMax: number
  /** Most read rounds in flight at a time: on a follower, ReadIndexRequests sent and not yet
   * answered; on a leader without its lease, heartbeat rounds started for reads and not yet
   * confirmed by a quorum. Reads arriving meanwhile wait and all go in the next round, sent
   * when one is answered (etcd's read loop, with 1): one round trip serves any number of reads,
   * instead of one per batch of reads. */
  readonly readRoundsInflightMax: number
  /** Ticks after which a follower's unanswered ReadIndexRequest stops counting against
   * readRoundsInflightMax, so one lost message (or a slow round trip) does not hold back every
   * later read: the reads waiting leave in a new request. The old one's reads still wait for
   * its answer, up to electionTicks, then fail with not-leader. */
  readonly readIndexTimeoutTicks: number
  /** A follower (or standby) serves linearizable reads from its own copy: it asks the leader
   * for a read index and serves once it has applied that far. Off: it refuses reads with
   * not-leader, naming the leader (dqlite's behaviour). */
  readonly followerReads: boolean
  /** Most committed entries handed to the applier in one step. */
  readonly applyEntriesMax: number
  /** Most bytes of entries handed to the applier and not yet reported applied (Applied input):
   * a slow state machine holds back the hand-out instead of piling entries up in the driver (at
   * least one step's worth is always handed out when nothing is outstanding). */
  readonly applyInflightBytesMax: number
  /** Ticks to wait for an InstallSnapshot answer before offering the snapshot again. */
  readonly snapshotRetryTicks: number
  /** Entries kept below a snapshot when compacting, so a follower slightly behind still gets
   * entries rather than a whole snapshot. */
  readonly snapshotTrailingEntries: number
  /** Most entries kept below a snapshot (beyond `snapshotTrailingEntries`) because the state
   * machine's files still need them (SnapshotTaken's `keepFrom`: a leader's database file lags
   * to its last checkpoint), so that a restart replays them instead of reading the whole
   * snapshot (issue 17: 1–3.9 s at 300 MB). A file that lags further (checkpoints held back for
   * long) costs that restart the snapshot. 0: never keep more. */
  readonly snapshotKeepForReplayEntriesMax: number
  /** Most bytes of command data the core keeps in memory (the entry cache: the newest durable
   * entries plus every entry not yet durable). Older entries keep only their term and index and
   * are read back from the log store when a follower or the applier needs them. */
  readonly entryCacheBytesMax: number
  /** Most bytes of entries asked of the log store in one read-back (at least one entry). */
  readonly entryLoadBytesMax: number
  /** Ticks to wait for a read-back before asking again (the answer may have been lost). */
  readonly entryLoadTimeoutTicks: number
  /** Seed of the election-jitter generator (the core's only randomness, kept as data). */
  readonly seed: number
  /** A new commit index rides the next append or heartbeat to each follower instead of an empty
   * append to every follower at once; a follower still owed it after the driver's delay
   * (raftActor.commitFlushMs: the FlushCommit input) or at the next tick gets the empty append
   * then (issue 12: one message, read, decode and answer less per follower and entry). On in
   * `defaultRaftConfig`; absent means off (the eager broadcast). It hides no bug from the
   * simulators: the two mutation tests it once moved out of their seed windows fire their bug as
   * often either way and are caught on both settings (docs/performance.md, "Carrying the commit
   * index: why two mutation tests stopped catching"). */
  readonly carryCommit?: boolean
  /** Deliberate bugs, for proving that the simulator's checkers catch them. Never set outside
   * tests. */
  readonly bugs?: RaftBugs
}

export type ReadMode = "lease" | "readIndex"

export interface RaftBugs {
  /** Commit by counting replicas of an entry from an earlier term (Raft paper, figure 8). */
  readonly commitOldTerm?: boolean
  /** Grant a vote to every up-to-date candidate, even after voting for another in the term. */
  readonly doubleVote?: boolean
  /** Keep the read lease for five election timeouts instead of less than one, and keep leading
   * while it holds (check-quorum trusts it). */
  readonly leaseTooLong?: boolean
  /** A follower serves a read at the commit index it knows instead of the leader's read index
   * (what a "local" read may do, but not a linearizable one). */
  readonly followerReadsLocal?: boolean
  /** (Driver) A session read runs at once, without waiting for its session index. */
  readonly sessionReadsAtOnce?: boolean
  /** (Driver) A bounded read ignores how long ago the leader was heard from. */
  readonly boundedIgnoresLag?: boolean
  /** A read that arrives while a read round is in flight joins that round and is answered with
   * its index, although the round left before the read arrived (not linearizable: a write
   * acknowledged in between may be missed). */
  readonly readJoinsInflightRound?: boolean
  /** Answer vote requests deferred by the start-up window on the next tick, inside the window
   * (as if the window did not exist for them). */
  readonly deferredVotesEarly?: boolean
}

/** 32 MiB: a node holds the newest 32 MiB of entries, which covers every follower that is less
 * than that behind (at 1 MiB per AppendEntries, 32 round trips) and the applier's backlog in
 * normal operation, so read-backs happen only for a follower far behind or a stalled applier.
 * It equals the default inflightBytesMax (32 MiB), so a pipelined follower's window of entries
 * is in memory, and it holds one largest entry (a 30 MiB transaction: src/limits.ts checks it).
 * 64 MiB before: measured at 0.25 GiB of 20 MiB transactions (docs/performance.md, issue 17),
 * the leader's live ArrayBuffers peaked at 172 MB with it, most of the 300 MB node budget. */
export const entryCacheBytesMaxDefault = 32 * 1024 * 1024

export const defaultRaftConfig = (id: NodeId, seed = id): RaftConfig => ({
  id,
  electionTicks: 10,
  heartbeatTicks: 1,
  preVote: true,
  checkQuorum: true,
  readMode: "lease",
  leaseDriftTicks: 2,
  followerReads: true,
  appendEntriesMax: 256,
  appendBytesMax: 1024 * 1024,
  inflightAppendsMax: 64,
  inflightBytesMax: 32 * 1024 * 1024,
  // 64 MiB: two of the largest entries (a 30 MiB transaction, src/sqlite/limits.ts) fit, and a
  // node's entries not yet durable stay a fifth of the 300 MB node budget of issue 17 (256 MiB
  // before: most of it).
  uncommittedBytesMax: 64 * 1024 * 1024,
  readsPendingMax: 4096,
  readRoundsInflightMax: 1,
  readIndexTimeoutTicks: 3,
  applyEntriesMax: 1024,
  applyInflightBytesMax: entryCacheBytesMaxDefault,
  snapshotRetryTicks: 50,
  snapshotTrailingEntries: 64,
  // A leader checkpoints every 16 MiB of WAL (src/sqlite/limits.ts): that is 4,000 single-row
  // writes of one 4 KiB page each, a few MiB of log; this bound only caps a stuck checkpoint.
  snapshotKeepForReplayEntriesMax: 10_000,
  entryCacheBytesMax: entryCacheBytesMaxDefault,
  entryLoadBytesMax: 4 * 1024 * 1024,
  entryLoadTimeoutTicks: 50,
  carryCommit: true,
  seed
})

/** Thrown by `validateRaftConfig` (the core imports nothing, not even Effect, so it is a plain
 * Error; the literal `_tag` lets an Effect caller `catchTag` it like any tagged error). */
export class RaftConfigError extends Error {
  readonly _tag = "RaftConfigError" as const
  override readonly name = "RaftConfigError"
}

/** Throws a RaftConfigError naming the first bound that is out of range or inconsistent. */
export function validateRaftConfig(config: RaftConfig): RaftConfig {
  const positive: ReadonlyArray<keyof RaftConfig> = [
    "electionTicks",
    "heartbeatTicks",
    "appendEntriesMax",
    "appendBytesMax",
    "inflightAppendsMax",
    "inflightBytesMax",
    "uncommittedBytesMax",
    "readsPendingMax",
    "readRoundsInflightMax",
    "readIndexTimeoutTicks",
    "applyEntriesMax",
    "applyInflightBytesMax",
    "snapshotRetryTicks",
    "entryCacheBytesMax",
    "entryLoadBytesMax",
    "entryLoadTimeoutTicks"
  ]
  for (const key of positive) {
    const value = config[key]
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
      throw new RaftConfigError(`${key} must be a positive integer, got ${String(value)}`)
    }
  }
  if (!Number.isSafeInteger(config.id) || config.id <= 0) {
    throw new RaftConfigError(`id must be a positive integer, got ${config.id}`)
  }
  if (config.heartbeatTicks >= config.electionTicks) {
    throw new RaftConfigError("heartbeatTicks must be smaller than electionTicks")
  }
  if (config.readIndexTimeoutTicks >= config.electionTicks) {
    throw new RaftConfigError("readIndexTimeoutTicks must be smaller than electionTicks")
  }
  if (config.readMode !== "lease" && config.readMode !== "readIndex") {
    throw new RaftConfigError(`readMode must be "lease" or "readIndex", got ${String(config.readMode)}`)
  }
  if (!Number.isSafeInteger(config.leaseDriftTicks) || config.leaseDriftTicks < 1 || config.leaseDriftTicks >= config.electionTicks) {
    throw new RaftConfigError(`leaseDriftTicks must be an integer from 1 to electionTicks − 1, got ${String(config.leaseDriftTicks)}`)
  }
  if (typeof config.followerReads !== "boolean") throw new RaftConfigError(`followerReads must be true or false, got ${String(config.followerReads)}`)
  if (config.readMode === "lease" && !config.checkQuorum) {
    // The lease is safe only because followers that heard from the leader refuse votes, which is
    // check-quorum's rule (etcd's ReadOnlyLeaseBased requires CheckQuorum for the same reason).
    throw new RaftConfigError('readMode "lease" requires checkQuorum (use readMode "readIndex" without it)')
  }
  if (config.inflightBytesMax < config.appendBytesMax) {
    throw new RaftConfigError("inflightBytesMax must hold at least one full AppendEntries")
  }
  if (!Number.isSafeInteger(config.snapshotTrailingEntries) || config.snapshotTrailingEntries < 0) {
    throw new RaftConfigError("snapshotTrailingEntries must be a non-negative integer")
  }
  if (!Number.isSafeInteger(config.snapshotKeepForReplayEntriesMax) || config.snapshotKeepForReplayEntriesMax < 0) {
    throw new RaftConfigError("snapshotKeepForReplayEntriesMax must be a non-negative integer")
  }
  return config
}
