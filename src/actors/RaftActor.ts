// The Raft driver: one actor owns the core's state, feeds it ticks, peer messages and client
// requests (batched: every proposal in a mailbox batch becomes one Propose input), and carries
// out each Ready: replication traffic leaves at once, the durable part goes to the log writer
// (which releases votes and acknowledgements once fsynced), committed entries go to the applier.
// Feedback from the writer and the applier comes back through variables the Raft actor reads at
// its next batch plus a best-effort nudge, so no two actors ever wait on each other's full mailbox.
// Reads: while the leader's lease holds (src/raft/lease.ts) — in ticks and on this node's
// monotonic clock — and the applier has published everything committed, `read` runs the query at
// once in the caller's fiber, with no mailbox hop; otherwise it goes through the actor (ReadIndex,
// or the lease once the entries are applied) and the applier.
import type { Scope } from "effect"
import { Clock, Deferred, Duration, Effect, Exit, FiberId, PubSub, Stream } from "effect"
import { assert } from "../assert.ts"
import type { RaftConfig } from "../raft/config.ts"
import type { RecoveredBounded } from "../raft/storage.ts"
import { applyPending, commitOwed, initialState, snapshotMetaAt, step } from "../raft/core.ts"
import { leaseAnchor, leaseTicks, soleVoter } from "../raft/lease.ts"
import { lastIndex, lastTerm } from "../raft/log.ts"
import type { MembershipChange } from "../raft/membership.ts"
import type { ProgressState } from "../raft/progress.ts"
import type { Input, RaftRole, RaftState, Ready, RejectReason, RequestId } from "../raft/state.ts"
import type { Entry, LogIndex, Membership, NodeId, SnapshotMeta, Term } from "../raft/types.ts"
import * as Actor from "../runtime/Actor.ts"
import type { Applied, ApplierMessage, StateMachine } from "./Applier.ts"
import * as Applier from "./Applier.ts"
import type { DiskFullEpisode, DiskFullWatch } from "./DiskFullWatch.ts"
import * as DiskFullWatchModule from "./DiskFullWatch.ts"
import type { ActorFailed } from "../runtime/errors.ts"
import type { Envelope, Message } from "../raft/messages.ts"
import type { PersistBatch } from "../raft/storage.ts"
import * as LogWriter from "./LogWriter.ts"
import type { SnapshotSink, SnapshotSource } from "./snapshotData.ts"
import { SnapshotSkipped } from "./snapshotData.ts"
import type { RaftRequestError } from "./raftErrors.ts"
import type { Reply, ReplyCallback } from "./reply.ts"
import { complete, onceReply } from "./reply.ts"
import { ChangePending, InvalidRequest, RaftNotLeader, OutcomeUnknown, Overloaded, ProposalDropped, RaftReplicaStale, RaftRequestTimeout, StorageFull } from "./raftErrors.ts"
import * as Ticker from "../runtime/Ticker.ts"
import { trace, traceMessage } from "../runtime/trace.ts"

/** The node's I/O, provided by the wiring (real disk and TCP, or the simulator's). */
export interface RaftIo {
  readonly persist: (batches: ReadonlyArray<PersistBatch>) => Effect.Effect<void, unknown>
  /** After `persist` failed for a full disk: back to the last durable state, so the same batches
   * can be persisted again (LogStore `recover`). Absent: a failed persist stops the node. */
  readonly recover?: Effect.Effect<void, unknown>
  /** Stores the node's own snapshot `meta`, streamed by `produce` (the state machine). */
  readonly saveSnapshot: (meta: SnapshotMeta, produce: (sink: SnapshotSink) => Effect.Effect<void, unknown>) => Effect.Effect<void, unknown>
  /** A snapshot received whole (its file complete and durable in the store's incoming area)
   * becomes a snapshot of the store: done before the log batch that installs it is persisted. */
  readonly adoptSnapshot: (meta: SnapshotMeta) => Effect.Effect<void, unknown>
  /** A stored snapshot as a chunked source: what a peer link sends and the applier restores. */
  readonly snapshotSource: (meta: SnapshotMeta) => Effect.Effect<SnapshotSource, unknown>
  /** Reads durable log entries lo..hi back (LogStore `read`), for entries the core evicted from
   * its entry cache. Absent: the node must never evict (a read-back request is a defect). */
  readonly readEntries?: (lo: LogIndex, hi: LogIndex) => Effect.Effect<ReadonlyArray<Entry>, unknown>
  /** Hands a message to the peer link; never blocks for long (a full link drops: Raft retries). */
  readonly send: (envelope: Envelope) => Effect.Effect<void>
  /** `send` in plain code, where the transport can: true when done (written, queued or
   * dropped); false when only `send` can (then `send` is used for it and the messages after
   * it). Absent: every message goes through `send`. */
  readonly sendNow?: (envelope: Envelope) => boolean
}

export interface RaftNodeOptions<R, SM> {
  readonly config: RaftConfig
  readonly recovered: RecoveredBounded
  /** Already restored to `recovered.snapshot` (if any) by the caller. */
  readonly stateMachine: SM & StateMachine<R>
  readonly io: RaftIo
  readonly tickMs: number
  /** Take a snapshot after this many applied entries. */
  readonly snapshotEveryEntries: number
  readonly mailboxCapacity: number
  readonly batchMax: number
  readonly requestTimeoutMs: number
  /** With the Raft option carryCommit (else unused: nothing is ever owed): how long a leader
   * waits, after a commit that no append carried yet, for one that will (the
   * next proposal's, a heartbeat's) before telling the followers in an empty append
   * (FlushCommit). What a follower's own-copy reads may lag by that much more; reads through
   * the leader's read index do not (its answer commits the follower). Default
   * `defaultCommitFlushMs`; below tickMs (a tick flushes anyway). */
  readonly commitFlushMs?: number
  /** Where full-disk episodes are reported; shared with the state machine's writers (default: a
   * watch of the node's own). */
  readonly diskFull?: DiskFullWatch
}

/** How the node's own machinery is doing, beside its Raft status: what /health checks so it
 * never reports a node as serving while a part of it is dead, stuck or cannot write. */
export interface NodeCondition {
  /** Parts that cannot write for a full disk right now. */
  readonly diskFull: ReadonlyArray<DiskFullEpisode>
  /** Actors of the node that died past their restart budget ("log-writer: …"). */
  readonly stopped: ReadonlyArray<string>
  /** Clock ms of the last mailbox batch the Raft actor finished (a tick arrives every tickMs). */
  readonly raftActiveMs: number
  /** Clock ms when the applier last advanced or was last seen caught up with the commit index. */
  readonly applierActiveMs: number
  /** Set by the state machine's owner (SqlNode) when this node leads but cannot serve, e.g. its
   * SQLite cannot be opened, so it is handing leadership over; the Raft actor never sets it. */
  readonly cannotLead?: string | null
}

export interface NodeStatus {
  readonly id: NodeId
  readonly role: RaftRole
  readonly term: Term
  readonly leader: NodeId | null
  readonly commitIndex: LogIndex
  readonly appliedIndex: LogIndex
  /** What the state machine has applied (published after its batch's sync; a snapshot counts
   * once installed): `appliedIndex` counts what the core handed out, a snapshot from the moment
   * it was adopted. Absent where no applier reports it. */
  readonly machineAppliedIndex?: LogIndex
  readonly lastIndex: LogIndex
  readonly membership: Membership
  /** On a leader, what it knows of each member it replicates to (voters and standbys); empty
   * on any other node. */
  readonly peers: ReadonlyArray<PeerStatus>
}

/** A leader's view of one follower. */
export interface PeerStatus {
  readonly id: NodeId
  /** Highest log index known to match the leader's. */
  readonly matchIndex: LogIndex
  /** Time since the follower last answered the leader (counted in ticks, reported in ms). */
  readonly silentMs: number
  /** probe: finding where its log matches; replicate: streaming; snapshot: receiving one. */
  readonly replication: ProgressState
}

/** How fresh a read must be.
 * - `linearizable`: reflects every write acknowledged before the read began (the leader's lease
 *   or a ReadIndex round; on a follower, the leader's read index, then served from this copy).
 * - `session`: reflects everything up to `index` (the caller's last write): waits until this
 *   node has applied it.
 * - `bounded`: at most `maxLagMs` behind the leader, as of the last message this node processed
 *   from it (plus that message's time on the network); fails with RaftReplicaStale past it. On the
 *   leader: linearizable.
 * - `local`: whatever this node has applied, at once. */
export type ReadConsistency =
  | { readonly level: "linearizable" }
  | { readonly level: "session"; readonly index: LogIndex }
  | { readonly level: "bounded"; readonly maxLagMs: number }
  | { readonly level: "local" }

const linearizable: ReadConsistency = { level: "linearizable" }

/** States a slow `changes` subscriber may have waiting before the oldest is dropped. */
export const changesBufferMax = 16

export interface RaftNode<R, SM> {
  readonly id: NodeId
  /** Appends `data`; succeeds with the state machine's result once committed and applied. */
  readonly propose: (data: Uint8Array) => Effect.Effect<Applied<R>, RaftRequestError>
  /** `propose` without a waiting fiber: offers the proposal now and calls `onDone` once — from
   * the applier's turn once applied (no fiber resumption between the apply and the caller), or
   * from the Raft actor's turn or the request sweeper when it fails or times out. False, having
   * done nothing, when the mailbox is full or the node stopped (then use `propose`). `onDone`
   * must not throw. */
  readonly proposeNow: (data: Uint8Array, onDone: ReplyCallback<Applied<R>>) => boolean
  /** Runs `query` on this node's state machine once it is as fresh as `consistency` asks
   * (default linearizable: it reflects everything committed before the call — at once under the
   * leader's lease, else after a ReadIndex round, or on a follower at the leader's read index). */
  readonly read: <A>(query: (sm: SM) => A, consistency?: ReadConsistency) => Effect.Effect<A, RaftRequestError>
  /** A linearizable read's fast path, synchronous: runs `query` now and returns its value when
   * `read` would run it at once (the leader's lease holds and everything committed is applied);
   * otherwise runs nothing and returns undefined (then use `read`). */
  readonly readNow: <A>(query: (sm: SM) => A) => { readonly value: A } | undefined
  /** The index a linearizable read would wait for now (the leader's commit index, confirmed by
   * its lease or a ReadIndex round; on a follower, asked of the leader), without waiting for
   * this node to apply it: a session token covering every write acknowledged before the call. */
  readonly readIndex: Effect.Effect<LogIndex, RaftRequestError>
  readonly changeMembership: (change: MembershipChange) => Effect.Effect<LogIndex, RaftRequestError>
  readonly transferLeadership: (to: NodeId | null) => Effect.Effect<void, RaftRequestError>
  /** Inbound peer traffic; dropped when the mailbox is full (the sender retries). */
  readonly deliver: (envelope: Envelope) => Effect.Effect<void>
  /** The same in plain code (a transport's read callback). */
  readonly deliverNow: (envelope: Envelope) => void
  readonly status: Effect.Effect<NodeStatus>
  /** The same, read synchronously (hot paths). */
  readonly statusNow: () => NodeStatus
  /** The status now, then each time the role, term, leader or membership changes (not commit
   * progress: poll `status` for that). A subscriber that falls behind skips to the newer states
   * (each holds at most `changesBufferMax`), which is all a role watcher needs. */
  readonly changes: Stream.Stream<NodeStatus>
  readonly condition: Effect.Effect<NodeCondition>
  /** Where the node's parts report a full disk (the log writer, the applier, the SQL surface). */
  readonly diskFull: DiskFullWatch
  /** Fails as soon as any actor of the node has died past its restart budget (the Raft actor,
   * the log writer or the applier): the owner's cue to shut the node down on purpose. */
  readonly failed: Effect.Effect<never, ActorFailed>
}

type RaftMessage<R, SM> =
  | { readonly _tag: "Tick" }
  /** The commit flush delay has passed. */
  | { readonly _tag: "FlushCommit" }
  | { readonly _tag: "Nudge" }
  | { readonly _tag: "Inbound"; readonly envelope: Envelope }
  | { readonly _tag: "Propose"; readonly data: Uint8Array; readonly reply: Reply<Applied<R>> }
  | { readonly _tag: "Read"; readonly run: (sm: SM) => unknown; readonly reply: Deferred.Deferred<unknown, RaftRequestError> }
  | { readonly _tag: "ChangeMembership"; readonly change: MembershipChange; readonly reply: Deferred.Deferred<Applied<R>, RaftRequestError> }
  | { readonly _tag: "Transfer"; readonly to: NodeId | null; readonly reply: Deferred.Deferred<void, RaftRequestError> }

interface Proposal<R> {
  readonly reply: Reply<Applied<R>>
  index: LogIndex | null
  term: Term | null
}

interface DriverState<R, SM> {
  readonly core: RaftState
  nextId: RequestId
  readonly proposals: Map<RequestId, Proposal<R>>
  readonly byIndex: Map<LogIndex, RequestId>
  readonly reads: Map<RequestId, { readonly run: (sm: SM) => unknown; readonly reply: Deferred.Deferred<unknown, RaftRequestError> }>
  readonly transfers: Map<RequestId, Deferred.Deferred<void, RaftRequestError>>
  /** The snapshot that came (whole, in the store's incoming file) with the newest
   * InstallSnapshot, until the core decides on it. */
  received: SnapshotMeta | null
  persistedSeen: { readonly index: LogIndex; readonly term: Term } | null
  snapshotIndex: LogIndex
  snapshotInFlight: boolean
  /** Ticks to wait before asking for a snapshot again after one failed to save. */
  snapshotRetryTicks: number
  /** Ticks until a leader that cannot persist asks again to hand leadership over. */
  stepDownTicks: number
}

/** 5 ms (the bounds table's raftActor.commitFlushMs): at one or a few writers the next proposal
 * follows a commit within ~1–3 ms and carries it; a batch of 64 writers takes longer, and its
 * followers hear the commit at most this late. */
export const defaultCommitFlushMs = 5

/** A leader whose log cannot persist asks for a transfer at most this often (ticks). */
const stepDownRetryTicks = 10
/** After a snapshot failed to save (full disk), wait this many ticks before the next try. */
const snapshotRetryTicksAfterFailure = 20

export const make = <R, SM>(options: RaftNodeOptions<R, SM>): Effect.Effect<RaftNode<R, SM>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const id = options.config.id
    const core = initialState(options.config, options.recovered)
    // The lease, on this node's monotonic clock: the core says which tick's heartbeat round
    // anchors it, the driver remembers when each tick was stepped (no heartbeat of tick t left
    // before then), and the lease lasts leaseTicks × tickMs from there, however late ticks ran.
    const clock = yield* Effect.clock
    const monotonicMs = () => Number(clock.unsafeCurrentTimeNanos() / 1000n) / 1000
    const leaseTickCount = leaseTicks(options.config)
    const stampsSize = leaseTickCount + 2
    const stampTicks = new Array<number>(stampsSize).fill(-1)
    const stampMs = new Array<number>(stampsSize).fill(0)
    const stampTick = (tick: number, ms: number) => {
      stampTicks[tick % stampsSize] = tick
      stampMs[tick % stampsSize] = ms
    }
    stampTick(core.ticks, monotonicMs())
    /** The lease holds now, in ticks and in time. */
    const leaseHoldsNow = (): boolean => {
      const anchor = leaseAnchor(core)
      if (anchor === null || core.ticks - anchor >= leaseTickCount) return false
      if (soleVoter(core)) return true
      if (stampTicks[anchor % stampsSize] !== anchor) return false
      return monotonicMs() - (stampMs[anchor % stampsSize] ?? Infinity) < leaseTickCount * options.tickMs
    }
    // Feedback from the log writer and the applier, read by the Raft actor at its next batch,
    // and the status others read: plain variables (one JavaScript thread; each is replaced
    // whole, never mutated), not Refs, on a path every entry takes several times.
    let persistedLatest: { readonly index: LogIndex; readonly term: Term } | null = null
    // The newest answered read-back of evicted entries (the core asks for one at a time and
    // ignores any other sequence number, so the latest is all it needs).
    let loadedLatest: { readonly seq: number; readonly entries: ReadonlyArray<Entry> } | null = null
    // What the applier has applied, for the core's bound on entries handed to it.
    let appliedLatest: LogIndex = core.log.applied
    let appliedStepped: LogIndex = core.log.applied
    // A read-back found a record that is not the entry its index names: the Raft actor dies
    // with it at its next batch (the node stops rather than serve from a log it cannot trust).
    let readBackDefect: unknown = null
    const scope = yield* Effect.scope
    // When this follower last processed a message from its leader (monotonic ms), for bounded
    // reads; and reads sent straight to the applier (session, bounded), bounded like the core's.
    let contactTerm = core.term
    let contactCount = core.leaderContacts
    let leaderContactMs: number | null = null
    let directReads = 0
    let snapshotLatest: SnapshotMeta | null = null
    let snapshotFailed = false
    let status: NodeStatus = statusOf(core, options.tickMs)
    const changesHub = yield* PubSub.sliding<NodeStatus>(changesBufferMax)
    let published = status
    /** Publishes the status if what `changes` promises differs from the last one published. */
    const publishChange = (next: NodeStatus): Effect.Effect<void> => publishChangeNow(next) ?? Effect.void
    /** The same, null when nothing changed (the usual batch: no Effect). */
    const publishChangeNow = (next: NodeStatus): Effect.Effect<void> | null => {
      if (next.role === published.role && next.term === published.term && next.leader === published.leader && next.membership === published.membership) return null
      published = next
      return Effect.asVoid(PubSub.publish(changesHub, next))
    }
    const diskFull = options.diskFull ?? DiskFullWatchModule.make()
    const startedMs = yield* Clock.currentTimeMillis
    let raftActiveMs = startedMs
    let applierActiveMs = startedMs
    let appliedSeen = core.log.applied
    const stopped: string[] = []
    // Set once the Raft actor exists; the writer and applier only ever trySend to it.
    let nudge: Effect.Effect<void> = Effect.void
    let nudgeNow: () => void = () => {}
    // (Half a tick at most by default: tests run fast ticks.)
    const commitFlushMs = options.commitFlushMs ?? Math.min(defaultCommitFlushMs, options.tickMs / 2)
    assert(Number.isFinite(commitFlushMs) && commitFlushMs >= 0 && commitFlushMs < options.tickMs, `commitFlushMs ${commitFlushMs} is not in [0, tickMs ${options.tickMs})`)
    /** Opened when a commit is owed and no flush is due yet: one fiber sleeps the delay, then
     * sends FlushCommit (no fiber per commit). */
    const commitFlushDue = yield* Effect.makeLatch(false)
    let commitFlushScheduled = false

    const writer = yield* LogWriter.make({
      name: `raft-${id}/log-writer`,
      mailboxCapacity: options.mailboxCapacity,
      batchMax: options.batchMax,
      persist: options.io.persist,
      ...(options.io.recover !== undefined ? { recover: options.io.recover } : {}),
      diskFull,
      send: options.io.send,
      ...(options.io.sendNow !== undefined ? { sendNow: options.io.sendNow } : {}),
      // A follower's acknowledgements left with the write: the core needs the mark at once only
      // to apply entries already committed, or, leading or campaigning, to count its own log;
      // otherwise its next batch (the next message or tick) steps it.
      onPersisted: (index, term) => {
        persistedLatest = { index, term }
        if (core.role !== "follower" || core.log.committed > core.log.stable) nudgeNow()
      }
    })
    const applier = yield* Applier.make<R, SM>({
      name: `raft-${id}/applier`,
      stateMachine: options.stateMachine,
      mailboxCapacity: options.mailboxCapacity,
      batchMax: options.batchMax,
      // A snapshot of our own that cannot be saved for a full disk is skipped: the log still holds
      // every entry it would cover. The Raft actor asks again later.
      saveSnapshot: (meta, produce) =>
        options.io.saveSnapshot(meta, produce).pipe(
          Effect.tap(() => diskFull.clear("snapshots")),
          Effect.catchAll((error) =>
            DiskFullWatchModule.isDiskFull(error)
              ? Effect.zipRight(diskFull.report("snapshots", DiskFullWatchModule.whereOf(error, "snapshots")), Effect.fail("skipped" as const))
              : error instanceof SnapshotSkipped
              ? Effect.zipRight(Effect.logInfo(`snapshot ${meta.index} skipped: ${error.reason}`), Effect.fail("skipped" as const))
              : Effect.die(error))
        ),
      onSnapshotFailed: Effect.suspend(() => {
        snapshotFailed = true
        return nudge
      }),
      diskFull,
      onSnapshotSaved: (meta) =>
        Effect.suspend(() => {
          snapshotLatest = meta
          return nudge
        }),
      appliedIndex: core.log.applied,
      // Plain code: the applier publishes in its batch's plain path. The core needs the applied
      // mark at once only when it holds committed entries back for its bound on what is being
      // applied; otherwise its next batch steps it.
      onAppliedNow: (index) => {
        appliedLatest = index
        if (applyPending(core)) nudgeNow()
      }
    })

    const initial: DriverState<R, SM> = {
      core,
      nextId: 1,
      proposals: new Map(),
      byIndex: new Map(),
      reads: new Map(),
      transfers: new Map(),
      received: null,
      persistedSeen: null,
      snapshotIndex: options.recovered.snapshot?.index ?? 0,
      snapshotInFlight: false,
      snapshotRetryTicks: 0,
      stepDownTicks: 0
    }
    let started = false
    const raft = yield* Actor.make<DriverState<R, SM>, RaftMessage<R, SM>, never>({
      name: `raft-${id}`,
      mailboxCapacity: options.mailboxCapacity,
      batchMax: options.batchMax,
      // The core's state cannot be rebuilt from nothing while the node runs: a defect here stops
      // the node (restartsMax 0) rather than restarting it with a stale view.
      initial: Effect.sync(() => {
        assert(!started, "the Raft actor's state cannot be recreated in place")
        started = true
        return initial
      }),
      supervision: { restartsMax: 0, windowMs: 1000 },
      // Plain code: the steady state (peer messages, proposals, ticks, feedback) costs no Effect
      // operation; what needs one (a log line, a snapshot, a read-back, a full mailbox, the
      // yield before sends) comes back as an Effect the actor runs after the batch.
      receive: (state, batch) => {
        const readys: Ready[] = []
        const input = (i: Input) => readys.push(step(state.core, i).ready)
        const batchMs = monotonicMs()
        const persisted = persistedLatest
        if (persisted !== null && persisted !== state.persistedSeen) {
          state.persistedSeen = persisted
          input({ _tag: "Persisted", index: persisted.index, term: persisted.term })
        }
        if (readBackDefect !== null) return Effect.die(readBackDefect)
        if (appliedLatest !== appliedStepped) {
          appliedStepped = appliedLatest
          input({ _tag: "Applied", index: appliedLatest })
        }
        const loaded = loadedLatest
        if (loaded !== null) {
          loadedLatest = null
          input({ _tag: "EntriesLoaded", seq: loaded.seq, entries: loaded.entries })
        }
        const snapshot = snapshotLatest
        if (snapshot !== null) {
          snapshotLatest = null
          // Saved: the next may be asked for. One no newer than a snapshot installed from the
          // leader meanwhile changes nothing else.
          state.snapshotInFlight = false
          if (snapshot.index > state.snapshotIndex) {
            state.snapshotIndex = snapshot.index
            const keepFrom = options.stateMachine.replayFrom?.()
            input({ _tag: "SnapshotTaken", meta: snapshot, ...(keepFrom !== undefined ? { keepFrom } : {}) })
          }
        }
        if (snapshotFailed) {
          snapshotFailed = false
          state.snapshotInFlight = false
          state.snapshotRetryTicks = snapshotRetryTicksAfterFailure
        }
        // A log that cannot persist: refuse new entries here (the client hears SQLITE_FULL, not
        // a timeout), and a leader hands leadership to a caught-up voter (the core picks it).
        const logFull = diskFull.isFull("log")
        const cannotPersist = logFull || diskFull.isFull("state machine")
        const proposals: Array<{ id: RequestId; data: Uint8Array }> = []
        const reads: RequestId[] = []
        for (const message of batch) {
          switch (message._tag) {
            case "Tick":
              input({ _tag: "Tick" })
              stampTick(state.core.ticks, batchMs)
              if (state.snapshotRetryTicks > 0) state.snapshotRetryTicks--
              if (state.stepDownTicks > 0) state.stepDownTicks--
              break
            case "Nudge":
              break
            case "FlushCommit":
              commitFlushScheduled = false
              input({ _tag: "FlushCommit" })
              break
            case "Inbound": {
              const inbound = message.envelope.message
              traceMessage("raft.in", inbound)
              if (inbound._tag === "InstallSnapshot" && message.envelope.snapshot !== null) {
                state.received = inbound.meta
              }
              // A follower's read-index request may be answered under the lease, which the
              // clock must confirm now, as for this node's own reads.
              input(inbound._tag === "ReadIndexRequest" ? { _tag: "Message", message: inbound, lease: leaseHoldsNow() } : { _tag: "Message", message: inbound })
              break
            }
            case "Propose": {
              if (logFull) {
                complete(message.reply, Exit.fail(storageFull(diskFull)))
                break
              }
              const requestId = state.nextId++
              state.proposals.set(requestId, { reply: message.reply, index: null, term: null })
              proposals.push({ id: requestId, data: message.data })
              trace("raft.propose")
              break
            }
            case "Read": {
              const requestId = state.nextId++
              state.reads.set(requestId, { run: message.run, reply: message.reply })
              reads.push(requestId)
              break
            }
            case "ChangeMembership": {
              if (logFull) {
                Deferred.unsafeDone(message.reply, Exit.fail(storageFull(diskFull)))
                break
              }
              const requestId = state.nextId++
              state.proposals.set(requestId, { reply: message.reply, index: null, term: null })
              input({ _tag: "ChangeMembership", id: requestId, change: message.change })
              break
            }
            case "Transfer": {
              const requestId = state.nextId++
              state.transfers.set(requestId, message.reply)
              input({ _tag: "TransferLeadership", id: requestId, to: message.to })
              break
            }
          }
        }
        if (proposals.length > 0) input({ _tag: "Propose", proposals })
        if (reads.length > 0) input({ _tag: "ReadIndex", ids: reads, lease: leaseHoldsNow() })
        let warning: Effect.Effect<void> | null = null
        if (cannotPersist && state.core.role === "leader" && state.core.transferee === null && state.stepDownTicks === 0) {
          state.stepDownTicks = stepDownRetryTicks
          const voters = state.core.membership.members.filter((m) => m.role === "voter").length
          if (voters > 1) {
            warning = Effect.logWarning(`the ${logFull ? "log" : "state machine"} cannot write (disk full): handing leadership over (term ${state.core.term})`)
            input({ _tag: "TransferLeadership", id: state.nextId++, to: null })
          }
        }
        if (applyPending(state.core)) input({ _tag: "Drain" })
        if (state.core.term !== contactTerm || state.core.leaderContacts !== contactCount) {
          contactTerm = state.core.term
          contactCount = state.core.leaderContacts
          // Heard from the leader in this batch (or nothing yet this term): the message was sent
          // before the batch began, so this is an upper bound on the contact's time.
          leaderContactMs = contactCount > 0 ? batchMs : null
        }
        const carried = carryOutNow(state, readys)
        const rest = warning === null ? carried : carried === null ? warning : Effect.zipRight(warning, carried)
        if (rest === null) {
          const published = finishBatch(state)
          return published === null ? state : Effect.as(published, state)
        }
        return Effect.flatMap(rest, () => {
          const published = finishBatch(state)
          return published === null ? Effect.succeed(state) : Effect.as(published, state)
        })
      }
    })
    /** After a batch is carried out: the commit flush, the status, the activity stamp. The
     * Effect returned (or null) publishes a change of role, term, leader or membership. */
    const finishBatch = (state: DriverState<R, SM>): Effect.Effect<void> | null => {
      if (!commitFlushScheduled && commitOwed(state.core)) {
        commitFlushScheduled = true
        commitFlushDue.unsafeOpen()
      }
      status = statusOf(state.core, options.tickMs)
      raftActiveMs = clock.unsafeCurrentTimeMillis()
      return stopped.length === 0 ? publishChangeNow(status) : null
    }
    // A full mailbox needs no nudge: the Raft actor reads the variables at its next batch anyway.
    const nudgeMessage: RaftMessage<R, SM> = { _tag: "Nudge" }
    nudgeNow = () => void raft.offer(nudgeMessage)
    nudge = Effect.sync(nudgeNow)

    const carryOut = (state: DriverState<R, SM>, readys: ReadonlyArray<Ready>) =>
      Effect.gen(function*() {
        const s = state.core
        const batches: PersistBatch[] = []
        const after: Envelope[] = []
        let snapshotInstalled = false
        const toApplier: Array<ApplierMessage<R, SM>> = []
        const outbound: Array<Envelope> = []
        for (const ready of readys) {
          for (const load of ready.loads) yield* readBack(load)
          for (const message of ready.messages) {
            traceMessage("raft.out", message)
            outbound.push(message._tag === "InstallSnapshot" ? yield* withSnapshot(message) : { message: vouched(message), snapshot: null })
          }
          const batch = persistBatchOf(ready)
          if (batch !== null) batches.push(batch)
          for (const message of ready.messagesAfterPersist) {
            after.push(message._tag === "InstallSnapshot" ? yield* withSnapshot(message) : { message, snapshot: null })
          }
          if (ready.snapshot !== null) {
            const meta = ready.snapshot
            const received = state.received
            assert(received !== null && received.index === meta.index && received.term === meta.term, `snapshot ${meta.index} installed without its data`)
            state.received = null
            // Adopted into the store before the batch that installs it is persisted (a restart
            // must find the snapshot the log points to), and before the applier reads it.
            yield* adoptUntilWritten(meta)
            snapshotInstalled = true
            // The store holds this snapshot now: the next one is due snapshotEveryEntries after
            // it, not at once (a joiner took a snapshot of the state it had just installed, its
            // applier waiting 6 s for the copy of 1 GiB before applying the entries after it).
            state.snapshotIndex = Math.max(state.snapshotIndex, meta.index)
            toApplier.push({ _tag: "Restore", meta, source: yield* Effect.orDie(options.io.snapshotSource(meta)) })
            failCoveredProposals(state, meta.index)
          }
          if (ready.committed.length > 0) toApplier.push(applyMessage(state, ready.committed))
          for (const event of ready.events) onEvent(state, event, toApplier)
        }
        // The applier first: its fiber then runs before the peer links', so a commit reaches the
        // clients waiting on it before the replication traffic of this batch is packed and written
        // (committed entries are durable on a quorum already; nothing here must follow a send).
        for (const message of toApplier) if (!applier.actor.offer(message)) yield* Effect.orDie(applier.actor.send(message))
        // While the log cannot persist, a job with nothing to write carries only answers that
        // would wait behind the stuck write anyway (heartbeat responses): drop it. Raft tolerates
        // lost messages, and its persisted mark (the log's end, unchanged without a batch) is one
        // an earlier job carries already. This keeps a long episode from filling the writer's
        // mailbox and then stalling this actor.
        const onlyAnswers = batches.length === 0 && !snapshotInstalled
        if ((batches.length > 0 || after.length > 0 || snapshotInstalled) && !(onlyAnswers && diskFull.isFull("log"))) {
          const job: LogWriter.PersistJob = { batches, after, persisted: { index: lastIndex(s.log), term: lastTerm(s.log) } }
          if (batches.length > 0) trace("raft.persist", lastIndex(s.log))
          if (!writer.offer(job)) yield* Effect.orDie(writer.send(job))
        }
        // New entries or commits, and messages to send: let the log writer start the write and
        // fdatasync (on the thread pool) and the applier answer the clients before this batch's
        // messages are packed and written to the peers. The leader's own fsync then runs beside
        // the network trip instead of after the sends (which measured 0.6-1.6 ms before it), and a
        // commit is answered before the appends that carry the new commit index leave. Sending
        // later is always safe; a follower persists before it acknowledges.
        if ((batches.length > 0 || toApplier.length > 0) && outbound.length > 0) {
          yield* Effect.yieldNow()
          // Proposals answered by callback (the leader's writer, RaftNode.proposeNow) answered
          // their clients in the applier's turn: one more yield lets those clients' fibers, queued
          // behind this one meanwhile, write their answers before the sends.
          // The status (commit index, applied) is published first: a client answered must not
          // see a commit index older than its write.
          if (answersByCallback(toApplier)) {
            status = statusOf(s, options.tickMs)
            yield* Effect.yieldNow()
          }
        }
        for (const envelope of outbound) yield* options.io.send(envelope)
        if (!state.snapshotInFlight && state.snapshotRetryTicks === 0 && s.log.applied - state.snapshotIndex >= options.snapshotEveryEntries) {
          state.snapshotInFlight = true
          yield* Effect.orDie(applier.actor.send({ _tag: "Snapshot", meta: snapshotMetaAt(s, s.log.applied) }))
        }
      })

    /** Whether `readys` need the Effect path of `carryOut`: a read-back, a snapshot to send or to
     * install. Otherwise `carryOutNow` does the same work in plain code. */
    const needsEffects = (readys: ReadonlyArray<Ready>): boolean => {
      for (const ready of readys) {
        if (ready.loads.length > 0 || ready.snapshot !== null) return true
        for (const message of ready.messages) if (message._tag === "InstallSnapshot") return true
        for (const message of ready.messagesAfterPersist) if (message._tag === "InstallSnapshot") return true
      }
      return false
    }

    /** `carryOut` in plain code, for the readys of the steady state (entries, messages, commits,
     * events; see `needsEffects`), in the same order. Returns what is left that needs Effect (a
     * full mailbox's wait, the yield before the sends, a send the transport cannot make in plain
     * code, a snapshot request), or null. */
    const carryOutNow = (state: DriverState<R, SM>, readys: ReadonlyArray<Ready>): Effect.Effect<void> | null => {
      if (needsEffects(readys)) return carryOut(state, readys)
      const s = state.core
      const batches: PersistBatch[] = []
      const after: Envelope[] = []
      const toApplier: Array<ApplierMessage<R, SM>> = []
      const outbound: Array<Envelope> = []
      for (const ready of readys) {
        for (const message of ready.messages) {
          traceMessage("raft.out", message)
          outbound.push({ message: vouched(message), snapshot: null })
        }
        const batch = persistBatchOf(ready)
        if (batch !== null) batches.push(batch)
        for (const message of ready.messagesAfterPersist) after.push({ message, snapshot: null })
        if (ready.committed.length > 0) toApplier.push(applyMessage(state, ready.committed))
        for (const event of ready.events) onEvent(state, event, toApplier)
      }
      // The applier first (see carryOut); a full mailbox waits, in order, as Effects.
      let rest: Effect.Effect<void> | null = null
      for (let i = 0; i < toApplier.length; i++) {
        if (applier.actor.offer(toApplier[i]!)) continue
        rest = Effect.forEach(toApplier.slice(i), (message) => Effect.orDie(applier.actor.send(message)), { discard: true })
        break
      }
      if (batches.length > 0 || after.length > 0) {
        const job: LogWriter.PersistJob = { batches, after, persisted: { index: lastIndex(s.log), term: lastTerm(s.log) } }
        if (batches.length > 0) trace("raft.persist", lastIndex(s.log))
        // Answers only (no entries: a heartbeat's or an empty append's acknowledgement), and
        // the writer idle with everything before durable: they leave now, without its turn.
        // While the log cannot persist such a job is dropped, as in carryOut.
        const onlyAnswers = batches.length === 0
        if (onlyAnswers && diskFull.isFull("log")) {
          // dropped: see carryOut
        } else if (rest === null) {
          const released = onlyAnswers ? writer.releaseNow(job) : false
          if (released === false) {
            if (!writer.offer(job)) rest = Effect.orDie(writer.send(job))
          } else rest = released
        } else {
          const previous = rest
          rest = Effect.zipRight(previous, Effect.orDie(writer.send(job)))
        }
      }
      // New entries or commits, and messages to send: let the log writer start its write and the
      // applier answer the clients first (see carryOut).
      const yieldFirst = (batches.length > 0 || toApplier.length > 0) && outbound.length > 0
      if (yieldFirst) {
        const byCallback = answersByCallback(toApplier)
        const yielded = Effect.zipRight(Effect.yieldNow(), Effect.suspend(() => {
          if (!byCallback) return sendAndSnapshot(state, outbound) ?? Effect.void
          status = statusOf(s, options.tickMs)
          return Effect.zipRight(Effect.yieldNow(), Effect.suspend(() => sendAndSnapshot(state, outbound) ?? Effect.void))
        }))
        return rest === null ? yielded : Effect.zipRight(rest, yielded)
      }
      if (rest !== null) return Effect.zipRight(rest, Effect.suspend(() => sendAndSnapshot(state, outbound) ?? Effect.void))
      return sendAndSnapshot(state, outbound)
    }

    /** The batch's messages, then a snapshot request if one is due: in plain code where the
     * transport and the applier's mailbox allow; the rest as an Effect (or null). */
    const sendAndSnapshot = (state: DriverState<R, SM>, outbound: ReadonlyArray<Envelope>): Effect.Effect<void> | null => {
      const sends = LogWriter.sendInOrder(outbound, 0, options.io.sendNow, options.io.send)
      const s = state.core
      let snapshot: Effect.Effect<void> | null = null
      if (!state.snapshotInFlight && state.snapshotRetryTicks === 0 && s.log.applied - state.snapshotIndex >= options.snapshotEveryEntries) {
        state.snapshotInFlight = true
        const message: ApplierMessage<R, SM> = { _tag: "Snapshot", meta: snapshotMetaAt(s, s.log.applied) }
        if (sends !== null || !applier.actor.offer(message)) snapshot = Effect.orDie(applier.actor.send(message))
      }
      if (sends === null) return snapshot
      return snapshot === null ? sends : Effect.zipRight(sends, snapshot)
    }

    /** The applier's message for `committed`, with the proposals waiting on them (a proposal
     * whose entry was replaced by another term's is answered ProposalDropped). */
    const applyMessage = (state: DriverState<R, SM>, committed: ReadonlyArray<Entry>): ApplierMessage<R, SM> => {
      trace("raft.committed", committed[committed.length - 1]!.index)
      const waiters = new Map<LogIndex, Reply<Applied<R>>>()
      for (const entry of committed) {
        const requestId = state.byIndex.get(entry.index)
        if (requestId === undefined) continue
        state.byIndex.delete(entry.index)
        const proposal = state.proposals.get(requestId)
        state.proposals.delete(requestId)
        if (proposal === undefined) continue
        if (proposal.term === entry.term) waiters.set(entry.index, proposal.reply)
        else complete(proposal.reply, Exit.fail(new ProposalDropped({ index: entry.index, term: proposal.term ?? 0 })))
      }
      return { _tag: "Apply", entries: committed, waiters }
    }

    /** Adopts a received snapshot; a full disk is reported and waited out (its trailer and
     * rename need a little space), any other failure stops the node. */
    const adoptUntilWritten = (meta: SnapshotMeta): Effect.Effect<void> =>
      Effect.gen(function*() {
        let backoffMs: number | null = null
        while (true) {
          const failure = yield* Effect.flip(options.io.adoptSnapshot(meta)).pipe(Effect.option)
          if (failure._tag === "None") return yield* (backoffMs === null ? Effect.void : diskFull.clear("snapshots"))
          if (!DiskFullWatchModule.isDiskFull(failure.value)) return yield* Effect.die(failure.value)
          yield* diskFull.report("snapshots", DiskFullWatchModule.whereOf(failure.value, "snapshots"))
          backoffMs = DiskFullWatchModule.nextBackoffMs(backoffMs)
          yield* Effect.sleep(Duration.millis(backoffMs))
        }
      })

    /** Reads evicted entries back from the log store in a fiber of its own (the actor goes on);
     * the answer is stepped in at the actor's next batch. A failed read answers with nothing and
     * the core asks again after a tick; a record that is not what the index says stops the node
     * (the log cannot be trusted). */
    const readBack = (load: Ready["loads"][number]): Effect.Effect<void> => {
      const readEntries = options.io.readEntries
      assert(readEntries !== undefined, `node ${id} evicted entries it cannot read back: RaftIo.readEntries is missing (entryCacheBytesMax ${options.config.entryCacheBytesMax})`)
      return readEntries(load.lo, load.hi).pipe(
        Effect.matchEffect({
          onSuccess: (entries) => Effect.sync(() => void (loadedLatest = { seq: load.seq, entries })),
          onFailure: (error) =>
            typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "LogCorrupted"
              ? Effect.sync(() => void (readBackDefect = error))
              : Effect.zipRight(
                Effect.logDebug(`read-back of entries ${load.lo}..${load.hi} failed; asked again later`, error),
                Effect.sync(() => void (loadedLatest = { seq: load.seq, entries: [] }))
              )
        }),
        Effect.zipRight(Effect.suspend(() => nudge)),
        Effect.forkIn(scope),
        Effect.asVoid
      )
    }

    const withSnapshot = (message: Extract<Envelope["message"], { _tag: "InstallSnapshot" }>) =>
      Effect.map(Effect.orDie(options.io.snapshotSource(message.meta)), (source): Envelope => ({ message, snapshot: source }))

    /** Answers the requests an event settles (synchronously: completing a Deferred never waits). */
    const onEvent = (state: DriverState<R, SM>, event: Ready["events"][number], toApplier: Array<ApplierMessage<R, SM>>): void => {
      switch (event._tag) {
        case "Accepted": {
          const proposal = state.proposals.get(event.id)
          if (proposal === undefined) return
          proposal.index = event.index
          proposal.term = event.term
          // An older proposal at this index lost its entry to this one (we lead again).
          const replaced = state.byIndex.get(event.index)
          const older = replaced === undefined ? undefined : state.proposals.get(replaced)
          if (replaced !== undefined && older !== undefined) {
            state.proposals.delete(replaced)
            complete(older.reply, Exit.fail(new ProposalDropped({ index: event.index, term: older.term ?? 0 })))
          }
          state.byIndex.set(event.index, event.id)
          return
        }
        case "Rejected": {
          const error = rejection(event.reason, event.leader, event.detail)
          const proposal = state.proposals.get(event.id)
          if (proposal !== undefined) {
            state.proposals.delete(event.id)
            return complete(proposal.reply, Exit.fail(error))
          }
          const read = state.reads.get(event.id)
          if (read !== undefined) {
            state.reads.delete(event.id)
            return Deferred.unsafeDone(read.reply, Exit.fail(error))
          }
          const transfer = state.transfers.get(event.id)
          if (transfer !== undefined) {
            state.transfers.delete(event.id)
            return Deferred.unsafeDone(transfer, Exit.fail(error))
          }
          return
        }
        case "ReadReady": {
          const read = state.reads.get(event.id)
          if (read === undefined) return
          state.reads.delete(event.id)
          if (read.run === indexOnly) return Deferred.unsafeDone(read.reply, Exit.succeed(event.index))
          toApplier.push({ _tag: "Read", index: event.index, run: read.run, reply: read.reply })
          return
        }
        case "StateChanged":
          if (event.role !== "leader" && event.leader !== null && event.leader !== id) {
            for (const reply of state.transfers.values()) Deferred.unsafeDone(reply, Exit.void)
            state.transfers.clear()
          }
          return
        case "TransferAborted":
          for (const reply of state.transfers.values()) {
            Deferred.unsafeDone(reply, Exit.fail(new InvalidRequest({ detail: `transfer to ${event.to} aborted: it did not catch up in time` })))
          }
          state.transfers.clear()
          return
      }
    }

    yield* Ticker.make({ intervalMs: options.tickMs, onTick: raft.send({ _tag: "Tick" }) })
    const flushCommitMessage: RaftMessage<R, SM> = { _tag: "FlushCommit" }
    yield* commitFlushDue.await.pipe(
      Effect.zipRight(commitFlushDue.close),
      Effect.zipRight(Effect.sleep(Duration.millis(commitFlushMs))),
      // A full mailbox: the next batch finds the commit still owed and schedules again (and the
      // next tick flushes it anyway).
      Effect.zipRight(Effect.sync(() => void (raft.offer(flushCommitMessage) || (commitFlushScheduled = false)))),
      Effect.forever,
      Effect.forkScoped
    )

    // Requests waiting for their reply, with their deadlines. One sweeper bounds every wait, and
    // closing the node answers whoever still waits: a timer (a forked fiber) per request cost more
    // than the rest of a proposal's trip through the node. A write cut off this way may already be
    // in the log (and commit through another leader): its outcome is unknown, never "not done".
    const pending = new Map<Reply<never>, { readonly deadlineMs: number; readonly writes: boolean }>()
    const sweepEveryMs = Math.max(1, Math.min(options.tickMs, Math.floor(options.requestTimeoutMs / 4)))
    yield* Effect.sleep(Duration.millis(sweepEveryMs)).pipe(
      Effect.zipRight(Clock.currentTimeMillis),
      Effect.flatMap((nowMs) =>
        Effect.sync(() => {
          for (const [reply, { deadlineMs }] of pending) {
            if (deadlineMs > nowMs) continue
            pending.delete(reply)
            complete(reply, Exit.fail(new RaftRequestTimeout({ timeoutMs: options.requestTimeoutMs })))
          }
        })
      ),
      Effect.forever,
      Effect.forkScoped
    )
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        const detail = `node ${id} has stopped`
        for (const [reply, { writes }] of pending) {
          complete(reply, Exit.fail(writes ? new OutcomeUnknown({ detail }) : new RaftNotLeader({ leader: null, detail })))
        }
        pending.clear()
      })
    )

    /** A heartbeat vouches for the leader's commit index (bounded reads on followers) only while
     * the lease holds by this node's clock too: ticks can run late after a stalled event loop. */
    const vouched = (message: Message): Message => {
      if (message._tag !== "Heartbeat" || message.leaderCommit === undefined || leaseHoldsNow()) return message
      const { leaderCommit: _, ...beat } = message
      return beat
    }

    /** Runs `query` once this node has applied `index`: at once if it has, else in the applier
     * when it gets there (bounded in number like the core's reads, and in time by the sweeper). */
    const readAt = <A>(applied: LogIndex, index: LogIndex, query: (sm: SM) => A): Effect.Effect<A, RaftRequestError> => {
      if (applied >= index) return Effect.sync(() => query(options.stateMachine))
      return Effect.suspend(() => {
        if (directReads >= options.config.readsPendingMax) return Effect.fail(new Overloaded({ detail: "too many reads waiting for this node to catch up" }))
        directReads++
        const reply = Deferred.unsafeMake<unknown, RaftRequestError>(FiberId.none)
        if (!applier.actor.offer({ _tag: "Read", index, run: query, reply })) {
          directReads--
          return Effect.fail(new Overloaded({ detail: `node ${id} applier mailbox is full` }))
        }
        return Effect.ensuring(awaitReply(reply, false) as Effect.Effect<A, RaftRequestError>, Effect.sync(() => void directReads--))
      })
    }

    /** A linearizable read may run at once on the state machine as it is: the lease holds and the
     * applier has published everything committed. */
    const readsAtOnce = (applied: LogIndex): boolean => applied >= core.log.committed && leaseHoldsNow()

    /** Waits for `reply`, answered RaftRequestTimeout by the sweeper past the request timeout. The
     * node's own clock, as the sweeper's (a caller's fiber may run on another). */
    const awaitReply = <A>(reply: Deferred.Deferred<A, RaftRequestError>, writes: boolean): Effect.Effect<A, RaftRequestError> =>
      Effect.suspend(() => {
        const nowMs = clock.unsafeCurrentTimeMillis()
        const key = reply as unknown as Deferred.Deferred<never, RaftRequestError>
        pending.set(key, { deadlineMs: nowMs + options.requestTimeoutMs, writes })
        // Not Effect.ensuring (an uninterruptible region per request): a waiter interrupted
        // instead leaves its entry to the sweeper, which drops it at the deadline.
        return Effect.flatMap(Effect.exit(Deferred.await(reply)), (exit) => {
          pending.delete(key)
          return exit
        })
      })

    const request = <A>(
      writes: boolean,
      make: (reply: Deferred.Deferred<A, RaftRequestError>) => RaftMessage<R, SM>
    ): Effect.Effect<A, RaftRequestError> =>
      Effect.suspend(() => {
        const reply = Deferred.unsafeMake<A, RaftRequestError>(FiberId.none)
        if (raft.offer(make(reply))) return awaitReply(reply, writes)
        // Full, or stopped: trySend says which.
        return raft.trySend(make(reply)).pipe(
          Effect.catchTags({
            MailboxFull: () => Effect.fail(new Overloaded({ detail: `node ${id} mailbox is full` })),
            ActorStopped: () => Effect.fail(new RaftNotLeader({ leader: null, detail: `node ${id} has stopped` }))
          }),
          Effect.zipRight(awaitReply(reply, writes))
        )
      })

    // The first actor to give up ends the node. Not `Effect.raceAll`: it waits for the first
    // *success* and ignores failures until every racer has failed, so one dead actor went
    // unnoticed while the others ran on (the zombie leader of issue 13). Each racer here succeeds
    // with its failure, and a clean stop (scope closed) never finishes.
    const firstFailure = Effect.raceAll(
      [raft, writer, applier.actor].map((actor) => Effect.flip(Effect.zipRight(actor.stopped, Effect.never)))
    )
    const failed: Effect.Effect<never, ActorFailed> = Effect.flatMap(firstFailure, Effect.fail)
    // Whatever the owner does about it, the node stops claiming a role it no longer plays:
    // status (and so /health, LEADER answers, metrics) says follower without a leader.
    yield* Effect.forEach([raft, writer, applier.actor], (actor) =>
      Effect.forkScoped(Effect.catchAll(actor.stopped, (failure) =>
        Effect.suspend(() => {
          stopped.push(`${failure.actor} gave up after ${failure.restarts} restarts`)
          return publishChange(stoppedStatus(status))
        }))), { discard: true })
    const condition = Effect.gen(function*() {
      const nowMs = yield* Clock.currentTimeMillis
      const applied = yield* applier.applied
      // The applier is "active" while it advances, or while it has nothing to do.
      if (applied !== appliedSeen || applied >= status.commitIndex) {
        appliedSeen = applied
        applierActiveMs = nowMs
      }
      return { diskFull: diskFull.episodes(), stopped: [...stopped], raftActiveMs, applierActiveMs } satisfies NodeCondition
    })

    return {
      id,
      propose: (data) => request<Applied<R>>(true, (reply) => ({ _tag: "Propose", data, reply })),
      proposeNow: (data, onDone) => {
        const reply: ReplyCallback<Applied<R>> = onceReply((exit) => {
          pending.delete(reply as Reply<never>)
          onDone(exit)
        })
        // Bounded like `propose`: the sweeper answers it RaftRequestTimeout past the deadline.
        pending.set(reply as Reply<never>, { deadlineMs: clock.unsafeCurrentTimeMillis() + options.requestTimeoutMs, writes: true })
        if (raft.offer({ _tag: "Propose", data, reply })) return true
        pending.delete(reply as Reply<never>)
        return false
      },
      read: <A>(query: (sm: SM) => A, consistency: ReadConsistency = linearizable) =>
        Effect.suspend((): Effect.Effect<A, RaftRequestError> => {
          const applied = applier.appliedNow()
          switch (consistency.level) {
            case "local":
              return Effect.sync(() => query(options.stateMachine))
            case "session":
              return readAt(applied, options.config.bugs?.sessionReadsAtOnce === true ? 0 : consistency.index, query)
            case "bounded": {
              if (core.role === "leader") break
              const ageMs = leaderContactMs === null ? Infinity : monotonicMs() - leaderContactMs
              if (!(ageMs <= consistency.maxLagMs) && options.config.bugs?.boundedIgnoresLag !== true) {
                return Effect.fail(new RaftReplicaStale({ maxLagMs: consistency.maxLagMs, detail: leaderContactMs === null ? `node ${id} has not heard from a leader this term` : `node ${id} last heard from its leader ${Math.round(ageMs)} ms ago` }))
              }
              return readAt(applied, core.leaderCommit, query)
            }
            case "linearizable":
              break
          }
          // Everything committed when the read arrived is applied, and no other leader can exist:
          // the state machine as it is now is a linearizable answer.
          if (readsAtOnce(applied)) return Effect.sync(() => query(options.stateMachine))
          // Under the lease the commit index of now is the read index (the core would answer
          // just that): the read waits in the applier for it, without a trip through the Raft
          // actor. Under steady writes ~5 % of a leader's point reads arrive while the last
          // committed entry is not yet applied.
          if (core.role === "leader" && leaseHoldsNow()) return readAt(applied, core.log.committed, query)
          return request<unknown>(false, (reply) => ({ _tag: "Read", run: query, reply })) as Effect.Effect<A, RaftRequestError>
        }),
      readNow: <A>(query: (sm: SM) => A) => (readsAtOnce(applier.appliedNow()) ? { value: query(options.stateMachine) } : undefined),
      readIndex: Effect.suspend(() =>
        core.role === "leader" && leaseHoldsNow()
          ? Effect.succeed(core.log.committed)
          : (request<unknown>(false, (reply) => ({ _tag: "Read", run: indexOnly, reply })) as Effect.Effect<LogIndex, RaftRequestError>)),
      changeMembership: (change) =>
        Effect.map(request<Applied<R>>(true, (reply) => ({ _tag: "ChangeMembership", change, reply })), (applied) => applied.index),
      transferLeadership: (to) => request<void>(false, (reply) => ({ _tag: "Transfer", to, reply })),
      deliver: (envelope) => Effect.sync(() => void raft.offer({ _tag: "Inbound", envelope })),
      deliverNow: (envelope) => void raft.offer({ _tag: "Inbound", envelope }),
      status: Effect.sync(() => ({ ...(stopped.length === 0 ? status : stoppedStatus(status)), machineAppliedIndex: applier.appliedNow() })),
      statusNow: () => (stopped.length === 0 ? status : stoppedStatus(status)),
      // Subscribe before reading the current state, so no change falls between the two.
      changes: Stream.unwrapScoped(Effect.map(PubSub.subscribe(changesHub), (subscription) =>
        Stream.concat(Stream.sync(() => (stopped.length === 0 ? status : stoppedStatus(status))), Stream.fromQueue(subscription)))),
      condition,
      diskFull,
      failed
    }
  })

/** The query of a `readIndex` request: its answer is the read index itself, not a state. */
const indexOnly = (): never => {
  throw new Error("readIndex's marker is never run")
}

/** What a node whose actors stopped says it is: a follower of nobody. */
function stoppedStatus(status: NodeStatus): NodeStatus {
  return { ...status, role: "follower", leader: null, peers: [] }
}

function persistBatchOf(ready: Ready): PersistBatch | null {
  if (ready.hardState === null && ready.snapshot === null && ready.truncateFrom === null && ready.entries.length === 0 && ready.compactUpTo === null) {
    return null
  }
  return {
    entries: ready.entries,
    ...(ready.hardState !== null ? { hardState: ready.hardState } : {}),
    ...(ready.snapshot !== null ? { snapshot: ready.snapshot } : {}),
    ...(ready.truncateFrom !== null ? { truncateFrom: ready.truncateFrom } : {}),
    ...(ready.compactUpTo !== null ? { compactUpTo: ready.compactUpTo } : {})
  }
}

function storageFull(watch: DiskFullWatch): StorageFull {
  const episode = watch.episodes().find((e) => e.part === "log")
  return new StorageFull({ detail: `disk full: the log cannot persist (${episode?.op ?? "write"} ${episode?.path ?? "?"})` })
}

function rejection(reason: RejectReason, leader: NodeId | null, detail: string): RaftRequestError {
  switch (reason) {
    case "not-leader":
    case "transferring":
      return new RaftNotLeader({ leader, detail })
    case "overloaded":
      return new Overloaded({ detail })
    case "config-pending":
      return new ChangePending({ detail })
    case "invalid":
      return new InvalidRequest({ detail })
  }
}

function answersByCallback<R, SM>(toApplier: ReadonlyArray<ApplierMessage<R, SM>>): boolean {
  for (const message of toApplier) {
    if (message._tag !== "Apply") continue
    for (const reply of message.waiters.values()) if (typeof reply === "function") return true
  }
  return false
}

/** Entries up to `index` arrived inside a snapshot: whoever waited on them cannot be told. */
function failCoveredProposals<R, SM>(state: DriverState<R, SM>, index: LogIndex): void {
  for (const [at, requestId] of state.byIndex) {
    if (at > index) continue
    state.byIndex.delete(at)
    const proposal = state.proposals.get(requestId)
    state.proposals.delete(requestId)
    if (proposal !== undefined) complete(proposal.reply, Exit.fail(new OutcomeUnknown({ detail: `entry ${at} was covered by a snapshot` })))
  }
}

function statusOf(core: RaftState, tickMs: number): NodeStatus {
  const peers: PeerStatus[] = []
  if (core.role === "leader") {
    for (const [id, pr] of core.progress) peers.push({ id, matchIndex: pr.match, silentMs: pr.silentTicks * tickMs, replication: pr.state })
  }
  return {
    id: core.config.id,
    role: core.role,
    term: core.term,
    leader: core.leader,
    commitIndex: core.log.committed,
    appliedIndex: core.log.applied,
    lastIndex: lastIndex(core.log),
    membership: core.membership,
    peers
  }
}
