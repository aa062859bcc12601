// The leader's writer for one database: the shell around writerCore.ts, which decides everything
// (queue, group-commit batch, the interactive transaction's lease, the entry in flight,
// re-proposals, checkpoints, stopping). This file feeds it inputs and performs its effects: runs
// SQLite on the LeaderDatabase, captures frames, proposes through Raft, answers clients.
//
// - Synchronous effects (SQLite) run at once, in the fiber that delivered the input (a client's,
//   usually), and their answers go straight back into the core: no hop to another fiber per
//   statement. JavaScript runs them to the end without interleaving, so the core sees one input
//   at a time.
// - Two fibers: the worker performs the effects that wait (propose, confirm leadership, the
//   machine's records after a checkpoint or a discard, release), one at a time — the core never
//   asks for two at once, there being one entry in flight; the ticker feeds Tick every
//   few ms so every wait is bounded without a timer per request.
// - A small proposal skips the worker: it is offered at once (RaftNode.proposeNow) and its
//   applied result is fed to the core by callback from the applier's turn (proposeNow below).
// - A commit is learned once, from the proposal's applied result (SqliteMachine's `Own` or
//   `OwnCopy` for this writer's seq). The state machine moves the read view when it applies the
//   entry (LeaderDatabase.markCommitted), and never calls back into the writer: when it takes the
//   database away (a snapshot, another leader's entry) the writer notices the database closed at
//   its next input and stops.
import type { Clock as ClockService } from "effect"
import type { Cause } from "effect"
import { Clock, Duration, Effect } from "effect"
import type { Exit } from "effect"
import type { Applied } from "../actors/Applier.ts"
import type { NodeStatus } from "../actors/RaftActor.ts"
import type { RaftRequestError } from "../actors/raftErrors.ts"
import { assert } from "../assert.ts"
import type { NodeId, Term } from "../raft/types.ts"
import type { StatementOutcome } from "./connection.ts"
import { toSqlError } from "./connection.ts"
import type { CheckpointOutcome, LeaderDatabase, LocalCommit } from "./LeaderDatabase.ts"
import type { SqliteLimits } from "./limits.ts"
import type { ExecResult, SqlFailure, SqlValue } from "./Sql.ts"
import { SqlError, SqlNotLeader } from "./Sql.ts"
import { sqliteTooBigCode } from "./sqliteCodes.ts"
import type { LeaderSlotOwner, SqliteApplyResult, SqliteMachine } from "./SqliteMachine.ts"
import { encodeWriteEntrySteps } from "./writeEntry.ts"
import { runSteps } from "./pageSet.ts"
import { sqlFailureOfLeadershipCheck } from "./raftFailures.ts"
import type { Isolation, LocalCommitResult, Outcome, ProposalOutcome, WriterEffect, WriterInput, WriterState, WriterStats } from "./writerCore.ts"
import { initialWriterState, leaseActive, writerStep } from "./writerCore.ts"
import { afterYieldIfLarge, largePayloadBytes, stepsYielding, yieldToLoop } from "../runtime/yieldToLoop.ts"
import { trace } from "../runtime/trace.ts"

export type { Isolation } from "./writerCore.ts"

/** What the writer needs of the Raft node. */
export interface RaftAccess {
  readonly propose: (data: Uint8Array) => Effect.Effect<Applied<SqliteApplyResult>, RaftRequestError>
  /** `propose` answered by a callback (RaftNode.proposeNow): false when it could not be offered.
   * Optional: without it every proposal goes through the worker. */
  readonly proposeNow?: (data: Uint8Array, onDone: (exit: Exit.Exit<Applied<SqliteApplyResult>, RaftRequestError>) => void) => boolean
  /** A ReadIndex round: succeeds once this node is confirmed leader and has applied everything
   * committed before the call. */
  readonly confirmLeadership: Effect.Effect<void, RaftRequestError>
  readonly status: Effect.Effect<NodeStatus>
  /** Why this node cannot make writes durable now (its disk is full), or null. Optional. */
  readonly cannotWrite?: () => string | null
}

/** An interactive transaction's hold on the writer, as its session sees it. */
export class Lease {
  state: "active" | "committing" | "ended" = "active"
  /** Why the lease ended if not by the session's own COMMIT / ROLLBACK. */
  endedBy: SqlFailure | null = null
  /** The COMMIT (or END, or RELEASE) the session sent. */
  commitSql = "COMMIT"
  constructor(
    readonly id: number,
    readonly startPageCount: number
  ) {}
}

export type LeaderWriterStats = WriterStats

/** A statement's outcome as `submitWith` hands it to its callback. */
export type StatementAnswer = { readonly ok: true; readonly value: StatementOutcome } | { readonly ok: false; readonly error: SqlFailure }

/** The bytes of write entries in flight on a node (all its writers), in KiB: the leader appends
 * proposals that arrive together as one log record, which must fit the log's record bound. A
 * proposal takes its share before it goes to Raft and gives it back once Raft answered. Taking is
 * synchronous when there is room (always, unless many databases propose large entries at once):
 * an Effect semaphore cost ~30 Effect operations and a fiber resumption per entry. */
export class ProposalBudget {
  private usedKiB = 0
  /** Writers waiting for room: at most one each (one proposal in flight per writer). */
  private readonly waiting = new Set<() => void>()

  constructor(readonly kibMax: number) {
    assert(Number.isSafeInteger(kibMax) && kibMax > 0, "a positive budget")
  }

  get used(): number {
    return this.usedKiB
  }

  /** Runs `effect` (which must not fail or be interrupted: wrap it in Effect.exit) holding `kib`. */
  withKiB<A>(kib: number, effect: Effect.Effect<A>): Effect.Effect<A> {
    const share = Math.min(Math.max(1, kib), this.kibMax)
    const run = Effect.map(effect, (value) => {
      this.usedKiB -= share
      for (const wake of [...this.waiting]) wake()
      return value
    })
    return Effect.suspend(() => (this.tryTake(share) ? run : Effect.zipRight(this.room(share), run)))
  }

  /** Waits until `share` could be taken, and takes it. */
  private room(share: number): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      const wake = () => {
        if (!this.tryTake(share)) return
        this.waiting.delete(wake)
        resume(Effect.void)
      }
      this.waiting.add(wake)
      wake()
      return Effect.sync(() => void this.waiting.delete(wake))
    })
  }

  /** Takes room for `kib` now if there is some: the share to give back, else null. */
  takeNow(kib: number): number | null {
    const share = Math.min(Math.max(1, kib), this.kibMax)
    return this.tryTake(share) ? share : null
  }

  /** Gives back a share taken with `takeNow`. */
  giveBack(share: number): void {
    this.usedKiB -= share
    for (const wake of [...this.waiting]) wake()
  }

  private tryTake(share: number): boolean {
    if (this.usedKiB + share > this.kibMax) return false
    this.usedKiB += share
    return true
  }
}

export interface LeaderWriterOptions {
  readonly database: string
  readonly term: Term
  readonly nodeId: NodeId
  readonly epoch: number
  readonly machine: SqliteMachine
  readonly raft: RaftAccess
  readonly limits: SqliteLimits
  /** Bounds the bytes of write entries in flight on the node (all databases). */
  readonly proposalKiB: ProposalBudget
  /** Deliberate slower paths, for the tests that compare: `savepointFirstStatement` runs a
   * batch's first statement under a savepoint too, as every statement was before;
   * `checkpointWithoutBackoff` drops the core's checkpoint back-off before every input and tells
   * it of no read in progress (a checkpoint readers hold back is asked again at every entry, and
   * waits for them, as before the back-off). */
  readonly bugs?: { readonly savepointFirstStatement?: boolean; readonly checkpointWithoutBackoff?: boolean }
}

const batchSavepoint = "tqlite_batch_statement"

/** What the worker performs: the effects that wait. */
type Waiting = Extract<WriterEffect, { readonly _tag: "Propose" | "ConfirmLeadership" | "DiscardLocalCommit" | "Release" | "Flush" | "Gather" }> | {
  readonly _tag: "RecordCheckpoint"
  readonly durationMs: number
  /** What the main file holds now: every change applied when the checkpoint ran. */
  readonly fileIndex: number
  readonly lastChangeIndex: number
} | {
  /** A proposal made with `proposeNow` failed: the outcome (which needs the node's status) is
   * worked out here, off the hot path. */
  readonly _tag: "ProposalFailed"
  readonly seq: number
  readonly cause: Cause.Cause<RaftRequestError>
} | {
  /** A defect met while driving the core outside the worker: the worker dies of it. */
  readonly _tag: "Defect"
  readonly defect: unknown
} | {
  /** The capture of a large local commit, a step at a time (its answer is LocalCommitDone). */
  readonly _tag: "CaptureLocalCommit"
  readonly seq: number
} | {
  /** The checkpoint, in the checkpoint worker (its answer is Checkpointed). */
  readonly _tag: "CheckpointOffLoop"
  readonly waitForReaders: boolean
}

/** A step of a large capture or encoding: about 1 MiB of frames (256 frames of 4 KiB pages). */
const captureFramesStep = 256

/** How a waiting request hears its outcome: a fiber's resume (an Effect.async), or a plain
 * callback (`submitWith`), called once the core's step is done, never from inside it. */
type Answerer = (outcome: Outcome) => void

export class LeaderWriter implements LeaderSlotOwner {
  readonly term: Term
  readonly origin: { readonly node: NodeId; readonly epoch: number }
  private readonly core: WriterState
  /** Clients waiting for an answer, by request id. */
  private readonly waiting = new Map<number, Answerer>()
  private readonly statements = new Map<number, { readonly sql: string; readonly params: ReadonlyArray<SqlValue> }>()
  private readonly leases = new Map<number, Lease>()
  private readonly grants = new Map<number, (lease: Lease) => void>()
  private ids = 0
  /** Effects that wait, for the worker (at most one besides a Release). */
  private readonly waits: Array<Waiting> = []
  /** Resumes the worker when it waits for work (a plain callback: cheaper than a queue). */
  private wakeWorker: (() => void) | null = null
  /** Ends a Gather wait early: the core has other work for the worker. */
  private wakeGather: (() => void) | null = null
  /** The writer's clock (the worker's, as the ticker's): read without an Effect per input. */
  private clock: ClockService.Clock | null = null
  private batchStartPageCount = 0
  /** Set while `drive` steps the core: a plain callback answered meanwhile waits in `answered`
   * until the step's effects are all performed (the callback may submit again). */
  private driving = false
  private readonly answered: Array<() => void> = []
  private payload: { readonly seq: number; readonly data: Uint8Array } | null = null

  constructor(
    private readonly options: LeaderWriterOptions,
    readonly database: LeaderDatabase
  ) {
    this.term = options.term
    this.origin = { node: options.nodeId, epoch: options.epoch }
    this.core = initialWriterState(options.database, options.limits)
  }

  get stopped(): boolean {
    return this.core.stoppedBy !== null || !this.database.isOpen
  }

  get stats(): LeaderWriterStats {
    return this.core.stats
  }

  // ---- fibers --------------------------------------------------------------------------------

  /** The worker and the ticker; both end by themselves once the writer stops. Their logs (and
   * the opcount bench) know them by the `writer` annotation. */
  run(): Effect.Effect<void> {
    return Effect.fork(this.tickerLoop()).pipe(Effect.zipRight(this.workerLoop()), Effect.annotateLogs("writer", this.options.database))
  }

  /** Performs the effects that wait, one at a time, until the writer stops. Plain combinators,
   * no generator: it turns twice per entry (the flush, the proposal). */
  private workerLoop(): Effect.Effect<void> {
    // No canceler (it would cost an interruptible region per wait): resuming a worker that was
    // interrupted does nothing.
    const idle = Effect.async<void>((resume) => {
      if (this.waits.length > 0 || this.core.stoppedBy !== null) return resume(Effect.void)
      this.wakeWorker = () => {
        this.wakeWorker = null
        resume(Effect.void)
      }
    })
    const next: Effect.Effect<void> = Effect.suspend(() => {
      const effect = this.waits.shift()
      if (effect !== undefined) return Effect.flatMap(this.performWaiting(effect), () => next)
      if (this.core.stoppedBy !== null) return Effect.void
      return Effect.flatMap(idle, () => next)
    })
    return Effect.flatMap(Effect.clock, (clock) => {
      this.clock = clock
      return next
    })
  }

  private signal(): void {
    this.wakeWorker?.()
    this.wakeGather?.()
  }

  private nowMs(): number {
    assert(this.clock !== null, "the worker has started")
    return this.clock.unsafeCurrentTimeMillis()
  }

  private tickerLoop(): Effect.Effect<void> {
    const self = this
    const limits = this.options.limits
    const everyMs = Math.max(1, Math.min(100, Math.floor(limits.writeTimeoutMs / 10), Math.floor(limits.transactionTimeoutMs / 10)))
    return Effect.gen(function*() {
      while (self.core.stoppedBy === null) {
        yield* Effect.sleep(Duration.millis(everyMs))
        self.drive({ _tag: "Tick", nowMs: yield* Clock.currentTimeMillis })
      }
    })
  }

  // ---- the loop: input → core → effects → inputs ------------------------------------------------

  /** Feeds `input` and every answer of the synchronous effects it leads to. */
  private drive(input: WriterInput): void {
    assert(!this.driving, "the writer's core is driven one input chain at a time")
    this.driving = true
    try {
      this.driveChain(input)
    } finally {
      this.driving = false
    }
    // Plain callbacks last: one may submit the connection's next statement (a fresh drive).
    for (let answer = this.answered.shift(); answer !== undefined; answer = this.answered.shift()) answer()
  }

  private driveChain(input: WriterInput): void {
    const inputs: Array<WriterInput> = []
    // The state machine closed the database (a snapshot, another leader's entry): stop first.
    if (!this.database.isOpen && this.core.stoppedBy === null) {
      inputs.push({ _tag: "Stop", failure: new SqlNotLeader({ leader: null, message: "the state machine took the database away" }), mode: "discard" })
    }
    inputs.push(input)
    for (let i = 0; i < inputs.length; i++) {
      if (this.options.bugs?.checkpointWithoutBackoff === true) this.core.checkpointBackoff = null
      for (const effect of writerStep(this.core, inputs[i]!).effects) {
        const next = this.perform(effect)
        if (next !== null) inputs.push(next)
      }
    }
  }

  /** Performs a synchronous effect (its answer, if any, is returned), or hands one that waits to
   * the worker. */
  private perform(effect: WriterEffect): WriterInput | null {
    switch (effect._tag) {
      case "Answer": {
        this.statements.delete(effect.id)
        const answer = this.waiting.get(effect.id)
        assert(answer !== undefined, `request ${effect.id} is answered once`)
        this.waiting.delete(effect.id)
        answer(effect.outcome)
        return null
      }
      case "GrantLease": {
        const lease = new Lease(effect.leaseId, this.database.writer.pageCount())
        this.leases.set(lease.id, lease)
        const grant = this.grants.get(effect.id)
        this.grants.delete(effect.id)
        this.waiting.delete(effect.id)
        assert(grant !== undefined, `lease request ${effect.id} is answered once`)
        grant(lease)
        return null
      }
      case "LeaseEnded": {
        const lease = this.leases.get(effect.leaseId)
        this.leases.delete(effect.leaseId)
        if (lease !== undefined) {
          lease.state = "ended"
          lease.endedBy = effect.endedBy
        }
        return null
      }
      case "RollbackLease":
        if (this.database.writer.inTransaction) this.database.writer.db.exec("ROLLBACK")
        return null
      case "RunStatement": {
        const ran = this.runStatement(effect.id, effect.isolation, effect.begin)
        trace("writer.ran")
        return ran
      }
      case "CommitLocally": {
        trace("writer.commit")
        const failed = this.commitOnly(effect.seq, effect.leaseId)
        if (failed !== null) return { _tag: "LocalCommitDone", result: failed }
        trace("writer.committed")
        if (this.database.uncapturedWalBytes() >= largePayloadBytes) {
          // A large transaction is read back a step at a time by the worker, the event loop
          // free in between (the core waits for LocalCommitDone as for any local commit).
          this.waits.push({ _tag: "CaptureLocalCommit", seq: effect.seq })
          this.signal()
          return null
        }
        const result = this.capturedResult(effect.seq, this.database.captureLocalCommit(effect.seq))
        trace("writer.captured")
        return { _tag: "LocalCommitDone", result }
      }
      case "Checkpoint": {
        if (this.database.checkpointsOffLoop) {
          this.waits.push({ _tag: "CheckpointOffLoop", waitForReaders: effect.waitForReaders })
          this.signal()
          return null
        }
        // On the writer's connection, whose busy timeout is 0: it never waits for readers.
        const outcome = this.database.checkpoint()
        // A reader held it back: the main file does not hold everything yet, so nothing is
        // recorded; the core decides when to try again.
        if (outcome.busy) return this.checkpointBusy(outcome)
        this.waits.push({ _tag: "RecordCheckpoint", durationMs: outcome.durationMs, fileIndex: this.options.machine.appliedIndex, lastChangeIndex: this.options.machine.lastChangeIndex(this.options.database) })
        this.signal()
        return null
      }
      case "DiscardLocalCommit":
        this.payload = null
        this.database.reopenDiscarding()
        this.waits.push(effect)
        this.signal()
        return null
      case "Propose":
        if (this.proposeNow(effect.seq, effect.delayMs)) return null
        this.waits.push(effect)
        this.signal()
        return null
      case "ConfirmLeadership":
      case "Release":
      case "Flush":
      case "Gather":
        this.waits.push(effect)
        this.signal()
        return null
    }
  }

  /** Runs a statement: in the batch's transaction under a savepoint (a failure rolls back only
   * itself), alone in its own transaction, or with none (VACUUM). */
  private runStatement(id: number, isolation: Isolation, begin: boolean): WriterInput {
    const request = this.statements.get(id)
    assert(request !== undefined, `statement ${id} is known`)
    const writer = this.database.writer
    const ran = (outcome: Outcome): WriterInput => ({ _tag: "StatementRan", id, outcome, transactionOpen: writer.inTransaction })
    if (isolation === "batch") {
      if (begin) {
        writer.control("BEGIN IMMEDIATE")
        this.batchStartPageCount = writer.pageCount()
        if (!this.options.bugs?.savepointFirstStatement) return this.runFirstOfBatch(id, request)
      }
      try {
        writer.control(`SAVEPOINT ${batchSavepoint}`)
        const value = writer.run(request.sql, request.params)
        if (this.pagesSince(this.batchStartPageCount) > this.options.limits.transactionBytesMax) throw this.tooBig()
        writer.control(`RELEASE ${batchSavepoint}`)
        return ran({ ok: true, value })
      } catch (cause) {
        if (writer.inTransaction) {
          writer.control(`ROLLBACK TO ${batchSavepoint}`)
          writer.control(`RELEASE ${batchSavepoint}`)
        }
        return ran({ ok: false, error: toSqlError(cause) })
      }
    }
    const startPageCount = writer.pageCount()
    try {
      if (isolation === "alone") writer.control("BEGIN IMMEDIATE")
      // With no transaction around it (VACUUM) the statement commits by itself: bracketed.
      const value = isolation === "autocommit" ? this.database.commitLocally(() => writer.run(request.sql, request.params)) : writer.run(request.sql, request.params)
      if (this.pagesSince(startPageCount) > this.options.limits.transactionBytesMax) throw this.tooBig()
      return ran({ ok: true, value })
    } catch (cause) {
      if (writer.inTransaction) writer.db.exec("ROLLBACK")
      return ran({ ok: false, error: toSqlError(cause) })
    }
  }

  /** A batch's first statement, straight in the batch's transaction: with nothing before it, a
   * failure (or a statement past `transactionBytesMax`) rolls the whole transaction back instead
   * of a savepoint, and the core starts the next batch afresh (StatementRan with the transaction
   * closed). One statement a batch is the one-client case: SAVEPOINT and RELEASE were two of its
   * seven SQLite calls. */
  private runFirstOfBatch(id: number, request: { readonly sql: string; readonly params: ReadonlyArray<SqlValue> }): WriterInput {
    const writer = this.database.writer
    try {
      const value = writer.run(request.sql, request.params)
      if (this.pagesSince(this.batchStartPageCount) > this.options.limits.transactionBytesMax) throw this.tooBig()
      return { _tag: "StatementRan", id, outcome: { ok: true, value }, transactionOpen: writer.inTransaction }
    } catch (cause) {
      // Whatever the statement left (OR FAIL keeps the rows it changed before failing) goes.
      if (writer.inTransaction) writer.db.exec("ROLLBACK")
      return { _tag: "StatementRan", id, outcome: { ok: false, error: toSqlError(cause) }, transactionOpen: false }
    }
  }

  /** The one place the writer commits locally: the batch's or lone statement's COMMIT, or the
   * lease's own COMMIT / END / RELEASE; then the transaction's frames are captured. */
  /** The local COMMIT (or RELEASE) of local commit `seq`: its result when it failed or left the
   * transaction open, null when it committed (then capture it). */
  private commitOnly(_seq: number, leaseId: number | null): LocalCommitResult | null {
    const writer = this.database.writer
    const lease = leaseId === null ? null : this.leases.get(leaseId)
    const sql = lease === null ? (writer.inTransaction ? "COMMIT" : null) : lease?.commitSql ?? "COMMIT"
    if (sql !== null) {
      try {
        // Bracketed for the reader threads (LeaderDatabase.commitLocally: a seqlock).
        this.database.commitLocally(() => writer.db.exec(sql))
      } catch (cause) {
        if (lease === null && writer.inTransaction) writer.db.exec("ROLLBACK")
        return { _tag: "Failed", error: toSqlError(cause), transactionOpen: writer.inTransaction }
      }
      // RELEASE of an inner savepoint: the transaction goes on.
      if (lease !== null && writer.inTransaction) return { _tag: "StillOpen" }
    }
    return null
  }

  private capturedResult(seq: number, commit: LocalCommit | null): LocalCommitResult {
    const reads = this.database.readHorizon()
    const blind = this.options.bugs?.checkpointWithoutBackoff === true
    const horizon = { readsDoneBefore: reads.doneBefore, oldestReadMs: blind ? 0 : Math.round(reads.oldestReadMs) }
    if (commit === null) return { _tag: "Committed", commit: null, walBytes: this.database.walBytes(), ...horizon }
    return { _tag: "Committed", commit: { seq, pageBytes: commit.pageSet.pages.length * commit.pageSet.pageSize }, walBytes: commit.walEnd.offsetBytes, ...horizon }
  }

  /** A checkpoint that did not reset the WAL, as the core hears it. */
  private checkpointBusy(outcome: CheckpointOutcome): WriterInput {
    return { _tag: "Checkpointed", durationMs: outcome.durationMs, blockedBy: outcome.blockedBy ?? "other", walBytes: outcome.walBytesBefore, readsStarted: this.database.readHorizon().started }
  }

  /** The effects that wait, performed by the worker one at a time. */
  private performWaiting(effect: Waiting): Effect.Effect<void> {
    const options = this.options
    switch (effect._tag) {
      case "CaptureLocalCommit": {
        const stopped = () => this.core.stoppedBy !== null
        return Effect.map(this.database.captureLocalCommitInSteps(effect.seq, captureFramesStep, stopped), (commit) => {
          trace("writer.captured")
          // Stopped (or closed) meanwhile: the stop answered everyone and released the database.
          if (commit === undefined || stopped()) return
          this.drive({ _tag: "LocalCommitDone", result: this.capturedResult(effect.seq, commit) })
        })
      }
      case "CheckpointOffLoop": {
        // What the main file holds once it is done: every change applied now (the writer waits
        // for the checkpoint, so this database changes no more meanwhile).
        const fileIndex = options.machine.appliedIndex
        const lastChangeIndex = options.machine.lastChangeIndex(options.database)
        return Effect.flatMap(this.database.checkpointOffLoop(effect.waitForReaders), (outcome) => {
          // Stopped meanwhile: the stop answered everyone and released the database.
          if (this.core.stoppedBy !== null) return Effect.void
          if (outcome.busy) return Effect.sync(() => this.drive(this.checkpointBusy(outcome)))
          return this.performWaiting({ _tag: "RecordCheckpoint", durationMs: outcome.durationMs, fileIndex, lastChangeIndex })
        })
      }
      case "Defect":
        return Effect.die(effect.defect)
      case "ProposalFailed":
        return Effect.map(this.proposalFailure(effect.cause), (outcome) => this.drive({ _tag: "Proposed", seq: effect.seq, outcome, nowMs: this.nowMs() }))
      case "Propose":
        return effect.delayMs > 0 ? Effect.zipRight(Effect.sleep(Duration.millis(effect.delayMs)), this.propose(effect.seq)) : this.propose(effect.seq)
      case "Flush":
        // Behind every fiber already scheduled: the clients just answered, among them.
        trace("writer.flush")
        // Before a large transaction's COMMIT and capture (a copy of its pages): timers and
        // sockets get a turn after its statements held the loop (src/runtime/yieldToLoop.ts).
        return Effect.map(this.database.uncapturedWalBytes() >= largePayloadBytes ? yieldToLoop : Effect.yieldNow(), () => {
          trace("writer.flushed")
          this.drive({ _tag: "Flushed" })
        })
      case "Gather": {
        // Until the time is up, or another waiting effect arrives (the batch closed because the
        // clients were back: its proposal must not wait for the rest of this). Effect's clock, so
        // the simulator's time drives it.
        const woken = Effect.async<void>((resume) => {
          if (this.waits.length > 0 || this.core.stoppedBy !== null) return resume(Effect.void)
          this.wakeGather = () => {
            this.wakeGather = null
            resume(Effect.void)
          }
          return Effect.sync(() => void (this.wakeGather = null))
        })
        return Effect.map(Effect.race(Effect.sleep(Duration.millis(effect.waitMs)), woken), () => this.drive({ _tag: "Gathered", nowMs: this.nowMs() }))
      }
      case "ConfirmLeadership":
        return Effect.map(Effect.exit(options.raft.confirmLeadership), (exit) => {
          let failure: SqlFailure | null = null
          if (exit._tag === "Failure") {
            const error = exit.cause._tag === "Fail" ? exit.cause.error : null
            failure = sqlFailureOfLeadershipCheck(error)
          }
          this.drive({ _tag: "Confirmed", failure, nowMs: this.nowMs() })
        })
      case "RecordCheckpoint":
        // Recorded beside the writer, which goes on at once: the record waits for the main
        // file's fdatasync (the checkpoint ran without SQLite's), seconds while the disk flushes
        // a snapshot being written (a 9.8 s write stall after a 2 GiB load), and nothing the
        // writer does next touches the main file before its next checkpoint, whose record waits
        // for this one (the machine's lock). An interrupted record only means more replay.
        return Effect.zipRight(
          Effect.fork(options.machine.checkpointed(options.database, this, { fileIndex: effect.fileIndex, lastChangeIndex: effect.lastChangeIndex })),
          Effect.sync(() => this.drive({ _tag: "Checkpointed", durationMs: effect.durationMs, blockedBy: null, walBytes: 0, readsStarted: 0 }))
        )
      case "DiscardLocalCommit":
        return Effect.map(options.machine.checkpointed(options.database, this), () => this.drive({ _tag: "Discarded" }))
      case "Release":
        return options.machine.release(options.database, this, effect.mode, effect.unresolved)
    }
  }

  /** Proposes local commit `seq` at once, from the fiber that drives the core, when nothing else
   * waits for the worker, no delay is asked, the entry is small and the node-wide budget has room
   * now: the outcome then comes by callback, and a success is fed to the core from the applier's
   * turn that applied the entry. That saves two resumptions of the worker per entry (one to
   * propose, one when applied) on the path of every write. False: the worker proposes. */
  private proposeNow(seq: number, delayMs: number): boolean {
    const proposeNow = this.options.raft.proposeNow
    if (proposeNow === undefined || delayMs > 0 || this.waits.length > 0 || this.clock === null) return false
    const commit = this.database.pendingCommit
    if (this.payload?.seq !== seq && (commit === null || commit.seq !== seq || commit.pageSet.pages.length * commit.pageSet.pageSize >= largePayloadBytes)) return false
    const payload = this.payloadFor(seq)
    if (payload.length >= largePayloadBytes) return false
    const share = this.options.proposalKiB.takeNow(Math.ceil(payload.length / 1024))
    if (share === null) return false
    trace("writer.propose")
    const offered = proposeNow(payload, (exit) => {
      this.options.proposalKiB.giveBack(share)
      trace("writer.proposed")
      if (exit._tag === "Failure") {
        this.waits.push({ _tag: "ProposalFailed", seq, cause: exit.cause })
        this.signal()
        return
      }
      try {
        this.drive(this.proposedInput(seq, exit.value))
      } catch (defect) {
        // A bug in the writer is the writer's, as it was when the worker fed this answer: it dies
        // in the worker's fiber, not in the applier's turn that called back.
        this.waits.push({ _tag: "Defect", defect })
        this.signal()
      }
    })
    if (!offered) this.options.proposalKiB.giveBack(share)
    return offered
  }

  private proposedInput(seq: number, { index, result }: Applied<SqliteApplyResult>): WriterInput {
    const committed = (result._tag === "Own" || result._tag === "OwnCopy") && result.database === this.options.database && result.seq === seq
    return { _tag: "Proposed", seq, outcome: { _tag: "Applied", index, committed, result: result._tag }, nowMs: this.nowMs() }
  }

  /** One proposal of local commit `seq`, then its outcome fed to the core. Plain combinators, no
   * generator: this runs once per entry. */
  private propose(seq: number): Effect.Effect<void> {
    return Effect.flatMap(this.encodeLarge(seq), () => Effect.suspend(() => {
      if (this.core.stoppedBy !== null) return Effect.void
      const payload = this.payloadFor(seq)
      trace("writer.propose")
      // A large entry took the loop for its capture and encoding: timers and sockets get a turn
      // before the Raft actor persists and sends it (src/runtime/yieldToLoop.ts).
      const proposal = this.options.proposalKiB.withKiB(Math.ceil(payload.length / 1024), afterYieldIfLarge(payload.length, Effect.exit(this.options.raft.propose(payload))))
      return Effect.flatMap(proposal, (exit) => {
        trace("writer.proposed")
        if (exit._tag === "Failure") return Effect.map(this.proposalFailure(exit.cause), (outcome) => this.drive({ _tag: "Proposed", seq, outcome, nowMs: this.nowMs() }))
        this.drive(this.proposedInput(seq, exit.value))
        return Effect.void
      })
    }))
  }

  /** The entry of local commit `seq`, encoded once for all its proposals (a re-proposal must be
   * the same entry: same origin, same previousChangeIndex). */
  private payloadFor(seq: number): Uint8Array {
    if (this.payload?.seq === seq) return this.payload.data
    const data = runSteps(this.encodeSteps(seq, Number.POSITIVE_INFINITY))
    this.payload = { seq, data }
    return data
  }

  /** Encodes a large local commit's entry ahead of `payloadFor`, a step of about 1 MiB of pages
   * at a time with the event loop free in between: one whole copy of the transaction. Nothing for
   * a small one (payloadFor encodes it in place) or once stopped. */
  private encodeLarge(seq: number): Effect.Effect<void> {
    return Effect.suspend(() => {
      const commit = this.database.pendingCommit
      if (this.payload?.seq === seq || this.core.stoppedBy !== null || commit === null || commit.seq !== seq) return Effect.void
      if (commit.pageSet.pages.length * commit.pageSet.pageSize < largePayloadBytes) return Effect.void
      const steps = this.encodeSteps(seq, captureFramesStep * commit.pageSet.pageSize)
      return Effect.zipRight(
        yieldToLoop,
        Effect.map(stepsYielding(steps), (data) => {
          if (data === undefined) return
          this.payload = { seq, data }
          // Every proposal of `seq` sends this payload: the pages it was encoded from can go.
          this.database.dropPendingPages(seq)
        })
      )
    })
  }

  private encodeSteps(seq: number, stepBytes: number): Generator<void, Uint8Array> {
    const commit = this.database.pendingCommit
    assert(commit !== null && commit.seq === seq, `local commit ${seq} is pending`)
    const options = this.options
    return encodeWriteEntrySteps({
      origin: { node: options.nodeId, epoch: options.epoch, seq },
      previousChangeIndex: options.machine.lastChangeIndex(options.database),
      database: options.database,
      pageSet: commit.pageSet
    }, stepBytes)
  }

  /** A failed proposal as the core wants it: which error, and whether this node still leads. */
  private proposalFailure(cause: Cause.Cause<RaftRequestError>): Effect.Effect<ProposalOutcome> {
    const error = cause._tag === "Fail" ? cause.error : null
    // Only these can answer a proposal; anything else (a request error of another kind, a defect)
    // is a bug.
    switch (error?._tag) {
      case "RaftNotLeader":
      case "ProposalDropped":
      case "StorageFull":
      case "Overloaded":
      case "RaftRequestTimeout":
      case "OutcomeUnknown": {
        const known = error
        return Effect.map(this.options.raft.status, (status): ProposalOutcome => ({
          _tag: "Failed",
          // The writer's core has its own words for a failed proposal (its script tests use them).
          error: known._tag === "RaftNotLeader" ? "NotLeader" : known._tag === "RaftRequestTimeout" ? "RequestTimeout" : known._tag,
          detail: known._tag === "ProposalDropped" ? `index ${known.index}` : known._tag === "RaftRequestTimeout" ? `${known.timeoutMs} ms` : known.detail,
          leader: known._tag === "RaftNotLeader" ? known.leader : null,
          stillLeader: status.role === "leader" && status.term === this.term
        }))
      }
      default:
        return Effect.dieMessage(`unexpected proposal failure: ${error?._tag ?? String(cause)}`)
    }
  }

  // ---- client calls --------------------------------------------------------------------------

  /** Runs one write statement in the writer and answers once Raft committed it. */
  submit(sql: string, params: ReadonlyArray<SqlValue>, isolation: Isolation): Effect.Effect<StatementOutcome, SqlFailure> {
    return this.withNow((nowMs) =>
      Effect.async<StatementOutcome, SqlFailure>((resume) => {
        this.submitted(sql, params, isolation, nowMs(), resumeWith(resume))
      })
    )
  }

  /** `submit` with a plain callback instead of a fiber: `done` is called exactly once, with the
   * same outcome `submit` would give — maybe before this returns (refused at once), else from the
   * turn that settles it (the applier's, the ticker's), after the core's step. No Effect, no
   * fiber resumption: the gateway's statement path (ClientSession.handlePlain). */
  submitWith(sql: string, params: ReadonlyArray<SqlValue>, isolation: Isolation, done: (outcome: StatementAnswer) => void): void {
    const clock = this.clock
    // Before the worker runs there is no clock to read without an Effect: the caller's path.
    assert(clock !== null, "submitWith after the writer started (see `canSubmitNow`)")
    this.submitted(sql, params, isolation, clock.unsafeCurrentTimeMillis(), (outcome) => {
      if (this.driving) this.answered.push(() => done(outcome as StatementAnswer))
      else done(outcome as StatementAnswer)
    })
  }

  /** Whether `submitWith` may be called now (the worker has the writer's clock). */
  get canSubmitNow(): boolean {
    return this.clock !== null
  }

  private submitted(sql: string, params: ReadonlyArray<SqlValue>, isolation: Isolation, nowMs: number, answer: Answerer): void {
    const id = ++this.ids
    this.waiting.set(id, answer)
    this.statements.set(id, { sql, params })
    trace("writer.submit")
    this.drive({ _tag: "Submitted", id, bytes: requestBytes(sql, params), isolation, nowMs, diskFull: this.options.raft.cannotWrite?.() ?? null })
  }

  /** Waits for the writer and holds it for an interactive transaction. */
  acquireLease(): Effect.Effect<Lease, SqlFailure> {
    return this.withNow((nowMs) =>
      Effect.async<Lease, SqlFailure>((resume) => {
        const id = ++this.ids
        this.waiting.set(id, resumeWith(resume))
        this.grants.set(id, (lease) => resume(Effect.succeed(lease)))
        this.drive({ _tag: "LeaseRequested", id, nowMs: nowMs(), diskFull: this.options.raft.cannotWrite?.() ?? null })
        // Refused at once: no grant will come.
        if (!this.waiting.has(id)) this.grants.delete(id)
      })
    )
  }

  /** `use` with a reading of the writer's clock: without an Effect once the worker has it, from
   * the caller's Clock before (the first request may come before the worker runs). */
  private withNow<A>(use: (nowMs: () => number) => Effect.Effect<A, SqlFailure>): Effect.Effect<A, SqlFailure> {
    const clock = this.clock
    if (clock !== null) return use(() => clock.unsafeCurrentTimeMillis())
    return Effect.flatMap(Clock.currentTimeMillis, (nowMs) => use(() => nowMs))
  }

  /** Runs a statement inside the lease's transaction (on the writer, at once). */
  leaseRun(lease: Lease, sql: string, params: ReadonlyArray<SqlValue>): Effect.Effect<StatementOutcome, SqlFailure> {
    return Effect.suspend(() => {
      this.noticeDetached()
      const ended = leaseEnded(lease)
      if (ended !== null) return Effect.fail(ended)
      if (!leaseActive(this.core, lease.id)) return Effect.fail(new SqlError({ code: 21, message: "the transaction is committing" }))
      const writer = this.database.writer
      try {
        const outcome = writer.run(sql, params)
        if (writer.inTransaction && this.pagesSince(lease.startPageCount) > this.options.limits.transactionBytesMax) {
          writer.db.exec("ROLLBACK")
          const error = this.tooBig()
          this.drive({ _tag: "LeaseEnded", leaseId: lease.id, endedBy: error })
          return Effect.fail(error)
        }
        // The statement ended the transaction without committing anything (e.g. it began one and
        // SQLite rolled it back after an error).
        if (!writer.inTransaction) this.drive({ _tag: "LeaseEnded", leaseId: lease.id, endedBy: null })
        return Effect.succeed(outcome)
      } catch (cause) {
        const error = toSqlError(cause)
        if (!writer.inTransaction) this.drive({ _tag: "LeaseEnded", leaseId: lease.id, endedBy: null })
        return Effect.fail(error)
      }
    })
  }

  /** COMMIT (or END, or the RELEASE of the outermost savepoint): waits for the entry in flight,
   * commits locally, and answers once Raft committed the transaction. */
  leaseFinish(lease: Lease, sql: string): Effect.Effect<ExecResult, SqlFailure> {
    return this.withNow((nowMs) =>
      Effect.suspend(() => {
        this.noticeDetached()
        const ended = leaseEnded(lease)
        if (ended !== null) return Effect.fail(ended)
        assert(lease.state === "active", "one COMMIT at a time")
        lease.state = "committing"
        lease.commitSql = sql
        return Effect.async<ExecResult, SqlFailure>((resume) => {
          const id = ++this.ids
          this.waiting.set(id, resumeWith(resume))
          this.drive({ _tag: "LeaseCommitRequested", leaseId: lease.id, id, nowMs: nowMs() })
        }).pipe(Effect.ensuring(Effect.sync(() => {
          // A RELEASE of an inner savepoint, or a COMMIT that failed inside the transaction.
          if (lease.state === "committing") lease.state = "active"
        })))
      }))
  }

  /** ROLLBACK: ends the lease at once. */
  leaseRollback(lease: Lease, sql: string): Effect.Effect<ExecResult, SqlFailure> {
    return Effect.suspend(() => {
      this.noticeDetached()
      const ended = leaseEnded(lease)
      if (ended !== null) return Effect.fail(ended)
      const writer = this.database.writer
      try {
        writer.db.exec(sql)
      } catch (cause) {
        if (writer.inTransaction) return Effect.fail(toSqlError(cause))
      }
      if (writer.inTransaction) writer.db.exec("ROLLBACK")
      this.drive({ _tag: "LeaseEnded", leaseId: lease.id, endedBy: null })
      return Effect.succeed({ lastInsertId: 0n, rowsAffected: 0 })
    })
  }

  /** Ends the lease from the session's side (its scope closed). */
  abandonLease(lease: Lease): void {
    if (lease.state !== "active" || !leaseActive(this.core, lease.id)) return
    if (this.database.isOpen && this.database.writer.inTransaction) this.database.writer.db.exec("ROLLBACK")
    this.drive({ _tag: "LeaseEnded", leaseId: lease.id, endedBy: null })
  }

  /** Forces a checkpoint as soon as every frame is committed (tests, tools). */
  requestCheckpoint(): void {
    this.drive({ _tag: "CheckpointRequested" })
  }

  // ---- stopping --------------------------------------------------------------------------------

  /** Leadership is lost (or the writer cannot go on): answer everyone, then release the
   * database (with its uncommitted frames cut for "discard"). */
  stop(failure: SqlFailure, mode: "discard" | "keepWal" = "discard"): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.drive({ _tag: "Stop", failure, mode })
      // The release happens here, not in the worker: the caller relies on it being done.
      const releases = this.waits.filter((effect): effect is Extract<Waiting, { _tag: "Release" }> => effect._tag === "Release")
      this.waits.splice(0, this.waits.length, ...this.waits.filter((effect) => effect._tag !== "Release"))
      this.signal()
      if (releases.length === 0) return this.options.machine.release(this.options.database, this, mode, false)
      return Effect.forEach(releases, (effect) => this.performWaiting(effect), { discard: true })
    })
  }

  // ---- helpers -------------------------------------------------------------------------------

  /** A database the state machine closed stops the writer before anything touches it. */
  private noticeDetached(): void {
    if (!this.database.isOpen && this.core.stoppedBy === null) this.drive({ _tag: "Tick", nowMs: this.core.nowMs })
  }

  /** Bytes of pages a transaction that started at `startPageCount` pages has added (a lower
   * bound of what it wrote; the exact size is checked after the local commit). */
  private pagesSince(startPageCount: number): number {
    return Math.max(0, this.database.writer.pageCount() - startPageCount) * this.options.limits.pageSize
  }

  private tooBig(): SqlError {
    return new SqlError({ code: sqliteTooBigCode, message: `the transaction writes more than ${this.options.limits.transactionBytesMax} bytes of pages (transactionBytesMax)` })
  }
}

/** A fiber's resume as an Answerer. */
function resumeWith<A>(resume: (effect: Effect.Effect<A, SqlFailure>) => void): Answerer {
  return (outcome) => resume(outcome.ok ? Effect.succeed(outcome.value as A) : Effect.fail(outcome.error))
}

function leaseEnded(lease: Lease): SqlFailure | null {
  if (lease.state !== "ended") return null
  return lease.endedBy ?? new SqlError({ code: 1, message: "no transaction is active" })
}

function requestBytes(sql: string, params: ReadonlyArray<SqlValue>): number {
  let bytes = sql.length
  for (const value of params) {
    if (typeof value === "string") bytes += value.length
    else if (value instanceof Uint8Array) bytes += value.length
    else bytes += 8
  }
  return bytes
}
