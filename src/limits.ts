// Every bound of a node in one table, and the relations between bounds of different layers,
// checked once when a node starts (TigerBeetle's constants.zig, etcd's Config.validate).
//
// Each layer keeps its own bounds beside its code and checks the relations inside the layer when
// they are built: the Raft core (src/raft/config.ts: it imports nothing), the peer links
// (src/net/peers/limits.ts), the gateway (src/net/gateway/limits.ts), the SQL surface
// (src/sqlite/limits.ts) and the log (src/storage/LogStore.ts, SegmentLog.ts, format.ts). This
// table gathers them, names the numbers the node's wiring used to write inline (mailbox, batch,
// timeouts, page size), and checks what no single layer can see: that a bound of one layer
// leaves room for the largest thing another layer may produce. A violated relation refuses the
// start with `NodeBoundsInvalid`, which names the relation and both numbers.
import { Data, Effect } from "effect"
import type { GatewayLimits } from "./net/gateway/limits.ts"
import { gatewayLimitsDefault } from "./net/gateway/limits.ts"
import type { PeerLimits } from "./net/peers/limits.ts"
import { defaultPeerLimits } from "./net/peers/limits.ts"
import type { RaftConfig } from "./raft/config.ts"
import { defaultRaftConfig } from "./raft/config.ts"
import { entryHeaderBytes } from "./raft/types.ts"
import type { SqliteLimits } from "./sqlite/limits.ts"
import { defaultSqliteLimits, entryOverheadBytesMax, logRecordBytesMax as sqliteLogRecordBytesMax } from "./sqlite/limits.ts"
import { writeEntryHeaderBytes } from "./sqlite/writeEntry.ts"
import { messageBytesMaxLimit } from "./net/protocol/framing.ts"
import { recordPayloadBytesMax } from "./storage/format.ts"
import { persistBytesMax, persistEntriesMax } from "./storage/LogStore.ts"
import { segmentBytesMaxDefault } from "./storage/SegmentLog.ts"

/** The Raft actor's bounds, set by the node's wiring. */
export interface RaftActorBounds {
  /** Messages waiting in the Raft actor's mailbox (proposals, reads, peer messages, persisted /
   * applied reports); a full mailbox suspends the sender (back-pressure inside the node). */
  readonly mailboxCapacity: number
  /** Messages the actor takes from its mailbox per step: one persist and one round of sends
   * cover them all (group commit falls out of it). */
  readonly batchMax: number
  /** A proposal or read waiting this long for Raft is failed with RequestTimeout. */
  readonly requestTimeoutMs: number
  /** Entries applied since the last snapshot before the node takes the next one. */
  readonly snapshotEveryEntries: number
  /** The driver's tick: Raft's election and heartbeat ticks are this many milliseconds. */
  readonly tickMs: number
  /** With the Raft option carryCommit: a leader's wait after a commit for a message that
   * carries it to the followers (the next append or a heartbeat) before an empty append does
   * (src/actors/RaftActor.ts). */
  readonly commitFlushMs: number
}

/** Bounds of what crosses the dqlite wire beyond one request (src/net/protocol). */
export interface WireBounds {
  /** The largest message a dqlite header can announce: 8 + 8 × (2^32 − 1) bytes. The only bound
   * on a DUMP's size besides the disk: the leader streams the image and `tqlite dump` streams it
   * to its file (src/net/protocol/filesStream.ts), neither holds it whole. */
  readonly messageBytesMaxLimit: number
}

/** The log's bounds (src/storage). */
export interface LogBounds {
  /** Bytes (as `entrySizeBytes` counts them) of one persist call, written as one record. */
  readonly persistBytesMax: number
  readonly persistEntriesMax: number
  /** Size at which a segment is closed (a larger record gets a segment of its own). */
  readonly segmentBytesMax: number
  /** Largest record payload the record format admits (its length field's cap). */
  readonly recordPayloadBytesMax: number
}

export interface NodeBounds {
  readonly raft: Omit<RaftConfig, "id" | "seed" | "bugs">
  readonly raftActor: RaftActorBounds
  readonly log: LogBounds
  readonly peers: PeerLimits
  readonly gateway: GatewayLimits
  readonly sqlite: SqliteLimits
  readonly wire: WireBounds
}

const { id: _id, seed: _seed, ...raftDefaults } = defaultRaftConfig(1)

export const nodeBoundsDefault: NodeBounds = {
  raft: raftDefaults,
  raftActor: {
    // A mailbox of 4096 holds eight full batches: peers' bursts and a burst of client proposals
    // wait in it while the actor persists, without letting memory grow without bound.
    mailboxCapacity: 4096,
    // 512 messages per step: large enough that one fsync covers a whole burst of proposals,
    // small enough that a step (and so a heartbeat) is never long in coming.
    batchMax: 512,
    // Longer than an election (10–20 ticks of 50 ms) plus a commit round, so a leader change
    // does not time out what the new leader will answer.
    requestTimeoutMs: 10_000,
    snapshotEveryEntries: 10_000,
    // See src/node/Node.ts defaultTickMs: a leader's death is noticed after 0.5–1 s.
    tickMs: 50,
    // The next proposal usually follows a commit within ~1–3 ms at one or a few writers and
    // carries it; what a follower's own-copy read may lag by at most this much more.
    commitFlushMs: 5
  },
  log: { persistBytesMax, persistEntriesMax, segmentBytesMax: segmentBytesMaxDefault, recordPayloadBytesMax },
  peers: defaultPeerLimits,
  gateway: gatewayLimitsDefault,
  sqlite: defaultSqliteLimits,
  // No bound of ours on a dump's size (there was one, 1 GiB, `dumpBytesMax`, while `tqlite dump`
  // read the FILES answer whole): both ends stream it, the leader 256 KiB at a time (gateway
  // dumpChunkBytes), the client a socket read (≤ filesPieceBytesMax, 1 MiB) at a time.
  wire: { messageBytesMaxLimit }
}

/** Fixed bounds kept beside their code, listed here so this table is the whole picture. */
export { statementDescriptionsMax } from "./sqlite/ReplicatedDatabases.ts"
export { chunkOverheadBytes } from "./net/peers/limits.ts"
/** The largest piece of a streamed FILES body (DUMP's answer) a client hands its sink at once:
 * what a dump holds beyond its socket's buffer; within a client message (asserted there). */
export { filesPieceBytesMax } from "./net/protocol/filesStream.ts"
// Issue 17, what holds a node's event loop and its memory (docs/performance.md "Stalls and
// memory"):
// - a leader's checkpoint runs in a worker thread (src/sqlite/CheckpointWorker.ts): it waits
//   `checkpointBusyTimeoutMsDefault` (250 ms) for a pool reader before it reports busy (the
//   writer waits for it; after a busy one the writer core backs off until the reads that held it
//   have ended, trying without waiting per walCheckpointBytes of WAL meanwhile: a long query costs
//   one such wait, not one per entry), and a step-down that arrives in the middle of one blocks
//   at most `checkpointCloseWaitMsMax` (60 s: one WAL of walCheckpointBytes plus a transaction
//   copied on a failing disk; past it, a defect) for the worker's connection to close first;
// - a follower writes an entry of `largePayloadBytes` (1 MiB) or more on the thread pool, at
//   most `runPagesMax` (512) pages per write, the loop free in between;
// - a small log append that spent `slowSyncAppendMs` (20 ms) in write(2) was throttled by the
//   kernel's writeback: appends then go to the thread pool for `offLoopAfterSlowAppendMs` (5 s);
// - raft.entryCacheBytesMax is 32 MiB (src/raft/config.ts says why).
export { checkpointBusyTimeoutMsDefault, checkpointCloseWaitMsMax } from "./sqlite/LeaderDatabase.ts"
export { runPagesMax } from "./sqlite/PageApplier.ts"
export { largePayloadBytes } from "./runtime/yieldToLoop.ts"
export { offLoopAfterSlowAppendMs, slowSyncAppendMs } from "./storage/SegmentLog.ts"
/** Snapshot transfers (issue 17's join): read buffers a sending link reuses (chunkBuffersMax),
 * large frame buffers a receiving connection reuses (recycledFramesMax), and bytes of a received
 * image written between background fdatasyncs (receivedSyncBytes): fresh memory costs ~0.9 ms
 * per MiB on the dev VM, and one sync at the end of a 1 GiB image would wait for all of it. */
export { chunkBuffersMax } from "./net/peers/snapshots.ts"
export { recycledFramesMax } from "./net/peers/framing.ts"
export { receivedSyncBytes } from "./sqlite/receivedImages.ts"
/** Taking a snapshot (issue 17's write stalls): bytes written between background fdatasyncs,
 * one at a time, so a snapshot never has more than ~2× this dirty in the page cache (three
 * nodes with their whole snapshot dirty at once had the kernel throttle every write on the
 * machine, the log's small appends included). */
export { snapshotTakeSyncBytes } from "./storage/Snapshots.ts"
/** A snapshot copied while the applier goes on (a follower's too: it used to wait for the whole
 * copy, its mailbox filled and its Raft actor stopped acknowledging): a page the copy has not
 * reached is saved before the page applier overwrites it, into a side file on disk, never in
 * memory. Each page at most once, so the side file holds at most the image being copied (disk
 * use during a snapshot ≤ the database once more, only if every page is rewritten meanwhile); in
 * memory `copyOnWriteIndexBytesPerPage` (4) bytes per page of the image (1 MiB per GiB); saves
 * read and write at most `runPagesMax` pages at a time (src/sqlite/CopyOnWrite.ts). */
export { copyOnWriteIndexBytesPerPage } from "./sqlite/CopyOnWrite.ts"
/** A follower's applied pages are fdatasynced every defaultSyncEveryEntries (64, SqlNode.ts)
 * entries or every `syncEveryBytesDefault` (64 MiB) of entries applied, whichever first: 64
 * entries of 20 MiB left 1.3 GB dirty, whose writeback then throttled the log's small appends. */
export { syncEveryBytesDefault } from "./sqlite/SqliteMachine.ts"
/** Deleting a large file: its unlink runs on the thread pool (Disk.unlinkAsync: ~0.45 s per GiB
 * of blocks freed on the dev VM, on the loop a 2.5 s hold), a pruned snapshot's and a log
 * segment's. Segments a compaction made obsolete leave the log when it is durable and are
 * unlinked in the background, one at a time, never inside a persist; what a start finds left by
 * an earlier run (segments before the base, a snapshot half taken or received, WALs) is renamed
 * away and unlinked only once the node serves (src/storage/leftovers.ts). No bound to name: one
 * unlink at a time, nothing waits for it. */
/** A received snapshot's writes queued behind its receive loop, per file set (the store's file;
 * the images' files), each in a reused buffer of one chunk (1 MiB): the loop reads the socket
 * while the disk writes, and a joiner holds at most 2 × 4 MiB for it (src/storage/writeBehind.ts). */
export { writesInFlightMax } from "./storage/writeBehind.ts"

/** Bytes msgpackr adds around one entry of an AppendEntries beyond what `entrySizeBytes` counts
 * (field names, lengths, tags); generous. */
export const entryEncodingOverheadBytes = 64
/** Bytes an AppendEntries envelope adds around its entries (from, to, term, indexes); generous. */
export const envelopeOverheadBytes = 4096

/** The largest Raft entry the SQL surface proposes: a transaction's (or a group-commit batch's)
 * pages with the write entry's header and names, as the Raft core counts it. */
export function largestWriteEntryBytes(bounds: NodeBounds): number {
  return entryHeaderBytes + writeEntryHeaderBytes + entryOverheadBytesMax + bounds.sqlite.transactionBytesMax
}

/** The largest AppendEntries a leader sends, encoded: `slice` adds entries while they stay
 * within appendBytesMax, and always takes the first, so the entries weigh at most the larger of
 * appendBytesMax and one largest entry. */
export function largestAppendFrameBytes(bounds: NodeBounds): number {
  const entries = Math.max(bounds.raft.appendBytesMax, largestWriteEntryBytes(bounds))
  return entries + bounds.raft.appendEntriesMax * entryEncodingOverheadBytes + envelopeOverheadBytes
}

/** A relation between bounds that a node refuses to start without: `relation` names it,
 * `message` gives both sides' numbers and why the relation matters. */
export class NodeBoundsInvalid extends Data.TaggedError("NodeBoundsInvalid")<{ readonly relation: string; readonly message: string }> {}

interface Relation {
  readonly name: string
  /** Whether it weighs the SQL surface's bounds: a node without one (a bare Raft node, the
   * benchmarks) checks only the others. */
  readonly sql: boolean
  readonly holds: (bounds: NodeBounds) => boolean
  readonly explain: (bounds: NodeBounds) => string
}

const mib = (bytes: number) => `${(bytes / (1024 * 1024)).toFixed(2)} MiB`

/** Every cross-layer relation, each with why it must hold. */
export const relations: ReadonlyArray<Relation> = [
  {
    // The leader appends a transaction as one entry, persisted in one record: an entry larger
    // than a record could be committed by SQLite on the leader and never logged.
    name: "log record holds the largest write entry",
    sql: true,
    holds: (b) => largestWriteEntryBytes(b) <= b.log.persistBytesMax,
    explain: (b) =>
      `a transaction of up to sqlite.transactionBytesMax ${mib(b.sqlite.transactionBytesMax)} makes an entry of ${mib(largestWriteEntryBytes(b))}, more than the log's persistBytesMax ${mib(b.log.persistBytesMax)}: lower transactionBytesMax`
  },
  {
    // src/sqlite may not import src/storage, so it keeps its own copy of the record bound (its
    // proposal budget and its transaction check use it): the copy must be the log's number.
    name: "the SQL surface's copy of the record bound is the log's",
    sql: true,
    holds: (b) => sqliteLogRecordBytesMax === b.log.persistBytesMax,
    explain: (b) => `src/sqlite/limits.ts logRecordBytesMax ${mib(sqliteLogRecordBytesMax)} differs from the log's persistBytesMax ${mib(b.log.persistBytesMax)}`
  },
  {
    // A persist call is one record: the record format's length field must admit it.
    name: "record format holds a persist",
    sql: false,
    holds: (b) => b.log.persistBytesMax <= b.log.recordPayloadBytesMax,
    explain: (b) => `persistBytesMax ${mib(b.log.persistBytesMax)} is more than a record's payload may be (${mib(b.log.recordPayloadBytesMax)})`
  },
  {
    // A peer link drops an envelope larger than a frame (it could never be delivered): an
    // AppendEntries above the frame bound would stop replication to that follower for good.
    name: "peer frame holds the largest AppendEntries",
    sql: true,
    holds: (b) => largestAppendFrameBytes(b) <= b.peers.frameBytesMax,
    explain: (b) =>
      `an AppendEntries may encode to ${mib(largestAppendFrameBytes(b))} (appendBytesMax ${mib(b.raft.appendBytesMax)} or one entry of ${mib(largestWriteEntryBytes(b))}), more than peers.frameBytesMax ${mib(b.peers.frameBytesMax)}`
  },
  {
    // A leader refuses proposals while this many bytes are uncommitted: below one largest entry,
    // the largest transaction would be refused as overloaded for ever.
    name: "uncommitted bound holds the largest write entry",
    sql: true,
    holds: (b) => largestWriteEntryBytes(b) <= b.raft.uncommittedBytesMax,
    explain: (b) => `raft.uncommittedBytesMax ${mib(b.raft.uncommittedBytesMax)} is less than one largest write entry (${mib(largestWriteEntryBytes(b))})`
  },
  {
    // A follower's pipeline holds this many bytes of entries in flight: below one largest
    // entry, that entry could only be sent into an empty pipeline (issue 17's 20 MiB entry).
    name: "in-flight window holds the largest write entry",
    sql: true,
    holds: (b) => largestWriteEntryBytes(b) <= b.raft.inflightBytesMax,
    explain: (b) => `raft.inflightBytesMax ${mib(b.raft.inflightBytesMax)} is less than one largest write entry (${mib(largestWriteEntryBytes(b))})`
  },
  {
    // Below one largest entry, it would be evicted as soon as durable and read back from the
    // log for every follower and the applier.
    name: "entry cache holds the largest write entry",
    sql: true,
    holds: (b) => largestWriteEntryBytes(b) <= b.raft.entryCacheBytesMax,
    explain: (b) => `raft.entryCacheBytesMax ${mib(b.raft.entryCacheBytesMax)} is less than one largest write entry (${mib(largestWriteEntryBytes(b))})`
  },
  {
    // Entries handed to the applier and not yet applied: one largest entry must fit.
    name: "apply in flight holds the largest write entry",
    sql: true,
    holds: (b) => largestWriteEntryBytes(b) <= b.raft.applyInflightBytesMax,
    explain: (b) => `raft.applyInflightBytesMax ${mib(b.raft.applyInflightBytesMax)} is less than one largest write entry (${mib(largestWriteEntryBytes(b))})`
  },
  {
    // A link's queue holds a follower's whole in-flight window and one more entry, so Raft's own
    // traffic to a peer that reads is never dropped there (only a peer that stopped reading
    // fills it, and the stall timeout reconnects).
    name: "peer link queue holds the in-flight window plus the largest write entry",
    sql: true,
    holds: (b) => b.raft.inflightBytesMax + largestWriteEntryBytes(b) <= b.peers.outboundBytesMax,
    explain: (b) =>
      `peers.outboundBytesMax ${mib(b.peers.outboundBytesMax)} is less than raft.inflightBytesMax ${mib(b.raft.inflightBytesMax)} plus one largest write entry (${mib(largestWriteEntryBytes(b))})`
  },
  {
    // A tick flushes an owed commit index anyway: a longer delay would never be waited.
    name: "commit flush within a tick",
    sql: false,
    holds: (b) => b.raftActor.commitFlushMs >= 0 && b.raftActor.commitFlushMs < b.raftActor.tickMs,
    explain: (b) => `raftActor.commitFlushMs ${b.raftActor.commitFlushMs} is not in [0, tickMs ${b.raftActor.tickMs})`
  },
  {
    // The actor drains at most batchMax messages per step from its mailbox.
    name: "Raft actor batch within its mailbox",
    sql: false,
    holds: (b) => b.raftActor.batchMax <= b.raftActor.mailboxCapacity,
    explain: (b) => `raftActor.batchMax ${b.raftActor.batchMax} is more than its mailboxCapacity ${b.raftActor.mailboxCapacity}`
  },
  {
    // A request must outlive the longest election (2 × electionTicks), or every leader change
    // fails requests the new leader would have answered.
    name: "request timeout outlives an election",
    sql: false,
    holds: (b) => b.raftActor.requestTimeoutMs > 2 * b.raft.electionTicks * b.raftActor.tickMs,
    explain: (b) => `raftActor.requestTimeoutMs ${b.raftActor.requestTimeoutMs} is not more than the longest election timeout (${2 * b.raft.electionTicks * b.raftActor.tickMs} ms)`
  },
  {
    // The SQL surface's commit wait is a backstop: Raft's own request timeout should answer
    // first, with the more precise error.
    name: "SQL commit wait outlasts Raft's request timeout",
    sql: true,
    holds: (b) => b.sqlite.commitTimeoutMs >= b.raftActor.requestTimeoutMs,
    explain: (b) => `sqlite.commitTimeoutMs ${b.sqlite.commitTimeoutMs} is less than raftActor.requestTimeoutMs ${b.raftActor.requestTimeoutMs}`
  },
  {
    // A session read gives up before Raft's request timeout, so its caller hears "session"
    // (read elsewhere or later) rather than a timeout.
    name: "session read wait within Raft's request timeout",
    sql: true,
    holds: (b) => b.sqlite.sessionWaitMs < b.raftActor.requestTimeoutMs,
    explain: (b) => `sqlite.sessionWaitMs ${b.sqlite.sessionWaitMs} is not less than raftActor.requestTimeoutMs ${b.raftActor.requestTimeoutMs}`
  }
]

/** Every relation the bounds break, in the table's order (without `sql`: those that do not
 * weigh the SQL surface's bounds). */
export function violatedRelations(bounds: NodeBounds, options: { readonly sql: boolean } = { sql: true }): ReadonlyArray<NodeBoundsInvalid> {
  return relations
    .filter((relation) => (options.sql || !relation.sql) && !relation.holds(bounds))
    .map((relation) => new NodeBoundsInvalid({ relation: relation.name, message: `bounds refused (${relation.name}): ${relation.explain(bounds)}` }))
}

export interface NodeBoundsOverrides {
  readonly raft?: Partial<NodeBounds["raft"]>
  readonly raftActor?: Partial<RaftActorBounds>
  readonly log?: Partial<LogBounds>
  readonly peers?: Partial<PeerLimits>
  readonly gateway?: Partial<GatewayLimits>
  readonly sqlite?: Partial<SqliteLimits>
  readonly wire?: Partial<WireBounds>
}

/** The defaults with `overrides` laid over them, each section replaced key by key. */
export function nodeBounds(overrides: NodeBoundsOverrides = {}): NodeBounds {
  const d = nodeBoundsDefault
  return {
    raft: { ...d.raft, ...overrides.raft },
    raftActor: { ...d.raftActor, ...overrides.raftActor },
    log: { ...d.log, ...overrides.log },
    peers: { ...d.peers, ...overrides.peers },
    gateway: { ...d.gateway, ...overrides.gateway },
    sqlite: { ...d.sqlite, ...overrides.sqlite },
    wire: { ...d.wire, ...overrides.wire }
  }
}

/** At a node's start: the bounds it will run with, or `NodeBoundsInvalid` naming the first
 * relation they break (nothing is opened before this). `sql: false` for a node without the SQL
 * surface. */
export const checkNodeBounds = (overrides: NodeBoundsOverrides = {}, options: { readonly sql: boolean } = { sql: true }): Effect.Effect<NodeBounds, NodeBoundsInvalid> =>
  Effect.suspend(() => {
    const bounds = nodeBounds(overrides)
    const violated = violatedRelations(bounds, options)[0]
    return violated === undefined ? Effect.succeed(bounds) : Effect.fail(violated)
  })
