// The leader's writer for one database: every write transaction runs here, one at a time, and
// reaches clients only once Raft committed it.
//
// - No SQLITE_BUSY for clients: write requests wait in a bounded queue (full → SqlBusy at once;
//   still queued after writeTimeoutMs → SqlBusy, nothing done).
// - Group commit: while an entry is in flight, the autocommit statements that arrive run in one
//   open SQLite transaction, a SAVEPOINT each (a failing statement rolls back only itself and
//   gets its own SqlError). When the entry in flight is committed, the transaction commits
//   locally, its frames are captured, and it is proposed as the next entry. One entry in flight
//   per database: a local commit happens only when the previous entry was applied, so every
//   entry is computed on a committed state and a failed entry never has a successor built on it.
// - An interactive transaction (BEGIN … COMMIT across session calls) holds the writer as a lease,
//   rolled back after transactionTimeoutMs; its COMMIT waits for the entry in flight, like a batch.
// - After each local commit a reader is pinned on the new state (LeaderDatabase); it becomes the
//   committed read view when the state machine applies the entry (`committed`).
// - Proposals whose outcome Raft could not tell (timeout) are proposed again until Raft gives a
//   definite answer or leadership is lost: a second copy of an entry that did commit is skipped by
//   every node (writeEntry.ts, previousChangeIndex), so exactly one copy takes effect.
// - Losing leadership (`stop`): queued and uncommitted requests fail with SqlNotLeader, an entry in
//   flight with SqlLeadershipLost (never ok), and the database is released with its uncommitted
//   frames cut (SqliteMachine.release).
// - Checkpoint: once the WAL passes walCheckpointBytes, no new work starts until the entry in
//   flight is applied; then wal_checkpoint(TRUNCATE) runs with every frame committed.
import { Clock, Deferred, Duration, Effect, Exit, FiberId, Queue } from "effect"
import type { Applied } from "../actors/Applier.ts"
import type { NodeStatus } from "../actors/RaftActor.ts"
import type { RaftRequestError } from "../actors/raftErrors.ts"
import { assert } from "../assert.ts"
import type { LogIndex, NodeId, Term } from "../raft/types.ts"
import type { StatementOutcome } from "./connection.ts"
import { toSqlError } from "./connection.ts"
import type { LeaderDatabase, LocalCommit } from "./LeaderDatabase.ts"
import type { SqliteLimits } from "./limits.ts"
import type { ExecResult, SqlFailure, SqlValue } from "./Sql.ts"
import { SqlBusy, SqlError, SqlLeadershipLost, SqlNotLeader } from "./Sql.ts"
import { sqliteAbortRollbackCode, sqliteFullCode, sqliteTooBigCode } from "./sqliteCodes.ts"
import type { LeaderSlotOwner, SqliteApplyResult, SqliteMachine } from "./SqliteMachine.ts"
import type { WriteOrigin } from "./writeEntry.ts"
import { encodeWriteEntry } from "./writeEntry.ts"

/** What the writer needs of the Raft node. */
export interface RaftAccess {
  readonly propose: (data: Uint8Array) => Effect.Effect<Applied<SqliteApplyResult>, RaftRequestError>
  /** A ReadIndex round: succeeds once this node is confirmed leader and has applied everything
   * committed before the call. */
  readonly confirmLeadership: Effect.Effect<void, RaftRequestError>
  readonly status: Effect.Effect<NodeStatus>
  /** Why this node cannot make writes durable now (its disk is full), or null. Optional. */
  readonly cannotWrite?: () => string | null
}

/** How a statement runs: with others in the group-commit transaction, alone in its own
 * transaction, or with no transaction around it (VACUUM). */
export type Isolation = "batch" | "alone" | "autocommit"

interface StatementRequest {
  readonly _tag: "Statement"
  /** When it was queued (Clock ms); the sweeper fails it with SqlBusy past writeTimeoutMs. */
  enqueuedAtMs: number
  readonly sql: string
  readonly params: ReadonlyArray<SqlValue>
  isolation: Isolation
  readonly bytes: number
  readonly reply: Deferred.Deferred<StatementOutcome, SqlFailure>
  state: "queued" | "running" | "cancelled"
  outcome: { readonly ok: true; readonly value: StatementOutcome } | { readonly ok: false; readonly error: SqlError } | null
}

interface LeaseRequest {
  readonly _tag: "Lease"
  enqueuedAtMs: number
  readonly reply: Deferred.Deferred<Lease, SqlFailure>
  state: "queued" | "running" | "cancelled"
}

type Request = StatementRequest | LeaseRequest

/** An interactive transaction's hold on the writer. */
export class Lease {
  state: "active" | "committing" | "ended" = "active"
  /** Why the lease ended if not by the session's own COMMIT / ROLLBACK. */
  endedBy: SqlFailure | null = null
  commitSql = ""
  commitReply: Deferred.Deferred<ExecResult, SqlFailure> | null = null
  constructor(
    readonly id: number,
    readonly startPageCount: number
  ) {}
}

interface Job {
  readonly commit: LocalCommit | null
  readonly statements: ReadonlyArray<StatementRequest>
  readonly lease: { readonly reply: Deferred.Deferred<ExecResult, SqlFailure>; readonly result: ExecResult } | null
}

interface Batch {
  readonly statements: Array<StatementRequest>
  bytes: number
  readonly openedAtMs: number
  readonly startPageCount: number
}

export interface LeaderWriterStats {
  entries: number
  statements: number
  batchStatementsMax: number
  retries: number
  checkpoints: number
  checkpointMsMax: number
  resets: number
  /** Total time (Clock ms) entries spent between handoff to the proposer and their answer. */
  commitMsTotal: number
}

export interface LeaderWriterOptions {
  readonly database: string
  readonly term: Term
  readonly nodeId: NodeId
  readonly epoch: number
  readonly machine: SqliteMachine
  readonly raft: RaftAccess
  readonly limits: SqliteLimits
  /** Bounds the bytes of write entries in flight on the node (all databases), in KiB: the leader
   * appends proposals that arrive together as one log record. */
  readonly proposalKiB: Effect.Semaphore
}

const batchSavepoint = "tqlite_batch_statement"

export class LeaderWriter implements LeaderSlotOwner {
  readonly term: Term
  readonly stats: LeaderWriterStats = { entries: 0, statements: 0, batchStatementsMax: 0, retries: 0, checkpoints: 0, checkpointMsMax: 0, resets: 0, commitMsTotal: 0 }
  private readonly queue: Array<Request> = []
  private readonly wake = Effect.runSync(Queue.sliding<void>(1))
  private readonly jobs = Effect.runSync(Queue.bounded<Job | null>(1))
  private batch: Batch | null = null
  private lease: Lease | null = null
  private leases = 0
  private seq = 0
  private committedSeq = 0
  private proposerBusy = false
  /** The job in the proposer has been proposed at least once (its outcome may be unknown). */
  private proposing = false
  private inflight: Job | null = null
  private inflightSinceMs: number | null = null
  private checkpointWanted = false
  private stoppedBy: SqlFailure | null = null

  constructor(
    private readonly options: LeaderWriterOptions,
    readonly database: LeaderDatabase
  ) {
    this.term = options.term
  }

  get stopped(): boolean {
    return this.stoppedBy !== null
  }

  // ---- the state machine's side (LeaderSlotOwner) -------------------------------------------

  readonly claims = (entryTerm: Term, origin: WriteOrigin): boolean =>
    this.stoppedBy === null &&
    entryTerm === this.term &&
    origin.node === this.options.nodeId &&
    origin.epoch === this.options.epoch &&
    this.database.pendingCommit?.seq === origin.seq

  readonly committed = (seq: number, _index: LogIndex): void => {
    this.database.markCommitted(seq)
    this.committedSeq = seq
  }

  readonly detached = (reason: string): void => {
    this.stopNow(new SqlNotLeader({ leader: null, message: reason }), new SqlLeadershipLost({ message: reason }))
  }

  readonly unresolved = (): boolean => this.proposing

  // ---- fibers --------------------------------------------------------------------------------

  /** The executor and the proposer; both end by themselves once the writer stops. */
  run(): Effect.Effect<void> {
    return Effect.fork(this.proposerLoop()).pipe(
      Effect.zipRight(Effect.fork(this.sweeperLoop())),
      Effect.zipRight(this.executorLoop())
    )
  }

  private executorLoop(): Effect.Effect<void> {
    const self = this
    return Effect.gen(function*() {
      while (self.stoppedBy === null) {
        yield* Queue.take(self.wake)
        if (self.stoppedBy !== null) return
        yield* self.pump()
      }
    })
  }

  private proposerLoop(): Effect.Effect<void> {
    const self = this
    return Effect.gen(function*() {
      for (;;) {
        const job = yield* Queue.take(self.jobs)
        if (job === null || self.stoppedBy !== null) return
        assert(self.inflight === job, "the job taken is the one handed over")
        yield* self.runJob(job)
        if (self.inflightSinceMs !== null) self.stats.commitMsTotal += (yield* Clock.currentTimeMillis) - self.inflightSinceMs
        self.inflight = null
        self.inflightSinceMs = null
        self.proposing = false
        if (self.stoppedBy !== null) return
        self.proposerBusy = false
        // The WAL reaches at least the end of the last capture; stat it only when that is big.
        const walEnd = job.commit?.walEnd.offsetBytes ?? 0
        if (walEnd > self.options.limits.walCheckpointBytes || (job.commit === null && self.database.walBytes() > self.options.limits.walCheckpointBytes)) {
          self.checkpointWanted = true
        }
        self.signal()
      }
    })
  }

  private signal(): void {
    Queue.unsafeOffer(this.wake, undefined)
  }

  // ---- client calls --------------------------------------------------------------------------

  /** Runs one write statement in the writer and answers once Raft committed it. */
  submit(sql: string, params: ReadonlyArray<SqlValue>, isolation: Isolation): Effect.Effect<StatementOutcome, SqlFailure> {
    return Effect.suspend(() => {
      const reply = Deferred.unsafeMake<StatementOutcome, SqlFailure>(FiberId.none)
      const request: StatementRequest = {
        _tag: "Statement",
        enqueuedAtMs: 0,
        sql,
        params,
        isolation,
        bytes: requestBytes(sql, params),
        reply,
        state: "queued",
        outcome: null
      }
      return this.enqueue(request, reply)
    })
  }

  /** Waits for the writer and holds it for an interactive transaction. */
  acquireLease(): Effect.Effect<Lease, SqlFailure> {
    return Effect.suspend(() => {
      const reply = Deferred.unsafeMake<Lease, SqlFailure>(FiberId.none)
      return this.enqueue({ _tag: "Lease", enqueuedAtMs: 0, reply, state: "queued" }, reply)
    })
  }

  /** Queues the request and waits for its answer. No timer per request (a fiber each, too
   * costly at thousands of statements per second): the sweeper bounds every wait. */
  private enqueue<A>(request: Request, reply: Deferred.Deferred<A, SqlFailure>): Effect.Effect<A, SqlFailure> {
    const limits = this.options.limits
    if (this.stoppedBy !== null) return Effect.fail(this.notLeader())
    // A full disk: refused before anything runs (SQLITE_FULL), rather than queued behind an entry
    // that cannot become durable until space is freed.
    const full = this.options.raft.cannotWrite?.() ?? null
    if (full !== null) return Effect.fail(new SqlError({ code: sqliteFullCode, message: full }))
    if (this.queue.length >= limits.writeQueueMax) {
      return Effect.fail(new SqlBusy({ message: `the write queue of ${this.options.database} is full (${limits.writeQueueMax} waiting)` }))
    }
    return Effect.flatMap(Clock.currentTimeMillis, (nowMs) => {
      request.enqueuedAtMs = nowMs
      this.queue.push(request)
      this.signal()
      return Deferred.await(reply)
    })
  }

  /** Bounds every wait: a request still queued after writeTimeoutMs fails with SqlBusy (it never
   * ran); an entry in flight for longer than commitTimeoutMs answers its clients with
   * SqlLeadershipLost (outcome unknown; the proposer goes on settling it). */
  private sweep(nowMs: number): void {
    const limits = this.options.limits
    if (this.queue.some((request) => request.state === "queued" && nowMs - request.enqueuedAtMs >= limits.writeTimeoutMs)) {
      const busy = new SqlBusy({ message: `waited ${limits.writeTimeoutMs} ms for the writer of ${this.options.database}` })
      for (const request of this.queue) {
        if (request.state !== "queued" || nowMs - request.enqueuedAtMs < limits.writeTimeoutMs) continue
        request.state = "cancelled"
        Deferred.unsafeDone(request.reply as Deferred.Deferred<unknown, SqlFailure>, Exit.fail(busy))
      }
    }
    const job = this.inflight
    const unknown = new SqlLeadershipLost({ message: `no commit within ${limits.commitTimeoutMs} ms: outcome unknown` })
    if (job !== null && this.inflightSinceMs !== null && nowMs - this.inflightSinceMs >= limits.commitTimeoutMs) this.failJob(job, unknown)
    // Statements that ran in the open batch wait for the entry in flight; bound that too (their
    // batch may still commit later, so their outcome is unknown).
    for (const request of this.batch?.statements ?? []) {
      if (nowMs - request.enqueuedAtMs >= limits.writeTimeoutMs + limits.commitTimeoutMs) Deferred.unsafeDone(request.reply, Exit.fail(unknown))
    }
  }

  private sweeperLoop(): Effect.Effect<void> {
    const self = this
    const everyMs = Math.max(1, Math.min(100, Math.floor(this.options.limits.writeTimeoutMs / 10)))
    return Effect.gen(function*() {
      while (self.stoppedBy === null) {
        yield* Effect.sleep(Duration.millis(everyMs))
        self.sweep(yield* Clock.currentTimeMillis)
      }
    })
  }

  /** Runs a statement inside the lease's transaction (on the writer, at once). */
  leaseRun(lease: Lease, sql: string, params: ReadonlyArray<SqlValue>): Effect.Effect<StatementOutcome, SqlFailure> {
    return Effect.suspend(() => {
      const ended = this.leaseEnded(lease)
      if (ended !== null) return Effect.fail(ended)
      if (lease.state !== "active") return Effect.fail(new SqlError({ code: 21, message: "the transaction is committing" }))
      const writer = this.database.writer
      try {
        const outcome = writer.run(sql, params)
        if (writer.inTransaction && this.pagesSince(lease.startPageCount) > this.options.limits.transactionBytesMax) {
          writer.db.exec("ROLLBACK")
          const error = this.tooBig()
          this.endLease(lease, error)
          return Effect.fail(error)
        }
        if (!writer.inTransaction) {
          // The statement ended the transaction without committing anything (e.g. it began one
          // and SQLite rolled it back after an error).
          this.endLease(lease, null)
        }
        return Effect.succeed(outcome)
      } catch (cause) {
        const error = toSqlError(cause)
        if (!writer.inTransaction) this.endLease(lease, null)
        return Effect.fail(error)
      }
    })
  }

  /** COMMIT (or END, or the RELEASE of the outermost savepoint): waits for the entry in flight,
   * commits locally, and answers once Raft committed the transaction. */
  leaseFinish(lease: Lease, sql: string): Effect.Effect<ExecResult, SqlFailure> {
    return Effect.suspend(() => {
      const ended = this.leaseEnded(lease)
      if (ended !== null) return Effect.fail(ended)
      assert(lease.state === "active", "one COMMIT at a time")
      const reply = Deferred.unsafeMake<ExecResult, SqlFailure>(FiberId.none)
      lease.state = "committing"
      lease.commitSql = sql
      lease.commitReply = reply
      this.signal()
      const limits = this.options.limits
      return Deferred.await(reply).pipe(
        Effect.timeoutFail({
          duration: Duration.millis(limits.writeTimeoutMs + limits.commitTimeoutMs),
          onTimeout: () => new SqlLeadershipLost({ message: "no commit in time: outcome unknown" })
        })
      )
    })
  }

  /** ROLLBACK: ends the lease at once. */
  leaseRollback(lease: Lease, sql: string): Effect.Effect<ExecResult, SqlFailure> {
    return Effect.suspend(() => {
      const ended = this.leaseEnded(lease)
      if (ended !== null) return Effect.fail(ended)
      const writer = this.database.writer
      try {
        writer.db.exec(sql)
      } catch (cause) {
        if (writer.inTransaction) return Effect.fail(toSqlError(cause))
      }
      if (writer.inTransaction) writer.db.exec("ROLLBACK")
      this.endLease(lease, null)
      return Effect.succeed({ lastInsertId: 0n, rowsAffected: 0 })
    })
  }

  /** Ends the lease from the session's side (its scope closed). */
  abandonLease(lease: Lease): void {
    if (lease.state === "ended" || this.lease !== lease) return
    if (lease.state === "committing") return
    if (this.stoppedBy === null && this.database.isOpen && this.database.writer.inTransaction) this.database.writer.db.exec("ROLLBACK")
    this.endLease(lease, null)
  }

  private leaseEnded(lease: Lease): SqlFailure | null {
    if (lease.state !== "ended") return null
    return lease.endedBy ?? new SqlError({ code: 1, message: "no transaction is active" })
  }

  private endLease(lease: Lease, endedBy: SqlFailure | null): void {
    lease.state = "ended"
    lease.endedBy = endedBy
    if (this.lease === lease) this.lease = null
    this.signal()
  }

  // ---- the executor --------------------------------------------------------------------------

  private pump(): Effect.Effect<void> {
    const self = this
    return Effect.gen(function*() {
      const nowMs = yield* Clock.currentTimeMillis
      while (self.stoppedBy === null) {
        const lease = self.lease
        if (lease !== null) {
          if (lease.state === "committing" && !self.proposerBusy) {
            yield* self.commitLease(lease)
            continue
          }
          if (lease.state === "ended") {
            self.lease = null
            continue
          }
          return
        }
        while (self.queue[0]?.state === "cancelled") self.queue.shift()
        const head = self.queue[0]
        if (head?._tag === "Statement" && head.isolation === "batch" && !self.checkpointWanted && self.canJoinBatch(head, nowMs)) {
          self.queue.shift()
          self.runInBatch(head, nowMs)
          continue
        }
        if (self.batch !== null) {
          if (self.proposerBusy) return
          yield* self.closeBatch()
          continue
        }
        if (self.proposerBusy) {
          if (head?._tag === "Lease" && !self.checkpointWanted) {
            self.queue.shift()
            yield* self.grantLease(head)
            continue
          }
          return
        }
        if (self.checkpointWanted) {
          yield* self.checkpoint()
          continue
        }
        if (head === undefined) return
        self.queue.shift()
        if (head._tag === "Lease") yield* self.grantLease(head)
        else yield* self.runAlone(head)
      }
    })
  }

  private canJoinBatch(request: StatementRequest, nowMs: number): boolean {
    const batch = this.batch
    if (batch === null) return true
    const limits = this.options.limits
    return (
      batch.statements.length < limits.batchStatementsMax &&
      batch.bytes + request.bytes <= limits.batchBytesMax &&
      nowMs - batch.openedAtMs < limits.batchOpenMsMax
    )
  }

  private runInBatch(request: StatementRequest, nowMs: number): void {
    const writer = this.database.writer
    if (this.batch === null) {
      writer.control("BEGIN IMMEDIATE")
      this.batch = { statements: [], bytes: 0, openedAtMs: nowMs, startPageCount: this.pageCount() }
    }
    const batch = this.batch
    request.state = "running"
    try {
      writer.control(`SAVEPOINT ${batchSavepoint}`)
      const value = writer.run(request.sql, request.params)
      if (this.pagesSince(batch.startPageCount) > this.options.limits.transactionBytesMax) throw this.tooBig()
      writer.control(`RELEASE ${batchSavepoint}`)
      request.outcome = { ok: true, value }
    } catch (cause) {
      request.outcome = { ok: false, error: toSqlError(cause) }
      if (writer.inTransaction) {
        writer.control(`ROLLBACK TO ${batchSavepoint}`)
        writer.control(`RELEASE ${batchSavepoint}`)
      } else {
        // SQLite rolled the whole transaction back (e.g. disk full): the statements before this
        // one are undone, so they go back to the head of the queue and run again.
        for (const earlier of batch.statements.reverse()) {
          earlier.state = "queued"
          earlier.enqueuedAtMs = request.enqueuedAtMs
          earlier.outcome = null
          this.queue.unshift(earlier)
        }
        this.batch = null
        this.answer(request)
        return
      }
    }
    batch.statements.push(request)
    batch.bytes += request.bytes
  }

  private closeBatch(): Effect.Effect<void> {
    const batch = this.batch
    assert(batch !== null && !this.proposerBusy, "closing an open batch with nothing in flight")
    this.batch = null
    const writer = this.database.writer
    try {
      this.database.commitLocally(() => writer.control("COMMIT"))
    } catch (cause) {
      if (writer.inTransaction) writer.db.exec("ROLLBACK")
      const error = toSqlError(cause)
      for (const request of batch.statements) {
        request.outcome = { ok: false, error }
        this.answer(request)
      }
      return Effect.void
    }
    return this.afterLocalCommit(batch.statements, null)
  }

  /** A statement in a transaction of its own (after a batch turned out too large), or with no
   * transaction around it (VACUUM). Runs only with nothing in flight. */
  private runAlone(request: StatementRequest): Effect.Effect<void> {
    const writer = this.database.writer
    request.state = "running"
    const startPageCount = this.pageCount()
    try {
      // Bracketed whole: without BEGIN the statement commits by itself (VACUUM).
      const value = this.database.commitLocally(() => {
        if (request.isolation === "alone") writer.control("BEGIN IMMEDIATE")
        const value = writer.run(request.sql, request.params)
        if (this.pagesSince(startPageCount) > this.options.limits.transactionBytesMax) throw this.tooBig()
        if (writer.inTransaction) writer.db.exec("COMMIT")
        return value
      })
      request.outcome = { ok: true, value }
    } catch (cause) {
      if (writer.inTransaction) writer.db.exec("ROLLBACK")
      request.outcome = { ok: false, error: toSqlError(cause) }
    }
    return this.afterLocalCommit([request], null)
  }

  /** Hands the writer to an interactive transaction, and starts the clock on it. */
  private grantLease(request: LeaseRequest): Effect.Effect<void> {
    const lease = new Lease(++this.leases, this.pageCount())
    request.state = "running"
    this.lease = lease
    Deferred.unsafeDone(request.reply, Exit.succeed(lease))
    const timeoutMs = this.options.limits.transactionTimeoutMs
    const expire = Effect.sync(() => {
      if (this.lease !== lease || lease.state !== "active" || this.stoppedBy !== null) return
      if (this.database.writer.inTransaction) this.database.writer.db.exec("ROLLBACK")
      this.endLease(lease, new SqlError({ code: sqliteAbortRollbackCode, message: `the transaction held the writer for ${timeoutMs} ms and was rolled back` }))
    })
    // A child of the executor's fiber: when the writer stops, its lease timers stop with it.
    return Effect.asVoid(Effect.fork(Effect.zipRight(Effect.sleep(Duration.millis(timeoutMs)), expire)))
  }

  private commitLease(lease: Lease): Effect.Effect<void> {
    const writer = this.database.writer
    const reply = lease.commitReply
    assert(reply !== null, "a committing lease has a reply")
    try {
      this.database.commitLocally(() => writer.db.exec(lease.commitSql))
    } catch (cause) {
      const error = toSqlError(cause)
      if (writer.inTransaction) lease.state = "active"
      else this.endLease(lease, null)
      Deferred.unsafeDone(reply, Exit.fail(error))
      return Effect.void
    }
    if (writer.inTransaction) {
      // RELEASE of an inner savepoint: the transaction goes on.
      lease.state = "active"
      Deferred.unsafeDone(reply, Exit.succeed({ lastInsertId: 0n, rowsAffected: 0 }))
      return Effect.void
    }
    this.endLease(lease, null)
    return this.afterLocalCommit([], { reply, result: { lastInsertId: 0n, rowsAffected: 0 } })
  }

  /** After a local COMMIT with nothing in flight: capture the frames, refuse a transaction over
   * the size bound, and hand the entry to the proposer. */
  private afterLocalCommit(statements: ReadonlyArray<StatementRequest>, lease: Job["lease"]): Effect.Effect<void> {
    const self = this
    return Effect.gen(function*() {
      const commit = self.database.captureLocalCommit(self.seq + 1)
      if (commit !== null) self.seq = commit.seq
      if (commit !== null && commit.pageSet.pages.length * commit.pageSet.pageSize > self.options.limits.transactionBytesMax) {
        yield* self.discardLocalCommit()
        if (statements.length > 1) {
          // Which statement made it too large is unknown: each runs again in its own transaction.
          for (const request of [...statements].reverse()) {
            request.state = "queued"
            request.outcome = null
            request.isolation = "alone"
            self.queue.unshift(request)
          }
        } else {
          const error = self.tooBig()
          for (const request of statements) {
            request.outcome = { ok: false, error }
            self.answer(request)
          }
          if (lease !== null) Deferred.unsafeDone(lease.reply, Exit.fail(error))
        }
        return
      }
      self.proposerBusy = true
      self.stats.statements += statements.length
      self.stats.batchStatementsMax = Math.max(self.stats.batchStatementsMax, statements.length)
      const job: Job = { commit, statements, lease }
      self.inflight = job
      self.inflightSinceMs = yield* Clock.currentTimeMillis
      assert(Queue.unsafeOffer(self.jobs, job), "the proposer takes one job at a time")
    })
  }

  /** Cuts the pending local commit out of the WAL: close everything (uncommitted frames cut),
   * reopen on the committed state. */
  private discardLocalCommit(): Effect.Effect<void> {
    this.stats.resets++
    this.database.reopenDiscarding()
    return this.options.machine.checkpointed(this.options.database, this)
  }

  private checkpoint(): Effect.Effect<void> {
    const outcome = this.database.checkpoint()
    this.checkpointWanted = false
    // A reader held it back: the main file does not hold everything yet (retried after a later commit).
    if (outcome.busy) return Effect.void
    this.stats.checkpoints++
    this.stats.checkpointMsMax = Math.max(this.stats.checkpointMsMax, outcome.durationMs)
    return this.options.machine.checkpointed(this.options.database, this)
  }

  /** Forces a checkpoint as soon as every frame is committed (tests, tools). */
  requestCheckpoint(): void {
    this.checkpointWanted = true
    this.signal()
  }

  // ---- the proposer --------------------------------------------------------------------------

  private runJob(job: Job): Effect.Effect<void> {
    const self = this
    return Effect.gen(function*() {
      if (job.commit === null) {
        // Nothing was written: the answers are good if this node still leads.
        const exit = yield* Effect.exit(self.options.raft.confirmLeadership)
        if (self.stoppedBy !== null) return
        if (Exit.isSuccess(exit)) return self.answerJob(job)
        const error = Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : null
        const failure = error?._tag === "NotLeader" ? new SqlNotLeader({ leader: error.leader, message: error.detail }) : new SqlBusy({ message: `could not confirm leadership: ${error?._tag ?? "defect"}` })
        return self.failJob(job, failure)
      }
      const commit = job.commit
      const payload = encodeWriteEntry({
        origin: { node: self.options.nodeId, epoch: self.options.epoch, seq: commit.seq },
        previousChangeIndex: self.options.machine.lastChangeIndex(self.options.database),
        database: self.options.database,
        pageSet: commit.pageSet
      })
      const permits = Math.ceil(payload.length / 1024)
      const result = yield* self.options.proposalKiB.withPermits(permits)(self.proposeUntilDefinite(payload, commit.seq))
      if (self.stoppedBy !== null) return
      if (result === "committed") {
        self.stats.entries++
        return self.answerJob(job)
      }
      yield* self.stop(result.failure)
    })
  }

  private proposeUntilDefinite(payload: Uint8Array, seq: number): Effect.Effect<"committed" | { readonly failure: SqlFailure }> {
    const self = this
    return Effect.gen(function*() {
      let ambiguous = false
      for (;;) {
        if (self.stoppedBy !== null) return { failure: self.stoppedBy }
        self.proposing = true
        const exit = yield* Effect.exit(self.options.raft.propose(payload))
        if (self.stoppedBy !== null) return { failure: self.stoppedBy }
        if (Exit.isSuccess(exit)) {
          self.proposing = false
          if (self.committedSeq >= seq) return "committed"
          return { failure: new SqlLeadershipLost({ message: `entry ${exit.value.index} was not applied as this writer's (${exit.value.result._tag})` }) }
        }
        const error = exit.cause._tag === "Fail" ? exit.cause.error : null
        const lost = (leader: NodeId | null, message: string) => ({
          failure: ambiguous ? new SqlLeadershipLost({ message }) : new SqlNotLeader({ leader, message })
        })
        switch (error?._tag) {
          case "NotLeader": {
            // Refused, not appended. While a leadership transfer is under way this node is still
            // leader of its term: wait for the transfer to finish or abort, then try again.
            const status = yield* self.options.raft.status
            if (status.role === "leader" && status.term === self.term) {
              self.stats.retries++
              yield* Effect.sleep(Duration.millis(self.options.limits.overloadRetryMs))
              continue
            }
            if (!ambiguous) self.proposing = false
            return lost(error.leader, `leadership lost: ${error.detail}`)
          }
          case "ProposalDropped":
            // Overwritten by another leader's entry: gone for good (an earlier attempt whose
            // outcome was unknown may still have committed).
            if (!ambiguous) self.proposing = false
            return lost(null, `the entry was overwritten by another leader's (index ${error.index})`)
          case "StorageFull": {
            // Refused before it was appended: definitely not done. The client hears SQLITE_FULL;
            // the writer stops and its local commit is cut (the next write starts afresh).
            if (!ambiguous) {
              self.proposing = false
              return { failure: new SqlError({ code: sqliteFullCode, message: error.detail }) }
            }
            // An earlier copy may still be in the log: only its commit or a new leader settles
            // it (stopping now would leave the database unusable for the rest of the term).
            self.stats.retries++
            const status = yield* self.options.raft.status
            if (status.role !== "leader" || status.term !== self.term) return { failure: new SqlLeadershipLost({ message: `leadership lost while the outcome was unknown (${error.detail})` }) }
            yield* Effect.sleep(Duration.millis(self.options.limits.overloadRetryMs))
            continue
          }
          case "Overloaded":
            self.stats.retries++
            if (!ambiguous) self.proposing = false
            yield* Effect.sleep(Duration.millis(self.options.limits.overloadRetryMs))
            continue
          case "RequestTimeout":
          case "OutcomeUnknown": {
            ambiguous = true
            self.stats.retries++
            const status = yield* self.options.raft.status
            if (status.role !== "leader" || status.term !== self.term) return { failure: new SqlLeadershipLost({ message: `leadership lost while the outcome was unknown (${error._tag})` }) }
            continue
          }
          default:
            return yield* Effect.dieMessage(`unexpected proposal failure: ${error?._tag ?? String(exit.cause)}`)
        }
      }
    })
  }

  private answerJob(job: Job): void {
    for (const request of job.statements) this.answer(request)
    if (job.lease !== null) Deferred.unsafeDone(job.lease.reply, Exit.succeed(job.lease.result))
  }

  private failJob(job: Job, failure: SqlFailure): void {
    for (const request of job.statements) Deferred.unsafeDone(request.reply, Exit.fail(failure))
    if (job.lease !== null) Deferred.unsafeDone(job.lease.reply, Exit.fail(failure))
  }

  private answer(request: StatementRequest): void {
    const outcome = request.outcome
    assert(outcome !== null, "a statement is answered after it ran")
    Deferred.unsafeDone(request.reply, outcome.ok ? Exit.succeed(outcome.value) : Exit.fail(outcome.error))
  }

  // ---- stopping --------------------------------------------------------------------------------

  /** Leadership is lost (or the writer cannot go on): answer everyone, then release the
   * database with its uncommitted frames cut. */
  stop(failure: SqlFailure, mode: "discard" | "keepWal" = "discard"): Effect.Effect<void> {
    return Effect.suspend(() => {
      // A definite SQLite error (SQLITE_FULL: nothing was appended) goes to everyone as it is.
      const definite = failure._tag === "SqlNotLeader" || failure._tag === "SqlError" ? failure : new SqlNotLeader({ leader: null, message: failure.message })
      this.stopNow(definite, definite === failure && !this.proposing ? failure : new SqlLeadershipLost({ message: failure.message }))
      return this.options.machine.release(this.options.database, this, mode)
    })
  }

  /** The synchronous part of stopping: every waiter gets its answer. `definite` goes to whoever
   * never reached Raft, `inflight` to the entry in flight. */
  private stopNow(definite: SqlFailure, inflight: SqlFailure): void {
    if (this.stoppedBy !== null) return
    this.stoppedBy = definite
    for (const request of this.queue.splice(0)) {
      if (request.state === "cancelled") continue
      Deferred.unsafeDone(request.reply as Deferred.Deferred<unknown, SqlFailure>, Exit.fail(definite))
    }
    for (const request of this.batch?.statements ?? []) Deferred.unsafeDone(request.reply, Exit.fail(definite))
    this.batch = null
    const lease = this.lease
    if (lease !== null) {
      if (lease.commitReply !== null && lease.state === "committing") Deferred.unsafeDone(lease.commitReply, Exit.fail(definite))
      lease.state = "ended"
      lease.endedBy = new SqlNotLeader({ leader: definite._tag === "SqlNotLeader" ? definite.leader : null, message: `${definite.message}; the transaction was rolled back` })
      this.lease = null
    }
    if (this.inflight !== null) this.failJob(this.inflight, inflight)
    Queue.unsafeOffer(this.wake, undefined)
    Queue.unsafeOffer(this.jobs, null)
  }

  // ---- helpers -------------------------------------------------------------------------------

  private notLeader(): SqlFailure {
    return this.stoppedBy ?? new SqlNotLeader({ leader: null, message: "not the leader" })
  }

  private pageCount(): number {
    return this.database.writer.pageCount()
  }

  /** Bytes of pages a transaction that started at `startPageCount` pages has added (a lower
   * bound of what it wrote; the exact size is checked after the local commit). */
  private pagesSince(startPageCount: number): number {
    return Math.max(0, this.pageCount() - startPageCount) * this.options.limits.pageSize
  }

  private tooBig(): SqlError {
    return new SqlError({ code: sqliteTooBigCode, message: `the transaction writes more than ${this.options.limits.transactionBytesMax} bytes of pages (transactionBytesMax)` })
  }
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
